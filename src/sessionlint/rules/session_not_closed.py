from __future__ import annotations

from typing import Iterator

from ..model import FileModel
from ..rule import Report, Rule


class SessionNotClosed(Rule):
    """## What it does
    Checks for sessions and connections a function creates and can leave without closing.

    ## Why is this bad?
    A session that ran SQL holds a pooled connection and an open transaction until it is
    closed. Left open, it keeps the connection checked out (`idle in transaction` on
    PostgreSQL, row locks held) until garbage collection finds it; under load the pool runs
    dry and requests hang on `QueuePool limit of size 5 overflow 10 reached`.

    A path counts as closing the session when it calls `close()` (or `invalidate()`), enters it
    with `with`/`async with`/`contextlib.closing`, registers `session.close` as a callback, or
    hands the session on: returns or yields it, stores it on an object or in a container, or
    passes it to a function of the project that closes it. Passing it to any other call is a
    loan: the caller still owns it. A session rebound or deleted while open is lost too.

    A session that has not run SQL on a path holds nothing yet (autobegin has not begun), so an
    early return before its first use is not reported; a connection holds its pooled connection
    from `engine.connect()` on.

    ## Example
    ```python
    from sqlalchemy.orm import Session

    def active_user_names(engine, limit):
        session = Session(engine)
        users = session.scalars(select(User).where(User.active)).all()
        if not users:
            return []
        names = [u.name for u in users[:limit]]
        session.close()
        return names
    ```

    Use instead:
    ```python
    from sqlalchemy.orm import Session

    def active_user_names(engine, limit):
        with Session(engine) as session:
            users = session.scalars(select(User).where(User.active)).all()
            return [u.name for u in users[:limit]]
    ```

    ## Known problems
    Ownership that depends on a value the analysis cannot follow (`session = session or
    Session()`, a session created under one condition and closed under an unrelated one) is
    not tracked, so those functions are never reported. A session that is only read through
    ORM instances after its last method call (expired attributes refresh and begin a new
    transaction) is judged by its method calls alone. Module-level code is not analysed:
    scripts end with the process.

    ## References
    - [Session basics: opening and closing a session](https://docs.sqlalchemy.org/en/20/orm/session_basics.html#opening-and-closing-a-session)
    - [Connection pooling](https://docs.sqlalchemy.org/en/20/core/pooling.html)
    """

    code = "SES101"
    name = "session-not-closed"
    message = "{kind} `{receiver}` is not closed on every path out of `{function}`"
    hint = "Open it with `with` (or `async with`) so it closes on every path"

    def check(self, model: FileModel) -> Iterator[Report]:
        for info, life in model.lifecycles():
            for res in life.resources:
                if res.leaks_normal:
                    yield Report(res.node, {"kind": res.kind_word, "receiver": res.receiver,
                                            "function": info.node.name.value}, info.node)
