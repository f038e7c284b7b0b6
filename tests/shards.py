"""`make test`: the suite as two pytest processes at once, so both cores of a small machine work.

    python tests/shards.py [PYTEST ARGS...]

One pytest runs the modules marked `cluster` (most of those that start Ray clusters, Ray Train
worker groups and study subprocesses), the other `-m "not cluster"` (the rest, and the Ray modules
left unmarked so the two shards take about as long), each with the arguments given; then, alone,
the modules marked `browser` (a real browser waits on a Streamlit app with timeouts, and two
shards beside it starved the app past them). Output lines are prefixed with the shard's name,
and each shard's summary is repeated at the end. The exit code is the worst (a shard left empty
by -k or a path counts as passed). A new test module belongs to the local shard unless it sets
`pytestmark = pytest.mark.cluster` (or `browser`).
"""

from __future__ import annotations

import subprocess
import sys
import threading
from collections import deque

PHASES = ({"cluster": "cluster and not browser", "local": "not cluster and not browser"}, {"browser": "browser"})
"""Shards run phase after phase; in a phase, at once. Shard name -> its marker expression."""
NO_TESTS_COLLECTED = 5
"""pytest's exit code when a shard selects nothing (e.g. `-k` matched only the other shard)."""


def _stream(name: str, proc: subprocess.Popen, tail: deque) -> None:
    """Copy a shard's output line by line with its prefix; keep its last lines for the summary."""
    for line in proc.stdout:
        sys.stdout.write(f"[{name}] {line}")
        sys.stdout.flush()
        tail.append(line)


def main(args: list[str]) -> int:
    codes, tails = {}, {}
    for shards in PHASES:
        codes.update(run_phase(shards, args, tails))
    print("\n" + "=" * 30 + " all shards " + "=" * 30)
    for name, code in codes.items():
        last = next((line.strip() for line in reversed(tails[name]) if line.strip()), "")
        print(f"[{name}] exit {code}: {last}")
    ran = [code for code in codes.values() if code != NO_TESTS_COLLECTED]
    return max(ran) if ran else NO_TESTS_COLLECTED


def run_phase(shards: dict[str, str], args: list[str], tails: dict[str, deque]) -> dict[str, int]:
    """Run the `shards` (name -> marker expression) at once; their exit codes."""
    procs, threads = {}, []
    for name, expression in shards.items():
        procs[name] = subprocess.Popen([sys.executable, "-m", "pytest", "-m", expression, *args],
                                       stdout=subprocess.PIPE, stderr=subprocess.STDOUT, text=True, bufsize=1)
        tails[name] = deque(maxlen=15)
        threads.append(threading.Thread(target=_stream, args=(name, procs[name], tails[name]), daemon=True))
        threads[-1].start()
    codes = {name: proc.wait() for name, proc in procs.items()}
    for thread in threads:
        thread.join()
    return codes


if __name__ == "__main__":
    sys.exit(main(sys.argv[1:]))
