"""The ``mailmerge`` command: a thin shell over :class:`~mailmerge.campaign.Campaign`.

Each command parses its options, calls the method of the same name and
prints; every promise (the lock, recovery, the unchanged list) lives in the
library. How things are shown is in ``ui``; which exit code an error gives is
in ``errors.EXIT_CODES``.
"""

from __future__ import annotations

import os
import sys
import time
from pathlib import Path
from typing import TYPE_CHECKING, Annotated, NoReturn

import typer

from .. import __version__

if TYPE_CHECKING:
    from collections.abc import Callable

    from ..campaign import Campaign, SendResult, Start
    from ..config.file import Config, SendConfig, SmtpConfig
    from ..imap.archive import BounceResult
    from ..merge import Plan
    from ..mime.message import OutgoingMessage
    from ..outcome import Outcome
    from .ui import SendProgress, Ui

# Only typer is imported above: `mailmerge --help`, `--version`, completion and
# `init` answer at once. Each command imports what it needs (pandas, Jinja,
# the email stack) when it runs.

LIST_SUFFIXES = (".xlsx", ".xlsm", ".csv", ".tsv", ".txt")
TEMPLATE_SUFFIXES = (".txt", ".md", ".markdown", ".html", ".htm", ".j2", ".jinja", ".eml")


def _files_ending(suffixes: tuple[str, ...]) -> Callable[[str], list[str]]:
    """A completer for a file name: the folders and the files with these
    suffixes that start with what was typed."""

    def complete(incomplete: str) -> list[str]:
        head, slash, start = incomplete.rpartition("/")
        prefix = head + slash
        try:
            entries = sorted(Path(prefix or ".").iterdir())
        except OSError:
            return []
        return [
            prefix + entry.name + ("/" if entry.is_dir() else "")
            for entry in entries
            if entry.name.startswith(start)
            and (start.startswith(".") or not entry.name.startswith("."))  # hidden files only when asked for
            and (entry.is_dir() or entry.suffix.lower() in suffixes)
        ]

    return complete


EXIT_OK, EXIT_REFUSED = 0, 3  # what the rows' states end in; an error's code comes from errors.EXIT_CODES

app = typer.Typer(
    help=(
        "Send each row of a CSV or Excel list its own email, rendered from a "
        "Jinja2 template, through one SMTP session.\n\n"
        "Start here:  mailmerge init  (then: mailmerge preview samples/recipients.xlsx)\n\n"
        "Example:  mailmerge send samples/recipients.xlsx -t templates/welcome.txt --outbox outbox"
    ),
    no_args_is_help=True,
    add_completion=True,  # --install-completion, --show-completion: bash, zsh, fish, PowerShell
    pretty_exceptions_enable=False,
    rich_markup_mode=None,
)

ListArgument = Annotated[
    Path,
    typer.Argument(metavar="LIST", help="The list: .xlsx, .xlsm, .csv, .tsv or .txt.", show_default=False,
                   autocompletion=_files_ending(LIST_SUFFIXES)),
]
TemplateOption = Annotated[
    Path | None,
    typer.Option("--template", "-t", metavar="TEMPLATE", help="The template file (default: [message] template in the config).", show_default=False,
                 autocompletion=_files_ending(TEMPLATE_SUFFIXES)),
]
ConfigOption = Annotated[
    Path | None,
    typer.Option("--config", "-c", metavar="FILE", help="The config file (default: the first mailmerge.toml beside the list or template, in their parent folders, then here).", show_default=False),
]
SheetOption = Annotated[str | None, typer.Option(metavar="NAME", help="Excel sheet to read (default: the one open when the file was saved).", show_default=False)]
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
    typer.Option("--campaign", metavar="NAME", help="Name of the campaign in the journal (default: from the list's path and the template's text).", show_default=False),
]
AllowDuplicatesOption = Annotated[
    bool, typer.Option("--allow-duplicates", help="Send every row, even when its To address is the To of an earlier row (an invoice per row).")
]
CaseSensitiveOption = Annotated[
    bool, typer.Option("--case-sensitive-local-part", help="Duplicates: Ann@example.com and ann@example.com are different people.")
]
OutboxOption = Annotated[
    Path | None,
    typer.Option(metavar="DIR", help="Write each message to DIR/ROW-address.eml instead of sending it (no account needed).", show_default=False),
]


