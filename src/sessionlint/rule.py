"""The rule base class: identity, message, hint and documentation in one place.

A rule's docstring is its documentation (Markdown with fixed sections); `docs/rules.md`,
`sessionlint rule CODE` and the doc-example tests all read it from here. Malformed rules fail
at class creation, so a rule that cannot be documented cannot be loaded.
"""
from __future__ import annotations

import inspect
import re
from dataclasses import dataclass, field
from typing import TYPE_CHECKING, Any, ClassVar, Iterator, Optional

import libcst as cst

if TYPE_CHECKING:
    from .model import FileModel

_CODE = re.compile(r"^SES\d{3}$")
_NAME = re.compile(r"^[a-z][a-z0-9]*(-[a-z0-9]+)+$")
REQUIRED_SECTIONS = ("What it does", "Why is this bad?", "Example")
SECTION_ORDER = ("What it does", "Why is this bad?", "Example", "Options", "Known problems", "References")


@dataclass
class Report:
    """A rule's raw result: the node to point at and the message fields."""

    node: cst.CSTNode
    fields: dict[str, Any] = field(default_factory=dict)
    scope: Optional[cst.FunctionDef] = None


class Rule:
    code: ClassVar[str]
    name: ClassVar[str]
    message: ClassVar[str]
    hint: ClassVar[str]
    preview: ClassVar[bool] = False
    # off unless selected explicitly (policy rules)
    default_enabled: ClassVar[bool] = True
    # keys accepted under [tool.sessionlint.options.<rule-name>] (lists of strings)
    option_names: ClassVar[tuple[str, ...]] = ()

    def __init_subclass__(cls, **kwargs: Any) -> None:
        super().__init_subclass__(**kwargs)
        for attr in ("code", "name", "message", "hint"):
            if not isinstance(getattr(cls, attr, None), str):
                raise TypeError(f"rule {cls.__name__} lacks `{attr}`")
        if not _CODE.match(cls.code):
            raise TypeError(f"rule {cls.__name__}: code {cls.code!r} is not SES + three digits")
        if not _NAME.match(cls.name):
            raise TypeError(f"rule {cls.__name__}: name {cls.name!r} is not kebab-case")
        expected = "".join(part.capitalize() for part in cls.name.split("-"))
        if cls.__name__ != expected:
            raise TypeError(f"rule class {cls.__name__} should be named {expected}")
        docs = parse_doc(cls)
        for section in REQUIRED_SECTIONS:
            if section not in docs:
                raise TypeError(f"rule {cls.code} docstring lacks `## {section}`")
        if not docs["What it does"].startswith("Checks for"):
            raise TypeError(f"rule {cls.code}: `What it does` must start with 'Checks for'")
        order = [s for s in docs if s in SECTION_ORDER]
        if order != sorted(order, key=SECTION_ORDER.index):
            raise TypeError(f"rule {cls.code}: docstring sections out of order")
        if len(example_blocks(cls)) != 2:
            raise TypeError(f"rule {cls.code}: `## Example` needs a python block and a `Use instead:` block")

    def check(self, model: "FileModel") -> Iterator[Report]:
        raise NotImplementedError

    @classmethod
    def format(cls, fields: dict[str, Any]) -> str:
        return cls.message.format(**fields)


def parse_doc(rule: type) -> dict[str, str]:
    """Docstring sections by heading, in order."""
    doc = inspect.cleandoc(rule.__doc__ or "")
    sections: dict[str, str] = {}
    current: Optional[str] = None
    lines: list[str] = []
    for line in doc.splitlines():
        if line.startswith("## "):
            if current is not None:
                sections[current] = "\n".join(lines).strip()
            current, lines = line[3:].strip(), []
        elif current is not None:
            lines.append(line)
    if current is not None:
        sections[current] = "\n".join(lines).strip()
    return sections


_BLOCK = re.compile(r"```python\n(.*?)```", re.S)


def example_blocks(rule: type) -> list[str]:
    """The `## Example` python block and the `Use instead:` block after it."""
    return _BLOCK.findall(parse_doc(rule).get("Example", ""))
