"""IMAP: bounce parsing on real-looking reports, mailbox names, and a real
Dovecot server (Sent copies, finding bounces without marking them read,
refused logins and untrusted certificates)."""

from __future__ import annotations

import base64
import datetime as dt
import email.policy
import email.utils
import socket
import time
from collections.abc import Iterator
from email.message import EmailMessage
from email.parser import BytesParser
from pathlib import Path

import pytest
from conftest import PASSWORD, USER

import mailmerge.imap.session
from imap_server import DovecotServer, dovecot_binary

from mailmerge.config.file import ImapConfig
from mailmerge.imap.session import (
    Bounce,
    Folder,
    ImapError,
    ImapSession,
    find_sent_by_name,
    mutf7_decode,
    mutf7_encode,
    parse_bounce,
    parse_list_reply,
    quote_folder,
)

DSN = Path(__file__).parent / "data" / "dsn"
FIVE = ("rfc3464.eml", "gmail.eml", "postfix.eml", "delayed.eml", "reply.eml")

needs_dovecot = pytest.mark.skipif(
    dovecot_binary() is None, reason="dovecot is not installed (apt-get install -y dovecot-imapd)")


def load(name: str) -> EmailMessage:
    message = BytesParser(policy=email.policy.default).parsebytes((DSN / name).read_bytes())
    assert isinstance(message, EmailMessage)
    return message


# --- parse_bounce on the files ----------------------------------------------------

GMAIL_DIAGNOSTIC = (
    "smtp; 550-5.1.1 The email account that you tried to reach does not exist. Please try "
    "550-5.1.1 double-checking the recipient's email address for typos or 550-5.1.1 unnecessary "
    "spaces. For more information, go to 550 5.1.1 https://support.google.com/mail/?p=NoSuchUser "
    "41be03b00d2f7-7c0e3c4f2besi1234567a12.321 - gsmtp")

EXPECTED = {
    "rfc3464.eml": Bounce("", "lost.reader@example.org", "5.1.1",
                          "SMTP; 550 5.1.1 <lost.reader@example.org>... User unknown", ("<123.456@example.com>",),
                          report=True),
    "gmail.eml": Bounce("", "jung.obrien@gmail.com", "5.1.1", GMAIL_DIAGNOSTIC, ("<123.457@example.com>",),
                        report=True),
    "postfix.eml": Bounce("", "zoe@example.fr", "5.1.1",
                          "smtp; 550 5.1.1 <zoe@example.fr>: Recipient address rejected: User unknown "
                          "in virtual mailbox table", ("<123.458@example.com>",), report=True),
    "gmail-text.eml": Bounce("", "ghost.member@gmail.com", "5.1.1",
                             "550 5.1.1 The email account that you tried to reach does not exist. Please "
                             "try double-checking the recipient's email address for typos or unnecessary "
                             "spaces. https://support.google.com/mail/?p=NoSuchUser "
                             "a640c23a62f3a-ab7c8d9e0f1si9876543a66.12 - gsmtp",
                             ()),  # its text quotes the Message-ID: that proves nothing
    "sendmail-text.eml": Bounce("", "old.member@example.net", "5.1.1",
                                "550 5.1.1 <old.member@example.net>... User unknown", ("<123.461@example.com>",)),
}


@pytest.mark.parametrize("name", sorted(EXPECTED))
def test_parse_bounce_reads_each_kind(name: str) -> None:
    """Standard RFC 3464, Gmail and Postfix reports, and the text-only kinds."""
    assert parse_bounce(load(name)) == [EXPECTED[name]]


def test_delivered_recipient_in_a_report_is_not_a_bounce() -> None:
    """rfc3464.eml reports two recipients: only the failed one counts."""
    assert "minsu@example.org" in (DSN / "rfc3464.eml").read_text()
    assert [b.recipient for b in parse_bounce(load("rfc3464.eml"))] == ["lost.reader@example.org"]


@pytest.mark.parametrize("name", ["delayed.eml", "reply.eml"])
def test_delayed_report_and_ordinary_reply_are_not_bounces(name: str) -> None:
    assert parse_bounce(load(name)) == []


