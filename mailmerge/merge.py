"""The engine of a merge: check every row (:func:`plan_merge`), count what is
left (:func:`count_work`), stream it through the sessions while journalling
(:func:`send_merge`), and read the whole campaign back (:func:`campaign_outcomes`).

Use :class:`mailmerge.Campaign` rather than these: ``send_merge`` alone takes
no lock, recovers no in-flight mark and does not check that the list is
unchanged; :meth:`Campaign.send <mailmerge.campaign.Campaign.send>` does all of
that around it, in the right order.

Each row is rendered once per command, by :func:`plan_merge`: the drafts go
to a :class:`~mailmerge.spool.Spool` on disk beside the list, and every later
pass (count, send, report, Sent copies) reads them from there. Memory does not
grow with the length of the list, and the list file is not read again.
"""

from __future__ import annotations

import re
import threading
import time
from collections.abc import Callable, Iterator
from dataclasses import dataclass, field
from pathlib import Path
from typing import TYPE_CHECKING, Protocol

from .config.file import RecipientLimit, SendConfig, SmtpConfig
from .errors import ConnectionLost, InvalidRow, SendError
from .state.journal import Entry, Journal, ListChanged, row_hash
from .mime.message import EnvelopeRecipient, OutgoingMessage, build_message, check_address, check_addresses
from .delivery.outbox import Outbox, OutboxWriter
from .outcome import Outcome, Status
from .delivery.pacing import Pacer, StopSignal
from .delivery.smtp import Job, SmtpClient, SmtpSession
from .render.template import Draft, MailTemplate
from .spool import Spool, pack, spool_folder, unpack

if TYPE_CHECKING:  # types only: the reader (and pandas) is loaded when a list is read
    from .sources.recipients import Recipient, RecipientList


_ANGLE_ADDRESS = re.compile(r"<([^<>]*)>\s*$")  # "Ann <ann@@example.com>"


def invalid_outcomes(row: int, draft: Draft | None, error: InvalidRow, to: str = "") -> list[Outcome]:
    """One ``invalid`` outcome per address of the row (one line when it has
    none). ``to``, the To header as the row wrote it, stands for the address
    when the row did not get as far as addresses or its To is the broken one:
    the report can be filtered by address either way."""
    inside = _ANGLE_ADDRESS.search(to)  # the address as written, without its name
    to = inside.group(1).strip() if inside else to
    addresses = draft.recipients() if draft is not None else []
    if not addresses:
        return [Outcome(row, "To" if to else "", to or error.address, Status.INVALID, None, error.reason)]
    # A broken To as written: a parser may have made "a@@b" into "@b".
    broken_to = bool(to) and error.address != "" and [box.address for f, box in addresses if f == "To"] == [error.address]
    return [
        Outcome(
            row,
            field,
            to if broken_to and field == "To" else box.address,
            Status.INVALID,
            None,
            error.reason if box.address == error.address else f"row not sent: {error.reason}",
        )
        for field, box in addresses
    ]


def address_key(address: str, *, case_sensitive_local_part: bool = False) -> str:
    """How addresses are compared for duplicates: the domain is always
    case-insensitive; the local part too, unless ``case_sensitive_local_part``
    (RFC 5321 allows a server to tell Ann@ from ann@; almost none do)."""
    local, at, domain = address.rpartition("@")
    return f"{local if case_sensitive_local_part else local.lower()}{at}{domain.lower()}"


def duplicate_outcomes(row: int, envelope: list[EnvelopeRecipient], first: int) -> list[Outcome]:
    """One ``duplicate`` outcome per address of a row whose To repeats row ``first``."""
    reason = f"same To address as row {first}, which gets the message; --allow-duplicates sends every row"
    return [Outcome(row, r.field, r.address, Status.DUPLICATE, None, reason) for r in envelope]


class _Duplicates:
    """Finds the rows whose To addresses all appeared as To in an earlier row
    that will be sent. Cc and Bcc are not compared: a row is one message to
    its To, and copying the same person on several messages is on purpose.
    Rows are seen in list order, so every run finds the same duplicates."""

    def __init__(self, case_sensitive_local_part: bool) -> None:
        self.case_sensitive = case_sensitive_local_part
        self.first_row: dict[str, int] = {}  # address key -> the first row sent to it

    def repeated(self, row: int, envelope: list[EnvelopeRecipient]) -> int | None:
        """The row this one repeats, or None (then its To addresses are remembered)."""
        keys = [address_key(r.address, case_sensitive_local_part=self.case_sensitive)
                for r in envelope if r.field == "To"]
        if keys and all(key in self.first_row for key in keys):
            return self.first_row[keys[0]]
        for key in keys:
            self.first_row.setdefault(key, row)
        return None


