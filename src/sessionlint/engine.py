"""files -> parse -> module facts -> project index -> rules -> noqa/selection -> sorted findings.

Each file is parsed once. The first pass keeps trees and summaries per file; the project index
is built from the summaries alone; the second pass runs every selected rule over each file's
model. Positions are computed only for files that have something to report.
"""
from __future__ import annotations

import ast
import io
import os
import re
import tokenize
from dataclasses import dataclass, field
from fnmatch import fnmatch
from pathlib import Path
from typing import Iterable, Optional, Sequence, Union

import libcst as cst
from libcst.metadata import MetadataWrapper, PositionProvider

from . import noqa, registry
from .config import Settings
from .discovery import Missing, SourceFile, discover, module_name
from .findings import FileError, Finding
from .model import FileModel
from .semantic.facts import FunctionInfo, ModuleSummary, collect
from .semantic.index import ProjectIndex, Vocabulary

# A file that mentions none of these, nor a session name exported by a project module, cannot
# create, receive or close a session the analysis understands.
_SA_TOKENS = re.compile(rb"sqlalchemy|sqlmodel|flask_sqlalchemy")


@dataclass
class Parsed:
    display: str
    text: str
    module: cst.Module
    summary: ModuleSummary
    functions: list[FunctionInfo]


@dataclass
class Result:
    findings: list[Finding] = field(default_factory=list)
    errors: list[FileError] = field(default_factory=list)


def _decode(data: bytes) -> str:
    encoding, _ = tokenize.detect_encoding(io.BytesIO(data).readline)
    return data.decode(encoding)


def _syntax_error(display: str, line: int, column: int, message: str) -> Finding:
    return Finding(display, max(line, 1), max(column, 1), registry.PARSE_ERROR_CODE, max(line, 1),
                   max(column, 1), registry.PARSE_ERROR_NAME, message, "", "<module>", 1, max(line, 1))


def parse_source(display: str, data: Union[bytes, str], name: str, is_package: bool) -> Union[Parsed, Finding]:
    """Parse one file into its facts, or the SES001 finding that says why it could not be."""
    try:
        text = data if isinstance(data, str) else _decode(data)
    except (UnicodeDecodeError, SyntaxError, LookupError) as exc:
        line = 1
        if isinstance(exc, UnicodeDecodeError) and isinstance(data, bytes):
            line = data.count(b"\n", 0, exc.start) + 1
        reason = exc.reason if isinstance(exc, UnicodeDecodeError) else str(exc)
        return _syntax_error(display, line, 1, f"File could not be decoded: {reason}")
    try:
        module = cst.parse_module(text)
    except cst.ParserSyntaxError as exc:
        # the stdlib parser points at the offending token; libcst often at the one after it
        try:
            ast.parse(text)
        except SyntaxError as py_exc:
            if py_exc.lineno:
                return _syntax_error(display, py_exc.lineno, py_exc.offset or 1,
                                     f"File could not be parsed: {py_exc.msg}")
        except (ValueError, RecursionError, MemoryError):
            pass
        message = str(exc.message).splitlines()[0] if exc.message else "invalid syntax"
        return _syntax_error(display, exc.raw_line, exc.raw_column + 1, f"File could not be parsed: {message}")
    except (RecursionError, ValueError) as exc:  # libcst's limits on very deep nesting
        return _syntax_error(display, 1, 1, f"File could not be parsed: {type(exc).__name__}")
    summary, functions = collect(module, name, display, is_package)
    return Parsed(display, text, module, summary, functions)


def quick_syntax_check(display: str, data: bytes) -> Optional[Finding]:
    """SES001 for a file the pre-filter skips: the stdlib parser is much faster than libcst,
    and libcst (whose grammar may be newer than this Python's) has the last word."""
    try:
        ast.parse(data)
        return None
    except (SyntaxError, ValueError, UnicodeDecodeError, RecursionError, MemoryError):
        pass
    result = parse_source(display, data, "__skipped__", False)
    return result if isinstance(result, Finding) else None


def vocabulary(settings: Settings) -> Vocabulary:
    return Vocabulary(settings.factories, settings.providers, settings.closers)


