"""Rule docs are generated from the rule classes; their examples behave as documented."""
from __future__ import annotations

import pytest

from conftest import ROOT
from sessionlint import docs, registry
from sessionlint.config import Settings
from sessionlint.engine import check_source
from sessionlint.rule import Rule, example_blocks


def test_rules_md_is_current() -> None:
    committed = (ROOT / "docs" / "rules.md").read_text(encoding="utf-8")
    assert committed == docs.render(), "docs/rules.md is stale: run `python -m sessionlint.docs`"


@pytest.mark.parametrize("rule", registry.RULES, ids=lambda r: r.code)
def test_example_reports_its_code(rule: type[Rule]) -> None:
    bad, _ = example_blocks(rule)
    codes = {f.code for f in check_source(bad, "example.py", Settings(select=(rule.code,), preview=True))}
    assert codes == {rule.code}


@pytest.mark.parametrize("rule", registry.RULES, ids=lambda r: r.code)
def test_use_instead_is_clean(rule: type[Rule]) -> None:
    _, good = example_blocks(rule)
    assert check_source(good, "example.py", Settings(preview=True)) == []


def test_malformed_rule_cannot_load() -> None:
    with pytest.raises(TypeError, match="What it does"):
        class BadRule(Rule):  # noqa: F811 - defined only to be rejected
            """## Why is this bad?\nx\n"""

            code = "SES999"
            name = "bad-rule"
            message = "m"
            hint = "h"


def test_rule_names_and_codes_unique() -> None:
    assert len({r.code for r in registry.RULES}) == len(registry.RULES)
    assert len({r.name for r in registry.RULES}) == len(registry.RULES)
