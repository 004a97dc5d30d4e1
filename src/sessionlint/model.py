"""The semantic model of one file, as rules see it: computed once, shared by every rule."""
from __future__ import annotations

from dataclasses import dataclass, field
from typing import Iterator, Optional

import libcst as cst

from .semantic.facts import FunctionInfo, ModuleSummary
from .semantic.index import ProjectIndex, Scope
from .semantic.lifecycle import Lifecycle, analyse


@dataclass
class FileModel:
    module: cst.Module
    summary: ModuleSummary
    functions: list[FunctionInfo]
    index: ProjectIndex
    _lifecycles: Optional[list[tuple[FunctionInfo, Lifecycle]]] = field(default=None, repr=False)

    def scope_of(self, info: FunctionInfo) -> Scope:
        return Scope(self.summary.name, info.qualname, info.class_qualname, info.self_name)

    def lifecycles(self) -> Iterator[tuple[FunctionInfo, Lifecycle]]:
        """Each function with the lifecycle of the sessions it owns (computed on first use)."""
        if self._lifecycles is None:
            self._lifecycles = [(info, analyse(info, self.index, self.scope_of(info))) for info in self.functions]
        return iter(self._lifecycles)
