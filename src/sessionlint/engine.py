"""files -> parse -> module facts -> project index -> rules -> noqa/selection -> sorted findings.

Each file is parsed once. The first pass keeps trees and summaries per file; the project index
is built from the summaries alone; the second pass runs every selected rule over each file's
model. Positions are computed only for files that have something to report.
"""
from __future__ import annotations

import os
from dataclasses import dataclass, field
from fnmatch import fnmatch
from pathlib import Path
from typing import Iterable, Optional, Sequence, Union

from libcst.metadata import MetadataWrapper, PositionProvider

from . import noqa, registry
from .config import Settings
from .discovery import Missing, SourceFile, discover
from .findings import FileError, Finding
from .model import FileModel
from .parsing import Parsed, parse_source
from .semantic.facts import ModuleSummary
from .semantic.index import ProjectIndex, Vocabulary

@dataclass
class Result:
    findings: list[Finding] = field(default_factory=list)
    errors: list[FileError] = field(default_factory=list)
    files: list[SourceFile] = field(default_factory=list)  # what was analysed


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
            # a class whose attributes or methods hand out sessions (`db.session_context()`)
            for attr in [*cls.attrs, *cls.annotations, *cls.methods]:
                value = index.class_attribute(f"{s.name}:{cls.qualname}", attr, attr in cls.methods)
                if value is not None and value.kind in interesting and \
                        (value.kind not in (Kind.SESSION_FUNCTION, Kind.PROVIDER) or
                         (value.produces is not None and value.produces.is_session_like)):
                    names.add(cls.qualname.split(".")[0])
                    break
    return names


def analyse(p: Parsed, index: ProjectIndex, codes: Sequence[str], apply_noqa: bool = True,
            options: Optional[dict[str, dict[str, list[str]]]] = None) -> list[Finding]:
    """Run the selected rules on one parsed file; noqa applied, positions resolved."""
    model = FileModel(p.module, p.summary, p.functions, index, options or {}, p.module_withs)
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
    result.files = files
    result.errors.extend(errors)
    result.findings = sorted((f for f in findings if not _per_file_ignored(f, settings)), key=Finding.sort_key)
    result.errors.sort(key=lambda e: (e.path, e.message))
    return result


def check_source(source: Union[str, bytes], path: str = "<string>", settings: Optional[Settings] = None,
                 module: Optional[str] = None, noqa_applied: bool = True) -> list[Finding]:
    """Analyse one file's text on its own (the flake8 plugin and tests use this)."""
    settings = settings or Settings()
    if module is None:
        if path != "<string>" and Path(path).is_file():
            from .discovery import module_name

            module = module_name(Path(path))[0]
        else:
            module = Path(path).stem if path != "<string>" else "__main__"
    result = parse_source(path, source, module, False)
    codes = settings.enabled_codes()
    if isinstance(result, Finding):
        return [result] if registry.PARSE_ERROR_CODE in codes else []
    loader = None
    if path != "<string>" and Path(path).is_file():
        from .loader import DiskLoader, package_root

        loader = DiskLoader([package_root(Path(path))])
    index = ProjectIndex([result.summary], vocabulary(settings), loader)
    return sorted(analyse(result, index, codes, noqa_applied, settings.rule_options()), key=Finding.sort_key)


def default_jobs() -> int:
    try:
        cpus = len(os.sched_getaffinity(0))
    except AttributeError:  # not on Linux
        cpus = os.cpu_count() or 1
    return max(1, min(cpus, 8))
