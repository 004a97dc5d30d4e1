"""Benchmark: wall time of `sessionlint` against `flake8 -j2` on the same paths, as a ratio.

    python scripts/bench.py PATH [PATH ...] [--runs 3] [--jobs 2]

Both tools run in this invocation, on the same machine state, alternately; the ratio of
medians is what to compare between versions (absolute times depend on the machine).
"""
from __future__ import annotations

import argparse
import os
import statistics
import subprocess
import sys
import time


def _time(cmd: list[str]) -> tuple[float, int]:
    # flake8 is timed on its own: our flake8 plugin, when installed, stays out of its run
    env = {**os.environ, "SESSIONLINT_FLAKE8_DISABLE": "1"}
    start = time.perf_counter()
    proc = subprocess.run(cmd, stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL, env=env)
    return time.perf_counter() - start, proc.returncode


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("paths", nargs="+")
    parser.add_argument("--runs", type=int, default=3)
    parser.add_argument("--jobs", type=int, default=2)
    args = parser.parse_args()
    ours = [sys.executable, "-m", "sessionlint", "--isolated", "-q", *args.paths]
    theirs = [sys.executable, "-m", "flake8", "--isolated", f"-j{args.jobs}", *args.paths]
    t_ours: list[float] = []
    t_theirs: list[float] = []
    for _ in range(args.runs):
        t, rc = _time(ours)
        if rc not in (0, 1):
            print(f"sessionlint exited {rc}", file=sys.stderr)
            return 2
        t_ours.append(t)
        t_theirs.append(_time(theirs)[0])
    a, b = statistics.median(t_ours), statistics.median(t_theirs)
    print(f"sessionlint  median {a:.2f}s  runs {' '.join(f'{t:.2f}' for t in t_ours)}")
    print(f"flake8 -j{args.jobs}    median {b:.2f}s  runs {' '.join(f'{t:.2f}' for t in t_theirs)}")
    print(f"ratio sessionlint / flake8 = {a / b:.2f}")
    return 0


if __name__ == "__main__":
    sys.exit(main())
