"""Which files a run analyses, how they are shown, and which module each one is."""
from __future__ import annotations

import fnmatch
import os
from dataclasses import dataclass
from functools import lru_cache
from pathlib import Path
from typing import Iterator, Sequence

SKIP_DIRS = frozenset({".git", ".hg", ".svn", ".venv", "venv", "build", "dist", "node_modules",
                       "__pycache__", ".tox", ".nox", ".mypy_cache", ".pytest_cache", ".eggs"})


@dataclass(frozen=True)
class SourceFile:
    path: Path  # on disk
    display: str  # as reported: the argument joined with the relative path


@dataclass(frozen=True)
class Missing:
    display: str
    message: str


def excluded(path: Path, root: Path, patterns: Sequence[str]) -> bool:
    if not patterns:
        return False
    try:
        rel = path.resolve().relative_to(root.resolve()).as_posix()
    except ValueError:
        rel = path.as_posix()
    for pat in patterns:
        pat = pat.rstrip("/")
        if fnmatch.fnmatch(rel, pat) or fnmatch.fnmatch(path.name, pat) or \
                fnmatch.fnmatch(rel, pat + "/*") or rel.startswith(pat + "/"):
            return True
    return False


def discover(args: Sequence[str], root: Path, exclude: Sequence[str],
             force_exclude: bool = False) -> Iterator[SourceFile | Missing]:
    seen: set[Path] = set()
    for arg in args:
        top = Path(arg)
        if top.is_file():
            if force_exclude and excluded(top, root, exclude):
                continue
            key = top.resolve()
            if key not in seen:
                seen.add(key)
                yield SourceFile(top, arg)
            continue
        if not top.is_dir():
            yield Missing(arg, "No such file or directory")
            continue
        if force_exclude and top.resolve() != root.resolve() and excluded(top, root, exclude):
            continue
        for folder, dirs, files in os.walk(top):
            here = Path(folder)
            dirs[:] = sorted(d for d in dirs if d not in SKIP_DIRS and not d.endswith(".egg-info")
                             and not excluded(here / d, root, exclude))
            for name in sorted(files):
                if not name.endswith(".py"):
                    continue
                path = here / name
                if excluded(path, root, exclude):
                    continue
                key = path.resolve()
                if key in seen:
                    continue
                seen.add(key)
                rel = path.relative_to(top).as_posix()
                yield SourceFile(path, os.path.join(arg, rel))


@lru_cache(maxsize=None)
def _is_package_dir(folder: Path) -> bool:
    return (folder / "__init__.py").is_file()


def module_name(path: Path) -> tuple[str, bool]:
    """Dotted module name from the package folders above the file, and whether it is one."""
    path = path.absolute()
    is_package = path.name == "__init__.py"
    parts = [] if is_package else [path.stem]
    folder = path.parent
    while _is_package_dir(folder) and folder.parent != folder:
        parts.append(folder.name)
        folder = folder.parent
    if not parts:
        parts = [path.parent.name]
    return ".".join(reversed(parts)), is_package
