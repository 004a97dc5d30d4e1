"""What each statement of a function does to the sessions it owns.

`FunctionFacts` finds the function's creation sites (owned sessions and connections) and, per
flow-graph node, the names it closes, hands over (escapes), uses, and binds. The path analysis
(`paths.py`) applies these effects to its path states; nothing here depends on a path.
"""
from __future__ import annotations

from dataclasses import dataclass, field
from typing import Iterator, Optional, Union

import libcst as cst

from . import cfg as flow
from .facts import SELF_RETURNING, STORE_METHODS, FunctionInfo, all_names, bound_names, dotted, value_names
from .index import ProjectIndex, Scope
from .values import CLOSE_METHODS, Kind, Own, Value
from .walk import children, walk, walk_scope

# Calls on an ExitStack (or alike) that take over closing their argument.
ENTER_METHODS = frozenset({"enter_context", "enter_async_context", "push", "push_async_exit", "callback",
                           "push_async_callback"})
# Hand-offs to another thread, process or task: it runs after this function may have returned,
# so it owns what it is given (closing it here would close it under the running thread).
_HANDOFF_CALLS = frozenset({"threading.Thread", "threading.Timer", "multiprocessing.Process",
                            "asyncio.to_thread", "asyncio.create_task", "asyncio.ensure_future"})
_HANDOFF_METHODS = frozenset({"submit", "run_in_executor", "apply_async", "start_soon", "create_task",
                              "call_soon", "call_soon_threadsafe", "call_later"})
# Reading these says nothing happened in the database.
_INERT_ATTRIBUTES = frozenset({"is_active", "in_transaction", "info", "bind", "closed", "invalidated",
                               # the unit of work's bookkeeping: none of these runs SQL or takes a
                               # connection (a flush, a query or a commit does)
                               "add", "add_all", "expunge", "expunge_all", "new", "dirty", "deleted",
                               "identity_map", "is_modified", "expire", "expire_all", "get_bind",
                               "in_nested_transaction", "enable_relationship_loading"})


@dataclass
class Bind:
    name: str
    how: str  # "new" | "alias" | "holder" | "add" (a local container gains) | "none" | "const" | "cond" | "other"
    resource: int = -1
    names: frozenset[str] = frozenset()
    const: object = None


@dataclass
class Effects:
    closes: set[str] = field(default_factory=set)
    # `s.close()` without `await`: closes a sync session, does nothing to an AsyncSession
    sync_closes: set[str] = field(default_factory=set)
    escapes: set[str] = field(default_factory=set)
    uses: set[str] = field(default_factory=set)
    # names called (`describe(x)`): a local function or lambda runs with what it holds
    invokes: set[str] = field(default_factory=set)
    binds: list[Bind] = field(default_factory=list)
    # closes that apply to names bound by this node (`with (s := Session()):`)
    late_closes: set[str] = field(default_factory=set)
    close_all: bool = False


@dataclass
class Creation:
    id: int
    node: cst.Call
    name: str
    value: Value


def _unawait(node: cst.BaseExpression) -> cst.BaseExpression:
    return node.expression if isinstance(node, cst.Await) else node


