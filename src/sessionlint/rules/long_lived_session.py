from __future__ import annotations

from typing import Iterator, Optional

import libcst as cst

from ..model import FileModel
from ..rule import Report, Rule
from ..semantic.facts import FunctionInfo
from ..semantic.index import Scope
from ..semantic.placement import assigned_global, class_statements, local_names, module_statements
from ..semantic.values import Kind, Own
from ..semantic.walk import walk_scope


class LongLivedSession(Rule):
    """## What it does
    Checks for a `Session` or `AsyncSession` instance (not a factory, not a `scoped_session`
    registry) created at module level, as a class attribute, or cached in a `global` from a
    function.

    ## Why is this bad?
    Such a session is shared by every thread, task and request of the process. A `Session` is
    not thread-safe and an `AsyncSession` is not safe for concurrent tasks, so concurrent use
    corrupts its state (`IllegalStateChangeError`, "concurrent operations are not permitted");
    its identity map grows without bound and serves stale rows; and one failed flush poisons it
    for everyone until someone rolls back.

    ## Example
    ```python
    from sqlalchemy.orm import sessionmaker

    SessionLocal = sessionmaker()
    session = SessionLocal()

    def get_user(user_id):
        return session.get(User, user_id)
    ```

    Use instead:
    ```python
    from sqlalchemy.orm import sessionmaker

    SessionLocal = sessionmaker()

    def get_user(user_id):
        with SessionLocal() as session:
            return session.get(User, user_id)
    ```

    ## Known problems
    **Preview** until its precision is measured: across 151 real packages its only findings (4)
    were in SQLAlchemy's own typing-test and benchmark files, none a real shared session.
    Scripts often open one session at module level on purpose: a module-level session is
    reported only when a function or method of the module uses it, or another analysed module
    imports it (a script that uses it only in its own top-level code runs on one thread). The
    `if __name__ == "__main__":` block is not analysed. Under flake8, which sees one file at a
    time, imports from other modules are not known.

    ## References
    - [Session basics: is the Session thread-safe?](https://docs.sqlalchemy.org/en/20/orm/session_basics.html#is-the-session-thread-safe-is-asyncsession-safe-to-share-in-concurrent-tasks)
    - [Contextual/thread-local sessions (scoped_session)](https://docs.sqlalchemy.org/en/20/orm/contextual.html)
    """

    code = "SES104"
    preview = True
    name = "long-lived-session"
    message = "`{target}` holds one session for the whole process ({where})"
    hint = "Create a session per unit of work (`with SessionLocal() as session:`), or use `scoped_session`"

    def check(self, model: FileModel) -> Iterator[Report]:
        module_scope = Scope(model.summary.name)
        for stmt in module_statements(model.module):
            for report in self._created(model, stmt, module_scope, "module level", None):
                if _shared(model, report.fields["target"]):
                    yield report
        for stmt in class_statements(model.module):
            yield from self._created(model, stmt, module_scope, "class attribute", None)
        for info in model.functions:
            if not info.globals:
                continue
            scope = model.scope_of(info)
            for n in walk_scope(info.node.body):
                name = assigned_global(info, n)
                if name is not None:
                    yield from self._created(model, n, scope, f"`global {name}`", info)

    @staticmethod
    def _created(model: FileModel, stmt: cst.CSTNode, scope: Scope, where: str,
                 info: Optional[FunctionInfo]) -> Iterator[Report]:
        if not isinstance(stmt, (cst.Assign, cst.AnnAssign)) or stmt.value is None:
            return
        value = stmt.value.expression if isinstance(stmt.value, cst.Await) else stmt.value
        if not isinstance(value, cst.Call):
            return
        v = model.index.eval(value, scope)
        if v is None or v.kind is not Kind.SESSION or v.own is not Own.OWNED:
            return
        targets = [t.target for t in stmt.targets] if isinstance(stmt, cst.Assign) else [stmt.target]
        target = " ".join(cst.Module([]).code_for_node(targets[0]).split())
        yield Report(value, {"target": target, "where": where}, info.node if info else None)


def _shared(model: FileModel, target: str) -> bool:
    """Whether the module-level `target` is reachable beyond the module's own top-level code."""
    if not target.isidentifier():
        return True
    dotted = f"{model.summary.name}.{target}"
    for summary in model.index.modules.values():
        if summary is not model.summary and dotted in summary.imports.values():
            return True
    for info in model.functions:
        if target in local_names(info):
            continue
        if any(isinstance(n, cst.Name) and n.value == target for n in walk_scope(info.node.body)):
            return True
    return False
