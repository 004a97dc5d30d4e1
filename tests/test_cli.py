"""The command line: output format, exit codes, selection, config, noqa, bad input."""
from __future__ import annotations

import json
import subprocess
import sys
from pathlib import Path

import pytest

LEAK = """\
from sqlalchemy.orm import Session


def load(engine):
    s = Session(engine)
    return s.query(1).all()
"""

CLEAN = """\
from sqlalchemy.orm import Session


def load(engine):
    with Session(engine) as s:
        return s.query(1).all()
"""


@pytest.fixture
def project(tmp_path: Path) -> Path:
    (tmp_path / "pyproject.toml").write_text("[project]\nname = 'x'\n")
    pkg = tmp_path / "app"
    pkg.mkdir()
    (pkg / "__init__.py").write_text("")
    (pkg / "leak.py").write_text(LEAK)
    (pkg / "clean.py").write_text(CLEAN)
    return tmp_path


def test_text_output_and_exit_code(run_cli, project: Path) -> None:
    code, out, err = run_cli("app", cwd=project)
    assert code == 1
    assert out == "app/leak.py:5:9: SES101 Session `s` is not closed on every path out of `load`\n"
    assert "Found 1 finding" in err


def test_clean_exit_zero(run_cli, project: Path) -> None:
    code, out, _ = run_cli("app/clean.py", cwd=project)
    assert (code, out) == (0, "")


def test_json_shape(run_cli, project: Path) -> None:
    code, out, _ = run_cli("--format", "json", "app", cwd=project)
    doc = json.loads(out)
    assert code == 1
    assert doc["version"] == "0.1.0" and doc["errors"] == []
    (f,) = doc["findings"]
    assert f == {"path": "app/leak.py", "line": 5, "column": 9, "end_line": 5, "end_column": 24,
                 "code": "SES101", "name": "session-not-closed", "message": f["message"], "hint": f["hint"],
                 "scope": {"qualname": "load", "start_line": 4, "end_line": 6}}


def test_sarif_and_github(run_cli, project: Path) -> None:
    code, out, _ = run_cli("--format", "sarif", "app", cwd=project)
    doc = json.loads(out)
    assert doc["version"] == "2.1.0"
    (result,) = doc["runs"][0]["results"]
    assert result["ruleId"] == "SES101"
    region = result["locations"][0]["physicalLocation"]["region"]
    assert (region["startLine"], region["startColumn"]) == (5, 9)
    code, out, _ = run_cli("--format", "github", "app", cwd=project)
    assert out.startswith("::error file=app/leak.py,line=5,col=9,")


@pytest.mark.parametrize("flag", [("--ignore", "SES101"), ("--ignore", "SES1"), ("--ignore", "session-not-closed"),
                                  ("--select", "SES102")])
def test_select_ignore(run_cli, project: Path, flag: tuple[str, str]) -> None:
    code, out, _ = run_cli(*flag, "app", cwd=project)
    assert (code, out) == (0, "")


def test_select_more_specific_than_ignore(run_cli, project: Path) -> None:
    code, out, _ = run_cli("--select", "SES101", "--ignore", "SES1", "app", cwd=project)
    assert code == 1 and "SES101" in out


def test_unknown_selector_is_usage_error(run_cli, project: Path) -> None:
    code, _, err = run_cli("--select", "XYZ9", "app", cwd=project)
    assert code == 2 and "XYZ9" in err


def test_noqa(run_cli, project: Path) -> None:
    leak = project / "app" / "leak.py"
    for comment, reported in [("# noqa", False), ("# noqa: SES101", False), ("# NOQA:SES1", False),
                              ("# noqa: SES102", True), ("# noqa:E501,SES101", False)]:
        leak.write_text(LEAK.replace("s = Session(engine)", f"s = Session(engine)  {comment}"))
        code, out, _ = run_cli("app/leak.py", cwd=project)
        assert ("SES101" in out) is reported, comment


def test_config_select_and_per_file_ignores(run_cli, project: Path) -> None:
    (project / "pyproject.toml").write_text(
        "[tool.sessionlint]\nper-file-ignores = { 'app/leak.py' = ['SES101'] }\n")
    assert run_cli("app", cwd=project)[0] == 0
    (project / "pyproject.toml").write_text("[tool.sessionlint]\nignore = ['SES1']\n")
    assert run_cli("app", cwd=project)[0] == 0


