"""`# noqa` comments, with flake8's grammar: bare `# noqa` or `# noqa: CODE[,CODE...]`."""
from __future__ import annotations

import re
from typing import Optional

# Same shape as flake8's NOQA_INLINE_REGEX: codes separated by commas and/or spaces.
_NOQA = re.compile(r"#\s*noqa(?::[\s]?(?P<codes>[A-Z]+[0-9]+(?:[,\s]+[A-Z]+[0-9]+)*))?", re.I)
_SPLIT = re.compile(r"[,\s]+")


def parse_line(line: str) -> Optional[frozenset[str]]:
    """None when the line has no noqa; an empty set for a bare noqa (suppresses everything)."""
    if "noqa" not in line.lower():
        return None
    match = _NOQA.search(line)
    if match is None:
        return None
    codes = match.group("codes")
    if not codes:
        return frozenset()
    return frozenset(c.upper() for c in _SPLIT.split(codes.strip()) if c)


def suppressed(code: str, noqa: Optional[frozenset[str]]) -> bool:
    if noqa is None:
        return False
    # flake8 matches a listed code as a prefix of the reported one
    return not noqa or any(code.startswith(c) for c in noqa)
