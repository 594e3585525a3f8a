"""The ``mailmerge`` command: wires the library together and talks to the person.

No business logic lives here: reading, rendering, sending and reporting are
in their own modules, and how things are shown is in ``ui``; this file parses
options, asks for confirmation and picks the exit code.
"""

from __future__ import annotations

import os
import sys
import tempfile
import time
import webbrowser
from dataclasses import replace
from pathlib import Path
from typing import Annotated, NoReturn

import typer

from . import __version__
from .config import Config, SendConfig, SmtpConfig, find_config, load_config
from .archive import collect_bounces, imap_config, parse_since, save_sent_copies
from .credentials import find_imap_secret, find_secret, forget_password, store_password
from .imap import ImapSession
from .errors import ConfigError, InputError, MailmergeError
from .journal import JOURNAL_FOLDER, Journal, campaign_id, journal_folder, open_to_send, open_view
from .marker import SentMarker, check_journal_kept
from .merge import (
    MergeResult, Plan, Work, campaign_outcomes, count_work, plan_merge, rendered_rows, send_merge, send_test,
)
from .message import OutgoingMessage, preview_text, viewable_html
from .outbox import Outbox
from .outcome import REPORTED
from .pacing import StopSignal, parse_duration, parse_rate
from .recipients import read_recipients
from .report import Summary, default_report_path, write_report
from .untrusted import visible
from .template import TemplateSettings, load_template
from .transport import SmtpSession
from .ui import SendProgress, Ui, counts_json, message_json, out, rows_json, summary_table

EXIT_OK, EXIT_STOPPED, EXIT_REFUSED, EXIT_INTERRUPTED = 0, 1, 3, 130  # 2 (bad input): InputError

app = typer.Typer(
    help=(
        "Send each row of a CSV or Excel list its own email, rendered from a "
        "Jinja2 template, through one SMTP session.\n\n"
        "Start here:  mailmerge init  (then: mailmerge preview samples/recipients.xlsx)\n\n"
        "Example:  mailmerge send samples/recipients.xlsx -t templates/welcome.txt --outbox outbox"
    ),
    no_args_is_help=True,
    add_completion=False,
    pretty_exceptions_enable=False,
    rich_markup_mode=None,
)

ListArgument = Annotated[Path, typer.Argument(metavar="LIST", help="The list: .xlsx, .xlsm, .csv, .tsv or .txt.", show_default=False)]
TemplateOption = Annotated[
    Path | None,
    typer.Option("--template", "-t", metavar="TEMPLATE", help="The template file (default: [message] template in the config).", show_default=False),
]
ConfigOption = Annotated[
    Path | None,
    typer.Option("--config", "-c", metavar="FILE", help="The config file (default: mailmerge.toml beside the list, then here).", show_default=False),
]
SheetOption = Annotated[str | None, typer.Option(metavar="NAME", help="Excel sheet to read (default: the first).", show_default=False)]
EncodingOption = Annotated[
    str | None, typer.Option(metavar="NAME", help="Encoding of a CSV file, e.g. cp949 (default: guessed).", show_default=False)
]
DebugOption = Annotated[bool, typer.Option("--debug", help="Show the full traceback of an error.")]
JsonOption = Annotated[bool, typer.Option("--json", help="Print one JSON object on stdout (for scripts); nothing else there.")]
VerboseOption = Annotated[bool, typer.Option("--verbose", "-v", help="Show the SMTP conversation (passwords masked).")]
AttachmentsOption = Annotated[
    Path | None,
    typer.Option(metavar="DIR", help="Files the list names (attachments, images) come from here, and only here (default: the template's folder).", show_default=False),
]
RateOption = Annotated[str | None, typer.Option(metavar="RATE", help="At most this many messages: 20/min, 2/s, 500/h (default: rate in [send]).", show_default=False)]
CampaignOption = Annotated[
    str | None,
    typer.Option(metavar="NAME", help="Name of the campaign in the journal (default: from the list's path and the template's text).", show_default=False),
]
OutboxOption = Annotated[
    Path | None,
    typer.Option(metavar="DIR", help="Write each message to DIR/ROW-address.eml instead of sending it (no account needed).", show_default=False),
]


