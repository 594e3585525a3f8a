"""The ``mailmerge`` command: wires the library together and talks to the person.

No business logic lives here: reading, rendering, sending and reporting are
in their own modules; this file parses options, asks for confirmation, shows
progress and turns errors into one readable line and an exit code.
"""

from __future__ import annotations

import os
import sys
import tempfile
import traceback
import webbrowser
from collections.abc import Callable
from dataclasses import replace
from pathlib import Path
from typing import Annotated, NoReturn, TypeVar

import typer
from rich.console import Console
from rich.progress import BarColumn, MofNCompleteColumn, Progress, TextColumn, TimeRemainingColumn

from . import __version__
from .config import Config, SendConfig, SmtpConfig, find_config, load_config
from .credentials import find_secret, forget_password, store_password
from .errors import ConfigError, InputError, MailmergeError
from .journal import JOURNAL_FOLDER, Journal, campaign_id, journal_folder, open_view
from .merge import MergeResult, Plan, Work, campaign_outcomes, count_work, plan_merge, rendered_rows, send_merge
from .pacing import StopSignal, parse_duration, parse_rate
from .message import OutgoingMessage, preview_text, viewable_html
from .outbox import OutboxServer
from .outcome import Outcome, Status
from .recipients import read_recipients
from .report import Summary, default_report_path, write_report
from .template import TemplateSettings, load_template
from .transport import SmtpSession

EXIT_OK, EXIT_STOPPED, EXIT_INPUT, EXIT_REFUSED, EXIT_INTERRUPTED = 0, 1, 2, 3, 130

app = typer.Typer(
    help=(
        "Send each row of a CSV or Excel list its own email, rendered from a "
        "Jinja2 template, through one SMTP session.\n\n"
        "Example:  mailmerge preview samples/recipients.xlsx -t templates/welcome.txt"
    ),
    no_args_is_help=True,
    add_completion=False,
    pretty_exceptions_enable=False,
    rich_markup_mode=None,
)
err = Console(stderr=True, highlight=False, soft_wrap=True)
out = Console(highlight=False, soft_wrap=True)

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
VerboseOption = Annotated[bool, typer.Option("--verbose", "-v", help="Show the SMTP conversation (passwords masked).")]
AttachmentsOption = Annotated[
    Path | None,
    typer.Option(metavar="DIR", help="Attachments named by the list may also come from here (default: only the template's folder).", show_default=False),
]

T = TypeVar("T")


def _fail(error: MailmergeError, debug: bool) -> NoReturn:
    if debug:
        traceback.print_exception(error)
    err.print(f"error: {error}", style="red", markup=False)
    raise typer.Exit(error.exit_code)


def _run(action: Callable[[], T], debug: bool) -> T:
    """Run ``action``; a MailmergeError becomes one line on stderr and its exit code."""
    try:
        return action()
    except MailmergeError as error:
        _fail(error, debug)


def _prepare(
    list_path: Path, template: Path | None, config_path: Path | None, sheet: str | None,
    encoding: str | None, attachments_dir: Path | None = None,
) -> tuple[Config, Plan]:
    """Read the config, the list and the template, and check every row."""
    config = load_config(find_config(list_path, config_path))
    template_path = template or config.message.template
    if template_path is None:
        raise ConfigError("which template? pass -t TEMPLATE, or set template in [message] of mailmerge.toml")
    recipients = read_recipients(list_path, sheet=sheet, encoding=encoding)
    for note in [*config.notes, *recipients.notes]:
        err.print(f"note: {note}", style="yellow", markup=False)
    settings = TemplateSettings(
        default_from=config.message.sender,
        unsubscribe=config.message.unsubscribe,
        css=config.message.css,
        attachments_dir=attachments_dir,
    )
    mail_template = load_template(template_path, settings)
    return config, plan_merge(recipients, mail_template)


def _print_invalid(plan: Plan) -> None:
    for outcomes in plan.invalid.values():
        first = outcomes[0]
        err.print(f"row {first.row}: invalid: {first.reason}", style="yellow", markup=False)


