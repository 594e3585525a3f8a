"""After a send, through IMAP: a copy of each accepted message in the Sent
folder, and the bounces (delivery status notifications) collected into the
journal.

Both use the journal so that nothing is done twice: a copy is appended once,
even across runs and resumes; a bounce marks its address ``bounced``, which a
later ``send`` never sends again. The copy is the message that went out,
byte for byte: it is built again, deterministically, from its row with the
Message-ID and Date the journal kept.

Anyone can put a mail in the inbox that looks like a bounce. Only a delivery
status report that references a message this campaign sent (by its exact
Message-ID, which only that message's recipients and their servers ever saw)
to the recipient it names marks that address; anything weaker is only listed
as a possible bounce, for the person to look at.
"""

from __future__ import annotations

import datetime as dt
import re
from collections.abc import Callable
from dataclasses import dataclass, field

from ..errors import InvalidRow
from ..merge import Plan
from ..mime.message import build_message
from ..state.journal import Journal
from ..untrusted import visible
from .session import Bounce, ImapSession


@dataclass
class CopyResult:
    """What :func:`save_sent_copies` did."""

    folder: str = ""
    appended: int = 0
    not_copied: int = 0  # accepted messages that could not be built again, so have no copy
    failed: list[tuple[int, str]] = field(default_factory=list)  # the first of them: (row, why)

    def _failed(self, row: int, why: str) -> None:
        self.not_copied += 1
        if len(self.failed) < 10:  # a list of a million rows with its attachments gone: memory stays flat
            self.failed.append((row, why))


def save_sent_copies(
    plan: Plan, journal: Journal, session: ImapSession, folder: str | None = None,
    on_copy: Callable[[int], None] = lambda row: None,
) -> CopyResult:
    """Append every accepted message not yet copied to the Sent folder (found
    by its \\Sent attribute or usual name, or ``folder``), flagged \\Seen, with
    its Date as the internal date. Each copy is recorded as it is made.

    A copy is the bytes that went out: the message is built again from its
    row with the Message-ID and Date the journal kept, and building is
    deterministic (see :func:`~mailmerge.mime.message.build_message`). Messages are
    built one at a time from the plan's drafts (each row rendered once per
    command), in row order: memory stays flat.
    A row that cannot be built any more (an attachment deleted since) is
    counted in ``not_copied`` and the others go on; a later run tries again."""
    result = CopyResult(folder=session.sent_folder(folder))
    rows = plan.rows()
    planned = next(rows, None)
    for row, message_id, date in journal.copy_missing():
        while planned is not None and planned.recipient.row < row:
            planned = next(rows, None)
        if planned is None or planned.recipient.row != row:
            result._failed(row, "the row is no longer in the list")
            continue
        draft = planned.draft
        if draft is None:  # the row does not render any more
            result._failed(row, plan.invalid[row][0].reason)
            continue
        try:
            message = build_message(draft, message_id=message_id, date=date)
        except InvalidRow as error:
            result._failed(row, error.reason)
            continue
        session.append(result.folder, message.as_bytes(), date)
        journal.mark_copied(message_id, result.folder)
        result.appended += 1
        on_copy(row)
    return result


def parse_since(text: str) -> dt.date:
    """``2d``, ``12h``, ``1w`` ago, or a date ``2026-11-20``."""
    match = re.fullmatch(r"\s*(\d+)\s*([dhw])\s*", text.lower())
    if match:
        amount, unit = int(match.group(1)), match.group(2)
        delta = {"d": dt.timedelta(days=amount), "h": dt.timedelta(hours=amount), "w": dt.timedelta(weeks=amount)}[unit]
        return (dt.datetime.now() - delta).date()
    try:
        return dt.date.fromisoformat(text.strip())
    except ValueError as error:
        from ..errors import InputError

        raise InputError(f"--since '{text}' is not 2d, 12h, 1w or a date such as 2026-11-20") from error


@dataclass
class BounceResult:
    """What :func:`collect_bounces` found."""

    matched: list[tuple[Bounce, list[int]]] = field(default_factory=list)  # bounce, rows it marked
    possible: list[tuple[Bounce, str]] = field(default_factory=list)  # not applied, and why not


def collect_bounces(
    journal: Journal, session: ImapSession, since: dt.date, *, move_to: str | None = None,
) -> BounceResult:
    """Read the inbox (never marking anything read), mark each bounced address
    of this campaign ``bounced`` with the status and diagnostic, and with
    ``move_to`` move the bounces that matched into that folder.

    A bounce is applied only when it is a delivery status report referencing
    a message this campaign sent to the address it names; every other one is
    returned in ``possible`` with the reason, and changes nothing."""
    result = BounceResult()
    for bounce in session.find_bounces(since):
        rows = _apply(journal, bounce) if bounce.report else []
        if rows:
            result.matched.append((bounce, rows))
        elif not bounce.report:
            result.possible.append((bounce, "not a delivery status report"))
        else:
            result.possible.append((bounce, "it references no message this campaign sent to that address"))
    if move_to and result.matched:
        session.move(sorted({b.uid for b, _ in result.matched}), move_to)
    return result


def _apply(journal: Journal, bounce: Bounce) -> list[int]:
    """Mark ``bounce.recipient`` bounced on the message it references, if
    this campaign sent one to that address; the rows marked."""
    code = _smtp_code(bounce.diagnostic)
    reason = visible(f"bounced: {bounce.status} {bounce.diagnostic}".strip())  # shown by status and the report
    for message_id in bounce.references:
        entries = journal.mark_bounced(message_id, bounce.recipient, code, reason)
        if entries:
            return sorted({e.row for e in entries})
    return []


def _smtp_code(diagnostic: str) -> int | None:
    """The SMTP reply code in a Diagnostic-Code such as ``smtp; 550 5.1.1 ...``."""
    match = re.search(r"\b([245]\d\d)\b", diagnostic)
    return int(match.group(1)) if match else None
