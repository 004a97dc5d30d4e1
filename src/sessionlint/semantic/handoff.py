"""Sessions handed to other threads and concurrent tasks (SES301, SES302).

An argument hands a session over when the value it evaluates to is the session or holds it:
the session itself, a tuple/list/dict around it (`args=(session,)`, `[session] * n`), a call
that keeps its arguments (`partial(fn, session)`, `repeat(session)`, a coroutine
`load(session)`), the elements of a comprehension, an uncalled bound method
(`session.execute`), a `Query`, an `AsyncSession`'s own coroutines, and lambdas or nested
functions whose body uses it. What the session computes here is not the session: an
attribute (`session.bind`), a method called eagerly (`session.get_bind()`,
`session.scalar(q)` on a sync session), an awaited result, or the iterable a comprehension
loops over, which is evaluated before the call.
"""
from __future__ import annotations

from typing import Iterable, Iterator, Optional, Union

import libcst as cst

from .facts import FunctionInfo, dotted
from .index import ProjectIndex, Scope
from .ir import IR, dotted_ir, parse_ir, to_ir
from .values import Kind, Own, Value
from .walk import children, walk, walk_scope

THREAD_CALLS = frozenset({"threading.Thread", "threading.Timer", "asyncio.to_thread",
                          "starlette.concurrency.run_in_threadpool", "fastapi.concurrency.run_in_threadpool",
                          "anyio.to_thread.run_sync"})
# Methods only executors have (`loop.run_in_executor`, `executor.submit`): any receiver.
THREAD_METHODS = frozenset({"submit", "run_in_executor"})
# Method names other libraries use too (pandas `Series.map`, `Result.map`, Celery's
# `apply_async`): a hand-off only on a receiver that resolves to an executor or a pool.
POOL_METHODS = frozenset({"map", "starmap", "apply_async", "imap", "imap_unordered", "map_async",
                          "starmap_async"})
EXECUTOR_CLASSES = frozenset({
    "concurrent.futures.Executor", "concurrent.futures._base.Executor",
    "concurrent.futures.ThreadPoolExecutor", "concurrent.futures.thread.ThreadPoolExecutor",
    "concurrent.futures.ProcessPoolExecutor", "concurrent.futures.process.ProcessPoolExecutor",
    "concurrent.futures.InterpreterPoolExecutor",
    "multiprocessing.Pool", "multiprocessing.pool.Pool", "multiprocessing.pool.ThreadPool",
    "multiprocessing.dummy.Pool",
})
GATHER_CALLS = frozenset({"asyncio.gather"})
TASK_CALLS = frozenset({"asyncio.create_task", "asyncio.ensure_future"})
TASK_METHODS = frozenset({"create_task", "start_soon"})
# Task groups await every task they started before their `async with` block ends.
TASK_GROUPS = frozenset({"asyncio.TaskGroup", "asyncio.taskgroups.TaskGroup", "anyio.create_task_group",
                         "trio.open_nursery"})

# Attributes of a Session / AsyncSession that carry it: its methods, uncalled
# (`submit(session.execute, q)`), and the AsyncSession's `sync_session`, the same state.
_SESSION_METHODS = frozenset({
    "sync_session",
    "execute", "scalar", "scalars", "get", "get_one", "query", "add", "add_all", "delete", "merge",
    "flush", "commit", "rollback", "close", "refresh", "expire", "expire_all", "expunge", "expunge_all",
    "begin", "begin_nested", "connection", "stream", "stream_scalars", "run_sync", "invalidate", "reset",
    "bulk_save_objects", "bulk_insert_mappings", "bulk_update_mappings", "merge_all", "delete_all", "exec",
})
# AsyncSession methods that return a coroutine: calling one runs nothing yet, the operation runs
# on the session wherever the coroutine is awaited (the same list as SES402's, sessions only).
_COROUTINE_METHODS = frozenset({
    "execute", "scalar", "scalars", "get", "get_one", "stream", "stream_scalars", "flush", "commit",
    "rollback", "close", "reset", "invalidate", "refresh", "merge", "delete", "connection", "run_sync",
    "exec", "merge_all", "delete_all",
})
# Read in another thread, these give the engine or a plain value, never the session's state.
_DETACHED_READS = frozenset({"bind", "get_bind"})

_COMPREHENSIONS = (cst.ListComp, cst.SetComp, cst.GeneratorExp, cst.DictComp)
Loop = Union[cst.For, cst.While, cst.ListComp, cst.SetComp, cst.GeneratorExp, cst.DictComp]