def test_every_file_references_an_original_message() -> None:
    for path in DSN.glob("*.eml"):
        assert "<123.4" in path.read_text(encoding="utf-8"), path.name


def test_gmail_text_without_failed_recipients_header() -> None:
    """The address is then read from "Your message wasn't delivered to x@y because"."""
    message = load("gmail-text.eml")
    del message["X-Failed-Recipients"]
    assert parse_bounce(message) == [EXPECTED["gmail-text.eml"]]


def test_postfix_text_only_bounce() -> None:
    """A Postfix-style bounce with only its notification text (no report part)."""
    report = load("postfix.eml")
    notice = next(part for part in report.walk() if part.get_content_type() == "text/plain")
    message = EmailMessage()
    for header in ("From", "To", "Subject", "Date"):
        message[header] = report[header]
    message["In-Reply-To"] = "<123.458@example.com>"
    message.set_content(notice.get_content())
    assert parse_bounce(message) == [Bounce(
        "", "zoe@example.fr", "5.1.1",
        "host mx.example.fr[192.0.2.25] said: 550 5.1.1 <zoe@example.fr>: Recipient address "
        "rejected: User unknown in virtual mailbox table (in reply to RCPT TO command)",
        ("<123.458@example.com>",))]


def test_report_without_action_counts_5xx_status_only() -> None:
    raw = (DSN / "postfix.eml").read_bytes().replace(b"Action: failed\n", b"")
    message = BytesParser(policy=email.policy.default).parsebytes(raw)
    assert [b.status for b in parse_bounce(message)] == ["5.1.1"]
    raw = (DSN / "delayed.eml").read_bytes().replace(b"Action: delayed\n", b"")
    message = BytesParser(policy=email.policy.default).parsebytes(raw)
    assert parse_bounce(message) == []


def test_global_delivery_status_is_read_too() -> None:
    """RFC 6533 (UTF-8 addresses): the email package leaves the part unsplit."""
    raw = (DSN / "postfix.eml").read_bytes().replace(
        b"Content-Type: message/delivery-status", b"Content-Type: message/global-delivery-status")
    message = BytesParser(policy=email.policy.default).parsebytes(raw)
    assert parse_bounce(message) == [EXPECTED["postfix.eml"]]


def test_references_come_only_from_where_a_report_puts_them() -> None:
    """A Message-ID quoted in a bounce's text, or in a made-up field of its
    report, proves nothing: anyone can write it there."""
    assert "Message-ID: <123.460@example.com>" in (DSN / "gmail-text.eml").read_text()
    assert [b.references for b in parse_bounce(load("gmail-text.eml"))] == [()]
    raw = (DSN / "postfix.eml").read_bytes().replace(b"Message-ID: <123.458@example.com>\n", b"").replace(
        b"Reporting-MTA:", b"X-Original-Message-ID: <123.458@example.com>\nReporting-MTA:")
    message = BytesParser(policy=email.policy.default).parsebytes(raw)
    assert [(b.recipient, b.references, b.report) for b in parse_bounce(message)] == [("zoe@example.fr", (), True)]


def test_message_ids_keep_their_case_and_lose_spaces_inside_the_brackets() -> None:
    raw = (DSN / "postfix.eml").read_bytes().replace(
        b"Message-ID: <123.458@example.com>", b"Message-ID: < AbC.458@Example.COM >").replace(
        b"Subject: Undelivered", b"References: <first@example.com>\n <Second@example.com>\nSubject: Undelivered")
    message = BytesParser(policy=email.policy.default).parsebytes(raw)
    assert [b.references for b in parse_bounce(message)] == [
        ("<AbC.458@Example.COM>", "<Second@example.com>", "<first@example.com>")]


def test_the_mail_a_bounce_came_in_is_described() -> None:
    """Date, From and Subject as the mail wrote them (for a person to find it)."""
    raw = (DSN / "postfix.eml").read_bytes().replace(
        b"Subject: Undelivered Mail Returned to Sender", b"Subject: =?utf-8?q?Undelivered_=EC=9A=B0=ED=8E=B8?=")
    [bounce] = parse_bounce(BytesParser(policy=email.policy.default).parsebytes(raw))
    assert bounce.mail.subject == "Undelivered 우편"
    assert bounce.mail.sender == "MAILER-DAEMON@mail.example.com (Mail Delivery System)"
    assert bounce.mail.date == "Thu, 27 Nov 2025 10:12:14 +0900 (KST)"


