"""The copy in the Sent folder is the message that went out, byte for byte:
sent to a real SMTP server (aiosmtpd, and a real Postfix), copied into a real
Dovecot through [imap] save_sent, in the same run or by a later run that
catches up. Also: a message is built the same way every time (boundaries and
Content-IDs from its Message-ID), and the journal hands out the missing copies
a batch at a time."""

from __future__ import annotations

import email
import email.policy
import itertools
import re
import shutil
import time
from collections.abc import Iterator
from email.message import EmailMessage
from pathlib import Path
from typing import Any

import pytest
from conftest import run_cli, write_config, write_template, write_xlsx
from imap_server import DovecotServer, dovecot_binary, free_port
from postfix_server import PostfixServer
from smtp_server import SmtpTestServer

from mailmerge.mime.message import build_message
from mailmerge.outcome import Outcome, Status
from mailmerge.render.template import Draft, Mailbox
from mailmerge.state.journal import Journal

needs_dovecot = pytest.mark.skipif(dovecot_binary() is None, reason="dovecot is not installed (apt-get install -y dovecot-imapd)")

DATA = Path(__file__).parent / "data"
IMAP_USER, IMAP_PASSWORD = "club@example.com", "imap-Pa55!"
DATE = "Mon, 01 Dec 2025 10:00:00 +0900"

# Markdown with an inline image and a per-row attachment: three MIME levels,
# a Content-ID, and a line that starts with a dot (dot-stuffed on the wire).
TEMPLATE = """\
From: Club <club@example.com>
To: {{ name }} <{{ email }}>
Subject: News for {{ name }}
Attachment: invoices/{{ invoice_no }}.pdf

![logo](logo.png)

Hello **{{ name }}**, read [the news](https://example.com/news?id={{ invoice_no }}).

{{ note }}
"""
HEADER = ("name", "email", "invoice_no", "note")


def rows(prefix: str = "") -> list[tuple[str, ...]]:
    return [
        ("김민수", f"{prefix}minsu@example.com", "007", "이번 달 소식입니다 📚"),
        ("O'Brien & Co", f"{prefix}obrien@example.com", "012", "a < b & *c*"),
        ("Ann", f"{prefix}ann@example.com", "100", ".a line that starts with a dot"),
    ]


@pytest.fixture
def imap() -> Iterator[DovecotServer]:
    with DovecotServer(users={IMAP_USER: IMAP_PASSWORD}) as server:
        yield server


def setup(folder: Path, smtp: SmtpTestServer | PostfixServer, imap: DovecotServer, *, imap_port: int | None = None,
          prefix: str = "", **smtp_settings: Any) -> tuple[Path, Path]:
    """The list, the template with its files, and a config with [imap] save_sent."""
    shutil.copy(DATA / "logo.png", folder / "logo.png")
    (folder / "invoices").mkdir(exist_ok=True)
    for number in ("007", "012", "100"):
        shutil.copy(DATA / "invoice.pdf", folder / "invoices" / f"{number}.pdf")
    xlsx = write_xlsx(folder / "list.xlsx", HEADER, rows(prefix))
    template = write_template(folder / "news.md", TEMPLATE)
    config = write_config(folder, smtp, **smtp_settings)
    config.write_text(config.read_text() + "\n".join([
        "", "[imap]", f'host = "{imap.host}"', f"port = {imap_port or imap.port}", 'security = "ssl"',
        f'username = "{IMAP_USER}"', f'ca_file = "{imap.ca_file}"', "timeout = 5", "save_sent = true", "",
    ]))
    return xlsx, template


def send(xlsx: Path, template: Path) -> tuple[int, str]:
    run = run_cli("send", xlsx, "-t", template, "--yes", env={"MAILMERGE_IMAP_PASSWORD": IMAP_PASSWORD})
    return run.exit_code, run.output


def as_sent(raw: bytes) -> bytes:
    """A message as its sender wrote it: CRLF line ends, without the trace
    headers a receiving server puts on top (Return-Path, X-Original-To,
    Delivered-To, Received) and without the final line end."""
    data = raw.replace(b"\r\n", b"\n").replace(b"\n", b"\r\n")
    trace = re.compile(rb"\A(?:Return-Path|X-Original-To|Delivered-To|Received):[^\r\n]*\r\n(?:[ \t][^\r\n]*\r\n)*", re.IGNORECASE)
    while trace.match(data):
        data = trace.sub(b"", data, count=1)
    return data.rstrip(b"\r\n")


def by_message_id(messages: list[bytes]) -> dict[str, bytes]:
    return {str(email.message_from_bytes(raw, policy=email.policy.default)["Message-ID"]): as_sent(raw)
            for raw in messages}


def copies(imap: DovecotServer) -> dict[str, bytes]:
    return by_message_id([data for _, _, data in imap.messages("Sent")])