class PlannedRow:
    """A row of the list with its draft as the plan rendered it."""

    __slots__ = ("recipient", "_packed")

    def __init__(self, recipient: Recipient, packed: bytes | None) -> None:
        self.recipient = recipient
        self._packed = packed  # the draft stays packed until a pass asks for it (counting does not)

    @property
    def draft(self) -> Draft | None:
        """The row's draft; None for a row that did not render (see :attr:`Plan.invalid`)."""
        return unpack(self._packed) if self._packed is not None else None


@dataclass
class Plan:
    """Every row checked and rendered: which are invalid, how many will be
    sent, and each row's draft (on disk: :meth:`rows`)."""

    recipients: RecipientList
    template: MailTemplate
    invalid: dict[int, list[Outcome]] = field(default_factory=dict)  # by row number
    duplicates: dict[int, list[Outcome]] = field(default_factory=dict)  # by row number: not sent, on purpose
    addresses: int = 0  # envelope recipients of the rows to send
    drafts: Spool[tuple[int, dict[str, str], bytes | None]] = field(default_factory=Spool)  # row, values, packed draft

    @property
    def to_send(self) -> int:
        return len(self.recipients) - len(self.invalid) - len(self.duplicates)

    def skipped(self, row: int) -> list[Outcome] | None:
        """The outcomes of a row that is not sent (invalid or duplicate), else None."""
        return self.invalid.get(row) or self.duplicates.get(row)

    def rows(self) -> Iterator[PlannedRow]:
        """Every row of the list, in order, with its draft, read from disk."""
        from .sources.recipients import Recipient

        for row, values, packed in self.drafts:
            yield PlannedRow(Recipient(row, values), packed)


def plan_merge(
    recipients: RecipientList, template: MailTemplate, limit: RecipientLimit | None = None,
    *, spool_in: Path | None = None, allow_duplicates: bool = False, case_sensitive_local_part: bool = False,
) -> Plan:
    """Render every row before anything is sent, once: the drafts are kept on
    disk, in a temporary file in ``spool_in`` (default: the list's folder,
    else the system's temporary folder), for the rest of the command. A row
    whose message would have more recipients than ``limit`` allows (default:
    100) is invalid. A row whose To addresses all were the To of an earlier
    row is a ``duplicate`` and is not sent, unless ``allow_duplicates``
    (addresses compared as :func:`address_key` says).

    Raises :class:`~mailmerge.errors.TemplateError` when the template uses a
    name that is not a column, or fails on a row; an invalid row is recorded
    in the plan and the others go on.
    """
    template.check_columns(recipients.columns, recipients.first_row)
    limit = limit or RecipientLimit()
    plan = Plan(recipients, template, drafts=Spool(spool_in or spool_folder(recipients.path.parent)))
    duplicates = _Duplicates(case_sensitive_local_part)
    for recipient in recipients:
        # Render and check addresses; building the MIME message is left to the
        # send (a row it refuses there is still reported invalid, not lost).
        draft = None
        try:
            draft = template.render(recipient)
            envelope = check_addresses(draft, limit).envelope
        except InvalidRow as error:
            to = template.to_text(recipient)
            plan.invalid[recipient.row] = invalid_outcomes(recipient.row, draft, error, to)
        else:
            first = None if allow_duplicates else duplicates.repeated(recipient.row, envelope)
            if first is not None:
                plan.duplicates[recipient.row] = duplicate_outcomes(recipient.row, envelope, first)
            else:
                plan.addresses += len(envelope)
        plan.drafts.append((recipient.row, recipient.values, pack(draft) if draft is not None else None))
    return plan


def message_of(plan: Plan, recipient: Recipient, draft: Draft | None) -> OutgoingMessage | list[Outcome]:
    """A planned row's message, or its ``invalid`` outcomes (from the plan, or
    when the message cannot be built)."""
    skipped = plan.skipped(recipient.row)  # as the plan found it (e.g. over the recipient limit, a duplicate)
    if skipped is not None:
        return skipped
    assert draft is not None  # a row that did not render is in plan.invalid
    try:
        return build_message(draft)
    except InvalidRow as error:
        return invalid_outcomes(recipient.row, draft, error)


