"""Sessions handed to other threads and concurrent tasks (SES301, SES302).

A session argument is any argument expression that evaluates to a session (not a registry,
not a factory), including inside tuples/lists/dicts (`args=(session,)`), `[session] * n`,
`repeat(session)`, and lambdas or nested functions whose body uses one.
"""
from __future__ import annotations

from typing import Iterator, Optional

import libcst as cst

from .facts import FunctionInfo, dotted
from .index import ProjectIndex, Scope
from .ir import dotted_ir
from .values import Kind, Own, Value
from .walk import walk, walk_scope

THREAD_CALLS = frozenset({"threading.Thread", "threading.Timer", "asyncio.to_thread"})
THREAD_METHODS = frozenset({"submit", "map", "run_in_executor", "apply_async", "starmap"})
GATHER_CALLS = frozenset({"asyncio.gather"})
TASK_CALLS = frozenset({"asyncio.create_task", "asyncio.ensure_future"})
TASK_METHODS = frozenset({"create_task", "start_soon"})


def is_shared_session(value: Optional[Value]) -> bool:
    return value is not None and value.kind is Kind.SESSION and value.own is not Own.SCOPED


def origin(node: cst.BaseExpression, index: ProjectIndex, scope: Scope) -> str:
    return index.origin(dotted(node) or "", scope)


def session_names_in(node: cst.CSTNode, index: ProjectIndex, scope: Scope,
                     local_functions: dict[str, cst.FunctionDef]) -> set[str]:
    """Names of sessions an argument carries (directly, in a container, or in a closure)."""
    out: set[str] = set()
    for n in walk(node):
        if isinstance(n, cst.Name):
            if n.value in local_functions:
                inner = local_functions[n.value]
                # the names the nested function binds itself are its own, not the session here
                out |= session_names_in(inner.body, index, scope, {}) - _bound_in(inner)
            elif is_shared_session(index.lookup(n.value, scope)):
                out.add(n.value)
        elif isinstance(n, cst.Attribute) and isinstance(n.value, cst.Name) and n.value.value == "self":
            if is_shared_session(index.eval(n, scope)):
                out.add(f"self.{n.attr.value}")
    return out


def nested_functions(info: FunctionInfo) -> dict[str, cst.FunctionDef]:
    return {n.name.value: n for n in walk_scope(info.node.body)
            if isinstance(n, cst.FunctionDef) and n is not info.node}


def own_calls(info: FunctionInfo) -> Iterator[cst.Call]:
    for n in walk_scope(info.node.body):
        if isinstance(n, cst.Call):
            yield n


def is_thread_subclass(func: cst.BaseExpression, index: ProjectIndex, scope: Scope) -> bool:
    value = index.eval(func, scope)
    if value is None or value.kind is not Kind.CLASS:
        return False
    mod, _, qual = value.ref.partition(":")
    module = index.modules.get(mod)
    cls = module.classes.get(qual) if module else None
    if cls is None:
        return False
    for base in cls.bases:
        name = dotted_ir(base)
        if name is not None and index.origin(name, Scope(mod)) in ("threading.Thread", "multiprocessing.Process"):
            return True
    return False


def used_after(info: FunctionInfo, call: cst.Call, key: str) -> bool:
    """Does the function use the session `key` after this call (not inside the call itself)?"""
    from .transactions import mentions

    inside = {id(n) for n in walk(call)}
    seen = False
    for n in walk_scope(info.node.body):
        if n is call:
            seen = True
            continue
        if not seen or id(n) in inside:
            continue
        if isinstance(n, cst.Call) and (mentions(n.func, key) if isinstance(n.func, cst.Attribute) else False):
            return True
        if isinstance(n, cst.Arg) and isinstance(n.value, cst.Name) and n.value.value == key:
            return True
        if isinstance(n, cst.Attribute) and isinstance(n.value, cst.Name) and n.value.value == key:
            return True
    return False


def _bound_in(func: cst.FunctionDef) -> set[str]:
    names = {p.name.value for p in (*func.params.params, *func.params.kwonly_params, *func.params.posonly_params)}
    for n in walk_scope(func.body):
        if isinstance(n, cst.AssignTarget) and isinstance(n.target, cst.Name):
            names.add(n.target.value)
        elif isinstance(n, cst.AsName) and isinstance(n.name, cst.Name):
            names.add(n.name.value)
        elif isinstance(n, (cst.AnnAssign, cst.NamedExpr)) and isinstance(n.target, cst.Name):
            names.add(n.target.value)
        elif isinstance(n, cst.For) and isinstance(n.target, cst.Name):
            names.add(n.target.value)
    return names


def thread_subclass_names(index: ProjectIndex) -> frozenset[str]:
    """Names of the project's classes that subclass `threading.Thread` (computed once)."""
    cached = index.thread_subclasses
    if cached is None:
        names = set()
        for module in list(index.modules.values()):
            for qual, cls in module.classes.items():
                if any((dotted_ir(b) or "").rpartition(".")[2] in ("Thread", "Process") for b in cls.bases):
                    names.add(qual.rpartition(".")[2])
        cached = index.thread_subclasses = frozenset(names)
    return cached
