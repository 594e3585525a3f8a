"""The report: one CSV line per recipient address of every row, and the counts.

The CSV is UTF-8 with a BOM so that Excel opens Korean and accented names
correctly; a person can sort and filter it by status.
"""

from __future__ import annotations

import csv
from collections import Counter
from collections.abc import Iterable
from dataclasses import dataclass
from pathlib import Path

from .outcome import Outcome, Status, row_status

COLUMNS = ("row", "address", "field", "status", "code", "reason", "message_id")


def default_report_path(list_path: Path) -> Path:
    """``<list name>.report.csv`` beside the list."""
    return list_path.with_name(f"{list_path.stem}.report.csv")


def write_report(path: Path, outcomes: Iterable[Outcome]) -> Summary:
    """Write every outcome (in row order, as given) to ``path``, replacing it;
    return the counts. Streams: a million rows need no more memory than ten."""
    path.parent.mkdir(parents=True, exist_ok=True)
    counts: Counter[Status] = Counter()
    current: list[Outcome] = []  # the outcomes of the row being written
    with path.open("w", encoding="utf-8-sig", newline="") as handle:
        writer = csv.writer(handle)
        writer.writerow(COLUMNS)
        for o in outcomes:
            if current and o.row != current[0].row:
                counts[row_status(current)] += 1
                current = []
            current.append(o)
            code = "" if o.code is None else o.code
            writer.writerow([o.row, o.address, o.field, o.status.value, code, o.reason, o.message_id])
    if current:
        counts[row_status(current)] += 1
    return Summary(counts)


@dataclass(frozen=True)
class Summary:
    """How many rows (messages) ended in each state."""

    counts: Counter[Status]

    @classmethod
    def of(cls, outcomes: Iterable[Outcome]) -> Summary:
        by_row: dict[int, list[Outcome]] = {}
        for outcome in outcomes:
            by_row.setdefault(outcome.row, []).append(outcome)
        return cls(Counter(row_status(row) for row in by_row.values()))

    @property
    def all_sent(self) -> bool:
        return sum(self.counts.values()) == self.counts[Status.SENT]

    def line(self) -> str:
        """``sent N, refused M, invalid K``, then the other states that occur."""
        always = (Status.SENT, Status.REFUSED, Status.INVALID)
        parts = [f"{status.value} {self.counts[status]}" for status in always]
        parts += [f"{s.value} {self.counts[s]}" for s in Status if s not in always and self.counts[s]]
        return ", ".join(parts)
