"""The runtime checker: watches real sessions and reports misuse with the static rule codes.

Imports only SQLAlchemy (and only when a checker is used): ``sessionlint.runtime.report`` can be
read by the static side without it.
"""
from __future__ import annotations

from typing import TYPE_CHECKING, Any

__all__ = ["watch", "SessionMisuseWarning", "SessionMisuseError", "RuntimeFinding", "Report"]

if TYPE_CHECKING:
    from .report import Report, RuntimeFinding
    from .watching import SessionMisuseError, SessionMisuseWarning, watch


def __getattr__(name: str) -> Any:
    if name in ("watch", "SessionMisuseWarning", "SessionMisuseError"):
        from . import watching as module

        return getattr(module, name)
    if name in ("RuntimeFinding", "Report"):
        from . import report

        return getattr(report, name)
    raise AttributeError(name)
