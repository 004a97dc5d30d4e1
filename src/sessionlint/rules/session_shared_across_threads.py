from __future__ import annotations

from typing import Iterator

import libcst as cst

from ..model import FileModel
from ..rule import Report, Rule
from ..semantic.handoff import (THREAD_CALLS, THREAD_METHODS, is_thread_subclass, nested_functions, origin,
                                own_calls, session_names_in, thread_subclass_names, used_after)


class SessionSharedAcrossThreads(Rule):
    """## What it does
    Checks for a session handed to another thread: `threading.Thread(target=..., args=(session,))`,
    a target closure that uses the session, `executor.submit(fn, session)`, `executor.map`,
    `asyncio.to_thread(fn, session)`, `loop.run_in_executor(None, fn, session)`, or a
    `Thread` subclass constructed with it.

    ## Why is this bad?
    A `Session` is not thread-safe: its identity map, its transaction state and its connection
    are used without locks. Two threads using one session corrupt its state
    (`IllegalStateChangeError`, "This session is in 'prepared' state", objects from one
    thread's rows appearing in the other's queries) and, on the driver level, interleave
    statements on one connection. Each thread needs its own session from the factory.

    A session the function created and never touches after the hand-off is handed over, not
    shared, and is not reported; one it received may still be used by its caller.

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
    Use after the hand-off is judged by source order, not by whether the thread has been
    joined by then.

    ## References
    - [Session basics: is the Session thread-safe?](https://docs.sqlalchemy.org/en/20/orm/session_basics.html#is-the-session-thread-safe-is-asyncsession-safe-to-share-in-concurrent-tasks)
    """

    code = "SES301"
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
            for call in own_calls(info):
                func = call.func
                name = func.attr.value if isinstance(func, cst.Attribute) else origin(func, model.index, scope)
                threaded = origin(func, model.index, scope) in THREAD_CALLS or \
                    (isinstance(func, cst.Attribute) and name in THREAD_METHODS) or \
                    is_thread_subclass(func, model.index, scope)
                if not threaded:
                    continue
                carried: set[str] = set()
                for arg in call.args:
                    carried |= session_names_in(arg.value, model.index, scope, locals_)
                # a session this function made and never touches again is handed over, not shared;
                # one it was given may still be used by its caller
                params = set(info.summary.params)
                shared = {key for key in carried if key in params or key.startswith("self.") or
                          used_after(info, call, key)}
                if shared:
                    callee = cst.Module([]).code_for_node(func)
                    yield Report(call, {"receiver": sorted(shared)[0], "call": f"{callee}()"}, info.node)


_CALL_NAMES = frozenset({"Thread", "Timer", "to_thread", "submit", "map", "run_in_executor", "apply_async",
                         "starmap"})
