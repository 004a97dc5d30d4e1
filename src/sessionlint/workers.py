"""Reading, parsing and analysing files in worker processes that each own a fixed share.

A worker keeps the trees of its share across both passes; only summaries (small, picklable)
and findings cross process boundaries. The main process builds the project index from all
summaries and widens the pre-filter with the project's own session names until nothing new
turns up. With one job the same `Worker` runs in-process.
"""
from __future__ import annotations

import multiprocessing
import re
import sys
import traceback
from pathlib import Path
from typing import Any, Sequence

from . import registry
from .config import Settings
from .discovery import SourceFile, module_name
from .engine import analyse, session_names, vocabulary
from .loader import DiskLoader, package_root
from .parsing import SA_TOKENS, Parsed, parse_source, quick_syntax_check
from .findings import FileError, Finding
from .semantic.facts import ModuleSummary
from .semantic.index import ProjectIndex

# Below this many files a second process costs more than it saves.
_MIN_FILES_PER_WORKER = 40


class Worker:
    def __init__(self, settings: Settings, prefilter: bool = True) -> None:
        self.settings = settings
        self.prefilter = prefilter
        self.parsed: list[Parsed] = []
        self.waiting: list[tuple[SourceFile, bytes]] = []
        extra = [n.replace(":", ".").rsplit(".", 1)[-1].encode()
                 for n in (*settings.factories, *settings.providers, *settings.closers)]
        self.first = re.compile(SA_TOKENS.pattern + b"".join(b"|\\b" + re.escape(e) + b"\\b" for e in extra))

    def _parse(self, f: SourceFile, data: bytes, out: list[ModuleSummary], broken: list[Finding],
               errors: list[FileError]) -> None:
        try:
            result = parse_source(f.display, data, *module_name(f.path))
        except Exception as exc:  # a bug of ours must not stop the other files
            errors.append(FileError(f.display, f"internal error: {type(exc).__name__}: {exc}"))
            return
        if isinstance(result, Parsed):
            self.parsed.append(result)
            out.append(result.summary)
        else:
            broken.append(result)

    def load(self, files: Sequence[SourceFile]) -> tuple[list[ModuleSummary], list[Finding], list[FileError]]:
        """Read the share; parse what can involve SQLAlchemy, keep the rest waiting."""
        summaries: list[ModuleSummary] = []
        broken: list[Finding] = []
        errors: list[FileError] = []
        for f in files:
            try:
                data = f.path.read_bytes()
            except OSError as exc:
                errors.append(FileError(f.display, exc.strerror or str(exc)))
                continue
            if not self.prefilter or self.first.search(data):
                self._parse(f, data, summaries, broken, errors)
                continue
            problem = quick_syntax_check(f.display, data)
            if problem is not None:
                broken.append(problem)
            else:
                self.waiting.append((f, data))
        return summaries, broken, errors

    def expand(self, names: Sequence[str]) -> tuple[list[ModuleSummary], list[Finding], list[FileError]]:
        """Parse waiting files that mention one of the project's session names."""
        summaries: list[ModuleSummary] = []
        broken: list[Finding] = []
        errors: list[FileError] = []
        if not names or not self.waiting:
            return summaries, broken, errors
        pattern = re.compile(rb"\b(?:" + b"|".join(re.escape(n.encode()) for n in names) + rb")\b")
        still = []
        for f, data in self.waiting:
            if pattern.search(data):
                self._parse(f, data, summaries, broken, errors)
            else:
                still.append((f, data))
        self.waiting = still
        return summaries, broken, errors

    def pending(self) -> list[str]:
        """Files of this share the pre-filter passed over."""
        return [str(f.path.absolute()) for f, _ in self.waiting]

    def analyse(self, summaries: Sequence[ModuleSummary], codes: Sequence[str],
                roots: Sequence[str], skipped: Sequence[str]) -> tuple[list[Finding], list[FileError]]:
        index = ProjectIndex(summaries, vocabulary(self.settings), DiskLoader((Path(r) for r in roots), skipped))
        findings: list[Finding] = []
        errors: list[FileError] = []
        for p in self.parsed:
            try:
                findings.extend(analyse(p, index, codes, options=self.settings.rule_options()))
            except Exception as exc:  # report, and go on with the next file
                errors.append(FileError(p.display, f"internal error: {type(exc).__name__}: {exc}"))
        return findings, errors


