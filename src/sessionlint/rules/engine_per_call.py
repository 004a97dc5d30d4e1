from __future__ import annotations

from typing import Iterator, Optional

import libcst as cst

from ..model import FileModel
from ..rule import Report, Rule
from ..semantic.facts import FunctionInfo
from ..semantic.operations import Context
from ..semantic.placement import assigned_global, dependency_names, is_cached, is_route_handler, local_names, loop_calls
from ..semantic.transactions import runs_every_iteration
from ..semantic.values import Kind
from ..semantic.index import Scope
from ..semantic.facts import bound_names
from ..semantic.walk import walk, walk_scope


class EnginePerCall(Rule):
    """## What it does
    Checks for `create_engine`, `create_async_engine`, `sessionmaker` or `async_sessionmaker`
    called per request or per item: in a Flask or FastAPI route handler, a FastAPI dependency,
    a loop body, or a function of the module that is called in a loop, without caching.

    ## Why is this bad?
    An engine owns a connection pool. Building one per call opens new connections every time
    (no pooling at all), and engines that are not disposed keep their pooled connections until
    garbage collection: the database runs out of connection slots (`too many connections`)
    under ordinary load. A `sessionmaker` is cheap but creating one per call usually comes
    with an engine per call, and defeats configuring it once.

    ## Example
    ```python
    from fastapi import FastAPI
    from sqlalchemy import create_engine

    app = FastAPI()

    @app.get("/users")
    def list_users():
        engine = create_engine("postgresql+psycopg://app@db/app")
        with engine.connect() as conn:
            return conn.execute(text("SELECT name FROM users")).scalars().all()
    ```

    Use instead:
    ```python
    from fastapi import FastAPI
    from sqlalchemy import create_engine

    app = FastAPI()
    engine = create_engine("postgresql+psycopg://app@db/app")

    @app.get("/users")
    def list_users():
        with engine.connect() as conn:
            return conn.execute(text("SELECT name FROM users")).scalars().all()
    ```

    ## Known problems
    **Preview** because its measured precision is below 90 %: of 9 findings in 151 real packages,
    5 were real (a Superset migration, four undisposed per-database engines in DataHub) and 4
    were one engine per configured test database in a test suite.
    An engine with `poolclass=NullPool` is not reported: it keeps no connections, though building
    it per call still costs a dialect set-up. Neither is an engine built from the loop's item
    and disposed within the same iteration (one per database being migrated or inspected), one
    a looped helper disposes before returning, one stored in a container, one per element of a
    literal list, or a `sessionmaker` over an existing session's bind. A loop over a configured
    list held in a variable (`for url in DATABASE_URLS:`) is still reported when the engines
    are not disposed: statically it cannot be told from a loop over data. Route handlers are recognised by the decorator's shape (`@<app>.get("/path")`,
    `@<bp>.route(...)`), not by resolving the application object.

    ## References
    - [Engine configuration: the engine is created once per process](https://docs.sqlalchemy.org/en/20/core/connections.html#basic-usage)
    """

    code = "SES105"
    preview = True
    name = "engine-per-call"
    message = "`{maker}()` runs {when}, building a new {what} each time"
    hint = "Create it once at module level (or cache it) and reuse it; one per database must be dispose()d"

    def check(self, model: FileModel) -> Iterator[Report]:
        aliases = _maker_aliases(model)
        makers = [info for info in model.functions
                  if not is_cached(info) and info.call_names & (_MAKER_NAMES | aliases)]
        if not makers:
            return
        dependencies = dependency_names(model.module)
        looped = self._called_each_iteration(model, makers)
        for info in makers:
            scope = model.scope_of(info)
            name = info.node.name.value
            if is_route_handler(info.node):
                when = "in every request"
            elif name in dependencies:
                when = "for every request (a FastAPI dependency)"
            elif id(info) in looped:
                when = f"each time `{name}()` is called in a loop"
            else:
                when = ""
            in_loop = {id(call) for call, loop, stmt in loop_calls(info.node)
                       if not _per_configuration(loop) and not _disposed_per_configuration(call, loop, stmt)
                       and self._every_iteration(model, info, loop, stmt)}
            cached = _cached_calls(info)
            disposed = _disposed_names(info.node.body)
            for n in walk_scope(info.node.body):
                if not isinstance(n, cst.Call) or id(n) in cached:
                    continue
                func = model.index.eval(n.func, scope)
                if func is None or func.kind not in (Kind.ENGINE_MAKER, Kind.FACTORY_MAKER):
                    continue
                if func.kind is Kind.ENGINE_MAKER and _without_pool(n):
                    continue  # NullPool: nothing is pooled, so nothing is left holding connections
                if func.kind is Kind.FACTORY_MAKER and _binds_existing(model, info, n, scope):
                    continue  # `sessionmaker(session.get_bind())`: no engine, no pool is built
                if when and id(info) in looped and _assigned_name(n, info) in disposed:
                    continue  # the helper disposes of its engine before returning: nothing piles up
                place = when or ("once per loop iteration" if id(n) in in_loop else "")
                if place:
                    what = "engine and pool" if func.kind is Kind.ENGINE_MAKER else "session factory"
                    maker = cst.Module([]).code_for_node(n.func)
                    yield Report(n, {"maker": maker, "when": place, "what": what}, info.node)

    @staticmethod
    def _every_iteration(model: FileModel, info: FunctionInfo, loop: cst.CSTNode,
                         stmt: Optional[cst.CSTNode]) -> bool:
        """Not a retry loop that returns or breaks once the call succeeded."""
        return runs_every_iteration(model.graph_index(info), Context(statement=stmt), loop)  # type: ignore[arg-type]

    def _called_each_iteration(self, model: FileModel, makers: list[FunctionInfo]) -> set[int]:
        """Which `makers` (by id) are called in a loop that goes on, by a caller that sees them:
        a module-level function by bare name where no local of the caller shadows it, a method
        on `self`/`cls` from its own class, a nested function from the function it is in."""
        by_name: dict[str, list[FunctionInfo]] = {}
        for maker in makers:
            by_name.setdefault(maker.node.name.value, []).append(maker)
        out: set[int] = set()
        for info in model.functions:
            if not info.call_names & by_name.keys():
                continue
            local = local_names(info)
            for call, loop, stmt in loop_calls(info.node):
                func = call.func
                if isinstance(func, cst.Name) and func.value in by_name:
                    nested = f"{info.qualname}.<locals>.{func.value}"
                    found = [m for m in by_name[func.value]
                             if m.qualname == nested or (m.qualname == func.value and func.value not in local)]
                elif isinstance(func, cst.Attribute) and isinstance(func.value, cst.Name) and \
                        func.value.value in ("self", "cls") and func.attr.value in by_name:
                    found = [m for m in by_name[func.attr.value]
                             if m.class_qualname is not None and m.class_qualname == info.class_qualname]
                else:
                    continue  # `text.replace(...)` is not the module's `replace()`
                found = [m for m in found if id(m) not in out]
                if not found or _kept(call, stmt) or _per_configuration(loop):
                    continue
                if self._every_iteration(model, info, loop, stmt):
                    out.update(id(m) for m in found)
        return out


