"""The semantic model of one file, as rules see it: computed once, shared by every rule."""
from __future__ import annotations

from dataclasses import dataclass, field
from typing import Callable, Iterator, Optional

import libcst as cst

from .semantic import cfg
from .semantic.facts import FunctionInfo, ModuleSummary
from .semantic.index import ProjectIndex, Scope
from .semantic.lifecycle import Lifecycle, analyse
from .semantic.operations import Operations, collect_operations
from .semantic.transactions import GraphIndex


@dataclass
class FileModel:
    module: cst.Module
    summary: ModuleSummary
    functions: list[FunctionInfo]
    index: ProjectIndex
    rule_options: dict[str, dict[str, list[str]]] = field(default_factory=dict)
    module_withs: list[cst.With] = field(default_factory=list)
    _lifecycles: Optional[list[tuple[FunctionInfo, Lifecycle]]] = field(default=None, repr=False)
    _operations: dict[int, Operations] = field(default_factory=dict, repr=False)
    _graphs: dict[int, cfg.CFG] = field(default_factory=dict, repr=False)
    _graph_indexes: dict[int, GraphIndex] = field(default_factory=dict, repr=False)

    def options(self, rule: object) -> dict[str, list[str]]:
        """The rule's `[tool.sessionlint.options.<rule-name>]` table."""
        return self.rule_options.get(getattr(rule, "name", ""), {})

    def scope_of(self, info: FunctionInfo) -> Scope:
        return Scope(self.summary.name, info.qualname, info.class_qualname, info.self_name)

    def lifecycles(self) -> Iterator[tuple[FunctionInfo, Lifecycle]]:
        """Each function with the lifecycle of the sessions it owns (computed on first use)."""
        if self._lifecycles is None:
            self._lifecycles = [(info, analyse(info, self.index, self.scope_of(info), self._graph_of(info)))
                                for info in self.functions]
        return iter(self._lifecycles)

    def operations(self) -> Iterator[tuple[FunctionInfo, Operations]]:
        """Each function with the session method calls in it (computed on first use)."""
        for info in self.functions:
            ops = self._operations.get(id(info.node))
            if ops is None:
                ops = self._operations[id(info.node)] = collect_operations(info, self.index, self.scope_of(info))
            yield info, ops

    def _graph_of(self, info: FunctionInfo) -> Callable[[], cfg.CFG]:
        return lambda: self.graph(info)

    def graph_index(self, info: FunctionInfo) -> GraphIndex:
        """The flow graph with its node lookup, built once per function."""
        gi = self._graph_indexes.get(id(info.node))
        if gi is None:
            gi = self._graph_indexes[id(info.node)] = GraphIndex(self.graph(info))
        return gi

    def graph(self, info: FunctionInfo) -> cfg.CFG:
        """The function's flow graph, built once for all rules that need it."""
        graph = self._graphs.get(id(info.node))
        if graph is None:
            graph = self._graphs[id(info.node)] = cfg.build(info.node)
        return graph
