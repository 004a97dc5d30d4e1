"""Facts about transactions the SES2xx rules ask for: batching guards, per-iteration commits,
handlers that leave a session in a failed state, and what happens after them."""
from __future__ import annotations

from collections import deque
from typing import Callable, Iterable, Optional, Union

import libcst as cst

from . import cfg as flow
from .facts import dotted
from .index import ProjectIndex, Scope
from .operations import Context, Loop, receiver_key
from .walk import walk, walk_scope

# Operations that send SQL, so may fail and leave the transaction (or the session) failed.
FAILING_METHODS = frozenset({"flush", "commit", "execute", "scalar", "scalars", "get", "get_one", "query",
                             "refresh", "merge", "connection", "stream", "stream_scalars", "run_sync",
                             "exec"})
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

    def reach(self, starts: Iterable[int], stop: Callable[[flow.Node], bool]) -> set[int]:
        """Nodes reachable along normal (non-exception) edges, not passing `stop` nodes."""
        seen: set[int] = set()
        queue: deque[int] = deque()
        for start in starts:
            for target, label in self.graph.nodes[start].succ:
                if label != flow.EXC:
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
                if label != flow.EXC:
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
        head, _, rest = name.partition(".")
        origin = index.import_origin(head, scope)
        full = f"{origin}.{rest}" if rest else origin
        if full.startswith(_DB_ERROR_MODULES) and full.rpartition(".")[2] not in _HARMLESS:
            return True
    return False


def reraises(handler: cst.CSTNode) -> bool:
    return any(isinstance(n, cst.Raise) for n in walk_scope(handler))


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


def node_code(node: flow.Node) -> Optional[cst.CSTNode]:
    """The part of a flow-graph node's libcst node that runs at that node."""
    ast = node.ast
    if isinstance(ast, cst.With):
        return cst.With(items=ast.items, body=cst.IndentedBlock(body=[]))  # header only
    if isinstance(ast, cst.For):
        return ast.iter
    if isinstance(ast, (cst.ExceptHandler, cst.ExceptStarHandler)):
        return None
    return ast