def is_shared_session(value: Optional[Value]) -> bool:
    return value is not None and value.kind is Kind.SESSION and value.own is not Own.SCOPED


def origin(node: cst.BaseExpression, index: ProjectIndex, scope: Scope) -> str:
    return index.origin(dotted(node) or "", scope)


# ---- what an argument carries ----------------------------------------------------------

def session_names_in(node: cst.CSTNode, index: ProjectIndex, scope: Scope,
                     local_functions: dict[str, cst.FunctionDef]) -> set[str]:
    """Keys (`session`, `self.session`) of the sessions the value of an argument carries."""
    if not isinstance(node, cst.BaseExpression):
        return set()
    return _Carried(index, scope, local_functions).value(node, frozenset())


class _Carried:
    """Follows an argument expression to the values it is made of (see the module docstring)."""

    def __init__(self, index: ProjectIndex, scope: Scope, local_functions: dict[str, cst.FunctionDef]) -> None:
        self.index = index
        self.scope = scope
        self.local_functions = local_functions

    def value(self, node: cst.BaseExpression, shadowed: frozenset[str]) -> set[str]:
        if isinstance(node, cst.Name):
            if node.value in shadowed:
                return set()
            if node.value in self.local_functions:
                return self.closure(self.local_functions[node.value], shadowed)
        if isinstance(node, (cst.Name, cst.Attribute)):
            key = self.session_key(node, shadowed)
            if key is not None:
                return {key}
            if isinstance(node, cst.Attribute):
                return self.attribute(node, shadowed)
            return set()
        if isinstance(node, cst.Call):
            return self.call(node, shadowed)
        if isinstance(node, cst.Lambda):
            return self.uses(node.body, shadowed | _params(node.params))
        if isinstance(node, _COMPREHENSIONS):
            return self.comprehension(node, shadowed)
        return self.union(_parts(node), shadowed)

    def union(self, nodes: Iterable[cst.BaseExpression], shadowed: frozenset[str]) -> set[str]:
        out: set[str] = set()
        for n in nodes:
            out |= self.value(n, shadowed)
        return out

    def session_key(self, node: cst.BaseExpression, shadowed: frozenset[str]) -> Optional[str]:
        """`session` or `self.session` when the expression is a session object itself."""
        if isinstance(node, cst.Name) and node.value in shadowed:
            return None
        if isinstance(node, cst.Attribute) and _root(node) in shadowed:
            return None
        if not isinstance(node, (cst.Name, cst.Attribute)) or not is_shared_session(self.index.eval(node, self.scope)):
            return None
        return dotted(node)

    def attribute(self, node: cst.Attribute, shadowed: frozenset[str]) -> set[str]:
        # an uncalled bound method runs on the session where it is called; `session.bind`,
        # `session.info` are other objects
        key = self.session_key(node.value, shadowed)
        if key is not None:
            return {key} if node.attr.value in _SESSION_METHODS else set()
        return self.value(node.value, shadowed)  # `session.query(User).all`: the Query's method

    def call(self, node: cst.Call, shadowed: frozenset[str]) -> set[str]:
        func = node.func
        args = self.union((a.value for a in node.args), shadowed)
        if isinstance(func, cst.Attribute):
            key = self.session_key(func.value, shadowed)
            if key is not None:
                return {key} if self.session_call_carries(func) else set()
            # `session.query(User).filter(...)`, `partial(f, session).func`: what the receiver holds
            return self.value(func.value, shadowed) | args
        if isinstance(func, cst.Name) and func.value in self.local_functions and func.value not in shadowed:
            inner = self.local_functions[func.value]
            if inner.asynchronous is not None:  # the coroutine runs the body later, where it is awaited
                return self.closure(inner, shadowed) | args
        return args

    def session_call_carries(self, func: cst.Attribute) -> bool:
        """Is the result of `session.<method>(...)` still tied to the session?"""
        method = func.attr.value
        if method == "query":
            return True  # a Query runs on its session wherever it is iterated
        value = self.index.eval(func.value, self.scope)
        return value is not None and value.is_async and method in _COROUTINE_METHODS

    def comprehension(self, node: Union[cst.ListComp, cst.SetComp, cst.GeneratorExp, cst.DictComp],
                      shadowed: frozenset[str]) -> set[str]:
        # the iterables and conditions run here, before the call: only the elements are handed over
        inner = shadowed | _comprehension_targets(node)
        if isinstance(node, cst.DictComp):
            return self.value(node.key, inner) | self.value(node.value, inner)
        return self.value(node.elt, inner)

    def closure(self, func: cst.FunctionDef, shadowed: frozenset[str]) -> set[str]:
        # the names the nested function binds itself are its own, not the session here
        return self.uses(func.body, shadowed | _bound_in(func))

    def uses(self, body: cst.CSTNode, shadowed: frozenset[str]) -> set[str]:
        """Sessions a body that runs elsewhere (a lambda, a nested function) uses."""
        detached = {id(n.value) for n in walk(body)
                    if isinstance(n, cst.Attribute) and n.attr.value in _DETACHED_READS}
        out: set[str] = set()
        for n in walk(body):
            if id(n) in detached:
                continue
            if isinstance(n, cst.Name):
                if n.value in self.local_functions and n.value not in shadowed:
                    inner = self.local_functions[n.value]
                    out |= _Carried(self.index, self.scope, {}).closure(inner, shadowed)
                elif n.value not in shadowed and is_shared_session(self.index.lookup(n.value, self.scope)):
                    out.add(n.value)
            elif isinstance(n, cst.Attribute) and isinstance(n.value, cst.Name) and \
                    n.value.value == self.scope.self_name and n.value.value not in shadowed:
                if is_shared_session(self.index.eval(n, self.scope)):
                    out.add(f"{n.value.value}.{n.attr.value}")
        return out


