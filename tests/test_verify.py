"""`sessionlint verify`: static findings joined with runtime reports."""
from __future__ import annotations

import json
import re
import subprocess
import sys
from pathlib import Path

import pytest

from sessionlint.runtime.report import Report, RuntimeFinding, save
from sessionlint.runtime.sites import Site

ROOT = Path(__file__).resolve().parents[1]
SHOP = ROOT / "examples" / "shop"
_MARKER = re.compile(r"#\s*BUG \((SES\d{3})\)")

pytest.importorskip("sqlalchemy", minversion="2.0")


@pytest.fixture(scope="module")
def shop_report(tmp_path_factory: pytest.TempPathFactory) -> Path:
    path = tmp_path_factory.mktemp("shop") / "runtime.json"
    done = subprocess.run(
        [sys.executable, "-m", "pytest", "-q", "-p", "no:cacheprovider", str(SHOP / "tests"),
         "--sessionlint", f"--sessionlint-report={path}"],
        cwd=ROOT, capture_output=True, text=True)
    assert done.returncode == 0, done.stdout + done.stderr
    return path


def test_shop_bugs_are_confirmed_and_the_dynamic_leak_is_runtime_only(run_cli, shop_report: Path) -> None:
    code, out, err = run_cli("verify", "examples/shop", "--runtime", str(shop_report), "--format", "json",
                             cwd=ROOT)
    assert code == 1, err
    doc = json.loads(out)
    marked = {(str(p.relative_to(ROOT)), n) for p in SHOP.glob("*.py")
              for n, line in enumerate(p.read_text().splitlines(), 1) if _MARKER.search(line)}
    statuses = {(f["path"], f["line"]): f["status"] for f in doc["findings"]}
    assert set(statuses) == marked
    assert set(statuses.values()) == {"confirmed"}
    # the correct code ran clean: every runtime finding confirms a marked bug or is runtime-only
    runtime = json.loads(shop_report.read_text())["findings"]
    used = {(r["code"], r["line"], r["function"]) for f in doc["findings"] for r in f["runtime"]}
    assert len(runtime) == len(used) + len(doc["runtime_only"]) == 8
    (only,) = doc["runtime_only"]
    assert (only["code"], only["path"], only["line"]) == ("SES101", "examples/shop/jobs.py", 33)
    assert doc["summary"] == {"confirmed": 7, "contradicted": 0, "not-exercised": 0, "not-checked": 0}


def test_text_output_and_summary(run_cli, shop_report: Path) -> None:
    code, out, err = run_cli("verify", "examples/shop", "--runtime", str(shop_report), cwd=ROOT)
    assert code == 1
    assert "examples/shop/services.py:122:13: SES201 `session.commit()` inside a loop commits once per iteration [confirmed]" in out
    assert "examples/shop/jobs.py:33:1: SES101 session created here" in out and "[runtime-only]" in out
    assert "7 static findings: 7 confirmed, 0 contradicted, 0 not-exercised, 0 not-checked; 1 runtime-only." in err


LOOP = '''\
from sqlalchemy.orm import Session, sessionmaker

Factory = sessionmaker()


def save_all(items):
    with Factory() as session:
        for item in items:
            session.add(item)
            session.commit()


def import_rows(rows):
    with Factory() as session:
        for row in rows:
            session.add(row)
            try:
                session.flush()
            except Exception:
                pass
        session.commit()


def leaky():
    session = Factory()
    session.execute("select 1")
'''


def _site(path: Path, line: int, function: str, start: int, end: int) -> Site:
    return Site(str(path.resolve()), line, function, start, end)


def _verify(run_cli, tmp_path: Path, report: Report, *extra: str) -> dict:
    save(report, str(tmp_path / "rt.json"))
    code, out, err = run_cli("verify", "app.py", "--isolated", "--runtime", "rt.json", "--format", "json",
                             *extra, cwd=tmp_path)
    assert code in (0, 1), err
    return {(f["code"], f["line"]): f for f in json.loads(out)["findings"]}