def _serve(conn: Any, settings: Settings) -> None:
    worker = Worker(settings)  # runs with many files: always pre-filtered
    while True:
        message = conn.recv()
        if message is None:
            return
        method, args = message
        try:
            conn.send(("ok", getattr(worker, method)(*args)))
        except BaseException as exc:  # noqa: BLE001 - hand every failure to the parent
            conn.send(("error", f"{type(exc).__name__}: {exc}\n{traceback.format_exc()}"))


class _Remote:
    def __init__(self, ctx: Any, settings: Settings) -> None:
        self.conn, child = ctx.Pipe()
        self.process = ctx.Process(target=_serve, args=(child, settings), daemon=True)
        self.process.start()
        child.close()

    def send(self, method: str, *args: Any) -> None:
        self.conn.send((method, args))

    def receive(self) -> Any:
        status, value = self.conn.recv()
        if status != "ok":
            raise RuntimeError(f"worker failed: {value.splitlines()[0]}")
        return value

    def close(self) -> None:
        try:
            self.conn.send(None)
        except OSError:
            pass
        self.process.join(timeout=5)


class _Local:
    def __init__(self, settings: Settings, prefilter: bool) -> None:
        self.worker = Worker(settings, prefilter)
        self.result: Any = None

    def send(self, method: str, *args: Any) -> None:
        self.result = getattr(self.worker, method)(*args)

    def receive(self) -> Any:
        return self.result

    def close(self) -> None:
        pass


def _shares(files: Sequence[SourceFile], n: int) -> list[list[SourceFile]]:
    """Split by size so the shares take about as long (largest first, to the lightest share)."""
    sizes = []
    for f in files:
        try:
            sizes.append((f.path.stat().st_size, f))
        except OSError:
            sizes.append((0, f))
    shares: list[list[SourceFile]] = [[] for _ in range(n)]
    load = [0] * n
    for size, f in sorted(sizes, key=lambda t: (-t[0], t[1].display)):
        i = load.index(min(load))
        shares[i].append(f)
        load[i] += size
    return shares


def _context() -> Any:
    # fork is cheap and needs no re-import; elsewhere (macOS, Windows) spawn is the safe default
    method = "fork" if sys.platform.startswith("linux") else "spawn"
    return multiprocessing.get_context(method)


def run(files: Sequence[SourceFile], settings: Settings, jobs: int) -> tuple[list[Finding], list[FileError]]:
    n = max(1, min(jobs, len(files) // _MIN_FILES_PER_WORKER))
    handles: list[Any]
    if n == 1:
        # a few files (pre-commit, an editor): parse them all, since the names they use may
        # come from modules outside the run that only the loader will see
        handles = [_Local(settings, prefilter=len(files) >= _MIN_FILES_PER_WORKER)]
        shares = [list(files)]
    else:
        ctx = _context()
        handles = [_Remote(ctx, settings) for _ in range(n)]
        shares = _shares(files, n)
    try:
        return _orchestrate(handles, shares, settings)
    finally:
        for h in handles:
            h.close()


def _orchestrate(handles: list[Any], shares: list[list[SourceFile]],
                 settings: Settings) -> tuple[list[Finding], list[FileError]]:
    summaries: list[ModuleSummary] = []
    findings: list[Finding] = []
    errors: list[FileError] = []

    def gather(method: str, *args: Any) -> bool:
        for h, share in zip(handles, shares):
            h.send(method, *((share,) if method == "load" else args))
        grew = False
        for h in handles:
            new, broken, errs = h.receive()
            summaries.extend(new)
            findings.extend(broken)
            errors.extend(errs)
            grew = grew or bool(new)
        return grew

    gather("load")
    vocab = vocabulary(settings)
    known: set[str] = set()
    while True:
        try:
            names = session_names(ProjectIndex(summaries, vocab), summaries) - known
        except Exception:  # noqa: BLE001 - widening the pre-filter is an optimisation for recall;
            break          # a bug there must not stop the run (the files it would add stay skipped)
        if not names:
            break
        known |= names
        if not gather("expand", sorted(known)):
            break
    codes = settings.enabled_codes()
    if registry.PARSE_ERROR_CODE not in codes:
        findings = [f for f in findings if f.code != registry.PARSE_ERROR_CODE]
    roots = sorted({str(package_root(f.path)) for share in shares for f in share})
    skipped: list[str] = []
    for h in handles:
        h.send("pending")
    for h in handles:
        skipped.extend(h.receive())
    for h in handles:
        h.send("analyse", summaries, codes, roots, skipped)
    for h in handles:
        found, errs = h.receive()
        findings.extend(found)
        errors.extend(errs)
    return findings, errors