def _kept(call: cst.Call, stmt: Optional[cst.CSTNode]) -> bool:
    """The call's result is stored for later (`engines[name] = make(url)`, `pools.append(make(url))`):
    one per configuration, built to be reused."""
    if isinstance(stmt, cst.Assign) and stmt.value is call:
        return all(isinstance(t.target, (cst.Subscript, cst.Attribute)) for t in stmt.targets)
    if isinstance(stmt, cst.Expr) and isinstance(stmt.value, cst.Call):
        outer = stmt.value
        return isinstance(outer.func, cst.Attribute) and outer.func.attr.value in _STORE_METHODS and \
            any(arg.value is call for arg in outer.args)
    return False


def _per_configuration(loop: cst.CSTNode) -> bool:
    """A loop over a literal collection (`for url in ["sqlite://", "postgresql://"]`): a fixed
    handful of configurations, not one per item or request."""
    if not isinstance(loop, cst.For):
        return False
    it = loop.iter
    if isinstance(it, cst.Call) and isinstance(it.func, cst.Attribute) and it.func.attr.value in ("items", "values", "keys"):
        it = it.func.value
    return isinstance(it, (cst.List, cst.Tuple, cst.Set, cst.Dict)) and all(
        isinstance(e.value, (cst.SimpleString, cst.ConcatenatedString, cst.Integer, cst.Tuple, cst.Dict))
        for e in (it.elements if not isinstance(it, cst.Dict) else ()))


def _disposed_names(body: cst.CSTNode) -> set[str]:
    """Names `x` with an `x.dispose()` call in `body`."""
    return {n.func.value.value for n in walk_scope(body)
            if isinstance(n, cst.Call) and isinstance(n.func, cst.Attribute) and n.func.attr.value == "dispose"
            and isinstance(n.func.value, cst.Name)}


