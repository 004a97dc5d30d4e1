"""A compact, picklable form of the expressions the session model can evaluate.

Summaries cross process boundaries and are evaluated many times, so they hold this instead of
libcst nodes or source text: tuples for names, attribute chains, calls (with their arguments),
`await`, subscripts, `A | B` and string annotations. Anything else is `None`: unknown.
"""
from __future__ import annotations

from typing import Optional, Union

import libcst as cst

# ("name", id) | ("attr", base, attr) | ("call", func, args) | ("await", expr)
# | ("sub", base, elements) | ("or", left, right) | ("str", text) | ("none",)
# | ("enter", context manager): what `with <cm> as name` binds
# where args is a tuple of (keyword or "" or "*", expr)
IR = Optional[tuple]

NONE_IR: tuple = ("none",)


def to_ir(node: Union[cst.BaseExpression, None], depth: int = 0) -> IR:
    if node is None or depth > 40:
        return None
    if isinstance(node, cst.Name):
        return NONE_IR if node.value == "None" else ("name", node.value)
    if isinstance(node, cst.Attribute):
        base = to_ir(node.value, depth + 1)
        return ("attr", base, node.attr.value) if base is not None else None
    if isinstance(node, cst.Call):
        func = to_ir(node.func, depth + 1)
        if func is None:
            return None
        args = tuple(
            ("*" if arg.star else (arg.keyword.value if arg.keyword is not None else ""), to_ir(arg.value, depth + 1))
            for arg in node.args
        )
        return ("call", func, args)
    if isinstance(node, cst.Await):
        inner = to_ir(node.expression, depth + 1)
        return ("await", inner) if inner is not None else None
    if isinstance(node, cst.Subscript):
        base = to_ir(node.value, depth + 1)
        elements = tuple(to_ir(e.slice.value, depth + 1) for e in node.slice if isinstance(e.slice, cst.Index))
        return ("sub", base, elements) if base is not None else None
    if isinstance(node, cst.BinaryOperation) and isinstance(node.operator, cst.BitOr):
        return ("or", to_ir(node.left, depth + 1), to_ir(node.right, depth + 1))
    if isinstance(node, cst.SimpleString):
        value = node.evaluated_value
        return ("str", value) if isinstance(value, str) else None
    return None


def dotted_ir(ir: IR) -> Optional[str]:
    """`a.b.c` for a name/attribute chain."""
    parts: list[str] = []
    while ir is not None and ir[0] == "attr":
        parts.append(ir[2])
        ir = ir[1]
    if ir is not None and ir[0] == "name":
        parts.append(ir[1])
        return ".".join(reversed(parts))
    return None


def parse_ir(text: str) -> IR:
    try:
        return to_ir(cst.parse_expression(text))
    except Exception:  # a string annotation that is not an expression: unknown
        return None
