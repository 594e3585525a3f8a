"""The journal: what became of every address of every row, across runs.

A SQLite file (``.mailmerge/journal.sqlite3`` beside the list, WAL mode) holds
one line per (campaign, row, address). Each state is committed right after the
server's reply, so a run that dies (Ctrl-C, ``kill -9``, a crash, a lost
network) loses nothing the server acknowledged, and the next run of the same
command sends only what is left.

At most once: before the end of a message's DATA goes out, its addresses are
marked ``in_flight`` and that mark is committed. A mark still there when the
next run starts means the process died between the end of DATA and the
server's reply: that message is ``unknown``, and it is never sent again unless
asked (``--resend-unknown``).

Durability, chosen on purpose: every commit uses ``synchronous=NORMAL``. A
commit is then in the operating system's hands at once, so a killed or crashed
process loses nothing; only a power cut (or a kernel crash) can lose the last
commits, and with them an in-flight mark, so such a message could be sent
again. ``fsync=True`` (``[send] journal_fsync``) syncs each in-flight mark to
disk (``synchronous=FULL`` for every commit, which is one a message): at most
once even across a power cut, for about a quarter of a millisecond per
message on an SSD.

A journal that SQLite finds damaged is never read past nor started afresh:
opening it stops with :class:`JournalDamaged`. The campaign's lock file is
named from a hash of the campaign's name, which may be any text.

The password is never written here.
"""

from __future__ import annotations

import hashlib
import itertools
import json
import re
import sqlite3
import time
from collections.abc import Iterable, Iterator
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from ..errors import InputError, MailmergeError
from ..outcome import Outcome, Status
from .lock import CampaignLock
from .lock import CampaignLocked as CampaignLocked  # raised by Journal.lock; long imported from here
from .marker import SentMarker, check_journal_kept

JOURNAL_FOLDER = ".mailmerge"
JOURNAL_FILE = "journal.sqlite3"

_SCHEMA = """
CREATE TABLE IF NOT EXISTS deliveries (
    campaign   TEXT NOT NULL,
    row        INTEGER NOT NULL,
    address    TEXT NOT NULL,
    field      TEXT NOT NULL,
    state      TEXT NOT NULL,
    code       INTEGER,
    reason     TEXT NOT NULL DEFAULT '',
    message_id TEXT NOT NULL DEFAULT '',
    date       TEXT NOT NULL DEFAULT '',
    row_hash   TEXT NOT NULL DEFAULT '',
    attempts   INTEGER NOT NULL DEFAULT 0,
    position   INTEGER NOT NULL DEFAULT 0,  -- the address's place in the envelope
    updated    REAL NOT NULL,
    PRIMARY KEY (campaign, row, address)
);
CREATE TABLE IF NOT EXISTS sent_copies (
    campaign   TEXT NOT NULL,
    message_id TEXT NOT NULL,
    folder     TEXT NOT NULL,
    appended   REAL NOT NULL,
    PRIMARY KEY (campaign, message_id)
);
CREATE TABLE IF NOT EXISTS campaigns (
    id       TEXT PRIMARY KEY,
    list     TEXT NOT NULL,
    template TEXT NOT NULL,
    created  REAL NOT NULL
);
"""


class JournalError(MailmergeError):
    """The journal cannot be opened or written (exit 1)."""


class JournalDamaged(InputError):
    """SQLite finds the journal file damaged: it cannot say what was sent (exit 2)."""


# SQLite's answers for a file that is damaged, or is not a database at all.
_DAMAGED = {"SQLITE_CORRUPT", "SQLITE_NOTADB"}


def _failure(path: Path, error: sqlite3.Error, doing: str) -> MailmergeError:
    """The error to show for ``error`` met while ``doing`` something to the journal."""
    name = getattr(error, "sqlite_errorname", "")
    if any(name == kind or name.startswith(f"{kind}_") for kind in _DAMAGED):
        return _damaged(path, str(error))
    return JournalError(f"cannot {doing} the journal {path}: {error}")


def _damaged(path: Path, detail: str) -> JournalDamaged:
    return JournalDamaged(
        f"the journal {path} is damaged ({detail}), so it cannot tell what was already sent; "
        "nothing was done. Put it back from a backup, or move it away and send with --restart "
        "to send to everyone again"
    )


class ListChanged(InputError):
    """A row that was already sent no longer holds the same values (exit 2)."""