def assert_copies_are(saved: dict[str, bytes], sent: dict[str, bytes]) -> None:
    """Each message that went out has its copy in Sent, byte for byte."""
    assert saved.keys() == sent.keys()
    for message_id, raw in sent.items():
        check_shape(raw)
        assert saved[message_id] == raw, message_id


def check_shape(raw: bytes) -> None:
    """The copy holds what the test means to compare: three MIME levels, an
    image referenced by its Content-ID, a PDF, text parts that are not 8bit."""
    message = email.message_from_bytes(raw, policy=email.policy.default)
    assert isinstance(message, EmailMessage)
    kinds = [part.get_content_type() for part in message.walk()]
    assert kinds == ["multipart/mixed", "multipart/alternative", "text/plain", "multipart/related",
                     "text/html", "image/png", "application/pdf"]
    html = message.get_body(("html",))
    assert html is not None
    cid = next(p for p in message.walk() if p.get_content_type() == "image/png")["Content-ID"].strip("<>")
    assert f'src="cid:{cid}"' in html.get_content()
    assert b"Content-Transfer-Encoding: 8bit" not in raw


@needs_dovecot
def test_the_sent_copy_is_the_bytes_the_server_received(tmp_path: Path, imap: DovecotServer) -> None:
    with SmtpTestServer() as smtp:
        xlsx, template = setup(tmp_path, smtp, imap, security="none", username=None)
        code, output = send(xlsx, template)
        received = by_message_id([m.data for m in smtp.messages])

    assert code == 0, output
    assert "saved 3 copies in the folder 'Sent'" in output
    assert all("BODY=8BITMIME" in m.mail_options for m in smtp.messages)
    assert any(b"\r\n.a line that starts with a dot\r\n" in m.data for m in smtp.messages)  # dot-stuffed on the wire
    assert len(received) == 3
    assert_copies_are(copies(imap), received)


@needs_dovecot
def test_a_later_run_that_catches_up_saves_the_same_bytes(tmp_path: Path, imap: DovecotServer) -> None:
    with SmtpTestServer() as smtp:
        xlsx, template = setup(tmp_path, smtp, imap, imap_port=free_port(), security="none", username=None)
        first = send(xlsx, template)  # IMAP is down: sent, no copies
        received = by_message_id([m.data for m in smtp.messages])
        time.sleep(1.1)  # a Date made again now would not be the one sent
        setup(tmp_path, smtp, imap, security="none", username=None)  # IMAP is back
        later = send(xlsx, template)

    assert first[0] == 0, first[1]
    assert "the copies for the Sent folder were not all saved" in first[1]
    assert later[0] == 0, later[1]
    assert "saved 3 copies in the folder 'Sent'" in later[1]
    assert len(smtp.messages) == 3  # nothing sent twice
    assert_copies_are(copies(imap), received)


class _No8BitMime(SmtpTestServer):
    """A real aiosmtpd that does not offer 8BITMIME (older relays, some appliances)."""

    def start(self) -> _No8BitMime:
        super().start()
        assert self._controller is not None
        handler = self._controller.handler
        offered = handler.handle_EHLO

        async def without_8bitmime(server: Any, session: Any, envelope: Any, hostname: str,
                                   responses: list[str]) -> list[str]:
            responses = await offered(server, session, envelope, hostname, responses)
            return [line for line in responses if "8BITMIME" not in line.upper()]

        handler.handle_EHLO = without_8bitmime  # read by each new session
        return self


@needs_dovecot
def test_the_copy_is_what_a_server_without_8bitmime_received(tmp_path: Path, imap: DovecotServer) -> None:
    with _No8BitMime() as smtp:
        xlsx, template = setup(tmp_path, smtp, imap, security="none", username=None)
        code, output = send(xlsx, template)
        received = by_message_id([m.data for m in smtp.messages])

    assert code == 0, output
    assert len(smtp.messages) == 3 and not any("BODY=8BITMIME" in m.mail_options for m in smtp.messages)
    assert all(m.data.isascii() for m in smtp.messages)
    saved = copies(imap)
    assert saved.keys() == received.keys()
    for message_id, raw in received.items():
        assert saved[message_id] == raw, message_id


@needs_dovecot
def test_the_copy_is_what_postfix_delivered(tmp_path: Path, imap: DovecotServer, postfix: PostfixServer) -> None:
    prefix = f"copy{time.time_ns() % 10**9}-"  # the Postfix is shared by the session: addresses of this test only
    xlsx, template = setup(tmp_path, postfix, imap, prefix=prefix)
    code, output = send(xlsx, template)
    addresses = [row[1] for row in rows(prefix)]
    postfix.wait_for_delivery(addresses)
    delivered = by_message_id([raw for address in addresses for raw in postfix.delivered(address)])

    assert code == 0, output
    assert len(delivered) == 3
    assert_copies_are(copies(imap), delivered)


