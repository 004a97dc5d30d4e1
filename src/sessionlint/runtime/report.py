"""Runtime findings and observations, and the JSON report that carries them.

Pure stdlib: ``sessionlint verify`` reads reports without importing SQLAlchemy.

A *finding* is a misuse that happened. An *observation* counts what ran at a site whether or
not it went wrong (sessions created and closed there, commits per call, failed flushes and
how they were recovered); ``verify`` needs it to tell "ran cleanly" from "never ran".
"""
from __future__ import annotations

import json
import os
from dataclasses import dataclass, field
from typing import Any, Dict, Iterable, List, Optional, Tuple

from .sites import Site

FORMAT_VERSION = 1

# kind -> counters kept per site; counters named max_* merge by max, the others by sum.
OBSERVATION_KINDS: Dict[str, Tuple[str, ...]] = {
    "sessions": ("created", "used", "closed", "leaked", "shared"),
    "connections": ("checked_out", "returned", "leaked"),
    "commits": ("commits", "calls", "max_per_call"),
    "failures": ("failed", "recovered", "reused"),
}


@dataclass
class RuntimeFinding:
    code: str
    message: str
    site: Site
    related: Tuple[Tuple[str, Site], ...] = ()
    test: Optional[str] = None
    count: int = 1

    def key(self) -> Tuple[str, str, int]:
        return (self.code, self.site.path, self.site.line)

    def sites(self) -> List[Site]:
        return [self.site] + [site for _, site in self.related]

    def as_dict(self) -> Dict[str, Any]:
        return {"code": self.code, "message": self.message, **self.site.as_dict(),
                "related": [{"role": role, **site.as_dict()} for role, site in self.related],
                "test": self.test, "count": self.count}

    @classmethod
    def from_dict(cls, data: Dict[str, Any]) -> "RuntimeFinding":
        related = tuple((str(r["role"]), Site.from_dict(r)) for r in data.get("related", []))
        test = data.get("test")
        return cls(str(data["code"]), str(data["message"]), Site.from_dict(data), related,
                   str(test) if test is not None else None, int(data.get("count", 1)))

    def render(self, base: Optional[str] = None) -> str:
        """``path:line: CODE message`` plus a line per related site; paths relative to ``base``."""
        text = f"{display_path(self.site.path, base)}:{self.site.line}: {self.code} {self.message}"
        for role, site in self.related:
            text += f"\n    {role}: {display_path(site.path, base)}:{site.line} in {site.function}"
        return text


def display_path(path: str, base: Optional[str] = None) -> str:
    """``path`` relative to ``base`` (default: the current folder) when it lies below it."""
    try:
        rel = os.path.relpath(path, base or os.getcwd())
    except ValueError:  # another drive on Windows
        return path
    return path if rel.startswith("..") else rel


@dataclass
class Report:
    findings: Dict[Tuple[str, str, int], RuntimeFinding] = field(default_factory=dict)
    observations: Dict[str, Dict[Tuple[str, int], Dict[str, Any]]] = field(
        default_factory=lambda: {kind: {} for kind in OBSERVATION_KINDS})

    def add(self, finding: RuntimeFinding) -> bool:
        """Add a finding; False when the same code at the same site was already recorded."""
        known = self.findings.get(finding.key())
        if known is not None:
            known.count += finding.count
            if finding.test is not None and (known.test is None or finding.test < known.test):
                known.test = finding.test  # the same for any order of xdist workers
            return False
        self.findings[finding.key()] = finding
        return True

    def observe(self, kind: str, site: Site, **counts: int) -> None:
        entry = self.observations[kind].get(site.key())
        if entry is None:
            entry = {"site": site, **{name: 0 for name in OBSERVATION_KINDS[kind]}}
            self.observations[kind][site.key()] = entry
        for name, value in counts.items():
            if name.startswith("max_"):
                entry[name] = max(int(entry[name]), value)
            else:
                entry[name] = int(entry[name]) + value

    def merge(self, other: "Report") -> None:
        for finding in other.findings.values():
            self.add(RuntimeFinding(finding.code, finding.message, finding.site, finding.related,
                                    finding.test, finding.count))
        for kind, entries in other.observations.items():
            for entry in entries.values():
                counts = {k: int(v) for k, v in entry.items() if k != "site"}
                self.observe(kind, entry["site"], **counts)

    def sorted_findings(self) -> List[RuntimeFinding]:
        return sorted(self.findings.values(), key=lambda f: (f.site.path, f.site.line, f.code))

    def entries(self, kind: str) -> Iterable[Dict[str, Any]]:
        return self.observations.get(kind, {}).values()

    def as_dict(self) -> Dict[str, Any]:
        return {
            "version": FORMAT_VERSION,
            "tool": "sessionlint-runtime",
            "findings": [f.as_dict() for f in self.sorted_findings()],
            "observations": {
                kind: [{**{k: v for k, v in e.items() if k != "site"}, **e["site"].as_dict()}
                       for _, e in sorted(entries.items())]
                for kind, entries in sorted(self.observations.items())
            },
        }

    @classmethod
    def from_dict(cls, data: Dict[str, Any]) -> "Report":
        if data.get("tool") != "sessionlint-runtime" or data.get("version") != FORMAT_VERSION:
            raise ValueError("not a sessionlint runtime report (version %s)" % (FORMAT_VERSION,))
        report = cls()
        for item in data.get("findings", []):
            report.add(RuntimeFinding.from_dict(item))
        for kind, entries in data.get("observations", {}).items():
            if kind not in OBSERVATION_KINDS:
                continue
            for entry in entries:
                counts = {k: int(entry.get(k, 0)) for k in OBSERVATION_KINDS[kind]}
                report.observe(kind, Site.from_dict(entry), **counts)
        return report


def save(report: Report, path: str) -> None:
    tmp = f"{path}.tmp{os.getpid()}"
    with open(tmp, "w", encoding="utf-8") as handle:
        json.dump(report.as_dict(), handle, indent=2, sort_keys=False)
        handle.write("\n")
    os.replace(tmp, path)


def load(path: str) -> Report:
    """Read a report; raises ValueError with a one-line reason for anything unreadable."""
    try:
        with open(path, encoding="utf-8") as handle:
            data = json.load(handle)
    except OSError as exc:
        raise ValueError(f"cannot read runtime report {path}: {exc.strerror or exc}") from None
    except json.JSONDecodeError as exc:
        raise ValueError(f"runtime report {path} is not JSON: {exc.msg} at line {exc.lineno}") from None
    try:
        return Report.from_dict(data)
    except (KeyError, TypeError, ValueError, AttributeError) as exc:
        raise ValueError(f"runtime report {path} is malformed: {exc}") from None