def _prepare(
    ui: Ui, list_path: Path, template: Path | None, config_path: Path | None, sheet: str | None,
    encoding: str | None, attachments_dir: Path | None = None,
) -> tuple[Config, Plan]:
    """Read the config, the list and the template, and check every row."""

    def prepare() -> tuple[Config, Plan]:
        config = load_config(find_config(list_path, config_path))
        template_path = template or config.message.template
        if template_path is None:
            raise ConfigError("which template? pass -t TEMPLATE, or set template in [message] of mailmerge.toml")
        recipients = read_recipients(list_path, sheet=sheet, encoding=encoding)
        for note in [*config.notes, *recipients.notes]:
            ui.note(f"note: {note}")
        settings = TemplateSettings(
            default_from=config.message.sender,
            unsubscribe=config.message.unsubscribe,
            list_id=config.message.list_id,
            css=config.message.css,
            attachments_dir=attachments_dir,
            protected=_protected_files(config, list_path),
        )
        return config, plan_merge(recipients, load_template(template_path, settings), config.send.recipient_limit)

    config, plan = ui.run(prepare)
    for outcomes in plan.invalid.values():
        ui.note(f"row {outcomes[0].row}: invalid: {outcomes[0].reason}")
    for warning in plan.template.url_warnings(plan.recipients):
        ui.note(f"warning: {warning}")
    return config, plan


def _protected_files(config: Config, list_path: Path) -> dict[Path, str]:
    """What a list may never name as an attachment, whatever folder it is in."""
    protected = {
        list_path: "the list itself",
        default_report_path(list_path): "the report",
        journal_folder(list_path): "the journal",
        (config.path.parent if config.path else Path.cwd()) / ".env": "the .env file",
    }
    if config.path is not None:
        protected[config.path] = "the config file"
    for ca_file in (config.smtp.ca_file, config.imap.ca_file):
        if ca_file is not None:
            protected[ca_file] = "a certificate file of the config"
    return protected


# --- preview -------------------------------------------------------------------------


@app.command()
def preview(
    list_path: ListArgument,
    template: TemplateOption = None,
    config: ConfigOption = None,
    row: Annotated[int | None, typer.Option(metavar="N", help="Show only this row (its number in the sheet).", show_default=False)] = None,
    limit: Annotated[int | None, typer.Option(metavar="N", help="Show at most this many messages.", show_default=False)] = None,
    open_html: Annotated[bool, typer.Option("--open", help="Open the first shown message (its HTML) in the browser.")] = False,
    html: Annotated[Path | None, typer.Option(metavar="DIR", help="Write every message as .eml and as a web page, with an index.html.", show_default=False)] = None,
    sheet: SheetOption = None,
    encoding: EncodingOption = None,
    attachments_dir: AttachmentsOption = None,
    json_out: JsonOption = False,
    debug: DebugOption = False,
) -> None:
    """Show the rendered messages, headers decoded. Sends nothing, uses no network.

    Example:  mailmerge preview list.xlsx -t invoice.txt --row 5
    """
    ui = Ui("preview", debug=debug, json=json_out)
    _, plan = _prepare(ui, list_path, template, config, sheet, encoding, attachments_dir)
    if html is not None:
        from .htmlpreview import write_html_preview

        index = ui.run(lambda: write_html_preview(plan, html))
        ui.note(f"wrote {html}/ (open {index} in a browser)", style=None)
    shown: list[dict[str, object]] = []
    for recipient, message in ui.run(lambda: list(rendered_rows(plan))):
        if (row is not None and recipient.row != row) or (limit is not None and len(shown) >= limit):
            continue
        if isinstance(message, list):
            shown.append({"row": recipient.row, "valid": False, "reason": message[0].reason})
            ui.say(f"──── row {recipient.row} " + "─" * 40, style="cyan")
            ui.say(f"invalid, will not be sent: {message[0].reason}", style="yellow")
            continue
        shown.append(message_json(message))
        ui.say(f"──── row {recipient.row} " + "─" * 40, style="cyan")
        ui.say(preview_text(message))
        if open_html and len(shown) == 1:
            _open_in_browser(ui, message)
    if row is not None and not shown:
        ui.fail(InputError(f"no row {row} in {list_path}"))
    if ui.json:
        ui.emit({"counts": {"rows": len(plan.recipients), "to_send": plan.to_send, "invalid": len(plan.invalid)},
                 "rows": shown})
    else:
        ui.note(f"{plan.to_send} to send, {len(plan.invalid)} invalid, of {len(plan.recipients)} rows", style=None)


