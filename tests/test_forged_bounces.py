"""Forged bounces (issue 12, item 3): anyone can put a mail in the inbox that
looks like a bounce. Only a delivery status report that references a message
this campaign sent, for a recipient of that message, may mark an address
``bounced``; the rest is listed as "possible bounce, not applied".

The mails are put in a real Dovecot mailbox, as an attacker would get them
there: by sending them. The campaign goes through a real SMTP server first, so
the Message-IDs in the journal are the ones that went out.
"""

from __future__ import annotations

import csv
import email.policy
import email.utils
import json
import sqlite3
from collections.abc import Iterator
from dataclasses import dataclass
from email.parser import BytesParser
from pathlib import Path

import pytest
from conftest import run_cli, write_config, write_template, write_xlsx
from imap_server import DovecotServer, dovecot_binary
from smtp_server import SmtpTestServer

from mailmerge.imap.session import parse_bounce

pytestmark = pytest.mark.skipif(dovecot_binary() is None, reason="dovecot is not installed (apt-get install -y dovecot-imapd)")

USER, IMAP_PASSWORD = "club@example.com", "imap-Pa55!"
ENV = {"MAILMERGE_IMAP_PASSWORD": IMAP_PASSWORD}
TEMPLATE = "From: Club <club@example.com>\nSubject: News for {{ name }}\nTo: {{ name }} <{{ email }}>\n\nHello {{ name }}\n"
ROWS = [("김민수", "minsu@example.com"), ("Ann", "ann@example.com"), ("Bob", "bob@example.com")]


def dsn(recipient: str, original_headers: str, *, subject: str = "Undelivered Mail Returned to Sender",
        sender: str = "Mail Delivery System <MAILER-DAEMON@mx.example.net>", extra: str = "") -> bytes:
    """A delivery status notification (RFC 3464) saying ``recipient``
    failed, with ``original_headers`` as its text/rfc822-headers part."""
    return (
        f"From: {sender}\r\nTo: club@example.com\r\nSubject: {subject}\r\n"
        f"Date: {email.utils.formatdate(localtime=True)}\r\n{extra}MIME-Version: 1.0\r\n"
        'Content-Type: multipart/report; report-type=delivery-status; boundary="B"\r\n\r\n'
        "--B\r\nContent-Type: text/plain\r\n\r\nYour message could not be delivered.\r\n"
        "--B\r\nContent-Type: message/delivery-status\r\n\r\n"
        "Reporting-MTA: dns; mx.example.net\r\n\r\n"
        f"Final-Recipient: rfc822; {recipient}\r\nAction: failed\r\nStatus: 5.1.1\r\n"
        f"Diagnostic-Code: smtp; 550 5.1.1 <{recipient}>: Recipient address rejected: User unknown\r\n"
        f"--B\r\nContent-Type: text/rfc822-headers\r\n\r\n{original_headers}"
        "--B--\r\n"
    ).encode()


def plain(headers: str, body: str) -> bytes:
    """An ordinary mail with ``headers`` (each ending in CRLF) and ``body``."""
    return (f"Date: {email.utils.formatdate(localtime=True)}\r\n{headers}\r\n{body}").encode()


@dataclass
class Campaign:
    folder: Path
    xlsx: Path
    template: Path
    imap: DovecotServer
    sent: dict[str, str]  # address -> the Message-ID that went out to it

    def run(self, command: str, *extra: str) -> tuple[int, str]:
        result = run_cli(command, self.xlsx, "-t", self.template, *extra, env=ENV)
        return result.exit_code, result.output

    def status(self) -> dict[str, int]:
        """The counts ``mailmerge status`` shows."""
        result = run_cli("status", self.xlsx, "-t", self.template, "--json", env=ENV)
        assert result.exit_code == 0, result.output
        return dict(json.loads(result.stdout)["counts"])

    def report(self) -> dict[str, dict[str, str]]:
        with (self.folder / "list.report.csv").open(encoding="utf-8-sig") as handle:
            return {row["address"]: row for row in csv.DictReader(handle)}

    def journal(self) -> dict[str, tuple[object, ...]]:
        """Every line of the journal (any campaign), by address, as stored."""
        path = self.folder / ".mailmerge" / "journal.sqlite3"
        with sqlite3.connect(path) as db:
            lines = db.execute("SELECT address, state, code, reason, message_id FROM deliveries").fetchall()
        return {line[0]: line[1:] for line in lines}