def rendered_rows(plan: Plan) -> Iterator[tuple[Recipient, OutgoingMessage | list[Outcome]]]:
    """Each row with its message (or its invalid outcomes), built one at a
    time from the plan's drafts."""
    for planned in plan.rows():
        yield planned.recipient, message_of(plan, planned.recipient, planned.draft)


# --- what is left to send --------------------------------------------------------


class JournalView(Protocol):
    """What the merge reads from the journal: one row's lines at a time."""

    def row_entries(self, row: int) -> list[Entry]: ...

    def rows(self) -> Iterator[tuple[int, list[Entry]]]: ...

    def has_lines(self) -> bool: ...


def _envelope(draft: Draft | None) -> list[EnvelopeRecipient]:
    try:
        return check_addresses(draft).envelope if draft is not None else []
    except InvalidRow:
        return []  # rows invalid now are in plan.invalid


def _settled(entry: Entry, resend_unknown: bool) -> bool:
    """A later run does not send this address again."""
    return not entry.state.sends_again and not (resend_unknown and entry.state is Status.UNKNOWN)


def _row_is_done(recipient: Recipient, journaled: list[Entry], resend_unknown: bool) -> bool:
    """Every address of the row is settled, as far as the journal can tell
    without rendering the row. A row's envelope depends only on the template
    (the same within a campaign) and the row, and a row that a message reached
    does not change (:func:`count_work` stops when it did); a row that reached
    no one may have been corrected since (a refused address fixed): its lines
    count only when written for the row as it is now. A row invalid before has
    an unsettled line: :func:`_left` decides from its envelope."""
    if not journaled or not all(_settled(e, resend_unknown) for e in journaled):
        return False
    if all(e.state.reached for e in journaled):
        return True
    fingerprint = row_hash(recipient.values)  # only here: hashing every row costs ~3 s a million rows
    return all(e.row_hash == fingerprint for e in journaled)


def _left(envelope: list[EnvelopeRecipient], journaled: list[Entry], resend_unknown: bool) -> list[EnvelopeRecipient]:
    """The addresses of ``envelope`` that are still to be sent."""
    finished = {e.address for e in journaled if _settled(e, resend_unknown)}
    return [r for r in envelope if r.address not in finished]


def _replaced(envelope: list[EnvelopeRecipient], journaled: list[Entry]) -> list[str]:
    """The lines a new attempt of the row replaces: addresses no longer in it
    that no message reached (the latest attempt of a row is what the report says)."""
    current = {r.address for r in envelope}
    return [e.address for e in journaled if e.address not in current and not e.state.reached]


def _check_unchanged(plan: Plan, recipient: Recipient, journaled: list[Entry]) -> None:
    """Stop when a row that a message may have reached holds other values now.
    A row that reached no one (every address refused or invalid) may be
    corrected: that is the fix for a refusal, not a list change."""
    fingerprints = {e.row_hash for e in journaled if e.state.reached and e.row_hash}
    if fingerprints and fingerprints != {row_hash(recipient.values)}:
        raise ListChanged(
            f"{plan.recipients.path}: row {recipient.row} changed since it was sent "
            f"({', '.join(sorted(e.address for e in journaled))}); rows were probably "
            "inserted, deleted or sorted. Restore the list, or start over with "
            "--restart (everyone is sent again) or a new --campaign NAME"
        )


def _journaled_rows(plan: Plan, journal: JournalView) -> Iterator[tuple[Recipient, PlannedRow, list[Entry]]]:
    """Each row of the plan with its journal lines, while the journal is being
    written (a look-up per row; none when the journal is empty)."""
    any_lines = journal.has_lines()
    for planned in plan.rows():
        recipient = planned.recipient
        yield recipient, planned, journal.row_entries(recipient.row) if any_lines else []


def _read_journaled_rows(plan: Plan, journal: JournalView) -> Iterator[tuple[Recipient, PlannedRow, list[Entry]]]:
    """The same, faster, when nothing writes to the journal meanwhile: the
    journal read in one pass beside the plan (both in row order)."""
    lines = journal.rows()
    found = next(lines, None)
    for planned in plan.rows():
        recipient = planned.recipient
        while found is not None and found[0] < recipient.row:  # rows no longer in the list
            found = next(lines, None)
        if found is not None and found[0] == recipient.row:
            yield recipient, planned, found[1]
        else:
            yield recipient, planned, []