def _open_in_browser(ui: Ui, message: OutgoingMessage) -> None:
    handle, name = tempfile.mkstemp(prefix=f"mailmerge-row{message.row}-", suffix=".html")
    with os.fdopen(handle, "w", encoding="utf-8") as page:
        page.write(viewable_html(message))
    ui.note(f"opening {name}", style=None)
    webbrowser.open(Path(name).as_uri())


# --- send ------------------------------------------------------------------------------


@app.command()
def send(
    list_path: ListArgument,
    template: TemplateOption = None,
    config: ConfigOption = None,
    report: Annotated[
        Path | None, typer.Option(metavar="PATH", help="Where to write the report (default: LIST.report.csv beside the list).", show_default=False)
    ] = None,
    dry_run: Annotated[bool, typer.Option("--dry-run", help="Render and check every row; send nothing.")] = False,
    outbox: OutboxOption = None,
    test_to: Annotated[str | None, typer.Option(metavar="ADDRESS", help="Send the first rows (see --limit) only to ADDRESS, subject marked [TEST]; the real send is not affected.", show_default=False)] = None,
    limit: Annotated[int, typer.Option(metavar="N", help="How many rows --test-to sends.")] = 3,
    yes: Annotated[bool, typer.Option("--yes", "-y", help="Do not ask for confirmation.")] = False,
    rate: RateOption = None,
    batch_size: Annotated[int | None, typer.Option(metavar="N", help="Pause after every N messages (see --batch-pause).", show_default=False)] = None,
    batch_pause: Annotated[str | None, typer.Option(metavar="TIME", help="How long to pause between batches: 30s, 10m, 1h.", show_default=False)] = None,
    max_messages: Annotated[int | None, typer.Option(metavar="N", help="Stop after N messages (a daily cap); the next run goes on.", show_default=False)] = None,
    connections: Annotated[int | None, typer.Option(metavar="N", help="Send through N sessions side by side (relays that allow it).", show_default=False)] = None,
    campaign: CampaignOption = None,
    restart: Annotated[bool, typer.Option("--restart", help="Forget what this campaign sent and send every row again.")] = False,
    resend_unknown: Annotated[bool, typer.Option("--resend-unknown", help="Send again the messages whose delivery is unknown.")] = False,
    sent_folder: Annotated[str | None, typer.Option(metavar="NAME", help="IMAP folder for the copies of sent messages (default: the one flagged Sent).", show_default=False)] = None,
    quiet: Annotated[bool, typer.Option("--quiet", "-q", help="Print only the summary.")] = False,
    verbose: VerboseOption = False,
    json_out: JsonOption = False,
    sheet: SheetOption = None,
    encoding: EncodingOption = None,
    attachments_dir: AttachmentsOption = None,
    debug: DebugOption = False,
) -> None:
    """Send each row its message through one SMTP session, then write the report.

    Run the same command again after an interruption: what was sent is skipped.

    Example:  mailmerge send list.xlsx -t invoice.txt --rate 20/min
    Try it:   mailmerge send list.xlsx -t invoice.txt --test-to me@example.com

    Exit codes: 0 every row sent, 1 the run stopped on an error, 2 bad input,
    3 some rows refused, invalid, deferred, unknown or not sent yet, 130 interrupted.
    """
    ui = Ui("send", debug=debug, json=json_out, quiet=quiet)
    settings, plan = _prepare(ui, list_path, template, config, sheet, encoding, attachments_dir)
    pace = ui.run(lambda: _pace(settings.send, rate, batch_size, batch_pause, max_messages, connections))
    name = campaign_id(list_path, plan.template.text, campaign)
    if outbox is not None and outbox.exists() and not outbox.is_dir():
        ui.fail(InputError(f"--outbox {outbox} is a file: give a folder (it is made when missing)"))
    folder = outbox / JOURNAL_FOLDER if outbox is not None else journal_folder(list_path)
    marker = SentMarker(list_path) if outbox is None else None  # only a real send leaves this evidence
    if dry_run:
        _dry_run(ui, plan, folder, name, resend_unknown, marker)
    if test_to is not None:
        _test_send(ui, settings, plan, test_to, limit, yes, verbose)
    with ui.run(lambda: open_to_send(folder, name, fsync=settings.send.journal_fsync,
                                     marker=marker, restart=restart)) as journal:
        if restart:
            if not yes and not (sys.stdin.isatty() and typer.confirm("Forget what this campaign sent and send every row again?")):
                ui.fail(InputError("--restart needs a confirmation: answer yes, or add --yes"))
            ui.run(journal.restart)
        ui.run(lambda: journal.register(list_path, plan.template.path))
        recovered = ui.run(journal.recover)
        work = ui.run(lambda: count_work(plan, journal, resend_unknown=resend_unknown))
        _say_where_we_are(ui, journal, list_path, work, recovered)
        report_path = report or default_report_path(list_path)
        started = time.monotonic()
        if work.to_send == 0:
            if outbox is None:
                _save_copies(ui, settings, plan, journal, sent_folder)
            _finish(ui, plan, journal, MergeResult(), report_path, started)
        if outbox is not None:
            ui.note(f"Writing {work.to_send} messages to the outbox {outbox}/ (nothing leaves this machine)", style=None)
            result = _send_with_progress(ui, plan, journal, Outbox(outbox, len(plan.recipients)), None, pace, work,
                                         resend_unknown, verbose)
        else:
            smtp = ui.run(settings.require_server)
            _confirm(ui, yes, f"About to send {work.to_send} messages via {smtp.host}:{smtp.port}{_as_user(smtp)}. Send?")
            password = _secret(ui, settings, smtp)
            started = time.monotonic()
            result = _send_with_progress(ui, plan, journal, smtp, password, pace, work, resend_unknown, verbose)
            _save_copies(ui, settings, plan, journal, sent_folder)
        _finish(ui, plan, journal, result, report_path, started)


