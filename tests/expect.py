"""`# expect: CODE[, CODE]` markers of the fixture files."""
from __future__ import annotations

import re
import tokenize
from pathlib import Path

_EXPECT = re.compile(r"#\s*expect:\s*(?P<codes>SES\d{3}(?:\s*,\s*SES\d{3})*)")


def expected(path: Path) -> set[tuple[int, str]]:
    out: set[tuple[int, str]] = set()
    with path.open("rb") as fh:
        for tok in tokenize.tokenize(fh.readline):
            if tok.type == tokenize.COMMENT:
                m = _EXPECT.search(tok.string)
                if m:
                    for code in m.group("codes").split(","):
                        out.add((tok.start[0], code.strip()))
    return out


def expected_tree(folder: Path) -> dict[str, set[tuple[int, str]]]:
    return {p.relative_to(folder).as_posix(): expected(p) for p in sorted(folder.rglob("*.py"))}
