"""Generators that yield a session they created, and whether each `yield` is protected.

A `yield` hands control to the consumer; if the consumer raises (a FastAPI endpoint, the body
of a `with` on a `@contextmanager`) the exception is thrown in at the `yield`, and an unfinished
generator gets `GeneratorExit` there. Only a `try` whose `finally` closes the session, a handler
for `BaseException` that closes it, or a `with` that manages it covers every way out.
"""
from __future__ import annotations

from dataclasses import dataclass
from typing import Iterator, Union

import libcst as cst

from .cfg import catches_base
from .effects import ENTER_METHODS, Effects, FunctionFacts
from .facts import value_names
from .walk import children, walk

Guard = Union[cst.Try, cst.TryStar, cst.With]


@dataclass
class SessionYield:
    node: cst.Yield
    name: str  # the local name yielded ("" when the yield creates the session itself)
    protected: bool

    @property
    def receiver(self) -> str:
        from .lifecycle import short_code

        value = self.node.value
        return self.name or (short_code(value) if isinstance(value, cst.CSTNode) else "")


def session_yields(facts: FunctionFacts) -> list[SessionYield]:
    created = {c.name: c for c in facts.creations}
    aliases = _aliases(facts, set(created))
    out: list[SessionYield] = []
    for y, guards in _yields_with_guards(facts.info.node):
        value = y.value
        if not isinstance(value, cst.BaseExpression):
            continue
        names = value_names(value) & set(aliases)
        if names:
            name = sorted(names)[0]
        elif facts.creation(value) is not None:
            out.append(SessionYield(y, "", False))
            continue
        else:
            continue
        group = aliases[name]
        is_async = created[next(iter(group & set(created)))].value.is_async
        protected = any(_guards(facts, g, group, is_async) for g in guards)
        if not protected and facts.is_pytest_fixture:
            # pytest resumes a fixture for teardown whatever the test did (it never throws the
            # test's exception in), so a close after the yield, or a finalizer, always runs
            protected = _closed_after(facts, y, group, is_async)
        out.append(SessionYield(y, name, protected))
    return out


def _aliases(facts: FunctionFacts, created: set[str]) -> dict[str, set[str]]:
    """Each created name and plain copies of it (`db = s`), mapped to the whole group."""
    groups: dict[str, set[str]] = {n: {n} for n in created}
    for name, irs in facts.info.summary.assigns.items():
        for ir in irs:
            if ir is not None and ir[0] == "name" and ir[1] in groups and name not in groups:
                group = groups[ir[1]]
                group.add(name)
                groups[name] = group
    return groups


def closes_in(facts: FunctionFacts, node: cst.CSTNode, names: set[str], is_async: bool) -> bool:
    """Does any statement under `node` close one of `names` (directly, by a helper, by `with`)?"""
    eff = Effects()
    for n in walk(node):
        if isinstance(n, cst.SimpleStatementLine):
            for small in n.body:
                facts._scan_expr(small, eff)
        elif isinstance(n, cst.With):
            facts._with(n, eff)
        elif isinstance(n, (cst.If, cst.While)):
            facts._scan_expr(n.test, eff)
    closed = eff.closes | eff.late_closes | (set() if is_async else eff.sync_closes)
    return bool(closed & names) or eff.close_all


def _guards(facts: FunctionFacts, stmt: Guard, names: set[str], is_async: bool) -> bool:
    if isinstance(stmt, cst.With):
        eff = Effects()
        facts._with(stmt, eff)
        if (eff.closes | eff.late_closes) & names:
            return True
        # `with ExitStack() as stack: stack.enter_context(s)` / `stack.callback(s.close)`
        stacks = {item.asname.name.value for item in stmt.items
                  if item.asname is not None and isinstance(item.asname.name, cst.Name)}
        for n in walk(stmt.body):
            if isinstance(n, cst.Call) and isinstance(n.func, cst.Attribute) and \
                    n.func.attr.value in ENTER_METHODS and isinstance(n.func.value, cst.Name) and \
                    n.func.value.value in stacks:
                mentioned = set()
                for arg in n.args:
                    mentioned |= value_names(arg.value)
                    if isinstance(arg.value, cst.Attribute) and isinstance(arg.value.value, cst.Name):
                        mentioned.add(arg.value.value.value)
                if mentioned & names:
                    return True
        return False
    if stmt.finalbody is not None and closes_in(facts, stmt.finalbody.body, names, is_async):
        return True
    return any(catches_base(h) and closes_in(facts, h.body, names, is_async) for h in stmt.handlers)


def _closed_after(facts: FunctionFacts, y: cst.Yield, names: set[str], is_async: bool) -> bool:
    body = facts.info.node.body
    statements = list(_statements(body))
    position = next((i for i, stmt in enumerate(statements) if any(n is y for n in walk(stmt))), None)
    if position is None:
        return False
    after = any(closes_in(facts, stmt, names, is_async) for stmt in statements[position:])
    # `request.addfinalizer(s.close)` before the yield registers the close
    registered = any(isinstance(n, cst.Attribute) and n.attr.value in ("close", "aclose") and
                     isinstance(n.value, cst.Name) and n.value.value in names and
                     _passed_as_argument(stmt, n)
                     for stmt in statements[:position] for n in walk(stmt))
    return after or registered


def _passed_as_argument(stmt: cst.CSTNode, attribute: cst.Attribute) -> bool:
    return any(isinstance(n, cst.Arg) and n.value is attribute for n in walk(stmt))


def _statements(body: cst.BaseSuite) -> Iterator[cst.CSTNode]:
    """Top-level statements of a function body, in order."""
    if isinstance(body, cst.IndentedBlock):
        yield from body.body
    else:
        yield body


def _yields_with_guards(func: cst.FunctionDef) -> Iterator[tuple[cst.Yield, list[Guard]]]:
    """Each `yield` of the function with the `try` bodies and `with` blocks around it."""
    def visit(node: cst.CSTNode, guards: list[Guard]) -> Iterator[tuple[cst.Yield, list[Guard]]]:
        if isinstance(node, (cst.FunctionDef, cst.ClassDef, cst.Lambda)) and node is not func:
            return
        if isinstance(node, cst.Yield):
            yield node, guards
        if isinstance(node, (cst.Try, cst.TryStar)):
            yield from visit(node.body, guards + [node])
            for h in node.handlers:
                yield from visit(h, guards)
            for part in (node.orelse, node.finalbody):
                if part is not None:
                    yield from visit(part, guards)
            return
        if isinstance(node, cst.With):
            for item in node.items:
                yield from visit(item, guards)
            yield from visit(node.body, guards + [node])
            return
        for child in children(node):
            yield from visit(child, guards)
    yield from visit(func.body, [])
