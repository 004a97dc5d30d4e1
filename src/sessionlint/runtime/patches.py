"""Installs the hooks the hub needs, and takes every one of them out again.

SQLAlchemy has no event for session creation or for a session call in progress, so a few
``Session`` methods are wrapped at class level; the rest comes from public events. Every
wrapper is recorded with what it replaced, and ``uninstall`` restores exactly that.
"""
from __future__ import annotations

import atexit
import functools
import sys
import threading
from typing import Any, Callable, List, Optional, Tuple

from sqlalchemy import event
from sqlalchemy.exc import PendingRollbackError
from sqlalchemy.ext.asyncio import AsyncSession
from sqlalchemy.orm import Session
from sqlalchemy.orm.attributes import instance_state
from sqlalchemy.orm.exc import DetachedInstanceError
from sqlalchemy.pool import Pool

from .hub import RECORD_ATTR, Hub, who

# Session calls that talk to the database: they start a transaction and can meet a failed one.
USE_METHODS = ("execute", "scalar", "scalars", "get", "get_one", "flush", "commit", "refresh",
               "merge", "connection")
# Calls that end the session's state; checked for overlap but not counted as a use, because a
# framework may close a session from another thread once the handler is done with it.
END_METHODS = ("rollback",)
CLOSE_METHODS = ("close", "invalidate", "reset")
_MISSING = object()
Listeners = List[Tuple[Any, str, Callable[..., Any]]]
_LINGERING: Optional[Listeners] = None  # inert listeners an uninstall could not remove safely


def remove_listeners(events: Listeners) -> None:
    for target, name, fn in reversed(events):
        if event.contains(target, name, fn):
            event.remove(target, name, fn)


@atexit.register
def _remove_lingering() -> None:
    global _LINGERING
    if _LINGERING is not None:
        events, _LINGERING = _LINGERING, None
        remove_listeners(events)


