"""sessionlint: find SQLAlchemy Session misuse before it reaches production.

The public API is small and imported lazily, so `import sessionlint` stays cheap (the flake8
plugin and the runtime checker import this package too).
"""
from __future__ import annotations

from typing import TYPE_CHECKING, Any

__version__ = "0.1.0"
__all__ = ["__version__", "check_source", "check_paths", "Finding"]

if TYPE_CHECKING:
    from .engine import check_paths, check_source
    from .findings import Finding


def __getattr__(name: str) -> Any:
    if name in ("check_source", "check_paths"):
        from . import engine

        return getattr(engine, name)
    if name == "Finding":
        from .findings import Finding

        return Finding
    raise AttributeError(name)
