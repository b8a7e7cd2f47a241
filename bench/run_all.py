"""Run every benchmark script in bench/ that exists, one subprocess each, and print its output.

``python -m bench.run_all`` (what ``make bench`` runs). Each script keeps its own defaults,
all short and bounded; the exit status is non-zero when any script failed.
"""

from __future__ import annotations

import subprocess
import sys
import time
from pathlib import Path

BENCH = Path(__file__).resolve().parent
ROOT = BENCH.parent
SCRIPTS = ("bench_parser", "bench_routing", "bench_media", "bench_calls", "bench_transfer")


def main() -> int:
    failures = []
    for name in SCRIPTS:
        if not (BENCH / f"{name}.py").is_file():
            continue
        print(f"== {name} ==", flush=True)
        started = time.monotonic()
        # -m so the scripts import bridge/ and bench/ the same way whichever folder we run from.
        status = subprocess.run([sys.executable, "-m", f"bench.{name}"], cwd=ROOT).returncode
        print(f"-- {name}: exit {status} in {time.monotonic() - started:.0f} s\n", flush=True)
        if status:
            failures.append(name)
    if failures:
        print("failed: " + ", ".join(failures))
    return 1 if failures else 0


if __name__ == "__main__":
    sys.exit(main())
