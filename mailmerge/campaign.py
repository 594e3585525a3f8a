"""The library's front door: a :class:`Campaign` is a list, a template and a
config, with a method for each command::

    from mailmerge import Campaign

    campaign = Campaign.open("list.xlsx", "invoice.txt", config="mailmerge.toml")
    for recipient, message in campaign.preview(): ...
    result = campaign.send()            # lock, recover, check the list, stream, journal
    campaign.status()                   # rows in each state
    campaign.write_report("report.csv")
    campaign.bounces(since="2d")

:meth:`Campaign.send` keeps every promise of ``mailmerge send``: the
campaign's lock, the in-flight marks of a killed run turned ``unknown`` (never
sent again), a stop when a row already sent has changed, a stop when the
journal was lost (the marker beside the list), then one stream of messages
with each reply journalled. The CLI is a thin shell over this class: it parses
options, calls these methods and prints. Nothing here prints: what a front end
shows comes through :class:`Events`.

Rows can come from a file or from Python (a list of dicts, or a pandas
DataFrame). Rows from Python have no file to sit beside, so they need
``journal=`` (the folder of the journal) and ``name=`` (the campaign's id);
their marker is ``.mailmerge-sent`` in the folder that holds the journal's
folder, and their rows are numbered from 1 in the order given.
"""

from __future__ import annotations

import contextlib
import datetime as dt
from collections.abc import Callable, Iterable, Iterator, Mapping
from dataclasses import dataclass, field
from pathlib import Path
from typing import TYPE_CHECKING, Any

from .config.file import Config, SendConfig, SmtpConfig, config_folders, find_config, load_config
from .errors import ConfigError, InputError, MailmergeError, NoSender, RecipientsError
from .state.journal import JOURNAL_FOLDER, Journal, campaign_id, journal_folder, open_to_send, open_view
from .state.marker import SentMarker, check_journal_kept
from .merge import (
    MergeResult, Plan, Work, campaign_outcomes, count_work, plan_merge, rendered_rows, send_merge, send_test,
)
from .delivery.outbox import Outbox
from .outcome import Outcome
from .delivery.pacing import StopSignal
from .state.report import Summary, default_report_path, write_report
from .render.template import MailTemplate, TemplateConfig, load_template, template_from_text
from .spool import spool_folder

if TYPE_CHECKING:
    from .imap.archive import BounceResult, CopyResult
    from .mime.message import OutgoingMessage
    from .sources.recipients import Recipient, RecipientList

Rows = Iterable[Mapping[str, Any]] | Any  # a list of dicts, or a pandas DataFrame


class Events:
    """What a front end hears from :meth:`Campaign.send`. Every method does
    nothing (or the quiet default) unless overridden; the CLI's subclass draws
    the progress bar and asks its questions here."""

    log: Callable[[str], None] | None = None  # gets the SMTP conversation, secrets masked
    prompt: Callable[[str], str] | None = None  # asks for a missing password; None: never ask

    def starting(self, start: Start) -> bool:
        """Called once the campaign is locked and counted, before anything is
        sent; return False to send nothing (the person said no)."""
        return True

    def confirm_restart(self) -> bool:
        """Called before ``restart=True`` forgets what the campaign sent;
        return False to keep it (then nothing is forgotten or sent)."""
        return True

    def password(self, smtp: SmtpConfig, config: Config) -> str | None:
        """The password (or token) for ``smtp``, from its first source."""
        from .config.credentials import find_secret

        secret = find_secret(smtp, config.path, prompt=self.prompt)
        return secret.value if secret else None

    def sending(self, total: int) -> None:
        """Called just before the first message goes: ``total`` messages to send."""

    def row(self, outcomes: list[Outcome]) -> None:
        """One message's outcomes, as each reply arrives."""

    def notify(self, text: str) -> None:
        """News for the person while sending: a pause, a retry, a reconnection."""

    def saving_copies(self) -> None:
        """Called after a real send, before the Sent copies are saved
        ([imap] save_sent): the IMAP login may ask for a password."""


@dataclass(frozen=True)
class Start:
    """Where a send starts from: given to :meth:`Events.starting`."""

    work: Work  # rows done, left to send, invalid
    recovered: int  # in-flight marks of a killed run, now unknown
    other_campaigns: list[tuple[str, int]]  # other campaigns that sent from this list: (id, messages)
    smtp: SmtpConfig | None  # the server, for a real send with something to send
    outbox: Path | None


