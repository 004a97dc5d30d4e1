"""The flake8 plugin reports what the CLI reports, under flake8's own selection and noqa."""
from __future__ import annotations

import ast
import os
import subprocess
import sys
from pathlib import Path

import pytest

from conftest import FIXTURES
from test_fixtures import settings_for
from sessionlint.config import Settings
from sessionlint.engine import check_paths

SINGLE = sorted(FIXTURES.glob("*.py"))


def _flake8(*args: str, cwd: Path | None = None, preview: bool = True) -> subprocess.CompletedProcess[str]:
    env = {k: v for k, v in os.environ.items() if k != "SESSIONLINT_PREVIEW"}
    if preview:
        env["SESSIONLINT_PREVIEW"] = "1"  # the fixtures cover the preview rules too
    return subprocess.run([sys.executable, "-m", "flake8", "--isolated", *args], capture_output=True,
                          text=True, cwd=cwd, env=env)


@pytest.mark.parametrize("path", SINGLE, ids=lambda p: p.name)
def test_same_findings_as_cli(path: Path) -> None:
    try:
        ast.parse(path.read_text(encoding="utf-8"))
    except SyntaxError:  # e.g. `match` on Python 3.9: flake8 reports E999 and runs no plugin
        pytest.skip(f"{path.name} uses syntax this Python's parser (flake8's) does not know")
    settings = settings_for(path)
    extensions = ["--enable-extensions", ",".join(settings.extend_select)] if settings.extend_select else []
    proc = _flake8("--select", "SES", *extensions, "--format", "%(row)d:%(col)d:%(code)s", str(path))
    got = sorted(tuple(line.split(":")) for line in proc.stdout.split())
    cli = check_paths([str(path)], settings).findings
    want = sorted((str(f.line), str(f.column), f.code) for f in cli)
    assert got == want


PACKAGES = sorted(p for p in FIXTURES.iterdir() if p.is_dir() and not p.name.startswith("__"))


@pytest.mark.parametrize("folder", PACKAGES, ids=lambda p: p.name)
def test_same_findings_as_cli_across_modules(folder: Path) -> None:
    # the plugin sees one file at a time; the loader finds the modules it imports on disk
    proc = _flake8("--select", "SES", "--format", "%(path)s:%(row)d:%(col)d:%(code)s", str(folder))
    got = sorted(tuple(line.rsplit(":", 3)) for line in proc.stdout.split())
    cli = check_paths([str(folder)], Settings(root=FIXTURES, preview=True)).findings
    want = sorted((f.path, str(f.line), str(f.column), f.code) for f in cli)
    assert got == want


def test_flake8_owns_noqa_and_select(tmp_path: Path) -> None:
    src = "from sqlalchemy.orm import Session\n\ndef f(e):\n    s = Session(e)  # noqa: SES101\n    s.query(1)\n"
    (tmp_path / "a.py").write_text(src)
    assert "SES101" not in _flake8("--select", "SES", "a.py", cwd=tmp_path).stdout
    (tmp_path / "a.py").write_text(src.replace("  # noqa: SES101", ""))
    assert "a.py:4:9: SES101" in _flake8("--select", "SES", "a.py", cwd=tmp_path).stdout
    assert "SES101" not in _flake8("--select", "SES", "--extend-ignore", "SES101", "a.py", cwd=tmp_path).stdout


def test_package_import_does_not_import_flake8() -> None:
    code = "import sys, sessionlint, sessionlint.flake8_plugin; print('flake8' in sys.modules)"
    out = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True).stdout.strip()
    assert out == "False"


def test_preview_rules_follow_the_project_setting(tmp_path: Path) -> None:
    src = ("from sqlalchemy.orm import sessionmaker\n\nFactory = sessionmaker()\nsession = Factory()\n\n"
           "def handler():\n    return session.scalar('select 1')\n")
    (tmp_path / "a.py").write_text(src)
    assert "SES104" not in _flake8("--select", "SES", "a.py", cwd=tmp_path, preview=False).stdout
    (tmp_path / "pyproject.toml").write_text("[tool.sessionlint]\npreview = true\n")
    assert "a.py:4:11: SES104" in _flake8("--select", "SES", "a.py", cwd=tmp_path, preview=False).stdout
