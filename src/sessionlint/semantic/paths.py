"""The path analysis: a forward walk of the flow graph over sets of path states.

A path state maps local names to the resources (creation sites) they may hold, records each
resource's status, the branch conditions taken and local flags bound to constants or to a
condition (`should_close = session is None`). That is enough path sensitivity for
`if own: s = Session()` ... `if own: s.close()`, `close = True` flags and
`s = None` ... `if s is not None: s.close()`. Only conditions that are tested more than once
(or saved in a flag) are remembered, so independent `if`s do not multiply the states.
"""
from __future__ import annotations

import enum
from dataclasses import dataclass
from typing import Iterator, Optional

import libcst as cst

from . import cfg as flow
from .effects import Bind, Effects, FunctionFacts
from .facts import all_names, code

NONE = -1  # pseudo resource: the name is bound to None
_MAX_STATES = 256


class Status(enum.IntEnum):
    OPEN = 1  # created, no SQL yet: holds no connection (autobegin has not begun)
    ACTIVE = 2  # used: holds a connection and a transaction until closed
    CLOSED = 3
    ESCAPED = 4


HOLDING = (Status.OPEN, Status.ACTIVE)


@dataclass(frozen=True)
class PathState:
    env: frozenset  # (name, frozenset[resource id])
    status: frozenset  # (resource id, Status)
    conds: frozenset  # (condition key, bool)
    flags: frozenset  # (name, constant or ("cond", key))
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


def _parts(test: cst.BaseExpression) -> Iterator[cst.BaseExpression]:
    """A condition and the sub-conditions `not`/`and`/`or` are made of."""
    if isinstance(test, cst.UnaryOperation) and isinstance(test.operator, cst.Not):
        yield from _parts(test.expression)
        return
    yield test
    if isinstance(test, cst.BooleanOperation):
        yield from _parts(test.left)
        yield from _parts(test.right)