def _imap_session(ui: Ui, settings: Config, verbose: bool = False) -> ImapSession:
    """An open IMAP session for [imap] (its password from its sources)."""
    imap = settings.imap
    prompt = (lambda text: str(typer.prompt(text, hide_input=True, err=True))) if sys.stdin.isatty() else None
    secret = ui.run(lambda: find_imap_secret(imap, settings.smtp, settings.path, prompt=prompt))
    log = (lambda line: ui.note(line, style=None)) if verbose else None
    session = ImapSession(imap_config(imap), secret.value, log=log)
    ui.run(session.open)
    return session


def _save_copies(ui: Ui, settings: Config, plan: Plan, journal: Journal, sent_folder: str | None) -> None:
    """[imap] save_sent: the copies of the accepted messages into the Sent
    folder. A failure here never undoes the send: it is said, and the next run
    appends what is missing."""
    if not settings.imap.save_sent and sent_folder is None:
        return
    if not settings.imap.host:
        ui.note("--sent-folder needs [imap] in mailmerge.toml; no copies were saved")
        return
    try:
        session = _imap_session(ui, settings)
        try:
            result = save_sent_copies(plan, journal, session, sent_folder or settings.imap.sent_folder)
        finally:
            session.close()
    except (MailmergeError, typer.Exit) as error:
        ui.note(f"warning: the copies for the Sent folder were not all saved ({error}); "
                "the next run of the same command saves the missing ones")
        return
    if result.appended:
        ui.note(f"saved {result.appended} copies in the folder '{result.folder}'", style=None)


def _as_user(smtp: SmtpConfig) -> str:
    return f" as {smtp.username}" if smtp.username else ""


def _confirm(ui: Ui, yes: bool, question: str) -> None:
    if yes:
        return
    if not sys.stdin.isatty():
        ui.fail(InputError("no terminal to confirm on; add --yes to send without asking"))
    if not typer.confirm(question, err=True):
        raise typer.Exit(EXIT_OK)