def test_config_exclude(run_cli, project: Path) -> None:
    (project / "pyproject.toml").write_text("[tool.sessionlint]\nexclude = ['app/leak.py']\n")
    assert run_cli("app", cwd=project)[0] == 0
    # a file named on the command line is analysed unless --force-exclude
    assert run_cli("app/leak.py", cwd=project)[0] == 1
    assert run_cli("--force-exclude", "app/leak.py", cwd=project)[0] == 0


@pytest.mark.parametrize("body, needle", [
    ("[tool.sessionlint]\nselec = ['SES1']\n", "tool.sessionlint.selec"),
    ("[tool.sessionlint]\nselect = ['SES9XX']\n", "SES9XX"),
    ("[tool.sessionlint]\nselect = 'SES1'\nignore = 3\n", "tool.sessionlint.ignore"),
    ("[tool.sessionlint\n", "invalid TOML"),
])
def test_config_errors(run_cli, project: Path, body: str, needle: str) -> None:
    (project / "pyproject.toml").write_text(body)
    code, out, err = run_cli("app", cwd=project)
    assert code == 2 and out == ""
    assert needle in err and "pyproject.toml" in err
    assert len(err.strip().splitlines()) == 1 and "Traceback" not in err


def test_project_vocabulary_from_config(run_cli, project: Path) -> None:
    (project / "app" / "custom.py").write_text(
        "from app.db import make_session\n\ndef f():\n    s = make_session()\n    s.query(1)\n")
    assert "custom.py" not in run_cli("app", cwd=project)[1]
    (project / "pyproject.toml").write_text("[tool.sessionlint]\nfactories = ['app.db:make_session']\n")
    assert "app/custom.py:4:9: SES101" in run_cli("app", cwd=project)[1]


def test_syntax_error_is_a_finding_and_others_still_run(run_cli, project: Path) -> None:
    (project / "app" / "broken.py").write_text("def f(:\n    pass\n")
    (project / "app" / "latin.py").write_bytes(b"x = '\xff\xfe'\n")
    code, out, err = run_cli("app", cwd=project)
    assert code == 1
    assert "app/broken.py:1:7: SES001" in out
    assert "app/latin.py:1:1: SES001" in out
    assert "app/leak.py:5:9: SES101" in out
    assert "Traceback" not in err


def test_missing_path_is_exit_2_but_others_analysed(run_cli, project: Path) -> None:
    code, out, err = run_cli("app", "nope.py", cwd=project)
    assert code == 2
    assert "SES101" in out
    assert "nope.py: error:" in err


def test_skips_virtualenvs_and_build_dirs(run_cli, project: Path) -> None:
    for d in (".venv", "build", "node_modules", "__pycache__"):
        (project / d).mkdir()
        (project / d / "x.py").write_text(LEAK)
    code, out, _ = run_cli(".", cwd=project)
    assert out.count("SES101") == 1 and out.startswith("./app/leak.py")


def test_rule_docs_command(run_cli) -> None:
    code, out, _ = run_cli("rule", "SES101")
    assert code == 0 and "# SES101 session-not-closed" in out and "## Why is this bad?" in out
    assert run_cli("rule", "session-not-closed")[1] == out
    assert run_cli("rule", "SES999")[0] == 2
    assert "SES103 provider-without-finally" in run_cli("rule", "--all")[1]


def test_deterministic_output(run_cli, project: Path) -> None:
    for i in range(5):
        (project / "app" / f"leak{i}.py").write_text(LEAK)
    outs = {run_cli("app", cwd=project)[1] for _ in range(3)}
    assert len(outs) == 1
    lines = outs.pop().splitlines()
    assert lines == sorted(lines)


def test_version(run_cli) -> None:
    code, out, _ = run_cli("--version")
    assert code == 0 and "0.1.0" in out


def test_python_dash_m(project: Path) -> None:
    proc = subprocess.run([sys.executable, "-m", "sessionlint", "app"], cwd=project,
                          capture_output=True, text=True)
    assert proc.returncode == 1 and "SES101" in proc.stdout


def test_configured_closer(run_cli, project: Path) -> None:
    (project / "app" / "uses.py").write_text(
        "from sqlalchemy.orm import Session\nfrom app.db import release\n\n"
        "def a(engine):\n    s = Session(engine)\n    release(s)\n")
    out = run_cli("app/uses.py", cwd=project)[1]
    assert "uses.py:5:9: SES101" in out  # `release` is not known to close
    (project / "pyproject.toml").write_text(
        "[tool.sessionlint]\nclosers = ['app.db:release']\nproviders = ['app.db.scope']\n")
    assert run_cli("app/uses.py", cwd=project)[1] == ""