@dataclass
class SendResult(MergeResult):
    """How :meth:`Campaign.send` ended (see :class:`~mailmerge.merge.MergeResult`)."""

    work: Work | None = None  # what there was to do when it started
    recovered: int = 0
    dry_run: bool = False  # nothing was sent on purpose
    cancelled: bool = False  # :meth:`Events.starting` said no
    summary: Summary | None = None  # the report's counts, when send() wrote one
    copies: CopyResult | None = None  # the Sent copies saved ([imap] save_sent, or sent_folder=)
    copies_error: MailmergeError | None = None  # why they were not all saved (the next send saves the rest)


@dataclass
class Campaign:
    """One campaign: its config, its checked rows (:class:`~mailmerge.merge.Plan`),
    its id in the journal and where the journal is. Make one with :meth:`open`."""

    config: Config
    plan: Plan
    name: str  # the campaign's id in the journal
    folder: Path  # the journal's folder
    list_path: Path | None  # None for rows from Python
    marker: SentMarker
    notes: list[str] = field(default_factory=list)  # for the person: assumptions, invalid rows, warnings

    @classmethod
    def open(
        cls,
        source: str | Path | None = None,
        template: str | Path | MailTemplate | None = None,
        *,
        config: str | Path | Config | None = None,
        rows: Rows | None = None,
        name: str | None = None,
        journal: str | Path | None = None,
        sheet: str | None = None,
        encoding: str | None = None,
        attachments_dir: str | Path | None = None,
        allow_duplicates: bool = False,
        case_sensitive_local_part: bool = False,
    ) -> Campaign:
        """Read the config, the list and the template, and check every row.

        ``source`` is the list file (.xlsx, .xlsm, .csv, .tsv, .txt); or give
        ``rows`` instead (a list of dicts or a DataFrame), with ``journal``
        (a folder) and ``name``. ``template`` is a file's path, a template's
        text (a ``str`` with a line break), or a
        :meth:`MailTemplate.from_string <mailmerge.render.template.MailTemplate.from_string>`;
        default: ``template`` in ``[message]`` of the config. ``config`` is a
        path or a :class:`~mailmerge.config.file.Config` (default: mailmerge.toml
        beside the list, beside the template, in their parent folders, then in
        the current folder). ``journal`` defaults to
        ``.mailmerge/`` beside the list. Each address gets one message: a row
        whose To repeats an earlier row's To is ``duplicate`` and not sent,
        unless ``allow_duplicates`` (addresses compared case-insensitively,
        the local part too unless ``case_sensitive_local_part``). Raises an
        :class:`~mailmerge.errors.InputError` naming what is wrong.
        """
        if (source is None) == (rows is None):
            raise InputError("give either a list file or rows=, not both and not neither")
        list_path = Path(source) if source is not None else None
        if list_path is None and (journal is None or not name):
            raise InputError("rows from Python need journal= (the journal's folder) and name= (the campaign's name)")
        settings = _load_config(config, list_path, template)
        folder = Path(journal) if journal is not None else journal_folder(list_path)  # type: ignore[arg-type]
        recipients = _read_list(list_path, sheet, encoding) if list_path is not None else _python_rows(rows)
        template_settings = TemplateConfig(
            default_from=settings.message.sender, unsubscribe=settings.message.unsubscribe,
            list_id=settings.message.list_id, css=settings.message.css,
            attachments_dir=Path(attachments_dir) if attachments_dir is not None else None,
            protected=_protected_files(settings, list_path, folder),
        )
        mail = _load_template(template, settings, template_settings)
        # The drafts are spooled beside the list (or the journal): /tmp is often memory.
        near = list_path.parent if list_path is not None else folder.parent
        try:
            plan = plan_merge(recipients, mail, settings.send.recipient_limit, spool_in=spool_folder(near),
                              allow_duplicates=allow_duplicates, case_sensitive_local_part=case_sensitive_local_part)
        except NoSender as error:
            if settings.path is None:  # a config would have given From
                raise NoSender(f"{error}; {settings.not_found()}") from error
            raise
        campaign_name = campaign_id(list_path, mail.text, name) if list_path is not None else str(name)
        marker = SentMarker(list_path) if list_path is not None else SentMarker(folder, path=folder.parent / ".mailmerge-sent")
        notes = [f"note: {note}" for note in recipients.notes]
        notes += [f"row {outcomes[0].row}: invalid: {outcomes[0].reason}" for outcomes in plan.invalid.values()]
        notes += _duplicate_notes(plan)
        notes += [f"warning: {warning}" for warning in mail.url_warnings(recipients)]
        return cls(settings, plan, campaign_name, folder, list_path, marker, notes)

    # --- preview, check ---------------------------------------------------------

    def preview(self) -> Iterator[tuple[Recipient, OutgoingMessage | list[Outcome]]]:
        """Each row with its message, or with its ``invalid`` outcomes; rendered
        one at a time (memory stays flat). Sends nothing."""
        return rendered_rows(self.plan)

    def check_smtp(self, password: str | None = None, *, events: Events | None = None,
                   step: Callable[[str], None] = lambda text: None) -> None:
        """Connect, secure the connection, log in and quit (sends nothing);
        ``step`` hears each step that went well. ``password``: default from
        :meth:`Events.password`. Raises a :class:`~mailmerge.errors.SendError`."""
        from .delivery.smtp import SmtpSession

        events = events or Events()
        smtp = self.config.require_server()
        secret = password if password is not None else events.password(smtp, self.config)
        session = SmtpSession(smtp, secret, log=events.log, step=step)
        session.open()
        session.close()
        step("QUIT")

    # --- send ---------------------------------------------------------------------

    def send(
        self,
        *,
        password: str | None = None,
        outbox: str | Path | None = None,
        dry_run: bool = False,
        restart: bool = False,
        resend_unknown: bool = False,
        pace: SendConfig | None = None,
        events: Events | None = None,
        stop: StopSignal | None = None,
        handle_signals: bool = True,
        report: str | Path | None = None,
        sent_folder: str | None = None,
    ) -> SendResult:
        """Send what is left of the campaign, keeping every promise of
        ``mailmerge send``: take the campaign's lock (:class:`CampaignLocked`
        when another run holds it), stop when the journal was lost
        (:class:`JournalLost`), turn a killed run's in-flight marks into
        ``unknown`` (not sent again unless ``resend_unknown``), stop when a row
        already sent has changed (:class:`ListChanged`, nothing sent), then
        stream the rest, each reply journalled as it comes.

        ``outbox``: write .eml files into that folder instead (its own journal,
        no account). ``dry_run``: count only. ``restart``: forget what the
        campaign sent and send everyone again. ``pace``: the [send] settings
        to use (default: the config's). With ``handle_signals`` (main thread
        only) a first Ctrl-C or SIGTERM finishes the message in flight and
        stops (``result.interrupted``); a second one raises KeyboardInterrupt,
        the journal consistent. Errors that stop the run after messages went
        are in ``result.error``; a connection or login error before any message
        is raised. ``report``: write the CSV report of the whole campaign
        there at the end (``result.summary`` has its counts); else see
        :meth:`write_report`. With ``[imap] save_sent`` (or ``sent_folder``)
        a copy of each accepted message goes to the Sent folder
        (``result.copies``); a failure there never undoes the send
        (``result.copies_error``), and the next send saves what is missing.
        """
        events = events or Events()
        pace = pace or self.config.send
        out = Path(outbox) if outbox is not None else None
        if out is not None and out.exists() and not out.is_dir():
            raise InputError(f"--outbox {out} is a file: give a folder (it is made when missing)")
        folder = out / JOURNAL_FOLDER if out is not None else self.folder
        marker = self.marker if out is None else None  # only a real send leaves this evidence
        if dry_run:
            return SendResult(work=self._count(folder, marker, resend_unknown), dry_run=True)
        with open_to_send(folder, self.name, fsync=pace.journal_fsync, marker=marker, restart=restart) as journal:
            if restart:
                if not events.confirm_restart():
                    raise InputError("--restart needs a confirmation: answer yes, or add --yes")
                journal.restart()
            journal.register(self.list_path or folder, self.plan.template.path)
            recovered = journal.recover()
            work = count_work(self.plan, journal, resend_unknown=resend_unknown)
            others = journal.other_campaigns(self.list_path) if self.list_path is not None else []
            smtp = self.config.require_server() if out is None and work.to_send else None
            if not events.starting(Start(work, recovered, others, smtp, out)):
                return SendResult(work=work, recovered=recovered, cancelled=True)
            result = SendResult(work=work, recovered=recovered)
            if work.to_send:
                target: SmtpConfig | Outbox = Outbox(out, len(self.plan.recipients)) if out is not None else smtp  # type: ignore[assignment]
                secret = password if password is not None or out is not None else events.password(smtp, self.config)  # type: ignore[arg-type]
                events.sending(work.to_send)
                stop = stop or StopSignal()
                with stop.installed() if handle_signals else contextlib.nullcontext(stop):
                    streamed = send_merge(self.plan, journal, target, secret, pace, stop=stop,
                                          resend_unknown=resend_unknown, on_row=events.row,
                                          notify=events.notify, log=events.log)
                result.messages, result.error = streamed.messages, streamed.error
                result.stopped, result.interrupted = streamed.stopped, streamed.interrupted
            if out is None:
                self._save_sent_copies(journal, sent_folder, events, result)
            if report is not None:  # read from the journal still open and locked: no second opening
                result.summary = write_report(Path(report), campaign_outcomes(self.plan, journal))
        return result

    def _save_sent_copies(self, journal: Journal, sent_folder: str | None, events: Events, result: SendResult) -> None:
        if not self.config.imap.save_sent and sent_folder is None:
            return
        if not self.config.imap.host:
            result.copies_error = ConfigError("--sent-folder needs [imap] in mailmerge.toml; no copies were saved")
            return
        from .imap.archive import save_sent_copies

        events.saving_copies()
        try:
            session = self.imap_session(events=events)
            try:
                result.copies = save_sent_copies(self.plan, journal, session, sent_folder or self.config.imap.sent_folder)
            finally:
                session.close()
        except MailmergeError as error:
            result.copies_error = error

    def _count(self, folder: Path, marker: SentMarker | None, resend_unknown: bool) -> Work:
        with open_view(folder, self.name) as view:
            if marker is not None:  # the send would stop: say so now
                check_journal_kept(view, marker)
            return count_work(self.plan, view, resend_unknown=resend_unknown)

    def send_test(self, address: str, *, limit: int = 3, password: str | None = None,
                  events: Events | None = None) -> list[Outcome]:
        """Send the first ``limit`` valid rows only to ``address``, subjects
        marked ``[TEST]``; the journal is not touched (the real send still
        sends every row)."""
        events = events or Events()
        smtp = self.config.require_server()
        secret = password if password is not None else events.password(smtp, self.config)
        return send_test(self.plan, smtp, secret, address, limit=limit, log=events.log)

    # --- status, report, bounces -----------------------------------------------------

    def outcomes(self, *, outbox: str | Path | None = None) -> Iterator[Outcome]:
        """Every address of every row, all runs together, in row order (what
        the report holds); ``outbox``: the campaign sent with ``outbox=``.
        Stops with :class:`JournalLost` when the journal of a real send is lost
        (or it would say "not sent yet" to rows that were sent)."""
        folder = Path(outbox) / JOURNAL_FOLDER if outbox is not None else self.folder
        with open_view(folder, self.name) as view:
            if outbox is None:
                check_journal_kept(view, self.marker)
            yield from campaign_outcomes(self.plan, view)

    def status(self, *, outbox: str | Path | None = None) -> Summary:
        """How many rows are in each state. Sends nothing."""
        return Summary.of(self.outcomes(outbox=outbox))

    def write_report(self, path: str | Path | None = None, *, outbox: str | Path | None = None) -> Summary:
        """Write the CSV report of the whole campaign to ``path`` (default:
        LIST.report.csv beside the list); return its counts."""
        if path is None and self.list_path is None:
            raise InputError("rows from Python have no list to put the report beside: give write_report a path")
        where = Path(path) if path is not None else default_report_path(self.list_path)  # type: ignore[arg-type]
        return write_report(where, self.outcomes(outbox=outbox))

    def bounces(self, since: str | dt.date = "7d", *, move_to: str | None = None, password: str | None = None,
                events: Events | None = None) -> BounceResult:
        """Read the inbox ([imap] of the config) for bounces of this campaign
        since ``since`` (2d, 12h, 1w, 2026-11-20 or a date) and mark them in the
        journal: a bounced address is never sent again. Nothing in the inbox
        changes unless ``move_to`` names a folder to move them to."""
        from .imap.archive import collect_bounces, parse_since

        if not self.config.imap.host:
            raise ConfigError("bounces needs [imap] in mailmerge.toml (host or provider, username)")
        when = parse_since(since) if isinstance(since, str) else since
        with Journal(self.folder, self.name) as journal:
            check_journal_kept(journal, self.marker)  # or the report would say "not sent yet"
            session = self.imap_session(password, events=events)
            try:
                return collect_bounces(journal, session, when, move_to=move_to)
            finally:
                session.close()

    def imap_session(self, password: str | None = None, *, events: Events | None = None) -> Any:
        """An open :class:`~mailmerge.imap.session.ImapSession` for ``[imap]`` of the config."""
        from .config.credentials import find_imap_secret
        from .imap.session import ImapSession

        events = events or Events()
        if password is None:
            password = find_imap_secret(self.config.imap, self.config.smtp, self.config.path,
                                        prompt=events.prompt).value
        session = ImapSession(self.config.imap, password, log=events.log)
        session.open()
        return session


