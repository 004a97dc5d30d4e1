"""Per-function control-flow graph over libcst statements, exception edges included.

Nodes are small statements and compound-statement headers. Edges are labelled `next`,
`true`, `false` (branches and loop entry/exit) and `exc` (an exception raised by the node).
`finally` bodies are copied once per way out of their `try` (fall-through, exception,
return, break, continue), so every path through the graph is a real path through the code.
Nested function and class bodies are not entered: they are separate scopes.
"""
from __future__ import annotations

from dataclasses import dataclass, field
from typing import Callable, Optional, Sequence, Union

import libcst as cst

from .facts import dotted
from .walk import children

NEXT, TRUE, FALSE, EXC = "next", "true", "false", "exc"

# node kinds
ENTRY, EXIT, RAISE_EXIT = "entry", "exit", "raise-exit"
STMT, COND, LOOP, WITH, HANDLER, JOIN = "stmt", "cond", "loop", "with", "handler", "join"

Pred = tuple[int, str]


@dataclass
class Node:
    id: int
    kind: str
    ast: Optional[cst.CSTNode] = None
    succ: list[Pred] = field(default_factory=list)


@dataclass
class Frame:
    kind: str  # "loop" | "try" | "finally" | "suppress"
    # loop: where `continue` goes; try: the handler dispatch node
    target: int = -1
    breaks: list[Pred] = field(default_factory=list)
    finalbody: Optional[cst.BaseSuite] = None
    copies: dict[str, int] = field(default_factory=dict)
    suppressed: list[Pred] = field(default_factory=list)
    # try: a handler takes BaseException (GeneratorExit at a yield passes `except Exception`);
    # suppress: it names Exception/BaseException, so nothing it may see gets past it
    catches_all: bool = False


@dataclass
class CFG:
    nodes: list[Node]
    entry: int
    exit: int
    raise_exit: int


_CATCH_ALL = {"Exception", "BaseException", "builtins.Exception", "builtins.BaseException"}
_SUPPRESS = {"suppress", "contextlib.suppress"}
_BASE = {"BaseException", "builtins.BaseException", "GeneratorExit"}


def may_raise(node: cst.CSTNode) -> bool:
    """A node raises for our purposes when it calls, awaits, yields, raises or asserts."""
    stack: list[cst.CSTNode] = [node]
    while stack:
        n = stack.pop()
        if isinstance(n, cst.Call) and _logging_call(n):
            stack.extend(a.value for a in n.args)  # logging swallows its own errors; the arguments may not
            continue
        if isinstance(n, (cst.Call, cst.Await, cst.Yield, cst.Raise, cst.Assert)):
            return True
        if isinstance(n, (cst.FunctionDef, cst.ClassDef, cst.Lambda)):
            # defining a function runs only its decorators and defaults
            if isinstance(n, cst.FunctionDef) and n.decorators:
                return True
            continue
        stack.extend(children(n))
    return False


_LOG_METHODS = frozenset({"debug", "info", "warning", "warn", "error", "exception", "critical", "log"})
_LOGGERS = frozenset({"logger", "log", "logging", "LOGGER", "LOG", "_logger", "_log"})


def _logging_call(call: cst.Call) -> bool:
    """`logger.info(...)`: the logging module reports handler errors itself instead of raising."""
    func = call.func
    if not isinstance(func, cst.Attribute) or func.attr.value not in _LOG_METHODS:
        return False
    base = func.value
    if isinstance(base, cst.Attribute):  # `self.logger.info`, `self.log.debug`
        base = base.attr
    return isinstance(base, cst.Name) and base.value in _LOGGERS


