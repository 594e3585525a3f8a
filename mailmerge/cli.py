"""The ``mailmerge`` command: wires the library together and talks to the person.

No business logic lives here: reading, rendering, sending and reporting are
in their own modules; this file parses options, asks for confirmation, shows
progress and turns errors into one readable line and an exit code.
"""

from __future__ import annotations

import sys
import traceback
from collections.abc import Callable
from pathlib import Path
from typing import Annotated, NoReturn, TypeVar

import typer
from rich.console import Console
from rich.progress import BarColumn, MofNCompleteColumn, Progress, TextColumn, TimeRemainingColumn

from . import __version__
from .config import Config, SmtpConfig, find_config, get_password, load_config
from .errors import ConfigError, InputError, MailmergeError
from .merge import MergeResult, Plan, plan_merge, rendered_rows, send_merge
from .message import preview_text
from .outbox import OutboxServer
from .outcome import Outcome, Status
from .recipients import read_recipients
from .report import Summary, default_report_path, write_report
from .template import load_template

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
    list_path: Path, template: Path | None, config_path: Path | None, sheet: str | None, encoding: str | None
) -> tuple[Config, Plan]:
    """Read the config, the list and the template, and check every row."""
    config = load_config(find_config(list_path, config_path))
    template_path = template or config.message.template
    if template_path is None:
        raise ConfigError("which template? pass -t TEMPLATE, or set template in [message] of mailmerge.toml")
    recipients = read_recipients(list_path, sheet=sheet, encoding=encoding)
    for note in recipients.notes:
        err.print(f"note: {note}", style="yellow", markup=False)
    mail_template = load_template(template_path, default_from=config.message.sender)
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
    sheet: SheetOption = None,
    encoding: EncodingOption = None,
    debug: DebugOption = False,
) -> None:
    """Print the rendered messages, headers decoded. Sends nothing, uses no network.

    Example:  mailmerge preview list.xlsx -t invoice.txt --row 5
    """
    _, plan = _run(lambda: _prepare(list_path, template, config, sheet, encoding), debug)
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
        shown += 1
    if row is not None and shown == 0:
        err.print(f"error: no row {row} in {list_path}", style="red", markup=False)
        raise typer.Exit(EXIT_INPUT)
    err.print(f"{plan.to_send} to send, {len(plan.invalid)} invalid, of {len(plan.recipients)} rows", markup=False)


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
    sheet: SheetOption = None,
    encoding: EncodingOption = None,
    debug: DebugOption = False,
) -> None:
    """Send each row its message through one SMTP session, then write the report.

    Example:  mailmerge send list.xlsx -t invoice.txt

    Exit codes: 0 all sent, 1 the run stopped on an error, 2 bad input,
    3 some addresses refused or invalid.
    """
    settings, plan = _run(lambda: _prepare(list_path, template, config, sheet, encoding), debug)
    _print_invalid(plan)
    if dry_run:
        out.print(
            f"dry run: would send {plan.to_send} messages to {plan.addresses} addresses; "
            f"{len(plan.invalid)} rows invalid. Nothing was sent.",
            markup=False,
        )
        raise typer.Exit(EXIT_REFUSED if plan.invalid else EXIT_OK)
    report_path = report or default_report_path(list_path)
    if outbox is not None:
        with OutboxServer(outbox) as smtp:
            out.print(f"Sending {plan.to_send} messages to the outbox {outbox}/ (nothing leaves this machine)", markup=False)
            result = _run(lambda: _send_with_progress(plan, smtp, None), debug)
    else:
        smtp = _run(settings.require_server, debug)
        who = f" as {smtp.username}" if smtp.username else ""
        if not yes:
            if not sys.stdin.isatty():
                _fail(InputError("no terminal to confirm on; add --yes to send without asking"), debug)
            if not typer.confirm(f"About to send {plan.to_send} messages via {smtp.host}:{smtp.port}{who}. Send?"):
                raise typer.Exit(EXIT_OK)
        prompt = (lambda text: str(typer.prompt(text, hide_input=True))) if sys.stdin.isatty() else None
        password = _run(lambda: get_password(smtp, prompt=prompt), debug)
        result = _run(lambda: _send_with_progress(plan, smtp, password), debug)
    _finish(result, report_path)


def _send_with_progress(plan: Plan, smtp: SmtpConfig, password: str | None) -> MergeResult:
    def show_problems(outcomes: list[Outcome]) -> None:
        for outcome in outcomes:
            if outcome.status in (Status.REFUSED, Status.FAILED):
                code = f"{outcome.code} " if outcome.code else ""
                err.print(f"row {outcome.row}: {outcome.status.value} {outcome.address}: {code}{outcome.reason}", markup=False)

    if not err.is_terminal:
        return send_merge(plan, smtp, password, on_row=show_problems)
    columns = (TextColumn("sending"), BarColumn(), MofNCompleteColumn(), TimeRemainingColumn())
    with Progress(*columns, console=err, transient=True) as progress:
        task = progress.add_task("send", total=len(plan.recipients))

        def advance(outcomes: list[Outcome]) -> None:
            show_problems(outcomes)
            progress.advance(task)

        return send_merge(plan, smtp, password, on_row=advance)


def _finish(result: MergeResult, report_path: Path) -> NoReturn:
    write_report(report_path, result.outcomes)
    summary = Summary.of(result.outcomes)
    if result.error is not None:
        err.print(f"error: {result.error}", style="red", markup=False)
        err.print("The rows not sent are marked 'failed' in the report.", markup=False)
    if result.interrupted:
        err.print("Interrupted: the rows not sent are marked 'failed' in the report.", markup=False)
    out.print(summary.line(), markup=False)
    out.print(f"report: {report_path}", markup=False)
    if result.interrupted:
        raise typer.Exit(EXIT_INTERRUPTED)
    if result.error is not None:
        raise typer.Exit(EXIT_STOPPED)
    raise typer.Exit(EXIT_OK if summary.all_sent else EXIT_REFUSED)


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

