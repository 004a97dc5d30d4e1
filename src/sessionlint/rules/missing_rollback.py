from __future__ import annotations

from typing import Iterator


from ..model import FileModel
from ..rule import Report, Rule
from ..semantic.facts import dotted
from ..semantic.transactions import (FAILING_METHODS, catches_db_errors, closed_by_with_inside,
                                     failed_session_survives,
                                     inside_transaction_block, recovers, reraises, savepoint_names)
from ..semantic.values import Kind


class MissingRollback(Rule):
    """## What it does
    Checks for `except` handlers that swallow a database error raised by a session operation
    without rolling the session back, when the session is used again afterwards or handed back
    to the caller.

    ## Why is this bad?
    When a flush or commit fails, the session's transaction is rolled back underneath it and
    the session refuses any further work until `rollback()` is called: the next operation
    raises `PendingRollbackError` ("This Session's transaction has been rolled back due to a
    previous exception during flush"). On PostgreSQL a failed statement also aborts the
    transaction (`current transaction is aborted, commands ignored until end of transaction
    block`). Swallowing the error moves the failure to the next request or the next loop
    iteration, far from its cause.

    Failing operations include calls of the project's own functions that run SQL on the
    session they are given.

    Not reported: handlers that re-raise, that call `rollback()` or `close()` (directly, through
    a helper, on a savepoint taken with `sp = session.begin_nested()`, or in the `finally` of the
    same `try`), handlers for errors
    that do not fail the transaction (`NoResultFound`, `KeyError`), code inside
    `with session.begin()` or a `begin_nested()` savepoint, and scoped sessions (`db.session`)
    that are not used again in the function (the framework's teardown removes them).

    ## Example
    ```python
    from sqlalchemy.exc import IntegrityError
    from sqlalchemy.orm import Session

    def register(session: Session, email):
        session.add(User(email=email))
        try:
            session.commit()
        except IntegrityError:
            log.warning("duplicate %s", email)
        return session.query(User).filter_by(email=email).one()
    ```

    Use instead:
    ```python
    from sqlalchemy.exc import IntegrityError
    from sqlalchemy.orm import Session

    def register(session: Session, email):
        session.add(User(email=email))
        try:
            session.commit()
        except IntegrityError:
            session.rollback()
            log.warning("duplicate %s", email)
        return session.query(User).filter_by(email=email).one()
    ```

    ## Known problems
    Core `Connection`s are not checked: a failed statement leaves a SQLAlchemy connection
    usable, and only PostgreSQL aborts the surrounding transaction, which the analysis cannot
    tell from the code (migrations probing features on SQLite are the common case).

    ## References
    - [FAQ: "This Session's transaction has been rolled back due to a previous exception during flush"](https://docs.sqlalchemy.org/en/20/faq/sessions.html#this-session-s-transaction-has-been-rolled-back-due-to-a-previous-exception-during-flush-or-similar)
    """

    code = "SES202"
    name = "missing-rollback"
    message = "`except` swallows a failed `{call}` without `{receiver}.rollback()`"
    hint = "Call `{receiver}.rollback()` in the handler (or re-raise)"

    def check(self, model: FileModel) -> Iterator[Report]:
        for info, ops in model.operations():
            if not any(op.context.trys for op in ops.ops) and not any(h.context.trys for h in ops.helpers):
                continue
            scope = model.scope_of(info)
            graph = None
            reported: set[int] = set()
            savepoints = savepoint_names(info.node)
            failing = [(op.receiver, op.value, op.context, f"{op.receiver}.{op.method}()") for op in ops.ops
                       if op.method in FAILING_METHODS]
            # `_update_errors(session)` in the try: a helper of the module that queries the session
            failing += [(h.receiver, h.value, h.context, f"{dotted(h.call.func) or h.helper}(...)")
                        for h in ops.helpers if h.queries and h.value is not None]
            for receiver, value, context, what in failing:
                # a Core Connection is not left unusable by a failed statement (only a
                # PostgreSQL transaction is); a Session is, after a failed flush
                if value.kind is Kind.CONNECTION or not (value.is_session_like or value.kind is Kind.REGISTRY) or \
                        inside_transaction_block(context, receiver):
                    continue
                for tr, part in reversed(context.trys):
                    if part != "body":
                        continue
                    catching = [h for h in tr.handlers if catches_db_errors(h, model.index, scope)]
                    if not catching:
                        continue  # the error goes on to an outer try
                    handler = catching[0]
                    if closed_by_with_inside(context, receiver, tr):
                        break  # `try: async with factory() as s: ...`: the with closed it first
                    finally_recovers = tr.finalbody is not None and recovers(tr.finalbody, receiver, model.index, scope)
                    if id(handler) not in reported and not reraises(handler, model.index, scope) and not finally_recovers and \
                            not recovers(handler, receiver, model.index, scope) and \
                            not any(recovers(handler, sp, model.index, scope) for sp in savepoints.get(receiver, ())):
                        if graph is None:
                            graph = model.graph_index(info)
                        if failed_session_survives(graph, handler, receiver, value.own, model.index, scope):
                            reported.add(id(handler))
                            yield Report(handler, {"receiver": receiver, "call": what}, info.node)
                    break
