"""People switching from awdeorio/mailmerge bring their three files; they work
unchanged: `mailmerge send mailmerge_database.csv -t mailmerge_template.txt
--config mailmerge_server.conf`. (Our own files, written in its format.)"""

from __future__ import annotations

import shutil
from pathlib import Path

from conftest import PASSWORD, USER, run_cli
from smtp_server import SmtpTestServer

from mailmerge.config.file import load_config

DATA = Path(__file__).parent / "data"

DATABASE = 'email,name,number\nann@example.com,"Ann",17\nbob@example.com,"Bob, Jr.",42\n'

PLAIN = """\
TO: {{email}}
SUBJECT: Testing mailmerge
FROM: My Self <myself@example.com>
CC: office@example.com
BCC: archive@example.com
ATTACHMENT: invoice.pdf

Hi, {{name}},

Your number is {{number}}.
"""

MARKDOWN = """\
TO: {{email}}
SUBJECT: Testing mailmerge
FROM: My Self <myself@example.com>
CONTENT-TYPE: text/markdown

Hi, **{{name}}**,

- Emphasis, aka italics, with *asterisks*.
- Your number is {{number}}.
"""

MULTIPART = """\
TO: {{email}}
SUBJECT: Testing mailmerge
FROM: My Self <myself@example.com>
MIME-Version: 1.0
Content-Type: multipart/alternative; boundary="boundary"

This is a MIME-encoded message. If you are seeing this, your mail
reader is old.

--boundary
Content-Type: text/plain; charset=us-ascii

Hi, {{name}},

Your number is {{number}}.

--boundary
Content-Type: text/html; charset=us-ascii

<html>
  <body>
    <p>Hi, {{name}},</p>
    <p>Your number is {{number}}.</p>
  </body>
</html>

--boundary--
"""


def server_conf(server: SmtpTestServer, security: str | None, username: str | None = None) -> str:
    lines = ["[smtp_server]", f"host = {server.host}", f"port = {server.port}"]
    if security:
        lines.append(f"security = {security}")
    if username:
        lines.append(f"username = {username}")
    lines.append("ratelimit = 0")
    return "\n".join(lines) + "\n"


def merge(folder: Path, template: str, server: SmtpTestServer, conf: str, **env: str) -> tuple[int, str]:
    (folder / "mailmerge_template.txt").write_text(template, encoding="utf-8")
    (folder / "mailmerge_database.csv").write_text(DATABASE, encoding="utf-8")
    (folder / "mailmerge_server.conf").write_text(conf, encoding="utf-8")
    shutil.copy(DATA / "invoice.pdf", folder / "invoice.pdf")
    run = run_cli(
        "send", folder / "mailmerge_database.csv", "-t", folder / "mailmerge_template.txt",
        "--config", folder / "mailmerge_server.conf", "--yes", env=env,
    )
    return run.exit_code, run.output


def test_plain_template_with_upper_case_headers_cc_bcc_and_attachment(tmp_path: Path) -> None:
    with SmtpTestServer() as server:
        code, output = merge(tmp_path, PLAIN, server, server_conf(server, "Never"))

    assert code == 0, output
    first, second = (m.message for m in server.messages)
    assert server.messages[0].rcpt_tos == ["ann@example.com", "office@example.com", "archive@example.com"]
    assert first["Subject"] == "Testing mailmerge" and first["Cc"] == "office@example.com"
    assert first["Bcc"] is None
    assert first.get_body(("plain",)).get_content() == "Hi, Ann,\n\nYour number is 17.\n"
    assert second.get_body(("plain",)).get_content().startswith("Hi, Bob, Jr.,")
    assert next(first.iter_attachments()).get_filename() == "invoice.pdf"
    assert server.auth_attempts == 0  # "Never": no login


def test_markdown_template(tmp_path: Path) -> None:
    with SmtpTestServer() as server:
        code, output = merge(tmp_path, MARKDOWN, server, server_conf(server, None))

    assert code == 0, output
    message = server.messages[0].message
    assert message.get_content_type() == "multipart/alternative"
    plain = message.get_body(("plain",)).get_content()
    assert "Hi, Ann," in plain and "with asterisks." in plain  # readable text, not the Markdown source
    html = message.get_body(("html",)).get_content()
    assert "<strong>Ann</strong>" in html and "<em>asterisks</em>" in html


def test_hand_written_multipart_alternative_template(tmp_path: Path) -> None:
    with SmtpTestServer() as server:
        code, output = merge(tmp_path, MULTIPART, server, server_conf(server, None))

    assert code == 0, output
    message = server.messages[1].message
    assert message.get_body(("plain",)).get_content() == "Hi, Bob, Jr.,\n\nYour number is 42.\n"
    assert "<p>Your number is 42.</p>" in message.get_body(("html",)).get_content()
    assert "your mail\nreader is old" not in message.get_body(("plain",)).get_content()


def test_starttls_with_a_login(tmp_path: Path) -> None:
    with SmtpTestServer(tls=True, auth={USER: PASSWORD}) as server:
        assert server.ca_file is not None
        code, output = merge(
            tmp_path, PLAIN, server, server_conf(server, "STARTTLS", USER),
            MAILMERGE_SMTP_CA_FILE=str(server.ca_file),
        )
    assert code == 0, output
    assert (server.connections, server.starttls_count, server.auth_attempts) == (1, 1, 1)


def test_plain_security_logs_in_without_tls_and_warns(tmp_path: Path) -> None:
    with SmtpTestServer(auth={USER: PASSWORD}) as server:
        code, output = merge(tmp_path, PLAIN, server, server_conf(server, "PLAIN", USER))
    assert code == 0, output
    assert server.auth_successes == 1
    assert "goes to 127.0.0.1 without encryption" in output


def test_ratelimit_is_messages_per_minute(tmp_path: Path) -> None:
    conf = tmp_path / "mailmerge_server.conf"
    conf.write_text("[smtp_server]\nhost = smtp.example.com\nport = 465\nsecurity = SSL/TLS\nusername = me\nratelimit = 30\n")
    config = load_config(conf)
    assert (config.smtp.security, config.smtp.port, config.smtp.username) == ("ssl", 465, "me")
    assert config.send.rate == 2.0  # 30 a minute: one every 2 seconds
