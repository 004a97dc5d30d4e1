"""Facts about transactions the SES2xx rules ask for: batching guards, per-iteration commits,
handlers that leave a session in a failed state, and what happens after them."""
from __future__ import annotations

from collections import deque
from typing import Callable, Iterable, Optional, Union

import libcst as cst

from . import cfg as flow
from .facts import QUERY_METHODS, STORE_METHODS, FunctionInfo, bound_names, dotted
from .index import ProjectIndex, Scope
from .operations import Context, Loop, receiver_key
from .values import Own
from .walk import walk, walk_scope

# Operations that send SQL, so may fail and leave the transaction (or the session) failed.
FAILING_METHODS = QUERY_METHODS
RECOVERY_METHODS = frozenset({"rollback", "close", "invalidate", "aclose"})
_DB_ERROR_MODULES = ("sqlalchemy.exc.", "sqlalchemy.orm.exc.", "psycopg2.", "psycopg.", "pymysql.",
                     "asyncpg.", "sqlite3.")
# Raised by queries without failing the transaction.
_HARMLESS = frozenset({"NoResultFound", "MultipleResultsFound", "NoSuchColumnError", "ArgumentError"})


# ---- SES201 ------------------------------------------------------------------------------------
def is_batching_guard(test: cst.BaseExpression) -> bool:
    """`i % 500 == 0`, `len(batch) >= 100`, `pending > 1000`: commits every so often."""
    for n in walk(test):
        if isinstance(n, cst.BinaryOperation) and isinstance(n.operator, cst.Modulo):
            return True
        if isinstance(n, cst.Call) and dotted(n.func) == "len":
            return True
        if isinstance(n, cst.ComparisonTarget) and isinstance(
                n.operator, (cst.LessThan, cst.LessThanEqual, cst.GreaterThan, cst.GreaterThanEqual)):
            return True
    return False


def binds_name(loop: Loop, name: str) -> bool:
    """Is `name` (re)bound inside the loop body: a fresh session per iteration?"""
    body: cst.CSTNode = loop.body if isinstance(loop, (cst.For, cst.While)) else loop
    for n in walk(body):
        if isinstance(n, cst.AssignTarget) and isinstance(n.target, cst.Name) and n.target.value == name:
            return True
        if isinstance(n, (cst.AnnAssign, cst.NamedExpr)) and isinstance(n.target, cst.Name) and \
                n.target.value == name:
            return True
        if isinstance(n, cst.AsName) and isinstance(n.name, cst.Name) and n.name.value == name:
            return True
    return False


class GraphIndex:
    """Which flow-graph nodes stand for a given libcst node (finally bodies have copies)."""

    def __init__(self, graph: flow.CFG) -> None:
        self.graph = graph
        self.by_ast: dict[int, list[int]] = {}
        for node in graph.nodes:
            if node.ast is not None:
                self.by_ast.setdefault(id(node.ast), []).append(node.id)

    def nodes(self, ast: Optional[cst.CSTNode]) -> list[int]:
        return self.by_ast.get(id(ast), []) if ast is not None else []

    def reach(self, starts: Iterable[int], stop: Callable[[flow.Node], bool],
              exceptional: bool = False) -> set[int]:
        """Nodes reachable along normal edges (and exception edges with `exceptional`), not
        passing `stop` nodes."""
        seen: set[int] = set()
        queue: deque[int] = deque()
        for start in starts:
            for target, label in self.graph.nodes[start].succ:
                if exceptional or label != flow.EXC:
                    queue.append(target)
        while queue:
            nid = queue.popleft()
            if nid in seen:
                continue
            seen.add(nid)
            node = self.graph.nodes[nid]
            if stop(node):
                continue
            for target, label in node.succ:
                if exceptional or label != flow.EXC:
                    queue.append(target)
        return seen


def loop_heads(gi: GraphIndex, loop: Loop) -> set[int]:
    if isinstance(loop, cst.For):
        return set(gi.nodes(loop))
    if isinstance(loop, cst.While):
        return set(gi.nodes(loop.test))
    return set()