def _dry_run(ui: Ui, plan: Plan, folder: Path, name: str, resend_unknown: bool, marker: SentMarker | None) -> NoReturn:
    with ui.run(lambda: open_view(folder, name)) as view:
        if marker is not None:  # the send would stop: say so now
            ui.run(lambda: check_journal_kept(view, marker))
        work = ui.run(lambda: count_work(plan, view, resend_unknown=resend_unknown))
    if ui.json:
        ui.emit({"dry_run": True, "counts": {"rows": work.rows, "to_send": work.to_send, "already_sent": work.done,
                                             "invalid": work.invalid, "addresses": plan.addresses},
                 "invalid": [{"row": row, "reason": outcomes[0].reason} for row, outcomes in plan.invalid.items()]})
    ui.say(
        f"dry run: would send {work.to_send} messages ({work.done} already sent) to "
        f"{plan.addresses} addresses; {work.invalid} rows invalid. Nothing was sent."
    )
    raise typer.Exit(EXIT_REFUSED if plan.invalid else EXIT_OK)


def _test_send(ui: Ui, settings: Config, plan: Plan, address: str, limit: int, yes: bool, verbose: bool) -> NoReturn:
    smtp = ui.run(settings.require_server)
    _confirm(ui, yes, f"Send {limit} test messages to {address} via {smtp.host}:{smtp.port}{_as_user(smtp)}?")
    password = _secret(ui, settings, smtp)
    log = (lambda line: ui.note(line, style=None)) if verbose else None
    outcomes = ui.run(lambda: send_test(plan, smtp, password, address, limit=limit, log=log))
    sent = sum(o.status.value == "sent" for o in outcomes)
    if ui.json:
        ui.emit({"test_to": address, "counts": {"sent": sent, "not_sent": len(outcomes) - sent}, "rows": rows_json(outcomes)})
    ui.say(f"test send: {sent} of {len(outcomes)} messages delivered to {address} (subjects start with [TEST]); "
           "the real recipients got nothing")
    raise typer.Exit(EXIT_OK if sent == len(outcomes) else EXIT_REFUSED)


def _secret(ui: Ui, settings: Config, smtp: SmtpConfig) -> str | None:
    """The password (or token) from its first source; warns about a login without TLS."""
    if smtp.security == "none" and smtp.username:
        ui.note(f"warning: the password for {smtp.username} goes to {smtp.host} without encryption")
    prompt = (lambda text: str(typer.prompt(text, hide_input=True, err=True))) if sys.stdin.isatty() else None
    secret = ui.run(lambda: find_secret(smtp, settings.path, prompt=prompt))
    return secret.value if secret else None


def _pace(
    base: SendConfig, rate: str | None, batch_size: int | None, batch_pause: str | None,
    max_messages: int | None, connections: int | None,
) -> SendConfig:
    """The [send] settings with the command line's options on top."""
    settings = replace(base)
    if rate is not None:
        settings.rate = parse_rate(rate)
    if batch_size is not None:
        settings.batch_size = batch_size
    if batch_pause is not None:
        settings.batch_pause = parse_duration(batch_pause, "--batch-pause")
    if max_messages is not None:
        settings.max_messages = max_messages
    if connections is not None:
        if connections < 1:
            raise InputError("--connections must be 1 or more")
        settings.connections = connections
    return settings


def _say_where_we_are(ui: Ui, journal: Journal, list_path: Path, work: Work, recovered: int) -> None:
    if recovered:
        ui.note(
            f"{recovered} addresses were being sent when the last run stopped: they are 'unknown' "
            "(maybe delivered) and are not sent again; --resend-unknown sends them."
        )
    if work.done and work.to_send:
        ui.note(f"{work.done:,} of {work.rows - work.invalid:,} already sent; sending the other {work.to_send:,}", style=None)
    elif work.done:
        ui.note(f"Nothing left to send: all {work.done:,} rows were sent (or refused) by an earlier run.", style=None)
    for other, count in journal.other_campaigns(list_path):
        ui.note(
            f"note: {count} messages of this list were sent by another campaign ({other}), "
            "with another version of the template. If this is the same mailing, stop and "
            "pass --campaign with one name for both."
        )


