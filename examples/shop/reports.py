"""Back-office reports written against Core connections rather than the ORM."""
from __future__ import annotations

from typing import List, Tuple

from sqlalchemy import Engine, select, text, update

from .models import Order


def count_orders(engine: Engine) -> int:
    conn = engine.connect()  # BUG (SES101): never closed, so never returned to the pool
    return conn.execute(text("SELECT COUNT(*) FROM orders")).scalar_one()


def revenue_by_product(engine: Engine) -> List[Tuple[str, int]]:
    """(sku, revenue in cents), best sellers first."""
    query = text(
        "SELECT p.sku, SUM(l.quantity * l.unit_price_cents) AS revenue"
        " FROM order_lines l JOIN products p ON p.id = l.product_id"
        " GROUP BY p.sku ORDER BY revenue DESC"
    )
    with engine.connect() as conn:
        return [(sku, revenue) for sku, revenue in conn.execute(query)]


def low_stock(engine: Engine, threshold: int) -> List[str]:
    conn = engine.connect()
    try:
        rows = conn.execute(
            text("SELECT sku FROM products WHERE stock < :n ORDER BY sku"), {"n": threshold}
        )
        return [sku for (sku,) in rows]
    finally:
        conn.close()


def mark_orders_shipped(engine: Engine, order_ids: List[int]) -> int:
    # engine.begin(): one transaction, committed on success, connection closed either way.
    with engine.begin() as conn:
        result = conn.execute(
            update(Order).where(Order.id.in_(order_ids)).values(status="shipped")
        )
        return result.rowcount


def order_ids(engine: Engine) -> List[int]:
    with engine.connect() as conn:
        return list(conn.scalars(select(Order.id).order_by(Order.id)))
