"""The hook in .pre-commit-hooks.yaml installs with pre-commit and fails on a leaked session.

`pre-commit try-repo` clones the hook repository at a commit. Run straight on the project
root it would fail before the first commit exists, and with uncommitted work it only carries
over staged and tracked-modified files (`git add -u`), silently leaving out new untracked
ones. So the test commits a snapshot of the working tree (tracked files plus untracked ones
that .gitignore does not exclude) into a scratch repository and tries that: it always tests
the code as it is on disk. Installing the hook needs pip to reach the package index
(libcst, click, setuptools).
"""
from __future__ import annotations

import importlib.util
import os
import re
import shutil
import subprocess
import sys
from pathlib import Path
from typing import Dict, List, Optional

import pytest

ROOT = Path(__file__).parents[1]

LEAK = '''\
from sqlalchemy import text
from sqlalchemy.orm import Session


def count_rows(engine):
    s = Session(engine)
    return s.execute(text("SELECT 1")).scalar()
'''
LEAK_LINE = 6  # `s = Session(engine)`: opened, never closed, not returned

CLEAN = '''\
from sqlalchemy import text
from sqlalchemy.orm import Session


def count_rows(engine):
    with Session(engine) as s:
        return s.execute(text("SELECT 1")).scalar()
'''

_IGNORED_WITHOUT_GIT = shutil.ignore_patterns(
    ".git", "__pycache__", "*.pyc", "*.egg-info", ".venv", "venv", "build", "dist",
    ".pytest_cache", ".mypy_cache", "*.db",
)


def _pre_commit_command() -> Optional[List[str]]:
    exe = shutil.which("pre-commit")
    if exe:
        return [exe]
    if importlib.util.find_spec("pre_commit") is not None:
        return [sys.executable, "-m", "pre_commit"]
    return None


def _env(tmp: Path) -> Dict[str, str]:
    # Drop GIT_DIR, GIT_INDEX_FILE & co: set when the suite itself runs from a git hook, they
    # would point every git command below at the wrong repository.
    env = {k: v for k, v in os.environ.items() if not k.startswith("GIT_")}
    env.update(
        PRE_COMMIT_HOME=str(tmp / "pre-commit-home"),
        PRE_COMMIT_COLOR="never",
        GIT_AUTHOR_NAME="sessionlint tests",
        GIT_AUTHOR_EMAIL="tests@sessionlint.invalid",
        GIT_COMMITTER_NAME="sessionlint tests",
        GIT_COMMITTER_EMAIL="tests@sessionlint.invalid",
        GIT_CONFIG_NOSYSTEM="1",
    )
    return env


def _git(cwd: Path, env: Dict[str, str], *args: str) -> str:
    proc = subprocess.run(
        ["git", "-c", "commit.gpgsign=false", "-c", "init.defaultBranch=main", *args],
        cwd=cwd, env=env, capture_output=True, text=True, timeout=120,
    )
    assert proc.returncode == 0, f"git {' '.join(args)} failed:\n{proc.stdout}{proc.stderr}"
    return proc.stdout


def _working_tree_files(env: Dict[str, str]) -> Optional[List[str]]:
    proc = subprocess.run(
        ["git", "ls-files", "-z", "--cached", "--others", "--exclude-standard"],
        cwd=ROOT, env=env, capture_output=True, text=True, timeout=120,
    )
    if proc.returncode != 0:
        return None  # not a git work tree (an unpacked sdist, say)
    return [name for name in proc.stdout.split("\0") if name and (ROOT / name).is_file()]


def _snapshot_hook_repo(dest: Path, env: Dict[str, str]) -> Path:
    files = _working_tree_files(env)
    if files is None:
        shutil.copytree(ROOT, dest, ignore=_IGNORED_WITHOUT_GIT)
    else:
        for name in files:
            target = dest / name
            target.parent.mkdir(parents=True, exist_ok=True)
            shutil.copy2(ROOT / name, target)
    assert (dest / ".pre-commit-hooks.yaml").is_file()
    _git(dest, env, "init", "-q")
    _git(dest, env, "add", "-A")
    _git(dest, env, "commit", "-q", "-m", "snapshot of the working tree")
    return dest


@pytest.fixture(scope="module")
def tools():
    if shutil.which("git") is None:
        pytest.skip("git is not on PATH")
    pre_commit = _pre_commit_command()
    if pre_commit is None:
        pytest.skip("pre-commit is neither on PATH nor importable")
    return pre_commit


@pytest.fixture(scope="module")
def hook_repo(tools, tmp_path_factory):
    tmp = tmp_path_factory.mktemp("hook-repo")
    return _snapshot_hook_repo(tmp / "sessionlint", _env(tmp))


def _try_repo(pre_commit: List[str], hook_repo: Path, tmp_path: Path, name: str, source: str):
    env = _env(tmp_path)
    project = tmp_path / "project"
    project.mkdir()
    _git(project, env, "init", "-q")
    (project / name).write_text(source)
    _git(project, env, "add", name)
    proc = subprocess.run(
        [*pre_commit, "try-repo", "--color", "never", str(hook_repo), "sessionlint",
         "--files", name],
        cwd=project, env=env, capture_output=True, text=True, timeout=900,
    )
    return proc, proc.stdout + proc.stderr


def test_hook_fails_on_a_leaked_session(tools, hook_repo, tmp_path):
    proc, output = _try_repo(tools, hook_repo, tmp_path, "leak.py", LEAK)
    assert proc.returncode != 0, output
    assert "SES101" in output, output
    assert re.search(rf"leak\.py:{LEAK_LINE}:\d+: SES101\b", output), output


def test_hook_passes_on_a_clean_file(tools, hook_repo, tmp_path):
    proc, output = _try_repo(tools, hook_repo, tmp_path, "clean.py", CLEAN)
    assert proc.returncode == 0, output
    assert "SES1" not in output, output
    assert re.search(r"^sessionlint\.+Passed$", output, re.M), output