def _send_with_progress(
    ui: Ui, plan: Plan, journal: Journal, smtp: SmtpConfig | Outbox, password: str | None,
    settings: SendConfig, work: Work, resend_unknown: bool, verbose: bool,
) -> MergeResult:
    stop = StopSignal()
    with SendProgress(ui, work.to_send) as progress:
        try:
            with stop.installed():
                return send_merge(plan, journal, smtp, password, settings, stop=stop,
                                  resend_unknown=resend_unknown, on_row=progress.row, notify=progress.notify,
                                  log=(lambda line: ui.note(line, style=None)) if verbose else None)
        except KeyboardInterrupt:  # the second Ctrl-C
            return MergeResult(stopped="interrupted twice (Ctrl-C): stopped at once")
        except MailmergeError as error:
            ui.fail(error)


def _finish(ui: Ui, plan: Plan, journal: Journal, result: MergeResult, report_path: Path, started: float) -> NoReturn:
    summary = write_report(report_path, campaign_outcomes(plan, journal))
    seconds = time.monotonic() - started
    again = "Nothing is lost: run the same command again to send the rest."
    if result.error is not None:
        ui.note(f"error: {result.error}", style="red")
        ui.note(again)
    elif result.stopped:
        ui.note(f"Stopped: {result.stopped}. {again}")
    if result.stopped.startswith(("interrupted", "stopped (SIGTERM)")):
        code = EXIT_INTERRUPTED
    elif result.error is not None:
        code = EXIT_STOPPED
    else:
        code = EXIT_OK if summary.all_sent else EXIT_REFUSED
    if ui.json:
        ui.emit({
            "campaign": journal.campaign, "counts": counts_json(summary), "messages": result.messages,
            "seconds": round(seconds, 3), "report": str(report_path), "stopped": result.stopped or None,
            "error": str(result.error) if result.error else None, "exit_code": code,
            "rows": rows_json(campaign_outcomes(plan, journal)),
        })
    else:
        if not ui.quiet:
            out.print(summary_table(summary, seconds, result.messages, report_path))
        ui.say(summary.line())
        ui.say(f"report: {report_path}")  # a list's file name can come from a stranger too
    raise typer.Exit(code)


# --- status, check, login, logout, init -------------------------------------------------------


@app.command()
def status(
    list_path: ListArgument,
    template: TemplateOption = None,
    config: ConfigOption = None,
    campaign: CampaignOption = None,
    outbox: Annotated[Path | None, typer.Option(metavar="DIR", help="The status of the campaign sent with --outbox DIR.", show_default=False)] = None,
    sheet: SheetOption = None,
    encoding: EncodingOption = None,
    attachments_dir: AttachmentsOption = None,
    json_out: JsonOption = False,
    debug: DebugOption = False,
) -> None:
    """Show how far the campaign got: how many rows are in each state. Sends nothing.

    Example:  mailmerge status list.xlsx -t invoice.txt
    """
    ui = Ui("status", debug=debug, json=json_out)
    _, plan = _prepare(ui, list_path, template, config, sheet, encoding, attachments_dir)
    name = campaign_id(list_path, plan.template.text, campaign)
    folder = outbox / JOURNAL_FOLDER if outbox is not None else journal_folder(list_path)
    with ui.run(lambda: open_view(folder, name)) as view:
        if outbox is None:  # counts from a lost journal would say "not sent yet" to rows that were sent
            ui.run(lambda: check_journal_kept(view, SentMarker(list_path)))
        summary = ui.run(lambda: Summary.of(campaign_outcomes(plan, view)))
        if ui.json:
            ui.emit({"campaign": name, "rows": len(plan.recipients), "counts": counts_json(summary),
                     "entries": ui.run(lambda: rows_json(campaign_outcomes(plan, view)))})
            return
    ui.say(f"campaign {name}: {len(plan.recipients)} rows")
    for state in REPORTED:
        ui.say(f"  {state.label:<13}{summary.counts[state]:>8,}")


