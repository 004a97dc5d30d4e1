from __future__ import annotations

from typing import Iterator, Optional

import libcst as cst

from ..model import FileModel
from ..rule import Report, Rule
from ..semantic.handoff import (POOL_METHODS, THREAD_CALLS, THREAD_METHODS, is_awaited, is_executor, is_thread_subclass,
                                nested_functions, origin, own_calls, parents, session_names_in, thread_subclass_names,
                                used_after)
from ..semantic.index import Scope


class SessionSharedAcrossThreads(Rule):
    """## What it does
    Checks for a session handed to another thread: `threading.Thread(target=..., args=(session,))`,
    a target closure that uses the session, `executor.submit(fn, session)`, `executor.map` (and
    the other map methods of an executor or a `multiprocessing` pool), `asyncio.to_thread(fn,
    session)`, `loop.run_in_executor(None, fn, session)`, Starlette's `run_in_threadpool`, anyio's
    `to_thread.run_sync`, or a `Thread` subclass constructed with it.

    ## Why is this bad?
    A `Session` is not thread-safe: its identity map, its transaction state and its connection
    are used without locks. Two threads using one session corrupt its state
    (`IllegalStateChangeError`, "This session is in 'prepared' state", objects from one
    thread's rows appearing in the other's queries) and, on the driver level, interleave
    statements on one connection. Each thread needs its own session from the factory.

    A session the function created and never touches after the hand-off is handed over, not
    shared, and is not reported; one it received may still be used by its caller. What crosses is
    the session itself, a container, `partial` or object built around it, a bound method
    (`session.execute`), a `Query`, or a closure that uses it; the engine (`session.bind`,
    `session.get_bind()`) and values the session computes in this thread (`session.scalar(q)`)
    are not the session.

    ## Example
    ```python
    import threading

    from sqlalchemy.orm import Session

    def refresh_all(session: Session, ids):
        worker = threading.Thread(target=refresh_some, args=(session, ids))
        worker.start()
        refresh_some(session, ids)
        worker.join()
    ```

    Use instead:
    ```python
    import threading

    from sqlalchemy.orm import Session, sessionmaker

    SessionLocal = sessionmaker()

    def refresh_all(session: Session, ids):
        worker = threading.Thread(target=refresh_some_with_own_session, args=(SessionLocal, ids))
        worker.start()
        refresh_some(session, ids)
        worker.join()
    ```

    ## Known problems
    **Preview** until its precision is measured: after the awaited hand-off fix, 151 real
    packages gave no finding to judge (the three before it were false).
    Use after the hand-off is judged by source order, not by whether the thread has been
    joined by then. `submit()` is recognised on any receiver; `map()`, `starmap()`,
    `apply_async()` and the `imap` family only on a receiver known to be an executor or a pool
    (made in the function, `with ThreadPoolExecutor() as pool`, a module or `self` attribute, an
    annotated parameter), so a pool from a helper's return value is missed. A bound method of the
    project's own objects as the target (`target=self._sync`) is not followed. A hand-off awaited
    at once (`await asyncio.to_thread(fn, session)`, `await loop.run_in_executor(None,
    session.commit)`) is not reported for a sync session: the coroutine waits for the thread, so the
    session is used by one of them at a time (an `AsyncSession` is still reported: its
    coroutines cannot run in another thread at all).

    ## References
    - [Session basics: is the Session thread-safe?](https://docs.sqlalchemy.org/en/20/orm/session_basics.html#is-the-session-thread-safe-is-asyncsession-safe-to-share-in-concurrent-tasks)
    """

    code = "SES301"
    preview = True
    name = "session-shared-across-threads"
    message = "`{receiver}` is handed to another thread by `{call}`"
    hint = "Pass the session factory and let the thread open (and close) its own session"

    def check(self, model: FileModel) -> Iterator[Report]:
        wanted = _CALL_NAMES | thread_subclass_names(model.index)
        for info in model.functions:
            if not info.call_names & wanted:
                continue
            scope = model.scope_of(info)
            locals_ = nested_functions(info)
            up: Optional[dict[int, cst.CSTNode]] = None
            for call in own_calls(info):
                if not _runs_elsewhere(call, model, scope):
                    continue
                carried: set[str] = set()
                for arg in call.args:
                    carried |= session_names_in(arg.value, model.index, scope, locals_)
                if up is None:
                    up = parents(info)
                if is_awaited(call, up):
                    # `await asyncio.to_thread(fn, session)`: this coroutine waits for the thread, so a
                    # sync session is used by one of them at a time; an AsyncSession's coroutines
                    # cannot run in another thread at all
                    carried = {key for key in carried if _is_async_session(key, model, scope)}
                # a session this function made and never touches again is handed over, not shared;
                # one it was given may still be used by its caller
                params = set(info.summary.params)
                shared = {key for key in carried if key in params or key.startswith("self.") or
                          used_after(info, call, key)}
                if shared:
                    callee = cst.Module([]).code_for_node(call.func)
                    yield Report(call, {"receiver": sorted(shared)[0], "call": f"{callee}()"}, info.node)


def _is_async_session(key: str, model: FileModel, scope: Scope) -> bool:
    if "." in key:
        return False  # `self.session`: its kind is not resolved here; sequential use is the norm
    value = model.index.lookup(key, scope)
    return value is not None and value.is_async


def _runs_elsewhere(call: cst.Call, model: FileModel, scope: Scope) -> bool:
    """Does the call run (some of) its arguments in another thread?"""
    func = call.func
    if origin(func, model.index, scope) in THREAD_CALLS or is_thread_subclass(func, model.index, scope):
        return True
    if not isinstance(func, cst.Attribute):
        return False
    method = func.attr.value
    # `Series.map` and friends share the pool methods' names: the receiver decides
    return method in THREAD_METHODS or (method in POOL_METHODS and is_executor(func.value, model.index, scope))


_CALL_NAMES = frozenset({"Thread", "Timer", "to_thread", "run_in_threadpool", "run_sync"}) | THREAD_METHODS | \
    POOL_METHODS
