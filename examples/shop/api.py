"""Request handlers in the style of a FastAPI app, with sessions injected by dependencies.

FastAPI itself is not needed: ``call`` drives a dependency the way FastAPI does (it wraps a
generator dependency in a context manager, passes the yielded value to the endpoint, then
resumes the generator once the response is done).
"""
from __future__ import annotations

from contextlib import contextmanager
from typing import Any, Callable, Dict, Iterator, List

from sqlalchemy.orm import Session

from . import repository
from .db import SessionLocal


def get_db() -> Iterator[Session]:
    """Dependency: ``def endpoint(db: Session = Depends(get_db))``."""
    db = SessionLocal()
    yield db  # BUG (SES103): an exception in the endpoint is thrown in here and skips close()
    db.close()


def get_session() -> Iterator[Session]:
    """The same dependency done right: the with-block closes the session on every path."""
    with SessionLocal() as session:
        yield session


def get_session_explicit() -> Iterator[Session]:
    """Also right, the try/finally form from the FastAPI tutorial."""
    db = SessionLocal()
    try:
        yield db
    finally:
        db.close()


def list_products(db: Session) -> List[Dict[str, Any]]:
    return [
        {"sku": p.sku, "name": p.name, "price_cents": p.price_cents, "stock": p.stock}
        for p in repository.list_products(db)
    ]


def order_stats(db: Session) -> Dict[str, int]:
    return repository.count_orders_by_status(db)


def call(
    endpoint: Callable[..., Any], dependency: Callable[[], Iterator[Session]], **params: Any
) -> Any:
    with contextmanager(dependency)() as db:
        return endpoint(db, **params)