def runs_every_iteration(gi: GraphIndex, context: Context, loop: Loop) -> bool:
    """After this statement, can the loop go round again (not every path breaks or returns)?"""
    if not isinstance(loop, (cst.For, cst.While)):
        return True  # a comprehension always goes on
    heads = loop_heads(gi, loop)
    starts = gi.nodes(context.statement)
    if not starts or not heads:
        return True
    return bool(gi.reach(starts, lambda n: n.id in heads) & heads)


# ---- SES202 ------------------------------------------------------------------------------------
def catches_db_errors(handler: Union[cst.ExceptHandler, cst.ExceptStarHandler], index: ProjectIndex,
                      scope: Scope) -> bool:
    if handler.type is None:
        return True
    types = handler.type.elements if isinstance(handler.type, cst.Tuple) else [handler.type]
    for t in types:
        value = t.value if isinstance(t, cst.BaseElement) else t
        name = dotted(value)  # type: ignore[arg-type]
        if name is None:
            continue
        if name in ("Exception", "BaseException"):
            return True
        full = index.origin(name, scope)
        if full.startswith(_DB_ERROR_MODULES) and full.rpartition(".")[2] not in _HARMLESS:
            return True
    return False


def reraises(handler: cst.CSTNode, index: ProjectIndex, scope: Scope) -> bool:
    """Does the handler raise, itself or through a project helper that always raises?"""
    for n in walk_scope(handler):
        if isinstance(n, cst.Raise):
            return True
        if isinstance(n, cst.Call) and isinstance(n.func, (cst.Name, cst.Attribute)):
            fv = index.eval(n.func, scope)
            summary = index.function_summary(fv.ref) if fv is not None and fv.ref else None
            if summary is not None and summary.ends_in_raise:
                return True
    return False


def recovers(node: cst.CSTNode, key: str, index: ProjectIndex, scope: Scope) -> bool:
    """Does this code roll back or close the session `key` (itself or through a helper)?"""
    for n in walk_scope(node):
        if not isinstance(n, cst.Call):
            continue
        func = n.func
        if isinstance(func, cst.Attribute) and func.attr.value in RECOVERY_METHODS and \
                receiver_key(func.value) == key:
            return True
        if any(receiver_key(a.value) == key for a in n.args):
            fv = index.eval(func, scope)
            summary = index.function_summary(fv.ref) if fv is not None and fv.ref else None
            if summary is not None and (summary.rollbacks_params or summary.closes_params):
                return True
    return False


def inside_transaction_block(context: Context, key: str) -> bool:
    """Within `with key.begin():` / `with key.begin_nested():`, which roll back on their own."""
    for w in context.withs:
        for item in w.items:
            call = item.item
            if isinstance(call, cst.Call) and isinstance(call.func, cst.Attribute) and \
                    call.func.attr.value in ("begin", "begin_nested") and receiver_key(call.func.value) == key:
                return True
    return False


def mentions(node: cst.CSTNode, key: str, ignore: frozenset[str] = RECOVERY_METHODS) -> bool:
    """Does this node use the session `key` (a method, an attribute, passing or returning it)?"""
    for n in walk_scope(node):
        if isinstance(n, cst.Attribute) and receiver_key(n.value) == key:
            if n.attr.value not in ignore:
                return True
        elif isinstance(n, (cst.Arg, cst.Return)) and isinstance(n.value, cst.BaseExpression) and \
                receiver_key(n.value) == key:
            return True
    return False


def node_parts(node: flow.Node) -> list[cst.CSTNode]:
    """The parts of a flow-graph node's libcst node that run at that node (a `with` header's
    items, a `for` loop's iterable and target), not the bodies that have nodes of their own."""
    ast = node.ast
    if ast is None or isinstance(ast, (cst.ExceptHandler, cst.ExceptStarHandler)):
        return []
    if isinstance(ast, cst.With):
        return list(ast.items)
    if isinstance(ast, cst.For):
        return [ast.iter]
    return [ast]


# ---- deliberate per-iteration commits (SES201) -------------------------------------------------
_ROW_LIMITS = frozenset({"limit", "fetchmany", "yield_per", "partitions"})
_PROGRESS = frozenset({"tqdm", "tqdm.tqdm", "tqdm.auto.tqdm", "click.progressbar", "rich.progress.track",
                       "alive_progress.alive_bar", "alive_it"})
