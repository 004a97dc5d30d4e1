"""All rules, and selection of rules by code, code prefix or name."""
from __future__ import annotations

from typing import Iterable, Optional

from .rule import Rule
from .rules.close_not_guaranteed import CloseNotGuaranteed
from .rules.commit_in_borrowed_session import CommitInBorrowedSession
from .rules.commit_in_loop import CommitInLoop
from .rules.commit_under_transaction_manager import CommitUnderTransactionManager
from .rules.missing_rollback import MissingRollback
from .rules.nested_session_in_borrowed import NestedSessionInBorrowed
from .rules.provider_without_finally import ProviderWithoutFinally
from .rules.engine_per_call import EnginePerCall
from .rules.instance_used_after_close import InstanceUsedAfterClose
from .rules.long_lived_session import LongLivedSession
from .rules.session_not_closed import SessionNotClosed
from .rules.session_shared_across_tasks import SessionSharedAcrossTasks
from .rules.session_shared_across_threads import SessionSharedAcrossThreads
from .rules.sync_with_on_async_session import SyncWithOnAsyncSession
from .rules.unawaited_session_call import UnawaitedSessionCall

# SES001 is the engine's own: a file that could not be read or parsed.
PARSE_ERROR_CODE = "SES001"
PARSE_ERROR_NAME = "syntax-error"

RULES: tuple[type[Rule], ...] = (SessionNotClosed, CloseNotGuaranteed, ProviderWithoutFinally, LongLivedSession,
                                 EnginePerCall, InstanceUsedAfterClose, CommitInLoop, MissingRollback, CommitInBorrowedSession,
                                 NestedSessionInBorrowed, CommitUnderTransactionManager,
                                 SessionSharedAcrossThreads, SessionSharedAcrossTasks,
                                 SyncWithOnAsyncSession, UnawaitedSessionCall)
BY_CODE: dict[str, type[Rule]] = {r.code: r for r in RULES}
BY_NAME: dict[str, type[Rule]] = {r.name: r for r in RULES}
ALL_CODES: tuple[str, ...] = (PARSE_ERROR_CODE,) + tuple(BY_CODE)


def find(selector: str) -> Optional[type[Rule]]:
    return BY_CODE.get(selector.upper()) or BY_NAME.get(selector.lower())


def is_valid_selector(selector: str) -> bool:
    s = selector.strip()
    if s.lower() in BY_NAME or s.lower() == PARSE_ERROR_NAME:
        return True
    return s.upper() == "ALL" or (bool(s) and any(code.startswith(s.upper()) for code in ALL_CODES))


def _specificity(selector: str, code: str, name: str) -> int:
    """How precisely a selector names a rule: -1 when it does not match at all."""
    s = selector.strip()
    if s.lower() == name:
        return 100
    if s.upper() == "ALL":
        return 0
    if code.startswith(s.upper()):
        return len(s)
    return -1


def selected(code: str, name: str, select: Iterable[str], ignore: Iterable[str],
             default_on: bool = True) -> bool:
    best_select = max((_specificity(s, code, name) for s in select), default=-1)
    if best_select < 0:
        return False
    best_ignore = max((_specificity(s, code, name) for s in ignore), default=-1)
    if best_ignore >= best_select:
        return False
    # rules that are off by default run only when named by code or name, not by a prefix
    return default_on or best_select >= len(code)


def code_name(code: str) -> str:
    if code == PARSE_ERROR_CODE:
        return PARSE_ERROR_NAME
    return BY_CODE[code].name
