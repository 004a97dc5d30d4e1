"""Every fixture reports exactly the (line, code) pairs its `# expect:` markers state."""
from __future__ import annotations

from pathlib import Path

import pytest

from expect import expected, expected_tree
from conftest import FIXTURES
from sessionlint.config import Settings
from sessionlint.engine import check_paths

SINGLE = sorted(p for p in FIXTURES.glob("*.py"))
PACKAGES = sorted(p for p in FIXTURES.iterdir() if p.is_dir() and not p.name.startswith("__"))


def settings_for(path: Path) -> Settings:
    """Every rule on by default, preview rules too, plus the off-by-default rule a fixture is named after."""
    from sessionlint import registry

    rule = registry.BY_CODE.get(path.name[:6])
    extra = (rule.code,) if rule is not None and not rule.default_enabled else ()
    return Settings(root=FIXTURES, extend_select=extra, preview=True)


def _describe(missing: set, extra: set) -> str:
    lines = [f"missing (expected, not reported): line {l} {c}" for l, c in sorted(missing)]
    lines += [f"extra (reported, not expected): line {l} {c}" for l, c in sorted(extra)]
    return "\n".join(lines)


def test_fixtures_exist_for_every_rule() -> None:
    from sessionlint import registry

    for rule in registry.RULES:
        assert any(p.name.startswith(rule.code) for p in FIXTURES.iterdir()), rule.code


@pytest.mark.parametrize("path", SINGLE, ids=lambda p: p.name)
def test_single_file_fixture(path: Path) -> None:
    result = check_paths([str(path)], settings_for(path))
    assert not result.errors
    got = {(f.line, f.code) for f in result.findings}
    want = expected(path)
    assert got == want, _describe(want - got, got - want)


@pytest.mark.parametrize("folder", PACKAGES, ids=lambda p: p.name)
def test_package_fixture(folder: Path) -> None:
    result = check_paths([str(folder)], Settings(root=FIXTURES))
    assert not result.errors
    got: dict[str, set] = {}
    for f in result.findings:
        rel = Path(f.path).relative_to(folder).as_posix()
        got.setdefault(rel, set()).add((f.line, f.code))
    for rel, want in expected_tree(folder).items():
        have = got.get(rel, set())
        assert have == want, f"{rel}:\n" + _describe(want - have, have - want)


def test_fixture_marker_counts() -> None:
    """Each rule's fixture holds at least 15 reported cases (markers)."""
    for path in SINGLE:
        code = path.name[:6]
        if code.startswith("SES") and code[3:].isdigit():
            assert sum(1 for _, c in expected(path) if c == code) >= 15, path.name


@pytest.mark.parametrize("folder", PACKAGES, ids=lambda p: p.name)
def test_package_files_one_at_a_time(folder: Path) -> None:
    """pre-commit passes only changed files: imports resolve through modules on disk."""
    for path in sorted(folder.rglob("*.py")):
        result = check_paths([str(path)], Settings(root=FIXTURES))
        got = {(f.line, f.code) for f in result.findings}
        want = expected(path)
        assert got == want, f"{path.name}:\n" + _describe(want - got, got - want)
