"""The marker beside the list: which campaigns really sent messages from it.

The journal says what was sent, row by row; if it is lost (``.mailmerge/``
deleted, the file emptied or replaced), the next run would send every row
again without a word. The marker is the evidence that outlives it: a small
file beside the list, ``.LIST.mailmerge-sent`` (``.list.xlsx.mailmerge-sent``),
with one line per campaign that handed a message to a real server.

It is hidden on purpose: it sits among the person's own files (often their
Documents folder), where a visible file nobody asked for invites a clean-up,
and it must survive the clean-up of ``.mailmerge/`` and of the reports. The
error that uses it names it.

A line is written once per campaign, just before the end of the first
message's DATA goes out (the earliest moment anyone can receive anything), so
a run that stopped at the login leaves no evidence of a send that never was.
``--outbox``, ``--dry-run`` and ``--test-to`` never write it: they send
nothing to the real recipients.
"""

from __future__ import annotations

import datetime as dt
import json
import os
from pathlib import Path
from typing import Protocol

from ..errors import InputError, MailmergeError

_HEADER = (
    "# mailmerge: these campaigns sent messages from {list} to a real server. Keep this file:\n"
    "# if the journal (.mailmerge/) is lost, it stops the next run from sending everyone a second copy.\n"
)


class JournalLost(InputError):
    """The marker says this campaign sent messages; the journal knows nothing of it (exit 2)."""


class OpenedJournal(Protocol):
    """What the check needs of a journal (:class:`~mailmerge.state.journal.Journal`, or
    the stand-in :func:`~mailmerge.state.journal.open_view` gives when there is none)."""

    campaign: str
    path: Path
    found: str  # what was there before it was opened: "missing", "empty" or "kept"

    def knows_campaign(self) -> bool: ...


class SentMarker:
    """The marker file of one list (see the module's docstring)."""

    def __init__(self, list_path: Path, *, path: Path | None = None) -> None:
        """The marker of the list at ``list_path``; ``path`` puts it elsewhere
        (rows given from Python have no list file to sit beside)."""
        self.list_path = list_path
        self.path = path or list_path.with_name(f".{list_path.name}.mailmerge-sent")
        self._recorded: set[str] = set()  # campaigns written by this process

    def find(self, campaign: str) -> dict[str, str] | None:
        """The marker's line about ``campaign`` (``first_sent``, ``journal``), or None."""
        try:
            text = self.path.read_text(encoding="utf-8", errors="replace")
        except FileNotFoundError:
            return None
        except OSError as error:
            raise MailmergeError(f"cannot read {self.path}: {error.strerror or error}") from error
        for line in text.splitlines():
            try:
                record = json.loads(line) if line.startswith("{") else None
            except ValueError:  # a line cut short by a crash
                continue
            if isinstance(record, dict) and record.get("campaign") == campaign:
                return {key: str(value) for key, value in record.items()}
        return None

    def record(self, campaign: str, journal: Path) -> None:
        """Write that ``campaign`` is about to send its first message (once; synced to disk)."""
        if campaign in self._recorded or self.find(campaign) is not None:
            self._recorded.add(campaign)
            return
        line = json.dumps({
            "campaign": campaign,
            "first_sent": dt.datetime.now().astimezone().isoformat(timespec="seconds"),
            "journal": str(journal.resolve()),
        }, ensure_ascii=False) + "\n"
        try:
            # O_BINARY (Windows only): no "\n" -> "\r\n" on the way to the disk.
            flags = os.O_WRONLY | os.O_APPEND | os.O_CREAT | getattr(os, "O_BINARY", 0)
            handle = os.open(self.path, flags, 0o644)
            try:
                if os.fstat(handle).st_size == 0:
                    line = _HEADER.format(list=self.list_path.name) + line
                os.write(handle, line.encode("utf-8", "surrogateescape"))
                os.fsync(handle)
            finally:
                os.close(handle)
        except OSError as error:
            raise MailmergeError(
                f"cannot write {self.path} (it records that this list was sent, in case the journal "
                f"is lost): {error.strerror or error}; nothing was sent. Make the list's folder writable"
            ) from error
        self._recorded.add(campaign)


def check_journal_kept(journal: OpenedJournal, marker: SentMarker) -> None:
    """Stop (:class:`JournalLost`) when the marker says ``journal``'s campaign
    already sent messages but the journal has no trace of the campaign: it was
    deleted, emptied or replaced, and a send would go to everyone again."""
    if journal.knows_campaign():
        return
    record = marker.find(journal.campaign)
    if record is None:
        return
    what = {
        "missing": "is missing",
        "empty": "is empty",
    }.get(journal.found, "has no trace of it")
    when = record.get("first_sent", "?").replace("T", " ")
    raise JournalLost(
        f"campaign {journal.campaign} already sent messages from {marker.list_path.name} "
        f"(first on {when}, recorded in {marker.path}), but the journal {journal.path} {what}: "
        "a send now would send every row again. Put the journal back from a backup, "
        "or run with --restart to send to everyone again"
    )
