"""``sessionlint verify``: join static findings with what the runtime checker saw.

A static finding is *confirmed* when the runtime reported the same kind of misuse at its line,
or inside the same function (the runtime names the function span of each site; the static
side names the enclosing function of each finding). It is *contradicted* when the runtime saw
the flagged code run and the misuse did not happen, where a clean run really is evidence:

- SES201: the commit line ran more than once in all, but never twice within one call;
- SES202: a flush failed in that function and the session was rolled back or closed before
  its next use;
- SES301/SES302: the session made there was used by two threads or tasks, never at once or
  interleaved.

Leak findings (SES101-SES103) are never contradicted by a clean run: they name a path (an
early return, an exception) that the tests may not have taken; the detail says how often the
site ran and was closed. Rules the runtime does not observe get ``not-checked``. Runtime
findings in the analysed files that no static finding matched are listed as *runtime-only*.
"""
from __future__ import annotations

import os
from dataclasses import dataclass, field
from typing import Any, Dict, Iterable, List, Optional, Sequence, Set

from .findings import Finding
from .runtime.report import Report, RuntimeFinding, display_path
from .runtime.sites import Site

CONFIRMED, NOT_EXERCISED, CONTRADICTED, NOT_CHECKED = "confirmed", "not-exercised", "contradicted", "not-checked"
STATUSES = (CONFIRMED, CONTRADICTED, NOT_EXERCISED, NOT_CHECKED)

# static code -> runtime codes that confirm it
CONFIRMED_BY: Dict[str, Set[str]] = {
    "SES101": {"SES101"}, "SES102": {"SES101"}, "SES103": {"SES101"},
    "SES201": {"SES201"}, "SES202": {"SES202"},
    "SES301": {"SES301", "SES302"}, "SES302": {"SES301", "SES302"},
    "SES106": {"SES106"},
}
_MODULE_SCOPES = ("", "<module>")


@dataclass
class Verdict:
    finding: Finding
    status: str
    detail: str = ""
    runtime: List[RuntimeFinding] = field(default_factory=list)

    def as_dict(self) -> Dict[str, Any]:
        return {**self.finding.as_dict(), "status": self.status, "detail": self.detail,
                "runtime": [r.as_dict() for r in self.runtime]}


@dataclass
class Verification:
    verdicts: List[Verdict]
    runtime_only: List[RuntimeFinding]

    def counts(self) -> Dict[str, int]:
        counts = {status: 0 for status in STATUSES}
        for verdict in self.verdicts:
            counts[verdict.status] += 1
        return counts


class _Located:
    """A static finding's file, line and enclosing function, for matching runtime sites."""

    def __init__(self, finding: Finding) -> None:
        self.path = os.path.normcase(os.path.realpath(finding.path))
        self.line = finding.line
        self.span = None if finding.scope_qualname in _MODULE_SCOPES else (finding.scope_start, finding.scope_end)

    def exact(self, site: Site) -> bool:
        return os.path.normcase(site.path) == self.path and site.line == self.line

    def near(self, site: Site) -> bool:
        if os.path.normcase(site.path) != self.path:
            return False
        if site.start <= self.line <= site.end and site.function not in _MODULE_SCOPES:
            return True
        return self.span is not None and self.span[0] <= site.line <= self.span[1]


def verify(findings: Sequence[Finding], report: Report, analysed: Iterable[str]) -> Verification:
    runtime = report.sorted_findings()
    used: Set[int] = set()
    verdicts = []
    for finding in findings:
        verdict = _judge(finding, runtime, report, used)
        verdicts.append(verdict)
    files = {os.path.normcase(os.path.realpath(path)) for path in analysed}
    runtime_only = [r for i, r in enumerate(runtime)
                    if i not in used and os.path.normcase(r.site.path) in files]
    return Verification(verdicts, runtime_only)


