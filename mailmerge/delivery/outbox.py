"""``send --outbox DIR``: each message is written to DIR as an ``.eml`` file
instead of being sent.

Everything else of a send runs as usual: every row rendered and checked, the
journal (a second run writes only what is missing), the report. Nothing leaves
the machine: a newcomer sees the tool work without a mail account, and can open
the files in any mail program. A file holds the bytes a server would receive.
"""

from __future__ import annotations

import re
from collections.abc import Callable
from dataclasses import dataclass
from pathlib import Path

from ..errors import SendError
from ..mime.message import OutgoingMessage
from ..outcome import Outcome, Status
from .smtp import Job


@dataclass(frozen=True)
class Outbox:
    """Where ``send --outbox`` writes: the folder, and how many rows the list has
    (file names are numbered by row, padded to the widest row number)."""

    folder: Path
    rows: int = 0

    def file_name(self, message: OutgoingMessage) -> str:
        """``0002-ann@example.com.eml``: the row, then the first recipient."""
        first = message.recipients[0].address if message.recipients else "nobody"
        safe = re.sub(r"[^\w@.+-]", "_", first)[:80]
        width = max(4, len(str(self.rows + 1)))  # row 1 is the header
        return f"{message.row:0{width}d}-{safe}.eml"


class OutboxWriter:
    """Takes the place of :class:`~mailmerge.delivery.smtp.SmtpClient` in a send:
    the same ``stream`` of jobs, written to files."""

    def __init__(self, outbox: Outbox) -> None:
        self.outbox = outbox

    def stream(self, next_job: Callable[[bool], Job | None]) -> None:
        """Write every job ``next_job`` gives, each message once, in its own file.

        Raises :class:`SendError` when a file cannot be written (its row stays
        ``not_sent_yet``: the next run writes it).
        """
        folder = self.outbox.folder
        try:
            folder.mkdir(parents=True, exist_ok=True)
        except OSError as error:
            raise SendError(f"cannot make the outbox folder {folder}: {error.strerror or error}") from error
        while (job := next_job(True)) is not None:
            path = folder / self.outbox.file_name(job.message)
            job.before_end(job.targets)
            try:
                path.write_bytes(job.message.as_bytes())
            except OSError as error:
                job.done(_outcomes(job, Status.NOT_SENT_YET, None, f"not written: {error.strerror or error}"))
                raise SendError(f"cannot write {path}: {error.strerror or error}; "
                                "free some space, or choose another --outbox folder") from error
            job.done(_outcomes(job, Status.SENT, 250, f"written to {path.name}"))

    def abort(self) -> None:
        """Nothing to cut: there is no connection."""

    def close(self) -> None:
        """Nothing to close: each file is closed once written."""


def _outcomes(job: Job, status: Status, code: int | None, reason: str) -> list[Outcome]:
    message = job.message
    return [Outcome(message.row, t.field, t.address, status, code, reason, message.message_id) for t in job.targets]
