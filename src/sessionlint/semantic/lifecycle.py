"""Lifecycle of the sessions and connections a function owns, over every path of its CFG.

Each creation site of an owned session is a resource. A forward analysis over the flow graph
carries a set of path states; a path state maps local names to the resources they may hold,
records each resource's status (open, closed, escaped), the branch conditions taken (so that
`if own: s = Session()` ... `if own: s.close()` is understood) and local flags bound to
constants. Rules read the outcome: which resources can reach the normal exit open, which only
the exceptional exit, and which were lost (rebound or deleted) while open.
"""
from __future__ import annotations

import enum
from dataclasses import dataclass, field
from typing import Iterator, Optional, Union

import libcst as cst

from . import cfg as flow
from .facts import SELF_RETURNING, STORE_METHODS, FunctionInfo, all_names, code, dotted, value_names
from .index import ProjectIndex, Scope
from .values import CLOSE_METHODS, Kind, Own, Value
from .walk import children, walk

NONE = -1  # pseudo resource: the name is bound to None
_MAX_STATES = 256

# Calls that take over closing of their argument.
_ENTER_METHODS = frozenset({"enter_context", "enter_async_context", "push", "push_async_exit", "callback",
                            "push_async_callback"})


class Status(enum.IntEnum):
    OPEN = 1
    CLOSED = 2
    ESCAPED = 3


@dataclass
class Resource:
    id: int
    node: cst.Call  # the creation call (reported position)
    name: str  # the local name it was bound to, or "" when never bound
    value: Value
    leaks_normal: bool = False
    leaks_exc: bool = False
    lost: bool = False  # rebound or deleted while open

    @property
    def kind_word(self) -> str:
        return "Connection" if self.value.kind is Kind.CONNECTION else "Session"

    @property
    def receiver(self) -> str:
        """How the code refers to it: its local name, or the creating expression."""
        return self.name or short_code(self.node)


@dataclass
class Bind:
    name: str
    how: str  # "new" | "alias" | "holder" | "none" | "const" | "other"
    resource: int = -1
    names: frozenset[str] = frozenset()
    const: object = None


@dataclass
class Effects:
    closes: set[str] = field(default_factory=set)
    escapes: set[str] = field(default_factory=set)
    binds: list[Bind] = field(default_factory=list)


@dataclass
class SessionYield:
    node: cst.Yield
    name: str
    protected: bool

    @property
    def receiver(self) -> str:
        value = self.node.value
        return self.name or (short_code(value) if isinstance(value, cst.CSTNode) else "")


def short_code(node: cst.CSTNode, limit: int = 30) -> str:
    text = " ".join(code(node).split())
    return text if len(text) <= limit else text[: limit - 3] + "..."


@dataclass
class Lifecycle:
    resources: list[Resource]
    yields: list[SessionYield]