def session_names(index: ProjectIndex, summaries: Iterable[ModuleSummary]) -> set[str]:
    """Top-level names of project modules that are session vocabulary (factories, helpers ...)."""
    from .semantic.index import Scope
    from .semantic.values import Kind

    interesting = {Kind.FACTORY, Kind.REGISTRY, Kind.ENGINE, Kind.SESSION_CLASS, Kind.FACTORY_MAKER,
                   Kind.REGISTRY_MAKER, Kind.ENGINE_MAKER, Kind.FSA, Kind.FSA_MAKER, Kind.SESSION,
                   Kind.CONNECTION, Kind.SESSION_FUNCTION, Kind.PROVIDER, Kind.CLOSER}
    names: set[str] = set()
    for s in summaries:
        for name in [*s.bindings, *s.annotations, *(q for q in s.functions if "." not in q)]:
            value = index.lookup(name, Scope(s.name))
            if value is not None and value.kind in interesting:
                names.add(name)
        for cls in s.classes.values():
            if cls.attrs or cls.annotations:
                for attr in [*cls.attrs, *cls.annotations]:
                    value = index.class_attribute(f"{s.name}:{cls.qualname}", attr, False)
                    if value is not None and value.kind in interesting:
                        names.add(cls.qualname.split(".")[0])
    return names


def analyse(p: Parsed, index: ProjectIndex, codes: Sequence[str], apply_noqa: bool = True) -> list[Finding]:
    """Run the selected rules on one parsed file; noqa applied, positions resolved."""
    model = FileModel(p.module, p.summary, p.functions, index)
    reports = []
    for code in codes:
        rule_cls = registry.BY_CODE.get(code)
        if rule_cls is None:
            continue
        rule = rule_cls()
        for report in rule.check(model):
            reports.append((rule_cls, report))
    if not reports:
        return []
    positions = MetadataWrapper(p.module, unsafe_skip_copy=True).resolve(PositionProvider)
    lines = p.text.splitlines()
    total_lines = max(len(lines), 1)
    qualnames = {id(info.node): info.qualname for info in p.functions}
    out = []
    for rule_cls, report in reports:
        pos = positions[report.node]
        line = pos.start.line
        source_line = lines[line - 1] if 0 < line <= len(lines) else ""
        if apply_noqa and noqa.suppressed(rule_cls.code, noqa.parse_line(source_line)):
            continue
        if report.scope is not None:
            spos = positions[report.scope]
            scope = (qualnames.get(id(report.scope), report.scope.name.value), spos.start.line, spos.end.line)
        else:
            scope = ("<module>", 1, total_lines)
        out.append(Finding(p.display, line, pos.start.column + 1, rule_cls.code, pos.end.line,
                           pos.end.column + 1, rule_cls.name, rule_cls.format(report.fields),
                           rule_cls.hint.format(**report.fields), *scope))
    return out


def _per_file_ignored(finding: Finding, settings: Settings) -> bool:
    if not settings.per_file_ignores:
        return False
    path = Path(finding.path)
    try:
        rel = path.resolve().relative_to(settings.root.resolve()).as_posix()
    except ValueError:
        rel = path.as_posix()
    for glob, codes in settings.per_file_ignores:
        if fnmatch(rel, glob) or fnmatch(path.name, glob) or fnmatch(finding.path, glob):
            if registry.selected(finding.code, finding.name, codes, ()):
                return True
    return False


def check_paths(paths: Sequence[str], settings: Settings, force_exclude: bool = False,
                jobs: Optional[int] = None) -> Result:
    """Analyse files and folders as the CLI does; `jobs` worker processes (default: CPUs)."""
    from .workers import run

    result = Result()
    files: list[SourceFile] = []
    for item in discover(paths, settings.root, settings.exclude, force_exclude):
        if isinstance(item, Missing):
            result.errors.append(FileError(item.display, item.message))
        else:
            files.append(item)
    findings, errors = run(files, settings, default_jobs() if jobs is None else jobs)
    result.errors.extend(errors)
    result.findings = sorted((f for f in findings if not _per_file_ignored(f, settings)), key=Finding.sort_key)
    result.errors.sort(key=lambda e: (e.path, e.message))
    return result


def check_source(source: Union[str, bytes], path: str = "<string>", settings: Optional[Settings] = None,
                 module: Optional[str] = None, noqa_applied: bool = True) -> list[Finding]:
    """Analyse one file's text on its own (the flake8 plugin and tests use this)."""
    settings = settings or Settings()
    if module is None:
        module = Path(path).stem if path != "<string>" else "__main__"
    result = parse_source(path, source, module, False)
    codes = settings.enabled_codes()
    if isinstance(result, Finding):
        return [result] if registry.PARSE_ERROR_CODE in codes else []
    index = ProjectIndex([result.summary], vocabulary(settings))
    return sorted(analyse(result, index, codes, noqa_applied), key=Finding.sort_key)


def default_jobs() -> int:
    try:
        cpus = len(os.sched_getaffinity(0))
    except AttributeError:  # not on Linux
        cpus = os.cpu_count() or 1
    return max(1, min(cpus, 8))
