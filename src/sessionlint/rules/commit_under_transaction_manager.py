from __future__ import annotations

from typing import Iterator

import libcst as cst

from ..model import FileModel
from ..rule import Report, Rule


class CommitUnderTransactionManager(Rule):
    """## What it does
    Checks for `commit()` on a session joined to a transaction manager (`zope.sqlalchemy`,
    as used by `pyramid_tm` and the `transaction` package).

    ## Why is this bad?
    The transaction manager owns the commit: it commits every joined resource together at the
    end of the request (two-phase when there are several). Committing the session directly
    ends the transaction behind the manager's back: with zope.sqlalchemy's data manager the
    session is left in a state the manager then fails to commit or abort, and the request's
    other resources (mail queue, files) no longer commit atomically with the database.

    ## Example
    ```python
    from sqlalchemy.orm import scoped_session, sessionmaker
    from zope.sqlalchemy import register

    DBSession = scoped_session(sessionmaker())
    register(DBSession)

    def create_page(title):
        DBSession.add(Page(title=title))
        DBSession.commit()
    ```

    Use instead:
    ```python
    from sqlalchemy.orm import scoped_session, sessionmaker
    from zope.sqlalchemy import register

    DBSession = scoped_session(sessionmaker())
    register(DBSession)

    def create_page(title):
        DBSession.add(Page(title=title))
        DBSession.flush()
    ```

    ## References
    - [zope.sqlalchemy](https://pypi.org/project/zope.sqlalchemy/)
    - [pyramid_tm](https://docs.pylonsproject.org/projects/pyramid_tm/en/latest/)
    """

    code = "SES205"
    name = "commit-under-transaction-manager"
    message = "`{receiver}.commit()` on a session the transaction manager commits"
    hint = "Let the manager commit (`transaction.commit()` or the request's `request.tm`)"

    def check(self, model: FileModel) -> Iterator[Report]:
        for info, ops in model.operations():
            scope = model.scope_of(info)
            registered = model.index.registered(info.summary.register_calls, scope)
            for op in ops.ops:
                if op.method != "commit":
                    continue
                if op.value.tm or (op.receiver in registered and isinstance(op.call.func, cst.Attribute)):
                    yield Report(op.call, {"receiver": op.receiver}, info.node)
