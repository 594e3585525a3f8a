"""Issue 15, item 10: the words a person reads after a run, in --help and
while the bar waits. Each test asserts the exact text shown."""

from __future__ import annotations

from collections import Counter
import io
from pathlib import Path

import pytest
from rich.console import Console

from conftest import run_cli, write_config, write_template, write_xlsx
from smtp_server import SmtpTestServer

import mailmerge.cli.ui as ui_module
from mailmerge.cli.ui import SendProgress, Ui

TEMPLATE = "From: Club <club@example.com>\nTo: {{ name }} <{{ email }}>\nSubject: Hi {{ name }}\n\nHi {{ name }}\n"


def three_rows(folder: Path, bad_second: bool = False) -> Path:
    rows = [("Ann", "ann@example.com"), ("Bob", "not an address" if bad_second else "bob@example.com"),
            ("Cy", "cy@example.com")]
    return write_xlsx(folder / "list.xlsx", ("name", "email"), rows)


def test_a_stopped_run_says_not_sent_yet_not_failed(tmp_path: Path, tls_server: SmtpTestServer) -> None:
    write_config(tmp_path, tls_server)
    result = run_cli("send", three_rows(tmp_path), "-t", write_template(tmp_path / "t.txt", TEMPLATE),
                     "--yes", "--max-messages", "1")
    assert "sent 1, refused 0, invalid 0, not sent yet 2" in result.stdout.splitlines()
    assert "failed" not in result.stdout + result.stderr


def test_one_invalid_row_is_one_row(tmp_path: Path) -> None:
    result = run_cli("send", three_rows(tmp_path, bad_second=True), "-t", write_template(tmp_path / "t.txt", TEMPLATE),
                     "--dry-run", "--outbox", tmp_path / "out")
    assert "; 1 row invalid. Nothing was sent." in result.stdout


def test_counts_have_thousands_separators_like_the_table() -> None:
    from mailmerge.outcome import Status
    from mailmerge.state.report import Summary

    summary = Summary(Counter({Status.SENT: 5000}))
    assert summary.line() == "sent 5,000, refused 0, invalid 0"


def test_outbox_run_says_written_and_names_the_report_once(tmp_path: Path) -> None:
    result = run_cli("send", three_rows(tmp_path), "-t", write_template(tmp_path / "t.txt", TEMPLATE),
                     "--outbox", tmp_path / "out", "--yes")
    assert result.exit_code == 0, result.stderr
    lines = [line.rstrip() for line in result.stdout.splitlines()]
    assert "written 3, refused 0, invalid 0" in lines
    assert not any(line.startswith("sent") for line in lines)
    assert [line for line in lines if line.startswith("report")] == [f"report: {tmp_path / 'list.report.csv'}"]
    per_message = result.stderr.splitlines()  # one line per message without a terminal
    assert "row 2: written ann@example.com" in per_message and not any(": sent " in line for line in per_message)


def test_bounces_verbose_speaks_imap() -> None:
    help_text = " ".join(run_cli("bounces", "--help").stdout.split())
    assert "Show the IMAP conversation (passwords masked)." in help_text
    assert "SMTP conversation" not in help_text


def test_login_config_help_mentions_no_list() -> None:
    help_text = " ".join(run_cli("login", "--help").stdout.split())
    assert "The config file (default: mailmerge.toml here)." in help_text
    assert "beside the list" not in help_text


def test_send_help_puts_each_example_on_its_own_line() -> None:
    lines = [line.strip() for line in run_cli("send", "--help").stdout.splitlines()]
    assert "Example:  mailmerge send list.xlsx -t invoice.txt --rate 20/min" in lines
    assert "Try it:   mailmerge send list.xlsx -t invoice.txt --test-to me@example.com" in lines


def test_a_new_campaign_name_is_not_called_another_template(tmp_path: Path, tls_server: SmtpTestServer) -> None:
    write_config(tmp_path, tls_server)
    listing, template = three_rows(tmp_path), write_template(tmp_path / "t.txt", TEMPLATE)
    run_cli("send", listing, "-t", template, "--yes", "--max-messages", "1")
    result = run_cli("send", listing, "-t", template, "--yes", "--campaign", "spring")
    assert "sent by another campaign" in result.stderr
    assert "under another campaign name. If this is the same mailing" in " ".join(result.stderr.split())
    assert "another version of the template" not in result.stderr


def test_a_changed_template_is_still_called_another_version(tmp_path: Path, tls_server: SmtpTestServer) -> None:
    write_config(tmp_path, tls_server)
    listing = three_rows(tmp_path)
    run_cli("send", listing, "-t", write_template(tmp_path / "t.txt", TEMPLATE), "--yes", "--max-messages", "1")
    result = run_cli("send", listing, "-t", write_template(tmp_path / "t.txt", TEMPLATE + "Bye\n"), "--yes")
    assert "with another version of the template." in " ".join(result.stderr.split())


def test_pause_notice_fits_80_columns(monkeypatch: pytest.MonkeyPatch) -> None:
    screen = io.StringIO()
    console = Console(file=screen, width=80, force_terminal=True, color_system=None, highlight=False)
    monkeypatch.setattr(ui_module, "err", console)
    with SendProgress(Ui("send"), total=5000) as progress:
        progress.notify("batch of 500 sent; pausing 60 s, until 09:12:30")
        bar = console.render_lines(progress._progress.get_renderable(), console.options)  # type: ignore[union-attr]
    text = ["".join(segment.text for segment in line).rstrip() for line in bar]
    assert len(text) == 1 and len(text[0]) <= 80
    assert text[0].startswith("pausing 60 s, until 09:12:30")
    assert text[0].endswith("refused 0")
    assert "0/5000" in text[0]