# ---- the function's own facts ---------------------------------------------------------------
class _FunctionFacts:
    """Creation sites, per-node effects and condition keys of one function."""

    def __init__(self, info: FunctionInfo, index: ProjectIndex, scope: Scope) -> None:
        self.info = info
        self.index = index
        self.scope = scope
        self.resources: list[Resource] = []
        self._creations: dict[int, int] = {}  # id(call node) -> resource id
        self.immediate: list[Resource] = []
        self.escape_names = set(info.globals) | info.outer_names
        self._scan_creations()

    def value(self, node: cst.BaseExpression) -> Optional[Value]:
        return self.index.eval(node, self.scope)

    def creation(self, node: cst.BaseExpression) -> Optional[Value]:
        """The owned session/connection this expression creates, if any."""
        inner = node.expression if isinstance(node, cst.Await) else node
        if not isinstance(inner, cst.Call):
            return None
        v = self.value(inner)
        if v is not None and v.is_session_like and v.own is Own.OWNED:
            return v
        return None

    def _scan_creations(self) -> None:
        for name, value in self.info.bound_calls:
            if name not in self.escape_names:
                v = self.creation(value)
                if v is not None:
                    call = value.expression if isinstance(value, cst.Await) else value
                    self._new_resource(call, name, v)  # type: ignore[arg-type]
        # `Session(engine).query(...)`: created, used, and held by nobody
        for call in self.info.receiver_calls:
            v = self.creation(call)
            if v is not None:
                res = Resource(len(self.resources) + len(self.immediate) + 10_000, call, "", v, leaks_normal=True)
                self.immediate.append(res)

    def _new_resource(self, call: cst.Call, name: str, v: Value) -> None:
        res = Resource(len(self.resources), call, name, v)
        self.resources.append(res)
        self._creations[id(call)] = res.id

    def resource_of(self, node: cst.BaseExpression) -> Optional[int]:
        inner = node.expression if isinstance(node, cst.Await) else node
        return self._creations.get(id(inner))

    # ---- effects of a node --------------------------------------------------------------
    def effects(self, node: flow.Node) -> Effects:
        eff = Effects()
        ast = node.ast
        if ast is None:
            return eff
        if node.kind == flow.WITH:
            assert isinstance(ast, cst.With)
            for item in ast.items:
                self._scan_expr(item.item, eff)
                target = item.item
                if isinstance(target, cst.Call) and self.value(target.func) is not None and \
                        self.value(target.func).kind is Kind.CLOSING and target.args:  # type: ignore[union-attr]
                    target = target.args[0].value
                if isinstance(target, cst.Name):
                    eff.closes.add(target.value)
                if item.asname is not None:
                    for name in _target_names(item.asname.name):
                        eff.binds.append(Bind(name, "other"))
            return eff
        if node.kind == flow.LOOP:
            assert isinstance(ast, cst.For)
            self._scan_expr(ast.iter, eff)
            for name in _target_names(ast.target):
                eff.binds.append(Bind(name, "other"))
            return eff
        if node.kind == flow.HANDLER:
            assert isinstance(ast, cst.ExceptHandler)
            if ast.name is not None:
                for name in _target_names(ast.name.name):
                    eff.binds.append(Bind(name, "other"))
            return eff
        if node.kind == flow.COND:
            self._scan_expr(ast.subject if isinstance(ast, cst.Match) else ast, eff)
            return eff
        if isinstance(ast, (cst.FunctionDef, cst.ClassDef)):
            self._scan_closes(ast, eff)
            eff.binds.append(Bind(ast.name.value, "holder", names=frozenset(all_names(ast.body))))
            return eff
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

    def _assign(self, ast: Union[cst.Assign, cst.AnnAssign, cst.AugAssign], eff: Effects) -> None:
        value = ast.value
        if value is None:
            return
        targets = [t.target for t in ast.targets] if isinstance(ast, cst.Assign) else [ast.target]
        for target in targets:
            if isinstance(target, cst.Name):
                if target.value in self.escape_names:
                    eff.escapes |= value_names(value)
                elif isinstance(ast, cst.AugAssign):
                    eff.binds.append(Bind(target.value, "holder",
                                          names=frozenset(value_names(value) | {target.value})))
                else:
                    eff.binds.append(self._bind_source(target.value, value))
            elif isinstance(target, (cst.Attribute, cst.Subscript)):
                eff.escapes |= value_names(value)
            else:
                held = frozenset(value_names(value))
                for name in _target_names(target):
                    eff.binds.append(Bind(name, "holder", names=held))

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
        if isinstance(value, cst.Call) and isinstance(value.func, cst.Attribute) and \
                value.func.attr.value in SELF_RETURNING and isinstance(value.func.value, cst.Name):
            return Bind(name, "alias", names=frozenset({value.func.value.value}))
        held = value_names(value)
        # `repo = Repo(s)` keeps `s` reachable through `repo`, but `repo` is not `s`:
        # its truth and None-ness say nothing about the session
        return Bind(name, "holder", names=frozenset(held)) if held else Bind(name, "other")

    def _scan_closes(self, node: cst.CSTNode, eff: Effects) -> None:
        for n in _walk_all(node):
            if isinstance(n, cst.Attribute) and n.attr.value in CLOSE_METHODS and isinstance(n.value, cst.Name):
                eff.closes.add(n.value.value)

    def _scan_expr(self, node: cst.CSTNode, eff: Effects) -> None:
        """Closes and hand-overs inside an expression or small statement."""
        self._scan_closes(node, eff)
        for n in _walk_expr(node):
            if isinstance(n, cst.Yield) and isinstance(n.value, cst.BaseExpression):
                eff.escapes |= value_names(n.value)
            elif isinstance(n, cst.NamedExpr) and isinstance(n.target, cst.Name):
                eff.binds.append(self._bind_source(n.target.value, n.value))
            elif isinstance(n, cst.Call):
                self._call(n, eff)

    def _call(self, call: cst.Call, eff: Effects) -> None:
        func = call.func
        args = [a.value for a in call.args]
        if isinstance(func, cst.Attribute):
            method = func.attr.value
            if method in _ENTER_METHODS:
                for a in args:
                    eff.closes |= value_names(a)
                return
            if method in STORE_METHODS:
                receiver = self.value(func.value)
                if receiver is None or not receiver.is_session_like:
                    for a in args:
                        eff.escapes |= value_names(a)
                    return
        if dotted(func) == "setattr":
            for a in args[2:]:
                eff.escapes |= value_names(a)
            return
        fv = self.value(func) if isinstance(func, (cst.Name, cst.Attribute)) else None
        if fv is None:
            return
        if fv.kind is Kind.CLOSER:
            for a in args:
                eff.closes |= value_names(a)
            return
        if fv.kind in (Kind.FUNCTION, Kind.SESSION_FUNCTION, Kind.PROVIDER):
            summary = self.index.function_summary(fv.ref)
            if summary is None:
                return
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

    # ---- SES103 ---------------------------------------------------------------------------
    def session_yields(self) -> list[SessionYield]:
        created = {r.name for r in self.resources}
        out: list[SessionYield] = []
        for y, guards in _yields_with_guards(self.info.node):
            value = y.value
            if not isinstance(value, cst.BaseExpression):
                continue
            if isinstance(value, cst.Name) and value.value in created:
                name = value.value
            elif self.creation(value) is not None:
                name = ""
            else:
                continue
            protected = any(_guards(g, name) for g in guards)
            if not protected and name and self._is_pytest_fixture():
                # pytest resumes a fixture for teardown whatever the test did (it never throws
                # the test's exception in), so a close after the yield always runs
                protected = _closed_after(self.info.node, y, name)
            out.append(SessionYield(y, name, protected))
        return out

    def _is_pytest_fixture(self) -> bool:
        for decorator in self.info.summary.decorators:
            head, _, rest = decorator.partition(".")
            origin = self.index.import_origin(head, self.scope)
            full = f"{origin}.{rest}" if rest else origin
            if full in _PYTEST_FIXTURES:
                return True
        return False


