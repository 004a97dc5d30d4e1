"""A small shopping day, run end to end against a real database.

It goes through the buggy functions too: on this happy path they all work, which is exactly
why such leaks reach production. Only a failure (or a busy server running out of pooled
connections) shows them, and sessionlint finds them without running anything.
"""
from __future__ import annotations

from typing import Any, Callable, Dict, Optional

from sqlalchemy import Engine

from . import api, db, reports, services
from .models import Base
from .repository import OutOfStock

CATALOG = [
    {"sku": "MUG-01", "name": "Enamel mug", "price_cents": 1200, "stock": 10},
    {"sku": "TEE-01", "name": "Logo T-shirt", "price_cents": 2500, "stock": 5},
    {"sku": "PIN-01", "name": "Enamel pin", "price_cents": 400, "stock": 50},
]


def run(engine: Optional[Engine] = None, echo: Callable[[str], Any] = print) -> Dict[str, Any]:
    """Create the tables afresh on ``engine`` (default: ``db.engine``) and run the scenario.

    While it runs, ``db.SessionLocal`` is bound to ``engine``. Returns a few figures so
    that tests can check the outcome.
    """
    if engine is None:
        engine = db.engine
    previous_bind = db.SessionLocal.kw.get("bind")
    db.SessionLocal.configure(bind=engine)
    try:
        return _run(engine, echo)
    finally:
        db.SessionLocal.configure(bind=previous_bind)


def _run(engine: Engine, echo: Callable[[str], Any]) -> Dict[str, Any]:
    Base.metadata.drop_all(engine)
    Base.metadata.create_all(engine)

    services.seed_catalog(CATALOG)
    alice = services.register_user("alice@example.com", "Alice")
    bob = services.register_user("bob@example.com", "Bob")
    assert services.register_user("alice@example.com", "Alice again") == alice
    echo(f"registered users {alice} and {bob}")

    first = services.place_order("alice@example.com", {"MUG-01": 2, "TEE-01": 1})
    second = services.place_order("bob@example.com", {"PIN-01": 3})
    echo(f"placed orders {first} and {second}")
    try:
        services.place_order("bob@example.com", {"MUG-01": 1, "TEE-01": 99})
    except OutOfStock as exc:
        echo(f"order refused, nothing changed: {exc}")

    discounted = services.apply_discount("TEE-01", 20)
    unknown = services.apply_discount("NOPE-00", 20)  # the early-return path of the SES101 bug
    services.restock("MUG-01", 5)
    services.rename_product("PIN-01", "Enamel pin (gold)")
    services.reprice_all(0)
    services.reprice_all_at_once(0)
    # no duplicates here: the SES202 bug only bites on a duplicate, which the first one skips
    services.import_users([("carol@example.com", "Carol")])
    services.import_users_safely([("dave@example.com", "Dave"), ("dave@example.com", "Dave again")])
    echo(f"discount applied: TEE-01 {discounted}, NOPE-00 {unknown}")

    products = api.call(api.list_products, api.get_session)
    stats = api.call(api.order_stats, api.get_db)
    echo(f"api: {len(products)} products, orders by status {stats}")

    shipped = reports.mark_orders_shipped(engine, [first])
    summary = {
        "users": [alice, bob],
        "orders": reports.count_orders(engine),
        "shipped": shipped,
        "catalog": services.catalog(),
        "revenue": reports.revenue_by_product(engine),
        "low_stock": reports.low_stock(engine, 5),
        "alice_orders": services.order_summary("alice@example.com"),
        "stats_before_shipping": stats,
        "product_names": [p["name"] for p in api.call(api.list_products, api.get_session_explicit)],
    }
    echo(f"{summary['orders']} orders, revenue by product {summary['revenue']}")
    echo(f"catalog now {summary['catalog']}")
    return summary
