"""The report: one CSV line per recipient address of every row, and the counts.

The CSV is UTF-8 with a BOM so that Excel opens Korean and accented names
correctly; a person can sort and filter it by status.

Its cells come from strangers (the list, the server's replies): each goes
through :func:`report_cell` (see :mod:`mailmerge.untrusted`), so that no control
character is stored raw and no cell is run as a formula.
"""

from __future__ import annotations

import csv
from collections import Counter
from itertools import groupby
from collections.abc import Iterable
from dataclasses import dataclass
from pathlib import Path

from ..outcome import REPORTED, Outcome, Status, row_status
from ..untrusted import spreadsheet_safe, visible

COLUMNS = ("row", "address", "field", "status", "code", "reason", "message_id")


def report_cell(value: object) -> str:
    """A value as the report stores it: control characters written out, formulas defused."""
    return spreadsheet_safe(visible(str(value)))


def default_report_path(list_path: Path) -> Path:
    """``<list name>.report.csv`` beside the list."""
    return list_path.with_name(f"{list_path.stem}.report.csv")


def write_report(path: Path, outcomes: Iterable[Outcome]) -> Summary:
    """Write every outcome (in row order, as given) to ``path``, replacing it;
    return the counts. Streams: a million rows need no more memory than ten.

    Each text passes through :func:`report_cell`: the file is read by people,
    in spreadsheets, not by this tool."""
    path.parent.mkdir(parents=True, exist_ok=True)

    def rows() -> Iterable[Outcome]:  # write each outcome on its way to the counting
        for o in outcomes:
            code = "" if o.code is None else o.code
            writer.writerow([o.row, report_cell(o.address), o.field, o.status.value, code, report_cell(o.reason),
                             report_cell(o.message_id)])
            yield o

    with path.open("w", encoding="utf-8-sig", newline="") as handle:
        writer = csv.writer(handle)
        writer.writerow(COLUMNS)
        summary = Summary.of(rows())
    return summary


@dataclass(frozen=True)
class Summary:
    """How many rows (messages) ended in each state."""

    counts: Counter[Status]

    @classmethod
    def of(cls, outcomes: Iterable[Outcome]) -> Summary:
        """Count rows from outcomes given in row order (as the journal streams them)."""
        counts: Counter[Status] = Counter()
        for _, row in groupby(outcomes, key=lambda outcome: outcome.row):
            counts[row_status(list(row))] += 1
        return cls(counts)

    @property
    def all_done(self) -> bool:
        """Every row is in a state that counts as done (exit code 0)."""
        return all(status.done for status, count in self.counts.items() if count)

    def line(self, outbox: bool = False) -> str:
        """``sent N, refused M, invalid K``, then the other states that occur,
        in words for people (``not sent yet 3``); ``written`` for an outbox."""
        always = (Status.SENT, Status.REFUSED, Status.INVALID)
        shown = [*always, *(s for s in REPORTED if s not in always and self.counts[s])]
        return ", ".join(f"{word(status, outbox)} {self.counts[status]:,}" for status in shown)


def word(status: Status, outbox: bool = False) -> str:
    """The state's word for people; a message written to an outbox was not sent."""
    return "written" if outbox and status is Status.SENT else status.label
