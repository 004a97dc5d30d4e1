"""Fast child iteration over libcst trees.

`CSTNode.children` runs a visitor to collect children and dominated the profile (about half
of a full run). Rules only need the nodes that carry names, calls and statements, so this walks
dataclass fields directly, skipping whitespace, parentheses and punctuation fields; the field
list is computed once per node type.
"""
from __future__ import annotations

import dataclasses
from typing import Iterator

import libcst as cst

_SKIP_PREFIXES = ("whitespace", "leading_lines", "lines_after")
_SKIP_NAMES = frozenset({"lpar", "rpar", "comma", "semicolon", "header", "footer", "newline", "equal",
                         "colon", "dot", "trailing_whitespace", "star", "asynchronous", "relative"})

_FIELDS: dict[type, tuple[str, ...]] = {}


def _fields(t: type) -> tuple[str, ...]:
    names = _FIELDS.get(t)
    if names is None:
        names = tuple(f.name for f in dataclasses.fields(t)
                      if not f.name.startswith(_SKIP_PREFIXES) and f.name not in _SKIP_NAMES)
        _FIELDS[t] = names
    return names


def children(node: cst.CSTNode) -> Iterator[cst.CSTNode]:
    """Child nodes in source order (whitespace and punctuation left out)."""
    for name in _fields(type(node)):
        value = getattr(node, name)
        if isinstance(value, cst.CSTNode):
            yield value
        elif isinstance(value, (tuple, list)):
            for item in value:
                if isinstance(item, cst.CSTNode):
                    yield item


def walk(node: cst.CSTNode) -> Iterator[cst.CSTNode]:
    """Pre-order walk of `node` and everything below it."""
    stack = [node]
    while stack:
        n = stack.pop()
        yield n
        kids = list(children(n))
        kids.reverse()
        stack.extend(kids)


_SCOPES = (cst.FunctionDef, cst.ClassDef, cst.Lambda)


def walk_scope(node: cst.CSTNode, into_blocks: bool = True) -> Iterator[cst.CSTNode]:
    """Pre-order walk that does not enter nested functions, classes or lambdas (they are other
    scopes) and, without `into_blocks`, not the bodies of compound statements either."""
    stack = [node]
    while stack:
        n = stack.pop()
        yield n
        if n is not node and (isinstance(n, _SCOPES) or (not into_blocks and isinstance(n, cst.BaseSuite))):
            continue
        kids = list(children(n))
        kids.reverse()
        stack.extend(kids)


class FastVisitor:
    """A read-only visitor with libcst's `visit_<Node>`/`leave_<Node>` method names.

    libcst's own visitor machinery rebuilds each node on the way back up; for a pass that only
    reads, this iterative walk over `children` is several times faster.
    """

    def visit_tree(self, root: cst.CSTNode) -> None:
        handlers: dict[type, tuple] = {}
        stack: list[tuple[cst.CSTNode, bool]] = [(root, False)]
        while stack:
            node, leaving = stack.pop()
            t = type(node)
            pair = handlers.get(t)
            if pair is None:
                pair = handlers[t] = (getattr(self, "visit_" + t.__name__, None),
                                      getattr(self, "leave_" + t.__name__, None))
            visit, leave = pair
            if leaving:
                leave(node)
                continue
            if visit is not None and visit(node) is False:
                continue
            if leave is not None:
                stack.append((node, True))
            kids = list(children(node))
            for kid in reversed(kids):
                stack.append((kid, False))
