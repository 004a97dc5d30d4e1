"""The Finding record and its renderers (text, json, github)."""
from __future__ import annotations

import json
from dataclasses import dataclass
from typing import Iterable, Sequence

from . import __version__


@dataclass(frozen=True, order=True)
class Finding:
    path: str
    line: int
    column: int  # 1-based
    code: str
    end_line: int
    end_column: int
    name: str
    message: str
    hint: str
    scope_qualname: str
    scope_start: int
    scope_end: int

    def sort_key(self) -> tuple[str, int, int, str]:
        return (self.path, self.line, self.column, self.code)

    def as_dict(self) -> dict[str, object]:
        return {
            "path": self.path, "line": self.line, "column": self.column,
            "end_line": self.end_line, "end_column": self.end_column,
            "code": self.code, "name": self.name, "message": self.message, "hint": self.hint,
            "scope": {"qualname": self.scope_qualname, "start_line": self.scope_start,
                      "end_line": self.scope_end},
        }


@dataclass(frozen=True)
class FileError:
    path: str
    message: str

    def as_dict(self) -> dict[str, str]:
        return {"path": self.path, "message": self.message}


def render_text(findings: Sequence[Finding], show_hints: bool = False) -> str:
    lines = []
    for f in findings:
        lines.append(f"{f.path}:{f.line}:{f.column}: {f.code} {f.message}")
        if show_hints and f.hint:
            lines.append(f"    hint: {f.hint}")
    return "".join(line + "\n" for line in lines)


def render_json(findings: Sequence[Finding], errors: Iterable[FileError]) -> str:
    doc = {"version": __version__, "findings": [f.as_dict() for f in findings],
           "errors": [e.as_dict() for e in errors]}
    return json.dumps(doc, indent=2) + "\n"


def render_github(findings: Sequence[Finding]) -> str:
    def esc(text: str) -> str:
        return text.replace("%", "%25").replace("\r", "%0D").replace("\n", "%0A")

    return "".join(
        f"::error file={f.path},line={f.line},col={f.column},endLine={f.end_line},"
        f"endColumn={f.end_column},title={f.code} {f.name}::{esc(f.message)}\n"
        for f in findings
    )


def render_sarif(findings: Sequence[Finding], errors: Iterable[FileError]) -> str:
    """SARIF 2.1.0, one run, rules described from the registry."""
    from . import registry

    codes = sorted({f.code for f in findings})
    rules = []
    for code in codes:
        rule = registry.BY_CODE.get(code)
        rules.append({
            "id": code,
            "name": registry.code_name(code),
            "shortDescription": {"text": rule.message if rule else "File could not be parsed"},
            "help": {"text": rule.hint if rule else ""},
        })
    results = [{
        "ruleId": f.code,
        "level": "error" if f.code == registry.PARSE_ERROR_CODE else "warning",
        "message": {"text": f.message},
        "locations": [{
            "physicalLocation": {
                "artifactLocation": {"uri": f.path.replace("\\", "/")},
                "region": {"startLine": f.line, "startColumn": f.column,
                           "endLine": f.end_line, "endColumn": f.end_column},
            },
            "logicalLocations": [{"fullyQualifiedName": f.scope_qualname, "kind": "function"}],
        }],
    } for f in findings]
    notifications = [{"level": "error", "message": {"text": f"{e.path}: {e.message}"}} for e in errors]
    doc = {
        "$schema": "https://json.schemastore.org/sarif-2.1.0.json",
        "version": "2.1.0",
        "runs": [{
            "tool": {"driver": {"name": "sessionlint", "version": __version__, "rules": rules}},
            "results": results,
            "invocations": [{"executionSuccessful": not notifications,
                             "toolExecutionNotifications": notifications}],
        }],
    }
    return json.dumps(doc, indent=2) + "\n"
