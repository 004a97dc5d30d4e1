"""Lifecycle of the sessions and connections a function owns: the facts rules read.

`analyse` finds the function's creation sites (`effects.FunctionFacts`), runs the path
analysis (`paths.PathAnalysis`) when there are any, and checks its session-yielding generators
(`providers`). A resource that reaches the normal exit holding a connection, or is rebound or
deleted while holding one, leaks (SES101); one that does so only on an exception path is a close
that is not guaranteed (SES102). A session that never ran SQL holds no connection (autobegin
has not begun), so leaving it unclosed costs nothing and is not reported.
"""
from __future__ import annotations

from dataclasses import dataclass
from typing import Callable, Optional

import libcst as cst

from . import cfg as flow
from .effects import Creation, FunctionFacts
from .facts import FunctionInfo, code
from .index import ProjectIndex, Scope
from .paths import PathAnalysis, Status
from .providers import SessionYield, session_yields
from .values import Kind, Value

__all__ = ["Lifecycle", "Resource", "SessionYield", "analyse"]


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


def short_code(node: cst.CSTNode, limit: int = 30) -> str:
    text = " ".join(code(node).split())
    return text if len(text) <= limit else text[: limit - 3] + "..."


@dataclass
class Lifecycle:
    resources: list[Resource]
    yields: list[SessionYield]


def _resource(c: Creation) -> Resource:
    return Resource(c.id, c.node, c.name, c.value)


def analyse(info: FunctionInfo, index: ProjectIndex, scope: Scope,
            graph: Optional[Callable[[], flow.CFG]] = None) -> Lifecycle:
    facts = FunctionFacts(info, index, scope)
    resources = [_resource(c) for c in facts.creations]
    if resources:
        paths = PathAnalysis(facts, graph() if graph is not None else flow.build(info.node))
        paths.run()
        for res in resources:
            res.leaks_normal = any(dict(s.status).get(res.id) is Status.ACTIVE for s in paths.exit_states)
            res.leaks_exc = any(dict(s.status).get(res.id) is Status.ACTIVE for s in paths.raise_states)
            if res.id in paths.lost:
                res.lost = res.leaks_normal = True
    for c in facts.immediate:
        res = _resource(c)
        res.leaks_normal = True
        resources.append(res)
    yields = session_yields(facts) if info.summary.is_generator else []
    return Lifecycle(resources, yields)
