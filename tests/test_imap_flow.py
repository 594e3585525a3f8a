"""`send` with [imap] save_sent, and `mailmerge bounces`, against a real
Dovecot and a real SMTP server on 127.0.0.1; and `bounces` against an IMAP
server that sends too much."""

from __future__ import annotations

import csv
import email
import email.policy
import os
import resource
import subprocess
import sys
import time
from collections.abc import Iterator
from pathlib import Path

import pytest
from conftest import run_cli, write_config, write_template, write_xlsx
from imap_server import DovecotServer, HostileImapServer, dovecot_binary
from smtp_server import SmtpTestServer

import mailmerge

needs_dovecot = pytest.mark.skipif(dovecot_binary() is None, reason="dovecot is not installed (apt-get install -y dovecot-imapd)")

USER, IMAP_PASSWORD = "club@example.com", "imap-Pa55!"
TEMPLATE = "From: Club <club@example.com>\nSubject: News for {{ name }}\nTo: {{ name }} <{{ email }}>\n\nHello {{ name }}\n"
ROWS = [("김민수", "minsu@example.com"), ("Ann", "ann@example.com"), ("Bob", "bob@example.com")]


@pytest.fixture
def imap() -> Iterator[DovecotServer]:
    with DovecotServer(users={USER: IMAP_PASSWORD}) as server:
        yield server


def setup(folder: Path, smtp: SmtpTestServer, imap: DovecotServer | None, port: int | None = None) -> tuple[Path, Path]:
    xlsx = write_xlsx(folder / "list.xlsx", ("name", "email"), ROWS)
    template = write_template(folder / "t.txt", TEMPLATE)
    config = write_config(folder, smtp, security="none", username=None)
    if imap is not None:
        config.write_text(config.read_text() + "\n".join([
            "", "[imap]", f'host = "{imap.host}"', f"port = {port or imap.port}", 'security = "ssl"',
            f'username = "{USER}"', f'ca_file = "{imap.ca_file}"', "timeout = 5", "save_sent = true", "",
        ]))
    return xlsx, template


def send(xlsx: Path, template: Path, *extra: str) -> tuple[int, str]:
    run = run_cli("send", xlsx, "-t", template, "--yes", *extra, env={"MAILMERGE_IMAP_PASSWORD": IMAP_PASSWORD})
    return run.exit_code, run.output


def message_ids(raw: list[bytes]) -> list[str]:
    return [str(email.message_from_bytes(r, policy=email.policy.default)["Message-ID"]) for r in raw]


@needs_dovecot
def test_each_sent_message_is_copied_to_sent_once(tmp_path: Path, imap: DovecotServer) -> None:
    with SmtpTestServer() as smtp:
        xlsx, template = setup(tmp_path, smtp, imap)
        first = send(xlsx, template)
        again = send(xlsx, template)
        sent_ids = message_ids([m.data for m in smtp.messages])

    assert first[0] == 0, first[1]
    assert again[0] == 0, again[1]
    copies = imap.messages("Sent")
    assert len(copies) == 3  # once, across two runs
    assert message_ids([data for _, _, data in copies]) == sent_ids  # the messages that went out
    assert all("\\Seen" in flags for flags, _, _ in copies)
    assert "saved 3 copies in the folder 'Sent'" in first[1]


@needs_dovecot
def test_the_library_saves_the_sent_copies_itself(tmp_path: Path, imap: DovecotServer, monkeypatch: pytest.MonkeyPatch) -> None:
    """Campaign.send, not the CLI, keeps [imap] save_sent: a script gets the copies too."""
    monkeypatch.setenv("MAILMERGE_IMAP_PASSWORD", IMAP_PASSWORD)
    with SmtpTestServer() as smtp:
        xlsx, template = setup(tmp_path, smtp, imap)
        result = mailmerge.Campaign.open(xlsx, template).send()
        sent_ids = message_ids([m.data for m in smtp.messages])

    assert result.copies is not None and result.copies_error is None
    assert (result.copies.appended, result.copies.folder) == (3, "Sent")
    assert message_ids([data for _, _, data in imap.messages("Sent")]) == sent_ids


@needs_dovecot
def test_imap_down_does_not_stop_the_send_and_the_next_run_catches_up(tmp_path: Path, imap: DovecotServer) -> None:
    from smtp_server import free_port

    with SmtpTestServer() as smtp:
        xlsx, template = setup(tmp_path, smtp, imap, port=free_port())  # nothing listens there
        down = send(xlsx, template)
        assert len(smtp.messages) == 3
        setup(tmp_path, smtp, imap)  # the right port again
        later = send(xlsx, template)

    assert down[0] == 0, down[1]
    assert "warning: the copies for the Sent folder were not all saved" in down[1]
    assert later[0] == 0 and len(smtp.messages) == 3  # nothing sent twice
    assert len(imap.messages("Sent")) == 3


