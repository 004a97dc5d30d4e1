from __future__ import annotations

from typing import Iterator

import libcst as cst

from ..model import FileModel
from ..rule import Report, Rule
from ..semantic.values import Kind

# AsyncSession / AsyncConnection methods that are coroutines (SQLAlchemy 2.0, ext/asyncio).
COROUTINE_METHODS = frozenset({"execute", "scalar", "scalars", "get", "get_one", "stream", "stream_scalars",
                               "flush", "commit", "rollback", "close", "aclose", "reset", "invalidate",
                               "refresh", "merge", "delete", "connection", "run_sync", "exec",
                               "merge_all", "delete_all", "start", "exec_driver_sql", "remove"})


class UnawaitedSessionCall(Rule):
    """## What it does
    Checks for coroutine methods of an `AsyncSession` or `AsyncConnection` (`commit`,
    `execute`, `flush`, `close`, ...) called without `await`.

    ## Why is this bad?
    Calling a coroutine function only creates the coroutine; nothing runs until it is awaited.
    An un-awaited `session.commit()` commits nothing, an un-awaited `close()` leaves the
    connection checked out, and Python only warns "coroutine ... was never awaited" when the
    object is garbage collected, far from the line that forgot the `await`. Using the
    coroutine as if it were the result (`session.scalars(q).all()`, `for row in
    session.exec(q):`) fails with `AttributeError`/`TypeError` at run time.

    ## Example
    ```python
    from sqlalchemy.ext.asyncio import AsyncSession

    async def rename(session: AsyncSession, user, name):
        user.name = name
        session.commit()
    ```

    Use instead:
    ```python
    from sqlalchemy.ext.asyncio import AsyncSession

    async def rename(session: AsyncSession, user, name):
        user.name = name
        await session.commit()
    ```

    ## Known problems
    A coroutine that is assigned, returned or passed to another call (`asyncio.gather`,
    `create_task`, `wait_for`) is assumed to be awaited there.

    ## References
    - [Asyncio integration: AsyncSession](https://docs.sqlalchemy.org/en/20/orm/extensions/asyncio.html#sqlalchemy.ext.asyncio.AsyncSession)
    """

    code = "SES402"
    name = "unawaited-session-call"
    message = "`{receiver}.{method}()` is a coroutine and is never awaited"
    hint = "Write `await {receiver}.{method}()`"

    def check(self, model: FileModel) -> Iterator[Report]:
        for info, ops in model.operations():
            for op in ops.ops:
                statement = op.context.statement
                if op.awaited or op.method not in COROUTINE_METHODS or not op.value.is_async:
                    continue
                if op.value.kind is Kind.REGISTRY and op.method != "remove":
                    continue
                # a call that is its own statement is dropped; one used as a result is misused
                if op.misused or (isinstance(statement, cst.Expr) and statement.value is op.call):
                    yield Report(op.call, {"receiver": op.receiver, "method": op.method}, info.node)
