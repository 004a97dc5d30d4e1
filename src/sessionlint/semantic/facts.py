"""Module facts: everything the session model needs from one file, gathered in one visitor pass.

Two layers come out of the pass:

* `ModuleSummary`, small and picklable: imports, module-level and class-level bindings and
  per-function summaries, with expressions kept in the compact form of `ir`. The project index resolves
  names across modules from these alone, so a file's tree never has to leave its worker.
* `FunctionInfo`, which keeps the libcst nodes for the function analyses of this file.
"""
from __future__ import annotations

from dataclasses import dataclass, field
from typing import Optional, Sequence, Union

import libcst as cst

from .ir import IR, to_ir
from .values import CLOSE_METHODS
from .walk import FastVisitor, children, walk

FuncNode = Union[cst.FunctionDef, cst.Lambda]

_EMPTY = cst.Module(body=[])


def code(node: cst.CSTNode) -> str:
    """Source text of a node (whitespace as written inside it)."""
    return _EMPTY.code_for_node(node)


def dotted(node: cst.BaseExpression) -> Optional[str]:
    """`a.b.c` for a Name/Attribute chain, else None."""
    parts: list[str] = []
    while isinstance(node, cst.Attribute):
        parts.append(node.attr.value)
        node = node.value
    if isinstance(node, cst.Name):
        parts.append(node.value)
        return ".".join(reversed(parts))
    return None


@dataclass
class FunctionSummary:
    """What callers in other modules may need to know about a function (picklable)."""

    qualname: str
    params: list[str] = field(default_factory=list)
    # parameter name -> annotation
    annotations: dict[str, IR] = field(default_factory=dict)
    # local name -> every value assigned to it (module-level imports excluded)
    assigns: dict[str, list[IR]] = field(default_factory=dict)
    returns: list[IR] = field(default_factory=list)
    yields: list[IR] = field(default_factory=list)
    has_yield: bool = False
    return_annotation: IR = None
    # dotted names of the decorators (the called name for `@lru_cache(...)`)
    decorators: list[str] = field(default_factory=list)
    is_async: bool = False
    closes_params: set[str] = field(default_factory=set)
    stores_params: set[str] = field(default_factory=set)
    commits_params: set[str] = field(default_factory=set)
    rollbacks_params: set[str] = field(default_factory=set)
    # parameters the function runs SQL on (a flush, a query): a failure there can leave them failed
    queries_params: set[str] = field(default_factory=set)
    ends_in_raise: bool = False  # the body's last statement raises: calling it never returns
    # the whole body is one `try` whose broad handler never re-raises: no error gets out
    contains_errors: bool = False
    # (callee, first argument name) of every `register(x, ...)`-like call: zope.sqlalchemy
    register_calls: list[tuple[str, str]] = field(default_factory=list)
    local_imports: dict[str, str] = field(default_factory=dict)

    @property
    def is_generator(self) -> bool:
        return self.has_yield


@dataclass
class ClassSummary:
    qualname: str
    # attribute -> each value (class body assignments and `self.x = ...`)
    attrs: dict[str, list[IR]] = field(default_factory=dict)
    # attribute -> annotation (class-level `x: T` or `self.x = param` of an annotated param)
    annotations: dict[str, IR] = field(default_factory=dict)
    methods: set[str] = field(default_factory=set)
    bases: list[IR] = field(default_factory=list)


@dataclass
class ModuleSummary:
    name: str
    path: str
    is_package: bool = False
    imports: dict[str, str] = field(default_factory=dict)
    bindings: dict[str, list[IR]] = field(default_factory=dict)
    annotations: dict[str, IR] = field(default_factory=dict)
    functions: dict[str, FunctionSummary] = field(default_factory=dict)
    classes: dict[str, ClassSummary] = field(default_factory=dict)
    register_calls: list[tuple[str, str]] = field(default_factory=list)  # at module level

    @property
    def package(self) -> str:
        return self.name if self.is_package else self.name.rpartition(".")[0]


@dataclass
class FunctionInfo:
    """A function of this file with its nodes (stays in the worker)."""

    node: cst.FunctionDef
    qualname: str
    summary: FunctionSummary
    class_qualname: Optional[str]  # set for methods
    self_name: Optional[str]  # first parameter of a method
    globals: set[str] = field(default_factory=set)
    outer_names: set[str] = field(default_factory=set)  # declared `nonlocal`
    # call expressions that may create a session: bound to a name, or used as a receiver
    bound_calls: list[tuple[str, cst.BaseExpression]] = field(default_factory=list)
    receiver_calls: list[cst.Call] = field(default_factory=list)
    sync_withs: list[cst.With] = field(default_factory=list)  # plain (not async) `with` statements
    # receivers of calls to session-method names (`session` in `session.get(...)`), as IR
    method_receivers: set[IR] = field(default_factory=set)
    # names called in the function: `f(...)` gives "f", `x.commit()` gives "commit"
    call_names: set[str] = field(default_factory=set)
    # (outer call, argument call): `read_sql(q, engine.connect())` hands a new session to a call
    argument_calls: list[tuple[cst.Call, cst.BaseExpression]] = field(default_factory=list)