_PYTEST_FIXTURES = frozenset({"pytest.fixture", "pytest_asyncio.fixture"})


def _closed_after(func: cst.FunctionDef, y: cst.Yield, name: str) -> bool:
    seen_yield = False
    for n in walk(func.body):
        if n is y:
            seen_yield = True
        elif seen_yield and isinstance(n, cst.Attribute) and n.attr.value in CLOSE_METHODS and \
                isinstance(n.value, cst.Name) and n.value.value == name:
            return True
    return False


def _guards(stmt: Union[cst.Try, cst.TryStar, cst.With], name: str) -> bool:
    """Does this `try` (yield in its body) or `with` close the yielded session on every exit?"""
    if isinstance(stmt, cst.With):
        for item in stmt.items:
            target = item.item
            if isinstance(target, cst.Call) and target.args:
                target = target.args[0].value
            if isinstance(target, cst.Name) and target.value == name:
                return True
        return False
    if stmt.finalbody is None or not name:
        return False
    body = stmt.finalbody.body
    for n in _walk_all(body):
        if isinstance(n, cst.Attribute) and n.attr.value in CLOSE_METHODS and \
                isinstance(n.value, cst.Name) and n.value.value == name:
            return True
        if isinstance(n, cst.Call) and name in {v for a in n.args for v in value_names(a.value)}:
            return True  # handed to a cleanup helper
    return False


# ---- tree walking helpers ---------------------------------------------------------------------
_walk_all = walk


def _walk_expr(node: cst.CSTNode) -> Iterator[cst.CSTNode]:
    """Nodes of a statement or expression, not entering nested scopes or compound bodies."""
    stack = [node]
    while stack:
        n = stack.pop()
        yield n
        if isinstance(n, (cst.Lambda, cst.FunctionDef, cst.ClassDef)) and n is not node:
            continue
        if isinstance(n, (cst.BaseSuite,)) and n is not node:
            continue
        kids = list(children(n))
        kids.reverse()
        stack.extend(kids)


def _target_names(target: cst.BaseExpression) -> list[str]:
    if isinstance(target, cst.Name):
        return [target.value]
    if isinstance(target, (cst.Tuple, cst.List)):
        out: list[str] = []
        for el in target.elements:
            out += _target_names(el.value)
        return out
    if isinstance(target, cst.StarredElement):
        return _target_names(target.value)
    return []


def _yields_with_guards(func: cst.FunctionDef) -> Iterator[tuple[cst.Yield, list]]:
    """Each `yield` of the function with the `try` bodies and `with` blocks around it."""
    def walk_(node: cst.CSTNode, guards: list) -> Iterator[tuple[cst.Yield, list]]:
        if isinstance(node, (cst.FunctionDef, cst.ClassDef, cst.Lambda)) and node is not func:
            return
        if isinstance(node, cst.Yield):
            yield node, guards
        if isinstance(node, (cst.Try, cst.TryStar)):
            yield from walk_(node.body, guards + [node])
            for h in node.handlers:
                yield from walk_(h, guards)
            for part in (node.orelse, node.finalbody):
                if part is not None:
                    yield from walk_(part, guards)
            return
        if isinstance(node, cst.With):
            for item in node.items:
                yield from walk_(item, guards)
            yield from walk_(node.body, guards + [node])
            return
        for child in children(node):
            yield from walk_(child, guards)
    yield from walk_(func.body, [])