@dataclass(frozen=True)
class Work:
    """What a run of ``send`` has to do, counted in rows (messages)."""

    rows: int  # rows in the list
    done: int  # rows whose every address is settled: sent, refused, unknown, bounced
    to_send: int  # rows with at least one address left to send
    invalid: int
    duplicates: int = 0  # rows not sent because their To repeats an earlier row


def count_work(plan: Plan, journal: JournalView, *, resend_unknown: bool = False) -> Work:
    """Count what is already done and what is left, and stop when the list
    changed under a row that was already sent."""
    done = to_send = 0
    for recipient, planned, journaled in _read_journaled_rows(plan, journal):
        if recipient.row in plan.invalid:
            continue
        _check_unchanged(plan, recipient, journaled)
        if recipient.row in plan.duplicates:
            continue
        if not journaled:  # the common case
            to_send += 1
        elif _row_is_done(recipient, journaled, resend_unknown) or not _left(
            _envelope(planned.draft), journaled, resend_unknown
        ):
            done += 1
        else:
            to_send += 1
    return Work(len(plan.recipients), done, to_send, len(plan.invalid), len(plan.duplicates))


# --- sending ---------------------------------------------------------------------


@dataclass
class MergeResult:
    """How a run of ``send`` ended."""

    messages: int = 0  # messages handed to the server in this run
    error: SendError | None = None  # the run stopped early on this
    stopped: str = ""  # why the run stopped before the end ("" when it did not)
    interrupted: bool = False  # the person stopped it (Ctrl-C, SIGTERM): exit 130, not an error


@dataclass(order=True)
class _Retry:
    due: float
    row: int
    attempt: int = field(compare=False)
    job: Job = field(compare=False)


