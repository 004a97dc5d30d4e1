"""pytest plugin (entry point ``pytest11``): ``pytest --sessionlint`` records a whole test run.

Loaded by every pytest run in an environment where sessionlint is installed, so it imports
nothing heavy and does nothing unless ``--sessionlint`` or ``--sessionlint-strict`` is given.
Under pytest-xdist each worker records its own tests and sends its report to the controller,
which merges them and writes the one file.
"""
from __future__ import annotations

import json
import os
from typing import TYPE_CHECKING, Any, Generator, List, Optional

import pytest

if TYPE_CHECKING:
    from .hub import Recorder, Scope
    from .report import Report

DEFAULT_REPORT = ".sessionlint-runtime.json"
_WORKER_KEY = "sessionlint_runtime_report"


def pytest_addoption(parser: pytest.Parser) -> None:
    group = parser.getgroup("sessionlint", "SQLAlchemy session misuse, checked at runtime (sessionlint)")
    group.addoption("--sessionlint", action="store_true", default=False,
                    help="record every SQLAlchemy session of the run and report misuse")
    group.addoption("--sessionlint-strict", action="store_true", default=False,
                    help="also fail a test at teardown when a session or connection it opened is left open "
                         "(implies --sessionlint)")
    group.addoption("--sessionlint-report", metavar="PATH", default=None,
                    help=f"where to write the JSON report (default: {DEFAULT_REPORT})")
    group.addoption("--sessionlint-commit-threshold", metavar="N", type=int, default=3,
                    help="commits from one line in one call accepted before SES201 (default: 3)")


def pytest_configure(config: pytest.Config) -> None:
    opt = config.option
    if not (opt.sessionlint or opt.sessionlint_strict or opt.sessionlint_report):
        return
    if opt.sessionlint_commit_threshold < 1:
        raise pytest.UsageError("--sessionlint-commit-threshold must be at least 1")
    try:
        import sqlalchemy
    except ImportError:
        raise pytest.UsageError("--sessionlint needs SQLAlchemy 2.0 or later, which is not installed") from None
    if int(sqlalchemy.__version__.split(".")[0]) < 2:
        raise pytest.UsageError(f"--sessionlint needs SQLAlchemy 2.0 or later (found {sqlalchemy.__version__})")
    config.pluginmanager.register(RuntimePlugin(config), "sessionlint-runtime")


class RuntimePlugin:
    def __init__(self, config: pytest.Config) -> None:
        from .hub import HUB, Recorder

        self.config = config
        self.hub = HUB
        self.strict: bool = config.option.sessionlint_strict
        self.recorder: Recorder = Recorder(config.option.sessionlint_commit_threshold)
        self.is_worker = hasattr(config, "workerinput")
        self.path = config.option.sessionlint_report or os.path.join(
            str(config.invocation_params.dir), DEFAULT_REPORT)
        self.hub.attach(self.recorder)
        self.run_scope: Optional[Scope] = self.hub.push("the test run", owner=self.recorder)
        self.test_scope: Optional[Scope] = None
        self.merged: List[Report] = []

    # -- per test --------------------------------------------------------------------------
    @pytest.hookimpl(wrapper=True, tryfirst=True)
    def pytest_runtest_setup(self, item: pytest.Item) -> Generator[None, None, None]:
        self.hub.test = item.nodeid
        self.test_scope = self.hub.push("its test", test=item.nodeid, owner=self.recorder)
        self.recorder.log.clear()
        return (yield)

    @pytest.hookimpl(wrapper=True)
    def pytest_fixture_setup(self, fixturedef: Any, request: Any) -> Generator[None, None, Any]:
        # Sessions made by module- or session-scoped fixtures outlive the test that set them up:
        # they belong to the run and are checked when it ends.
        if fixturedef.scope == "function" or self.run_scope is None:
            return (yield)
        self.hub.enter_scope(self.run_scope)
        try:
            return (yield)
        finally:
            self.hub.leave_scope(self.run_scope)

    @pytest.hookimpl(wrapper=True, trylast=True)
    def pytest_runtest_teardown(self, item: pytest.Item, nextitem: Optional[pytest.Item]) -> Generator[None, None, None]:
        try:
            result = yield
        finally:
            scope, self.test_scope = self.test_scope, None
            self.hub.pop(scope) if scope is not None else None
            self.hub.test = None
        # leaks found at the end of the test, and connections the garbage collector returned during it
        leaks = [f for f in self.recorder.log if f.code == "SES101" and f.test == item.nodeid]
        self.recorder.log.clear()
        if leaks and self.strict:
            details = "\n".join(f.render() for f in leaks)
            pytest.fail(f"sessionlint: {len(leaks)} session(s) or connection(s) left open by this test:\n{details}",
                        pytrace=False)
        return result

    # -- xdist -----------------------------------------------------------------------------
    @pytest.hookimpl(optionalhook=True)
    def pytest_testnodedown(self, node: Any, error: Any) -> None:
        from .report import Report

        data = getattr(node, "workeroutput", {}).get(_WORKER_KEY)
        if data:
            self.merged.append(Report.from_dict(json.loads(data)))

    # -- end of run ------------------------------------------------------------------------
    def pytest_sessionfinish(self, session: pytest.Session, exitstatus: int) -> None:
        from .report import save

        if self.run_scope is not None:
            self.hub.pop(self.run_scope)
            self.run_scope = None
            self.hub.detach(self.recorder)
        report = self.recorder.report
        for other in self.merged:
            report.merge(other)
        if self.is_worker:
            self.config.workeroutput[_WORKER_KEY] = json.dumps(report.as_dict())  # type: ignore[attr-defined]
            return
        save(report, self.path)

    def pytest_terminal_summary(self, terminalreporter: Any) -> None:
        if self.is_worker:
            return
        findings = self.recorder.report.sorted_findings()
        terminalreporter.section("sessionlint runtime")
        for finding in findings:
            where = f" [{finding.test}]" if finding.test else ""
            terminalreporter.line(finding.render(str(self.config.invocation_params.dir)) + where)
        counts: dict[str, int] = {}
        for finding in findings:
            counts[finding.code] = counts.get(finding.code, 0) + 1
        summary = ", ".join(f"{code} {n}" for code, n in sorted(counts.items())) or "no findings"
        terminalreporter.line(f"sessionlint runtime: {summary}; report written to {self.path}")
