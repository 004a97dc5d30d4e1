"""``watch()``: the runtime checker for scripts and services, as a context manager or decorator."""
from __future__ import annotations

import functools
import inspect
import warnings
from typing import Any, Callable, List, Optional, TypeVar

from .hub import HUB, Recorder, Scope
from .report import Report, RuntimeFinding

F = TypeVar("F", bound=Callable[..., Any])


class SessionMisuseWarning(UserWarning):
    """A session misuse seen at runtime; ``.code`` is the sessionlint rule code."""

    def __init__(self, finding: RuntimeFinding) -> None:
        super().__init__(finding.render())
        self.finding = finding
        self.code = finding.code


class SessionMisuseError(SessionMisuseWarning):
    """Raised by ``watch(strict=True)``; ``.findings`` holds every finding of the block."""

    def __init__(self, findings: List[RuntimeFinding]) -> None:
        super().__init__(findings[0])
        self.findings = findings
        if len(findings) > 1:
            self.args = (f"{len(findings)} session misuses; first:\n{findings[0].render()}",)


class watch:
    """Watch the sessions used inside a block (or a decorated function).

    Findings are issued as ``SessionMisuseWarning`` when the block ends, or raised together as
    one ``SessionMisuseError`` with ``strict=True``. ``commit_threshold`` is how many commits
    from one line in one call are accepted before SES201 is reported. Hooks are installed on
    entry and removed on exit (when no other watcher is active). ``report`` holds everything
    recorded, for saving with ``sessionlint.runtime.report.save``.
    """

    def __init__(self, strict: bool = False, commit_threshold: int = 3, label: str = "the watch() block") -> None:
        self.strict = strict
        self.label = label
        self.recorder = Recorder(commit_threshold)
        self._scope: Optional[Scope] = None

    @property
    def report(self) -> Report:
        return self.recorder.report

    @property
    def findings(self) -> List[RuntimeFinding]:
        return self.recorder.report.sorted_findings()

    def __enter__(self) -> "watch":
        if self._scope is not None:
            raise RuntimeError("this watch() is already active; create one per block")
        HUB.attach(self.recorder)
        self._scope = HUB.push(self.label, owner=self.recorder)
        return self

    def __exit__(self, *exc: Any) -> None:
        scope, self._scope = self._scope, None
        try:
            HUB.pop(scope)  # type: ignore[arg-type]
        finally:
            HUB.detach(self.recorder)
        new, self.recorder.new = self.recorder.new, []
        if not new:
            return
        if self.strict and exc[0] is None:
            raise SessionMisuseError(new)
        for finding in new:
            warnings.warn(SessionMisuseWarning(finding), stacklevel=2)

    async def __aenter__(self) -> "watch":
        return self.__enter__()

    async def __aexit__(self, *exc: Any) -> None:
        self.__exit__(*exc)

    def __call__(self, fn: F) -> F:
        if inspect.iscoroutinefunction(fn):
            @functools.wraps(fn)
            async def run_async(*args: Any, **kw: Any) -> Any:
                with watch(self.strict, self.recorder.commit_threshold, self.label):
                    return await fn(*args, **kw)
            return run_async  # type: ignore[return-value]

        @functools.wraps(fn)
        def run(*args: Any, **kw: Any) -> Any:
            with watch(self.strict, self.recorder.commit_threshold, self.label):
                return fn(*args, **kw)
        return run  # type: ignore[return-value]