@app.command()
def preview(
    list_path: ListArgument,
    template: TemplateOption = None,
    config: ConfigOption = None,
    row: Annotated[int | None, typer.Option(metavar="N", help="Show only this row (its number in the sheet).", show_default=False)] = None,
    limit: Annotated[int | None, typer.Option(metavar="N", help="Show at most this many messages.", show_default=False)] = None,
    open_html: Annotated[bool, typer.Option("--open", help="Open the first shown message (its HTML) in the browser.")] = False,
    sheet: SheetOption = None,
    encoding: EncodingOption = None,
    attachments_dir: AttachmentsOption = None,
    debug: DebugOption = False,
) -> None:
    """Print the rendered messages, headers decoded. Sends nothing, uses no network.

    Example:  mailmerge preview list.xlsx -t invoice.txt --row 5
    """
    _, plan = _run(lambda: _prepare(list_path, template, config, sheet, encoding, attachments_dir), debug)
    shown = 0
    for recipient, message in _run(lambda: list(rendered_rows(plan)), debug):
        if row is not None and recipient.row != row:
            continue
        if limit is not None and shown >= limit:
            break
        out.print(f"──── row {recipient.row} " + "─" * 40, style="cyan", markup=False)
        if isinstance(message, list):
            out.print(f"invalid, will not be sent: {message[0].reason}", style="yellow", markup=False)
        else:
            out.print(preview_text(message), markup=False)
            if open_html:
                _open_in_browser(message)
                open_html = False
        shown += 1
    if row is not None and shown == 0:
        err.print(f"error: no row {row} in {list_path}", style="red", markup=False)
        raise typer.Exit(EXIT_INPUT)
    err.print(f"{plan.to_send} to send, {len(plan.invalid)} invalid, of {len(plan.recipients)} rows", markup=False)


RateOption = Annotated[str | None, typer.Option(metavar="RATE", help="At most this many messages: 20/min, 2/s, 500/h (default: rate in [send]).", show_default=False)]
CampaignOption = Annotated[
    str | None,
    typer.Option(metavar="NAME", help="Name of the campaign in the journal (default: from the list's path and the template's text).", show_default=False),
]


def _open_in_browser(message: OutgoingMessage) -> None:
    handle, name = tempfile.mkstemp(prefix=f"mailmerge-row{message.row}-", suffix=".html")
    with os.fdopen(handle, "w", encoding="utf-8") as page:
        page.write(viewable_html(message))
    err.print(f"opening {name}", markup=False)
    webbrowser.open(Path(name).as_uri())


@app.command()
def send(
    list_path: ListArgument,
    template: TemplateOption = None,
    config: ConfigOption = None,
    report: Annotated[
        Path | None, typer.Option(metavar="PATH", help="Where to write the report (default: LIST.report.csv beside the list).", show_default=False)
    ] = None,
    dry_run: Annotated[bool, typer.Option("--dry-run", help="Render and check every row; send nothing.")] = False,
    outbox: Annotated[
        Path | None,
        typer.Option(metavar="DIR", help="Send to a local SMTP server that saves each message as DIR/*.eml (no account needed).", show_default=False),
    ] = None,
    yes: Annotated[bool, typer.Option("--yes", "-y", help="Do not ask for confirmation.")] = False,
    rate: RateOption = None,
    batch_size: Annotated[int | None, typer.Option(metavar="N", help="Pause after every N messages (see --batch-pause).", show_default=False)] = None,
    batch_pause: Annotated[str | None, typer.Option(metavar="TIME", help="How long to pause between batches: 30s, 10m, 1h.", show_default=False)] = None,
    max_messages: Annotated[int | None, typer.Option(metavar="N", help="Stop after N messages (a daily cap); the next run goes on.", show_default=False)] = None,
    connections: Annotated[int | None, typer.Option(metavar="N", help="Send through N sessions side by side (relays that allow it).", show_default=False)] = None,
    campaign: CampaignOption = None,
    restart: Annotated[bool, typer.Option("--restart", help="Forget what this campaign sent and send every row again.")] = False,
    resend_unknown: Annotated[bool, typer.Option("--resend-unknown", help="Send again the messages whose delivery is unknown.")] = False,
    verbose: VerboseOption = False,
    sheet: SheetOption = None,
    encoding: EncodingOption = None,
    attachments_dir: AttachmentsOption = None,
    debug: DebugOption = False,
) -> None:
    """Send each row its message through one SMTP session, then write the report.

    Run the same command again after an interruption: what was sent is skipped.

    Example:  mailmerge send list.xlsx -t invoice.txt --rate 20/min

    Exit codes: 0 every row sent, 1 the run stopped on an error, 2 bad input,
    3 some rows refused, invalid, deferred, unknown or not sent yet, 130 interrupted.
    """
    settings, plan = _run(lambda: _prepare(list_path, template, config, sheet, encoding, attachments_dir), debug)
    _print_invalid(plan)
    pace = _run(lambda: _pace(settings.send, rate, batch_size, batch_pause, max_messages, connections), debug)
    name = campaign_id(list_path, plan.template.text, campaign)
    folder = outbox / JOURNAL_FOLDER if outbox is not None else journal_folder(list_path)
    if dry_run:
        with open_view(folder, name) as view:
            work = _run(lambda: count_work(plan, view, resend_unknown=resend_unknown), debug)
        out.print(
            f"dry run: would send {work.to_send} messages ({work.done} already sent) to "
            f"{plan.addresses} addresses; {work.invalid} rows invalid. Nothing was sent.",
            markup=False,
        )
        raise typer.Exit(EXIT_REFUSED if plan.invalid else EXIT_OK)
    report_path = report or default_report_path(list_path)
    with Journal(folder, name) as journal:
        _run(journal.lock, debug)
        if restart:
            if not yes and not (sys.stdin.isatty() and typer.confirm("Forget what this campaign sent and send every row again?")):
                _fail(InputError("--restart needs a confirmation: answer yes, or add --yes"), debug)
            journal.restart()
        journal.register(list_path, plan.template.path)
        recovered = journal.recover()
        work = _run(lambda: count_work(plan, journal, resend_unknown=resend_unknown), debug)
        _say_where_we_are(journal, list_path, work, recovered)
        if work.to_send == 0:
            _finish(plan, journal, MergeResult(), report_path)
        if outbox is not None:
            with OutboxServer(outbox) as smtp:
                out.print(f"Sending {work.to_send} messages to the outbox {outbox}/ (nothing leaves this machine)", markup=False)
                result = _send_with_progress(plan, journal, smtp, None, pace, work, resend_unknown, debug, verbose)
        else:
            smtp = _run(settings.require_server, debug)
            who = f" as {smtp.username}" if smtp.username else ""
            if not yes:
                if not sys.stdin.isatty():
                    _fail(InputError("no terminal to confirm on; add --yes to send without asking"), debug)
                if not typer.confirm(f"About to send {work.to_send} messages via {smtp.host}:{smtp.port}{who}. Send?"):
                    raise typer.Exit(EXIT_OK)
            password = _secret(settings, smtp, debug)
            result = _send_with_progress(plan, journal, smtp, password, pace, work, resend_unknown, debug, verbose)
        _finish(plan, journal, result, report_path)