@pytest.fixture
def campaign(tmp_path: Path) -> Iterator[Campaign]:
    """Three rows sent through a real SMTP server, with [imap] on a real Dovecot."""
    with DovecotServer(users={USER: IMAP_PASSWORD}) as imap, SmtpTestServer() as smtp:
        xlsx = write_xlsx(tmp_path / "list.xlsx", ("name", "email"), ROWS)
        template = write_template(tmp_path / "t.txt", TEMPLATE)
        config = write_config(tmp_path, smtp, security="none", username=None)
        config.write_text(config.read_text() + "\n".join([
            "", "[imap]", f'host = "{imap.host}"', f"port = {imap.port}", 'security = "ssl"',
            f'username = "{USER}"', f'ca_file = "{imap.ca_file}"', "timeout = 5", "",
        ]))
        result = run_cli("send", xlsx, "-t", template, "--yes", env=ENV)
        assert result.exit_code == 0, result.output
        sent = {m.rcpt_tos[0]: str(m.message["Message-ID"]) for m in smtp.messages}
        assert len(sent) == 3
        yield Campaign(tmp_path, xlsx, template, imap, sent)


def test_only_a_report_referencing_our_message_for_its_recipient_is_applied(campaign: Campaign) -> None:
    ann, bob, minsu = (campaign.sent[a] for a in ("ann@example.com", "bob@example.com", "minsu@example.com"))
    forged = {
        # A report naming a recipient of the list, about no message at all...
        "Forged A": dsn("ann@example.com", "From: club@example.com\r\nTo: ann@example.com\r\nSubject: News\r\n",
                        subject="Forged A"),
        # ... or about one we never sent (a Message-ID of our own domain, made up).
        "Forged B \x1b[2J\x1b]0;pwned\x07": dsn(
            "ann@example.com", "From: club@example.com\r\nMessage-ID: <1764000000.1234.5678@example.com>\r\n",
            subject="Forged B \x1b[2J\x1b]0;pwned\x07", sender="Eve \x1b[31m<eve@example.org>"),
        # A report about Ann's message that names Bob, who was not a recipient of it.
        "Forged C": dsn("bob@example.com", f"From: club@example.com\r\nTo: ann@example.com\r\nMessage-ID: {ann}\r\n",
                        subject="Forged C"),
        # A customer's reply to her own message, with a bounce's subject and words.
        "Undeliverable: News for Ann": plain(
            f"From: Ann <ann@example.com>\r\nTo: club@example.com\r\nSubject: Undeliverable: News for Ann\r\n"
            f"In-Reply-To: {ann}\r\nReferences: {ann}\r\n",
            "Please stop. Your mail is undeliverable to me:\r\n\r\n<ann@example.com>: said: 550 5.1.1 go away\r\n"),
        # Any mail with X-Failed-Recipients.
        "Hello": plain("From: Mallory <mallory@example.org>\r\nTo: club@example.com\r\nSubject: Hello\r\n"
                       "X-Failed-Recipients: bob@example.com\r\n", "550 5.1.1 no such user\r\n"),
    }
    for raw in forged.values():
        campaign.imap.put("INBOX", raw)
    # The genuine one: Minsu's message came back, and says so in the standard places.
    campaign.imap.put("INBOX", dsn("minsu@example.com", f"From: club@example.com\r\nTo: minsu@example.com\r\n"
                                   f"Message-ID: {minsu}\r\nSubject: News\r\n",
                                   extra=f"In-Reply-To: {minsu}\r\n"))
    campaign.imap.create("Bounces")
    journal_before, status_before = campaign.journal(), campaign.status()

    code, output = campaign.run("bounces", "--since", "2d", "--move-to", "Bounces")

    assert code == 0, output
    journal_after = campaign.journal()
    assert journal_after["minsu@example.com"][:2] == ("bounced", 550)
    assert "5.1.1" in str(journal_after["minsu@example.com"][2])
    for address in ("ann@example.com", "bob@example.com"):
        assert journal_after[address] == journal_before[address], address  # not a byte changed
    report = campaign.report()
    assert {a: row["status"] for a, row in report.items()} == {
        "minsu@example.com": "bounced", "ann@example.com": "sent", "bob@example.com": "sent"}
    status_after = campaign.status()
    assert status_before["sent"] == 3 and status_before["bounced"] == 0
    assert status_after == {**status_before, "sent": 2, "bounced": 1}

    assert "row 2: bounced minsu@example.com: 5.1.1" in output  # the row in Excel, under the header
    assert "1 bounces of this campaign" in output
    assert "5 possible bounces not applied" in output
    possible = [line for line in output.splitlines() if line.startswith("possible bounce, not applied: ")]
    assert len(possible) == 5, output
    for subject in ("Forged A", "Forged C", "Undeliverable: News for Ann", "Hello"):
        [line] = [line for line in possible if f'subject "{subject}"' in line]
        date = str(BytesParser(policy=email.policy.default).parsebytes(forged[subject])["Date"])
        assert date in line
    [a] = [line for line in possible if 'subject "Forged A"' in line]
    assert "ann@example.com (it references no message this campaign sent to that address)" in a
    assert "the mail from Mail Delivery System <MAILER-DAEMON@mx.example.net>" in a
    [c] = [line for line in possible if 'subject "Forged C"' in line]
    assert "bob@example.com (it references no message this campaign sent to that address)" in c
    [reply] = [line for line in possible if "Undeliverable" in line]
    assert "ann@example.com (not a delivery status report): the mail from Ann <ann@example.com>" in reply
    [hello] = [line for line in possible if 'subject "Hello"' in line]
    assert "bob@example.com (not a delivery status report): the mail from Mallory <mallory@example.org>" in hello
    # The attacker's escape sequences are shown, not obeyed.
    [b] = [line for line in possible if "Forged B" in line]
    assert 'from Eve \\x1b[31m<eve@example.org>' in b and 'subject "Forged B \\x1b[2J\\x1b]0;pwned\\x07"' in b
    assert "\x1b" not in output and "\x07" not in output

    # Only the genuine one was moved; what may be forged stays where the person will look.
    moved = campaign.imap.messages("Bounces")
    assert [parse_bounce(BytesParser(policy=email.policy.default).parsebytes(raw))[0].recipient
            for _, _, raw in moved] == ["minsu@example.com"]
    assert len(campaign.imap.messages("INBOX")) == 5


def test_json_lists_the_possible_bounces(campaign: Campaign) -> None:
    campaign.imap.put("INBOX", plain(
        "From: Mallory <mallory@example.org>\r\nTo: club@example.com\r\nSubject: Hello \x1b[2J\r\n"
        "X-Failed-Recipients: bob@example.com\r\n", "550 5.1.1 no such user\r\n"))
    result = run_cli("bounces", campaign.xlsx, "-t", campaign.template, "--since", "2d", "--json", env=ENV)

    assert result.exit_code == 0, result.output
    document = json.loads(result.stdout)
    assert document["bounces"] == 0 and document["bounced"] == []
    [possible] = document["possible_bounces"]
    assert possible["address"] == "bob@example.com"
    assert possible["why"] == "not a delivery status report"
    assert possible["from"] == "Mallory <mallory@example.org>"
    assert possible["subject"] == "Hello \\x1b[2J"
    assert campaign.report()["bob@example.com"]["status"] == "sent"
