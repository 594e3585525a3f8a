"""How the commands talk to the person (and to scripts): errors in one line,
progress while sending, the summary table, and the ``--json`` documents.

Human text goes to stderr (and the summary to stdout); with ``--json``,
stdout carries exactly one JSON object and nothing else.

Much of what is shown comes from strangers (cells of the list, server replies,
bounce texts): every printing function here shows it through
:func:`~mailmerge.untrusted.visible` (an ESC in a cell is printed ``\\x1b``, it
does not reach the terminal), and never as Rich markup or emoji codes.
"""

from __future__ import annotations

import json
import sys
import time
import traceback
from collections.abc import Callable, Iterable
from dataclasses import dataclass, field
from pathlib import Path
from typing import TYPE_CHECKING, Any, NoReturn, TypeVar

import typer
from rich.console import Console
from rich.progress import BarColumn, MofNCompleteColumn, Progress, TaskID, TextColumn, TimeRemainingColumn
from rich.table import Table

from ..errors import MailmergeError
from ..outcome import REPORTED, Outcome, Status, row_status
from ..state.report import Summary, word
from ..untrusted import visible

if TYPE_CHECKING:  # the email stack is imported when a message is shown, not for `mailmerge --help`
    from ..mime.message import OutgoingMessage

T = TypeVar("T")
err = Console(stderr=True, highlight=False, soft_wrap=True, emoji=False)
out = Console(highlight=False, soft_wrap=True, emoji=False)
LABEL = 32  # the widest label the progress bar keeps whole on an 80-column terminal
LINES = "\n\t"  # the control characters a multi-line text may keep on the terminal

# Inside JSON strings, the control characters json.dumps leaves raw (DEL, C1,
# bidi overrides) as \\u escapes: the same string to a parser, inert on a terminal.
_JSON_ESCAPES = {code: f"\\u{code:04x}" for code in (*range(0x7F, 0xA0), *range(0x202A, 0x202F), *range(0x2066, 0x206A))}


@dataclass
class Ui:
    """One command's way of talking: ``--debug``, ``--json``, ``--quiet``."""

    command: str
    debug: bool = False
    json: bool = False
    quiet: bool = False

    def fail(self, error: MailmergeError) -> NoReturn:
        """One line saying what is wrong (JSON with ``--json``), and its exit code."""
        if self.debug:
            sys.stderr.write(visible("".join(traceback.format_exception(error)), LINES))
        err.print(f"error: {visible(str(error), LINES)}", style="red", markup=False)
        if self.json:
            self.emit({"error": str(error), "exit_code": error.exit_code})
        raise typer.Exit(error.exit_code)

    def run(self, action: Callable[[], T]) -> T:
        """Run ``action``; a MailmergeError becomes :meth:`fail`."""
        try:
            return action()
        except MailmergeError as error:
            self.fail(error)

    def note(self, text: str, style: str | None = "yellow") -> None:
        """Something the person should know (stderr)."""
        err.print(visible(text, LINES), style=style, markup=False)

    def say(self, text: str, style: str | None = None) -> None:
        """Regular output (stdout), silent with ``--json``."""
        if not self.json:
            out.print(visible(text, LINES), style=style, markup=False)

    def emit(self, document: dict[str, Any]) -> None:
        """The ``--json`` result: one object on stdout."""
        text = json.dumps({"command": self.command, **document}, ensure_ascii=False, indent=2)
        sys.stdout.write(text.translate(_JSON_ESCAPES) + "\n")
        sys.stdout.flush()


# --- progress while sending ------------------------------------------------------


