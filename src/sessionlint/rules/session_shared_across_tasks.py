from __future__ import annotations

from typing import Iterator, Optional

import libcst as cst

from ..model import FileModel
from ..rule import Report, Rule
from ..semantic.facts import FunctionInfo
from ..semantic.handoff import (GATHER_CALLS, TASK_CALLS, TASK_METHODS, THREAD_CALLS, awaited_in_loop, is_awaited,
                                nested_functions, origin, own_calls, parents, repeated_loop, session_names_in,
                                task_group_block, used_after)
from ..semantic.index import Scope
from ..semantic.walk import walk, walk_scope


class SessionSharedAcrossTasks(Rule):
    """## What it does
    Checks for one `AsyncSession` used by tasks that can run at the same time: two or more
    awaitables given the same session in one `asyncio.gather(...)` or `asyncio.as_completed(...)`
    (a starred comprehension counts as many), or `create_task(...)` / `TaskGroup.create_task(...)`
    with the session in a loop or a comprehension, or while the creating coroutine goes on using
    it.

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
    session again later in its body (inside the `async with` block, for a task group's task),
    whether or not the task has finished by then; a task awaited at once (`await
    create_task(...)`, or `await task` in the same loop body) is not reported. A list of
    awaitables built up with `append()` in a loop and then gathered is missed.

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
            up: Optional[dict[int, cst.CSTNode]] = None
            for call in own_calls(info):
                func = call.func
                where = origin(func, model.index, scope)
                if where in GATHER_CALLS or where in _SCHEDULE_ALL:
                    shared = _shared(_awaitables(call, info, where in _SCHEDULE_ALL), model, scope, locals_)
                    if shared:
                        yield Report(call, {"receiver": shared, "call": f"{where}()"}, info.node)
                elif where in TASK_CALLS or (isinstance(func, cst.Attribute) and func.attr.value in TASK_METHODS):
                    carried: set[str] = set()
                    for a in call.args:
                        carried |= session_names_in(a.value, model.index, scope, locals_)
                    if not carried:
                        continue
                    up = up if up is not None else parents(info)
                    overlapping = sorted(key for key in carried if _overlaps(info, call, key, up, model, scope))
                    if overlapping:
                        callee = cst.Module([]).code_for_node(func)
                        yield Report(call, {"receiver": overlapping[0], "call": f"{callee}()"}, info.node)


def _overlaps(info: FunctionInfo, call: cst.Call, key: str, up: dict[int, cst.CSTNode], model: FileModel,
              scope: Scope) -> bool:
    """Does the task run while something else uses the session `key`: a task of the same call
    made again by a loop, or the creating coroutine using the session before it waits?"""
    if is_awaited(call, up):
        return False  # `await create_task(...)` finishes before anything else runs
    loop = repeated_loop(call, key, up)
    if loop is not None and not awaited_in_loop(call, loop, up):
        return True
    return used_after(info, call, key, within=task_group_block(call, up, model.index, scope))


def _awaitables(call: cst.Call, info: FunctionInfo, iterable: bool) -> Iterator[tuple[cst.BaseExpression, bool]]:
    """The awaitables `gather(*aws)` (or, with `iterable`, `as_completed(aws)`) gets, each with
    whether it stands for any number of them."""
    for i, arg in enumerate(call.args):
        if arg.keyword is not None or (iterable and i > 0):
            continue  # `return_exceptions=True`, `timeout`
        if arg.star != "*" and not iterable:
            yield arg.value, False
            continue
        value = _starred_source(arg.value, info)
        if isinstance(value, (cst.List, cst.Tuple)):
            # `*[count_users(session), notify(email)]`: one awaitable per element
            for el in value.elements:
                yield el.value, isinstance(el, cst.StarredElement)
        else:
            yield value, True  # a comprehension, `map(...)`: one awaitable per item


def _starred_source(value: cst.BaseExpression, info: FunctionInfo) -> cst.BaseExpression:
    """`coros = [load(session, i) for i in ids]` ... `gather(*coros)`: the list it unpacks, when
    the function binds the name once, to a literal or a comprehension."""
    if not isinstance(value, cst.Name):
        return value
    bound = [n for n in walk_scope(info.node.body) if _binds_name(n, value.value)]
    if len(bound) == 1 and isinstance(bound[0], cst.Assign) and \
            isinstance(bound[0].value, (cst.List, cst.Tuple, cst.ListComp, cst.GeneratorExp)):
        return bound[0].value
    return value


def _binds_name(node: cst.CSTNode, name: str) -> bool:
    if isinstance(node, cst.Assign):
        return any(isinstance(t.target, cst.Name) and t.target.value == name for t in node.targets)
    if isinstance(node, (cst.AnnAssign, cst.AugAssign, cst.NamedExpr)):
        return isinstance(node.target, cst.Name) and node.target.value == name
    if isinstance(node, (cst.For, cst.CompFor)):
        return any(isinstance(t, cst.Name) and t.value == name for t in walk(node.target))
    if isinstance(node, cst.AsName):
        return isinstance(node.name, cst.Name) and node.name.value == name
    if isinstance(node, cst.Call) and isinstance(node.func, cst.Attribute):
        # `coros.append(...)`, `coros.extend(...)`: more than the one binding says
        return isinstance(node.func.value, cst.Name) and node.func.value.value == name
    return False


def _shared(awaitables: Iterator[tuple[cst.BaseExpression, bool]], model: FileModel, scope: Scope,
            locals_: dict[str, cst.FunctionDef]) -> str:
    """A session two awaitables use, or one used by a starred comprehension of awaitables."""
    seen: set[str] = set()
    for expr, many in awaitables:
        if _creates_task(expr, model, scope):
            continue  # judged where the task is created
        if _in_thread(expr, model, scope):
            continue  # `loop.run_in_executor(None, fn, session)`: threads, SES301's to report
        names = session_names_in(expr, model.index, scope, locals_)
        if many and names:
            return sorted(names)[0]  # `gather(*[refresh(session, o) for o in objs])`
        both = names & seen
        if both:
            return sorted(both)[0]
        seen |= names
    return ""


def _in_thread(expr: cst.BaseExpression, model: FileModel, scope: Scope) -> bool:
    if isinstance(expr, _COMPREHENSIONS):
        expr = expr.elt
    if not isinstance(expr, cst.Call):
        return False
    func = expr.func
    return origin(func, model.index, scope) in THREAD_CALLS or \
        (isinstance(func, cst.Attribute) and func.attr.value == "run_in_executor")


def _creates_task(expr: cst.BaseExpression, model: FileModel, scope: Scope) -> bool:
    if isinstance(expr, _COMPREHENSIONS):
        expr = expr.elt
    if not isinstance(expr, cst.Call):
        return False
    func = expr.func
    return origin(func, model.index, scope) in TASK_CALLS or \
        (isinstance(func, cst.Attribute) and func.attr.value in TASK_METHODS)


# Schedule every awaitable of the iterable they are given at once.
_SCHEDULE_ALL = frozenset({"asyncio.as_completed"})
_COMPREHENSIONS = (cst.ListComp, cst.SetComp, cst.GeneratorExp)
_CALL_NAMES = frozenset({"gather", "as_completed", "create_task", "ensure_future", "start_soon"})