_BROAD = frozenset({"Exception", "BaseException", "builtins.Exception", "builtins.BaseException"})


def _contains_errors(body: Sequence[cst.BaseStatement]) -> bool:
    """`try: ... except Exception: return False` as the whole body (after a docstring)."""
    statements = list(body)
    if statements and isinstance(statements[0], cst.SimpleStatementLine) and \
            isinstance(statements[0].body[0], cst.Expr) and isinstance(statements[0].body[0].value, cst.SimpleString):
        statements = statements[1:]
    if len(statements) != 1 or not isinstance(statements[0], cst.Try):
        return False
    tr = statements[0]
    if tr.finalbody is not None or tr.orelse is not None:
        return False
    broad = [h for h in tr.handlers if h.type is None or dotted(h.type) in _BROAD]
    if not broad:
        return False
    return not any(isinstance(n, cst.Raise) for h in broad for n in walk(h.body))


def resolve_relative(package: str, level: int, module: Optional[str]) -> str:
    base = package.split(".") if package else []
    if level > 1:
        base = base[: len(base) - (level - 1)] if level - 1 <= len(base) else []
    parts = base + ([module] if module else [])
    return ".".join(p for p in parts if p)


class FactsCollector(FastVisitor):
    """One pass over a module; fills a `ModuleSummary` and the list of `FunctionInfo`."""

    def __init__(self, summary: ModuleSummary) -> None:
        self.summary = summary
        self.functions: list[FunctionInfo] = []
        # innermost last; entries are FunctionInfo or ClassSummary
        self._stack: list[Union[FunctionInfo, ClassSummary]] = []
        self._lambdas = 0  # inside a lambda: not the enclosing function's own code
        self.module_withs: list[cst.With] = []  # plain `with` outside functions
        self._with_items = 0  # inside a `with` header: whatever is created there is managed

    # ---- scopes -----------------------------------------------------------------------
    def _qualname(self, name: str) -> str:
        outer = [s.qualname for s in self._stack[-1:]]
        if outer and isinstance(self._stack[-1], FunctionInfo):
            return f"{outer[0]}.<locals>.{name}"
        return f"{outer[0]}.{name}" if outer else name

    def _function(self) -> Optional[FunctionInfo]:
        top = self._stack[-1] if self._stack else None
        return top if isinstance(top, FunctionInfo) else None

    def visit_ClassDef(self, node: cst.ClassDef) -> None:
        cls = ClassSummary(self._qualname(node.name.value))
        cls.bases = [to_ir(b.value) for b in node.bases if b.keyword is None]
        self.summary.classes[cls.qualname] = cls
        self._stack.append(cls)

    def leave_ClassDef(self, original_node: cst.ClassDef) -> None:
        self._stack.pop()

    def visit_FunctionDef(self, node: cst.FunctionDef) -> None:
        qualname = self._qualname(node.name.value)
        fs = FunctionSummary(qualname, is_async=node.asynchronous is not None)
        if node.returns is not None:
            fs.return_annotation = to_ir(node.returns.annotation)
        body = node.body.body if isinstance(node.body, cst.IndentedBlock) else []
        last = body[-1] if body else None
        fs.ends_in_raise = isinstance(last, cst.SimpleStatementLine) and isinstance(last.body[-1], cst.Raise)
        fs.contains_errors = _contains_errors(body)
        fs.decorators = [dotted(d.decorator.func if isinstance(d.decorator, cst.Call) else d.decorator) or ""
                         for d in node.decorators]
        params = node.params
        for p in [*params.posonly_params, *params.params, *params.kwonly_params]:
            fs.params.append(p.name.value)
            if p.annotation is not None:
                fs.annotations[p.name.value] = to_ir(p.annotation.annotation)
        for star in (params.star_arg, params.star_kwarg):
            if isinstance(star, cst.Param):
                fs.params.append(star.name.value)
        parent = self._stack[-1] if self._stack else None
        cls = parent if isinstance(parent, ClassSummary) else None
        if cls is not None:
            cls.methods.add(node.name.value)
        is_static = any(dotted(d.decorator) == "staticmethod" for d in node.decorators)
        self_name = fs.params[0] if cls is not None and fs.params and not is_static else None
        info = FunctionInfo(node, qualname, fs, cls.qualname if cls else None, self_name)
        self.summary.functions[qualname] = fs
        self.functions.append(info)
        self._stack.append(info)

    def leave_FunctionDef(self, original_node: cst.FunctionDef) -> None:
        self._stack.pop()

    def _method_class(self) -> Optional[tuple[FunctionInfo, ClassSummary]]:
        """The enclosing method and its class, when directly inside a method."""
        fn = self._function()
        if fn is None or fn.class_qualname is None or fn.self_name is None:
            return None
        return fn, self.summary.classes[fn.class_qualname]

    # ---- imports ----------------------------------------------------------------------
    def _import_table(self) -> dict[str, str]:
        fn = self._function()
        return fn.summary.local_imports if fn is not None else self.summary.imports

    def visit_Import(self, node: cst.Import) -> None:
        table = self._import_table()
        for alias in node.names:
            full = dotted(alias.name)
            if full is None:
                continue
            if alias.asname is not None and isinstance(alias.asname.name, cst.Name):
                table[alias.asname.name.value] = full
            else:
                head = full.split(".")[0]
                table[head] = head

    def visit_ImportFrom(self, node: cst.ImportFrom) -> None:
        if isinstance(node.names, cst.ImportStar):
            return
        module = dotted(node.module) if node.module is not None else None
        level = len(node.relative)
        base = resolve_relative(self.summary.package, level, module) if level else (module or "")
        table = self._import_table()
        for alias in node.names:
            name = dotted(alias.name)
            if name is None:
                continue
            local = name
            if alias.asname is not None and isinstance(alias.asname.name, cst.Name):
                local = alias.asname.name.value
            table[local] = f"{base}.{name}" if base else name

    # ---- bindings ---------------------------------------------------------------------
    def visit_Global(self, node: cst.Global) -> None:
        fn = self._function()
        if fn is not None:
            fn.globals.update(n.name.value for n in node.names)

    def visit_Nonlocal(self, node: cst.Nonlocal) -> None:
        # an enclosing function's variable outlives this call, like a global
        fn = self._function()
        if fn is not None:
            fn.outer_names.update(n.name.value for n in node.names)

    def _bind(self, target: cst.BaseExpression, value: Optional[cst.BaseExpression],
              annotation: Optional[cst.Annotation] = None) -> None:
        top = self._stack[-1] if self._stack else None
        if isinstance(target, cst.Name):
            name = target.value
            fn = self._function()
            if top is None or (fn is not None and name in fn.globals):
                if value is not None:
                    self.summary.bindings.setdefault(name, []).append(to_ir(value))
                if annotation is not None:
                    self.summary.annotations[name] = to_ir(annotation.annotation)
            elif isinstance(top, ClassSummary):
                if value is not None:
                    top.attrs.setdefault(name, []).append(to_ir(value))
                if annotation is not None:
                    top.annotations[name] = to_ir(annotation.annotation)
            if fn is not None and value is not None:
                fn.summary.assigns.setdefault(name, []).append(to_ir(value))
        elif isinstance(target, cst.Attribute) and isinstance(target.value, cst.Name):
            mc = self._method_class()
            if mc is not None and target.value.value == mc[0].self_name:
                fn, cls = mc
                attr = target.attr.value
                if isinstance(value, cst.Name) and value.value in fn.summary.annotations:
                    cls.annotations.setdefault(attr, fn.summary.annotations[value.value])
                elif value is not None:
                    cls.attrs.setdefault(attr, []).append(to_ir(value))
                if annotation is not None:
                    cls.annotations[attr] = to_ir(annotation.annotation)
            self._note_store(value)
        elif isinstance(target, (cst.Subscript, cst.Attribute)):
            self._note_store(value)
        elif isinstance(target, (cst.Tuple, cst.List)):
            for el in target.elements:
                self._bind(el.value, None)

    def _note_store(self, value: Optional[cst.BaseExpression]) -> None:
        fn = self._function()
        if fn is None or value is None:
            return
        for name in value_names(value):
            if name in fn.summary.params:
                fn.summary.stores_params.add(name)

    def _candidate(self, target: cst.BaseExpression, value: Optional[cst.BaseExpression]) -> None:
        fn = self._function()
        if fn is None or self._lambdas or value is None:
            return
        if isinstance(target, (cst.Tuple, cst.List)) and isinstance(value, (cst.Tuple, cst.List)) \
                and len(target.elements) == len(value.elements):
            for t_el, v_el in zip(target.elements, value.elements):  # `src, dst = A(), B()`
                self._candidate(t_el.value, v_el.value)
            return
        if not isinstance(target, cst.Name):
            return
        inner = value.expression if isinstance(value, cst.Await) else value
        if isinstance(inner, (cst.Call, cst.IfExp)):
            fn.bound_calls.append((target.value, value))

    def visit_Assign(self, node: cst.Assign) -> None:
        stored = any(not isinstance(t.target, (cst.Name, cst.Tuple, cst.List)) for t in node.targets)
        fn = self._function()
        if fn is not None:
            stored = stored or any(isinstance(t.target, cst.Name) and t.target.value in fn.globals
                                   for t in node.targets)
        for t in node.targets:
            self._bind(t.target, node.value)
            if not stored:  # `self.s = s = Session()`: stored, so handed over
                self._candidate(t.target, node.value)

    def visit_AnnAssign(self, node: cst.AnnAssign) -> None:
        self._bind(node.target, node.value, node.annotation)
        self._candidate(node.target, node.value)

    def visit_NamedExpr(self, node: cst.NamedExpr) -> None:
        self._bind(node.target, node.value)
        self._candidate(node.target, node.value)

    def visit_With(self, node: cst.With) -> None:
        if node.asynchronous is None:
            fn = self._function()
            (fn.sync_withs if fn is not None else self.module_withs).append(node)

    def visit_WithItem(self, node: cst.WithItem) -> None:
        self._with_items += 1
        fn = self._function()
        if fn is not None:
            target = node.item
            if isinstance(target, cst.Call) and dotted(target.func) in ("closing", "contextlib.closing") \
                    and target.args:
                target = target.args[0].value
            if isinstance(target, cst.Name) and target.value in fn.summary.params:
                fn.summary.closes_params.add(target.value)  # `with session:` closes it
        if fn is not None and node.asname is not None and isinstance(node.asname.name, cst.Name):
            # `with engine_scope() as engine`: the name holds what the context manager enters
            item = to_ir(node.item)
            if item is not None:
                fn.summary.assigns.setdefault(node.asname.name.value, []).append(("enter", item))

    def leave_WithItem(self, original_node: cst.WithItem) -> None:
        self._with_items -= 1

    def visit_Lambda(self, node: cst.Lambda) -> None:
        self._lambdas += 1

    def leave_Lambda(self, original_node: cst.Lambda) -> None:
        self._lambdas -= 1

    # ---- function effects -------------------------------------------------------------
    def visit_Return(self, node: cst.Return) -> None:
        fn = self._function()
        if fn is not None and node.value is not None:
            fn.summary.returns.append(to_ir(node.value))

    def visit_Yield(self, node: cst.Yield) -> None:
        fn = self._function()
        if fn is not None:
            value = node.value
            fn.summary.has_yield = True
            if isinstance(value, cst.BaseExpression):
                fn.summary.yields.append(to_ir(value))

    def visit_Attribute(self, node: cst.Attribute) -> None:
        fn = self._function()
        if fn is None:
            return
        if isinstance(node.value, cst.Call) and not self._lambdas and not self._with_items \
                and node.attr.value not in CLOSE_METHODS:
            fn.receiver_calls.append(node.value)
        if not isinstance(node.value, cst.Name) or node.value.value not in fn.summary.params:
            return
        attr, param = node.attr.value, node.value.value
        if attr in CLOSE_METHODS:
            fn.summary.closes_params.add(param)
        elif attr == "commit":
            fn.summary.commits_params.add(param)
        elif attr == "rollback":
            fn.summary.rollbacks_params.add(param)
        if attr in QUERY_METHODS:
            fn.summary.queries_params.add(param)

    def visit_Call(self, node: cst.Call) -> None:
        fn = self._function()
        if fn is not None:
            func = node.func
            if isinstance(func, cst.Attribute):
                fn.call_names.add(func.attr.value)
                if func.attr.value in SESSION_METHODS:
                    fn.method_receivers.add(to_ir(func.value))
            elif isinstance(func, cst.Name):
                fn.call_names.add(func.value)
        callee = dotted(node.func)
        if callee is not None and callee.rpartition(".")[2] == "register" and node.args and \
                isinstance(node.args[0].value, cst.Name):
            target = fn.summary.register_calls if fn is not None else self.summary.register_calls
            target.append((callee, node.args[0].value.value))
        if fn is None:
            return
        if not self._lambdas and not self._with_items:
            for arg in node.args:
                inner = arg.value.expression if isinstance(arg.value, cst.Await) else arg.value
                if isinstance(inner, cst.Call):
                    fn.argument_calls.append((node, inner))
        if isinstance(node.func, cst.Attribute) and node.func.attr.value in STORE_METHODS:
            for arg in node.args:
                self._note_store(arg.value)