def test_forwarded_bounce_is_not_a_bounce() -> None:
    """A person forwarding a bounce as an attachment: the report is not ours."""
    message = EmailMessage()
    message["From"] = "Kim Minsu <minsu@example.org>"
    message["Subject"] = "Fwd: look what came back"
    message.set_content("See the attached.")
    message.add_attachment(load("postfix.eml"))
    assert parse_bounce(message) == []


# --- mailbox names -----------------------------------------------------------------


@pytest.mark.parametrize(("human", "wire"), [
    ("INBOX", "INBOX"),
    ("Sent Items", "Sent Items"),
    ("&", "&-"),
    ("Tom & Jerry", "Tom &- Jerry"),
    ("보낸메일함", "&vPSwuLpUx3zVaA-"),
    ("~peter/mail/台北/日本語", "~peter/mail/&U,BTFw-/&ZeVnLIqe-"),  # RFC 3501's example
    ("Entwürfe", "Entw&APw-rfe"),
    ("Gelöschte & Entwürfe", "Gel&APY-schte &- Entw&APw-rfe"),
    ("📚 Books", "&2D3c2g- Books"),  # outside the BMP: a surrogate pair
])
def test_modified_utf7_round_trip(human: str, wire: str) -> None:
    assert mutf7_encode(human) == wire
    assert mutf7_decode(wire) == human


def test_modified_utf7_leaves_invalid_names_alone() -> None:
    assert mutf7_decode("Caf&-é") == "Caf&é"  # a server sending UTF-8 as it is
    assert mutf7_decode("&Jjo!") == "&Jjo!"  # "&" never closed
    assert mutf7_decode("&A-") == "&A-"  # not base64 of UTF-16


def test_quote_mailbox() -> None:
    assert quote_folder("Sent Items") == '"Sent Items"'
    assert quote_folder("보낸메일함") == '"&vPSwuLpUx3zVaA-"'
    assert quote_folder('a"b\\c') == '"a\\"b\\\\c"'


def test_parse_list_reply_quoted_literal_and_nil() -> None:
    boxes = parse_list_reply([
        b'(\\HasNoChildren \\Sent) "/" "Sent Items"',
        (b'(\\HasNoChildren) "." {16}', b"&vPSwuLpUx3zVaA-"),
        b"",
        b"(\\Noselect) NIL Archive",
    ])
    assert [(b.name, b.delimiter) for b in boxes] == [("Sent Items", "/"), ("보낸메일함", "."), ("Archive", "")]
    assert "\\sent" in boxes[0].attributes


def test_sent_by_name_prefers_usual_order_and_knows_inbox_prefixes() -> None:
    def boxes(*names: str) -> list[Folder]:
        return [Folder(name, frozenset({"\\hasnochildren"}), ".") for name in names]

    assert find_sent_by_name(boxes("INBOX", "Sent Items", "Sent")) == "Sent"
    assert find_sent_by_name(boxes("INBOX", "INBOX.Sent Items", "Drafts")) == "INBOX.Sent Items"
    assert find_sent_by_name(boxes("INBOX", "INBOX/sent messages")) == "INBOX/sent messages"
    assert find_sent_by_name(boxes("INBOX", "보낸메일함")) == "보낸메일함"
    assert find_sent_by_name(boxes("INBOX", "Sentinel", "Archive/Sent")) is None
    assert find_sent_by_name([Folder("Sent", frozenset({"\\noselect"}), "/")]) is None


# --- no server needed: connection failures never hang --------------------------------


def test_nothing_listening_gives_imap_error() -> None:
    with socket.socket() as probe:
        probe.bind(("127.0.0.1", 0))
        port = probe.getsockname()[1]
    session = ImapSession(ImapConfig("127.0.0.1", port, username=USER, timeout=5), PASSWORD)
    with pytest.raises(ImapError, match="cannot connect"):
        session.open()


