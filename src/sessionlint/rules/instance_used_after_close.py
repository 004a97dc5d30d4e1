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
    attribute of the instance read after the block. A `begin()` block commits when it ends:
    `with SessionLocal.begin() as s:`, `with Session(engine) as s, s.begin():` and a nested
    `with s.begin():` count as commits.

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
    **Preview** until its precision is measured: 151 real packages gave no finding to judge
    (the three found in SQLAlchemy's own tests were false and are fixed).
    Only `with` blocks are followed, and only instances bound to a plain name (`x = ...`,
    `x: T = ...`, `(x := ...)`) from a session method (`get`, `scalar`, `scalars(...).first()`,
    `query(...).one()`, awaited or not) or added with `add()`. The order of the commits, refreshes,
    expunges and `s.expire_on_commit = False` assignments inside the block is the source order, not
    the paths through it. `sessionmaker.configure(expire_on_commit=False)` after the factory is
    created is not seen.

    ## References
    - [Session basics: committing (expire_on_commit)](https://docs.sqlalchemy.org/en/20/orm/session_basics.html#committing)
    - [FAQ: DetachedInstanceError](https://docs.sqlalchemy.org/en/20/errors.html#error-bhk3)
    """

    code = "SES106"
    preview = True
    name = "instance-used-after-close"
    message = "`{attribute}` is read after `{session}` was committed and closed: it is expired and detached"
    hint = "Read it inside the `with` block, `{session}.refresh()` it before closing, or set expire_on_commit=False"

    def check(self, model: FileModel) -> Iterator[Report]:
        for info in model.functions:
            if not info.call_names & _COMMITTING:
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


# `s.commit()`, and `begin()` blocks that commit when they end.
_COMMITTING = frozenset({"commit", "begin"})


def _blocks(func: cst.FunctionDef) -> Iterator[cst.IndentedBlock]:
    for n in walk_scope(func.body):
        if isinstance(n, cst.IndentedBlock):
            yield n


def _expired_instances(model: FileModel, stmt: cst.With, scope: Scope) -> Iterator[tuple[str, str]]:
    """(instance, session) pairs the block leaves expired and detached when it ends."""
    for k, item in enumerate(stmt.items):
        begun = _opened_session(model, item, scope)
        if begun is None or item.asname is None or not isinstance(item.asname.name, cst.Name):
            continue
        s = item.asname.name.value
        order = list(walk_scope(stmt.body))
        position = {id(n): float(at) for at, n in enumerate(order)}
        # the block's end commits: `with SessionLocal.begin() as s`, `with Session(e) as s, s.begin()`
        ends_committed = begun or any(_begins(later.item, s) for later in stmt.items[k + 1:])
        commits = _commits(order, position, s) + ([float(len(order))] if ends_committed else [])
        expiring = [c for c in commits if _expires_at(order, position, s, c)]
        for name, at in _bound_instances(order, position, s).items():
            after = [c for c in expiring if c > at]
            if after and not _rescued(order, position, s, name, at, after):
                yield name, s


def _opened_session(model: FileModel, item: cst.WithItem, scope: Scope) -> Optional[bool]:
    """None unless the item opens a session this block closes and whose commits expire its
    instances; else whether the item is a `sessionmaker.begin()` block (it commits at the end)."""
    node = item.item
    if isinstance(node, cst.Call) and isinstance(node.func, cst.Attribute) and node.func.attr.value == "begin":
        factory = model.index.eval(node.func.value, scope)
        if factory is not None and factory.kind is Kind.FACTORY and not factory.keeps_loaded and \
                not factory.on_connection and not factory.tm:
            return True
        return None
    if isinstance(node, cst.Call) and _passes_no_expire(node):
        return None  # `make_session(expire_on_commit=False)`: a helper forwarding it to Session()
    value = model.index.eval(node, scope)
    if value is None or value.kind is not Kind.SESSION or value.own is not Own.OWNED or value.keeps_loaded:
        return None
    return False


def _passes_no_expire(call: cst.Call) -> bool:
    return any(arg.keyword is not None and arg.keyword.value == "expire_on_commit" and
               isinstance(arg.value, cst.Name) and arg.value.value == "False" for arg in call.args)


def _begins(node: cst.BaseExpression, s: str) -> bool:
    """`s.begin()`: a transaction block that commits when it ends (`begin_nested` releases a savepoint)."""
    return isinstance(node, cst.Call) and dotted(node.func) == f"{s}.begin"


def _commits(order: list[cst.CSTNode], position: dict[int, float], s: str) -> list[float]:
    """Where the session commits: `s.commit()`, and just after the end of each `with s.begin():`."""
    out: list[float] = []
    for n in order:
        if isinstance(n, cst.Call) and dotted(n.func) == f"{s}.commit":
            out.append(position[id(n)])
        elif isinstance(n, cst.With) and any(_begins(item.item, s) for item in n.items):
            out.append(max(position[id(m)] for m in walk_scope(n)) + 0.5)
    return out


def _expires_at(order: list[cst.CSTNode], position: dict[int, float], s: str, commit: float) -> bool:
    """Does the commit expire instances: `s.expire_on_commit = False` not set before it?"""
    setting: Optional[bool] = None
    for n in order:
        if position[id(n)] >= commit:
            break
        if isinstance(n, cst.Assign) and any(dotted(t.target) == f"{s}.expire_on_commit" for t in n.targets):
            setting = not (isinstance(n.value, cst.Name) and n.value.value == "False")
    return setting is not False


def _bound_instances(order: list[cst.CSTNode], position: dict[int, float], s: str) -> dict[str, float]:
    """Names bound to instances loaded through the session, or added to it, and where."""
    bound: dict[str, float] = {}
    for n in order:
        target, value = _binding(n)
        if target is not None and value is not None and _loaded_from(value, s):
            bound[target] = position[id(n)]
        elif isinstance(n, cst.Call) and isinstance(n.func, cst.Attribute) and dotted(n.func) == f"{s}.add" \
                and n.args and isinstance(n.args[0].value, cst.Name):
            bound.setdefault(n.args[0].value.value, position[id(n)])
    return bound


def _binding(node: cst.CSTNode) -> tuple[Optional[str], Optional[cst.BaseExpression]]:
    """`x = ...`, `x: T = ...`, `(x := ...)`: the name and the value."""
    if isinstance(node, cst.Assign) and len(node.targets) == 1 and isinstance(node.targets[0].target, cst.Name):
        return node.targets[0].target.value, node.value
    if isinstance(node, (cst.AnnAssign, cst.NamedExpr)) and isinstance(node.target, cst.Name):
        return node.target.value, node.value
    return None, None


def _rescued(order: list[cst.CSTNode], position: dict[int, float], s: str, name: str, at: float,
             commits: list[float]) -> bool:
    """`s.refresh(x)` after the last of the commits reloads it; `s.expunge(x)` before the first
    detaches it with its state loaded. An expunge after a commit detaches it still expired."""
    first_commit, last_commit = min(commits), max(commits)
    for n in order:
        if isinstance(n, cst.Call) and n.args and isinstance(n.args[0].value, cst.Name) and \
                n.args[0].value.value == name:
            where, method = position[id(n)], dotted(n.func)
            if method == f"{s}.refresh" and where > last_commit:
                return True
            if method == f"{s}.expunge" and at < where < first_commit:
                return True
    return False


def _loaded_from(value: cst.BaseExpression, session: str) -> bool:
    """`s.get(...)`, `s.scalars(...).first()`, `s.query(M).filter(...).one()`, `await s.get(...)`,
    `(await s.scalars(...)).first()`, ..."""
    node: cst.BaseExpression = value
    while True:
        if isinstance(node, cst.Await):
            node = node.expression
        elif isinstance(node, cst.Call) and isinstance(node.func, cst.Attribute):
            inner = node.func.value
            if isinstance(inner, cst.Name) and inner.value == session:
                return node.func.attr.value in _LOADERS
            node = inner
        else:
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