_READS = frozenset({"get", "pop", "format", "join", "split", "strip", "lower", "upper", "replace", "encode",
                    "decode", "startswith", "endswith", "items", "keys", "values", "copy", "index", "count"})
_LOGGING_RECEIVERS = frozenset({"log", "logger", "logging", "LOG", "LOGGER", "self.log", "self.logger", "warnings"})


def deliberate_per_iteration(loop: Loop, context: Context, key: str, info: FunctionInfo,
                             index: ProjectIndex, scope: Scope) -> bool:
    """Signals that committing once per iteration is the point, not an accident."""
    body: cst.CSTNode = loop.body if isinstance(loop, (cst.For, cst.While)) else loop
    inside = {id(n) for n in walk(body)}
    # a `while` over batches: `.limit(n)` / `fetchmany(n)` each time round
    if isinstance(loop, cst.While) and any(
            isinstance(n, cst.Call) and isinstance(n.func, cst.Attribute) and n.func.attr.value in _ROW_LIMITS
            for n in walk_scope(body)):
        return True
    # per-item error isolation: a try in the loop that rolls back, a savepoint, or a project
    # context manager that rolls back the session it is given
    for tr, part in context.trys:
        if part == "body" and id(tr) in inside and any(recovers(h, key, index, scope) for h in tr.handlers):
            return True
    for w in context.withs:
        if id(w) not in inside:
            continue
        for item in w.items:
            call = item.item
            if not isinstance(call, cst.Call):
                continue
            if isinstance(call.func, cst.Attribute) and call.func.attr.value == "begin_nested" and \
                    receiver_key(call.func.value) == key:
                return True
            if any(receiver_key(a.value) == key for a in call.args):
                fv = index.eval(call.func, scope)
                summary = index.function_summary(fv.ref) if fv is not None and fv.ref else None
                if summary is not None and summary.rollbacks_params:
                    return True
    if isinstance(loop, cst.For):
        # progress reporting over the items: each one is a unit of work someone watches
        iterable = loop.iter.func if isinstance(loop.iter, cst.Call) else None
        if iterable is not None and index.origin(dotted(iterable) or "", scope) in _PROGRESS:
            return True
        if isinstance(loop.iter, cst.Name) and _progress_bar(info, loop.iter.value, index, scope):
            return True  # `with click.progressbar(items) as bar: for item in bar:`
        if _external_effect_per_item(loop, key, index, scope):
            return True
    # a heartbeat or poller: the loop sleeps each time round, so each tick must be durable
    if any(isinstance(n, cst.Call) and (dotted(n.func) or "").rpartition(".")[2] in _SLEEPS
           for n in walk_scope(body)):
        return True
    # batching by nested loop: an inner loop adds a batch, the outer one commits it
    if _commit_after_inner_loop(body, context):
        return True
    # a fresh session each time round: `close()` / registry `remove()` inside the loop
    for n in walk_scope(body):
        if isinstance(n, cst.Call) and isinstance(n.func, cst.Attribute) and \
                n.func.attr.value in ("close", "remove") and receiver_key(n.func.value) == key:
            return True
    return _joined_to_outside_connection(info, key)


_SLEEPS = frozenset({"sleep", "wait_for_event"})


def _commit_after_inner_loop(body: cst.CSTNode, context: Context) -> bool:
    """The statement that commits follows an inner loop in the same iteration's body."""
    statements = getattr(body, "body", ())
    stmt = context.statement
    seen_loop = False
    for st in statements:
        if isinstance(st, (cst.For, cst.While)):
            seen_loop = True
        elif seen_loop and stmt is not None and any(n is stmt for n in walk(st)):
            return True
    return False


def _progress_bar(info: FunctionInfo, name: str, index: ProjectIndex, scope: Scope) -> bool:
    for n in walk_scope(info.node.body):
        if isinstance(n, cst.WithItem) and n.asname is not None and isinstance(n.asname.name, cst.Name) and \
                n.asname.name.value == name and isinstance(n.item, cst.Call):
            return index.origin(dotted(n.item.func) or "", scope) in _PROGRESS
    return False