@needs_dovecot
def test_bounces_mark_their_rows_and_leave_the_inbox_unread(tmp_path: Path, imap: DovecotServer) -> None:
    with SmtpTestServer() as smtp:
        xlsx, template = setup(tmp_path, smtp, imap)
        send(xlsx, template)
        sent = {m.rcpt_tos[0]: str(m.message["Message-ID"]) for m in smtp.messages}
        imap.put("INBOX", dsn("ann@example.com", sent["ann@example.com"]))
        imap.put("INBOX", b"From: bob@example.com\r\nTo: club@example.com\r\nSubject: Re: News\r\n"
                          b"In-Reply-To: " + sent["bob@example.com"].encode() + b"\r\n\r\nThanks!\r\n")
        run = run_cli("bounces", xlsx, "-t", template, "--since", "2d",
                      env={"MAILMERGE_IMAP_PASSWORD": IMAP_PASSWORD})
        again = send(xlsx, template)

    assert run.exit_code == 0, run.output
    assert "1 bounces of this campaign" in run.stdout
    with (tmp_path / "list.report.csv").open(encoding="utf-8-sig") as handle:
        report = {row["address"]: row for row in csv.DictReader(handle)}
    assert report["ann@example.com"]["status"] == "bounced"
    assert report["ann@example.com"]["code"] == "550" and "5.1.1" in report["ann@example.com"]["reason"]
    assert report["bob@example.com"]["status"] == "sent"  # a reply is not a bounce
    assert all("\\Seen" not in flags for flags, _, _ in imap.messages("INBOX"))
    assert again[0] == 3 and len(smtp.messages) == 3  # the bounced row is not sent again


def dsn(recipient: str, message_id: str) -> bytes:
    """An RFC 3464 delivery status notification for ``recipient``."""
    return (
        "From: Mail Delivery System <MAILER-DAEMON@mx.example.com>\r\n"
        "To: club@example.com\r\n"
        "Subject: Undelivered Mail Returned to Sender\r\n"
        "MIME-Version: 1.0\r\n"
        'Content-Type: multipart/report; report-type=delivery-status; boundary="B"\r\n\r\n'
        "--B\r\nContent-Type: text/plain\r\n\r\nYour message could not be delivered.\r\n"
        "--B\r\nContent-Type: message/delivery-status\r\n\r\n"
        "Reporting-MTA: dns; mx.example.com\r\n\r\n"
        f"Final-Recipient: rfc822; {recipient}\r\nAction: failed\r\nStatus: 5.1.1\r\n"
        f"Diagnostic-Code: smtp; 550 5.1.1 <{recipient}>: Recipient address rejected: User unknown\r\n"
        "--B\r\nContent-Type: text/rfc822-headers\r\n\r\n"
        f"From: club@example.com\r\nTo: {recipient}\r\nMessage-ID: {message_id}\r\nSubject: News\r\n"
        "--B--\r\n"
    ).encode()


MEMORY_LIMIT = 512 << 20  # address space for the command: Python with pandas needs about 230 MB


def limit_memory() -> None:
    resource.setrlimit(resource.RLIMIT_AS, (MEMORY_LIMIT, MEMORY_LIMIT))


@pytest.mark.parametrize(("announce", "send_bytes", "count"), [
    (2_000_000_000, 1 << 16, 1),  # one literal announced as 2 GB, then a few bytes and the connection closes
    (1 << 20, 1 << 20, 100),  # a hundred 1 MB literals, complete: 100 MB for one FETCH
], ids=["2GB-literal", "100x1MB"])
def test_a_server_sending_too_much_gets_a_one_line_error(
        tmp_path: Path, announce: int, send_bytes: int, count: int) -> None:
    """A hostile IMAP server cannot make `bounces` allocate what it announces:
    the command stops quickly with exit 1 and one line naming the server and
    the limit, even in a process limited to 512 MB of address space."""
    with HostileImapServer(announce=announce, send=send_bytes, count=count) as imap, SmtpTestServer() as smtp:
        xlsx, template = setup(tmp_path, smtp, imap)  # type: ignore[arg-type]
        started = time.monotonic()
        run = subprocess.run(
            [sys.executable, "-m", "mailmerge", "bounces", str(xlsx), "-t", str(template), "--since", "2d"],
            env={**os.environ, "PYTHONPATH": str(Path(mailmerge.__file__).parent.parent),
                 "MAILMERGE_IMAP_PASSWORD": IMAP_PASSWORD, "OPENBLAS_NUM_THREADS": "1"},
            capture_output=True, text=True, timeout=120, preexec_fn=limit_memory)
        elapsed = time.monotonic() - started
        commands = list(imap.commands)

    assert any(" UID FETCH " in f" {c} " for c in commands), commands  # it got as far as the FETCH
    assert run.returncode == 1, run.stdout + run.stderr
    assert "Traceback" not in run.stderr and "MemoryError" not in run.stderr
    [line] = run.stderr.strip().splitlines()
    assert line.startswith(f"error: 127.0.0.1:{imap.port} sent or announced more than 64 MB while trying to read "
                           "messages in 'INBOX'"), line
    assert "it reads at most 64 MB per answer" in line and "misbehaving" in line
    assert elapsed < 30, elapsed