def _open(
    ui: Ui, list_path: Path, template: Path | None, config_path: Path | None, sheet: str | None,
    encoding: str | None, attachments_dir: Path | None = None, name: str | None = None,
    allow_duplicates: bool = False, case_sensitive_local_part: bool = False,
) -> Campaign:
    """Read the config, the list and the template, check every row, and say what was found."""
    from ..campaign import Campaign

    campaign = ui.run(lambda: Campaign.open(list_path, template, config=config_path, name=name, sheet=sheet,
                                            encoding=encoding, attachments_dir=attachments_dir,
                                            allow_duplicates=allow_duplicates,
                                            case_sensitive_local_part=case_sensitive_local_part))
    for note in campaign.notes:
        ui.note(note)
    return campaign


# --- preview -------------------------------------------------------------------------


@app.command()
def preview(
    list_path: ListArgument,
    template: TemplateOption = None,
    config: ConfigOption = None,
    row: Annotated[int | None, typer.Option(metavar="N", help="Show only this row (its number in the sheet).", show_default=False)] = None,
    limit: Annotated[int | None, typer.Option(metavar="N", help="Show at most this many messages.", show_default=False)] = None,
    open_html: Annotated[bool, typer.Option("--open", help="Open the first shown message (its HTML), or with --html the index page, in the browser.")] = False,
    html: Annotated[Path | None, typer.Option(metavar="DIR", help="Write every message as .eml and as a web page, with an index.html.", show_default=False)] = None,
    sheet: SheetOption = None,
    encoding: EncodingOption = None,
    attachments_dir: AttachmentsOption = None,
    allow_duplicates: AllowDuplicatesOption = False,
    case_sensitive_local_part: CaseSensitiveOption = False,
    json_out: JsonOption = False,
    debug: DebugOption = False,
) -> None:
    """Show the rendered messages, headers decoded. Sends nothing, uses no network.

    Example:  mailmerge preview list.xlsx -t invoice.txt --row 5
    """
    from ..errors import InputError
    from ..mime.message import preview_text
    from .ui import Ui, message_json

    ui = Ui("preview", debug=debug, json=json_out)
    campaign = _open(ui, list_path, template, config, sheet, encoding, attachments_dir,
                     allow_duplicates=allow_duplicates, case_sensitive_local_part=case_sensitive_local_part)
    plan = campaign.plan
    if html is not None:
        _preview_html(ui, plan, html, open_html)
        return
    shown: list[dict[str, object]] = []
    for recipient, message in ui.run(lambda: list(campaign.preview())):
        if (row is not None and recipient.row != row) or (limit is not None and len(shown) >= limit):
            continue
        if isinstance(message, list):
            shown.append({"row": recipient.row, "valid": False, "status": message[0].status.value,
                          "reason": message[0].reason})
            ui.say(f"──── row {recipient.row} " + "─" * 40, style="cyan")
            ui.say(f"{message[0].status.label}, will not be sent: {message[0].reason}", style="yellow")
            continue
        shown.append(message_json(message))
        ui.say(f"──── row {recipient.row} " + "─" * 40, style="cyan")
        ui.say(preview_text(message))
        if open_html and len(shown) == 1:
            _open_in_browser(ui, message)
    if row is not None and not shown:
        ui.fail(InputError(f"no row {row} in {list_path}"))
    if ui.json:
        ui.emit({"counts": _plan_counts(plan), "rows": shown})
    else:
        ui.note(f"{plan.to_send} to send, {len(plan.invalid)} invalid{_duplicates(plan)}, of {len(plan.recipients)} rows",
                style=None)


def _plan_counts(plan: Plan) -> dict[str, int]:
    return {"rows": len(plan.recipients), "to_send": plan.to_send, "invalid": len(plan.invalid),
            "duplicates": len(plan.duplicates)}


def _rows(count: int) -> str:
    """``1 row``, ``2 rows``."""
    return f"{count:,} {'row' if count == 1 else 'rows'}"


def _duplicates(plan: Plan) -> str:
    """``, 2 duplicates`` when there are any (--allow-duplicates sends them)."""
    count = len(plan.duplicates)
    return f", {count:,} {'duplicate' if count == 1 else 'duplicates'} (not sent)" if count else ""


