"""Reading one file into its facts: decode, parse with libcst, collect, or SES001 with the reason."""
from __future__ import annotations

import ast
import io
import re
import tokenize
from dataclasses import dataclass, field
from typing import Optional, Union

import libcst as cst

from . import registry
from .findings import Finding
from .semantic.facts import FunctionInfo, ModuleSummary, collect

# A file that mentions none of these, nor a session name exported by a project module, cannot
# create, receive or close a session the analysis understands.
SA_PATTERN = "sqlalchemy|sqlmodel|flask_sqlalchemy"
SA_TOKENS = re.compile(SA_PATTERN.encode())


@dataclass
class Parsed:
    display: str
    text: str
    module: cst.Module
    summary: ModuleSummary
    functions: list[FunctionInfo]
    module_withs: list[cst.With] = field(default_factory=list)


def _decode(data: bytes) -> str:
    encoding, _ = tokenize.detect_encoding(io.BytesIO(data).readline)
    return data.decode(encoding)


def _syntax_error(display: str, line: int, column: int, message: str) -> Finding:
    return Finding(display, max(line, 1), max(column, 1), registry.PARSE_ERROR_CODE, max(line, 1),
                   max(column, 1), registry.PARSE_ERROR_NAME, message, "", "<module>", 1, max(line, 1))


def parse_source(display: str, data: Union[bytes, str], name: str, is_package: bool) -> Union[Parsed, Finding]:
    """Parse one file into its facts, or the SES001 finding that says why it could not be."""
    try:
        text = data if isinstance(data, str) else _decode(data)
    except (UnicodeDecodeError, SyntaxError, LookupError) as exc:
        line = 1
        if isinstance(exc, UnicodeDecodeError) and isinstance(data, bytes):
            line = data.count(b"\n", 0, exc.start) + 1
        reason = exc.reason if isinstance(exc, UnicodeDecodeError) else str(exc)
        return _syntax_error(display, line, 1, f"File could not be decoded: {reason}")
    try:
        module = cst.parse_module(text)
    except cst.ParserSyntaxError as exc:
        # the stdlib parser points at the offending token; libcst often at the one after it
        try:
            ast.parse(text)
        except SyntaxError as py_exc:
            if py_exc.lineno:
                return _syntax_error(display, py_exc.lineno, py_exc.offset or 1,
                                     f"File could not be parsed: {py_exc.msg}")
        except (ValueError, RecursionError, MemoryError):
            pass
        message = str(exc.message).splitlines()[0] if exc.message else "invalid syntax"
        return _syntax_error(display, exc.raw_line, exc.raw_column + 1, f"File could not be parsed: {message}")
    except (RecursionError, ValueError) as exc:  # libcst's limits on very deep nesting
        return _syntax_error(display, 1, 1, f"File could not be parsed: {type(exc).__name__}")
    except Exception as exc:  # libcst's own errors on syntax it does not know yet (CSTLogicError)
        return _syntax_error(display, 1, 1, f"File could not be parsed by libcst: {type(exc).__name__}")
    summary, functions, module_withs = collect(module, name, display, is_package)
    return Parsed(display, text, module, summary, functions, module_withs)


def quick_syntax_check(display: str, data: bytes) -> Optional[Finding]:
    """SES001 for a file the pre-filter skips: the stdlib parser is much faster than libcst,
    and libcst (whose grammar may be newer than this Python's) has the last word."""
    try:
        ast.parse(data)
        return None
    except (SyntaxError, ValueError, UnicodeDecodeError, RecursionError, MemoryError):
        pass
    result = parse_source(display, data, "__skipped__", False)
    return result if isinstance(result, Finding) else None
