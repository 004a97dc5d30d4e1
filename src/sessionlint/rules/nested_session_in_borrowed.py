from __future__ import annotations

from typing import Iterator, Optional

import libcst as cst

from ..model import FileModel
from ..rule import Report, Rule
from ..semantic.values import Kind, Own
from ..semantic.walk import walk, walk_scope


class NestedSessionInBorrowed(Rule):
    """## What it does
    Checks for functions that receive a session and open another one from a factory.

    ## Why is this bad?
    The new session has its own connection and its own transaction. It does not see the rows
    the caller's session has flushed but not committed, its commit is independent of the
    caller's rollback, and under a small pool the two connections can deadlock each other or
    exhaust the pool (`QueuePool limit reached`) while the outer one waits.

    ## Example
    ```python
    from sqlalchemy.orm import Session, sessionmaker

    SessionLocal = sessionmaker()

    def add_audit(session: Session, event):
        with SessionLocal() as audit:
            audit.add(event)
            audit.commit()
    ```

    Use instead:
    ```python
    from sqlalchemy.orm import Session, sessionmaker

    SessionLocal = sessionmaker()

    def add_audit(session: Session, event):
        session.add(event)
    ```

    ## Known problems
    A deliberately independent transaction (an audit log that must survive the caller's
    rollback) looks the same; mark it with `# noqa: SES204`.

    ## References
    - [Session basics: is the session a cache? (one session per unit of work)](https://docs.sqlalchemy.org/en/20/orm/session_basics.html#session-faq)
    """

    code = "SES204"
    name = "nested-session-in-borrowed"
    message = "New session opened in `{function}`, which already received `{param}`"
    hint = "Use the session passed in (`{param}`), or let the caller open one"

    def check(self, model: FileModel) -> Iterator[Report]:
        creators = model.index.creator_names()
        for info in model.functions:
            if not info.call_names & creators:
                continue  # nothing called here can open a session
            scope = model.scope_of(info)
            borrowed = [p for p in info.summary.params
                        if _is_borrowed_session(model.index.lookup(p, scope))]
            if not borrowed:
                continue
            fallback = _fallback_calls(info.node, set(borrowed))
            handed_on = _handed_on_calls(info.node)
            finished_at = _first_finish(info.node, set(borrowed))
            for position, call in enumerate(_own_calls(info.node)):
                if id(call) in fallback or id(call) in handed_on:
                    continue
                if finished_at is not None and position > finished_at:
                    continue  # the borrowed session was committed/closed first: a hand-over
                value = model.index.eval(call, scope)
                if value is not None and value.kind is Kind.SESSION and value.own in (Own.OWNED, Own.MANAGED):
                    yield Report(call, {"function": info.node.name.value, "param": borrowed[0]}, info.node)


def _is_borrowed_session(value: object) -> bool:
    return getattr(value, "kind", None) is Kind.SESSION and getattr(value, "own", None) is Own.BORROWED


def _own_calls(func: cst.FunctionDef) -> Iterator[cst.Call]:
    """Calls of the function's own scope, in source order."""
    for n in walk_scope(func.body):
        if isinstance(n, cst.Call):
            yield n


def _first_finish(func: cst.FunctionDef, params: set[str]) -> Optional[int]:
    """Position (in `_own_calls` order) of the first `param.commit()`/`close()`/`rollback()`."""
    for position, call in enumerate(_own_calls(func)):
        f = call.func
        if isinstance(f, cst.Attribute) and f.attr.value in ("commit", "close", "rollback") and \
                isinstance(f.value, cst.Name) and f.value.value in params:
            return position
    return None


def _handed_on_calls(func: cst.FunctionDef) -> set[int]:
    """New sessions the function returns or yields: it is their provider, not a second user."""
    names: dict[str, list[int]] = {}
    out: set[int] = set()
    for n in walk_scope(func.body):
        if isinstance(n, cst.Assign) and isinstance(n.value, cst.Call):
            for t in n.targets:
                if isinstance(t.target, cst.Name):
                    names.setdefault(t.target.value, []).append(id(n.value))
    for n in walk_scope(func.body):
        value = n.value if isinstance(n, (cst.Return, cst.Yield)) else None
        if isinstance(value, cst.Name):
            out.update(names.get(value.value, []))
        elif isinstance(value, cst.Call):
            out.add(id(value))
    return out


def _fallback_calls(func: cst.FunctionDef, params: set[str]) -> set[int]:
    """Calls whose session is assigned to the parameter itself: `session = session or Factory()`."""
    out: set[int] = set()
    for n in walk(func.body):
        targets: list[cst.BaseExpression] = []
        value = None
        if isinstance(n, cst.Assign):
            targets, value = [t.target for t in n.targets], n.value
        elif isinstance(n, (cst.AnnAssign, cst.NamedExpr)):
            targets, value = [n.target], n.value
        elif isinstance(n, cst.WithItem) and n.asname is not None:
            targets, value = [n.asname.name], n.item  # `with Factory() as session:` shadows it
        if value is None:
            continue
        own_name = any(isinstance(t, cst.Name) and t.value in params for t in targets)
        # `s = session if session is not None else Factory()`: a fallback under another name
        conditional = isinstance(value, (cst.IfExp, cst.BooleanOperation)) and \
            any(isinstance(m, cst.Name) and m.value in params for m in walk(value))
        if own_name or conditional:
            out.update(id(c) for c in walk(value) if isinstance(c, cst.Call))
    return out