def test_silent_server_times_out() -> None:
    """A server that accepts and never greets: an ImapError after the timeout."""
    with socket.socket() as silent:
        silent.bind(("127.0.0.1", 0))
        silent.listen()
        config = ImapConfig("127.0.0.1", silent.getsockname()[1], security="starttls",
                            username=USER, timeout=0.5)
        started = time.monotonic()
        with pytest.raises(ImapError, match="did not answer"):
            ImapSession(config, PASSWORD).open()
        assert time.monotonic() - started < 5


# --- a real Dovecot ------------------------------------------------------------------


@pytest.fixture
def make_server() -> Iterator[type[DovecotServer]]:
    """Start Dovecot servers for a test; their logs are printed (and shown by
    pytest when the test fails), and they are stopped afterwards."""
    started: list[DovecotServer] = []

    class Server(DovecotServer):
        def start(self) -> Server:
            started.append(self)
            return super().start()

    yield Server
    for server in started:
        print(f"--- dovecot log ({server.log_path}) ---\n{server.log()}")
        server.stop()


def config_for(server: DovecotServer, **changes: object) -> ImapConfig:
    config = ImapConfig(server.host, server.port, security="ssl" if server.implicit_tls else "starttls",
                        username=USER, ca_file=server.ca_file, timeout=10)
    for key, value in changes.items():
        setattr(config, key, value)
    return config


def sample_message(date: str = "Thu, 27 Nov 2025 10:12:00 +0900") -> tuple[bytes, str]:
    message = EmailMessage()
    message["From"] = "Book Club <club@example.com>"
    message["To"] = "김민수 <minsu@example.com>"
    message["Subject"] = "김민수님, invoice 007 📚"
    message["Date"] = date
    message["Message-ID"] = "<123.456@example.com>"
    message.set_content("Dear 김민수,\nyour invoice 007 of 42 is due.\n")
    return message.as_bytes(policy=email.policy.SMTP), date


@needs_dovecot
def test_append_lands_in_the_folder_flagged_sent(make_server: type[DovecotServer]) -> None:
    """The \\Sent attribute wins over a folder merely named "Sent"; the copy
    is marked read and dated by its Date header."""
    server = make_server(users={USER: PASSWORD}, special_use=True, sent_name="Gesendete Objekte").start()
    server.create("Sent")
    lines: list[str] = []
    raw, date = sample_message()
    with ImapSession(config_for(server), PASSWORD, log=lines.append) as imap:
        assert "SPECIAL-USE" in imap.capabilities  # refreshed after LOGIN
        folder = imap.sent_folder()
        assert folder == "Gesendete Objekte"
        imap.append(folder, raw, date)
    [(flags, internal_date, stored)] = server.messages("Gesendete Objekte")
    assert "\\Seen" in flags
    assert internal_date == email.utils.parsedate_to_datetime(date)
    assert stored.replace(b"\r\n", b"\n") == raw.replace(b"\r\n", b"\n")
    assert server.messages("Sent") == []
    assert any('LIST (SPECIAL-USE) "" "*"' in line for line in lines)
    assert all(PASSWORD not in line for line in lines)
    assert any("LOGIN" in line and "********" in line for line in lines)


@needs_dovecot
def test_sent_attribute_in_plain_list_without_special_use_capability(make_server: type[DovecotServer]) -> None:
    """Servers that flag \\Sent in a plain LIST but do not announce SPECIAL-USE."""
    server = make_server(users={USER: PASSWORD}, sent_name="Sent Mail Copies").start()
    lines: list[str] = []
    with ImapSession(config_for(server), PASSWORD, log=lines.append) as imap:
        imap.capabilities = imap.capabilities - {"SPECIAL-USE"}
        assert imap.sent_folder() == "Sent Mail Copies"
    assert not any("(SPECIAL-USE)" in line for line in lines)


