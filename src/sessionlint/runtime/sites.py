"""Where in user code something happened: the first frame outside SQLAlchemy and this checker.

Each code object is classified once (SQLAlchemy or checker, library, user) and its line span
computed once, so attributing an event costs a short walk over cached lookups. Frames are
walked across greenlet boundaries too: SQLAlchemy's asyncio layer runs the sync Session in a
greenlet whose bottom frame has no ``f_back``; the awaiting coroutine is in the parent's frame.
"""
from __future__ import annotations

import dis
import os
import sys
import sysconfig
from dataclasses import dataclass
from types import CodeType, FrameType
from typing import Any, Dict, Iterator, Optional, Tuple

INTERNAL, LIBRARY, USER = 0, 1, 2


@dataclass(frozen=True)
class Site:
    """A line of code and the span of the function it is in."""

    path: str
    line: int
    function: str
    start: int
    end: int

    def as_dict(self) -> Dict[str, Any]:
        return {"path": self.path, "line": self.line, "function": self.function,
                "start_line": self.start, "end_line": self.end}

    @classmethod
    def from_dict(cls, data: Dict[str, Any]) -> "Site":
        return cls(str(data["path"]), int(data["line"]), str(data.get("function", "")),
                   int(data.get("start_line", data["line"])), int(data.get("end_line", data["line"])))

    def key(self) -> Tuple[str, int]:
        return (self.path, self.line)


def _prefix(path: str) -> str:
    return os.path.normcase(os.path.realpath(path)).rstrip(os.sep) + os.sep


def _internal_prefixes() -> Tuple[str, ...]:
    import sqlalchemy

    return (_prefix(os.path.dirname(sqlalchemy.__file__)), _prefix(os.path.dirname(__file__)))


def _library_prefixes() -> Tuple[str, ...]:
    paths = sysconfig.get_paths()
    found = {_prefix(paths[key]) for key in ("stdlib", "platstdlib", "purelib", "platlib") if key in paths}
    found.add(_prefix(os.path.dirname(os.__file__)))
    return tuple(sorted(found, key=len, reverse=True))


class Attributor:
    """Classifies code objects and turns frames into Sites, caching per code object."""

    def __init__(self) -> None:
        self._internal = _internal_prefixes()
        self._library = _library_prefixes()
        self._kind: Dict[CodeType, int] = {}
        self._span: Dict[CodeType, Tuple[str, str, int, int]] = {}

    def kind(self, code: CodeType) -> int:
        kind = self._kind.get(code)
        if kind is None:
            kind = self._classify(code.co_filename)
            self._kind[code] = kind
        return kind

    def _classify(self, filename: str) -> int:
        if filename.startswith("<"):
            return LIBRARY
        path = os.path.normcase(os.path.realpath(filename))
        if path.startswith(self._internal):
            return INTERNAL
        if path.startswith(self._library):
            return LIBRARY
        return USER

    def user_frame(self, frame: Optional[FrameType], user_only: bool = False) -> Optional[FrameType]:
        """The first user frame above ``frame``; else the first one outside SQLAlchemy."""
        fallback: Optional[FrameType] = None
        for f in _frames(frame):
            kind = self.kind(f.f_code)
            if kind == USER:
                return f
            if kind == LIBRARY and fallback is None:
                fallback = f
        return None if user_only else fallback

    def site(self, frame: FrameType) -> Site:
        code = frame.f_code
        span = self._span.get(code)
        if span is None:
            lines = [line for _, line in dis.findlinestarts(code) if line]
            first = code.co_firstlineno
            name = getattr(code, "co_qualname", code.co_name)
            span = (os.path.realpath(code.co_filename), name, first, max(lines, default=first))
            self._span[code] = span
        return Site(span[0], frame.f_lineno, span[1], span[2], span[3])

    def caller_of(self, frame: Optional[FrameType], obj: object, method: str) -> Optional[FrameType]:
        """The first user frame above ``frame`` that is not ``obj``'s own ``method``: an
        application's subclass overriding ``__init__`` or ``commit()`` is not where it was called."""
        user = self.user_frame(frame)
        while user is not None and user.f_code.co_name == method and user.f_locals.get("self") is obj:
            user = self.user_frame(user.f_back)
        return user

    def on_stack(self, frame: Optional[FrameType], filename_part: str) -> bool:
        """Whether a frame from a file whose path contains ``filename_part`` is on the stack."""
        return any(filename_part in f.f_code.co_filename for f in _frames(frame))


def _frames(frame: Optional[FrameType]) -> Iterator[FrameType]:
    greenlet_mod = sys.modules.get("greenlet")
    current = greenlet_mod.getcurrent() if greenlet_mod is not None else None
    while frame is not None:
        yield frame
        frame = frame.f_back
        if frame is None and current is not None:
            # The bottom of a greenlet: go on in the greenlet that switched to it.
            current = getattr(current, "parent", None)
            frame = getattr(current, "gr_frame", None) if current is not None else None