def campaign_id(list_path: Path, template_text: str, name: str | None = None) -> str:
    """``name`` when given, else a hash of the list's path and the template's text."""
    if name:
        return name
    digest = hashlib.sha256()
    digest.update(str(list_path.resolve()).encode("utf-8", "surrogateescape"))
    digest.update(b"\0")
    digest.update(template_text.encode("utf-8", "surrogateescape"))
    return digest.hexdigest()[:16]


def row_hash(values: dict[str, str]) -> str:
    """A fingerprint of a row's values, to notice a list edited between runs."""
    text = json.dumps(values, sort_keys=True, ensure_ascii=False)
    return hashlib.sha256(text.encode("utf-8", "surrogateescape")).hexdigest()[:16]


def lock_name(campaign: str) -> str:
    """The campaign's lock file in the journal folder. A name given with
    ``--campaign`` is any text (``../x``, ``/etc/x``, Korean, emoji): the file is
    named by its hash, after a readable part made only of letters, digits and ``_``."""
    readable = re.sub(r"\W+", "_", campaign).strip("_")[:40]
    digest = hashlib.sha256(campaign.encode("utf-8", "surrogateescape")).hexdigest()[:16]
    return f"{readable}-{digest}.lock" if readable else f"{digest}.lock"


def journal_folder(list_path: Path) -> Path:
    """Where a list's journal lives: ``.mailmerge/`` beside it."""
    return list_path.parent / JOURNAL_FOLDER


class _NoJournal:
    """What :func:`open_view` gives where no run has written a journal yet."""

    found = "missing"

    def __init__(self, folder: Path, campaign: str) -> None:
        self.path = folder / JOURNAL_FILE
        self.campaign = campaign

    def knows_campaign(self) -> bool:
        return False

    def row_entries(self, row: int) -> list[Entry]:
        return []

    def rows(self) -> Iterator[tuple[int, list[Entry]]]:
        return iter(())

    def has_lines(self) -> bool:
        return False

    def __enter__(self) -> _NoJournal:
        return self

    def __exit__(self, *exc: object) -> None:
        pass


def open_view(folder: Path, campaign: str) -> Journal | _NoJournal:
    """A campaign's journal to read, without creating anything when there is none."""
    if not (folder / JOURNAL_FILE).is_file():
        return _NoJournal(folder, campaign)
    return Journal(folder, campaign)


def open_to_send(
    folder: Path, campaign: str, *, fsync: bool = False, marker: SentMarker | None = None, restart: bool = False
) -> Journal:
    """The journal for a run of ``send``, its campaign locked.

    ``marker`` is given for a real send (not ``--outbox``): when it says this
    campaign already sent messages and the journal has no trace of them (it was
    deleted, emptied or replaced), this stops with
    :class:`~mailmerge.state.marker.JournalLost` instead of sending everyone again,
    unless ``restart`` (the person asked to send again to everyone).
    """
    if marker is not None and not restart and not (folder / JOURNAL_FILE).exists():
        check_journal_kept(_NoJournal(folder, campaign), marker)  # before the file is made
    journal = Journal(folder, campaign, fsync=fsync, marker=marker)
    try:
        journal.lock()
        if marker is not None and not restart:
            check_journal_kept(journal, marker)
    except BaseException:
        journal.close()
        raise
    return journal


@dataclass(frozen=True)
class Entry:
    """The journal's line for one address of one row."""

    row: int
    address: str
    field: str
    state: Status
    code: int | None
    reason: str
    message_id: str
    date: str
    row_hash: str
    attempts: int

    @classmethod
    def read(cls, line: tuple[Any, ...]) -> Entry:
        """The entry of a line as stored: ``row, address, field, state, ...``.
        A state word of an earlier version is read as today's (``failed``
        is ``not_sent_yet``): journals stay readable across versions."""
        row, address, field, state, *rest = line
        return cls(row, address, field, Status(state), *rest)

    def outcome(self) -> Outcome:
        return Outcome(self.row, self.field, self.address, self.state, self.code, self.reason, self.message_id)


