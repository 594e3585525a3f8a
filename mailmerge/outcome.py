"""What happened to each address: the vocabulary shared by the sender and the report."""

from __future__ import annotations

from dataclasses import dataclass
from enum import StrEnum


class Status(StrEnum):
    """The state of one address of one row."""

    SENT = "sent"  # the server accepted it (250 to RCPT and to the end of DATA)
    REFUSED = "refused"  # the server refused it for good (5xx)
    INVALID = "invalid"  # never sent: the row's data cannot make a message
    DEFERRED = "deferred"  # the server said "try later" (4xx), more than once
    UNKNOWN = "unknown"  # the end of DATA went out, no reply came: maybe delivered
    BOUNCED = "bounced"  # accepted, then returned: a delivery status notification came back
    FAILED = "failed"  # not sent yet: the run stopped before it; the next run sends it


@dataclass(frozen=True)
class Outcome:
    """One line of the report: one recipient address of one row."""

    row: int
    field: str  # To, Cc or Bcc ("" when the row never got as far as addresses)
    address: str
    status: Status
    code: int | None = None  # the server's reply code, when there was one
    reason: str = ""  # the server's text, or why the row was not sent
    message_id: str = ""


def row_status(outcomes: list[Outcome]) -> Status:
    """A row is sent when every address was accepted, invalid when it could not
    be sent because of its data, refused when any address was refused."""
    statuses = {outcome.status for outcome in outcomes}
    for status in (Status.INVALID, Status.REFUSED, Status.BOUNCED, Status.UNKNOWN, Status.DEFERRED, Status.FAILED):
        if status in statuses:
            return status
    return Status.SENT