def test_clean_runs_contradict_loop_and_rollback_findings_but_not_leaks(run_cli, tmp_path: Path) -> None:
    app = tmp_path / "app.py"
    app.write_text(LOOP)
    report = Report()
    # save_all ran 4 times with one item each: four commits, never two in one call
    report.observe("commits", _site(app, 10, "save_all", 6, 10), commits=4, calls=4, max_per_call=1)
    # a flush in import_rows failed and the session was rolled back before its next use
    report.observe("failures", _site(app, 18, "import_rows", 13, 21), failed=1, recovered=1)
    # leaky() ran twice and its session was closed both times (by something we cannot see)
    report.observe("sessions", _site(app, 25, "leaky", 24, 26), created=2, used=2, closed=2)
    found = _verify(run_cli, tmp_path, report)
    assert found[("SES201", 10)]["status"] == "contradicted"
    assert found[("SES202", 19)]["status"] == "contradicted"
    assert found[("SES101", 25)]["status"] == "not-exercised"
    assert "always closed" in found[("SES101", 25)]["detail"]


def test_no_evidence_is_not_exercised_and_unobserved_rules_are_not_checked(run_cli, tmp_path: Path) -> None:
    app = tmp_path / "app.py"
    app.write_text(LOOP + '''

def borrowed(session: Session):
    session.commit()
''')
    found = _verify(run_cli, tmp_path, Report(), "--extend-select", "SES203")
    assert found[("SES201", 10)]["status"] == "not-exercised"
    assert found[("SES203", 30)]["status"] == "not-checked"


def test_runtime_finding_in_the_same_function_confirms(run_cli, tmp_path: Path) -> None:
    app = tmp_path / "app.py"
    app.write_text(LOOP)
    report = Report()
    report.add(RuntimeFinding("SES202", "reused after failure", _site(app, 18, "import_rows", 13, 21)))
    report.add(RuntimeFinding("SES101", "elsewhere", _site(tmp_path / "other.py", 3, "f", 1, 5)))
    found = _verify(run_cli, tmp_path, report)
    assert found[("SES202", 19)]["status"] == "confirmed"
    save(report, str(tmp_path / "rt.json"))
    code, out, _ = run_cli("verify", "app.py", "--isolated", "--runtime", "rt.json", "--format", "json", cwd=tmp_path)
    assert json.loads(out)["runtime_only"] == []  # other.py was not analysed


@pytest.mark.parametrize("content, message", [
    (None, "cannot read runtime report"),
    ("{not json", "is not JSON"),
    ('{"tool": "something else"}', "not a sessionlint runtime report"),
    ('{"tool": "sessionlint-runtime", "version": 1, "findings": [{"code": "SES101"}]}', "is malformed"),
])
def test_bad_reports_are_one_line_errors(run_cli, tmp_path: Path, content, message) -> None:
    (tmp_path / "app.py").write_text(LOOP)
    if content is not None:
        (tmp_path / "rt.json").write_text(content)
    code, out, err = run_cli("verify", "app.py", "--runtime", "rt.json", cwd=tmp_path)
    assert code == 2
    assert message in err and len(err.strip().splitlines()) == 1 and "Traceback" not in err


def test_report_round_trip_and_merge(tmp_path: Path) -> None:
    a, b = Report(), Report()
    site = Site("/x/app.py", 3, "f", 1, 9)
    a.add(RuntimeFinding("SES101", "m", site, (("session created", site),), test="t::a"))
    b.add(RuntimeFinding("SES101", "m", site, test="t::b"))
    a.observe("commits", site, commits=2, calls=1, max_per_call=2)
    b.observe("commits", site, commits=5, calls=1, max_per_call=5)
    a.merge(b)
    save(a, str(tmp_path / "r.json"))
    from sessionlint.runtime.report import load

    back = load(str(tmp_path / "r.json"))
    (finding,) = back.sorted_findings()
    assert finding.count == 2 and finding.related[0][0] == "session created"
    (entry,) = back.entries("commits")
    assert (entry["commits"], entry["calls"], entry["max_per_call"]) == (7, 2, 5)
