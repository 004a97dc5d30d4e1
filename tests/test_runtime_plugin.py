"""The pytest plugin, driven by pytester: recording, strict mode, scopes, xdist merge."""
from __future__ import annotations

import json

import pytest

pytest.importorskip("sqlalchemy", minversion="2.0")

CONFTEST = '''
import pytest
from sqlalchemy import create_engine, text
from sqlalchemy.orm import sessionmaker
from sqlalchemy.pool import StaticPool

engine = create_engine("sqlite://", poolclass=StaticPool)
Factory = sessionmaker(engine)
'''

TESTS = '''
from sqlalchemy import text
from conftest import Factory

def test_leaks():
    session = Factory()
    session.execute(text("select 1"))

def test_clean():
    with Factory() as session:
        session.execute(text("select 1"))
'''


def report_of(pytester: pytest.Pytester, name: str = "rt.json") -> dict:
    return json.loads((pytester.path / name).read_text())


def test_records_a_run_and_writes_the_report(pytester: pytest.Pytester) -> None:
    pytester.makeconftest(CONFTEST)
    pytester.makepyfile(test_app=TESTS)
    result = pytester.runpytest("--sessionlint", "--sessionlint-report=rt.json")
    result.assert_outcomes(passed=2)
    result.stdout.fnmatch_lines(["*sessionlint runtime*", "test_app.py:5: SES101 session created here*",
                                 "sessionlint runtime: SES101 1; report written to rt.json*"])
    (finding,) = report_of(pytester)["findings"]
    assert finding["code"] == "SES101"
    assert finding["line"] == 5 and finding["function"] == "test_leaks"
    assert finding["test"] == "test_app.py::test_leaks"
    sessions = report_of(pytester)["observations"]["sessions"]
    assert sorted((s["line"], s["created"], s["closed"], s["leaked"]) for s in sessions) == [(5, 1, 0, 1), (9, 1, 1, 0)]


def test_default_report_path(pytester: pytest.Pytester) -> None:
    pytester.makeconftest(CONFTEST)
    pytester.makepyfile(test_app=TESTS)
    pytester.runpytest("--sessionlint").assert_outcomes(passed=2)
    assert report_of(pytester, ".sessionlint-runtime.json")["findings"]


def test_strict_fails_the_leaking_test_at_teardown(pytester: pytest.Pytester) -> None:
    pytester.makeconftest(CONFTEST)
    pytester.makepyfile(test_app=TESTS)
    result = pytester.runpytest("--sessionlint-strict", "--sessionlint-report=rt.json")
    result.assert_outcomes(passed=2, errors=1)
    result.stdout.fnmatch_lines(["*ERROR at teardown of test_leaks*", "*1 session(s) or connection(s) left open*"])


def test_inactive_without_the_option(pytester: pytest.Pytester) -> None:
    pytester.makeconftest(CONFTEST)
    pytester.makepyfile(test_app='''
from sqlalchemy.orm import Session

def test_not_patched():
    assert not hasattr(Session.commit, "__wrapped__")
''')
    result = pytester.runpytest()
    result.assert_outcomes(passed=1)
    assert "sessionlint runtime" not in result.stdout.str()
    assert not (pytester.path / ".sessionlint-runtime.json").exists()


def test_module_fixture_sessions_belong_to_the_run(pytester: pytest.Pytester) -> None:
    pytester.makeconftest(CONFTEST + '''
@pytest.fixture(scope="module")
def shared():
    session = Factory()
    session.execute(text("select 1"))
    yield session
    session.close()

@pytest.fixture(scope="module")
def forgotten():
    session = Factory()
    session.execute(text("select 1"))
    return session
''')
    pytester.makepyfile(test_app='''
from sqlalchemy import text

def test_one(shared, forgotten):
    shared.execute(text("select 1"))

def test_two(shared):
    shared.execute(text("select 1"))
''')
    result = pytester.runpytest("--sessionlint-strict", "--sessionlint-report=rt.json")
    result.assert_outcomes(passed=2)  # neither test leaked anything of its own
    (finding,) = report_of(pytester)["findings"]
    assert finding["code"] == "SES101" and finding["function"] == "forgotten"
    assert finding["test"] is None


def test_commit_threshold_option(pytester: pytest.Pytester) -> None:
    pytester.makeconftest(CONFTEST)
    pytester.makepyfile(test_app='''
from sqlalchemy import text
from conftest import Factory

def test_loop():
    with Factory() as session:
        for _ in range(3):
            session.execute(text("select 1"))
            session.commit()
''')
    pytester.runpytest("--sessionlint-report=rt.json").assert_outcomes(passed=1)
    assert report_of(pytester)["findings"] == []
    pytester.runpytest("--sessionlint-report=rt.json", "--sessionlint-commit-threshold=2").assert_outcomes(passed=1)
    assert [f["code"] for f in report_of(pytester)["findings"]] == ["SES201"]
    result = pytester.runpytest("--sessionlint", "--sessionlint-commit-threshold=0")
    assert result.ret == pytest.ExitCode.USAGE_ERROR


def test_xdist_workers_reports_are_merged(pytester: pytest.Pytester) -> None:
    pytest.importorskip("xdist")
    pytester.makeconftest(CONFTEST)
    for i in range(4):
        pytester.makepyfile(**{f"test_m{i}": f'''
from sqlalchemy import text
from conftest import Factory

def test_leak_{i}():
    session = Factory()
    session.execute(text("select {i}"))
'''})
    result = pytester.runpytest_subprocess("-n", "2", "-p", "xdist", "--sessionlint", "--sessionlint-report=rt.json")
    result.assert_outcomes(passed=4)
    findings = report_of(pytester)["findings"]
    assert sorted(f["test"] for f in findings) == [f"test_m{i}.py::test_leak_{i}" for i in range(4)]
    assert sum(s["created"] for s in report_of(pytester)["observations"]["sessions"]) == 4


def test_strict_fails_a_test_whose_connection_the_garbage_collector_returned(pytester: pytest.Pytester) -> None:
    pytester.makeconftest(CONFTEST)
    pytester.makepyfile(test_app='''
import gc
from sqlalchemy import create_engine, text

engine = create_engine("sqlite://")

def test_gc_returns_it():
    conn = engine.connect()
    conn.execute(text("select 1"))
    del conn
    gc.collect()

def test_fine():
    with engine.connect() as conn:
        conn.execute(text("select 1"))
''')
    result = pytester.runpytest("--sessionlint-strict", "--sessionlint-report=rt.json")
    result.assert_outcomes(passed=2, errors=1)
    result.stdout.fnmatch_lines(["*ERROR at teardown of test_gc_returns_it*"])