def _preview_html(ui: Ui, plan: Plan, folder: Path, open_page: bool) -> None:
    """``preview --html``: write the pages and say what was written; the
    messages themselves are in the pages, not on the terminal."""
    import webbrowser

    from .htmlpreview import write_html_preview

    index = ui.run(lambda: write_html_preview(plan, folder))
    counts = _plan_counts(plan)
    if ui.json:
        ui.emit({"counts": counts, "index": str(index)})
    else:
        invalid = f", {counts['invalid']} invalid rows" if counts["invalid"] else ""
        ui.say(f"wrote {counts['to_send']} messages{invalid} to {folder}/")
        ui.say(f"open {index} in a browser")
    if open_page:
        webbrowser.open(index.resolve().as_uri())


def _open_in_browser(ui: Ui, message: OutgoingMessage) -> None:
    import tempfile
    import webbrowser

    from ..mime.message import viewable_html

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
    campaign_name: CampaignOption = None,
    restart: Annotated[bool, typer.Option("--restart", help="Forget what this campaign sent and send every row again.")] = False,
    resend_unknown: Annotated[bool, typer.Option("--resend-unknown", help="Send again the messages whose delivery is unknown.")] = False,
    sent_folder: Annotated[str | None, typer.Option(metavar="NAME", help="IMAP folder for the copies of sent messages (default: the one flagged Sent).", show_default=False)] = None,
    quiet: Annotated[bool, typer.Option("--quiet", "-q", help="Print only the summary.")] = False,
    verbose: VerboseOption = False,
    json_out: JsonOption = False,
    allow_duplicates: AllowDuplicatesOption = False,
    case_sensitive_local_part: CaseSensitiveOption = False,
    sheet: SheetOption = None,
    encoding: EncodingOption = None,
    attachments_dir: AttachmentsOption = None,
    debug: DebugOption = False,
) -> None:
    """Send each row its message through one SMTP session, then write the report.

    Run the same command again after an interruption: what was sent is skipped.

    \b
    Example:  mailmerge send list.xlsx -t invoice.txt --rate 20/min
    Try it:   mailmerge send list.xlsx -t invoice.txt --test-to me@example.com

    Exit codes: 0 every row sent, 1 the run stopped on an error, 2 bad input,
    3 some rows refused, invalid, deferred, unknown or not sent yet, 130 interrupted.
    """
    from ..campaign import SendResult
    from ..state.report import default_report_path
    from .ui import Ui

    ui = Ui("send", debug=debug, json=json_out, quiet=quiet)
    campaign = _open(ui, list_path, template, config, sheet, encoding, attachments_dir, campaign_name,
                     allow_duplicates, case_sensitive_local_part)
    if verbose:
        ui.note(f"config: {campaign.config.path or campaign.config.not_found()}")
    pace = ui.run(lambda: _pace(campaign.config.send, rate, batch_size, batch_pause, max_messages, connections))
    if dry_run:
        _dry_run(ui, campaign, ui.run(lambda: campaign.send(outbox=outbox, dry_run=True, resend_unknown=resend_unknown)))
    if test_to is not None:
        _test_send(ui, campaign, test_to, limit, yes, verbose)
    events, report_path = _SendEvents(ui, yes=yes, verbose=verbose, named=campaign_name is not None), report or default_report_path(list_path)
    try:
        result = ui.run(lambda: campaign.send(outbox=outbox, restart=restart, resend_unknown=resend_unknown,
                                               pace=pace, events=events, report=report_path, sent_folder=sent_folder))
    except KeyboardInterrupt:  # the second Ctrl-C: the journal is consistent, the lock released
        result = SendResult(stopped="interrupted twice (Ctrl-C): stopped at once", interrupted=True)
    finally:
        events.stop_progress()
    if result.cancelled:
        raise typer.Exit(EXIT_OK)
    _say_copies(ui, result)
    _finish(ui, campaign, result, report_path, events.started, outbox)


