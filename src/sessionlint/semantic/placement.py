"""Where code runs, for the rules that care how often: module level, class bodies, request
handlers, FastAPI dependencies, loop bodies, and functions called from loops."""
from __future__ import annotations

from typing import Iterator, Optional

import libcst as cst

from .facts import FunctionInfo, bound_names, dotted
from .walk import children, walk, walk_scope

_ROUTE_METHODS = frozenset({"route", "get", "post", "put", "patch", "delete", "head", "options", "websocket",
                            "api_route", "view"})
_CACHES = frozenset({"cache", "lru_cache", "cached_property", "functools.cache", "functools.lru_cache",
                     "functools.cached_property", "cachetools.cached"})
_LOOPS = (cst.For, cst.While, cst.ListComp, cst.SetComp, cst.DictComp, cst.GeneratorExp)


def is_main_guard(node: cst.CSTNode) -> bool:
    """`if __name__ == "__main__":` — a script's body, run once."""
    if not isinstance(node, cst.If) or not isinstance(node.test, cst.Comparison):
        return False
    test = node.test
    sides = [test.left] + [c.comparator for c in test.comparisons]
    return any(isinstance(s, cst.Name) and s.value == "__name__" for s in sides)


def module_statements(module: cst.Module) -> Iterator[cst.BaseSmallStatement]:
    """Small statements that run at import time (inside module-level if/try, not the main guard)."""
    stack: list[cst.CSTNode] = list(reversed(module.body))
    while stack:
        n = stack.pop()
        if isinstance(n, (cst.FunctionDef, cst.ClassDef)) or is_main_guard(n):
            continue
        if isinstance(n, cst.SimpleStatementLine):
            yield from n.body
        elif isinstance(n, (cst.If, cst.Try, cst.TryStar, cst.Else, cst.Finally, cst.ExceptHandler,
                            cst.IndentedBlock)):
            stack.extend(reversed([c for c in children(n) if isinstance(c, cst.CSTNode)]))


def class_statements(module: cst.Module) -> Iterator[cst.BaseSmallStatement]:
    """Small statements of class bodies (class attributes), at any nesting of classes."""
    for n in walk_scope(module):
        if isinstance(n, cst.ClassDef) and isinstance(n.body, cst.IndentedBlock):
            for stmt in n.body.body:
                if isinstance(stmt, cst.SimpleStatementLine):
                    yield from stmt.body


def is_cached(info: FunctionInfo) -> bool:
    return any(d in _CACHES for d in info.summary.decorators)


def is_route_handler(func: cst.FunctionDef) -> bool:
    """`@app.get("/items")`, `@bp.route("/x")`, `@router.post(...)`: runs once per request."""
    for d in func.decorators:
        call = d.decorator
        if isinstance(call, cst.Call) and isinstance(call.func, cst.Attribute) and \
                call.func.attr.value in _ROUTE_METHODS and call.args and \
                isinstance(call.args[0].value, (cst.SimpleString, cst.ConcatenatedString, cst.FormattedString)):
            return True
    return False


def dependency_names(module: cst.Module) -> set[str]:
    """Functions used as FastAPI dependencies: `Depends(get_db)`."""
    out: set[str] = set()
    for n in walk(module):
        if isinstance(n, cst.Call) and (dotted(n.func) or "").rpartition(".")[2] == "Depends" and n.args:
            name = dotted(n.args[0].value)
            if name is not None:
                out.add(name.rpartition(".")[2])
    return out


def loop_calls(func: cst.FunctionDef) -> Iterator[tuple[cst.Call, cst.CSTNode, Optional[cst.CSTNode]]]:
    """Calls of the function's own body inside a loop: (call, innermost loop, small statement)."""
    out: list[tuple[cst.Call, cst.CSTNode, Optional[cst.CSTNode]]] = []

    def visit(node: cst.CSTNode, loop: Optional[cst.CSTNode], stmt: Optional[cst.CSTNode]) -> None:
        if isinstance(node, (cst.FunctionDef, cst.ClassDef, cst.Lambda)) and node is not func:
            return  # a function defined in a loop runs when called, not per iteration
        if isinstance(node, cst.SimpleStatementLine):
            for small in node.body:
                visit(small, loop, small)
            return
        if isinstance(node, cst.Call) and loop is not None:
            out.append((node, loop, stmt))
        if isinstance(node, (cst.For, cst.While)):
            header = node.iter if isinstance(node, cst.For) else node.test
            visit(header, loop, header)
            visit(node.body, node, None)
            if node.orelse is not None:
                visit(node.orelse, loop, None)
            return
        if isinstance(node, cst.If):
            visit(node.test, loop, node.test)
            visit(node.body, loop, None)
            if node.orelse is not None:
                visit(node.orelse, loop, None)
            return
        inner = node if isinstance(node, _LOOPS) else loop
        for child in children(node):
            visit(child, inner, stmt)

    visit(func.body, None, None)
    return iter(out)


def assigned_global(info: Optional[FunctionInfo], stmt: cst.CSTNode) -> Optional[str]:
    """The `global` name this assignment sets, if any."""
    if info is None or not isinstance(stmt, (cst.Assign, cst.AnnAssign)):
        return None
    targets = [t.target for t in stmt.targets] if isinstance(stmt, cst.Assign) else [stmt.target]
    for t in targets:
        if isinstance(t, cst.Name) and t.value in info.globals:
            return t.value
    return None


def local_names(info: FunctionInfo) -> set[str]:
    """Names the function binds itself (parameters, assignments, nested defs, imports)."""
    params = info.node.params
    names = {p.name.value for p in (*params.posonly_params, *params.params, *params.kwonly_params)}
    for star in (params.star_arg, params.star_kwarg):
        if isinstance(star, cst.Param):
            names.add(star.name.value)
    for n in walk_scope(info.node.body):
        if isinstance(n, (cst.FunctionDef, cst.ClassDef)):
            names.add(n.name.value)
        elif isinstance(n, cst.Assign):
            for t in n.targets:
                names |= bound_names(t.target)
        elif isinstance(n, (cst.AnnAssign, cst.AugAssign)):
            names |= bound_names(n.target)
        elif isinstance(n, cst.For):
            names |= bound_names(n.target)
        elif isinstance(n, cst.Import) or isinstance(n, cst.ImportFrom) and not isinstance(n.names, cst.ImportStar):
            for alias in n.names:  # type: ignore[union-attr]
                asname = alias.asname.name if alias.asname is not None else alias.name
                if isinstance(asname, cst.Name):
                    names.add(asname.value)
    return names - info.globals