@dataclass
class SendProgress:
    """A progress bar on a terminal (done/total, rate, ETA, refused so far,
    pauses); one line per message otherwise; nothing with ``--quiet``."""

    ui: Ui
    total: int
    outbox: bool = False  # messages are written to files: "written", not "sent"
    started: float = field(default_factory=time.monotonic)
    problems: int = 0
    _progress: Progress | None = None
    _task: TaskID | None = None

    def __enter__(self) -> SendProgress:
        if err.is_terminal and not self.ui.quiet:
            columns = (
                TextColumn("{task.description}", markup=False), BarColumn(bar_width=None), MofNCompleteColumn(),
                TextColumn("{task.fields[rate]} msg/s"), TimeRemainingColumn(),
                TextColumn("refused {task.fields[problems]}"),
            )
            self._progress = Progress(*columns, console=err, transient=True)
            self._progress.start()
            self._task = self._progress.add_task("writing" if self.outbox else "sending", total=self.total,
                                                 rate="-", problems=0)
        return self

    def __exit__(self, *exc: object) -> None:
        if self._progress is not None:
            self._progress.stop()

    def row(self, outcomes: list[Outcome]) -> None:
        """One message's outcomes arrived."""
        status = row_status(outcomes)
        if status is not Status.SENT:
            self.problems += 1
        if self._progress is not None and self._task is not None:
            for o in outcomes:
                if o.status not in (Status.SENT, Status.INVALID):
                    self._progress.console.print(_outcome_line(o, self.outbox), markup=False)
            elapsed = max(time.monotonic() - self.started, 1e-6)
            done = self._progress.tasks[0].completed + 1
            self._progress.update(self._task, advance=1, rate=f"{done / elapsed:.1f}", problems=self.problems,
                                  description="writing" if self.outbox else "sending")
        elif not self.ui.quiet:  # plain lines: rich's layout costs more than the send itself
            sys.stderr.write("".join(_outcome_line(o, self.outbox) + "\n" for o in outcomes))

    def notify(self, text: str) -> None:
        """News (a pause, a reconnection): the bar's label on a terminal."""
        text = visible(text)
        if self._progress is not None and self._task is not None:
            # The whole notice goes above the bar; the bar keeps its last clause
            # ("pausing 60 s, until 09:12"), short enough for 80 columns.
            label = text.rsplit("; ", 1)[-1]
            self._progress.update(self._task, description=label if len(label) <= LABEL else label[:LABEL - 1] + "…")
            self._progress.console.print(text, markup=False)
        elif not self.ui.quiet:
            err.print(text, markup=False)


def _outcome_line(o: Outcome, outbox: bool = False) -> str:
    code = f"{o.code} " if o.code else ""
    detail = f": {code}{o.reason}" if o.status is not Status.SENT else ""
    return visible(f"row {o.row}: {word(o.status, outbox)} {o.address}{detail}")


def summary_table(summary: Summary, seconds: float, messages: int, report: Path, outbox: bool = False) -> Table:
    """The table after a send: rows per state, time, speed (the report's
    path follows on a line of its own, whole, where a table would cut it)."""
    table = Table(show_header=False, box=None, pad_edge=False)
    table.add_column(style="bold")
    table.add_column(justify="right")
    for state in REPORTED:
        # Bounces come later (from the inbox) and duplicates only from merged lists: shown when there are any.
        if state not in (Status.BOUNCED, Status.DUPLICATE) or summary.counts[state]:
            table.add_row(word(state, outbox), f"{summary.counts[state]:,}")
    table.add_row("time", f"{seconds:.1f} s")
    table.add_row("messages/s", f"{messages / seconds:.1f}" if seconds > 0 else "-")
    return table


# --- the --json documents ------------------------------------------------------------


def counts_json(summary: Summary) -> dict[str, int]:
    """Rows per state, every state a report can show: ``{"sent": 3, "not_sent_yet": 1, ...}``."""
    return {state.value: summary.counts[state] for state in REPORTED}


def rows_json(outcomes: Iterable[Outcome]) -> list[dict[str, Any]]:
    """One entry per row: its status and each address's outcome."""
    rows: list[dict[str, Any]] = []
    current: list[Outcome] = []

    def close() -> None:
        if current:
            rows.append({
                "row": current[0].row,
                "status": row_status(current).value,
                "addresses": [
                    {"address": o.address, "field": o.field, "status": o.status.value,
                     "code": o.code, "reason": o.reason, "message_id": o.message_id}
                    for o in current
                ],
            })

    for outcome in outcomes:
        if current and outcome.row != current[0].row:
            close()
            current = []
        current.append(outcome)
    close()
    return rows


def message_json(message: OutgoingMessage) -> dict[str, Any]:
    """A rendered message for ``preview --json``."""
    from ..mime.message import structure

    email = message.message
    text = email.get_body(("plain",))
    return {
        "row": message.row,
        "valid": True,
        "from": str(email["From"]),
        "to": [r.address for r in message.recipients if r.field == "To"],
        "cc": [r.address for r in message.recipients if r.field == "Cc"],
        "bcc": [r.address for r in message.recipients if r.field == "Bcc"],
        "subject": str(email["Subject"]),
        "text": str(text.get_content()) if text is not None else "",
        "html": email.get_body(("html",)) is not None,
        "attachments": [
            {"name": part.get_filename(), "size": len(part.get_payload(decode=True) or b""),
             "type": part.get_content_type()}
            for part in email.iter_attachments()
        ],
        "parts": [line.strip() for line in structure(email)] if email.is_multipart() else [],
    }
