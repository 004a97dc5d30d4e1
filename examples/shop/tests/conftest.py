"""Fixtures for the shop's own tests: a fresh SQLite database per test."""
from __future__ import annotations

import sys
from pathlib import Path
from typing import Iterator

import pytest
from sqlalchemy import Engine, create_engine

sys.path.insert(0, str(Path(__file__).resolve().parents[3]))

from examples.shop import db  # noqa: E402
from examples.shop.models import Base  # noqa: E402
from examples.shop.scenario import CATALOG  # noqa: E402


@pytest.fixture
def engine(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> Iterator[Engine]:
    engine = create_engine(f"sqlite:///{tmp_path / 'shop.db'}")
    Base.metadata.create_all(engine)
    monkeypatch.setattr(db, "engine", engine)
    previous = db.SessionLocal.kw.get("bind")
    db.SessionLocal.configure(bind=engine)
    yield engine
    db.SessionLocal.configure(bind=previous)
    engine.dispose()


@pytest.fixture
def catalog(engine: Engine) -> Engine:
    from examples.shop import services

    services.seed_catalog(CATALOG + [
        {"sku": "CAP-01", "name": "Cap", "price_cents": 1500, "stock": 8},
        {"sku": "BAG-01", "name": "Tote bag", "price_cents": 900, "stock": 12},
    ])
    return engine