@needs_dovecot
@pytest.mark.parametrize(("name", "implicit_tls"), [("Sent Items", True), ("보낸메일함", False)])
def test_sent_folder_by_name_without_special_use(
        make_server: type[DovecotServer], name: str, implicit_tls: bool) -> None:
    """No \\Sent attribute anywhere: the folder is found by its usual name,
    and APPEND reaches it (quoted, modified UTF-7). STARTTLS for the second."""
    server = make_server(users={USER: PASSWORD}, special_use=False, sent_name=name,
                         implicit_tls=implicit_tls).start()
    assert all("\\Sent" not in attributes for attributes in server.folders().values())
    raw, date = sample_message()
    with ImapSession(config_for(server), PASSWORD) as imap:
        assert imap.sent_folder("Archive") == "Archive"  # --sent-folder wins, unchecked
        assert imap.sent_folder() == name
        imap.append(name, raw, date)
    [(flags, internal_date, _)] = server.messages(name)
    assert "\\Seen" in flags
    assert internal_date == email.utils.parsedate_to_datetime(date)


@needs_dovecot
def test_no_sent_folder_asks_for_sent_folder_option(make_server: type[DovecotServer]) -> None:
    server = make_server(users={USER: PASSWORD}, special_use=False, sent_name="Outgoing").start()
    with ImapSession(config_for(server), PASSWORD) as imap, \
            pytest.raises(ImapError, match="--sent-folder") as caught:
        imap.sent_folder()
    assert "Outgoing" in str(caught.value)  # the folders it has are listed


@needs_dovecot
def test_append_to_a_missing_folder_says_so(make_server: type[DovecotServer]) -> None:
    server = make_server(users={USER: PASSWORD}).start()
    raw, date = sample_message()
    with ImapSession(config_for(server), PASSWORD) as imap, pytest.raises(ImapError, match="does not exist"):
        imap.append("No Such Folder", raw, date)


@needs_dovecot
def test_find_bounces_returns_failed_recipients_and_marks_nothing_read(
        make_server: type[DovecotServer]) -> None:
    server = make_server(users={USER: PASSWORD}).start()
    for name in FIVE:
        server.put("INBOX", (DSN / name).read_bytes())
    lines: list[str] = []
    with ImapSession(config_for(server), PASSWORD, log=lines.append) as imap:
        bounces = imap.find_bounces(since=dt.date(2025, 11, 27))
        assert imap.find_bounces(since=dt.date(2025, 11, 28)) == []  # SINCE: by arrival day
    assert sorted((b.recipient, b.status, b.references) for b in bounces) == [
        ("jung.obrien@gmail.com", "5.1.1", ("<123.457@example.com>",)),
        ("lost.reader@example.org", "5.1.1", ("<123.456@example.com>",)),
        ("zoe@example.fr", "5.1.1", ("<123.458@example.com>",)),
    ]
    assert {b.diagnostic for b in bounces} == {EXPECTED[n].diagnostic for n in FIVE[:3]}
    assert len({b.uid for b in bounces}) == 3 and all(b.uid.isdigit() for b in bounces)
    stored = server.messages("INBOX")
    assert len(stored) == 5
    assert all("\\Seen" not in flags for flags, _, _ in stored)
    assert any(" EXAMINE " in line for line in lines)
    assert not any(" STORE " in line or " SELECT " in line for line in lines)
    assert not any("(the message" in line for line in lines)  # bodies are not logged