class _SendEvents:
    """What ``send`` shows while the campaign sends: where it starts, the
    confirmation, the progress bar, the Sent copies.

    It overrides every method of :class:`~mailmerge.campaign.Events` without
    inheriting from it, so that this module does not import the campaign
    (and pandas) before a command runs."""

    def __init__(self, ui: Ui, *, yes: bool, verbose: bool, named: bool = False) -> None:
        self.ui, self.yes, self.named = ui, yes, named
        self.log = (lambda line: ui.note(line, style=None)) if verbose else None
        self.prompt = _prompt()
        self.progress: SendProgress | None = None
        self.started = time.monotonic()
        self.outbox = False  # messages are written to files, not sent

    def confirm_restart(self) -> bool:
        return self.yes or (sys.stdin.isatty() and typer.confirm("Forget what this campaign sent and send every row again?"))

    def starting(self, start: Start) -> bool:
        _say_where_we_are(self.ui, start, self.named)
        self.started = time.monotonic()
        self.outbox = start.outbox is not None
        if start.work.to_send and start.outbox is not None:
            self.ui.note(f"Writing {start.work.to_send} messages to the outbox {start.outbox}/ (nothing leaves this machine)", style=None)
        elif start.work.to_send and start.smtp is not None:
            smtp = start.smtp
            if not _confirm(self.ui, self.yes, f"About to send {start.work.to_send} messages via {smtp.host}:{smtp.port}{_as_user(smtp)}. Send?"):
                return False
        return True

    def password(self, smtp: SmtpConfig, config: Config) -> str | None:
        secret = _secret(self.ui, config, smtp)
        self.started = time.monotonic()
        return secret

    def sending(self, total: int) -> None:
        from .ui import SendProgress

        self.progress = SendProgress(self.ui, total, outbox=self.outbox).__enter__()

    def row(self, outcomes: list[Outcome]) -> None:
        if self.progress is not None:
            self.progress.row(outcomes)

    def notify(self, text: str) -> None:
        if self.progress is not None:
            self.progress.notify(text)
        elif not self.ui.quiet:
            self.ui.note(text, style=None)

    def saving_copies(self) -> None:
        self.stop_progress()

    def stop_progress(self) -> None:
        if self.progress is not None:
            self.progress.__exit__(None, None, None)
            self.progress = None


def _prompt() -> Callable[[str], str] | None:
    """Asks for a password on a terminal; None when there is none to ask on."""
    return (lambda text: str(typer.prompt(text, hide_input=True, err=True))) if sys.stdin.isatty() else None


def _say_copies(ui: Ui, result: SendResult) -> None:
    """What became of the Sent copies ([imap] save_sent). A failure there never
    undid the send: it is said, and the next run appends what is missing."""
    from ..errors import ConfigError

    if isinstance(result.copies_error, ConfigError):
        ui.note(str(result.copies_error))
    elif result.copies_error is not None:
        ui.note(f"warning: the copies for the Sent folder were not all saved ({result.copies_error}); "
                "the next run of the same command saves the missing ones")
    copies = result.copies
    if copies is None:
        return
    if copies.appended:
        ui.note(f"saved {copies.appended} copies in the folder '{copies.folder}'", style=None)
    for row, why in copies.failed:
        ui.note(f"warning: row {row} was sent, but its copy for '{copies.folder}' cannot be made: {why}")
    if copies.not_copied:
        more = copies.not_copied - len(copies.failed)
        ui.note((f"{more} more rows like these. " if more else "")
                + "Put back what is missing, then run the same command again to save the copies")


def _as_user(smtp: SmtpConfig) -> str:
    return f" as {smtp.username}" if smtp.username else ""


def _confirm(ui: Ui, yes: bool, question: str) -> bool:
    from ..errors import InputError

    if yes:
        return True
    if not sys.stdin.isatty():
        ui.fail(InputError("no terminal to confirm on; add --yes to send without asking"))
    return typer.confirm(question, err=True)


def _dry_run(ui: Ui, campaign: Campaign, result: SendResult) -> NoReturn:
    work, plan = result.work, campaign.plan
    assert work is not None
    if ui.json:
        ui.emit({"dry_run": True, "counts": {"rows": work.rows, "to_send": work.to_send, "already_sent": work.done,
                                             "invalid": work.invalid, "duplicates": work.duplicates,
                                             "addresses": plan.addresses},
                 "invalid": [{"row": row, "reason": outcomes[0].reason} for row, outcomes in plan.invalid.items()]})
    ui.say(
        f"dry run: would send {work.to_send} messages ({work.done} already sent) to "
        f"{plan.addresses} addresses; {_rows(work.invalid)} invalid{_duplicates(plan)}. Nothing was sent."
    )
    raise typer.Exit(EXIT_REFUSED if plan.invalid else EXIT_OK)