class PathAnalysis:
    def __init__(self, facts: FunctionFacts, graph: flow.CFG) -> None:
        self.facts = facts
        self.graph = graph
        self.effects: dict[int, Effects] = {}
        self.cond_names: dict[str, set[str]] = {}
        self.cond_exprs: dict[str, cst.BaseExpression] = {}
        self.lost: set[int] = set()
        self.exit_states: list[PathState] = []
        self.raise_states: list[PathState] = []
        self.is_async = {c.id: c.value.is_async for c in facts.creations}
        self.is_connection = {c.id: c.value.kind.value == "connection" for c in facts.creations}
        self.tracked = self._tracked_keys()

    def _tracked_keys(self) -> set[str]:
        seen: dict[str, set[int]] = {}
        for node in self.graph.nodes:
            if node.kind == flow.COND and isinstance(node.ast, cst.BaseExpression):
                for part in _parts(node.ast):
                    seen.setdefault(self._key(part), set()).add(id(node.ast))
        tracked = {k for k, places in seen.items() if len(places) > 1}
        for node in self.graph.nodes:
            if node.ast is not None and node.kind == flow.STMT:
                for b in self._effects(node).binds:
                    if b.how == "cond" and isinstance(b.const, cst.BaseExpression):
                        tracked.add(self._key(b.const))
        return tracked

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
                        out = PathState(out.env, out.status, frozenset(), out.flags, out.holders)
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
            if node.kind == flow.COND and label in (flow.TRUE, flow.FALSE) and \
                    isinstance(node.ast, cst.BaseExpression):
                branched = self._branch(normal, node.ast, label == flow.TRUE)
                if branched is not None:
                    yield target, branched
                continue
            yield target, normal

    # ---- effects on a state -------------------------------------------------------------
    def _apply(self, state: PathState, eff: Effects, binds: bool) -> PathState:
        if not (eff.closes or eff.sync_closes or eff.escapes or eff.uses or eff.invokes or eff.close_all or
                eff.binds or (binds and eff.late_closes)):
            return state
        m = _Mutable(state)
        for name in eff.uses | eff.invokes:
            if name in m.holders and name not in eff.invokes:
                continue  # `pool.append(...)` uses the list, not the sessions in it
            for rid in m.env.get(name, ()):
                if m.status.get(rid) is Status.OPEN:
                    m.status[rid] = Status.ACTIVE
        self._close(m, eff.closes)
        for name in eff.sync_closes:
            for rid in m.env.get(name, ()):
                if rid != NONE and not self.is_async.get(rid, False):
                    m.status[rid] = Status.CLOSED
        if eff.close_all:
            for rid, st in list(m.status.items()):
                if st in HOLDING:
                    m.status[rid] = Status.CLOSED
        for name in eff.escapes:
            for rid in m.env.get(name, ()):
                if rid != NONE and m.status.get(rid) in HOLDING:
                    m.status[rid] = Status.ESCAPED
        if binds:
            for b in eff.binds:
                self._bind(m, b)
            self._close(m, eff.late_closes)
        else:
            for b in eff.binds:
                if b.how == "add":  # the container holds it before anything can fail
                    self._bind(m, b)
        return m.freeze()

    @staticmethod
    def _close(m: _Mutable, names: set[str]) -> None:
        for name in names:
            for rid in m.env.get(name, ()):
                if rid != NONE:
                    m.status[rid] = Status.CLOSED

    def _bind(self, m: _Mutable, b: Bind) -> None:
        if b.how == "add":
            held: set[int] = set(m.env.get(b.name, frozenset()))
            for n in b.names:
                held |= m.env.get(n, frozenset())
            held.discard(NONE)
            if held:
                m.env[b.name] = frozenset(held)
                m.holders.add(b.name)
            return
        if b.how == "new":
            new: frozenset[int] = frozenset({b.resource})
        elif b.how in ("alias", "holder"):
            gathered: set[int] = set()
            for n in b.names:
                gathered |= m.env.get(n, frozenset())
            gathered.discard(NONE)
            new = frozenset(gathered)
        elif b.how == "none":
            new = frozenset({NONE})
        else:
            new = frozenset()
        old = m.env.pop(b.name, frozenset())
        if new:
            m.env[b.name] = new
        for rid in old - new:
            if rid != NONE and m.status.get(rid) is Status.ACTIVE and \
                    not any(rid in held_ for held_ in m.env.values()):
                self.lost.add(rid)
        if b.how == "new":
            m.status[b.resource] = Status.ACTIVE if self.is_connection.get(b.resource) else Status.OPEN
        if b.how in ("const", "none"):
            m.flags[b.name] = b.const
        elif b.how == "cond" and isinstance(b.const, cst.BaseExpression):
            m.flags[b.name] = ("cond", self._key(b.const))
        else:
            m.flags.pop(b.name, None)
        if b.how == "holder" and new:
            m.holders.add(b.name)
        else:
            m.holders.discard(b.name)
        for key in [k for k in m.conds if b.name in self.cond_names.get(k, ())]:
            del m.conds[key]
        for flag, value in list(m.flags.items()):
            # a flag saved from a condition on this name no longer says anything about it
            if isinstance(value, tuple) and b.name in self.cond_names.get(value[1], ()) and flag != b.name:
                del m.flags[flag]

    # ---- conditions ---------------------------------------------------------------------
    def _key(self, test: cst.BaseExpression) -> str:
        key = code(test).strip()
        if key not in self.cond_names:
            self.cond_names[key] = all_names(test)
            self.cond_exprs[key] = test
        return key

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
        if isinstance(test, cst.Name):
            flag = m.flags.get(test.value)
            if isinstance(flag, tuple):
                expr = self.cond_exprs.get(flag[1])
                if expr is not None:
                    self._assume(m, expr, want)
                m.flags[test.value] = want
                return
        key = self._key(test)
        for name, flag in list(m.flags.items()):
            if flag == ("cond", key):
                m.flags[name] = want  # `should_close = s is None`; now we know which
        if key in self.tracked:
            m.conds[key] = want

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
                flag = flags[test.value]
                if isinstance(flag, tuple):
                    expr = self.cond_exprs.get(flag[1])
                    return self._truth(state, expr) if expr is not None else None
                return bool(flag)
            held = dict(state.env).get(test.value)
            if held and test.value not in state.holders:
                return None if NONE in held and len(held) > 1 else NONE not in held
        if isinstance(test, cst.Comparison) and len(test.comparisons) == 1:
            subject: cst.BaseExpression = test.left
            if isinstance(subject, cst.NamedExpr):
                subject = subject.target  # `(s := Session()) is not None`
            comp = test.comparisons[0]
            if isinstance(subject, cst.Name) and isinstance(comp.comparator, cst.Name) and \
                    comp.comparator.value == "None":
                is_none = self._is_none(state, subject.value)
                if is_none is not None:
                    if isinstance(comp.operator, (cst.Is, cst.Equal)):
                        return is_none
                    if isinstance(comp.operator, (cst.IsNot, cst.NotEqual)):
                        return not is_none
        return dict(state.conds).get(self._key(test))

    def _is_none(self, state: PathState, name: str) -> Optional[bool]:
        flags = dict(state.flags)
        if name in flags and not isinstance(flags[name], tuple):
            return flags[name] is None
        held = dict(state.env).get(name)
        if not held or (NONE in held and len(held) > 1) or name in state.holders:
            return None
        return NONE in held