@needs_dovecot
def test_a_row_that_cannot_be_built_again_is_named_and_caught_up_later(tmp_path: Path, imap: DovecotServer) -> None:
    with SmtpTestServer() as smtp:
        xlsx, template = setup(tmp_path, smtp, imap, imap_port=free_port(), security="none", username=None)
        send(xlsx, template)  # sent, no copies
        received = by_message_id([m.data for m in smtp.messages])
        setup(tmp_path, smtp, imap, security="none", username=None)
        (tmp_path / "invoices" / "012.pdf").unlink()  # row 3's attachment is gone
        missing = send(xlsx, template)
        shutil.copy(DATA / "invoice.pdf", tmp_path / "invoices" / "012.pdf")
        back = send(xlsx, template)

    assert missing[0] == 0, missing[1]
    assert "saved 2 copies in the folder 'Sent'" in missing[1]
    assert f"warning: row 3 was sent, but its copy for 'Sent' cannot be made: attachment not found: " \
           f"{tmp_path / 'invoices' / '012.pdf'}" in missing[1]
    assert "Put back what is missing, then run the same command again to save the copies" in missing[1]
    assert "Traceback" not in missing[1]
    assert back[0] == 0 and "saved 1 copies in the folder 'Sent'" in back[1]
    assert len(smtp.messages) == 3
    assert copies(imap) == received


# --- the same message, built again -----------------------------------------------------


def draft(**fields: Any) -> Draft:
    values: dict[str, Any] = {
        "subject": "3월 소식", "body": "안녕하세요\n", "html": '<p>안녕하세요</p><img src="logo.png">\n',
        "images": {"logo.png": DATA / "logo.png"}, "attachments": [DATA / "invoice.pdf"], **fields,
    }
    return Draft(row=2, sender=[Mailbox("Club", "club@example.com")], to=[Mailbox("김민수", "minsu@example.org")],
                 **values)


def test_a_message_built_again_is_the_same_bytes_for_any_server() -> None:
    first = build_message(draft(), message_id="<1.2.3@example.com>", date=DATE)
    again = build_message(draft(), message_id="<1.2.3@example.com>", date=DATE)
    other = build_message(draft(), message_id="<4.5.6@example.com>", date=DATE)

    assert first.as_bytes() == again.as_bytes()
    assert first.as_bytes(eightbit=True) == first.as_bytes(eightbit=False)  # one form: no 8bit part
    assert first.as_bytes().isascii()
    boundaries = re.findall(rb'boundary="([^"]+)"', first.as_bytes())
    assert len(set(boundaries)) == 3
    assert not set(boundaries) & set(re.findall(rb'boundary="([^"]+)"', other.as_bytes()))
    assert b"Content-ID: <1.1.2.3@example.com>" in first.as_bytes()


def test_a_boundary_written_in_the_text_is_not_used() -> None:
    built = build_message(draft(), message_id="<1.2.3@example.com>", date=DATE).as_bytes()
    boundaries = [b.decode() for b in re.findall(rb'boundary="([^"]+)"', built)]
    # A 7-bit text part that holds every boundary the message would use, as lines of their own.
    body = "".join(f"--{b}\n--{b}--\n" for b in boundaries) + "end\n"
    raw = build_message(draft(body=body), message_id="<1.2.3@example.com>", date=DATE).as_bytes()
    parsed = email.message_from_bytes(raw, policy=email.policy.default)

    assert [p.get_content_type() for p in parsed.walk()][2:] == [
        "text/plain", "multipart/related", "text/html", "image/png", "application/pdf"]
    text = parsed.get_body(("plain",))
    assert text is not None and text.get_content().replace("\r\n", "\n") == body
    assert not set(boundaries) & {b.decode() for b in re.findall(rb'boundary="([^"]+)"', raw)}


# --- the journal: what is missing, a batch at a time ------------------------------------


def test_copy_missing_reads_in_batches_while_copies_are_marked(tmp_path: Path) -> None:
    with Journal(tmp_path, "c") as journal:
        for row in range(2, 9):
            outcome = Outcome(row, "To", f"r{row}@example.com", Status.SENT, 250, "", f"<{row}@x>")
            journal.record([outcome], date=f"date {row}")
        journal.record([Outcome(9, "To", "r9@example.com", Status.REFUSED, 550, "no", "<9@x>")])
        journal.mark_copied("<4@x>", "Sent")
        seen = []
        for row, message_id, date in itertools.islice(journal.copy_missing(batch=2), 20):  # a bug fails, not hangs
            seen.append((row, message_id, date))
            if row % 2 == 0:  # the odd rows fail to copy: still missing, but not handed out twice
                journal.mark_copied(message_id, "Sent")  # written between two reads

        assert seen == [(row, f"<{row}@x>", f"date {row}") for row in (2, 3, 5, 6, 7, 8)]
        assert [row for row, _, _ in journal.copy_missing()] == [3, 5, 7]