def _test_send(ui: Ui, campaign: Campaign, address: str, limit: int, yes: bool, verbose: bool) -> NoReturn:
    smtp = ui.run(campaign.config.require_server)
    if not _confirm(ui, yes, f"Send {limit} test messages to {address} via {smtp.host}:{smtp.port}{_as_user(smtp)}?"):
        raise typer.Exit(EXIT_OK)
    events = _SendEvents(ui, yes=yes, verbose=verbose)
    outcomes = ui.run(lambda: campaign.send_test(address, limit=limit, events=events))
    sent = sum(o.status.value == "sent" for o in outcomes)
    if ui.json:
        from .ui import rows_json

        ui.emit({"test_to": address, "counts": {"sent": sent, "not_sent": len(outcomes) - sent}, "rows": rows_json(outcomes)})
    ui.say(f"test send: {sent} of {len(outcomes)} messages delivered to {address} (subjects start with [TEST]); "
           "the real recipients got nothing")
    raise typer.Exit(EXIT_OK if sent == len(outcomes) else EXIT_REFUSED)


def _secret(ui: Ui, settings: Config, smtp: SmtpConfig) -> str | None:
    """The password (or token) from its first source; warns about a login without TLS."""
    from ..config.credentials import find_secret

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
    from dataclasses import replace

    from ..delivery.pacing import parse_duration, parse_rate
    from ..errors import InputError

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


def _say_where_we_are(ui: Ui, start: Start, named: bool) -> None:
    work = start.work
    if start.recovered:
        ui.note(
            f"{start.recovered} addresses were being sent when the last run stopped: they are 'unknown' "
            "(maybe delivered) and are not sent again; --resend-unknown sends them."
        )
    if work.done and work.to_send:
        ui.note(f"{work.done:,} of {work.rows - work.invalid - work.duplicates:,} already sent; sending the other {work.to_send:,}", style=None)
    elif work.done:
        ui.note(f"Nothing left to send: all {work.done:,} rows were sent (or refused) by an earlier run.", style=None)
    for other, count in start.other_campaigns:
        # Only two unnamed campaigns differ by the template's text; a name is chosen with --campaign.
        why = "with another version of the template" if not named and _is_hash(other) else "under another campaign name"
        ui.note(
            f"note: {count} messages of this list were sent by another campaign ({other}), "
            f"{why}. If this is the same mailing, stop and pass --campaign with one name for both."
        )


def _is_hash(campaign: str) -> bool:
    """True for a campaign id made from the list and template (no --campaign)."""
    return len(campaign) == 16 and all(c in "0123456789abcdef" for c in campaign)


def _finish(ui: Ui, campaign: Campaign, result: SendResult, report_path: Path, started: float,
            outbox: Path | None) -> NoReturn:
    from ..errors import Interrupted, exit_code_of
    from .ui import counts_json, out, rows_json, summary_table

    summary = result.summary or ui.run(lambda: campaign.write_report(report_path, outbox=outbox))
    seconds = time.monotonic() - started
    again = "Nothing is lost: run the same command again to send the rest."
    if result.error is not None:
        ui.note(f"error: {result.error}", style="red")
        ui.note(again)
    elif result.stopped:
        ui.note(f"Stopped: {result.stopped}. {again}")
    if result.interrupted:
        code = exit_code_of(Interrupted(result.stopped))
    elif result.error is not None:
        code = exit_code_of(result.error)
    else:
        code = EXIT_OK if summary.all_done else EXIT_REFUSED
    if ui.json:
        ui.emit({
            "campaign": campaign.name, "counts": counts_json(summary), "messages": result.messages,
            "seconds": round(seconds, 3), "report": str(report_path), "stopped": result.stopped or None,
            "error": str(result.error) if result.error else None, "exit_code": code,
            "rows": rows_json(campaign.outcomes(outbox=outbox)),
        })
    else:
        if not ui.quiet:
            out.print(summary_table(summary, seconds, result.messages, report_path, outbox=outbox is not None))
        ui.say(summary.line(outbox=outbox is not None))
        ui.say(f"report: {report_path}")  # a list's file name can come from a stranger too
    raise typer.Exit(code)


# --- status, check, login, logout, init -------------------------------------------------------