def _assigned_name(call: cst.Call, info: FunctionInfo) -> Optional[str]:
    """`engine` in `engine = create_engine(...)`."""
    for n in walk_scope(info.node.body):
        if isinstance(n, cst.Assign) and n.value is call and len(n.targets) == 1 and \
                isinstance(n.targets[0].target, cst.Name):
            return n.targets[0].target.value
    return None


def _disposed_per_configuration(call: cst.Call, loop: cst.CSTNode, stmt: Optional[cst.CSTNode]) -> bool:
    """`for db in databases: engine = create_engine(url_for(db)) ... engine.dispose()`: one engine
    per configuration, disposed within its iteration. An engine built the same way every
    iteration (arguments not taken from the loop) is still reported."""
    if not isinstance(loop, cst.For) or not isinstance(stmt, cst.Assign) or stmt.value is not call:
        return False
    targets = [t.target for t in stmt.targets]
    if len(targets) != 1 or not isinstance(targets[0], cst.Name):
        return False
    if targets[0].value not in _disposed_names(loop.body):
        return False
    per_item = set(bound_names(loop.target))
    for n in walk_scope(loop.body):  # names computed from the item (`db_url = url_for(db)`)
        if isinstance(n, cst.Assign) and n.value is not call:
            for t in n.targets:
                per_item |= bound_names(t.target)
    return any(isinstance(n, cst.Name) and n.value in per_item for a in call.args for n in walk(a.value))


def _binds_existing(model: FileModel, info: FunctionInfo, call: cst.Call, scope: Scope) -> bool:
    """The factory's bind comes from a session or connection that exists already
    (`session.get_bind()`, `session.bind`, `conn.engine`), directly or through a local name."""
    bind: Optional[cst.BaseExpression] = None
    for i, arg in enumerate(call.args):
        if (arg.keyword is None and i == 0) or (arg.keyword is not None and arg.keyword.value == "bind"):
            bind = arg.value
    if isinstance(bind, cst.Name):
        for n in walk_scope(info.node.body):
            if isinstance(n, cst.Assign) and any(isinstance(t.target, cst.Name) and t.target.value == bind.value
                                                 for t in n.targets):
                bind = n.value
                break
    if isinstance(bind, cst.Call):
        bind = bind.func
    if not isinstance(bind, cst.Attribute):
        return False
    if bind.attr.value in _EXISTING_BIND:
        return True  # whatever it is called on, it hands back a bind that exists already
    base = model.index.eval(bind.value, scope)
    return base is not None and (base.is_session_like or base.kind in (Kind.CONNECTION, Kind.ENGINE))


_EXISTING_BIND = frozenset({"get_bind", "bind", "connection", "engine"})


def _without_pool(call: cst.Call) -> bool:
    """`create_engine(url, poolclass=NullPool)`."""
    for arg in call.args:
        if arg.keyword is not None and arg.keyword.value == "poolclass":
            value = arg.value
            name = value.attr.value if isinstance(value, cst.Attribute) else getattr(value, "value", "")
            return name == "NullPool"
    return False


_STORE_METHODS = frozenset({"append", "add", "setdefault", "insert", "extend"})


_MAKER_NAMES = frozenset({"create_engine", "create_async_engine", "sessionmaker", "async_sessionmaker",
                          "engine_from_config", "async_engine_from_config"})


def _maker_aliases(model: FileModel) -> set[str]:
    """Local names the module imported the makers under (`from sqlalchemy import create_engine as ce`)."""
    return {local for local, origin in model.summary.imports.items()
            if origin.rpartition(".")[2] in _MAKER_NAMES}


def _cached_calls(info: FunctionInfo) -> set[int]:
    """Calls whose result is kept beyond the call: assigned to a `global`, stored in a module-level
    container or on an object (`_engines[url] = engine`, `self._engine = engine`)."""
    out: set[int] = set()
    local_of: dict[str, int] = {}
    for n in walk_scope(info.node.body):
        if not isinstance(n, cst.Assign):
            continue
        if assigned_global(info, n) is not None and isinstance(n.value, cst.Call):
            out.add(id(n.value))
            continue
        for t in n.targets:
            if isinstance(t.target, cst.Name) and isinstance(n.value, cst.Call):
                local_of[t.target.value] = id(n.value)
            elif isinstance(t.target, (cst.Subscript, cst.Attribute)):
                if isinstance(n.value, cst.Call):
                    out.add(id(n.value))
                elif isinstance(n.value, cst.Name) and n.value.value in local_of:
                    out.add(local_of[n.value.value])
    return out