@needs_dovecot
def test_a_big_mail_in_the_inbox_is_read_only_in_part(
        make_server: type[DovecotServer], monkeypatch: pytest.MonkeyPatch) -> None:
    """find_bounces reads the first BOUNCE_BYTES (1 MB) of each message: a
    6 MB mail beside a bounce stays within a reply limit lowered to 4 MB for
    this test, and the bounce is still found."""
    monkeypatch.setattr(mailmerge.imap.session, "MAX_REPLY_BYTES", 4 << 20)
    server = make_server(users={USER: PASSWORD}).start()
    line = b"x" * 76 + b"\r\n"
    server.put("INBOX", b"From: a@example.org\r\nSubject: holiday photos\r\n"
                        b"Date: Thu, 27 Nov 2025 10:00:00 +0900\r\n\r\n" + line * ((6 << 20) // len(line)))
    server.put("INBOX", (DSN / "postfix.eml").read_bytes())
    with ImapSession(config_for(server), PASSWORD) as imap:
        bounces = imap.find_bounces(since=dt.date(2025, 11, 1))
    assert [(b.recipient, b.references) for b in bounces] == [("zoe@example.fr", ("<123.458@example.com>",))]


@needs_dovecot
@pytest.mark.parametrize("has_move", [True, False], ids=["MOVE", "COPY+EXPUNGE"])
def test_move_bounces(make_server: type[DovecotServer], has_move: bool) -> None:
    """--move-to: the bounces leave INBOX; the other messages, and a message
    the user had flagged \\Deleted, stay."""
    server = make_server(users={USER: PASSWORD}).start()
    server.create("Bounces")
    for name in FIVE:
        server.put("INBOX", (DSN / name).read_bytes())
    server.put("INBOX", b"From: a@example.org\r\nSubject: keep\r\n\r\nmarked by the user\r\n", ["\\Deleted"])
    lines: list[str] = []
    with ImapSession(config_for(server), PASSWORD, log=lines.append) as imap:
        if not has_move:
            imap.capabilities = imap.capabilities - {"MOVE"}
        bounces = imap.find_bounces(since=dt.date(2025, 11, 1))
        imap.move([b.uid for b in bounces], "Bounces")
        imap.move([], "Bounces")  # nothing to do
    moved = [parse_bounce(BytesParser(policy=email.policy.default).parsebytes(raw))
             for _, _, raw in server.messages("Bounces")]
    assert sorted(b.recipient for found in moved for b in found) == [
        "jung.obrien@gmail.com", "lost.reader@example.org", "zoe@example.fr"]
    assert len(server.messages("INBOX")) == 3
    commands = " ".join(line.split(" ", 2)[2] for line in lines if line.startswith("C: "))
    assert ("UID MOVE" in commands) == has_move
    assert ("UID COPY" in commands and "UID EXPUNGE" in commands) == (not has_move)


@needs_dovecot
def test_non_ascii_password_logs_in_with_authenticate_plain(make_server: type[DovecotServer]) -> None:
    """LOGIN cannot carry UTF-8; AUTHENTICATE PLAIN can. The secret stays masked."""
    password = "책-비밀번호-Pa55!"
    server = make_server(users={USER: password}).start()
    lines: list[str] = []
    with ImapSession(config_for(server), password, log=lines.append) as imap:
        assert imap.sent_folder() == "Sent"
    assert any("AUTHENTICATE PLAIN" in line for line in lines)
    assert any(line.endswith("********") for line in lines)
    encoded = base64.b64encode(f"\0{USER}\0{password}".encode()).decode()
    assert all(password not in line and encoded not in line for line in lines)


@needs_dovecot
def test_wrong_password_gives_the_servers_words(make_server: type[DovecotServer]) -> None:
    server = make_server(users={USER: PASSWORD}).start()
    wrong = "not-the-Pa55word!"
    lines: list[str] = []
    started = time.monotonic()
    with pytest.raises(ImapError) as caught:
        ImapSession(config_for(server), wrong, log=lines.append).open()
    assert time.monotonic() - started < 10
    text = str(caught.value)
    assert "refused the login for club@example.com" in text
    assert "Authentication failed" in text  # Dovecot's own words
    assert wrong not in text and wrong not in repr(caught.value.__cause__)
    assert all(wrong not in line for line in lines)
    assert caught.value.exit_code == 1


@needs_dovecot
@pytest.mark.parametrize("implicit_tls", [True, False], ids=["ssl", "starttls"])
def test_untrusted_certificate_hints_ca_file(make_server: type[DovecotServer], implicit_tls: bool) -> None:
    server = make_server(users={USER: PASSWORD}, implicit_tls=implicit_tls).start()
    lines: list[str] = []
    with pytest.raises(ImapError, match="ca_file") as caught:
        ImapSession(config_for(server, ca_file=None), PASSWORD, log=lines.append).open()
    assert "certificate" in str(caught.value)
    assert not any(line.startswith("C:") and " LOGIN " in line for line in lines)  # no password sent


@needs_dovecot
def test_missing_ca_file_is_named(make_server: type[DovecotServer], tmp_path: Path) -> None:
    server = make_server(users={USER: PASSWORD}).start()
    with pytest.raises(ImapError, match="ca_file .*missing.pem"):
        ImapSession(config_for(server, ca_file=tmp_path / "missing.pem"), PASSWORD).open()
