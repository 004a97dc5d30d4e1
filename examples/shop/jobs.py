"""Maintenance jobs, registered by name and run by a small dispatcher (as a task queue would).

The dispatcher opens the session from a factory named in settings, so no static analysis can
tell that ``run`` makes a session: the leak below is found only by the runtime checker
(``pytest --sessionlint``), which ``sessionlint verify`` lists as runtime-only.
"""
from __future__ import annotations

from typing import Callable, Dict

from sqlalchemy import func, select
from sqlalchemy.orm import Session

from . import db
from .models import Order

SETTINGS = {"session_factory": "SessionLocal"}
JOBS: Dict[str, Callable[[Session], int]] = {}


def job(fn: Callable[[Session], int]) -> Callable[[Session], int]:
    JOBS[fn.__name__] = fn
    return fn


@job
def count_pending(session: Session) -> int:
    return session.scalar(select(func.count()).select_from(Order).where(Order.status == "pending")) or 0


def run(name: str) -> int:
    factory = getattr(db, SETTINGS["session_factory"])
    session = factory()  # BUG (runtime-only SES101): never closed; the factory is looked up by name
    return JOBS[name](session)
