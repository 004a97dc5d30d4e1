from __future__ import annotations

from pathlib import Path

import pytest

ROOT = Path(__file__).resolve().parents[1]
FIXTURES = ROOT / "tests" / "fixtures"

# fixtures are analysed, never imported or collected
collect_ignore_glob = ["fixtures/*"]

pytest_plugins = ["pytester"]


@pytest.fixture
def run_cli():
    """Run the CLI in-process through click; returns (exit code, stdout, stderr)."""
    from click.testing import CliRunner

    from sessionlint.cli import main

    def run(*args: str, cwd: Path | None = None) -> tuple[int, str, str]:
        try:
            runner = CliRunner(mix_stderr=False)  # click < 8.2 mixes them by default
        except TypeError:
            runner = CliRunner()  # click >= 8.2 always keeps stderr apart
        import os

        old = os.getcwd()
        if cwd is not None:
            os.chdir(cwd)
        try:
            result = runner.invoke(main, list(args), catch_exceptions=False)
        finally:
            os.chdir(old)
        stderr = result.stderr if result.stderr_bytes else ""
        return result.exit_code, result.stdout, stderr

    return run
