"""The report: one CSV line per recipient address of every row, and the counts.

The CSV is UTF-8 with a BOM so that Excel opens Korean and accented names
correctly; a person can sort and filter it by status.

Its cells come from strangers (the list, the server's replies), so this module
also holds the two rules that keep such text harmless: :func:`visible` (no
control character reaches a terminal or a report raw) and
:func:`spreadsheet_safe` (no cell of a CSV we write is run as a formula), with
:func:`from_spreadsheet`, its inverse, for whatever reads such a file back.
"""

from __future__ import annotations

import csv
from collections import Counter
from itertools import groupby
from collections.abc import Iterable
from dataclasses import dataclass
from pathlib import Path

from .outcome import Outcome, Status, row_status

COLUMNS = ("row", "address", "field", "status", "code", "reason", "message_id")


# --- text from strangers ------------------------------------------------------------

# C0 controls, DEL, C1 controls (0x9b is a terminal's CSI, like ESC [), and the
# bidirectional overrides and isolates that make text read in another order.
_CONTROLS = [*range(0x00, 0x20), *range(0x7F, 0xA0), *range(0x202A, 0x202F), *range(0x2066, 0x206A)]
_VISIBLE = {code: (f"\\x{code:02x}" if code < 0x100 else f"\\u{code:04x}") for code in _CONTROLS}


def visible(text: str, keep: str = "") -> str:
    """``text`` with every control character written out (ESC as ``\\x1b``),
    so that it cannot move the cursor, clear the screen or retitle the window
    of whoever looks at it. ``keep`` names the ones left as they are (``"\\n\\t"``
    for a message body)."""
    if text.isprintable():  # the common case: nothing to do
        return text
    table = _VISIBLE if not keep else {code: v for code, v in _VISIBLE.items() if chr(code) not in keep}
    return text.translate(table)


# What makes a spreadsheet read a cell as a formula (OWASP's list), and the
# full-width forms that East Asian input methods type and spreadsheets accept.
FORMULA_STARTS = ("=", "+", "-", "@", "\t", "\r", "\uff1d", "\uff0b", "\uff0d", "\uff20")


def spreadsheet_safe(text: str) -> str:
    """``text`` for a CSV cell that Excel or LibreOffice will not run: a value
    that would start a formula (``=``, ``+``, ``-``, ``@``, TAB, CR) gets a
    ``'`` in front (``-bob@example.com`` is written ``'-bob@example.com``).

    A value that is already such a ``'`` followed by a formula start gets one
    more, so :func:`from_spreadsheet` always gives the original back.
    """
    return "'" + text if text.lstrip("'").startswith(FORMULA_STARTS) else text


def from_spreadsheet(text: str) -> str:
    """The inverse of :func:`spreadsheet_safe`: the original value of a cell
    read from a CSV file that was protected that way."""
    return text[1:] if text.startswith("'") and text.lstrip("'").startswith(FORMULA_STARTS) else text


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
    def all_sent(self) -> bool:
        return sum(self.counts.values()) == self.counts[Status.SENT]

    def line(self) -> str:
        """``sent N, refused M, invalid K``, then the other states that occur."""
        always = (Status.SENT, Status.REFUSED, Status.INVALID)
        parts = [f"{status.value} {self.counts[status]}" for status in always]
        parts += [f"{s.value} {self.counts[s]}" for s in Status if s not in always and self.counts[s]]
        return ", ".join(parts)
