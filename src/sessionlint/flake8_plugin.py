"""flake8 adapter: runs the engine on the file flake8 hands over; flake8 owns selection and noqa.

Nothing here imports flake8, so the package imports without it.
"""
from __future__ import annotations

import ast
import os
import re
from typing import Any, Iterator, Optional, Sequence

from . import __version__

# same pattern as the CLI's pre-filter (sessionlint.parsing.SA_PATTERN), kept here so that
# loading the plugin imports nothing heavy
_SA_TOKENS = re.compile(r"sqlalchemy|sqlmodel|flask_sqlalchemy")


def _imports_own_package(source: str, filename: str) -> bool:
    """Does the file import from its own project (where a session factory may live)?"""
    if re.search(r"^\s*from\s+\.", source, re.M):
        return True
    from pathlib import Path

    from .discovery import module_name

    path = Path(filename)
    if not path.is_file():
        return False
    top = module_name(path)[0].split(".")[0]
    return re.search(rf"^\s*(from|import)\s+{re.escape(top)}\b", source, re.M) is not None


_PREVIEW: dict[str, bool] = {}


def _preview(filename: str) -> bool:
    """Preview rules run when `SESSIONLINT_PREVIEW=1` or the nearest pyproject.toml sets
    `[tool.sessionlint] preview = true`, as for the CLI (read once per project file)."""
    if os.environ.get("SESSIONLINT_PREVIEW", "") not in ("", "0"):
        return True
    from pathlib import Path

    from . import config

    pyproject = config.find_pyproject(Path(filename).resolve().parent if filename != "stdin" else Path.cwd())
    key = str(pyproject)
    if key not in _PREVIEW:
        try:
            _PREVIEW[key] = config.load(pyproject).preview
        except config.ConfigError:
            _PREVIEW[key] = False  # flake8 shows its own errors; a bad table is the CLI's to report
    return _PREVIEW[key]


class SessionLintPlugin:
    name = "sessionlint"
    version = __version__

    def __init__(self, tree: ast.AST, filename: str = "stdin", lines: Optional[Sequence[str]] = None) -> None:
        self.filename = filename
        self.lines = lines

    def run(self) -> Iterator[tuple[int, int, str, type[Any]]]:
        if os.environ.get("SESSIONLINT_FLAKE8_DISABLE"):
            return  # scripts/bench.py times flake8 without this plugin
        source = "".join(self.lines) if self.lines is not None else open(self.filename, encoding="utf-8").read()
        if not _SA_TOKENS.search(source) and not _imports_own_package(source, self.filename):
            return  # the CLI's text pre-filter: no libcst parse for files that cannot matter

        from .config import Settings
        from .engine import check_source

        # the plugin's rules all run; flake8's --select/--ignore and noqa decide what is shown
        settings = Settings(select=self._codes(), preview=_preview(self.filename))
        for f in check_source(source, self.filename, settings, noqa_applied=False):
            if f.code == "SES001":
                continue  # flake8 reports its own E999 for files that do not parse
            yield f.line, f.column - 1, f"{f.code} {f.message}", type(self)

    @classmethod
    def _codes(cls) -> tuple[str, ...]:
        from . import registry

        return tuple(r.code for r in registry.RULES if r.default_enabled)


class SessionLintPolicyPlugin(SessionLintPlugin):
    """The rules that are off by default (SES203): `flake8 --enable-extensions SES203`."""

    off_by_default = True

    @classmethod
    def _codes(cls) -> tuple[str, ...]:
        from . import registry

        return tuple(r.code for r in registry.RULES if not r.default_enabled)
