"""flake8 adapter: runs the engine on the file flake8 hands over; flake8 owns selection and noqa.

Nothing here imports flake8, so the package imports without it.
"""
from __future__ import annotations

import ast
from typing import Any, Iterator, Optional, Sequence

from . import __version__


class SessionLintPlugin:
    name = "sessionlint"
    version = __version__

    def __init__(self, tree: ast.AST, filename: str = "stdin", lines: Optional[Sequence[str]] = None) -> None:
        self.filename = filename
        self.lines = lines

    def run(self) -> Iterator[tuple[int, int, str, type[Any]]]:
        from .config import Settings
        from .engine import check_source

        source = "".join(self.lines) if self.lines is not None else open(self.filename, "rb").read()
        # every rule runs; flake8's --select/--ignore and noqa decide what is shown
        settings = Settings(select=("SES",))
        for f in check_source(source, self.filename, settings, noqa_applied=False):
            if f.code == "SES001":
                continue  # flake8 reports its own E999 for files that do not parse
            yield f.line, f.column - 1, f"{f.code} {f.message}", type(self)