def test_analysed_code_is_never_imported(run_cli, project: Path) -> None:
    marker = project / "imported.txt"
    (project / "app" / "side_effect.py").write_text(
        f"open({str(marker)!r}, 'w').write('x')\nfrom sqlalchemy.orm import Session\n")
    run_cli("app", cwd=project)
    assert not marker.exists()


def test_internal_error_in_one_file_spares_the_others(run_cli, project: Path, monkeypatch) -> None:
    from sessionlint.rules import session_not_closed

    original = session_not_closed.SessionNotClosed.check

    def flaky(self, model):
        if model.summary.name.endswith("clean"):
            raise RuntimeError("boom")
        return original(self, model)

    monkeypatch.setattr(session_not_closed.SessionNotClosed, "check", flaky)
    code, out, err = run_cli("app", cwd=project)
    assert code == 2
    assert "app/leak.py:5:9: SES101" in out
    assert "app/clean.py: error: internal error: RuntimeError: boom" in err


BORROWED_COMMIT = """\
from sqlalchemy.orm import Session


def rename(session: Session, user, name):
    user.name = name
    session.commit()


def run_batch(session: Session, rows):
    session.commit()
"""


def test_borrowed_commit_is_off_by_default_and_on_by_policy(run_cli, project: Path) -> None:
    (project / "app" / "crud.py").write_text(BORROWED_COMMIT)
    assert "SES203" not in run_cli("app/crud.py", cwd=project)[1]
    assert "SES203" not in run_cli("--select", "SES2", "app/crud.py", cwd=project)[1]  # prefix: no
    assert run_cli("--select", "SES203", "app/crud.py", cwd=project)[1].count("SES203") == 2
    (project / "pyproject.toml").write_text("[tool.sessionlint]\nborrowed-sessions = 'no-commit'\n")
    out = run_cli("app/crud.py", cwd=project)[1]
    assert "crud.py:6:5: SES203" in out and "crud.py:10:5: SES203" in out


def test_rule_options_allow_list(run_cli, project: Path) -> None:
    (project / "app" / "crud.py").write_text(BORROWED_COMMIT)
    (project / "pyproject.toml").write_text(
        "[tool.sessionlint]\nborrowed-sessions = 'no-commit'\n"
        "[tool.sessionlint.options.commit-in-borrowed-session]\nallow = ['app.crud.run_*']\n")
    out = run_cli("app/crud.py", cwd=project)[1]
    assert "crud.py:6:5: SES203" in out and ":10:" not in out


@pytest.mark.parametrize("body, needle", [
    ("[tool.sessionlint.options.commit-in-borrowed-session]\nallw = []\n", "allw"),
    ("[tool.sessionlint.options.no-such-rule]\nallow = []\n", "no-such-rule"),
    ("[tool.sessionlint]\nborrowed-sessions = 'sometimes'\n", "borrowed-sessions"),
])
def test_rule_option_errors(run_cli, project: Path, body: str, needle: str) -> None:
    (project / "pyproject.toml").write_text(body)
    code, _, err = run_cli("app", cwd=project)
    assert code == 2 and needle in err


def test_libcst_internal_error_is_a_syntax_finding_not_a_crash(run_cli, tmp_path, monkeypatch):
    # libcst 1.9 raises CSTLogicError on concatenated t-strings (Python 3.14 syntax)
    import libcst

    from sessionlint import parsing

    def broken(text, *args, **kwargs):
        raise libcst.CSTLogicError("Logic error!")

    (tmp_path / "a.py").write_text("y = 1\nx = (t'a ' t'{y}')\n")
    monkeypatch.setattr(parsing.cst, "parse_module", broken)
    code, out, err = run_cli("check", "--isolated", "a.py", cwd=tmp_path)
    assert code == 1 and "Traceback" not in err
    assert "a.py:1:1: SES001 File could not be parsed by libcst: CSTLogicError" in out


def test_attribute_cycles_through_classes_do_not_recurse(run_cli, tmp_path):
    # indico: `self.dir = PluginScriptDirectory.dir` refers to itself through the class
    (tmp_path / "m.py").write_text(
        "from sqlalchemy.orm import Session\n\n"
        "class A:\n    def __init__(self):\n        self.dir = B.dir\n\n"
        "class B:\n    def __init__(self):\n        self.dir = A.dir\n\n"
        "class C:\n    def __init__(self):\n        self.dir = C.dir\n        self.s = Session()\n")
    code, out, err = run_cli("check", "--isolated", "m.py", cwd=tmp_path)
    assert code == 0, (out, err)
    assert "internal error" not in err
