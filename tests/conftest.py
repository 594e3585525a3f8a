"""Shared fixtures: real SMTP servers on 127.0.0.1, real .xlsx files, the CLI."""

from __future__ import annotations

import datetime as dt
import json
from collections.abc import Iterator, Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import openpyxl
import pytest
from postfix_server import PostfixServer, unavailable as postfix_unavailable
from smtp_server import SmtpTestServer
from typer.testing import CliRunner

from mailmerge.cli import app

USER = "club@example.com"
PASSWORD = "s3cret-Pa55word!"
REFUSED = "nobody@example.net"


@pytest.fixture
def tls_server() -> Iterator[SmtpTestServer]:
    """STARTTLS + AUTH (trustme certificate); refuses REFUSED with 550."""
    with SmtpTestServer(tls=True, auth={USER: PASSWORD}, refuse=[REFUSED]) as server:
        yield server


@pytest.fixture
def plain_server() -> Iterator[SmtpTestServer]:
    """No TLS, no AUTH; refuses REFUSED with 550."""
    with SmtpTestServer(refuse=[REFUSED]) as server:
        yield server


@pytest.fixture(scope="session")
def postfix() -> Iterator[PostfixServer]:
    """A throwaway Postfix shared by the whole session: STARTTLS, AUTH as
    USER/PASSWORD, Maildirs, one listener per behaviour (see
    tests/postfix_server.py). Skips, saying why, where Postfix cannot run."""
    reason = postfix_unavailable()
    if reason:
        pytest.skip(reason)
    with PostfixServer(username=USER, password=PASSWORD) as server:
        yield server


def write_config(folder: Path, server: SmtpTestServer | PostfixServer, **smtp: Any) -> Path:
    """Write mailmerge.toml into ``folder`` for ``server`` (STARTTLS + AUTH by default)."""
    settings: dict[str, Any] = {
        "host": server.host,
        "port": server.port,
        "security": "starttls",
        "username": USER,
        "ca_file": str(server.ca_file) if server.ca_file else None,
        "timeout": 10,
    }
    settings.update(smtp)
    lines = ["[smtp]"]
    lines += [f"{key} = {json.dumps(value)}" for key, value in settings.items() if value is not None]
    # Retries and reconnections after a few milliseconds, not the real seconds.
    lines += ["", "[send]", "reconnect_delay = 0.01", "retry_delay = 0.01"]
    lines += ["", "[message]", 'from = "Book Club <club@example.com>"', ""]
    path = folder / "mailmerge.toml"
    path.write_text("\n".join(lines), encoding="utf-8")
    return path


def write_xlsx(path: Path, header: Sequence[str], rows: Sequence[Sequence[Any]]) -> Path:
    """A real Excel file written by openpyxl: header in row 1, rows below."""
    book = openpyxl.Workbook()
    sheet = book.active
    assert sheet is not None
    sheet.append(list(header))
    for row in rows:
        sheet.append(list(row))
    book.save(path)
    return path


def write_template(path: Path, text: str) -> Path:
    path.write_text(text, encoding="utf-8")
    return path


@dataclass
class Run:
    """What a person sees after running the command."""

    exit_code: int
    stdout: str
    stderr: str

    @property
    def output(self) -> str:
        return self.stdout + self.stderr


def run_cli(
    *args: str | Path, password: str | None = PASSWORD, env: dict[str, str] | None = None, stdin: str | None = None
) -> Run:
    """Run ``mailmerge ARGS`` in-process (standard input is a pipe, not a terminal)."""
    environment = {"MAILMERGE_PASSWORD": password, **(env or {})}
    result = CliRunner().invoke(app, [str(a) for a in args], env=environment, input=stdin, catch_exceptions=False)
    return Run(result.exit_code, result.stdout, result.stderr)


SAMPLE_TEMPLATE = """\
From: Book Club <club@example.com>
Subject: {{ name }}님, invoice {{ invoice_no }} 📚
To: {{ name }} <{{ email }}>

Dear {{ name }},
your invoice {{ invoice_no }} of {{ amount }} is due on {{ due }}.
"""

SAMPLE_HEADER = ("name", "email", "invoice_no", "amount", "due")
SAMPLE_ROWS: list[tuple[Any, ...]] = [
    ("김민수", "minsu@example.com", "007", 42, dt.date(2026, 11, 27)),
    ("O'Brien, Jung", "jung@example.org", "012", None, dt.date(2026, 12, 1)),
    ("Zoë Lefèvre", "zoe@example.fr", "100", 1250000, dt.datetime(2026, 12, 24, 0, 0)),
]


@pytest.fixture
def sample(tmp_path: Path) -> tuple[Path, Path]:
    """A three-row Excel list and its template, in tmp_path."""
    xlsx = write_xlsx(tmp_path / "list.xlsx", SAMPLE_HEADER, SAMPLE_ROWS)
    template = write_template(tmp_path / "invoice.txt", SAMPLE_TEMPLATE)
    return xlsx, template
