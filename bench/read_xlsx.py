"""Benchmark: reading a 100,000-row .xlsx list with each pandas Excel engine.

    python bench/read_xlsx.py [--rows 100000] [--runs 3]

Writes the list (name in Korean, email, a zero-padded text id, an integer
amount, a date) with openpyxl in write-only mode to a temporary directory,
times ``read_recipients`` with calamine and with openpyxl (median of the
runs), prints seconds, rows per second and the ratio (target: calamine at
least 4x faster), and checks that both engines gave identical rows.
"""

from __future__ import annotations

import argparse
import datetime as dt
import statistics
import sys
import tempfile
import time
from pathlib import Path

import openpyxl

from mailmerge.sources.recipients import RecipientList, read_recipients

ENGINES = ("calamine", "openpyxl")
TARGET_RATIO = 4.0
SURNAMES = "김이박최정강조윤장임"
GIVEN_NAMES = ("민준", "서연", "도윤", "하은", "시우", "지유", "주원", "서윤", "예준", "똠이")


def write_list(path: Path, rows: int) -> None:
    """A list of ``rows`` recipients under a header row, as one sheet."""
    book = openpyxl.Workbook(write_only=True)
    sheet = book.create_sheet("Recipients")
    sheet.append(["name", "email", "member_id", "amount", "due"])
    first_due = dt.date(2026, 1, 1)
    for i in range(rows):
        sheet.append([
            SURNAMES[i % len(SURNAMES)] + GIVEN_NAMES[i // len(SURNAMES) % len(GIVEN_NAMES)],
            f"member{i}@example.com",
            f"{i:08d}",
            10_000 + (i * 7919) % 990_000,
            first_due + dt.timedelta(days=i % 365),
        ])
    book.save(path)


def time_read(path: Path, engine: str, runs: int) -> tuple[float, RecipientList]:
    """Median wall time of ``runs`` reads, and the last result."""
    times = []
    for _ in range(runs):
        start = time.perf_counter()
        recipients = read_recipients(path, engine=engine)
        times.append(time.perf_counter() - start)
    return statistics.median(times), recipients


def main() -> int:
    """Run the benchmark; exit 1 if the engines disagree or the target is missed."""
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--rows", type=int, default=100_000)
    parser.add_argument("--runs", type=int, default=3)
    options = parser.parse_args()

    with tempfile.TemporaryDirectory() as tmp:
        path = Path(tmp) / "list.xlsx"
        start = time.perf_counter()
        write_list(path, options.rows)
        print(f"wrote {options.rows:,} rows x 5 columns ({path.stat().st_size / 1e6:.1f} MB) "
              f"in {time.perf_counter() - start:.1f} s")
        seconds: dict[str, float] = {}
        results: dict[str, RecipientList] = {}
        for engine in ENGINES:
            seconds[engine], results[engine] = time_read(path, engine, options.runs)
            print(f"{engine:9} {seconds[engine]:7.3f} s  "
                  f"{options.rows / seconds[engine]:10,.0f} rows/s  "
                  f"(median of {options.runs})")

    ratio = seconds["openpyxl"] / seconds["calamine"]
    print(f"ratio     {ratio:7.2f}x  (target >= {TARGET_RATIO:g}x)")
    calamine, openpyxl_ = results["calamine"], results["openpyxl"]
    same = calamine.columns == openpyxl_.columns and [
        (r.row, r.values) for r in calamine
    ] == [(r.row, r.values) for r in openpyxl_]
    print(f"rows      {'identical' if same else 'DIFFERENT'} ({len(calamine):,} rows); "
          f"first: {calamine.rows[0].values}")
    return 0 if same and ratio >= TARGET_RATIO and len(calamine) == options.rows else 1


if __name__ == "__main__":
    sys.exit(main())
