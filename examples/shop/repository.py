"""Data access on a session the caller owns.

Every function here borrows its session: it is passed in, annotated ``Session``, and the
caller decides when to commit and when to close. Nothing here opens or closes a session,
so there is nothing for sessionlint to report.
"""
from __future__ import annotations

from typing import Dict, List, Optional

from sqlalchemy import func, select
from sqlalchemy.orm import Session, selectinload

from .models import Order, OrderLine, Product, User


class OutOfStock(Exception):
    def __init__(self, sku: str, wanted: int, available: int) -> None:
        super().__init__(f"{sku}: wanted {wanted}, only {available} in stock")
        self.sku = sku


def get_user_by_email(session: Session, email: str) -> Optional[User]:
    return session.scalar(select(User).where(User.email == email))


def add_user(session: Session, email: str, name: str) -> User:
    user = User(email=email, name=name)
    session.add(user)
    session.flush()  # assigns user.id without committing
    return user


def get_product_by_sku(session: Session, sku: str) -> Optional[Product]:
    return session.scalar(select(Product).where(Product.sku == sku))


def list_products(session: Session) -> List[Product]:
    return list(session.scalars(select(Product).order_by(Product.name)))


def add_products(session: Session, catalog: List[Dict[str, object]]) -> None:
    session.add_all(Product(**row) for row in catalog)


def create_order(session: Session, user: User, items: Dict[str, int]) -> Order:
    """Create a pending order for ``items`` (sku -> quantity) and take the stock."""
    lines = []
    for sku, quantity in items.items():
        product = get_product_by_sku(session, sku)
        if product is None:
            raise KeyError(sku)
        if product.stock < quantity:
            raise OutOfStock(sku, quantity, product.stock)
        product.stock -= quantity
        lines.append(
            OrderLine(product=product, quantity=quantity, unit_price_cents=product.price_cents)
        )
    order = Order(user=user, lines=lines)
    session.add(order)
    session.flush()
    return order


def orders_for_user(session: Session, user_id: int) -> List[Order]:
    stmt = (
        select(Order)
        .where(Order.user_id == user_id)
        .options(selectinload(Order.lines))
        .order_by(Order.id)
    )
    return list(session.scalars(stmt))


def count_orders_by_status(session: Session) -> Dict[str, int]:
    stmt = select(Order.status, func.count(Order.id)).group_by(Order.status)
    return {status: count for status, count in session.execute(stmt)}