@app.command()
def check(
    list_path: ListArgument,
    template: TemplateOption = None,
    config: ConfigOption = None,
    smtp_check: Annotated[bool, typer.Option("--smtp", help="Also connect, start TLS, log in and quit (sends nothing).")] = False,
    sheet: SheetOption = None,
    encoding: EncodingOption = None,
    attachments_dir: AttachmentsOption = None,
    verbose: VerboseOption = False,
    json_out: JsonOption = False,
    debug: DebugOption = False,
) -> None:
    """Check the list, the template and (with --smtp) the server and login. Sends nothing.

    Example:  mailmerge check list.xlsx -t invoice.txt --smtp
    """
    ui = Ui("check", debug=debug, json=json_out)
    settings, plan = _prepare(ui, list_path, template, config, sheet, encoding, attachments_dir)
    ui.say(f"list and template: {plan.to_send} rows can be sent, {len(plan.invalid)} invalid")
    steps: list[str] = []
    if smtp_check:
        smtp = ui.run(settings.require_server)
        secret = _secret(ui, settings, smtp)

        def step(text: str) -> None:
            steps.append(text)
            ui.say(f"  ok  {text}")

        log = (lambda line: ui.note(line, style=None)) if verbose else None
        session = SmtpSession(smtp, secret, log=log, step=step)
        ui.run(session.open)
        session.close()
        step("QUIT")
    if ui.json:
        ui.emit({
            "counts": {"rows": len(plan.recipients), "to_send": plan.to_send, "invalid": len(plan.invalid)},
            "invalid": [{"row": row, "reason": outcomes[0].reason} for row, outcomes in plan.invalid.items()],
            "warnings": plan.template.url_warnings(plan.recipients),
            "smtp": {"checked": smtp_check, "steps": steps},
        })
    raise typer.Exit(EXIT_REFUSED if plan.invalid else EXIT_OK)


@app.command()
def bounces(
    list_path: ListArgument,
    template: TemplateOption = None,
    config: ConfigOption = None,
    since: Annotated[str, typer.Option(metavar="WHEN", help="Look at mail received since: 2d, 12h, 1w or 2026-11-20.")] = "7d",
    report: Annotated[Path | None, typer.Option(metavar="PATH", help="The report to rewrite (default: LIST.report.csv beside the list).", show_default=False)] = None,
    move_to: Annotated[str | None, typer.Option(metavar="FOLDER", help="Move the bounces found into this folder (default: leave the inbox as it is).", show_default=False)] = None,
    campaign: CampaignOption = None,
    sheet: SheetOption = None,
    encoding: EncodingOption = None,
    attachments_dir: AttachmentsOption = None,
    verbose: VerboseOption = False,
    json_out: JsonOption = False,
    debug: DebugOption = False,
) -> None:
    """Find the bounces in the inbox (IMAP) and put them into the report. Reads only.

    A bounced address is never sent again by this campaign. Nothing in the
    inbox is marked read, moved or deleted, unless --move-to is given.

    Example:  mailmerge bounces list.xlsx -t invoice.txt --since 2d
    """
    ui = Ui("bounces", debug=debug, json=json_out)
    settings, plan = _prepare(ui, list_path, template, config, sheet, encoding, attachments_dir)
    if not settings.imap.host:
        ui.fail(ConfigError("bounces needs [imap] in mailmerge.toml (host or provider, username)"))
    when = ui.run(lambda: parse_since(since))
    name = campaign_id(list_path, plan.template.text, campaign)
    with ui.run(lambda: Journal(journal_folder(list_path), name)) as journal:
        ui.run(lambda: check_journal_kept(journal, SentMarker(list_path)))  # or the report would say "not sent yet"
        session = _imap_session(ui, settings, verbose)
        try:
            found = ui.run(lambda: collect_bounces(journal, session, when, move_to=move_to))
        finally:
            session.close()
        report_path = report or default_report_path(list_path)
        summary = write_report(report_path, campaign_outcomes(plan, journal))
    # Everything below that comes from a mail is a stranger's text: visible() keeps
    # its control characters from acting on the terminal.
    for bounce, rows in found.matched:
        ui.note(f"row {', '.join(map(str, rows))}: bounced {visible(bounce.recipient)}: "
                f"{visible(bounce.status)} {visible(bounce.diagnostic)}", style=None)
    for bounce, why in found.possible:
        mail = bounce.mail
        ui.note(f"possible bounce, not applied: {visible(bounce.recipient)} ({why}): the mail from "
                f"{visible(mail.sender) or '(no From)'}, {visible(mail.date) or '(no Date)'}, "
                f"subject \"{visible(mail.subject)}\"", style=None)
    if ui.json:
        ui.emit({
            "since": when.isoformat(), "bounces": len(found.matched), "counts": counts_json(summary),
            "report": str(report_path),
            "bounced": [{"rows": rows, "address": visible(b.recipient), "status": visible(b.status),
                         "diagnostic": visible(b.diagnostic)} for b, rows in found.matched],
            "possible_bounces": [{"address": visible(b.recipient), "why": why, "from": visible(b.mail.sender),
                                  "date": visible(b.mail.date), "subject": visible(b.mail.subject)}
                                 for b, why in found.possible],
        })
    else:
        ui.say(f"{len(found.matched)} bounces of this campaign since {when.isoformat()}"
               + (f"; {len(found.possible)} possible bounces not applied (listed above): look at them "
                  "in the inbox" if found.possible else ""))
        ui.say(summary.line())
        ui.say(f"report: {report_path}")