class _Builder:
    def __init__(self, raises: Callable[[cst.CSTNode], bool]) -> None:
        self.nodes: list[Node] = []
        self.frames: list[Frame] = []
        self.raises = raises
        self.entry = self._new(ENTRY)
        self.exit = self._new(EXIT)
        self.raise_exit = self._new(RAISE_EXIT)

    def _new(self, kind: str, ast: Optional[cst.CSTNode] = None) -> int:
        node = Node(len(self.nodes), kind, ast)
        self.nodes.append(node)
        return node.id

    def _link(self, preds: Sequence[Pred], target: int) -> None:
        for nid, label in preds:
            self.nodes[nid].succ.append((target, label))

    def _emit(self, kind: str, ast: cst.CSTNode, preds: Sequence[Pred], raises: Optional[bool] = None) -> int:
        nid = self._new(kind, ast)
        self._link(preds, nid)
        if raises if raises is not None else self.raises(ast):
            target = self._exc_target(len(self.frames))
            self._link([(nid, EXC)], target)
            if _has_yield(ast):
                # GeneratorExit / a thrown-in BaseException passes `except Exception` handlers
                outer = self._exc_target(len(self.frames), base_exception=True)
                if outer != target:
                    self._link([(nid, EXC)], outer)
        return nid

    # ---- jumps through finally --------------------------------------------------------
    def _exc_target(self, depth: int, base_exception: bool = False) -> int:
        for i in range(depth - 1, -1, -1):
            frame = self.frames[i]
            if frame.kind == "try":
                if base_exception and not frame.catches_all:
                    continue
                return frame.target
            if frame.kind == "suppress":
                join = self._new(JOIN)
                frame.suppressed.append((join, NEXT))
                if not frame.catches_all:  # `suppress(KeyError)` lets the rest through
                    self._link([(join, EXC)], self._exc_target(i, base_exception))
                return join
            if frame.kind == "finally":
                return self._finally_copy(i, EXC)
        return self.raise_exit

    def _jump(self, kind: str, preds: Sequence[Pred], depth: int) -> None:
        """Send `preds` out by `return`/`break`/`continue`, through enclosing finallys."""
        for i in range(depth - 1, -1, -1):
            frame = self.frames[i]
            if frame.kind == "finally":
                self._link(preds, self._finally_copy(i, kind))
                return
            if frame.kind == "loop" and kind in ("break", "continue"):
                if kind == "break":
                    frame.breaks.extend(preds)
                else:
                    self._link(preds, frame.target)
                return
        if kind == "return":
            self._link(preds, self.exit)

    def _finally_copy(self, index: int, kind: str) -> int:
        frame = self.frames[index]
        if kind in frame.copies:
            return frame.copies[kind]
        entry = self._new(JOIN)
        frame.copies[kind] = entry
        saved = self.frames
        self.frames = saved[:index]
        try:
            assert frame.finalbody is not None
            out = self._suite(frame.finalbody, [(entry, NEXT)])
            if kind == EXC:
                self._link(out, self._exc_target(index))
            else:
                self._jump(kind, out, index)
        finally:
            self.frames = saved
        return entry

    # ---- statements -------------------------------------------------------------------
    def _suite(self, body: Union[cst.BaseSuite, Sequence[cst.BaseStatement]], preds: list[Pred]) -> list[Pred]:
        if isinstance(body, cst.SimpleStatementSuite):
            return self._smalls(body.body, preds)
        stmts = body.body if isinstance(body, cst.IndentedBlock) else body
        for stmt in stmts:  # type: ignore[union-attr]
            preds = self._stmt(stmt, preds)
        return preds

    def _smalls(self, smalls: Sequence[cst.BaseSmallStatement], preds: list[Pred]) -> list[Pred]:
        for small in smalls:
            if not preds:
                return []
            preds = self._small(small, preds)
        return preds

    def _small(self, small: cst.BaseSmallStatement, preds: list[Pred]) -> list[Pred]:
        depth = len(self.frames)
        if isinstance(small, cst.Return):
            nid = self._emit(STMT, small, preds)
            self._jump("return", [(nid, NEXT)], depth)
            return []
        if isinstance(small, cst.Raise):
            nid = self._emit(STMT, small, preds, raises=True)
            return []
        if isinstance(small, (cst.Break, cst.Continue)):
            nid = self._emit(STMT, small, preds, raises=False)
            self._jump("break" if isinstance(small, cst.Break) else "continue", [(nid, NEXT)], depth)
            return []
        if isinstance(small, cst.Pass):
            return preds
        nid = self._emit(STMT, small, preds)
        return [(nid, NEXT)]

    def _stmt(self, stmt: cst.BaseStatement, preds: list[Pred]) -> list[Pred]:
        if not preds:
            return []  # unreachable code
        if isinstance(stmt, cst.SimpleStatementLine):
            return self._smalls(stmt.body, preds)
        if isinstance(stmt, cst.If):
            return self._if(stmt, preds)
        if isinstance(stmt, (cst.For, cst.While)):
            return self._loop(stmt, preds)
        if isinstance(stmt, (cst.Try, cst.TryStar)):
            return self._try(stmt, preds)
        if isinstance(stmt, cst.With):
            return self._with(stmt, preds)
        if isinstance(stmt, (cst.FunctionDef, cst.ClassDef)):
            nid = self._emit(STMT, stmt, preds)
            return [(nid, NEXT)]
        if isinstance(stmt, cst.Match):
            nid = self._emit(COND, stmt, preds, raises=self.raises(stmt.subject))
            out: list[Pred] = []
            irrefutable = False
            for case in stmt.cases:
                out += self._suite(case.body, [(nid, TRUE)])
                if isinstance(case.pattern, cst.MatchAs) and case.pattern.pattern is None and case.guard is None:
                    irrefutable = True
            if not irrefutable:
                out.append((nid, FALSE))
            return out
        return preds

    def _if(self, stmt: cst.If, preds: list[Pred]) -> list[Pred]:
        nid = self._emit(COND, stmt.test, preds)
        out = self._suite(stmt.body, [(nid, TRUE)])
        orelse = stmt.orelse
        if isinstance(orelse, cst.If):
            out += self._if(orelse, [(nid, FALSE)])
        elif isinstance(orelse, cst.Else):
            out += self._suite(orelse.body, [(nid, FALSE)])
        else:
            out.append((nid, FALSE))
        return out

    def _loop(self, stmt: Union[cst.For, cst.While], preds: list[Pred]) -> list[Pred]:
        entries: list[Pred]
        if isinstance(stmt, cst.For):
            head = self._emit(LOOP, stmt, [], raises=self.raises(stmt.iter))
            infinite = False
            if _non_empty_literal(stmt.iter):
                # `for s in (src, dst):` runs its body at least once: the first entry cannot
                # take the exit edge
                first = self._emit(LOOP, stmt, preds, raises=self.raises(stmt.iter))
                entries = [(first, TRUE), (head, TRUE)]
            else:
                self._link(preds, head)
                entries = [(head, TRUE)]
        else:
            head = self._emit(COND, stmt.test, [])
            infinite = _is_true(stmt.test)
            self._link(preds, head)
            entries = [(head, TRUE)]
        frame = Frame("loop", target=head)
        self.frames.append(frame)
        body_out = self._suite(stmt.body, entries)
        self.frames.pop()
        self._link(body_out, head)
        out: list[Pred] = []
        if not infinite:
            exit_preds: list[Pred] = [(head, FALSE)]
            if stmt.orelse is not None:
                exit_preds = self._suite(stmt.orelse.body, exit_preds)
            out += exit_preds
        return out + frame.breaks

    def _with(self, stmt: cst.With, preds: list[Pred]) -> list[Pred]:
        suppressors = [item.item for item in stmt.items
                       if isinstance(item.item, cst.Call) and dotted(item.item.func) in _SUPPRESS]
        # entering a context manager runs its __enter__, which may raise; suppress() cannot
        nid = self._emit(WITH, stmt, preds, raises=len(suppressors) < len(stmt.items))
        if suppressors:
            names = {dotted(a.value) for call in suppressors for a in call.args}  # type: ignore[union-attr]
            frame = Frame("suppress", catches_all=bool(names & _CATCH_ALL))
            self.frames.append(frame)
            out = self._suite(stmt.body, [(nid, NEXT)])
            self.frames.pop()
            return out + frame.suppressed
        return self._suite(stmt.body, [(nid, NEXT)])

    def _try(self, stmt: Union[cst.Try, cst.TryStar], preds: list[Pred]) -> list[Pred]:
        fin: Optional[Frame] = None
        if stmt.finalbody is not None:
            fin = Frame("finally", finalbody=stmt.finalbody.body)
            self.frames.append(fin)
        handler_out: list[Pred] = []
        if stmt.handlers:
            dispatch = self._new(JOIN)
            self.frames.append(Frame("try", target=dispatch,
                                     catches_all=any(catches_base(h) for h in stmt.handlers)))
            out = self._suite(stmt.body, preds)
            self.frames.pop()
            caught_all = False
            for handler in stmt.handlers:
                hid = self._emit(HANDLER, handler, [(dispatch, EXC)], raises=False)
                handler_out += self._suite(handler.body, [(hid, NEXT)])
                if _catches_all(handler):
                    caught_all = True
                    break
            if not caught_all:
                self._link([(dispatch, EXC)], self._exc_target(len(self.frames)))

        else:
            out = self._suite(stmt.body, preds)
        if stmt.orelse is not None:
            out = self._suite(stmt.orelse.body, out)
        out = out + handler_out
        if fin is not None:
            self.frames.pop()
            if out:
                entry = self._new(JOIN)
                self._link(out, entry)
                assert stmt.finalbody is not None
                out = self._suite(stmt.finalbody.body, [(entry, NEXT)])
        return out


