"""Benchmark: how fast the CLI answers. ``mailmerge --help`` and
``mailmerge --version`` side by side with ``python -c "import typer"`` (the
floor: any Typer CLI pays it), measured in the same run, medians.

    python bench/startup.py [--runs 21]

Each command runs as a fresh process with the same interpreter; the target
(issue 15) is ``mailmerge --help`` within 2x of importing typer.
"""

from __future__ import annotations

import argparse
import os
import statistics
import subprocess
import sys
import time
from pathlib import Path

ROOT = Path(__file__).resolve().parent.parent

COMMANDS = {
    'python -c "import typer"': [sys.executable, "-c", "import typer"],
    "mailmerge --help": [sys.executable, "-m", "mailmerge", "--help"],
    "mailmerge --version": [sys.executable, "-m", "mailmerge", "--version"],
    "mailmerge preview --help": [sys.executable, "-m", "mailmerge", "preview", "--help"],
}


def median_seconds(command: list[str], runs: int) -> float:
    """The median wall time of ``runs`` runs of ``command`` (after one warm-up run)."""
    env = {**os.environ, "PYTHONPATH": str(ROOT)}
    times = []
    for attempt in range(runs + 1):
        started = time.perf_counter()
        subprocess.run(command, env=env, stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL, check=True)
        if attempt:  # the first run fills the OS's file cache
            times.append(time.perf_counter() - started)
    return statistics.median(times)


def main() -> None:
    """Print one row per command: median seconds and the ratio to importing typer."""
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--runs", type=int, default=21)
    runs = parser.parse_args().runs
    floor = None
    print(f"{'command':<28}{'median s':>10}{'× typer':>9}   ({runs} runs each)")
    for name, command in COMMANDS.items():
        seconds = median_seconds(command, runs)
        floor = floor or seconds
        print(f"{name:<28}{seconds:>10.3f}{seconds / floor:>9.2f}")


if __name__ == "__main__":
    main()