def _parts(node: cst.BaseExpression) -> list[cst.BaseExpression]:
    """The sub-expressions whose values make up `node`'s value (not conditions, not awaits)."""
    if isinstance(node, (cst.Tuple, cst.List, cst.Set)):
        return [el.value for el in node.elements]
    if isinstance(node, cst.Dict):
        out: list[cst.BaseExpression] = []
        for el in node.elements:
            if isinstance(el, cst.DictElement):
                out += [el.key, el.value]
            else:
                out.append(el.value)
        return out
    if isinstance(node, (cst.BinaryOperation, cst.BooleanOperation)):
        return [node.left, node.right]  # `[session] * 3`, `session or fallback`
    if isinstance(node, cst.IfExp):
        return [node.body, node.orelse]
    if isinstance(node, (cst.NamedExpr, cst.StarredElement)):
        return [node.value]
    # an awaited result, a comparison, a literal, an f-string: a value computed here
    return []


def _root(node: cst.BaseExpression) -> Optional[str]:
    while isinstance(node, cst.Attribute):
        node = node.value
    return node.value if isinstance(node, cst.Name) else None


def _params(params: cst.Parameters) -> frozenset[str]:
    names = {p.name.value for p in (*params.params, *params.kwonly_params, *params.posonly_params)}
    for star in (params.star_arg, params.star_kwarg):
        if isinstance(star, cst.Param):
            names.add(star.name.value)
    return frozenset(names)


def _comprehension_targets(node: Union[cst.ListComp, cst.SetComp, cst.GeneratorExp, cst.DictComp]) -> frozenset[str]:
    names: set[str] = set()
    comp: Optional[cst.CompFor] = node.for_in
    while comp is not None:
        names |= {n.value for n in walk(comp.target) if isinstance(n, cst.Name)}
        comp = comp.inner_for_in
    return frozenset(names)


def _bound_in(func: cst.FunctionDef) -> frozenset[str]:
    names = set(_params(func.params))
    for n in walk_scope(func.body):
        if isinstance(n, cst.AssignTarget) and isinstance(n.target, cst.Name):
            names.add(n.target.value)
        elif isinstance(n, cst.AsName) and isinstance(n.name, cst.Name):
            names.add(n.name.value)
        elif isinstance(n, (cst.AnnAssign, cst.NamedExpr)) and isinstance(n.target, cst.Name):
            names.add(n.target.value)
        elif isinstance(n, cst.For) and isinstance(n.target, cst.Name):
            names.add(n.target.value)
    return frozenset(names)


# ---- executors -------------------------------------------------------------------------

def is_executor(node: cst.BaseExpression, index: ProjectIndex, scope: Scope) -> bool:
    """Is `node` a `concurrent.futures` executor or a `multiprocessing` pool: made here
    (`ThreadPoolExecutor()`, `with ThreadPool(4) as pool`), bound in the function, the module
    or on `self`, imported from a project module, or a parameter annotated with the class?"""
    return _executor_ir(to_ir(node), index, scope, 0)