def _secret(settings: Config, smtp: SmtpConfig, debug: bool) -> str | None:
    """The password (or token) from its first source; warns about a login without TLS."""
    if smtp.security == "none" and smtp.username:
        err.print(f"warning: the password for {smtp.username} goes to {smtp.host} without encryption",
                  style="yellow", markup=False)
    prompt = (lambda text: str(typer.prompt(text, hide_input=True))) if sys.stdin.isatty() else None
    secret = _run(lambda: find_secret(smtp, settings.path, prompt=prompt), debug)
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


def _say_where_we_are(journal: Journal, list_path: Path, work: Work, recovered: int) -> None:
    if recovered:
        err.print(
            f"{recovered} addresses were being sent when the last run stopped: they are 'unknown' "
            "(maybe delivered) and are not sent again; --resend-unknown sends them.",
            style="yellow", markup=False,
        )
    if work.done and work.to_send:
        err.print(f"{work.done:,} of {work.rows - work.invalid:,} already sent; sending the other {work.to_send:,}", markup=False)
    elif work.done:
        err.print(f"Nothing left to send: all {work.done:,} rows were sent (or refused) by an earlier run.", markup=False)
    for other, count in journal.other_campaigns(list_path):
        err.print(
            f"note: {count} messages of this list were sent by another campaign ({other}), "
            "with another version of the template. If this is the same mailing, stop and "
            "pass --campaign with one name for both.",
            style="yellow", markup=False,
        )


def _send_with_progress(
    plan: Plan, journal: Journal, smtp: SmtpConfig, password: str | None,
    settings: SendConfig, work: Work, resend_unknown: bool, debug: bool, verbose: bool,
) -> MergeResult:
    def show_problems(outcomes: list[Outcome]) -> None:
        for outcome in outcomes:
            if outcome.status not in (Status.SENT, Status.INVALID):
                code = f"{outcome.code} " if outcome.code else ""
                err.print(f"row {outcome.row}: {outcome.status.value} {outcome.address}: {code}{outcome.reason}", markup=False)

    def notify(text: str) -> None:
        err.print(text, markup=False)

    stop = StopSignal()

    def run(on_row: Callable[[list[Outcome]], None]) -> MergeResult:
        try:
            with stop.installed():
                return send_merge(plan, journal, smtp, password, settings, stop=stop,
                                  resend_unknown=resend_unknown, on_row=on_row, notify=notify,
                                  log=notify if verbose else None)
        except KeyboardInterrupt:  # the second Ctrl-C
            return MergeResult(stopped="interrupted twice (Ctrl-C): stopped at once")
        except MailmergeError as error:
            _fail(error, debug)

    if not err.is_terminal:
        return run(show_problems)
    columns = (TextColumn("sending"), BarColumn(), MofNCompleteColumn(), TimeRemainingColumn())
    with Progress(*columns, console=err, transient=True) as progress:
        task = progress.add_task("send", total=work.to_send)

        def advance(outcomes: list[Outcome]) -> None:
            show_problems(outcomes)
            progress.advance(task)

        return run(advance)