def catches_base(handler: Union[cst.ExceptHandler, cst.ExceptStarHandler]) -> bool:
    if handler.type is None:
        return True
    types = handler.type.elements if isinstance(handler.type, cst.Tuple) else [handler.type]
    return any(dotted(t.value if isinstance(t, cst.BaseElement) else t) in _BASE  # type: ignore[arg-type]
               for t in types)


def _has_yield(node: cst.CSTNode) -> bool:
    stack: list[cst.CSTNode] = [node]
    while stack:
        n = stack.pop()
        if isinstance(n, cst.Yield):
            return True
        if isinstance(n, (cst.FunctionDef, cst.ClassDef, cst.Lambda)):
            continue
        stack.extend(children(n))
    return False


def _catches_all(handler: Union[cst.ExceptHandler, cst.ExceptStarHandler]) -> bool:
    if handler.type is None:
        return True
    types = handler.type.elements if isinstance(handler.type, cst.Tuple) else [handler.type]
    for t in types:
        value = t.value if isinstance(t, cst.BaseElement) else t
        if dotted(value) in _CATCH_ALL:  # type: ignore[arg-type]
            return True
    return False


def _non_empty_literal(node: cst.BaseExpression) -> bool:
    return isinstance(node, (cst.Tuple, cst.List, cst.Set)) and bool(node.elements)


def _is_true(test: cst.BaseExpression) -> bool:
    if isinstance(test, cst.Name):
        return test.value == "True"
    if isinstance(test, cst.Integer):
        return test.value not in ("0",)
    return False


def build(func: cst.FunctionDef, raises: Callable[[cst.CSTNode], bool] = may_raise) -> CFG:
    b = _Builder(raises)
    body = func.body
    out = b._suite(body, [(b.entry, NEXT)])
    b._link(out, b.exit)
    return CFG(b.nodes, b.entry, b.exit, b.raise_exit)