def _executor_ir(ir: IR, index: ProjectIndex, scope: Scope, depth: int) -> bool:
    if ir is None or depth > 8:
        return False
    tag = ir[0]
    if tag == "call":
        name = dotted_ir(ir[1])
        return name is not None and index.origin(name, scope) in EXECUTOR_CLASSES
    if tag in ("enter", "await"):
        return _executor_ir(ir[1], index, scope, depth + 1)  # an executor's `__enter__` returns itself
    if tag == "name":
        return any(_executor_annotation(b, s, index) if annotated else _executor_ir(b, index, s, depth + 1)
                   for b, s, annotated in _name_sources(ir[1], index, scope, depth))
    if tag == "attr" and scope.self_name and scope.class_qualname and ir[1] == ("name", scope.self_name):
        module = index.modules.get(scope.module)
        cls = module.classes.get(scope.class_qualname) if module else None
        if cls is None:
            return False
        mscope = Scope(scope.module)
        return any(_executor_ir(b, index, mscope, depth + 1) for b in cls.attrs.get(ir[2], [])) or \
            _executor_annotation(cls.annotations.get(ir[2]), mscope, index)
    return False


def _name_sources(name: str, index: ProjectIndex, scope: Scope, depth: int) -> list[tuple[IR, Scope, bool]]:
    """Where a name's value comes from: (expression or annotation, its scope, is annotation)."""
    module = index.modules.get(scope.module)
    if module is None or depth > 8:
        return []
    function = scope.function
    while function:
        fs = module.functions.get(function)
        if fs is not None:
            fscope = scope if function == scope.function else Scope(scope.module, function)
            if name in fs.params:
                ann = fs.annotations.get(name)
                return [(ann, Scope(scope.module), True)] if ann is not None else []
            if name in fs.local_imports:
                return _imported(fs.local_imports[name], index, depth)
            if name in fs.assigns:
                return [(ir, fscope, False) for ir in fs.assigns[name]]
        function = function.rpartition(".<locals>.")[0]
    mscope = Scope(scope.module)
    out: list[tuple[IR, Scope, bool]] = [(ir, mscope, False) for ir in module.bindings.get(name, [])]
    if name in module.annotations:
        out.append((module.annotations[name], mscope, True))
    if name in module.imports:
        out += _imported(module.imports[name], index, depth)
    return out


def _imported(dotted_name: str, index: ProjectIndex, depth: int) -> list[tuple[IR, Scope, bool]]:
    """`from app.pools import executor`: the binding in the project module it comes from."""
    mod, _, attr = dotted_name.rpartition(".")
    if mod not in index.modules:
        return []
    return _name_sources(attr, index, Scope(mod), depth + 1)


def _executor_annotation(ir: IR, scope: Scope, index: ProjectIndex) -> bool:
    """`pool: ThreadPoolExecutor`, `Optional[Executor]`, `"Executor | None"`."""
    if ir is None:
        return False
    tag = ir[0]
    if tag == "str":
        return _executor_annotation(parse_ir(ir[1]), scope, index)
    if tag == "or":
        return _executor_annotation(ir[1], scope, index) or _executor_annotation(ir[2], scope, index)
    if tag == "sub":
        head = dotted_ir(ir[1]) or ""
        return head.rpartition(".")[2] == "Optional" and bool(ir[2]) and _executor_annotation(ir[2][0], scope, index)
    name = dotted_ir(ir)
    return name is not None and index.origin(name, scope) in EXECUTOR_CLASSES


# ---- where the hand-off happens --------------------------------------------------------

def nested_functions(info: FunctionInfo) -> dict[str, cst.FunctionDef]:
    return {n.name.value: n for n in walk_scope(info.node.body)
            if isinstance(n, cst.FunctionDef) and n is not info.node}


def own_calls(info: FunctionInfo) -> Iterator[cst.Call]:
    for n in walk_scope(info.node.body):
        if isinstance(n, cst.Call):
            yield n


def parents(info: FunctionInfo) -> dict[int, cst.CSTNode]:
    """Parent of every node of the function's own scope, by `id` (build once per function)."""
    out: dict[int, cst.CSTNode] = {}
    for n in walk_scope(info.node.body):
        if isinstance(n, (cst.FunctionDef, cst.ClassDef, cst.Lambda)):
            continue  # another scope: walk_scope does not enter it either
        for child in children(n):
            out[id(child)] = n
    return out


def ancestors(node: cst.CSTNode, up: dict[int, cst.CSTNode]) -> Iterator[cst.CSTNode]:
    current = up.get(id(node))
    while current is not None:
        yield current
        current = up.get(id(current))


def is_awaited(call: cst.Call, up: dict[int, cst.CSTNode]) -> bool:
    """`await create_task(...)`: the task has finished before the next statement runs."""
    parent = up.get(id(call))
    return isinstance(parent, cst.Await) and parent.expression is call