# ---- path states ------------------------------------------------------------------------------
@dataclass(frozen=True)
class PathState:
    env: frozenset  # (name, frozenset[resource id])
    status: frozenset  # (resource id, Status)
    conds: frozenset  # (condition key, bool)
    flags: frozenset  # (name, constant)
    holders: frozenset = frozenset()  # names that hold a resource without being it


_START = PathState(frozenset(), frozenset(), frozenset(), frozenset())


class _Mutable:
    def __init__(self, s: PathState) -> None:
        self.env: dict[str, frozenset[int]] = dict(s.env)
        self.status: dict[int, Status] = dict(s.status)
        self.conds: dict[str, bool] = dict(s.conds)
        self.flags: dict[str, object] = dict(s.flags)
        self.holders: set[str] = set(s.holders)

    def freeze(self) -> PathState:
        return PathState(frozenset(self.env.items()), frozenset(self.status.items()),
                         frozenset(self.conds.items()), frozenset(self.flags.items()),
                         frozenset(self.holders))


class _Analysis:
    def __init__(self, facts: _FunctionFacts, graph: flow.CFG) -> None:
        self.facts = facts
        self.graph = graph
        self.effects: dict[int, Effects] = {}
        self.cond_names: dict[str, set[str]] = {}
        self.lost: set[int] = set()
        self.exit_states: list[PathState] = []
        self.raise_states: list[PathState] = []

    def _effects(self, node: flow.Node) -> Effects:
        key = id(node.ast) if node.ast is not None else -node.id
        eff = self.effects.get(key)
        if eff is None:
            eff = self.effects[key] = self.facts.effects(node)
        return eff

    def run(self) -> None:
        nodes = self.graph.nodes
        seen: dict[int, set[PathState]] = {n.id: set() for n in nodes}
        pending: dict[int, list[PathState]] = {self.graph.entry: [_START]}
        order: list[int] = [self.graph.entry]
        while order:
            nid = order.pop(0)
            states = pending.pop(nid, [])
            node = nodes[nid]
            for state in states:
                for target, out in self._transfer(node, state):
                    if len(seen[target]) >= _MAX_STATES:
                        out = PathState(out.env, out.status, frozenset(), frozenset(), out.holders)
                    if out in seen[target]:
                        continue
                    seen[target].add(out)
                    bucket = pending.setdefault(target, [])
                    if not bucket:
                        order.append(target)
                    bucket.append(out)
        self.exit_states = list(seen[self.graph.exit])
        self.raise_states = list(seen[self.graph.raise_exit])

    def _transfer(self, node: flow.Node, state: PathState) -> Iterator[tuple[int, PathState]]:
        if not node.succ:
            return
        eff = self._effects(node)
        normal: Optional[PathState] = None
        exc: Optional[PathState] = None
        for target, label in node.succ:
            if label == flow.EXC:
                if exc is None:
                    exc = self._apply(state, eff, binds=False)
                yield target, exc
                continue
            if normal is None:
                normal = self._apply(state, eff, binds=True)
            if node.kind == flow.COND and label in (flow.TRUE, flow.FALSE) and node.ast is not None \
                    and not isinstance(node.ast, cst.Match):
                branched = self._branch(normal, node.ast, label == flow.TRUE)  # type: ignore[arg-type]
                if branched is not None:
                    yield target, branched
                continue
            yield target, normal

    def _apply(self, state: PathState, eff: Effects, binds: bool) -> PathState:
        if not eff.closes and not eff.escapes and not (binds and eff.binds):
            return state
        m = _Mutable(state)
        for name in eff.closes:
            for rid in m.env.get(name, ()):
                if rid != NONE:
                    m.status[rid] = Status.CLOSED
        for name in eff.escapes:
            for rid in m.env.get(name, ()):
                if rid != NONE and m.status.get(rid) is Status.OPEN:
                    m.status[rid] = Status.ESCAPED
        if binds:
            for b in eff.binds:
                self._bind(m, b)
        return m.freeze()

    def _bind(self, m: _Mutable, b: Bind) -> None:
        if b.how == "new":
            new: frozenset[int] = frozenset({b.resource})
        elif b.how in ("alias", "holder"):
            held: set[int] = set()
            for n in b.names:
                held |= m.env.get(n, frozenset())
            held.discard(NONE)
            new = frozenset(held)
        elif b.how == "none":
            new = frozenset({NONE})
        else:
            new = frozenset()
        old = m.env.pop(b.name, frozenset())
        if new:
            m.env[b.name] = new
        for rid in old - new:
            if rid != NONE and m.status.get(rid) is Status.OPEN and \
                    not any(rid in held_ for held_ in m.env.values()):
                self.lost.add(rid)
        if b.how == "new":
            m.status[b.resource] = Status.OPEN
        if b.how in ("const", "none"):
            m.flags[b.name] = b.const
        else:
            m.flags.pop(b.name, None)
        if b.how == "holder" and new:
            m.holders.add(b.name)
        else:
            m.holders.discard(b.name)
        for key in [k for k in m.conds if b.name in self._names_of(k)]:
            del m.conds[key]

    def _names_of(self, key: str) -> set[str]:
        return self.cond_names.get(key, set())

    # ---- conditions ---------------------------------------------------------------------
    def _branch(self, state: PathState, test: cst.BaseExpression, want: bool) -> Optional[PathState]:
        truth = self._truth(state, test)
        if truth is not None:
            return state if truth == want else None
        m = _Mutable(state)
        self._assume(m, test, want)
        return m.freeze()

    def _assume(self, m: _Mutable, test: cst.BaseExpression, want: bool) -> None:
        if isinstance(test, cst.UnaryOperation) and isinstance(test.operator, cst.Not):
            self._assume(m, test.expression, not want)
            return
        if isinstance(test, cst.BooleanOperation):
            is_and = isinstance(test.operator, cst.And)
            if is_and == want:  # `a and b` true / `a or b` false: both parts known
                self._assume(m, test.left, want)
                self._assume(m, test.right, want)
                return
        key = self._key(test)
        m.conds[key] = want

    def _key(self, test: cst.BaseExpression) -> str:
        key = code(test).strip()
        if key not in self.cond_names:
            self.cond_names[key] = all_names(test)
        return key

    def _truth(self, state: PathState, test: cst.BaseExpression) -> Optional[bool]:
        if isinstance(test, cst.UnaryOperation) and isinstance(test.operator, cst.Not):
            inner = self._truth(state, test.expression)
            return None if inner is None else not inner
        if isinstance(test, cst.BooleanOperation):
            left = self._truth(state, test.left)
            right = self._truth(state, test.right)
            if isinstance(test.operator, cst.And):
                if left is False or right is False:
                    return False
                return True if left and right else None
            if left or right:
                return True
            return False if left is False and right is False else None
        if isinstance(test, cst.Name):
            if test.value in ("True", "False"):
                return test.value == "True"
            flags = dict(state.flags)
            if test.value in flags:
                return bool(flags[test.value])
            held = dict(state.env).get(test.value)
            if held and test.value not in state.holders:
                return None if NONE in held and len(held) > 1 else NONE not in held
        if isinstance(test, cst.Comparison) and len(test.comparisons) == 1 and isinstance(test.left, cst.Name):
            comp = test.comparisons[0]
            if isinstance(comp.comparator, cst.Name) and comp.comparator.value == "None":
                is_none = self._is_none(state, test.left.value)
                if is_none is not None:
                    if isinstance(comp.operator, (cst.Is, cst.Equal)):
                        return is_none
                    if isinstance(comp.operator, (cst.IsNot, cst.NotEqual)):
                        return not is_none
        key = self._key(test)
        conds = dict(state.conds)
        return conds.get(key)

    def _is_none(self, state: PathState, name: str) -> Optional[bool]:
        flags = dict(state.flags)
        if name in flags:
            return flags[name] is None
        held = dict(state.env).get(name)
        if not held or (NONE in held and len(held) > 1) or name in state.holders:
            return None
        return NONE in held


def analyse(info: FunctionInfo, index: ProjectIndex, scope: Scope) -> Lifecycle:
    facts = _FunctionFacts(info, index, scope)
    if facts.resources:
        analysis = _Analysis(facts, flow.build(info.node))
        analysis.run()
        for res in facts.resources:
            for state in analysis.exit_states:
                if dict(state.status).get(res.id) is Status.OPEN:
                    res.leaks_normal = True
            for state in analysis.raise_states:
                if dict(state.status).get(res.id) is Status.OPEN:
                    res.leaks_exc = True
            if res.id in analysis.lost:
                res.lost = True
                res.leaks_normal = True
    yields = facts.session_yields() if info.summary.is_generator else []
    return Lifecycle(facts.resources + facts.immediate, yields)
