"""The shop's behaviour, one test per use case, including the error paths.

Run them under the runtime checker and join the result with the static findings:

    pytest examples/shop/tests --sessionlint --sessionlint-report=shop-runtime.json
    sessionlint verify examples/shop --runtime shop-runtime.json
"""
from __future__ import annotations

import pytest
from sqlalchemy import Engine
from sqlalchemy.exc import NoResultFound, PendingRollbackError
from sqlalchemy.orm import Session

from examples.shop import api, jobs, reports, services
from examples.shop.repository import OutOfStock


def test_register_user_is_idempotent(engine: Engine) -> None:
    first = services.register_user("ann@example.com", "Ann")
    assert services.register_user("ann@example.com", "Ann again") == first


def test_place_order_and_summary(catalog: Engine) -> None:
    services.register_user("ann@example.com", "Ann")
    order_id = services.place_order("ann@example.com", {"MUG-01": 2})
    assert services.order_summary("ann@example.com") == [(order_id, "pending", 2400)]
    assert services.order_summary("nobody@example.com") == []


def test_out_of_stock_changes_nothing(catalog: Engine) -> None:
    services.register_user("ann@example.com", "Ann")
    with pytest.raises(OutOfStock):
        services.place_order("ann@example.com", {"MUG-01": 1, "TEE-01": 99})
    assert ("MUG-01", 1200, 10) in services.catalog()


def test_apply_discount(catalog: Engine) -> None:
    assert services.apply_discount("TEE-01", 20)
    assert ("TEE-01", 2000, 5) in services.catalog()


def test_apply_discount_unknown_sku(catalog: Engine) -> None:
    assert not services.apply_discount("NOPE-00", 20)  # leaks its session (SES101)


def test_restock(catalog: Engine) -> None:
    services.restock("MUG-01", 5)
    assert ("MUG-01", 1200, 15) in services.catalog()


def test_restock_unknown_sku(catalog: Engine) -> None:
    with pytest.raises(NoResultFound):
        services.restock("NOPE-00", 5)  # .one() raises before close() (SES102)


def test_rename_product(catalog: Engine) -> None:
    services.rename_product("PIN-01", "Enamel pin (gold)")
    with pytest.raises(KeyError):
        services.rename_product("NOPE-00", "x")  # transaction() skips close() (SES103)


def test_reprice_all_commits_per_product(catalog: Engine) -> None:
    assert services.reprice_all(10) == 5  # five commits from one line (SES201)


def test_reprice_all_at_once(catalog: Engine) -> None:
    assert services.reprice_all_at_once(10) == 5


def test_import_users_duplicate_poisons_the_session(engine: Engine) -> None:
    rows = [("a@example.com", "A"), ("a@example.com", "A twice"), ("b@example.com", "B")]
    with pytest.raises(PendingRollbackError):
        services.import_users(rows)  # the swallowed IntegrityError (SES202)


def test_import_users_safely(engine: Engine) -> None:
    rows = [("a@example.com", "A"), ("a@example.com", "A twice"), ("b@example.com", "B")]
    assert services.import_users_safely(rows) == 2


def test_api_endpoints(catalog: Engine) -> None:
    assert len(api.call(api.list_products, api.get_session)) == 5
    assert api.call(api.order_stats, api.get_session_explicit) == {}


def test_api_error_in_endpoint(catalog: Engine) -> None:
    def broken(db: Session) -> None:
        api.list_products(db)
        raise RuntimeError("endpoint failed")

    with pytest.raises(RuntimeError):
        api.call(broken, api.get_db)  # get_db's close() never runs (SES103)
    with pytest.raises(RuntimeError):
        api.call(broken, api.get_session)  # closed by its with-block


def test_reports(catalog: Engine) -> None:
    services.register_user("ann@example.com", "Ann")
    order_id = services.place_order("ann@example.com", {"TEE-01": 4})
    assert reports.count_orders(catalog) == 1  # its connection is never closed (SES101)
    assert reports.low_stock(catalog, 2) == ["TEE-01"]
    assert reports.revenue_by_product(catalog) == [("TEE-01", 10000)]
    assert reports.mark_orders_shipped(catalog, [order_id]) == 1
    assert reports.order_ids(catalog) == [order_id]


def test_jobs(catalog: Engine) -> None:
    assert jobs.run("count_pending") == 0  # leaks a session the static analysis cannot see