def _external_effect_per_item(loop: cst.For, key: str, index: ProjectIndex, scope: Scope) -> bool:
    """`executor.revoke(ti)` / `storage.move(f.path)` each time round: the commit records an
    action that cannot be undone, so it must be durable before the next one."""
    targets = {n.value for n in walk(loop.target) if isinstance(n, cst.Name)}
    for n in _statement_calls(loop.body):
        if not isinstance(n.func, cst.Attribute):
            continue
        if index.origin(dotted(_chain_root(n.func.value)) or "", scope).startswith(("sqlalchemy", "sqlmodel")):
            continue  # building a statement (`update(Order).where(...)`), not acting on the world
        receiver = receiver_key(n.func.value)
        if receiver == key or receiver in _LOGGING_RECEIVERS:
            continue
        if n.func.attr.value[:1].isupper() or any(part[:1].isupper() for part in receiver.split(".")):
            continue  # `model.Member(...)`, `model.Group.by_name(...)`: the ORM, not the world
        if n.func.attr.value in STORE_METHODS or n.func.attr.value in _READS:
            continue  # `names.add(item.name)`, `cache.get(item)`: bookkeeping in memory
        args = [a.value for a in n.args]
        if any(receiver_key(a) == key for a in args):
            continue  # a database helper: it gets the session
        if not any(isinstance(m, cst.Name) and m.value in targets for a in args for m in walk(a)):
            continue
        value = index.eval(n.func.value, scope)
        if value is not None and value.kind.name in ("MODULE", "CLASS", "SESSION", "CONNECTION", "REGISTRY"):
            continue
        if isinstance(n.func.value, cst.Name) and n.func.value.value in targets:
            continue  # a method of the item itself (`row.to_dict()`)
        return True
    return False


def _statement_calls(body: cst.CSTNode) -> Iterable[cst.Call]:
    """Calls that are a whole statement or a whole assigned value (`x = f(...)`, `await f()`)."""
    for n in walk_scope(body):
        value: Optional[cst.BaseExpression] = None
        if isinstance(n, cst.Expr):
            value = n.value
        elif isinstance(n, (cst.Assign, cst.AnnAssign)):
            value = n.value
        if isinstance(value, cst.Await):
            value = value.expression
        if isinstance(value, cst.Call):
            yield value


def _chain_root(node: cst.BaseExpression) -> cst.BaseExpression:
    while isinstance(node, (cst.Attribute, cst.Call, cst.Subscript)):
        node = node.value if isinstance(node, (cst.Attribute, cst.Subscript)) else node.func
    return node


def _joined_to_outside_connection(info: FunctionInfo, key: str) -> bool:
    """`Session(bind=connection)` with a connection the function was given (an event hook's):
    with the default join_transaction_mode its commit does not end that transaction."""
    params = set(info.summary.params)
    for n in walk_scope(info.node.body):
        value: Optional[cst.BaseExpression] = None
        if isinstance(n, cst.Assign) and any(receiver_key(t.target) == key for t in n.targets):
            value = n.value
        elif isinstance(n, cst.WithItem) and n.asname is not None and receiver_key(n.asname.name) == key:
            value = n.item
        if isinstance(value, cst.Call):
            for i, arg in enumerate(value.args):
                is_bind = (arg.keyword is not None and arg.keyword.value == "bind") or (arg.keyword is None and i == 0)
                if is_bind and isinstance(arg.value, cst.Name) and arg.value.value in params:
                    return True
    return False


def joined_via_callers(functions: Iterable[FunctionInfo], info: FunctionInfo, key: str) -> bool:
    """Is `key` a parameter that every caller in this module binds to an outside connection?"""
    params = list(info.summary.params)
    if key not in params:
        return False
    position = params.index(key) - (1 if info.self_name else 0)
    name = info.node.name.value
    found = False
    for other in functions:
        if other is info:
            continue
        for n in walk_scope(other.node.body):
            if not isinstance(n, cst.Call):
                continue
            func = n.func
            called = func.attr.value if isinstance(func, cst.Attribute) else func.value if isinstance(func, cst.Name) else ""
            if called != name:
                continue
            arg = next((a.value for a in n.args if a.keyword is not None and a.keyword.value == key), None)
            positional = [a.value for a in n.args if a.keyword is None and not a.star]
            if arg is None and 0 <= position < len(positional):
                arg = positional[position]
            if not isinstance(arg, cst.Name) or not _joined_to_outside_connection(other, arg.value):
                return False
            found = True
    return found