def _judge(finding: Finding, runtime: List[RuntimeFinding], report: Report, used: Set[int]) -> Verdict:
    codes = CONFIRMED_BY.get(finding.code)
    if codes is None:
        return Verdict(finding, NOT_CHECKED, "the runtime checker does not observe this rule")
    where = _Located(finding)
    for test in (where.exact, where.near):
        matched = [i for i, r in enumerate(runtime) if r.code in codes and any(test(s) for s in r.sites())]
        if matched:
            used.update(matched)
            return Verdict(finding, CONFIRMED, "", [runtime[i] for i in matched])
    return _unconfirmed(finding, where, report)


def _unconfirmed(finding: Finding, where: _Located, report: Report) -> Verdict:
    code = finding.code
    if code in ("SES101", "SES102", "SES103"):
        entries = _entries(report, ("sessions", "connections"), where)
        ran = sum(int(e.get("used", e.get("checked_out", 0))) for e in entries)
        if ran:
            return Verdict(finding, NOT_EXERCISED,
                           f"opened {ran} time(s) here and always closed: the leaking path did not run")
    elif code == "SES201":
        entries = _entries(report, ("commits",), where)
        commits = sum(int(e["commits"]) for e in entries)
        most = max((int(e["max_per_call"]) for e in entries), default=0)
        if commits > 1 and most == 1:
            return Verdict(finding, CONTRADICTED,
                           f"commit ran {commits} times, never more than once per call")
        if commits:
            return Verdict(finding, NOT_EXERCISED,
                           f"commit ran {commits} time(s), at most {most} per call")
    elif code == "SES202":
        entries = _entries(report, ("failures",), where)
        recovered = sum(int(e["recovered"]) for e in entries)
        if recovered:
            return Verdict(finding, CONTRADICTED,
                           f"a flush failed here {recovered} time(s) and the session was rolled back or closed before its next use")
    elif code in ("SES301", "SES302"):
        entries = _entries(report, ("sessions",), where)
        shared = sum(int(e["shared"]) for e in entries)
        if shared:
            return Verdict(finding, CONTRADICTED,
                           f"{shared} session(s) made here were used by two threads or tasks, never at once")
    return Verdict(finding, NOT_EXERCISED, "the runtime report has no evidence for this line")


def _entries(report: Report, kinds: Sequence[str], where: _Located) -> List[Dict[str, Any]]:
    found = []
    for kind in kinds:
        entries = list(report.entries(kind))
        exact = [e for e in entries if where.exact(e["site"])]
        found.extend(exact or [e for e in entries if where.near(e["site"])])
    return found


def render_text(result: Verification, cwd: Optional[str] = None) -> str:
    out = []
    for verdict in result.verdicts:
        f = verdict.finding
        out.append(f"{f.path}:{f.line}:{f.column}: {f.code} {f.message} [{verdict.status}]")
        for r in verdict.runtime:
            test = f" (in {r.test})" if r.test else ""
            out.append(f"    runtime: {display_path(r.site.path, cwd)}:{r.site.line}: {r.message}{test}")
        if verdict.detail and not verdict.runtime:
            out.append(f"    {verdict.detail}")
    for r in result.runtime_only:
        test = f" (in {r.test})" if r.test else ""
        out.append(f"{display_path(r.site.path, cwd)}:{r.site.line}:1: {r.code} {r.message} [runtime-only]{test}")
        for role, site in r.related:
            out.append(f"    {role}: {display_path(site.path, cwd)}:{site.line}")
    return "".join(line + "\n" for line in out)


def summary(result: Verification) -> str:
    counts = result.counts()
    parts = ", ".join(f"{counts[s]} {s}" for s in STATUSES)
    n = len(result.verdicts)
    return f"{n} static finding{'s' if n != 1 else ''}: {parts}; {len(result.runtime_only)} runtime-only."


def as_dict(result: Verification, cwd: Optional[str] = None) -> Dict[str, Any]:
    def rel(r: RuntimeFinding) -> Dict[str, Any]:
        data = r.as_dict()
        data["path"] = display_path(r.site.path, cwd)
        return {**data, "status": "runtime-only"}
    return {"findings": [v.as_dict() for v in result.verdicts],
            "runtime_only": [rel(r) for r in result.runtime_only],
            "summary": result.counts()}
