"""Use cases of the shop. Each function owns the session it opens and must close it."""
from __future__ import annotations

from contextlib import contextmanager
from typing import Dict, Iterator, List, Tuple

from sqlalchemy import select
from sqlalchemy.exc import IntegrityError
from sqlalchemy.orm import Session

from . import repository
from .db import SessionLocal
from .models import Product, User


@contextmanager
def session_scope() -> Iterator[Session]:
    """Provide a transactional scope around a series of operations."""
    session = SessionLocal()
    try:
        yield session
        session.commit()
    except Exception:
        session.rollback()
        raise
    finally:
        session.close()


def register_user(email: str, name: str) -> int:
    """Create a user, or return the id of the one that already has this email."""
    with session_scope() as session:
        existing = repository.get_user_by_email(session, email)
        if existing is not None:
            return existing.id
        return repository.add_user(session, email, name).id


def seed_catalog(catalog: List[Dict[str, object]]) -> None:
    # sessionmaker.begin(): commits on success, rolls back on error, closes either way.
    with SessionLocal.begin() as session:
        repository.add_products(session, catalog)


def place_order(email: str, items: Dict[str, int]) -> int:
    """Place an order; raises OutOfStock (and changes nothing) when stock is short."""
    with SessionLocal() as session:
        with session.begin():
            user = repository.get_user_by_email(session, email)
            if user is None:
                raise LookupError(f"no user with email {email!r}")
            order = repository.create_order(session, user, items)
            order_id = order.id
        return order_id


def order_summary(email: str) -> List[Tuple[int, str, int]]:
    """(order id, status, total in cents) for each of the user's orders."""
    session = SessionLocal()
    try:
        user = repository.get_user_by_email(session, email)
        if user is None:
            return []
        orders = repository.orders_for_user(session, user.id)
        return [(order.id, order.status, order.total_cents) for order in orders]
    finally:
        session.close()


def catalog() -> List[Tuple[str, int, int]]:
    """(sku, price in cents, stock) for every product."""
    with SessionLocal() as session:
        products = repository.list_products(session)
        return [(p.sku, p.price_cents, p.stock) for p in products]


def apply_discount(sku: str, percent: int) -> bool:
    """Lower a product's price by ``percent``; False when there is no such product."""
    session = SessionLocal()  # BUG (SES101): the early return below never closes the session
    product = repository.get_product_by_sku(session, sku)
    if product is None:
        return False
    product.price_cents = product.price_cents * (100 - percent) // 100
    session.commit()
    session.close()
    return True


def restock(sku: str, quantity: int) -> None:
    """Add ``quantity`` units to a product's stock."""
    session = SessionLocal()  # BUG (SES102): if .one() or commit() raises, close() is skipped
    product = session.scalars(select(Product).where(Product.sku == sku)).one()
    product.stock += quantity
    session.commit()
    session.close()


@contextmanager
def transaction() -> Iterator[Session]:
    """A shortcut for session_scope() that someone wrote without the error handling."""
    session = SessionLocal()
    yield session  # BUG (SES103): if the with-block raises, neither commit() nor close() runs
    session.commit()
    session.close()


def rename_product(sku: str, new_name: str) -> None:
    # Correct as a caller: the session belongs to transaction(), the bug is in there.
    with transaction() as session:
        product = repository.get_product_by_sku(session, sku)
        if product is None:
            raise KeyError(sku)
        product.name = new_name


def reprice_all(percent: int) -> int:
    """Raise every price by ``percent``; returns how many products changed."""
    with SessionLocal() as session:
        products = repository.list_products(session)
        for product in products:
            product.price_cents = product.price_cents * (100 + percent) // 100
            session.commit()  # BUG (SES201): one transaction per product instead of one in all
        return len(products)


def reprice_all_at_once(percent: int) -> int:
    """The same, correct: one commit for the whole change."""
    with SessionLocal() as session:
        products = repository.list_products(session)
        for product in products:
            product.price_cents = product.price_cents * (100 + percent) // 100
        session.commit()
        return len(products)


def import_users(rows: List[Tuple[str, str]]) -> int:
    """Add users from (email, name) rows, skipping emails that already exist."""
    added = 0
    with SessionLocal() as session:
        for email, name in rows:
            session.add(User(email=email, name=name))
            try:
                session.flush()
            except IntegrityError:  # BUG (SES202): no rollback; the next flush fails too
                continue
            added += 1
        session.commit()
    return added


def import_users_safely(rows: List[Tuple[str, str]]) -> int:
    """The same, correct: a savepoint per row rolls back only the duplicate."""
    added = 0
    with SessionLocal() as session:
        for email, name in rows:
            try:
                with session.begin_nested():
                    session.add(User(email=email, name=name))
            except IntegrityError:
                continue
            added += 1
        session.commit()
    return added