def savepoint_names(func: cst.FunctionDef) -> dict[str, set[str]]:
    """`sp = session.begin_nested()`: rolling `sp` back recovers `session`."""
    out: dict[str, set[str]] = {}
    for n in walk_scope(func.body):
        if isinstance(n, cst.Assign) and isinstance(n.value, cst.Call) and \
                isinstance(n.value.func, cst.Attribute) and n.value.func.attr.value in ("begin_nested", "begin"):
            key = receiver_key(n.value.func.value)
            for t in n.targets:
                out.setdefault(key, set()).add(receiver_key(t.target))
    return out


def _rebinds(node: cst.CSTNode, name: str) -> bool:
    for n in walk_scope(node, into_blocks=False):
        target: Optional[cst.BaseExpression] = None
        if isinstance(n, cst.AssignTarget):
            target = n.target
        elif isinstance(n, (cst.AnnAssign, cst.AugAssign, cst.NamedExpr)):
            target = n.target
        elif isinstance(n, cst.AsName):
            target = n.name  # type: ignore[assignment]
        if target is not None and name in bound_names(target):
            return True
    return False


def parameter_reaches(gi: GraphIndex, name: str, statement: Optional[cst.CSTNode]) -> bool:
    """Does the value the parameter `name` came in with reach `statement` on some path?"""
    targets = set(gi.nodes(statement))
    if not targets:
        return True
    def rebinds(n: flow.Node) -> bool:
        if n.id in targets:
            return False
        if isinstance(n.ast, cst.For) and name in bound_names(n.ast.target):
            return True
        return any(_rebinds(part, name) for part in node_parts(n))

    reached = gi.reach([gi.graph.entry], rebinds, exceptional=True)
    return bool(reached & targets)


def only_parameter_reaches(gi: GraphIndex, name: str, statement: Optional[cst.CSTNode]) -> bool:
    """Does only the value the parameter `name` came in with reach `statement`, none that the
    function assigned to it (`if session: yield session` before `session = factory()`)?"""
    targets = set(gi.nodes(statement))
    if not targets or not parameter_reaches(gi, name, statement):
        return False
    defs = [n.id for n in gi.graph.nodes if n.id not in targets and
            any(_rebinds(part, name) for part in node_parts(n))]

    def rebinds(n: flow.Node) -> bool:
        return n.id not in targets and any(_rebinds(part, name) for part in node_parts(n))

    return not (gi.reach(defs, rebinds, exceptional=True) & targets)


def failed_session_survives(gi: GraphIndex, handler: cst.CSTNode, key: str, own: object,
                            index: ProjectIndex, scope: Scope) -> bool:
    """After the handler: is the session used again, or handed back to the caller?"""
    def recovered(node: flow.Node) -> bool:
        return any(recovers(part, key, index, scope) for part in node_parts(node))

    reached = gi.reach(gi.nodes(handler), recovered)
    for nid in reached:
        node = gi.graph.nodes[nid]
        if not recovered(node) and any(mentions(part, key) for part in node_parts(node)):
            return True
    return own is Own.BORROWED and gi.graph.exit in reached


def closed_by_with_inside(context: Context, key: str, tr: cst.CSTNode) -> bool:
    """The session was bound by a `with` inside this try's body, so that `with` has closed (and
    rolled back) it before any handler of the try runs."""
    body = tr.body if isinstance(tr, (cst.Try, cst.TryStar)) else tr
    inside = {id(n) for n in walk(body)}
    for w in context.withs:
        if id(w) in inside and any(item.asname is not None and receiver_key(item.asname.name) == key
                                   for item in w.items):
            return True
    return False