class FunctionFacts:
    """Creation sites and per-node effects of one function."""

    def __init__(self, info: FunctionInfo, index: ProjectIndex, scope: Scope) -> None:
        self.info = info
        self.index = index
        self.scope = scope
        self.creations: list[Creation] = []
        self.immediate: list[Creation] = []  # created and lost in the same expression
        self._by_call: dict[int, int] = {}
        self.escape_names = set(info.globals) | info.outer_names
        params = set(info.summary.params)
        self.local_containers = {n for n in info.summary.assigns if n not in params and n not in self.escape_names}
        self.local_closers = self._local_closers()
        self.is_pytest_fixture = self._decorated_with(_PYTEST_FIXTURES)
        self._scan_creations()

    def value(self, node: cst.BaseExpression) -> Optional[Value]:
        return self.index.eval(node, self.scope)

    # ---- creations ----------------------------------------------------------------------
    def creation(self, node: cst.BaseExpression) -> Optional[tuple[cst.Call, Value]]:
        """The owned session/connection this expression creates, if any."""
        inner = _unawait(node)
        if isinstance(inner, cst.IfExp):
            # `SessionLocal() if read_only else Session(engine)`: owned whichever runs
            body, orelse = self.creation(inner.body), self.creation(inner.orelse)
            return body if body is not None and orelse is not None else None
        if not isinstance(inner, cst.Call):
            return None
        v = self.value(inner)
        if v is None or not v.is_session_like or v.own is not Own.OWNED:
            return None
        if self.is_pytest_fixture and self._bound_to_parameter(inner):
            return None  # an external-transaction fixture: the connection fixture owns it all
        return inner, v

    def _bound_to_parameter(self, call: cst.Call) -> bool:
        for i, arg in enumerate(call.args):
            if (arg.keyword is not None and arg.keyword.value == "bind") or (arg.keyword is None and i == 0):
                return isinstance(arg.value, cst.Name) and arg.value.value in self.info.summary.params
        return False

    def _scan_creations(self) -> None:
        for name, value in self.info.bound_calls:
            if name in self.escape_names:
                continue
            found = self.creation(value)
            if found is not None:
                call, v = found
                c = Creation(len(self.creations), call, name, v)
                self.creations.append(c)
                self._by_call[id(_unawait(value))] = c.id
        # `Session(engine).query(...)`: created, used, and held by nobody
        for call in self.info.receiver_calls:
            self._immediate(call)
        # `read_sql(query, engine.connect())`: handed to a call that does not keep or close it
        for outer, inner in self.info.argument_calls:
            if not self._keeps_arguments(outer):
                self._immediate(inner)

    def _immediate(self, call: cst.BaseExpression) -> None:
        found = self.creation(call)
        if found is not None:
            node, v = found
            self.immediate.append(Creation(10_000 + len(self.immediate), node, "", v))

    def _keeps_arguments(self, call: cst.Call) -> bool:
        """Might this call keep, close or hand on what it is given?"""
        func = call.func
        if isinstance(func, cst.Attribute):
            if func.attr.value in ENTER_METHODS | STORE_METHODS | _HANDOFF_METHODS:
                return True
            name = func.attr.value
        elif isinstance(func, cst.Name):
            name = func.value
        else:
            return True
        if name[:1].isupper():
            return True  # a constructor: the new object may keep it (`Repo(Session())`)
        fv = self.value(func)
        if fv is None:
            return False
        # the project's own functions may return or keep it; what a library function returns
        # (a DataFrame from `read_sql`) does not hold the connection it was given
        return fv.kind in (Kind.CLOSER, Kind.CLOSING, Kind.CLASS, Kind.CLOSE_ALL, Kind.FUNCTION,
                           Kind.SESSION_FUNCTION, Kind.PROVIDER, Kind.INSTANCE)

    def resource_of(self, node: cst.BaseExpression) -> Optional[int]:
        return self._by_call.get(id(_unawait(node)))

    # ---- helpers of the function itself --------------------------------------------------
    def _local_closers(self) -> dict[str, set[str]]:
        """Nested functions and which outer names they close when called."""
        out: dict[str, set[str]] = {}
        for stmt in _direct_statements(self.info.node):
            if isinstance(stmt, cst.FunctionDef):
                closed = {n.value.value for n in walk(stmt.body) if isinstance(n, cst.Attribute)
                          and n.attr.value in CLOSE_METHODS and isinstance(n.value, cst.Name)}
                if closed:
                    out[stmt.name.value] = closed
        return out

    def _decorated_with(self, targets: frozenset[str]) -> bool:
        return any(self.index.origin(d, self.scope) in targets for d in self.info.summary.decorators)

    # ---- effects of a node ----------------------------------------------------------------
    def effects(self, node: flow.Node) -> Effects:
        eff = Effects()
        ast = node.ast
        if ast is None:
            return eff
        if node.kind == flow.WITH:
            assert isinstance(ast, cst.With)
            self._with(ast, eff)
        elif node.kind == flow.LOOP:
            assert isinstance(ast, cst.For)
            self._scan_expr(ast.iter, eff)
            held = _literal_elements(ast.iter)
            for name in _target_names(ast.target):
                # `for s in (src, dst): s.close()` closes both
                eff.binds.append(Bind(name, "alias", names=held) if held else Bind(name, "holder",
                                 names=frozenset(all_names(ast.iter))))
        elif node.kind == flow.HANDLER:
            assert isinstance(ast, (cst.ExceptHandler, cst.ExceptStarHandler))
            if ast.name is not None:
                for name in _target_names(ast.name.name):
                    eff.binds.append(Bind(name, "other"))
        elif node.kind == flow.COND:
            self._scan_expr(ast.subject if isinstance(ast, cst.Match) else ast, eff)
        elif isinstance(ast, (cst.FunctionDef, cst.ClassDef)):
            # a nested function keeps what it mentions alive; it closes only when it is called
            eff.binds.append(Bind(ast.name.value, "holder", names=frozenset(all_names(ast.body))))
        else:
            self._scan_expr(ast, eff)
            if isinstance(ast, cst.Return) and ast.value is not None:
                eff.escapes |= value_names(ast.value)
            elif isinstance(ast, (cst.Assign, cst.AnnAssign, cst.AugAssign)):
                self._assign(ast, eff)
            elif isinstance(ast, cst.Del):
                for name in _target_names(ast.target):
                    eff.binds.append(Bind(name, "other"))
            elif isinstance(ast, (cst.Import, cst.ImportFrom)):
                names = ast.names if not isinstance(ast.names, cst.ImportStar) else []
                for alias in names:
                    local = alias.evaluated_alias or alias.evaluated_name.split(".")[0]
                    eff.binds.append(Bind(local, "other"))
        return eff

    def _with(self, ast: cst.With, eff: Effects) -> None:
        for item in ast.items:
            self._scan_expr(item.item, eff)
            target = item.item
            if isinstance(target, cst.Call):
                fv = self.value(target.func)
                if fv is not None and fv.kind in (Kind.CLOSING, Kind.CLOSER):
                    for arg in target.args:
                        eff.closes |= value_names(arg.value)
                elif fv is not None and fv.kind is Kind.CLASS and self._has_exit(fv.ref):
                    # a project context manager class: its __exit__ is its close
                    for arg in target.args:
                        eff.closes |= value_names(arg.value)
            elif isinstance(target, cst.Name):
                eff.closes.add(target.value)
            elif isinstance(target, cst.NamedExpr) and isinstance(target.target, cst.Name):
                eff.late_closes.add(target.target.value)
            if item.asname is not None:
                for name in _target_names(item.asname.name):
                    eff.binds.append(Bind(name, "other"))

    def _has_exit(self, ref: str) -> bool:
        mod, _, qual = ref.partition(":")
        module = self.index.modules.get(mod)
        cls = module.classes.get(qual) if module else None
        return cls is not None and bool({"__exit__", "__aexit__"} & cls.methods)

    def _assign(self, ast: Union[cst.Assign, cst.AnnAssign, cst.AugAssign], eff: Effects) -> None:
        value = ast.value
        if value is None:
            return
        targets = [t.target for t in ast.targets] if isinstance(ast, cst.Assign) else [ast.target]
        stored = any(isinstance(t, (cst.Attribute, cst.Subscript)) or
                     (isinstance(t, cst.Name) and t.value in self.escape_names) for t in targets)
        for target in targets:
            if isinstance(target, cst.Name):
                if target.value in self.escape_names:
                    eff.escapes |= value_names(value)
                elif isinstance(ast, cst.AugAssign):
                    eff.binds.append(Bind(target.value, "holder",
                                          names=frozenset(value_names(value) | {target.value})))
                elif stored:
                    eff.binds.append(Bind(target.value, "other"))  # `self.s = s = ...`: handed over
                else:
                    eff.binds.append(self._bind_source(target.value, value))
            elif isinstance(target, cst.Subscript) and isinstance(target.value, cst.Name) and \
                    target.value.value in self.local_containers:
                # `sessions[k] = s` on a local dict: held, not handed over
                eff.binds.append(Bind(target.value.value, "add", names=frozenset(value_names(value))))
            elif isinstance(target, (cst.Attribute, cst.Subscript)):
                eff.escapes |= value_names(value)
            else:
                pairs = _pairs(target, value)
                for name, part in pairs:
                    eff.binds.append(self._bind_source(name, part) if part is not None
                                     else Bind(name, "holder", names=frozenset(value_names(value))))

    def _bind_source(self, name: str, value: cst.BaseExpression) -> Bind:
        rid = self.resource_of(value)
        if rid is not None:
            return Bind(name, "new", resource=rid)
        if isinstance(value, cst.Name):
            if value.value in ("True", "False", "None"):
                return Bind(name, "none" if value.value == "None" else "const",
                            const=value.value == "True")
            return Bind(name, "alias", names=frozenset({value.value}))
        if isinstance(value, (cst.Integer, cst.SimpleString)):
            return Bind(name, "const", const=value.value)
        if isinstance(value, (cst.Comparison, cst.UnaryOperation, cst.BooleanOperation)):
            return Bind(name, "cond", names=frozenset(value_names(value)), const=value)
        if isinstance(value, cst.Call) and isinstance(value.func, cst.Attribute) and \
                value.func.attr.value in SELF_RETURNING and isinstance(value.func.value, cst.Name):
            return Bind(name, "alias", names=frozenset({value.func.value.value}))
        held = value_names(value)
        # `repo = Repo(s)` keeps `s` reachable through `repo`, but `repo` is not `s`:
        # its truth and None-ness say nothing about the session
        return Bind(name, "holder", names=frozenset(held)) if held else Bind(name, "other")

    def _scan_expr(self, node: cst.CSTNode, eff: Effects) -> None:
        """Closes, uses and hand-overs inside an expression or small statement."""
        awaited: set[int] = set()
        called: set[int] = set()
        for n in _walk_expr(node):
            if isinstance(n, cst.Await) and isinstance(n.expression, cst.Call):
                awaited.add(id(n.expression))
            elif isinstance(n, cst.Arg) and isinstance(n.value, cst.Call):
                # `wait_for(s.close(), 5)`, `shield(...)`: the callee runs the coroutine
                awaited.add(id(n.value))
            if isinstance(n, cst.Call):
                called.add(id(n.func))
                self._call(n, eff, id(n) in awaited)
            elif isinstance(n, cst.Attribute) and isinstance(n.value, cst.Name):
                name = n.value.value
                if n.attr.value in CLOSE_METHODS:
                    if id(n) not in called and not (isinstance(node, cst.Expr) and node.value is n):
                        eff.closes.add(name)  # `stack.callback(s.close)`: a close registered
                elif n.attr.value not in _INERT_ATTRIBUTES:
                    eff.uses.add(name)
            elif isinstance(n, cst.Yield) and isinstance(n.value, cst.BaseExpression):
                eff.escapes |= value_names(n.value)
            elif isinstance(n, cst.NamedExpr) and isinstance(n.target, cst.Name):
                eff.binds.append(self._bind_source(n.target.value, n.value))
            elif isinstance(n, cst.Lambda):
                # a lambda that closes a session is a close handed to whoever calls it
                eff.closes |= {m.value.value for m in walk(n.body) if isinstance(m, cst.Attribute)
                               and m.attr.value in CLOSE_METHODS and isinstance(m.value, cst.Name)}

    def _call(self, call: cst.Call, eff: Effects, awaited: bool) -> None:
        func = call.func
        args = [a.value for a in call.args]
        passed: set[str] = set()
        for a in args:
            passed |= value_names(a)
        callee = func.attr.value if isinstance(func, cst.Attribute) else dotted(func) or ""
        if callee not in ENTER_METHODS | STORE_METHODS and not callee[:1].isupper():
            eff.uses |= passed  # the callee may run SQL on it (a constructor only keeps it)
        for a in args:
            if isinstance(a, cst.Name) and a.value in self.local_closers:
                eff.closes |= self.local_closers[a.value]  # a closing callback handed on
        if isinstance(func, cst.Name):
            eff.invokes.add(func.value)
            if func.value in self.local_closers:
                eff.closes |= self.local_closers[func.value]
                return
        if isinstance(func, cst.Attribute):
            method = func.attr.value
            if method in CLOSE_METHODS and isinstance(func.value, cst.Name):
                (eff.closes if awaited else eff.sync_closes).add(func.value.value)
                return
            if method in ENTER_METHODS:
                eff.closes |= passed
                return
            if method in _HANDOFF_METHODS:
                eff.escapes |= passed
                return
            if method in STORE_METHODS:
                receiver = self.value(func.value)
                if receiver is None or not receiver.is_session_like:
                    if isinstance(func.value, cst.Name) and func.value.value in self.local_containers:
                        eff.binds.append(Bind(func.value.value, "add", names=frozenset(passed)))
                    else:
                        eff.escapes |= passed
                    return
        name = dotted(func)
        if name == "setattr":
            for a in args[2:]:
                eff.escapes |= value_names(a)
            return
        if name is not None and self.index.origin(name, self.scope) in _HANDOFF_CALLS:
            eff.escapes |= passed
            return
        fv = self.value(func) if isinstance(func, (cst.Name, cst.Attribute)) else None
        if fv is None:
            return
        if fv.kind is Kind.CLOSE_ALL:
            eff.close_all = True
        elif fv.kind is Kind.CLOSER:
            eff.closes |= passed
        elif fv.kind in (Kind.FUNCTION, Kind.SESSION_FUNCTION, Kind.PROVIDER):
            summary = self.index.function_summary(fv.ref)
            if summary is None or (summary.is_async and not awaited):
                return  # an un-awaited coroutine runs nothing
            params = list(summary.params)
            if isinstance(func, cst.Attribute) and params and self._is_bound_method(func):
                params = params[1:]
            for i, arg in enumerate(call.args):
                if arg.star:
                    continue
                pname = arg.keyword.value if arg.keyword is not None else (params[i] if i < len(params) else None)
                if pname is None:
                    continue
                if pname in summary.closes_params:
                    eff.closes |= value_names(arg.value)
                elif pname in summary.stores_params:
                    eff.escapes |= value_names(arg.value)

    def _is_bound_method(self, func: cst.Attribute) -> bool:
        base = self.value(func.value)
        return base is not None and base.kind is Kind.INSTANCE


