from __future__ import annotations

from typing import Iterator

from ..model import FileModel
from ..rule import Report, Rule
from ..semantic.values import Kind
from ..semantic.operations import Loop
from ..semantic.transactions import (binds_name, deliberate_per_iteration, is_batching_guard,
                                     joined_via_callers, runs_every_iteration)


class CommitInLoop(Rule):
    """## What it does
    Checks for `commit()` on the same session once per iteration of a loop (directly, or
    through a helper of the same module that commits the session it is given).

    ## Why is this bad?
    Every `commit()` is a round trip that ends the transaction, flushes, and (with the default
    `expire_on_commit=True`) expires every loaded object, so the next iteration reloads them.
    A loop over ten thousand rows becomes ten thousand transactions: slow, and a failure
    half-way leaves half the rows written with no way to roll the batch back.

    Not reported: commits under a batching guard (`if i % 1000 == 0`, `if len(batch) >= n`,
    `if pending > limit`), `while` loops that fetch a batch at a time (`.limit(n)`,
    `fetchmany(n)`), a commit followed on every path by `break` or `return` (retry loops),
    loops that open (or `close()`/`remove()`) a fresh session each iteration, per-item error
    isolation (a `try` that rolls back, a `begin_nested()` savepoint, a context manager that
    rolls back), loops over a progress reporter (`tqdm`, `click.progressbar`), loops that act
    on the outside world with each item before committing (`storage.move(item)`), sessions
    joined to a connection the function (or every caller in the module) was given, and
    `flush()`.

    ## Example
    ```python
    from sqlalchemy.orm import Session

    def import_rows(session: Session, rows):
        for row in rows:
            session.add(Product(**row))
            session.commit()
    ```

    Use instead:
    ```python
    from sqlalchemy.orm import Session

    def import_rows(session: Session, rows):
        for row in rows:
            session.add(Product(**row))
        session.commit()
    ```

    ## Known problems
    Commits that are deliberately per item (durability before a side effect such as sending
    an email) look the same; mark them with `# noqa: SES201`.

    ## References
    - [Session basics: when do I construct a Session, when do I commit it?](https://docs.sqlalchemy.org/en/20/orm/session_basics.html#when-do-i-construct-a-session-when-do-i-commit-it-and-when-do-i-close-it)
    """

    code = "SES201"
    name = "commit-in-loop"
    message = "{what} inside a loop commits once per iteration"
    hint = "Commit once after the loop, or in batches (`if i % 1000 == 0`)"

    def check(self, model: FileModel) -> Iterator[Report]:
        for info, ops in model.operations():
            graph = None
            candidates = [(op.call, op.receiver, op.context, f"`{op.receiver}.commit()`")
                          for op in ops.ops if op.method == "commit"]
            candidates += [(h.call, h.receiver, h.context, f"`{h.helper.rpartition('.')[2]}()` (commits `{h.receiver}`)")
                           for h in ops.helpers if h.commits and h.value is not None and
                           (h.value.is_session_like or h.value.kind is Kind.REGISTRY)]
            for call, receiver, ctx, what in candidates:
                if not ctx.loops:
                    continue
                loop = ctx.loops[-1]
                if _fresh_each_iteration(loop, receiver) or any(is_batching_guard(g.test) for g in ctx.guards()):
                    continue
                if deliberate_per_iteration(loop, ctx, receiver, info, model.index, model.scope_of(info)) or \
                        joined_via_callers(model.functions, info, receiver):
                    continue
                if graph is None:
                    graph = model.graph_index(info)
                if runs_every_iteration(graph, ctx, loop):
                    yield Report(call, {"what": what}, info.node)


def _fresh_each_iteration(loop: Loop, receiver: str) -> bool:
    return receiver.isidentifier() and binds_name(loop, receiver)

