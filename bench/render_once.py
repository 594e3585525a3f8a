"""Benchmark: what rendering each row once and reading the list once changed.

    python bench/render_once.py [--rows 100000] [--send-rows 10000] [--runs 3] [--tree DIR ...]

Runs ``mailmerge send`` in a child process, for each source tree given with
``--tree`` (default: this repository; give an older checkout too, e.g. one
made with ``git archive``, to compare before and after), in three modes:

* ``--dry-run`` and ``--outbox DIR`` of ``--rows`` rows (CSV): wall time, CPU
  (user + system) and peak RSS of the child (``os.wait4``);
* a real send of ``--send-rows`` rows to Postfix's ``smtp-sink`` on 127.0.0.1
  (plain SMTP, PIPELINING): the same, and messages per second.

The list and the template are bench/compare.py's (the same CSV, cached in
/tmp/mailmerge-bench/data-v1/). Each run starts in a fresh folder (empty
journal). Prints one table (median of ``--runs``; RSS: the highest).
"""

from __future__ import annotations

import argparse
import os
import statistics
import subprocess
import sys
import tempfile
import time
from pathlib import Path

HERE = Path(__file__).resolve().parent
sys.path.insert(0, str(HERE))
from compare import BENCH_HOME, HOST, TEMPLATE, cached_list, child_env, smtp_sink, tool_config  # noqa: E402


def run(tree: Path, args: list[str], folder: Path) -> tuple[float, float, float]:
    """(wall s, CPU s, peak RSS MB) of ``python -m mailmerge ARGS`` run from ``tree``."""
    env = child_env(PYTHONPATH=str(tree))
    start = time.perf_counter()
    with open(folder / "child.log", "wb") as out:
        child = subprocess.Popen([sys.executable, "-m", "mailmerge", *args], cwd=folder, env=env,
                                 stdout=out, stderr=subprocess.STDOUT)
        _, status, usage = os.wait4(child.pid, 0)
    wall = time.perf_counter() - start
    child.returncode = os.waitstatus_to_exitcode(status)
    if child.returncode != 0:
        raise SystemExit(f"{args} from {tree} exited {child.returncode}: see {folder / 'child.log'}")
    return wall, usage.ru_utime + usage.ru_stime, usage.ru_maxrss / 1024


def measure(tree: Path, mode: str, rows: int, runs: int, sink_port: int | None) -> tuple[float, float, float]:
    source = cached_list("csv", rows)
    walls, cpus, rss = [], [], []
    for _ in range(runs):
        with tempfile.TemporaryDirectory(prefix="render-once-", dir=BENCH_HOME) as name:
            folder = Path(name)
            listing = folder / source.name
            os.link(source, listing)
            (folder / "t.txt").write_text(TEMPLATE, encoding="utf-8")
            args = ["send", listing.name, "-t", "t.txt", "--yes", "--quiet"]
            if mode == "dry-run":
                args.append("--dry-run")
            elif mode == "outbox":
                args += ["--outbox", "out"]
            else:
                assert sink_port is not None
                (folder / "mailmerge.toml").write_text(tool_config(HOST, sink_port), encoding="utf-8")
            wall, cpu, peak = run(tree, args, folder)
            walls.append(wall)
            cpus.append(cpu)
            rss.append(peak)
    return statistics.median(walls), statistics.median(cpus), max(rss)


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--rows", type=int, default=100_000, help="rows for --dry-run and --outbox")
    parser.add_argument("--send-rows", type=int, default=10_000, help="rows sent to smtp-sink")
    parser.add_argument("--runs", type=int, default=3)
    parser.add_argument("--tree", type=Path, action="append", help="a source tree to run (repeatable)")
    parser.add_argument("--modes", default="dry-run,outbox,sink")
    options = parser.parse_args()
    trees = options.tree or [HERE.parent]
    modes = options.modes.split(",")
    print(f"load average at the start: {os.getloadavg()[0]:.2f}", file=sys.stderr)
    lines = []
    with tempfile.TemporaryDirectory(prefix="sink-", dir=BENCH_HOME) as sink_work, smtp_sink(Path(sink_work)) as port:
        for mode in modes:
            rows = options.send_rows if mode == "sink" else options.rows
            for tree in trees:
                wall, cpu, peak = measure(tree.resolve(), mode, rows, options.runs, port)
                lines.append(f"| {tree} | {mode} | {rows:,} | {wall:.2f} | {rows / wall:,.0f} | {cpu:.2f} | {peak:.0f} |")
                print(lines[-1], file=sys.stderr)
    print(f"load average at the end: {os.getloadavg()[0]:.2f}", file=sys.stderr)
    print("| tree | mode | rows | median s | rows/s | CPU s | peak RSS MB |")
    print("|---|---|---:|---:|---:|---:|---:|")
    print("\n".join(lines))


if __name__ == "__main__":
    main()
