"""What happened to each address: the one vocabulary of the sender, the
journal, the report, ``--json``, the summary and ``status``.

Every state a journal line can have is a :class:`Status`; what each one means
for the rest of the tool is in one table, :data:`STATES`: its words for
people, whether it counts as done for the exit code, whether a later run
sends the address again, whether the message may have reached the address,
and (by its place in the table) its precedence when a row's addresses differ.
A state added later (``duplicate``, ``suppressed``, ``scheduled``) is one
member here and one line in the table.
"""

from __future__ import annotations

from dataclasses import dataclass
from enum import StrEnum


class Status(StrEnum):
    """The state of one address of one row. Its value is the word of the
    report's ``status`` column, of ``--json`` and of the journal."""

    SENT = "sent"  # the server accepted it (250 to RCPT and to the end of DATA)
    REFUSED = "refused"  # the server refused it for good (5xx)
    INVALID = "invalid"  # never sent: the row's data cannot make a message
    DEFERRED = "deferred"  # the server said "try later" (4xx), more than once
    UNKNOWN = "unknown"  # the end of DATA went out, no reply came: maybe delivered
    BOUNCED = "bounced"  # accepted, then returned: a delivery status notification came back
    NOT_SENT_YET = "not_sent_yet"  # the run stopped before it; the next run sends it
    IN_FLIGHT = "in_flight"  # journal only: the end of DATA is going out now
    DUPLICATE = "duplicate"  # not sent: its To address already gets the message of an earlier row

    @classmethod
    def _missing_(cls, value: object) -> Status | None:
        return _OLD_WORDS.get(str(value))  # read from journals of earlier versions

    @property
    def label(self) -> str:
        """The state in words for people: ``not sent yet``."""
        return STATES[self].label

    @property
    def done(self) -> bool:
        """Counts as done for the exit code (0 only when every row is done)."""
        return STATES[self].done

    @property
    def sends_again(self) -> bool:
        """A later run of ``send`` sends the address again (an invalid row once it is fixed)."""
        return STATES[self].sends_again

    @property
    def reached(self) -> bool:
        """The message may have reached the address: its row must not change
        under it, and nothing may take its place in the report."""
        return STATES[self].reached


@dataclass(frozen=True)
class State:
    """What one :class:`Status` means to the rest of the tool."""

    label: str
    done: bool
    sends_again: bool
    reached: bool


# In order of precedence: a row's status is the first of these that one of its
# addresses has (a row with one address refused and one sent is refused).
STATES: dict[Status, State] = {
    Status.INVALID: State("invalid", done=False, sends_again=True, reached=False),
    Status.REFUSED: State("refused", done=False, sends_again=False, reached=False),
    Status.BOUNCED: State("bounced", done=False, sends_again=False, reached=True),
    Status.UNKNOWN: State("unknown", done=False, sends_again=False, reached=True),  # unless --resend-unknown
    Status.IN_FLIGHT: State("being sent", done=False, sends_again=False, reached=True),  # unknown if the run died
    Status.DEFERRED: State("deferred", done=False, sends_again=True, reached=False),
    Status.NOT_SENT_YET: State("not sent yet", done=False, sends_again=True, reached=False),
    # Done: skipped on purpose, the address gets the message of the row it
    # repeats; a merged newsletter must not exit 3 for doing what it should.
    Status.DUPLICATE: State("duplicate", done=True, sends_again=True, reached=False),
    Status.SENT: State("sent", done=True, sends_again=False, reached=True),
}

# The states a report, the summary and ``status`` show, in the order they show them.
# (An in-flight line found by a reader is the message of a run that died: ``unknown``.)
REPORTED: tuple[Status, ...] = tuple(s for s in Status if s is not Status.IN_FLIGHT)

_OLD_WORDS = {"failed": Status.NOT_SENT_YET}  # what earlier versions wrote for rows not sent yet
_PRECEDENCE = {status: rank for rank, status in enumerate(STATES)}


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
    """A row's state: the strongest of its addresses' states in :data:`STATES`
    (sent only when every address was accepted)."""
    return min((outcome.status for outcome in outcomes), key=_PRECEDENCE.__getitem__, default=Status.SENT)