def _finish(plan: Plan, journal: Journal, result: MergeResult, report_path: Path) -> NoReturn:
    summary = write_report(report_path, campaign_outcomes(plan, journal))
    again = "Nothing is lost: run the same command again to send the rest."
    if result.error is not None:
        err.print(f"error: {result.error}", style="red", markup=False)
        err.print(again, style="yellow", markup=False)
    elif result.stopped:
        err.print(f"Stopped: {result.stopped}. {again}", style="yellow", markup=False)
    out.print(summary.line(), markup=False)
    out.print(f"report: {report_path}", markup=False)
    if result.stopped.startswith(("interrupted", "stopped (SIGTERM)")):
        raise typer.Exit(EXIT_INTERRUPTED)
    if result.error is not None:
        raise typer.Exit(EXIT_STOPPED)
    raise typer.Exit(EXIT_OK if summary.all_sent else EXIT_REFUSED)


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
    debug: DebugOption = False,
) -> None:
    """Show how far the campaign got: how many rows are in each state. Sends nothing.

    Example:  mailmerge status list.xlsx -t invoice.txt
    """
    _, plan = _run(lambda: _prepare(list_path, template, config, sheet, encoding, attachments_dir), debug)
    name = campaign_id(list_path, plan.template.text, campaign)
    folder = outbox / JOURNAL_FOLDER if outbox is not None else journal_folder(list_path)
    with open_view(folder, name) as view:
        summary = Summary.of(campaign_outcomes(plan, view))
    out.print(f"campaign {name}: {len(plan.recipients)} rows", markup=False)
    for state in Status:
        label = "not sent yet" if state is Status.FAILED else state.value
        out.print(f"  {label:<13}{summary.counts[state]:>8,}", markup=False)


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
    debug: DebugOption = False,
) -> None:
    """Check the list, the template and (with --smtp) the server and login. Sends nothing.

    Example:  mailmerge check list.xlsx -t invoice.txt --smtp
    """
    settings, plan = _run(lambda: _prepare(list_path, template, config, sheet, encoding, attachments_dir), debug)
    _print_invalid(plan)
    out.print(f"list and template: {plan.to_send} rows can be sent, {len(plan.invalid)} invalid", markup=False)
    if smtp_check:
        smtp = _run(settings.require_server, debug)
        secret = _secret(settings, smtp, debug)

        def step(text: str) -> None:
            out.print(f"  ok  {text}", markup=False)

        log = (lambda line: err.print(line, markup=False)) if verbose else None
        session = SmtpSession(smtp, secret, log=log, step=step)
        _run(session.open, debug)
        session.close()
        step("QUIT")
    raise typer.Exit(EXIT_REFUSED if plan.invalid else EXIT_OK)


@app.command()
def login(
    config: ConfigOption = None,
    debug: DebugOption = False,
) -> None:
    """Store the SMTP password in the system keyring (asked for, or read from standard input).

    Example:  mailmerge login --config mailmerge.toml
    """
    settings = _run(lambda: load_config(find_config(Path("list"), config)), debug)
    smtp = _run(settings.require_server, debug)
    if not smtp.username:
        _fail(ConfigError("no username in [smtp]: this server needs no password"), debug)
    if sys.stdin.isatty():
        password = str(typer.prompt(f"Password for {smtp.username} at {smtp.host}", hide_input=True))
    else:
        password = sys.stdin.readline().rstrip("\r\n")
    _run(lambda: store_password(smtp, password), debug)
    out.print(f"stored the password for {smtp.username} at {smtp.host} in the system keyring", markup=False)


@app.command()
def logout(
    config: ConfigOption = None,
    debug: DebugOption = False,
) -> None:
    """Remove the SMTP password from the system keyring.

    Example:  mailmerge logout
    """
    settings = _run(lambda: load_config(find_config(Path("list"), config)), debug)
    smtp = _run(settings.require_server, debug)
    if _run(lambda: forget_password(smtp), debug):
        out.print(f"removed the password for {smtp.username} at {smtp.host}", markup=False)
    else:
        out.print(f"no password was stored for {smtp.username} at {smtp.host}", markup=False)


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