# --- reading what a campaign is made of --------------------------------------------


def _load_config(config: str | Path | Config | None, list_path: Path | None,
                 template: str | Path | MailTemplate | None = None) -> Config:
    if isinstance(config, Config):
        return config
    explicit = Path(config) if config is not None else None
    if isinstance(template, MailTemplate):
        template_path: Path | None = template.path
    else:
        template_path = Path(template) if template is not None and "\n" not in str(template) else None
    settings = load_config(find_config(list_path, explicit, template_path))
    if settings.path is None:
        settings.searched = tuple(config_folders(list_path, template_path))
    return settings


def _read_list(path: Path, sheet: str | None, encoding: str | None) -> RecipientList:
    from .sources.recipients import read_recipients  # pandas is loaded here, not by `import mailmerge`

    return read_recipients(path, sheet=sheet, encoding=encoding)


def _python_rows(rows: Rows) -> RecipientList:
    """Rows given from Python, as a list read from a file would be: every value
    as the text a spreadsheet shows (42, not 42.0; 2026-11-27; "" for None)."""
    from .sources.recipients import Recipient, RecipientList, cell_text

    if hasattr(rows, "columns") and hasattr(rows, "itertuples"):  # a pandas DataFrame
        columns = [str(name) for name in rows.columns]
        records: Iterable[Mapping[str, Any]] = (dict(zip(columns, values)) for values in rows.itertuples(index=False, name=None))
    else:
        records = list(rows)
        columns = list(dict.fromkeys(str(key) for record in records for key in record))
    held = [Recipient(number, {column: cell_text(record.get(column)) for column in columns})
            for number, record in enumerate(records, start=1)]
    if not held:
        raise RecipientsError("rows: the list has no rows")
    return RecipientList(Path("rows"), columns, held)


