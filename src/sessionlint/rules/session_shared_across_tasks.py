from __future__ import annotations

from typing import Iterator

import libcst as cst

from ..model import FileModel
from ..rule import Report, Rule
from ..semantic.handoff import (GATHER_CALLS, TASK_CALLS, TASK_METHODS, nested_functions, origin,
                                session_names_in, used_after)
from ..semantic.walk import walk_scope


class SessionSharedAcrossTasks(Rule):
    """## What it does
    Checks for one `AsyncSession` used by tasks that can run at the same time: two or more
    awaitables given the same session in one `asyncio.gather(...)`, or `create_task(...)` /
    `TaskGroup.create_task(...)` with the session while the creating coroutine goes on using it.

    ## Why is this bad?
    An `AsyncSession` is not safe for concurrent tasks. When two tasks await operations on it
    at the same time, SQLAlchemy raises `InvalidRequestError: ... concurrent operations are not
    permitted` or `IllegalStateChangeError`, or the driver fails with "another operation is in
    progress" on the shared connection; which one depends on timing, so it appears under load.

    ## Example
    ```python
    import asyncio

    from sqlalchemy.ext.asyncio import AsyncSession

    async def dashboard(session: AsyncSession):
        users, orders = await asyncio.gather(count_users(session), count_orders(session))
        return users, orders
    ```

    Use instead:
    ```python
    import asyncio

    from sqlalchemy.ext.asyncio import AsyncSession

    async def dashboard(session: AsyncSession):
        users = await count_users(session)
        orders = await count_orders(session)
        return users, orders
    ```

    ## Known problems
    A task created with the session is reported when the creating coroutine mentions the
    session again later in its body, whether or not the task has finished by then.

    ## References
    - [Asyncio: using AsyncSession with concurrent tasks](https://docs.sqlalchemy.org/en/20/orm/extensions/asyncio.html#using-asyncsession-with-concurrent-tasks)
    """

    code = "SES302"
    name = "session-shared-across-tasks"
    message = "`{receiver}` is shared by tasks that run concurrently (`{call}`)"
    hint = "Await the operations one after another, or give each task its own session"

    def check(self, model: FileModel) -> Iterator[Report]:
        for info in model.functions:
            if not info.call_names & _CALL_NAMES:
                continue
            scope = model.scope_of(info)
            locals_ = nested_functions(info)
            calls = [n for n in walk_scope(info.node.body) if isinstance(n, cst.Call)]
            for call in calls:
                func = call.func
                where = origin(func, model.index, scope)
                is_task = where in TASK_CALLS or (isinstance(func, cst.Attribute) and func.attr.value in TASK_METHODS)
                if where in GATHER_CALLS:
                    per_awaitable = [session_names_in(a.value, model.index, scope, locals_) for a in call.args]
                    shared = _shared(per_awaitable, call)
                    if shared:
                        yield Report(call, {"receiver": shared, "call": "asyncio.gather()"}, info.node)
                elif is_task:
                    carried: set[str] = set()
                    for a in call.args:
                        carried |= session_names_in(a.value, model.index, scope, locals_)
                    used_later = {key for key in carried if used_after(info, call, key)}
                    if used_later:
                        callee = cst.Module([]).code_for_node(func)
                        yield Report(call, {"receiver": sorted(used_later)[0], "call": f"{callee}()"}, info.node)


def _shared(per_awaitable: list[set[str]], call: cst.Call) -> str:
    """A session two awaitables use; or the one used by a starred comprehension of awaitables."""
    seen: set[str] = set()
    for names, arg in zip(per_awaitable, call.args):
        if arg.star == "*" and names:
            return sorted(names)[0]  # `gather(*[refresh(session, o) for o in objs])`
        both = names & seen
        if both:
            return sorted(both)[0]
        seen |= names
    return ""


_CALL_NAMES = frozenset({"gather", "create_task", "ensure_future", "start_soon"})