_PYTEST_FIXTURES = frozenset({"pytest.fixture", "pytest_asyncio.fixture"})


# ---- tree helpers -------------------------------------------------------------------------------
def _walk_expr(node: cst.CSTNode) -> Iterator[cst.CSTNode]:
    """Nodes of a statement or expression, not entering nested scopes or compound bodies."""
    return walk_scope(node, into_blocks=False)


def _direct_statements(func: cst.FunctionDef) -> Iterator[cst.CSTNode]:
    """Statements of the function's own body (any depth), not of nested scopes."""
    stack: list[cst.CSTNode] = [func.body]
    while stack:
        n = stack.pop()
        if isinstance(n, (cst.FunctionDef, cst.ClassDef)) and n is not func:
            yield n
            continue
        if isinstance(n, (cst.BaseExpression, cst.SimpleStatementLine)):
            continue
        stack.extend(children(n))


def _target_names(target: cst.BaseExpression) -> list[str]:
    return sorted(bound_names(target))


def _literal_elements(node: cst.BaseExpression) -> frozenset[str]:
    if isinstance(node, (cst.Tuple, cst.List, cst.Set)):
        return frozenset(el.value.value for el in node.elements if isinstance(el.value, cst.Name))
    return frozenset()


def _pairs(target: cst.BaseExpression, value: cst.BaseExpression) -> list[tuple[str, Optional[cst.BaseExpression]]]:
    """`a, b = x, y` pairs names with values; other unpacking binds each name to the whole."""
    if isinstance(target, (cst.Tuple, cst.List)) and isinstance(value, (cst.Tuple, cst.List)) and \
            len(target.elements) == len(value.elements) and \
            all(isinstance(e.value, cst.Name) for e in target.elements):
        return [(t.value.value, v.value)  # type: ignore[attr-defined]
                for t, v in zip(target.elements, value.elements)]
    return [(name, None) for name in _target_names(target)]