# Session methods the transaction and asyncio rules look at.
SESSION_METHODS = frozenset({"commit", "rollback", "close", "flush", "execute", "scalar", "scalars", "get",
                             "get_one", "query", "refresh", "merge", "connection", "stream", "stream_scalars",
                             "run_sync", "exec", "add", "add_all", "delete", "begin", "begin_nested",
                             "invalidate", "aclose", "reset", "remove", "exec_driver_sql", "merge_all",
                             "delete_all"})

# Session methods that send SQL (and so may fail the transaction).
QUERY_METHODS = frozenset({"flush", "commit", "execute", "scalar", "scalars", "get", "get_one", "query",
                           "refresh", "merge", "connection", "stream", "stream_scalars", "run_sync", "exec"})

# Methods of containers (and registries) that keep a reference to their argument.
STORE_METHODS = frozenset(
    {"append", "appendleft", "extend", "insert", "add", "put", "put_nowait", "setdefault",
     "update", "push", "register", "__setitem__", "set", "set_result"}
)


# Methods of a Connection that return the connection itself (SQLAlchemy 2.0).
SELF_RETURNING = frozenset({"execution_options"})


def value_names(expr: cst.BaseExpression) -> set[str]:
    """Names whose value (not an attribute of it) flows into `expr`.

    `Repo(s)`, `[s, t]`, `(s,)`, `x or s` and a lambda mentioning `s` all carry `s`;
    `s.query(User)` and `s.bind` do not: they use the session rather than hand it on.
    """
    out: set[str] = set()
    _collect_value_names(expr, out)
    return out