@app.command()
def login(config: ConfigOption = None, debug: DebugOption = False) -> None:
    """Store the SMTP password in the system keyring (asked for, or read from standard input).

    Example:  mailmerge login --config mailmerge.toml
    """
    ui = Ui("login", debug=debug)
    settings = ui.run(lambda: load_config(find_config(Path("list"), config)))
    smtp = ui.run(settings.require_server)
    if not smtp.username:
        ui.fail(ConfigError("no username in [smtp]: this server needs no password"))
    if sys.stdin.isatty():
        password = str(typer.prompt(f"Password for {smtp.username} at {smtp.host}", hide_input=True, err=True))
    else:
        password = sys.stdin.readline().rstrip("\r\n")
    ui.run(lambda: store_password(smtp, password))
    ui.say(f"stored the password for {smtp.username} at {smtp.host} in the system keyring")


@app.command()
def logout(config: ConfigOption = None, debug: DebugOption = False) -> None:
    """Remove the SMTP password from the system keyring.

    Example:  mailmerge logout
    """
    ui = Ui("logout", debug=debug)
    settings = ui.run(lambda: load_config(find_config(Path("list"), config)))
    smtp = ui.run(settings.require_server)
    if ui.run(lambda: forget_password(smtp)):
        ui.say(f"removed the password for {smtp.username} at {smtp.host}")
    else:
        ui.say(f"no password was stored for {smtp.username} at {smtp.host}")


@app.command()
def init(
    folder: Annotated[Path, typer.Argument(metavar="DIR", help="Where to start (default: here).")] = Path("."),
    debug: DebugOption = False,
) -> None:
    """Write a working starting point: mailmerge.toml, templates, a sample list, .env.example.

    Never overwrites a file. Then try:  mailmerge preview samples/recipients.xlsx

    Example:  mailmerge init newsletter && cd newsletter
    """
    from .scaffold import init_folder

    ui = Ui("init", debug=debug)
    result = ui.run(lambda: init_folder(folder))
    for path in result.written:
        ui.say(f"  wrote  {path}")
    for path in result.kept:
        ui.say(f"  kept   {path} (it exists; not overwritten)")
    where = "" if folder == Path(".") else f"cd {folder} && "
    ui.say(f"\nNext: {where}mailmerge preview samples/recipients.xlsx")
    ui.say("then: mailmerge send samples/recipients.xlsx --outbox outbox   (nothing leaves this machine)")


def _version(value: bool) -> None:
    if value:
        out.print(f"mailmerge {__version__}", markup=False)
        raise typer.Exit()


@app.callback()
def main(
    version: Annotated[
        bool, typer.Option("--version", callback=_version, is_eager=True, help="Show the version and exit.")
    ] = False,
) -> None:
    """Template-driven mail merge."""