class Journal:
    """One campaign's view of the journal file. Use as a context manager."""

    def __init__(
        self, folder: Path, campaign: str, *, fsync: bool = False, marker: SentMarker | None = None
    ) -> None:
        """Open (or create) the journal in ``folder``. ``marker``: a real send,
        whose first message is recorded there (see :mod:`mailmerge.state.marker`)."""
        self.folder = folder
        self.campaign = campaign
        self.fsync = fsync  # sync each in-flight mark to disk (safe across a power cut)
        self.marker = marker
        self._pending: list[tuple[object, ...]] = []  # results written with the next commit
        self.path = folder / JOURNAL_FILE
        self._lock = CampaignLock(folder / lock_name(campaign))
        # What was there before this opened it (the file is made when missing).
        self.found = "missing" if not self.path.exists() else "empty" if self.path.stat().st_size == 0 else "kept"
        try:
            folder.mkdir(parents=True, exist_ok=True)
            # Autocommit: every write below is its own short, explicit transaction.
            # Sessions side by side (--connections) write from their threads, one at a
            # time (the send loop holds a lock around every journal call).
            self._db = sqlite3.connect(self.path, isolation_level=None, timeout=30, check_same_thread=False)
        except (OSError, sqlite3.Error) as error:
            raise JournalError(
                f"cannot open the journal {self.path}: {error}. It is kept in {JOURNAL_FOLDER}/ "
                "beside the list (or in the --outbox folder): that folder must be writable"
            ) from error
        try:
            self._check_intact()
            self._db.execute("PRAGMA journal_mode=WAL")
            # With one commit per message, nearly every commit carries an in-flight mark.
            self._db.execute(f"PRAGMA synchronous={'FULL' if fsync else 'NORMAL'}")
            self._db.executescript(_SCHEMA)
        except sqlite3.Error as error:
            self._db.close()
            raise _failure(self.path, error, "open") from error
        except JournalDamaged:
            self._db.close()
            raise

    def _check_intact(self) -> None:
        """Stop on a damaged file before reading it: a damaged page can hide
        rows that were sent without any error (about 0.2 s for a million lines)."""
        problems = [row[0] for row in self._db.execute("PRAGMA quick_check(3)")]
        if problems != ["ok"]:
            found = [line for p in problems for line in str(p).splitlines() if line and not line.startswith("***")]
            raise _damaged(self.path, "; ".join(found[:2]) or "quick_check failed")

    # --- the lock --------------------------------------------------------------

    def lock(self) -> None:
        """Take the campaign's lock, or raise :class:`CampaignLocked` at once when
        another run has it (see :mod:`mailmerge.state.lock`: the operating system
        releases it if the process dies)."""
        self._lock.acquire()

    def close(self) -> None:
        """Write what is pending, close the file, then release the lock."""
        try:
            self.flush()
        finally:
            self._close()

    def _close(self) -> None:
        try:
            self._db.close()
        finally:
            self._lock.release()  # last: the next run may start once the journal is closed

    def __enter__(self) -> Journal:
        return self

    def __exit__(self, *exc: object) -> None:
        self.close()

    # --- reading -----------------------------------------------------------------

    def row_entries(self, row: int) -> list[Entry]:
        """The lines of one row (an indexed look-up: memory stays flat for long lists)."""
        try:
            cursor = self._db.execute(
                "SELECT row, address, field, state, code, reason, message_id, date, row_hash, attempts "
                "FROM deliveries WHERE campaign = ? AND row = ? ORDER BY position, address",
                (self.campaign, row),
            )
            return [Entry.read(r) for r in cursor]
        except sqlite3.Error as error:
            raise _failure(self.path, error, "read") from error

    def rows(self) -> Iterator[tuple[int, list[Entry]]]:
        """Every row with lines, in row order, with its lines as :meth:`row_entries`
        gives them: one query, read as it goes (memory stays flat). Not to be used
        while writing: a pending read keeps writes from starting a transaction."""
        try:
            cursor = self._db.execute(
                "SELECT row, address, field, state, code, reason, message_id, date, row_hash, attempts, position "
                "FROM deliveries WHERE campaign = ? ORDER BY row",  # the primary key's order: no sorting
                (self.campaign,),
            )
            for row, lines in itertools.groupby(cursor, key=lambda line: line[0]):
                ordered = sorted(lines, key=lambda line: (line[-1], line[1]))  # position, address
                yield row, [Entry.read(line[:-1]) for line in ordered]
        except sqlite3.Error as error:
            raise _failure(self.path, error, "read") from error

    def has_lines(self) -> bool:
        """True once any run of this campaign wrote something."""
        cursor = self._db.execute("SELECT 1 FROM deliveries WHERE campaign = ? LIMIT 1", (self.campaign,))
        return cursor.fetchone() is not None

    def knows_campaign(self) -> bool:
        """True once any run of this campaign opened this journal to send (even
        one that sent nothing, or was restarted)."""
        cursor = self._db.execute("SELECT 1 FROM campaigns WHERE id = ?", (self.campaign,))
        return cursor.fetchone() is not None or self.has_lines()

    def other_campaigns(self, list_path: Path) -> list[tuple[str, int]]:
        """Other campaigns of the same list with messages sent: (id, count)."""
        cursor = self._db.execute(
            "SELECT c.id, COUNT(d.row) FROM campaigns c JOIN deliveries d ON d.campaign = c.id "
            "WHERE c.list = ? AND c.id != ? AND d.state = 'sent' GROUP BY c.id",
            (str(list_path.resolve()), self.campaign),
        )
        return [(row[0], row[1]) for row in cursor]

    # --- writing -----------------------------------------------------------------

    def register(self, list_path: Path, template_path: Path) -> None:
        """Remember which list and template this campaign is (first run only)."""
        with self._transaction():
            self._db.execute(
                "INSERT OR IGNORE INTO campaigns (id, list, template, created) VALUES (?, ?, ?, ?)",
                (self.campaign, str(list_path.resolve()), str(template_path.resolve()), time.time()),
            )

    def recover(self) -> int:
        """Turn the in-flight marks of a run that died into ``unknown``; return how many."""
        with self._transaction():
            cursor = self._db.execute(
                "UPDATE deliveries SET state = 'unknown', reason = ?, updated = ? "
                "WHERE campaign = ? AND state = ?",
                (
                    "the run stopped after the message was sent and before the server "
                    "confirmed it: it may have been delivered",
                    time.time(),
                    self.campaign,
                    Status.IN_FLIGHT.value,
                ),
            )
        return cursor.rowcount

    def mark_in_flight(
        self, outcomes: Iterable[Outcome], *, date: str, fingerprint: str, order: dict[str, int] | None = None
    ) -> None:
        """Mark addresses whose message's end of DATA is about to go out (synced
        to disk when the journal was opened with ``fsync``). The first one of a
        real send is first recorded in the marker beside the list."""
        if self.marker is not None:
            self.marker.record(self.campaign, self.path)
        self._commit(self._rows(outcomes, Status.IN_FLIGHT, date=date, fingerprint=fingerprint, attempt=1, order=order))

    def record(
        self, outcomes: Iterable[Outcome], *, date: str = "", fingerprint: str = "",
        order: dict[str, int] | None = None, later: bool = False,
    ) -> None:
        """Write each outcome's state (one transaction). ``order`` gives each
        address's place in its envelope (To, Cc, Bcc), for the report.

        With ``later`` the outcomes go into the next commit (the next in-flight
        mark, :meth:`flush` or :meth:`close`): one commit per message instead
        of two. A process killed in between loses only results whose in-flight
        marks are written, so those messages become ``unknown``, never resent.
        """
        rows = self._rows(outcomes, None, date=date, fingerprint=fingerprint, attempt=0, order=order)
        if later:
            self._pending += rows
        else:
            self._commit(rows)

    def forget(self, row: int, addresses: Iterable[str]) -> None:
        """Remove lines of ``row`` that a new attempt replaces: an address no
        longer in the row, a row invalid before and now fixed. Only lines of
        messages that reached no one are given here: losing them to a crash
        loses nothing (the row is tried again)."""
        with self._transaction():
            self._db.executemany(
                "DELETE FROM deliveries WHERE campaign = ? AND row = ? AND address = ?",
                [(self.campaign, row, address) for address in addresses],
            )

    def flush(self) -> None:
        """Write the results kept for the next commit, if any."""
        if self._pending:
            self._commit([])

    def _rows(
        self, outcomes: Iterable[Outcome], state: Status | None, *, date: str, fingerprint: str,
        attempt: int, order: dict[str, int] | None,
    ) -> list[tuple[object, ...]]:
        now = time.time()
        return [
            (
                self.campaign, o.row, o.address, o.field, (state or o.status).value, o.code,
                o.reason, o.message_id, date, fingerprint, attempt,
                (order or {}).get(o.address, index), now,
            )
            for index, o in enumerate(outcomes)
        ]

    def _commit(self, rows: list[tuple[object, ...]]) -> None:
        """Write the pending results, then ``rows``, in one transaction."""
        rows, self._pending = self._pending + rows, []
        with self._transaction():
            self._db.executemany(
                "INSERT INTO deliveries (campaign, row, address, field, state, code, reason, "
                "message_id, date, row_hash, attempts, position, updated) "
                "VALUES (?, ?, ?, ?, ?, ?, ?, ?, ?, ?, ?, ?, ?) "
                "ON CONFLICT (campaign, row, address) DO UPDATE SET "
                "field = excluded.field, state = excluded.state, code = excluded.code, "
                "reason = excluded.reason, "
                "message_id = CASE WHEN excluded.message_id != '' THEN excluded.message_id ELSE message_id END, "
                "date = CASE WHEN excluded.date != '' THEN excluded.date ELSE date END, "
                "row_hash = CASE WHEN excluded.row_hash != '' THEN excluded.row_hash ELSE row_hash END, "
                "attempts = attempts + excluded.attempts, position = excluded.position, "
                "updated = excluded.updated",
                rows,
            )

    # --- Sent copies and bounces (IMAP) ------------------------------------------

    def copy_missing(self, batch: int = 1000) -> Iterator[tuple[int, str, str]]:
        """Rows sent (at least one address accepted) whose copy is not yet in
        the Sent folder: (row, message_id, date), in row order. Read ``batch``
        rows at a time, so memory stays flat for a long list, and the journal
        may be written between two of them (:meth:`mark_copied`)."""
        after: tuple[int, str] = (-1, "")
        while True:
            try:
                found = self._db.execute(
                    "SELECT d.row, d.message_id, MAX(d.date) FROM deliveries d "
                    "WHERE d.campaign = ? AND d.row >= ? AND (d.row, d.message_id) > (?, ?) "
                    "AND d.state = 'sent' AND d.message_id != '' AND NOT EXISTS "
                    "(SELECT 1 FROM sent_copies c WHERE c.campaign = d.campaign AND c.message_id = d.message_id) "
                    "GROUP BY d.row, d.message_id ORDER BY d.row, d.message_id LIMIT ?",
                    (self.campaign, after[0], *after, batch),
                ).fetchall()
            except sqlite3.Error as error:
                raise _failure(self.path, error, "read") from error
            yield from ((row[0], row[1], row[2]) for row in found)
            if len(found) < batch:
                return
            after = (found[-1][0], found[-1][1])

    def mark_copied(self, message_id: str, folder: str) -> None:
        """The message's copy is in the Sent folder (never appended twice)."""
        with self._transaction():
            self._db.execute(
                "INSERT OR IGNORE INTO sent_copies (campaign, message_id, folder, appended) VALUES (?, ?, ?, ?)",
                (self.campaign, message_id, folder, time.time()),
            )

    def mark_bounced(self, message_id: str, recipient: str, code: int | None, reason: str) -> list[Entry]:
        """Mark ``recipient`` bounced in the message ``message_id`` this campaign
        sent it; return the lines it changed. Both are required: a mail that
        names an address without referencing our message proves nothing
        (anyone can write to the mailbox)."""
        if not message_id:
            return []
        # Made here, not with the table: every send would pay for keeping it up to date.
        self._db.execute("CREATE INDEX IF NOT EXISTS deliveries_message_id ON deliveries (message_id)")
        where = "campaign = ? AND state IN ('sent', 'bounced') AND lower(address) = lower(?) AND message_id = ?"
        params: tuple[object, ...] = (self.campaign, recipient, message_id)
        cursor = self._db.execute(
            "SELECT row, address, field, state, code, reason, message_id, date, row_hash, attempts "
            f"FROM deliveries WHERE {where}", params,
        )
        entries = [Entry.read(r) for r in cursor]
        with self._transaction():
            for e in entries:
                self._db.execute(
                    "UPDATE deliveries SET state = 'bounced', code = ?, reason = ?, updated = ? "
                    "WHERE campaign = ? AND row = ? AND address = ?",
                    (code, reason, time.time(), self.campaign, e.row, e.address),
                )
        return entries

    def restart(self) -> int:
        """Forget this campaign (``--restart``); return how many lines were removed."""
        with self._transaction():
            cursor = self._db.execute("DELETE FROM deliveries WHERE campaign = ?", (self.campaign,))
        return cursor.rowcount

    def _transaction(self) -> _Transaction:
        return _Transaction(self._db, self.path)


class _Transaction:
    """BEGIN IMMEDIATE ... COMMIT (ROLLBACK on error) on an autocommit connection;
    a failure of SQLite (a full disk, a damaged file) becomes a one-line error."""

    def __init__(self, db: sqlite3.Connection, path: Path) -> None:
        self.db = db
        self.path = path

    def __enter__(self) -> None:
        try:
            self.db.execute("BEGIN IMMEDIATE")
        except sqlite3.Error as error:
            raise _failure(self.path, error, "write") from error

    def __exit__(self, kind: type[BaseException] | None, error: BaseException | None, *rest: object) -> None:
        try:
            self.db.execute("COMMIT" if kind is None else "ROLLBACK")
        except sqlite3.Error as failure:
            if kind is None:
                raise _failure(self.path, failure, "write") from failure
        if isinstance(error, sqlite3.Error):
            raise _failure(self.path, error, "write") from error