class Patches:
    def __init__(self, hub: Hub) -> None:
        self.hub = hub
        self._attrs: List[Tuple[type, str, Any]] = []
        self._events: List[Tuple[Any, str, Callable[..., Any]]] = []

    def install(self) -> None:
        self._wrap(Session, "__init__", self._init)
        self._wrap(AsyncSession, "__init__", self._async_init)
        for name in USE_METHODS:
            if hasattr(Session, name):
                self._wrap(Session, name, functools.partial(self._span, use=True,
                                                            tracks_failure=name in ("flush", "commit"),
                                                            counts_commit=name == "commit"))
        for name in END_METHODS:
            self._wrap(Session, name, functools.partial(self._span, use=False, tracks_failure=False,
                                                        counts_commit=False))
        for name in CLOSE_METHODS:
            if hasattr(Session, name):
                self._wrap(Session, name, self._close)
        self._wrap(DetachedInstanceError, "__init__", self._detached_init)
        global _LINGERING
        if _LINGERING is not None:  # listeners left in place by the last uninstall: wake them
            self._events, _LINGERING = _LINGERING, None
            return
        hub = self.hub
        self._listen(Session, "after_begin", lambda session, tx, conn: hub.began(session))
        self._listen(Session, "after_commit", lambda session: hub.end_transaction(session))
        self._listen(Session, "after_rollback", lambda session: hub.end_transaction(session))
        self._listen(Session, "after_soft_rollback", self._soft_rollback)
        self._listen(Session, "persistent_to_detached",
                     lambda session, instance: hub.detaching(session, instance_state(instance)))
        self._listen(Pool, "checkout", lambda dbapi, record, proxy: hub.checkout(id(record), sys._getframe()))
        self._listen(Pool, "checkin", lambda dbapi, record: hub.returned(id(record), sys._getframe()))
        self._listen(Pool, "detach", lambda dbapi, record: hub.returned(id(record), None, detached=True))

    def uninstall(self) -> None:
        """Put back every wrapped attribute and remove the listeners.

        SQLAlchemy's listener collections may not change while another thread dispatches an
        event ("deque mutated during iteration" inside that thread's commit()), so when other
        threads are running the listeners stay registered, inert, until the next install, an
        uninstall with no other thread, or interpreter exit."""
        global _LINGERING
        for cls, name, original in reversed(self._attrs):
            if original is _MISSING:
                delattr(cls, name)
            else:
                setattr(cls, name, original)
        self._attrs.clear()
        events, self._events = self._events, []
        if threading.active_count() > 1:
            _LINGERING = events
            return
        remove_listeners(events)

    # -- mechanics -------------------------------------------------------------------------
    # -- mechanics -------------------------------------------------------------------------
    def _wrap(self, cls: type, name: str, make: Callable[..., Any]) -> None:
        own = cls.__dict__.get(name, _MISSING)
        original = getattr(cls, name)
        wrapper = make(original)
        functools.update_wrapper(wrapper, original)
        self._attrs.append((cls, name, own))
        setattr(cls, name, wrapper)

    def _listen(self, target: Any, name: str, fn: Callable[..., Any]) -> None:
        hub = self.hub

        def listener(*args: Any) -> Any:
            if hub.recorders:  # inert while lingering after an uninstall
                return fn(*args)
            return None
        event.listen(target, name, listener)
        self._events.append((target, name, listener))

    # -- wrappers --------------------------------------------------------------------------
    def _init(self, original: Callable[..., Any]) -> Callable[..., Any]:
        hub = self.hub

        def __init__(session: Session, *args: Any, **kw: Any) -> None:
            original(session, *args, **kw)
            hub.created(session, sys._getframe())
        return __init__

    def _async_init(self, original: Callable[..., Any]) -> Callable[..., Any]:
        def __init__(session: AsyncSession, *args: Any, **kw: Any) -> None:
            original(session, *args, **kw)
            rec = session.sync_session.__dict__.get(RECORD_ATTR)
            if rec is not None:
                rec.is_async = True
        return __init__

    def _span(self, original: Callable[..., Any], use: bool, tracks_failure: bool,
              counts_commit: bool) -> Callable[..., Any]:
        hub = self.hub

        def wrapper(session: Session, *args: Any, **kw: Any) -> Any:
            rec = session.__dict__.get(RECORD_ATTR) or hub.record(session)
            me = who()
            inflight = rec.inflight
            if inflight or (use and rec.tx_last != me):
                hub.enter(rec, me, use)
            else:  # the common case: nobody else inside, same user as last time
                inflight[me] = 1
            if counts_commit:
                hub.committed(session, sys._getframe())
            try:
                return original(session, *args, **kw)
            except PendingRollbackError:
                hub.reused_after_failure(rec, sys._getframe())
                raise
            except Exception:
                if tracks_failure:
                    hub.failed(rec, sys._getframe())
                raise
            finally:
                depth = inflight.get(me, 1) - 1
                if depth:
                    inflight[me] = depth
                else:
                    inflight.pop(me, None)
        return wrapper

    def _close(self, original: Callable[..., Any]) -> Callable[..., Any]:
        hub = self.hub

        def close(session: Session, *args: Any, **kw: Any) -> Any:
            rec = hub.record(session)
            me = who()
            hub.enter(rec, me, False)
            try:
                return original(session, *args, **kw)
            finally:
                hub.leave(rec, me)
                hub.closed(session, sys._getframe())
        return close

    def _detached_init(self, original: Callable[..., Any]) -> Callable[..., Any]:
        hub = self.hub

        def __init__(error: DetachedInstanceError, *args: Any, **kw: Any) -> None:
            original(error, *args, **kw)
            hub.detached_error(sys._getframe())
        return __init__

    def _soft_rollback(self, session: Session, previous_transaction: Any) -> None:
        rec = self.hub.record(session)
        self.hub.recovered(rec)