class _Run:
    """One run of ``send``: hands the sessions one message at a time (rows in
    order, deferred ones again when due), paced, and journals what comes back.

    Several sessions (``connections``) ask for messages from their own
    threads, so everything here runs under one lock.
    """

    def __init__(
        self,
        plan: Plan,
        journal: Journal,
        settings: SendConfig,
        stop: StopSignal,
        on_row: Callable[[list[Outcome]], None],
        notify: Callable[[str], None],
    ) -> None:
        self.plan, self.journal, self.settings = plan, journal, settings
        self.stop, self.on_row, self.notify = stop, on_row, notify
        self.pacer = Pacer(settings.rate, settings.batch_size)
        self.retries: list[_Retry] = []
        self.result = MergeResult()
        self.lock = threading.RLock()
        self._rows: Iterator[Job] = iter(())
        self._paused_at = 0

    def start(self, resend_unknown: bool) -> None:
        for row, outcomes in self.plan.invalid.items():
            self._record_invalid(outcomes, self.journal.row_entries(row))
        self._rows = self._row_jobs(resend_unknown)

    def _record_invalid(self, outcomes: list[Outcome], journaled: list[Entry]) -> None:
        """Journal an invalid row as its latest attempt, unless an address of it
        is settled (sent, refused, unknown, bounced): a row can turn invalid
        after it went (a lower recipient limit, an attachment deleted since),
        and 'invalid' over those lines would let a later run send them again.
        Such a row is reported invalid from the plan while it is invalid."""
        if any(not e.state.sends_again for e in journaled):
            return
        current = {o.address for o in outcomes}
        replaced = [e.address for e in journaled if e.address not in current]
        if replaced:
            self.journal.forget(outcomes[0].row, replaced)
        self.journal.record(outcomes)

    def _row_jobs(self, resend_unknown: bool) -> Iterator[Job]:
        """A job for each row with something left to send, built when asked for."""
        for recipient, planned, journaled in _journaled_rows(self.plan, self.journal):
            if self.plan.skipped(recipient.row) is not None or _row_is_done(recipient, journaled, resend_unknown):
                continue
            draft = planned.draft
            assert draft is not None  # a row that did not render is in plan.invalid
            addresses = check_addresses(draft)
            targets = _left(addresses.envelope, journaled, resend_unknown)
            replaced = _replaced(addresses.envelope, journaled)
            if replaced:  # a row fixed since its last attempt (a refusal, a missing file)
                self.journal.forget(recipient.row, replaced)
            if not targets:
                continue
            earlier = next((e for e in journaled if e.message_id), None)  # the identity to keep
            try:
                message = build_message(
                    draft,
                    message_id=earlier.message_id if earlier else "",
                    date=earlier.date if earlier else "",
                    addresses=addresses,
                )
            except InvalidRow as error:
                self.plan.invalid[recipient.row] = outcomes = invalid_outcomes(recipient.row, draft, error)
                self._record_invalid(outcomes, journaled)
                continue
            yield self._job(recipient, message, targets, attempt=1)

    def _job(self, recipient: Recipient, message: OutgoingMessage, targets: list[EnvelopeRecipient], attempt: int) -> Job:
        fingerprint = row_hash(recipient.values)
        order = {r.address: i for i, r in enumerate(message.recipients)}

        def before_end(accepted: list[EnvelopeRecipient]) -> None:
            marks = [Outcome(message.row, r.field, r.address, Status.UNKNOWN, None, "", message.message_id) for r in accepted]
            with self.lock:
                self.journal.mark_in_flight(marks, date=message.date, fingerprint=fingerprint, order=order)

        def done(outcomes: list[Outcome]) -> None:
            with self.lock:
                self.pacer.completed()
                # Written with the next in-flight mark (or before a wait): one commit a message.
                self.journal.record(outcomes, date=message.date, fingerprint=fingerprint, order=order, later=True)
                self.on_row(outcomes)
                deferred = [t for t in job.targets
                            if any(o.address == t.address and o.status is Status.DEFERRED for o in outcomes)]
                retry = self.settings.retry
                if deferred and attempt <= retry.attempts:
                    delay = retry.delay(attempt)
                    again = self._job(recipient, message, deferred, attempt + 1)
                    self.retries.append(_Retry(time.monotonic() + delay, message.row, attempt + 1, again))
                    self.retries.sort()
                    self.notify(f"row {message.row}: deferred by the server; trying again in {delay:g} s")

        job = Job(message, targets, before_end, done)
        return job

    def next_job(self, wait: bool) -> Job | None:
        """The next message to send, or None: the end, a stop, or (``wait``
        False) nothing ready without waiting."""
        with self.lock:
            while self._may_continue():
                if self.pacer.batch_done and self._paused_at != self.pacer.handed:
                    if not wait:
                        return None
                    self._paused_at = self.pacer.handed
                    until = time.strftime("%H:%M:%S", time.localtime(time.time() + self.settings.batch_pause))
                    self.notify(f"batch of {self.settings.batch_size} sent; pausing {self.settings.batch_pause:g} s, until {until}")
                    if not self._sleep(self.settings.batch_pause):
                        continue
                delay = self.pacer.delay()
                if delay > 0:
                    if not wait:
                        return None
                    self._sleep(delay)
                    continue
                job = self._due_retry() or next(self._rows, None)
                if job is None:
                    if not self.retries or not wait:
                        self.flush()
                        return None
                    self._sleep(self.retries[0].due - time.monotonic())
                    continue
                self.pacer.handed_one()
                self.result.messages += 1
                return job
            return None

    def _sleep(self, seconds: float) -> bool:
        """Wait (False when woken by a stop), the journal up to date meanwhile."""
        self.flush()
        return self.stop.sleep(seconds)

    def flush(self) -> None:
        """Write the results kept for the journal's next commit."""
        with self.lock:
            self.journal.flush()

    def _due_retry(self) -> Job | None:
        if self.retries and self.retries[0].due <= time.monotonic():
            return self.retries.pop(0).job
        return None

    def _may_continue(self) -> bool:
        if self.stop.requested:
            self.result.stopped = self.result.stopped or self.stop.reason
            self.result.interrupted = self.stop.interrupted
            return False
        limit = self.settings.max_messages
        if limit and self.result.messages >= limit:
            self.result.stopped = f"the limit of {limit} messages for one run was reached"
            return False
        return True

    def failed(self, error: SendError) -> None:
        """A session gave up (or could not log in): the others stop too."""
        with self.lock:
            self.result.error = self.result.error or error
            self.stop.request(str(error))


