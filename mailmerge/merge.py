"""A whole merge: check every row, then send the good ones in one session.

This is the library API behind the commands::

    recipients = read_recipients("list.xlsx")
    template = load_template("welcome.txt", default_from=config.message.sender)
    plan = plan_merge(recipients, template)      # renders every row; sends nothing
    result = send_merge(plan, config.smtp, password)
    write_report(Path("list.report.csv"), result.outcomes)

Rows are rendered twice (once to check, once to send) instead of being held
as messages, so memory does not grow with the length of the list.
"""

from __future__ import annotations

from collections.abc import Callable, Iterator
from dataclasses import dataclass, field

from .config import SmtpConfig
from .errors import ConnectionLost, InvalidRow, SendError
from .message import OutgoingMessage, build_message, check_addresses
from .outcome import Outcome, Status
from .recipients import Recipient, RecipientList
from .template import Draft, MailTemplate
from .transport import SmtpSession


def render_row(template: MailTemplate, recipient: Recipient) -> OutgoingMessage | list[Outcome]:
    """Render and build one row's message; a row that cannot be sent because
    of its data gives its ``invalid`` outcomes instead."""
    draft: Draft | None = None
    try:
        draft = template.render(recipient)
        return build_message(draft)
    except InvalidRow as error:
        return invalid_outcomes(recipient.row, draft, error)


def invalid_outcomes(row: int, draft: Draft | None, error: InvalidRow) -> list[Outcome]:
    """One ``invalid`` outcome per address of the row (one line when it has none)."""
    addresses = draft.recipients() if draft is not None else []
    if not addresses:
        return [Outcome(row, "", error.address, Status.INVALID, None, error.reason)]
    return [
        Outcome(
            row,
            field,
            box.address,
            Status.INVALID,
            None,
            error.reason if box.address == error.address else f"row not sent: {error.reason}",
        )
        for field, box in addresses
    ]


@dataclass
class Plan:
    """Every row checked: which are invalid, how many will be sent."""

    recipients: RecipientList
    template: MailTemplate
    invalid: dict[int, list[Outcome]] = field(default_factory=dict)  # by row number
    addresses: int = 0  # envelope recipients of the rows to send

    @property
    def to_send(self) -> int:
        return len(self.recipients) - len(self.invalid)


def plan_merge(recipients: RecipientList, template: MailTemplate) -> Plan:
    """Render every row before anything is sent.

    Raises :class:`~mailmerge.errors.TemplateError` when the template uses a
    name that is not a column, or fails on a row; an invalid row is recorded
    in the plan and the others go on.
    """
    template.check_columns(recipients.columns, recipients.rows[0].row)
    plan = Plan(recipients, template)
    for recipient in recipients:
        # Render and check addresses; building the MIME message is left to the
        # send (a row it refuses there is still reported invalid, not lost).
        draft = None
        try:
            draft = template.render(recipient)
            plan.addresses += len(check_addresses(draft).envelope)
        except InvalidRow as error:
            plan.invalid[recipient.row] = invalid_outcomes(recipient.row, draft, error)
    return plan


def rendered_rows(plan: Plan) -> Iterator[tuple[Recipient, OutgoingMessage | list[Outcome]]]:
    """Each row with its message (or its invalid outcomes), rendered afresh."""
    for recipient in plan.recipients:
        yield recipient, render_row(plan.template, recipient)


@dataclass
class MergeResult:
    """The outcome of every address of every row, and what stopped the run."""

    outcomes: list[Outcome]
    error: SendError | None = None  # the run stopped early on this
    interrupted: bool = False  # the user pressed Ctrl-C


def send_merge(
    plan: Plan,
    smtp: SmtpConfig,
    password: str | None = None,
    on_row: Callable[[list[Outcome]], None] = lambda outcomes: None,
) -> MergeResult:
    """Send every valid row of the plan through one SMTP session.

    Connection and login errors are raised before anything is sent. A lost
    connection stops the run: the result carries the error, and every row not
    sent is ``failed``. ``on_row`` is called with each row's outcomes.
    """
    outcomes: list[Outcome] = []
    rows = rendered_rows(plan)
    in_flight: int | None = None
    with SmtpSession(smtp, password) as session:
        try:
            for recipient, message in rows:
                in_flight = recipient.row
                if isinstance(message, list):
                    row_outcomes = message
                else:
                    row_outcomes = session.send(message)
                outcomes.extend(row_outcomes)
                in_flight = None
                on_row(row_outcomes)
        except ConnectionLost as error:
            outcomes.extend(error.outcomes)
            on_row(error.outcomes)
            outcomes.extend(_unsent(rows, f"not sent: the run stopped ({error})"))
            return MergeResult(outcomes, error=error)
        except KeyboardInterrupt:
            session.abort()
            done = {outcome.row for outcome in outcomes}
            for recipient in plan.recipients:
                if recipient.row in done:
                    continue
                reason = "not sent: interrupted (Ctrl-C)"
                if recipient.row == in_flight:
                    reason = "interrupted (Ctrl-C) while being sent: it may have been delivered"
                outcomes.extend(_unsent(iter([(recipient, render_row(plan.template, recipient))]), reason))
            return MergeResult(outcomes, interrupted=True)
    return MergeResult(outcomes)


def _unsent(
    rows: Iterator[tuple[Recipient, OutgoingMessage | list[Outcome]]], reason: str
) -> Iterator[Outcome]:
    """``failed`` outcomes for rows that were never sent (invalid ones stay invalid)."""
    for recipient, message in rows:
        if isinstance(message, list):
            yield from message
            continue
        for r in message.recipients:
            yield Outcome(recipient.row, r.field, r.address, Status.FAILED, None, reason)
