from __future__ import annotations

from typing import Iterator

from ..model import FileModel
from ..rule import Report, Rule


class CloseNotGuaranteed(Rule):
    """## What it does
    Checks for sessions and connections that are closed on every normal path but not when an
    exception is raised between their creation and the `close()`.

    ## Why is this bad?
    Any statement between creating the session and closing it can raise: a failed flush, an
    `IntegrityError` on commit, a timeout. When it does, the `close()` is skipped and the
    session keeps its connection and transaction, exactly as if it was never closed. Errors
    come in bursts, so this is how a pool gets exhausted in production while tests stay green.
    A `close()` in `finally`, or a `with` block, runs on every way out.

    ## Example
    ```python
    from sqlalchemy.orm import Session

    def rename_user(engine, user_id, name):
        session = Session(engine)
        user = session.get(User, user_id)
        user.name = name
        session.commit()
        session.close()
    ```

    Use instead:
    ```python
    from sqlalchemy.orm import Session

    def rename_user(engine, user_id, name):
        with Session(engine) as session:
            user = session.get(User, user_id)
            user.name = name
            session.commit()
    ```

    ## Known problems
    Only statements that call, await, yield, raise or assert are taken to raise; an attribute
    or subscript error between creation and close is not considered.

    ## References
    - [Session basics: framing out a begin / commit / rollback block](https://docs.sqlalchemy.org/en/20/orm/session_basics.html#framing-out-a-begin-commit-rollback-block)
    """

    code = "SES102"
    name = "close-not-guaranteed"
    message = "{kind} `{receiver}` is not closed when an exception is raised before `close()`"
    hint = "Use `with` or close it in a `finally:` block"

    def check(self, model: FileModel) -> Iterator[Report]:
        for info, life in model.lifecycles():
            # an unprotected yield is SES103's finding; the same session is not reported twice
            provided = {y.name for y in life.yields if not y.protected}
            for res in life.resources:
                if res.leaks_exc and not res.leaks_normal and res.name not in provided:
                    yield Report(res.node, {"kind": res.kind_word, "receiver": res.receiver}, info.node)