def _collect_value_names(node: cst.CSTNode, out: set[str]) -> None:
    if isinstance(node, cst.Name):
        out.add(node.value)
        return
    if isinstance(node, cst.Attribute):
        # the receiver's value is not handed on, but a call inside it may hand things on
        inner = node.value
        while isinstance(inner, cst.Attribute):
            inner = inner.value
        if not isinstance(inner, cst.Name):
            _collect_value_names(inner, out)
        return
    if isinstance(node, cst.Call):
        if isinstance(node.func, cst.Attribute) and node.func.attr.value in SELF_RETURNING:
            _collect_value_names(node.func.value, out)  # `conn.execution_options(...)` is `conn`
        else:
            _collect_value_names(node.func, out)
        for arg in node.args:
            _collect_value_names(arg.value, out)
        return
    if isinstance(node, cst.Lambda):
        out.update(n.value for n in _all_names(node.body))
        return
    if isinstance(node, cst.Subscript):
        _collect_value_names(node.value, out)
        return
    if isinstance(node, (cst.Comparison, cst.SimpleString, cst.Integer, cst.Float)):
        return
    for child in children(node):
        _collect_value_names(child, out)


def bound_names(target: cst.CSTNode) -> set[str]:
    """Names a binding target binds (`a`, `a, *b`), not names inside `x.attr` or `x[i]`."""
    if isinstance(target, cst.Name):
        return {target.value}
    if isinstance(target, (cst.Tuple, cst.List)):
        out: set[str] = set()
        for el in target.elements:
            out |= bound_names(el.value)
        return out
    if isinstance(target, cst.StarredElement):
        return bound_names(target.value)
    return set()


def _all_names(node: cst.CSTNode) -> list[cst.Name]:
    return [n for n in walk(node) if isinstance(n, cst.Name)]


def all_names(node: cst.CSTNode) -> set[str]:
    return {n.value for n in _all_names(node)}


def collect(module: cst.Module, name: str, path: str,
            is_package: bool) -> tuple[ModuleSummary, list[FunctionInfo], list[cst.With]]:
    summary = ModuleSummary(name=name, path=path, is_package=is_package)
    collector = FactsCollector(summary)
    collector.visit_tree(module)
    return summary, collector.functions, collector.module_withs


def body_statements(body: Union[cst.BaseSuite, Sequence[cst.BaseStatement]]) -> Sequence[cst.BaseStatement]:
    if isinstance(body, cst.IndentedBlock):
        return body.body
    if isinstance(body, cst.SimpleStatementSuite):
        return [cst.SimpleStatementLine(body=body.body)]
    return body  # type: ignore[return-value]