@app.command()
def status(
    list_path: ListArgument,
    template: TemplateOption = None,
    config: ConfigOption = None,
    campaign_name: CampaignOption = None,
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
    from ..outcome import REPORTED
    from .ui import Ui, counts_json, rows_json

    ui = Ui("status", debug=debug, json=json_out)
    campaign = _open(ui, list_path, template, config, sheet, encoding, attachments_dir, campaign_name)
    summary = ui.run(lambda: campaign.status(outbox=outbox))
    if ui.json:
        ui.emit({"campaign": campaign.name, "rows": len(campaign.plan.recipients), "counts": counts_json(summary),
                 "entries": ui.run(lambda: rows_json(campaign.outcomes(outbox=outbox)))})
        return
    ui.say(f"campaign {campaign.name}: {len(campaign.plan.recipients)} rows")
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
    allow_duplicates: AllowDuplicatesOption = False,
    case_sensitive_local_part: CaseSensitiveOption = False,
    verbose: VerboseOption = False,
    json_out: JsonOption = False,
    debug: DebugOption = False,
) -> None:
    """Check the list, the template and (with --smtp) the server and login. Sends nothing.

    Example:  mailmerge check list.xlsx -t invoice.txt --smtp
    """
    from .ui import Ui

    ui = Ui("check", debug=debug, json=json_out)
    campaign = _open(ui, list_path, template, config, sheet, encoding, attachments_dir,
                     allow_duplicates=allow_duplicates, case_sensitive_local_part=case_sensitive_local_part)
    if verbose:
        ui.note(f"config: {campaign.config.path or campaign.config.not_found()}")
    plan = campaign.plan
    ui.say(f"list and template: {_rows(plan.to_send)} can be sent, {len(plan.invalid)} invalid{_duplicates(plan)}")
    steps: list[str] = []
    if smtp_check:

        def step(text: str) -> None:
            steps.append(text)
            ui.say(f"  ok  {text}")

        ui.run(lambda: campaign.check_smtp(events=_SendEvents(ui, yes=True, verbose=verbose), step=step))
    if ui.json:
        ui.emit({
            "counts": _plan_counts(plan),
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
    campaign_name: CampaignOption = None,
    sheet: SheetOption = None,
    encoding: EncodingOption = None,
    attachments_dir: AttachmentsOption = None,
    verbose: Annotated[bool, typer.Option("--verbose", "-v", help="Show the IMAP conversation (passwords masked).")] = False,
    json_out: JsonOption = False,
    debug: DebugOption = False,
) -> None:
    """Find the bounces in the inbox (IMAP) and put them into the report. Reads only.

    A bounced address is never sent again by this campaign. Nothing in the
    inbox is marked read, moved or deleted, unless --move-to is given.

    Example:  mailmerge bounces list.xlsx -t invoice.txt --since 2d
    """
    from ..imap.archive import parse_since
    from ..state.report import default_report_path
    from ..untrusted import visible
    from .ui import Ui, counts_json

    ui = Ui("bounces", debug=debug, json=json_out)
    campaign = _open(ui, list_path, template, config, sheet, encoding, attachments_dir, campaign_name)
    events = _SendEvents(ui, yes=True, verbose=verbose)
    found = ui.run(lambda: campaign.bounces(since, move_to=move_to, events=events))
    when = parse_since(since)
    report_path = report or default_report_path(list_path)
    summary = ui.run(lambda: campaign.write_report(report_path))
    _say_found(ui, found)
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


def _say_found(ui: Ui, found: BounceResult) -> None:
    from ..untrusted import visible

    # Everything here that comes from a mail is a stranger's text: visible() keeps
    # its control characters from acting on the terminal.
    for bounce, rows in found.matched:
        ui.note(f"row {', '.join(map(str, rows))}: bounced {visible(bounce.recipient)}: "
                f"{visible(bounce.status)} {visible(bounce.diagnostic)}", style=None)
    for bounce, why in found.possible:
        mail = bounce.mail
        ui.note(f"possible bounce, not applied: {visible(bounce.recipient)} ({why}): the mail from "
                f"{visible(mail.sender) or '(no From)'}, {visible(mail.date) or '(no Date)'}, "
                f"subject \"{visible(mail.subject)}\"", style=None)


@app.command()
def login(
    config: Annotated[Path | None, typer.Option("--config", "-c", metavar="FILE", help="The config file (default: mailmerge.toml here).", show_default=False)] = None,
    debug: DebugOption = False,
) -> None:
    """Store the SMTP password in the system keyring (asked for, or read from standard input).

    Example:  mailmerge login --config mailmerge.toml
    """
    from ..config.credentials import store_password
    from ..config.file import find_config, load_config
    from ..errors import ConfigError
    from .ui import Ui

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
    from ..config.credentials import forget_password
    from ..config.file import find_config, load_config
    from .ui import Ui

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
    from .ui import Ui

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
        typer.echo(f"mailmerge {__version__}")
        raise typer.Exit()


@app.callback()
def main(
    version: Annotated[
        bool, typer.Option("--version", callback=_version, is_eager=True, help="Show the version and exit.")
    ] = False,
) -> None:
    """Template-driven mail merge."""
