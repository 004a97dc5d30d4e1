from __future__ import annotations

from typing import Iterator, Optional

import libcst as cst

from ..model import FileModel
from ..rule import Report, Rule
from ..semantic.facts import dotted
from ..semantic.index import Scope
from ..semantic.values import Kind, Own
from ..semantic.walk import walk, walk_scope

_LOADERS = frozenset({"get", "get_one", "scalar", "scalars", "execute", "query", "merge"})


class InstanceUsedAfterClose(Rule):
    """## What it does
    Checks for an ORM instance loaded or added through a session that is then committed (with
    `expire_on_commit` left at its default) and closed at the end of its `with` block, and an
    attribute of the instance read after the block.

    ## Why is this bad?
    `commit()` expires every instance of the session; closing detaches them. Reading an
    expired attribute of a detached instance cannot reload it and raises
    `DetachedInstanceError: Instance <User> is not bound to a Session; attribute refresh
    operation cannot proceed`. It works in a test that reads the attribute before the commit and
    fails in the code path that does not.

    ## Example
    ```python
    from sqlalchemy.orm import sessionmaker

    SessionLocal = sessionmaker()

    def rename(user_id, name):
        with SessionLocal() as session:
            user = session.get(User, user_id)
            user.name = name
            session.commit()
        return user.name
    ```

    Use instead:
    ```python
    from sqlalchemy.orm import sessionmaker

    SessionLocal = sessionmaker()

    def rename(user_id, name):
        with SessionLocal() as session:
            user = session.get(User, user_id)
            user.name = name
            session.commit()
            return user.name
    ```

    ## Known problems
    Only `with` blocks are followed, and only instances bound to a plain name from a session
    method (`get`, `scalar`, `scalars(...).first()`, `query(...).one()`) or added with `add()`.
    `sessionmaker.configure(expire_on_commit=False)` after the factory is created is not seen.

    ## References
    - [Session basics: committing (expire_on_commit)](https://docs.sqlalchemy.org/en/20/orm/session_basics.html#committing)
    - [FAQ: DetachedInstanceError](https://docs.sqlalchemy.org/en/20/errors.html#error-bhk3)
    """

    code = "SES106"
    name = "instance-used-after-close"
    message = "`{attribute}` is read after `{session}` was committed and closed: it is expired and detached"
    hint = "Read it inside the `with` block, `{session}.refresh()` it before closing, or set expire_on_commit=False"

    def check(self, model: FileModel) -> Iterator[Report]:
        for info in model.functions:
            if "commit" not in info.call_names:
                continue
            scope = model.scope_of(info)
            for block in _blocks(info.node):
                statements = list(block.body)
                for i, stmt in enumerate(statements):
                    if isinstance(stmt, cst.With):
                        for name, session_name in _expired_instances(model, stmt, scope):
                            read = _first_read(statements[i + 1:], name)
                            if read is not None:
                                attribute = f"{name}.{read.attr.value}"
                                yield Report(read, {"attribute": attribute, "session": session_name}, info.node)


def _blocks(func: cst.FunctionDef) -> Iterator[cst.IndentedBlock]:
    for n in walk_scope(func.body):
        if isinstance(n, cst.IndentedBlock):
            yield n


def _expired_instances(model: FileModel, stmt: cst.With, scope: Scope) -> Iterator[tuple[str, str]]:
    for item in stmt.items:
        if item.asname is None or not isinstance(item.asname.name, cst.Name):
            continue
        value = model.index.eval(item.item, scope)
        if value is None or value.kind is not Kind.SESSION or value.own is not Own.OWNED or value.keeps_loaded:
            continue
        s = item.asname.name.value
        order = list(walk_scope(stmt.body))
        position = {id(n): k for k, n in enumerate(order)}
        bound: dict[str, int] = {}
        for n in order:
            if isinstance(n, cst.Assign) and len(n.targets) == 1 and isinstance(n.targets[0].target, cst.Name):
                if _loaded_from(n.value, s):
                    bound[n.targets[0].target.value] = position[id(n)]
            elif isinstance(n, cst.Call) and isinstance(n.func, cst.Attribute) and dotted(n.func) == f"{s}.add" \
                    and n.args and isinstance(n.args[0].value, cst.Name):
                bound.setdefault(n.args[0].value.value, position[id(n)])
        commits = [position[id(n)] for n in order if isinstance(n, cst.Call) and dotted(n.func) == f"{s}.commit"]
        for name, at in bound.items():
            after = [c for c in commits if c > at]
            if not after:
                continue
            last_commit = max(after)
            rescued = any(isinstance(n, cst.Call) and dotted(n.func) in (f"{s}.refresh", f"{s}.expunge") and
                          position[id(n)] > last_commit and n.args and
                          isinstance(n.args[0].value, cst.Name) and n.args[0].value.value == name for n in order)
            if not rescued:
                yield name, s


def _loaded_from(value: cst.BaseExpression, session: str) -> bool:
    """`s.get(...)`, `s.scalars(...).first()`, `s.query(M).filter(...).one()`, ..."""
    node: cst.BaseExpression = value
    while isinstance(node, cst.Call) and isinstance(node.func, cst.Attribute):
        inner = node.func.value
        if isinstance(inner, cst.Name) and inner.value == session:
            return node.func.attr.value in _LOADERS
        node = inner
    return False


def _first_read(statements: list[cst.BaseStatement], name: str) -> Optional[cst.Attribute]:
    for stmt in statements:
        targets: set[int] = set()
        for n in walk(stmt):
            if isinstance(n, cst.AssignTarget):
                if isinstance(n.target, cst.Name) and n.target.value == name:
                    return None  # rebound: a different object from here on
                targets.add(id(n.target))
            elif isinstance(n, (cst.AugAssign, cst.AnnAssign)):
                targets.add(id(n.target))
        for n in walk(stmt):
            if isinstance(n, cst.Attribute) and isinstance(n.value, cst.Name) and n.value.value == name and \
                    id(n) not in targets:
                return n
    return None