def send_merge(
    plan: Plan,
    journal: Journal,
    smtp: SmtpConfig | Outbox,
    password: str | None = None,
    settings: SendConfig | None = None,
    *,
    stop: StopSignal | None = None,
    resend_unknown: bool = False,
    on_row: Callable[[list[Outcome]], None] = lambda outcomes: None,
    notify: Callable[[str], None] = lambda text: None,
    log: Callable[[str], None] | None = None,
) -> MergeResult:
    """Send what is left of the campaign through one SMTP session (or
    ``settings.connections`` sessions side by side), or write it to an
    :class:`~mailmerge.delivery.outbox.Outbox` folder.

    Skips every address the journal has as sent, refused or unknown (unless
    ``resend_unknown``); a connection or login error before the first message
    is raised. Later faults are survived (reconnect, retry) within the bounds
    of ``settings``; when they are not, the result carries the error.
    ``on_row`` gets each message's outcomes; ``notify`` gets news for the user;
    ``log`` gets the SMTP conversation, its secrets masked.
    """
    settings = settings or SendConfig()
    stop = stop or StopSignal()
    run = _Run(plan, journal, settings, stop, on_row, notify)
    run.start(resend_unknown)
    clients: list[SmtpClient] | list[OutboxWriter] = [OutboxWriter(smtp)] if isinstance(smtp, Outbox) else [
        SmtpClient(smtp, password, backoff=settings.reconnect, stop=stop,
                   max_per_connection=settings.max_per_connection, notify=notify,
                   before_wait=run.flush, log=log)
        for _ in range(max(1, settings.connections))
    ]
    errors: list[BaseException] = []

    def serve(client: SmtpClient | OutboxWriter) -> None:
        try:
            client.stream(run.next_job)
        except ConnectionLost as error:  # gave up reconnecting
            run.failed(error)
        except SendError as error:  # the first connection or the login failed
            errors.append(error)
            run.failed(error)
        finally:
            client.close()

    try:
        if len(clients) == 1:
            serve(clients[0])
        else:
            threads = [threading.Thread(target=serve, args=(c,), daemon=True) for c in clients]
            for thread in threads:
                thread.start()
            for thread in threads:
                while thread.is_alive():
                    thread.join(0.2)  # short waits: Ctrl-C is handled in this thread
    except KeyboardInterrupt:
        for client in clients:
            client.abort()  # a second Ctrl-C: quit at once
        raise
    finally:
        run.flush()
    if errors and run.result.messages <= len(errors):
        raise errors[0]  # nothing could be sent: a setting is wrong
    return run.result


# --- the report of the whole campaign -----------------------------------------------


def campaign_outcomes(plan: Plan, journal: JournalView) -> Iterator[Outcome]:
    """Every address of every row, all runs together, in row order: the latest
    attempt of each row as the journal has it, the rows invalid now, and
    ``not_sent_yet`` for what was not sent yet."""
    for recipient, planned, journaled in _read_journaled_rows(plan, journal):
        if recipient.row in plan.invalid and not any(e.state.reached for e in journaled):
            yield from plan.invalid[recipient.row]  # (a row sent before it turned invalid: as the journal says)
        elif recipient.row in plan.duplicates and not any(e.state.reached for e in journaled):
            yield from plan.duplicates[recipient.row]  # (one sent by a run with --allow-duplicates: as the journal says)
        elif not journaled:
            for target in _envelope(planned.draft):
                yield Outcome(recipient.row, target.field, target.address, Status.NOT_SENT_YET, None,
                              "not sent yet: run the same command again to send it")
        else:
            for entry in journaled:
                if entry.state is Status.IN_FLIGHT:  # the run was killed: the next run will say unknown
                    yield Outcome(recipient.row, entry.field, entry.address, Status.UNKNOWN, None,
                                  "the run stopped while this message was being sent: it may have been delivered",
                                  entry.message_id)
                else:
                    yield entry.outcome()


# --- a test send to yourself -----------------------------------------------------------


def send_test(
    plan: Plan,
    smtp: SmtpConfig,
    password: str | None,
    address: str,
    *,
    limit: int = 3,
    log: Callable[[str], None] | None = None,
) -> list[Outcome]:
    """Send the first ``limit`` valid rows exactly as they would go out,
    headers included, but only to ``address`` and with ``[TEST]`` before the
    subject. Nothing goes into the journal: the real send still sends every row.
    """
    _, ascii_form = check_address(address)
    target = EnvelopeRecipient("To", ascii_form or address)
    outcomes: list[Outcome] = []
    with SmtpSession(smtp, password, log=log) as session:
        for _, message in rendered_rows(plan):
            if len(outcomes) >= limit:
                break
            if isinstance(message, list):
                continue
            message.message.replace_header("Subject", f"[TEST] {message.message['Subject']}")
            outcomes.extend(session.send(message, [target]))
    return outcomes
