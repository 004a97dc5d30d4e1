from __future__ import annotations

from typing import Iterator

import libcst as cst

from ..model import FileModel
from ..rule import Report, Rule
from ..semantic.index import Scope
from ..semantic.values import Kind

_ASYNC_CM_METHODS = frozenset({"begin", "begin_nested", "connect"})


class SyncWithOnAsyncSession(Rule):
    """## What it does
    Checks for a plain `with` (instead of `async with`) on an `AsyncSession`, an
    `async_sessionmaker()` call, an `AsyncConnection`, or the `begin()`/`connect()` context
    managers of async sessions, factories and engines.

    ## Why is this bad?
    The asyncio objects implement only `__aenter__`/`__aexit__`. A plain `with` raises
    `TypeError` (or `AttributeError: __enter__`) the first time the code runs, which is often
    only in production on a rarely taken path; and where an object does offer a sync context
    manager, it would close the session without awaiting, leaving the connection to the
    garbage collector.

    ## Example
    ```python
    from sqlalchemy.ext.asyncio import async_sessionmaker

    AsyncSessionLocal = async_sessionmaker()

    async def count_users():
        with AsyncSessionLocal() as session:
            return await session.scalar(text("SELECT count(*) FROM users"))
    ```

    Use instead:
    ```python
    from sqlalchemy.ext.asyncio import async_sessionmaker

    AsyncSessionLocal = async_sessionmaker()

    async def count_users():
        async with AsyncSessionLocal() as session:
            return await session.scalar(text("SELECT count(*) FROM users"))
    ```

    ## Known problems
    **Preview** until its precision is measured: 151 real packages gave no finding to judge.
    Such code fails the first time it runs, so it rarely survives in released code.

    ## References
    - [Asyncio integration: synopsis (ORM)](https://docs.sqlalchemy.org/en/20/orm/extensions/asyncio.html#synopsis-orm)
    """

    code = "SES401"
    preview = True
    name = "sync-with-on-async-session"
    message = "`with` on async `{item}`; it needs `async with`"
    hint = "Write `async with`"

    def check(self, model: FileModel) -> Iterator[Report]:
        from ..semantic.operations import receiver_key

        places = [(info.sync_withs, model.scope_of(info), info.node) for info in model.functions if info.sync_withs]
        places.append((model.module_withs, Scope(model.summary.name), None))  # type: ignore[arg-type]
        for withs, scope, func in places:
            for n in withs:
                for item in n.items:
                    if _is_async_resource(model, item.item, scope):
                        yield Report(item.item, {"item": receiver_key(item.item)}, func)


def _is_async_resource(model: FileModel, expr: cst.BaseExpression, scope: Scope) -> bool:
    value = model.index.eval(expr, scope)
    if value is not None and value.is_session_like and value.is_async:
        return True
    if isinstance(expr, cst.Call) and isinstance(expr.func, cst.Attribute) and \
            expr.func.attr.value in _ASYNC_CM_METHODS:
        base = model.index.eval(expr.func.value, scope)
        return base is not None and base.is_async and \
            base.kind in (Kind.SESSION, Kind.CONNECTION, Kind.ENGINE, Kind.FACTORY)
    return False