def repeated_loop(call: cst.Call, key: str, up: dict[int, cst.CSTNode]) -> Optional[Loop]:
    """The innermost loop or comprehension that runs `call` again with the same session `key`
    (not rebound by the loop), so the calls' tasks or threads overlap; None if there is none."""
    child: cst.CSTNode = call
    once: Optional[cst.CSTNode] = None  # a comprehension whose outermost iterable holds the call
    for node in ancestors(call, up):
        if isinstance(node, (cst.For, cst.While)) and child is node.body:
            return None if _rebinds(node, key) or _leaves_loop(node.body) else node
        if isinstance(node, cst.CompFor) and child is node.iter and isinstance(up.get(id(node)), _COMPREHENSIONS):
            once = up.get(id(node))  # the outermost iterable is evaluated once, before the loop
        if isinstance(node, _COMPREHENSIONS) and node is not once:
            return None if key.partition(".")[0] in _comprehension_targets(node) else node
        child = node
    return None


def _rebinds(loop: Union[cst.For, cst.While], key: str) -> bool:
    for n in walk_scope(loop):
        target: Optional[cst.BaseExpression] = None
        if isinstance(n, cst.AssignTarget):
            target = n.target
        elif isinstance(n, cst.AsName):
            target = n.name  # type: ignore[assignment]
        elif isinstance(n, (cst.AnnAssign, cst.NamedExpr)):
            target = n.target
        elif isinstance(n, (cst.For, cst.CompFor)):
            target = n.target
        if target is not None and any(isinstance(t, (cst.Name, cst.Attribute)) and dotted(t) == key
                                      for t in walk(target)):
            return True
    return False


def _leaves_loop(body: cst.BaseSuite) -> bool:
    """The body ends in `break` or `return`: it runs once."""
    statements = list(body.body) if isinstance(body, cst.IndentedBlock) else [body]
    last = statements[-1] if statements else None
    return isinstance(last, (cst.SimpleStatementLine, cst.SimpleStatementSuite)) and \
        any(isinstance(s, (cst.Break, cst.Return)) for s in last.body)


def awaited_in_loop(call: cst.Call, loop: Loop, up: dict[int, cst.CSTNode]) -> bool:
    """`task = create_task(...)` and `await task` in the same loop body: one task at a time."""
    parent = up.get(id(call))
    if not isinstance(parent, cst.Assign) or len(parent.targets) != 1 or \
            not isinstance(parent.targets[0].target, cst.Name):
        return False
    name = parent.targets[0].target.value
    awaited = (n.expression for n in walk_scope(loop) if isinstance(n, cst.Await))
    return any(isinstance(m, cst.Name) and m.value == name for e in awaited for m in walk(e))


def task_group_block(call: cst.Call, up: dict[int, cst.CSTNode], index: ProjectIndex,
                     scope: Scope) -> Optional[cst.BaseSuite]:
    """The body of the `async with TaskGroup() as tg:` whose `tg.create_task(...)` this is: the
    group awaits its tasks when the block ends, so only uses inside it overlap them."""
    func = call.func
    if not isinstance(func, cst.Attribute) or not isinstance(func.value, cst.Name):
        return None
    group = func.value.value
    for node in ancestors(call, up):
        if not isinstance(node, cst.With):
            continue
        for item in node.items:
            if item.asname is not None and isinstance(item.asname.name, cst.Name) and \
                    item.asname.name.value == group and isinstance(item.item, cst.Call) and \
                    origin(item.item.func, index, scope) in TASK_GROUPS:
                return node.body
    return None


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


def used_after(info: FunctionInfo, call: cst.Call, key: str, within: Optional[cst.CSTNode] = None) -> bool:
    """Does the function use the session `key` after this call (not inside the call itself),
    counting only what runs inside `within` when it is given?"""
    from .transactions import mentions

    inside = {id(n) for n in walk(call)}
    allowed = {id(n) for n in walk_scope(within)} if within is not None else None
    seen = False
    for n in walk_scope(info.node.body):
        if n is call:
            seen = True
            continue
        if not seen or id(n) in inside or (allowed is not None and id(n) not in allowed):
            continue
        if isinstance(n, cst.Call) and (mentions(n.func, key) if isinstance(n.func, cst.Attribute) else False):
            return True
        if isinstance(n, cst.Arg) and isinstance(n.value, cst.Name) and n.value.value == key:
            return True
        if isinstance(n, cst.Attribute) and isinstance(n.value, cst.Name) and n.value.value == key:
            return True
    return False


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
