from __future__ import annotations

from fnmatch import fnmatch
from typing import Iterator

from ..model import FileModel
from ..rule import Report, Rule
from ..semantic.transactions import parameter_reaches
from ..semantic.values import Own


class CommitInBorrowedSession(Rule):
    """## What it does
    Checks for functions that commit, roll back or close a session they received as a
    parameter.

    ## Why is this bad?
    Whoever passed the session owns its transaction. A callee that commits splits the caller's
    unit of work in two: if the caller fails afterwards, the first half is already permanent and
    cannot be rolled back. A callee that closes it detaches every object the caller still holds.
    Projects such as Airflow (`provide_session`) and Superset (`@transaction`) forbid it; others
    (FastAPI CRUD helpers) do it on purpose, so this rule is off unless selected.

    ## Example
    ```python
    from sqlalchemy.orm import Session

    def rename(session: Session, user, name):
        user.name = name
        session.commit()
    ```

    Use instead:
    ```python
    from sqlalchemy.orm import Session

    def rename(session: Session, user, name):
        user.name = name
        session.flush()
    ```

    ## Options
    - `allow`: qualified names or glob patterns of functions allowed to commit what they are
      given (batch drivers), e.g. `["jobs.backfill.*", "myapp.tasks:run_batch"]`.

    ## Known problems
    Only parameters annotated as a session count; `self.session` in repository classes is not
    judged (whether a repository may commit is a design choice).

    ## References
    - [Session basics: keep the lifecycle of the session separate and external](https://docs.sqlalchemy.org/en/20/orm/session_basics.html#when-do-i-construct-a-session-when-do-i-commit-it-and-when-do-i-close-it)
    """

    code = "SES203"
    name = "commit-in-borrowed-session"
    message = "`{receiver}.{method}()` on a session `{function}` received from its caller"
    hint = "Let the caller that opened the session commit; use `flush()` here"
    default_enabled = False
    option_names = ("allow",)

    def check(self, model: FileModel) -> Iterator[Report]:
        allow = [p.replace(":", ".") for p in model.options(self).get("allow", [])]
        for info, ops in model.operations():
            params = set(info.summary.params)
            full = f"{model.summary.name}.{info.qualname}"
            if any(fnmatch(full, p) or fnmatch(info.qualname, p) for p in allow):
                continue
            graph = None
            for op in ops.ops:
                if op.method in ("commit", "rollback", "close") and op.receiver in params and \
                        op.value.own is Own.BORROWED:
                    if graph is None:
                        graph = model.graph_index(info)
                    # `with create_session() as session:` rebinds the name to a session of its own
                    if parameter_reaches(graph, op.receiver, op.context.statement):
                        yield Report(op.call, {"receiver": op.receiver, "method": op.method,
                                               "function": info.node.name.value}, info.node)
