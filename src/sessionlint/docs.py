"""`docs/rules.md` and `sessionlint rule CODE`, generated from the rule classes."""
from __future__ import annotations

from pathlib import Path

from . import registry
from .rule import Rule, parse_doc

HEADER = """# Rules

<!-- Generated from the rule classes by `python -m sessionlint.docs`; do not edit. -->

| Code | Name | Message |
| --- | --- | --- |
"""


def rule_markdown(rule: type[Rule], level: int = 1) -> str:
    h = "#" * level
    lines = [f"{h} {rule.code} {rule.name}", ""]
    if rule.preview:
        lines += ["*Preview rule: enable with `preview = true`.*", ""]
    if not rule.default_enabled:
        lines += ["*Off by default: select it by code or name.*", ""]
    lines += [f"Message: {rule.message}", "", f"Fix: {rule.hint}", ""]
    for section, body in parse_doc(rule).items():
        lines += [f"{h}# {section}", "", body, ""]
    return "\n".join(lines).rstrip() + "\n"


def render() -> str:
    parts = [HEADER]
    for r in registry.RULES:
        anchor = f"{r.code.lower()}-{r.name}"
        message = r.message.replace("|", "\\|")
        parts.append(f"| [{r.code}](#{anchor}) | {r.name} | {message} |\n")
    parts.append("\n")
    for r in registry.RULES:
        parts.append(rule_markdown(r, level=2))
        parts.append("\n")
    return "".join(parts).rstrip() + "\n"


def main() -> None:
    target = Path(__file__).resolve().parents[2] / "docs" / "rules.md"
    target.write_text(render(), encoding="utf-8")
    print(f"wrote {target}")


if __name__ == "__main__":
    main()
