"""Benchmark: a 1,000-row Excel list sent end to end through a local
STARTTLS + AUTH server (aiosmtpd on 127.0.0.1), as `mailmerge send` runs it.

    python bench/core_send.py [--rows 1000] [--runs 3]

Prints, per run, the wall time of the whole command (interpreter start, read,
render, validate, send, report), the messages per second, the peak RSS of the
command, and what the server counted (connections, STARTTLS, AUTH, messages).
Needs the test extras (trustme): pip install -e '.[test]'.
"""

from __future__ import annotations

import argparse
import datetime as dt
import json
import os
import resource
import statistics
import subprocess
import sys
import tempfile
import time
from pathlib import Path

import openpyxl

HERE = Path(__file__).resolve().parent
sys.path.insert(0, str(HERE.parent / "tests"))
from smtp_server import SmtpTestServer  # noqa: E402

USER, PASSWORD = "bench@example.com", "bench-password"
TEMPLATE = """\
From: Bench <bench@example.com>
Subject: {{ name }}님, invoice {{ invoice_no }}
To: {{ name }} <{{ email }}>

Dear {{ name }},

your invoice {{ invoice_no }} of {{ amount }} KRW is due on {{ due }}.
Thank you.
"""


def make_list(path: Path, rows: int) -> None:
    book = openpyxl.Workbook()
    sheet = book.active
    assert sheet is not None
    sheet.append(["name", "email", "invoice_no", "amount", "due"])
    for i in range(rows):
        sheet.append([f"김민수{i}", f"member{i}@example.com", f"{i:05d}", 1000 * i, dt.date(2026, 12, 1)])
    book.save(path)


def run_once(folder: Path, rows: int) -> dict[str, float]:
    with SmtpTestServer(tls=True, auth={USER: PASSWORD}) as server:
        config = {
            "host": server.host, "port": server.port, "security": "starttls",
            "username": USER, "ca_file": str(server.ca_file), "timeout": 30,
        }
        lines = ["[smtp]", *(f"{k} = {json.dumps(v)}" for k, v in config.items())]
        (folder / "mailmerge.toml").write_text("\n".join(lines) + "\n", encoding="utf-8")
        before = resource.getrusage(resource.RUSAGE_CHILDREN).ru_maxrss
        start = time.perf_counter()
        done = subprocess.run(
            [sys.executable, "-m", "mailmerge", "send", str(folder / "list.xlsx"),
             "-t", str(folder / "t.txt"), "--yes"],
            env={**os.environ, "MAILMERGE_PASSWORD": PASSWORD},
            capture_output=True, text=True, check=False,
        )
        seconds = time.perf_counter() - start
        peak = resource.getrusage(resource.RUSAGE_CHILDREN).ru_maxrss
        if done.returncode != 0:
            raise SystemExit(f"send failed ({done.returncode}): {done.stderr}")
        return {
            "seconds": seconds,
            "messages": len(server.messages),
            "connections": server.connections,
            "starttls": server.starttls_count,
            "auth": server.auth_attempts,
            "peak_rss_mb": max(peak, before) / 1024,
        }


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--rows", type=int, default=1000)
    parser.add_argument("--runs", type=int, default=3)
    args = parser.parse_args()
    results = []
    for _ in range(args.runs):
        with tempfile.TemporaryDirectory() as tmp:  # a fresh journal each run
            folder = Path(tmp)
            make_list(folder / "list.xlsx", args.rows)
            (folder / "t.txt").write_text(TEMPLATE, encoding="utf-8")
            results.append(run_once(folder, args.rows))
    print(f"{args.rows}-row .xlsx, STARTTLS + AUTH on 127.0.0.1, end to end (`mailmerge send`)")
    print(f"{'run':>4} {'seconds':>8} {'msg/s':>7} {'msgs':>6} {'conn':>5} {'tls':>4} {'auth':>5} {'peak RSS MB':>12}")
    for i, r in enumerate(results, 1):
        print(f"{i:>4} {r['seconds']:8.2f} {r['messages'] / r['seconds']:7.0f} {r['messages']:6.0f} "
              f"{r['connections']:5.0f} {r['starttls']:4.0f} {r['auth']:5.0f} {r['peak_rss_mb']:12.0f}")
    median = statistics.median(r["seconds"] for r in results)
    print(f"median {median:.2f} s = {args.rows / median:.0f} messages/s")


if __name__ == "__main__":
    main()
