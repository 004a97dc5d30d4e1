"""The detectors: one process-wide hub, fed by the patches, read by the attached recorders.

Everything here runs inside SQLAlchemy calls, so it never raises into them and does the least
work it can: a dict lookup and a few comparisons per session operation, a stack walk (over
per-code-object caches) only where a site must be named.
"""
from __future__ import annotations

import contextvars
import os
import sys
import threading
import weakref
from asyncio import current_task
from asyncio.events import _get_running_loop
from types import FrameType
from typing import Any, Dict, List, Optional, Tuple

from .report import Report, RuntimeFinding
from .sites import Attributor, Site

RECORD_ATTR = "_sessionlint_record"
Who = Tuple[int, Any]
_get_ident = threading.get_ident


def who() -> Who:
    """The thread and asyncio task running now (task None outside a running loop)."""
    loop = _get_running_loop()
    return (_get_ident(), current_task(loop) if loop is not None else None)


class Scope:
    """A span of execution at whose end open sessions count as leaks (a test, a watch block)."""

    def __init__(self, label: str, test: Optional[str], owner: Optional["Recorder"]) -> None:
        self.label = label
        self.test = test
        self.owner = owner  # its leaks are this recorder's, not every attached one's
        self.sessions: List["SessionRecord"] = []


class SessionRecord:
    __slots__ = ("ref", "site", "is_async", "scope", "active", "used", "closed_site",
                 "tx_last", "inflight", "users", "failed_site", "failure_reported", "reported",
                 "__weakref__")

    def __init__(self, session: Any, site: Optional[Site], scope: Optional[Scope]) -> None:
        self.ref = weakref.ref(session)
        self.site = site
        self.is_async = False
        self.scope = scope
        self.active = False          # began a transaction since it was created or last closed
        self.used = False
        self.closed_site: Optional[Site] = None
        self.tx_last: Optional[Who] = None
        self.inflight: Dict[Who, int] = {}
        self.users = 0
        self.failed_site: Optional[Site] = None
        self.failure_reported = False
        self.reported: set = set()


class Recorder:
    """Collects what the hub finds while it is attached."""

    def __init__(self, commit_threshold: int = 3) -> None:
        if commit_threshold < 1:
            raise ValueError("commit_threshold must be at least 1")
        self.commit_threshold = commit_threshold
        self.report = Report()
        self.new: List[RuntimeFinding] = []  # first sightings, for watch() to warn about
        self.log: List[RuntimeFinding] = []  # every sighting, for strict mode to judge one test

    def add(self, finding: RuntimeFinding) -> None:
        self.log.append(finding)
        if self.report.add(finding):
            self.new.append(finding)