def _load_template(template: str | Path | MailTemplate | None, config: Config, settings: TemplateConfig) -> MailTemplate:
    if isinstance(template, MailTemplate):  # made without the config: parsed again with it
        return template_from_text(template.text, template.path, settings)
    if isinstance(template, str) and "\n" in template:
        return template_from_text(template, Path.cwd() / "template.txt", settings)
    path = Path(template) if template is not None else config.message.template
    if path is None:
        missing = f"; {config.not_found()}" if config.path is None else ""
        raise ConfigError(f"which template? pass -t TEMPLATE, or set template in [message] of mailmerge.toml{missing}")
    return load_template(path, settings)


def _duplicate_notes(plan: Plan) -> list[str]:
    """One note for all the duplicates (a merged list can have thousands)."""
    if not plan.duplicates:
        return []
    row, outcomes = next(iter(plan.duplicates.items()))
    count = len(plan.duplicates)
    rows = "1 row repeats" if count == 1 else f"{count:,} rows repeat"
    return [f"note: {rows} the To address of an earlier row and will not be sent "
            f"(the report says duplicate); first: row {row}: {outcomes[0].reason}"]


def _protected_files(config: Config, list_path: Path | None, folder: Path) -> dict[Path, str]:
    """What a list may never name as an attachment, whatever folder it is in."""
    protected = {
        folder: "the journal",
        (config.path.parent if config.path else Path.cwd()) / ".env": "the .env file",
    }
    if list_path is not None:
        protected[list_path] = "the list itself"
        protected[default_report_path(list_path)] = "the report"
    if config.path is not None:
        protected[config.path] = "the config file"
    for ca_file in (config.smtp.ca_file, config.imap.ca_file):
        if ca_file is not None:
            protected[ca_file] = "a certificate file of the config"
    return protected
