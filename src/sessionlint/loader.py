"""Project modules outside the run, parsed on demand for their summaries only.

pre-commit and flake8 hand over a few files at a time; the factories those files import usually
live in a module that is not among them (`from app.db import SessionLocal`). The index asks this
loader for a module it does not know; the loader looks for it under the package roots of the
files in the run, parses it (never imports it) and returns its summary. Nothing it loads is
reported on.
"""
from __future__ import annotations

from pathlib import Path
from typing import Iterable, Optional

from .discovery import module_name
from .parsing import Parsed, parse_source
from .semantic.facts import ModuleSummary

# A guard against walking a whole site-packages through re-exports.
_MAX_LOADS = 400


def package_root(path: Path) -> Path:
    """The folder a file's top-level package lives in (its `sys.path` entry)."""
    name, is_package = module_name(path)
    depth = name.count(".") + (1 if is_package else 0)
    root = path.absolute().parent
    for _ in range(depth):
        root = root.parent
    return root


class DiskLoader:
    def __init__(self, roots: Iterable[Path], skip: Iterable[str] = ()) -> None:
        self.roots = tuple(dict.fromkeys(Path(r) for r in roots))
        # files of the run that the pre-filter passed over: they define no session names
        self.skip = frozenset(skip)
        self._cache: dict[str, Optional[ModuleSummary]] = {}
        self._loads = 0

    def __call__(self, module: str) -> Optional[ModuleSummary]:
        if module in self._cache:
            return self._cache[module]
        self._cache[module] = None
        rel = Path(*module.split("."))
        for root in self.roots:
            if not (root / rel.parts[0]).exists() and not (root / f"{rel.parts[0]}.py").exists():
                continue
            for candidate in (root / rel.with_suffix(".py"), root / rel / "__init__.py"):
                if candidate.is_file() and self._loads < _MAX_LOADS:
                    if str(candidate.absolute()) in self.skip:
                        return None
                    self._loads += 1
                    summary = self._summary(candidate, module)
                    self._cache[module] = summary
                    return summary
        return None

    @staticmethod
    def _summary(path: Path, module: str) -> Optional[ModuleSummary]:
        try:
            data = path.read_bytes()
        except OSError:
            return None
        result = parse_source(str(path), data, module, path.name == "__init__.py")
        return result.summary if isinstance(result, Parsed) else None