class Hub:
    def __init__(self) -> None:
        self.recorders: List[Recorder] = []
        # Scopes are context-local: concurrent watch() blocks (threads, tasks) each see their own.
        # A thread started without a context (a server thread, a pool worker) falls back to the
        # outermost scope, so what it opens is checked when that ends, not at a random test's end.
        self._scopes: "contextvars.ContextVar[Tuple[Scope, ...]]" = contextvars.ContextVar(
            "sessionlint_scopes", default=())
        self.root: Optional[Scope] = None
        self.test: Optional[str] = None
        self.attributor: Optional[Attributor] = None
        self.lock = threading.RLock()
        # (code, line) -> [frame of the call, commits in it, site]; the frame tells calls apart.
        self.commits: Dict[Tuple[Any, int], List[Any]] = {}
        self.detached: "weakref.WeakKeyDictionary[Any, SessionRecord]" = weakref.WeakKeyDictionary()
        self.checked_out: Dict[int, List[Tuple[Optional[Site], Optional[Scope]]]] = {}
        self._patches: Any = None

    # -- attaching -------------------------------------------------------------------------
    def attach(self, recorder: Recorder) -> None:
        with self.lock:
            if not self.recorders:
                from .patches import Patches

                self.attributor = Attributor()
                self._patches = Patches(self)
                self._patches.install()
            self.recorders.append(recorder)

    def detach(self, recorder: Recorder) -> None:
        with self.lock:
            self.flush_commits()
            self.recorders.remove(recorder)
            if not self.recorders:
                self._patches.uninstall()
                self._patches = None
                self.commits.clear()
                self.checked_out.clear()
                self.root = None

    @property
    def installed(self) -> bool:
        return self._patches is not None

    def push(self, label: str, test: Optional[str] = None, owner: Optional[Recorder] = None) -> Scope:
        scope = Scope(label, test, owner)
        self.enter_scope(scope)
        if self.root is None:
            self.root = scope
        return scope

    def enter_scope(self, scope: Scope) -> None:
        self._scopes.set(self._scopes.get() + (scope,))

    def leave_scope(self, scope: Scope) -> None:
        """Take the innermost entry of ``scope`` off this context's stack."""
        stack = list(self._scopes.get())
        for i in range(len(stack) - 1, -1, -1):
            if stack[i] is scope:
                del stack[i]
                self._scopes.set(tuple(stack))
                return

    def current(self) -> Optional[Scope]:
        stack = self._scopes.get()
        return stack[-1] if stack else self.root

    def pop(self, scope: Scope) -> List[RuntimeFinding]:
        """End ``scope``: report the sessions and connections it left open."""
        with self.lock:
            self.leave_scope(scope)
            if self.root is scope:
                self.root = None
            self.flush_commits()
            leaks = []
            for rec in scope.sessions:
                if rec.active and "leak" not in rec.reported:
                    rec.reported.add("leak")
                    leaks.append(self._session_leak(rec, scope))
            for key, entries in list(self.checked_out.items()):
                for entry in [e for e in entries if e[1] is scope]:
                    entries.remove(entry)
                    site = entry[0]
                    if site is not None:
                        self.observe("connections", site, leaked=1)
                        leaks.append(RuntimeFinding(
                            "SES101", f"connection checked out here was never closed; still checked out at the end of {scope.label}",
                            site, test=scope.test))
                if not entries:
                    self.checked_out.pop(key, None)
            for finding in leaks:
                self.emit(finding, only=scope.owner)
            return leaks

    def _session_leak(self, rec: SessionRecord, scope: Scope) -> RuntimeFinding:
        session = rec.ref()
        if session is None:
            state = "was garbage-collected without close()"
        elif session.in_transaction():
            state = "was never closed and still holds its transaction and connection"
        else:
            state = "was never closed"
        site = rec.site
        assert site is not None
        self.observe("sessions", site, leaked=1)
        return RuntimeFinding("SES101", f"session created here {state} at the end of {scope.label}",
                              site, test=scope.test)

    # -- output ----------------------------------------------------------------------------
    def emit(self, finding: RuntimeFinding, commits: int = 0, only: Optional[Recorder] = None) -> None:
        if finding.test is None:
            finding.test = self.test
        for recorder in ([only] if only is not None else list(self.recorders)):
            if commits and commits != recorder.commit_threshold + 1:
                continue
            recorder.add(RuntimeFinding(finding.code, finding.message, finding.site, finding.related,
                                        finding.test))

    def observe(self, kind: str, site: Optional[Site], **counts: int) -> None:
        if site is None:
            return
        for recorder in list(self.recorders):
            recorder.report.observe(kind, site, **counts)

    def here(self, frame: Optional[FrameType], user_only: bool = False) -> Optional[Site]:
        """The site of the first user frame above ``frame`` (else of a library frame, unless
        ``user_only``: an asyncio task's own machinery says nothing about who closed a session)."""
        attributor = self.attributor
        if attributor is None:
            return None
        user = attributor.user_frame(frame, user_only)
        return attributor.site(user) if user is not None else None

    # -- sessions --------------------------------------------------------------------------
    def record(self, session: Any) -> SessionRecord:
        rec = session.__dict__.get(RECORD_ATTR)
        if rec is None:  # created before the hub was attached: no site, no leak check
            rec = SessionRecord(session, None, None)
            session.__dict__[RECORD_ATTR] = rec
        return rec

    def created(self, session: Any, frame: Optional[FrameType]) -> None:
        scope = self.current()
        site = None
        attributor = self.attributor
        if attributor is not None and attributor.on_stack(frame, _SCOPING_FILE):
            # made on demand by a scoped_session registry: it lives as long as the registry's
            # owner (an app context, a fixture), so it is checked when the outermost scope ends
            scope = self.root
        user = attributor.caller_of(frame, session, "__init__") if attributor is not None else None
        if user is not None:
            site = attributor.site(user)  # type: ignore[union-attr]
        rec = SessionRecord(session, site, scope if site is not None else None)
        session.__dict__[RECORD_ATTR] = rec
        if rec.scope is not None:
            rec.scope.sessions.append(rec)
        self.observe("sessions", site, created=1)

    def began(self, session: Any) -> None:
        rec = self.record(session)
        rec.active = True
        if not rec.used:
            rec.used = True
            self.observe("sessions", rec.site, used=1)

    def closed(self, session: Any, frame: Optional[FrameType]) -> None:
        rec = self.record(session)
        if rec.active:
            rec.active = False
            rec.closed_site = self.here(frame, user_only=True)
            self.observe("sessions", rec.site, closed=1)
        self.end_transaction(session)
        self.recovered(rec)

    def end_transaction(self, session: Any) -> None:
        rec = self.record(session)
        rec.tx_last = None

    def enter(self, rec: SessionRecord, me: Who, use: bool) -> None:
        """A call on the session by ``me`` starts; called by the wrappers off their fast path.

        Only calls that overlap are reported: a session handed from one thread or task to
        another and used by one at a time (a joined thread, FastAPI's worker threads for a
        dependency and its endpoint, a middleware and ``call_next``) is legal."""
        inflight = rec.inflight
        depth = inflight.get(me, 0)
        if depth == 0:
            others = [who for who in tuple(inflight) if who != me]
            if others:
                self.shared(rec, me, others[0], sys._getframe(1), "while another was still inside a session call")
        inflight[me] = depth + 1
        if use and depth == 0 and rec.tx_last != me:
            if rec.tx_last is not None and rec.users < 2:
                rec.users = 2
                self.observe("sessions", rec.site, shared=1)
            rec.tx_last = me

    def leave(self, rec: SessionRecord, me: Who) -> None:
        inflight = rec.inflight
        depth = inflight.get(me, 1) - 1
        if depth:
            inflight[me] = depth
        else:
            inflight.pop(me, None)

    def shared(self, rec: SessionRecord, me: Who, other: Optional[Who], frame: Optional[FrameType],
               how: str) -> None:
        if other is None:
            return
        threads = me[0] != other[0]
        code = "SES301" if threads else "SES302"
        if code in rec.reported:
            return
        rec.reported.add(code)
        users = "threads" if threads else "asyncio tasks"
        kind = "AsyncSession" if rec.is_async else "session"
        related = (("session created", rec.site),) if rec.site is not None else ()
        site = self.here(frame) or rec.site
        if site is None:
            return
        self.emit(RuntimeFinding(code, f"{kind} used by two {users} at once ({how})", site, related))

    # -- failures (SES202) ---------------------------------------------------------------
    def failed(self, rec: SessionRecord, frame: Optional[FrameType]) -> None:
        if rec.failed_site is None:
            site = self.here(frame)
            rec.failed_site = site or rec.site
            rec.failure_reported = False
            self.observe("failures", rec.failed_site, failed=1)

    def recovered(self, rec: SessionRecord) -> None:
        if rec.failed_site is not None:
            if not rec.failure_reported:
                self.observe("failures", rec.failed_site, recovered=1)
            rec.failed_site = None

    def reused_after_failure(self, rec: SessionRecord, frame: Optional[FrameType]) -> None:
        if rec.failure_reported:
            return
        rec.failure_reported = True
        reuse = self.here(frame)
        origin = rec.failed_site or reuse
        if origin is None:
            return
        self.observe("failures", origin, reused=1)
        related = []
        if reuse is not None and reuse != origin:
            related.append(("used again here without rollback()", reuse))
        if rec.site is not None:
            related.append(("session created", rec.site))
        self.emit(RuntimeFinding(
            "SES202", "a failed flush left the session's transaction inactive and the session was used "
            "again without rollback() (PendingRollbackError)", origin, tuple(related)))

    # -- commits (SES201) ------------------------------------------------------------------
    def committed(self, session: Any, frame: Optional[FrameType]) -> None:
        attributor = self.attributor
        if attributor is None:
            return
        user = attributor.caller_of(frame, session, "commit")
        if user is None:
            return
        pending = _pending(session)
        with self.lock:
            key = (user.f_code, user.f_lineno)
            entry = self.commits.get(key)
            if entry is not None and entry[0] is user:
                entry[1] += 1
                entry[3] = max(entry[3], pending)
            else:
                if entry is not None:
                    self._flush_commit(entry)
                entry = [user, 1, attributor.site(user), pending]
                self.commits[key] = entry
            count, batch = entry[1], entry[3]
        if batch > BATCH_SIZE:
            return  # commits of many rows each: deliberate batching, not one per iteration
        if any(count == r.commit_threshold + 1 for r in self.recorders):
            site: Site = entry[2]
            self.emit(RuntimeFinding(
                "SES201", f"commit() ran more than {count - 1} times from this line in one call of "
                f"{site.function}(), at most {batch} pending object(s) each: one transaction per iteration",
                site), commits=count)

    def _flush_commit(self, entry: List[Any]) -> None:
        self.observe("commits", entry[2], commits=entry[1], calls=1, max_per_call=entry[1])

    def flush_commits(self) -> None:
        # Drops the frames held to tell calls apart, so their locals can be freed.
        with self.lock:
            entries = list(self.commits.values())
            self.commits.clear()
        for entry in entries:
            self._flush_commit(entry)

    # -- detached instances (SES106) -------------------------------------------------------
    def detaching(self, session: Any, state: Any) -> None:
        self.detached[state] = self.record(session)

    def detached_error(self, frame: Optional[FrameType]) -> None:
        rec = None
        f = frame
        for _ in range(10):  # the loader that raised has the InstanceState in a local
            if f is None:
                break
            state = f.f_locals.get("state")
            if state is not None:
                try:
                    rec = self.detached.get(state)
                except TypeError:
                    rec = None
                if rec is not None:
                    break
            f = f.f_back
        related = []
        site = self.here(frame, user_only=True)
        if site is None:  # raised in library code (a serializer) after the user's code returned
            site = (rec.closed_site or rec.site) if rec is not None else None
            raised = self.here(frame)
            if raised is not None:
                related.append(("raised in", raised))
        if site is None:
            return
        if rec is not None and rec.site is not None:
            related.append(("session created", rec.site))
        if rec is not None and rec.closed_site is not None:
            related.append(("session closed", rec.closed_site))
        self.emit(RuntimeFinding(
            "SES106", "DetachedInstanceError: an attribute of an instance was read after its session "
            "was closed", site, tuple(related)))

    # -- connections -----------------------------------------------------------------------
    def checkout(self, key: int, frame: Optional[FrameType]) -> None:
        attributor = self.attributor
        if attributor is None or attributor.on_stack(frame, _SESSION_FILE):
            return  # a session's connection: the session record accounts for it
        site = self.here(frame)
        # StaticPool and SingletonThreadPool hand out one record several times: keep a stack
        self.checked_out.setdefault(key, []).append((site, self.current()))
        self.observe("connections", site, checked_out=1)

    def returned(self, key: int, frame: Optional[FrameType], detached: bool = False) -> None:
        """The pool took a connection back (``checkin``) or let it go (``detach``)."""
        entries = self.checked_out.get(key)
        if not entries:
            return
        site, scope = entries.pop()
        if not entries:
            self.checked_out.pop(key, None)
        if detached or not _gc_cleanup(frame):
            self.observe("connections", site, returned=1)
            return
        if site is not None:
            self.observe("connections", site, leaked=1)
            self.emit(RuntimeFinding(
                "SES101", "connection checked out here was never closed; the garbage collector "
                "returned it to the pool", site, test=scope.test if scope is not None else None),
                only=scope.owner if scope is not None else None)


def _gc_cleanup(frame: Optional[FrameType]) -> bool:
    """Whether the pool is taking a connection back from the garbage collector, not close()."""
    for _ in range(10):
        if frame is None:
            return False
        if frame.f_code.co_name == "_finalize_fairy":
            local = frame.f_locals
            # SQLAlchemy 2.1 passes is_gc_cleanup; 2.0 passes the dead weakref as ``ref``.
            return bool(local.get("is_gc_cleanup")) or local.get("ref") is not None
        frame = frame.f_back
    return False


def _pending(session: Any) -> int:
    """Objects the commit will write: new, deleted and modified (cheap: no identity-map scan)."""
    try:
        return len(session._new) + len(session._deleted) + len(session.identity_map._modified)
    except (AttributeError, TypeError):
        return 0


# more pending objects than this in one commit is a batch, not an iteration's worth
BATCH_SIZE = 10

_SCOPING_FILE = os.sep + os.path.join("orm", "scoping.py")
_SESSION_FILE = os.sep + os.path.join("orm", "session.py")

HUB = Hub()
