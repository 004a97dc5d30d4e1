"""The example app in examples/shop runs, and sessionlint reports exactly its marked bugs."""
from __future__ import annotations

import os
import re
import subprocess
import sys
from pathlib import Path

import pytest

ROOT = Path(__file__).parents[1]
SHOP = ROOT / "examples" / "shop"

pytest.importorskip("sqlalchemy", minversion="2.0")
from sqlalchemy import create_engine  # noqa: E402


@pytest.fixture
def shop(monkeypatch):
    monkeypatch.syspath_prepend(str(ROOT))
    from examples.shop import db, scenario

    return db, scenario


def test_scenario_runs_on_a_fresh_database(shop, tmp_path):
    db, scenario = shop
    engine = create_engine(f"sqlite:///{tmp_path / 'shop.db'}")
    lines = []
    try:
        summary = scenario.run(engine, echo=lines.append)
    finally:
        engine.dispose()

    assert summary["users"] == [1, 2]
    assert summary["orders"] == 2  # the out-of-stock order was rolled back
    assert summary["shipped"] == 1
    assert summary["stats_before_shipping"] == {"pending": 2}
    # MUG-01: 10 - 2 ordered + 5 restocked; TEE-01: 20% off and 1 sold; PIN-01: 3 sold.
    assert summary["catalog"] == [("MUG-01", 1200, 13), ("PIN-01", 400, 47), ("TEE-01", 2000, 4)]
    assert summary["revenue"] == [("TEE-01", 2500), ("MUG-01", 2400), ("PIN-01", 1200)]
    assert summary["low_stock"] == ["TEE-01"]
    assert summary["alice_orders"] == [(1, "shipped", 4900)]
    assert "Enamel pin (gold)" in summary["product_names"]
    assert any("order refused" in line for line in lines)
    # run() hands the global session factory back its own engine.
    assert db.SessionLocal.kw["bind"] is db.engine


def test_scenario_can_run_twice(shop, tmp_path):
    _, scenario = shop
    engine = create_engine(f"sqlite:///{tmp_path / 'shop.db'}")
    try:
        first = scenario.run(engine, echo=lambda _: None)
        second = scenario.run(engine, echo=lambda _: None)
    finally:
        engine.dispose()
    assert first == second


def test_python_dash_m_runs_the_demo(tmp_path):
    pythonpath = os.pathsep.join([str(ROOT), os.environ.get("PYTHONPATH", "")])
    proc = subprocess.run(
        [sys.executable, "-W", "error", "-m", "examples.shop"],
        cwd=tmp_path,  # the demo writes ./shop.db
        env=dict(os.environ, PYTHONPATH=pythonpath),
        capture_output=True,
        text=True,
        timeout=120,
    )
    assert proc.returncode == 0, proc.stdout + proc.stderr
    assert "2 orders" in proc.stdout
    assert (tmp_path / "shop.db").exists()


_MARKER = re.compile(r"#\s*BUG \((SES\d{3})\)")
_FINDING = re.compile(r"^(?P<path>.+?):(?P<line>\d+):(?P<col>\d+): (?P<code>SES\d{3})\b", re.M)


def _marked_bugs() -> set[tuple[str, int, str]]:
    bugs = set()
    for path in sorted(SHOP.glob("*.py")):
        for number, text in enumerate(path.read_text().splitlines(), start=1):
            match = _MARKER.search(text)
            if match:
                bugs.add((path.name, number, match.group(1)))
    return bugs


def test_sessionlint_reports_exactly_the_marked_bugs():
    cli = pytest.importorskip("sessionlint.cli", reason="the sessionlint CLI is not importable yet")
    # Let the child import sessionlint from wherever this process found it.
    package_parent = str(Path(cli.__file__).resolve().parents[1])
    pythonpath = os.pathsep.join([package_parent, os.environ.get("PYTHONPATH", "")])
    env = dict(os.environ, PYTHONPATH=pythonpath)
    # Calls main() the way the console script does, so it works for a click command and for a
    # plain main(argv=None) alike.
    proc = subprocess.run(
        [sys.executable, "-c", "import sys; from sessionlint.cli import main; sys.exit(main())",
         str(SHOP.relative_to(ROOT))],
        cwd=ROOT,
        env=env,
        capture_output=True,
        text=True,
        timeout=120,
    )
    found = {
        (Path(m["path"]).name, int(m["line"]), m["code"]) for m in _FINDING.finditer(proc.stdout)
    }
    expected = _marked_bugs()
    assert len(expected) == 7
    assert found == expected, (
        f"missed: {sorted(expected - found)}\nunexpected: {sorted(found - expected)}\n"
        f"output:\n{proc.stdout}{proc.stderr}"
    )
    assert proc.returncode == 1, proc.stdout + proc.stderr
