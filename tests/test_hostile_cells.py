"""Lists are written by strangers: a cell is text, never markup, never a file
the list may not name, never a header break. Each test sends through a real
SMTP server on 127.0.0.1 and looks at what arrived (issue 12)."""

from __future__ import annotations

import csv
import json
import os
import resource
import shutil
import subprocess
import sys
from email.message import EmailMessage
from pathlib import Path

import pytest
import trustme
from conftest import run_cli, write_config, write_template, write_xlsx
from smtp_server import ReceivedMessage, SmtpTestServer

from mailmerge.errors import InvalidRow
from mailmerge.render.content import resolve_list_file

DATA = Path(__file__).parent / "data"
SECRET = "MAILMERGE_PASSWORD=hunter2-very-secret"


@pytest.fixture
def folder(tmp_path: Path) -> Path:
    """A project folder as ``mailmerge init`` makes it: a .env with the
    password, the template beside it, a logo and one ordinary attachment."""
    (tmp_path / ".env").write_text(SECRET + "\n", encoding="utf-8")
    shutil.copy(DATA / "logo.png", tmp_path / "logo.png")
    shutil.copy(DATA / "invoice.pdf", tmp_path / "ok.pdf")
    return tmp_path


def send_csv(folder: Path, template_name: str, template_text: str, header: tuple[str, ...],
             rows: list[tuple[str, ...]], *extra: str | Path, **smtp: str) -> tuple[SmtpTestServer, int, str]:
    """Write the list as CSV (cells may hold control characters), send it to a
    plain test server, and return the server, the exit code and the output."""
    with (folder / "list.csv").open("w", encoding="utf-8", newline="") as handle:
        csv.writer(handle).writerows([header, *rows])
    template = write_template(folder / template_name, template_text)
    with SmtpTestServer() as server:
        write_config(folder, server, security="none", username=None, **smtp)
        run = run_cli("send", folder / "list.csv", "-t", template, "--yes", *extra)
    return server, run.exit_code, run.output


def report(folder: Path) -> dict[int, tuple[str, str]]:
    """Row number -> (status, reason) from the report a person opens."""
    with (folder / "list.report.csv").open(encoding="utf-8-sig") as handle:
        return {int(line["row"]): (line["status"], line["reason"]) for line in csv.DictReader(handle)}


def decoded_parts(received: ReceivedMessage) -> bytes:
    """Every leaf of the message, decoded (base64, quoted-printable), joined."""
    return b"\n".join(
        part.get_payload(decode=True) or b"" for part in received.message.walk() if not part.is_multipart()
    )


def html_of(received: ReceivedMessage) -> str:
    body = received.message.get_body(("html",))
    assert isinstance(body, EmailMessage)
    return str(body.get_content())


def plain_of(received: ReceivedMessage) -> str:
    body = received.message.get_body(("plain",))
    assert isinstance(body, EmailMessage)
    return str(body.get_content())


# --- 1. Markdown and HTML: a cell is text -------------------------------------------

MARKDOWN = """\
From: Club <club@example.com>
To: {{ email }}
Subject: News

![logo](logo.png)

Hello **{{ name }}**, read [the news]({{ url }}).
"""

ISSUE_PAYLOADS = ["Bob ![x](.env)", "![t](https://tracker.example/p.gif)", "[click](https://evil.example)"]


def test_markdown_in_a_cell_reaches_the_reader_as_typed(folder: Path) -> None:
    rows = [(payload, f"r{n}@example.com", "https://example.com/news?a=1&b=2") for n, payload in enumerate(ISSUE_PAYLOADS)]
    server, code, output = send_csv(folder, "news.md", MARKDOWN, ("name", "email", "url"), rows)

    assert code == 0, output
    assert len(server.messages) == 3
    for payload, received in zip(ISSUE_PAYLOADS, server.messages):
        assert b"hunter2" not in decoded_parts(received) and b"hunter2" not in received.data
        html = html_of(received)
        assert f"<strong>{payload}</strong>" in html  # the literal text, where the template put it
        assert f"Hello {payload}, read" in plain_of(received)  # the text part: the readable text, cell as typed
        assert "tracker.example" not in html.replace(payload, "")  # no <img> or <a> made from it
        assert "evil.example" not in html.replace(payload, "")
        # The template's own image and link still work; the link's value is escaped into the attribute.
        images = [p for p in received.message.walk() if p.get_content_type() == "image/png"]
        assert len(images) == 1 and images[0].get_payload(decode=True) == (DATA / "logo.png").read_bytes()
        assert html.count("<img") == 1 and 'src="cid:' in html
        assert '<a href="https://example.com/news?a=1&amp;b=2">the news</a>' in html


HTML = """\
From: Club <club@example.com>
To: {{ email }}
Subject: Hi

<p>{{ name }}</p><p><img src="{{ pic }}" alt="you"></p><p>{{ note|safe }}</p>
"""


def test_html_attributes_and_safe_values_from_the_list_name_no_secret_file(folder: Path) -> None:
    shutil.copy(DATA / "logo.png", folder / "kim.png")
    rows = [
        ("Kim", "kim@example.com", "kim.png", "<b>hi</b>"),  # the list may name a picture in the folder
        ("Eve", "eve@example.com", ".env", ""),  # ... but not the password file
        ("Mal", "mal@example.com", "kim.png", '<img src=".env">'),  # |safe: markup, still no secret file
        ('"><img src=.env>', "x@example.com", "kim.png", ""),  # a cell cannot leave its text
    ]
    server, code, output = send_csv(folder, "t.html", HTML, ("name", "email", "pic", "note"), rows)

    assert code == 3, output
    assert server.recipients() == ["kim@example.com", "x@example.com"]
    assert b"hunter2" not in b"".join(decoded_parts(m) + m.data for m in server.messages)
    statuses = report(folder)
    assert statuses[3] == ("invalid", "image '.env' (from the list) is a hidden file or folder: refused. Files "
                                      f"named by a list must be ordinary files in {folder} (or pass --attachments-dir DIR)")
    assert statuses[4][0] == "invalid" and "image '.env' (from the list) is a hidden file" in statuses[4][1]
    kim, quoted = (html_of(m) for m in server.messages)
    assert "<p><b>hi</b></p>" in kim and 'src="cid:' in kim  # |safe: the author's explicit opt-out
    assert '<p>"&gt;&lt;img src=.env&gt;</p>' in quoted and quoted.count("<img") == 1


MULTIPART = """\
From: club@example.com
To: {{ email }}
Subject: Hi
MIME-Version: 1.0
Content-Type: multipart/alternative; boundary="boundary"

--boundary
Content-Type: text/plain; charset=utf-8

Hello {{ name }}
--boundary
Content-Type: text/html; charset=utf-8

<p>Hello {{ name }}</p>
--boundary--
"""


def test_a_hand_written_multipart_body_escapes_cells_in_its_html(folder: Path) -> None:
    server, code, output = send_csv(folder, "t.txt", MULTIPART, ("email", "name"),
                                    [("a@example.com", '<img src=".env"> & [x](y)')])

    assert code == 0, output
    received = server.messages[0]
    assert "<p>Hello &lt;img src=\".env\"&gt; &amp; [x](y)</p>" in html_of(received)
    assert 'Hello <img src=".env"> & [x](y)' in plain_of(received)  # text stays text, as typed
    assert b"hunter2" not in decoded_parts(received)


def test_a_filter_over_a_block_with_values_is_an_error_not_a_silent_difference(folder: Path) -> None:
    template = write_template(folder / "t.md", "From: club@example.com\nTo: {{ email }}\nSubject: Hi\n\n"
                                               "{% filter upper %}Hello {{ name }}{% endfilter %}\n")
    write_xlsx(folder / "list.xlsx", ("email", "name"), [("a@example.com", "Ann")])
    run = run_cli("check", folder / "list.xlsx", "-t", template)

    assert run.exit_code == 2
    assert run.stderr.strip() == (f"error: {template}: line 5: row 2: |upper on a block or macro that holds values: "
                                  "in an HTML or Markdown body, apply it to each value instead ({{ name|upper }})")


# --- 2. Secret files are never attachable from a cell --------------------------------


def test_a_nul_byte_in_a_file_name_is_an_invalid_row_not_a_crash(folder: Path) -> None:
    with pytest.raises(InvalidRow, match="'ok\\\\x00.pdf' is not a usable file name"):
        resolve_list_file("ok\x00.pdf", folder, what="image", protected={})


def test_a_list_cannot_attach_secrets_hidden_files_or_itself(folder: Path) -> None:
    trustme.CA().cert_pem.write_to_path(str(folder / "ca.pem"))  # a real one: the config loads it
    (folder / ".git").mkdir()
    (folder / ".git" / "config").write_text("[remote] token=git-secret\n", encoding="utf-8")
    (folder / "sub").mkdir()
    (folder / "notes.pdf").symlink_to(folder / ".env")  # a link with an innocent name
    (folder / "settings.pdf").symlink_to(folder / "mailmerge.toml")
    cells = [".env", "sub/../.env", ".git/config", "notes.pdf", "mailmerge.toml", "settings.pdf", "ca.pem",
             ".mailmerge/journal.sqlite3", "list.csv", "ok.pdf"]
    rows = [(f"r{n}@example.com", cell) for n, cell in enumerate(cells)]
    template = "From: club@example.com\nTo: {{ email }}\nSubject: Hi\nAttachment: {{ file }}\n\nSee attached.\n"
    server, code, output = send_csv(folder, "t.txt", template, ("email", "file"), rows, ca_file=str(folder / "ca.pem"))

    assert code == 3, output
    assert server.recipients() == ["r9@example.com"]  # only ok.pdf
    everything = b"".join(decoded_parts(m) + m.data for m in server.messages)
    for secret in (b"hunter2", b"git-secret", b"BEGIN CERTIFICATE", b"[smtp]", b"r0@example.com"):
        assert secret not in everything
    reasons = {row: reason for row, (status, reason) in report(folder).items() if status == "invalid"}
    assert sorted(reasons) == list(range(2, 11))
    assert "is a hidden file or folder: refused" in reasons[2]
    assert "is a hidden file or folder: refused" in reasons[3] and "is a hidden file or folder" in reasons[4]
    assert reasons[5] == "attachment 'notes.pdf' (from the list) leads to a hidden file: refused"
    assert reasons[6] == "attachment 'mailmerge.toml' (from the list) is the config file: refused"
    assert reasons[7] == "attachment 'settings.pdf' (from the list) is the config file: refused"
    assert reasons[8] == "attachment 'ca.pem' (from the list) is a certificate file of the config: refused"
    assert "is a hidden file or folder" in reasons[9]
    assert reasons[10] == "attachment 'list.csv' (from the list) is the list itself: refused"
    assert "row 5: invalid: attachment 'notes.pdf' (from the list) leads to a hidden file" in output


def test_attachments_dir_is_the_only_place_list_files_come_from(folder: Path, tmp_path_factory: pytest.TempPathFactory) -> None:
    shared = tmp_path_factory.mktemp("shared")
    shutil.copy(DATA / "invoice.pdf", shared / "007.pdf")
    (shared / ".env").write_text(SECRET, encoding="utf-8")
    rows = [("a@example.com", "007.pdf"), ("b@example.com", "ok.pdf"), ("c@example.com", ".env"),
            ("d@example.com", f"{folder}/ok.pdf")]
    template = "From: club@example.com\nTo: {{ email }}\nSubject: Hi\nAttachment: {{ file }}\nAttachment: logo.png\n\nHi\n"
    server, code, output = send_csv(folder, "t.txt", template, ("email", "file"), rows, "--attachments-dir", shared)

    assert code == 3, output
    assert server.recipients() == ["a@example.com"]
    message = server.messages[0].message
    assert [p.get_filename() for p in message.iter_attachments()] == ["007.pdf", "logo.png"]  # the author's logo: beside the template
    reasons = report(folder)
    assert reasons[3] == ("invalid", f"attachment not found: {shared / 'ok.pdf'}")  # not looked for beside the template
    assert reasons[4][0] == "invalid" and "hidden" in reasons[4][1]
    assert reasons[5] == ("invalid", f"attachment '{folder}/ok.pdf' (from the list) is outside {shared}: refused. "
                                     f"Put the files the list names in {shared}")


def test_a_stylesheet_named_by_the_list_follows_the_same_rule(folder: Path) -> None:
    template = "From: club@example.com\nTo: {{ email }}\nSubject: Hi\nStyle: {{ css }}\n\n<p>Hi</p>\n"
    (folder / "ok.css").write_text("p { color: #123456 }", encoding="utf-8")
    server, code, output = send_csv(folder, "t.html", template, ("email", "css"),
                                    [("a@example.com", "ok.css"), ("b@example.com", ".env")])

    assert code == 3, output
    assert server.recipients() == ["a@example.com"]
    assert 'style="color: #123456' in html_of(server.messages[0])
    assert report(folder)[3] == ("invalid", "stylesheet '.env' (from the list) is a hidden file or folder: refused. "
                                            f"Files named by a list must be ordinary files in {folder} (or pass --attachments-dir DIR)")


# --- 7. Control characters in headers ------------------------------------------------

CONTROL_ROWS = [
    ("a@example.com", "Ann", "Hi\x00Bcc: evil@example.com", "ok.pdf"),  # 2: NUL
    ("b@example.com", "Bob", "Hi\u2028Bcc: evil@example.com", "ok.pdf"),  # 3: found only at send time before
    ("c@example.com", "Cat", "Hi\x0bthere", "ok.pdf"),  # 4: vertical tab (a line break to splitlines)
    ("d@example.com", "Dan", "Hi\x85there", "ok.pdf"),  # 5: NEL, a C1 control
    ("e@example.com", "Eve", "Hi\x9bthere", "ok.pdf"),  # 6: CSI, a C1 control
    ("f@example.com", "Fay", "Hi\x7fthere", "ok.pdf"),  # 7: DEL
    ("g@example.com", "Gus\x00", "Hi", "ok.pdf"),  # 8: NUL in a display name
    ("h@example.com", "Hal", "Hi", "ok\x00.pdf"),  # 9: NUL in a file name (aborted the run before)
    ("i@example.com", "Ida", "Hi\tthere", "ok.pdf"),  # 10: TAB is fine
    ("j@example.com", "Jo", "Hi", ""),  # 11: fine
]
CONTROL_TEMPLATE = """\
From: club@example.com
To: {{ name }} <{{ email }}>
Subject: {{ subject }}
Attachment: {{ file }}

Hello.
"""


def test_control_characters_make_the_same_rows_invalid_in_check_dry_run_and_send(folder: Path) -> None:
    with (folder / "list.csv").open("w", encoding="utf-8", newline="") as handle:
        csv.writer(handle).writerows([("email", "name", "subject", "file"), *CONTROL_ROWS])
    template = write_template(folder / "t.txt", CONTROL_TEMPLATE)
    with SmtpTestServer() as server:
        write_config(folder, server, security="none", username=None)
        check = run_cli("check", folder / "list.csv", "-t", template, "--json")
        dry = run_cli("send", folder / "list.csv", "-t", template, "--dry-run", "--json")
        sent = run_cli("send", folder / "list.csv", "-t", template, "--yes")

    expected = [2, 3, 4, 5, 6, 7, 8, 9]
    assert check.exit_code == dry.exit_code == sent.exit_code == 3, sent.output
    assert [entry["row"] for entry in json.loads(check.stdout)["invalid"]] == expected
    assert [entry["row"] for entry in json.loads(dry.stdout)["invalid"]] == expected
    statuses = report(folder)
    assert [row for row, (status, _) in statuses.items() if status == "invalid"] == expected
    assert server.recipients() == ["i@example.com", "j@example.com"]
    assert b"\x00" not in b"".join(m.data for m in server.messages)
    assert statuses[2][1] == "the Subject header would contain a control character (U+0000, from the list)"
    assert statuses[3][1] == "the Subject header would contain a line break (U+2028, from the list)"
    assert "the To header would contain a control character (U+0000, from the list)" in statuses[8][1]
    assert statuses[9][1] == "the Attachment header would contain a control character (U+0000, from the list)"
    assert server.messages[0].message["Subject"] == "Hi\tthere"


# --- 9. No traceback on bad input ----------------------------------------------------


def cli_with_memory_limit(*args: str | Path, limit: int = 2 * 1024**3) -> subprocess.CompletedProcess[str]:
    """``python -m mailmerge ARGS`` in a process that may use ``limit`` bytes,
    so that a template asking for 10 GB gets a MemoryError, not the machine."""

    def limited() -> None:
        resource.setrlimit(resource.RLIMIT_AS, (limit, limit))

    env = {**os.environ, "PYTHONPATH": os.pathsep.join(sys.path)}
    return subprocess.run([sys.executable, "-m", "mailmerge", *map(str, args)], capture_output=True, text=True,
                          timeout=120, preexec_fn=limited, env=env, check=False)


@pytest.mark.parametrize(
    ("body", "said"),
    [
        ('{{ "x"|center(10**10) }}', "line 5: row 3: the template needs more memory than there is (MemoryError)"),
        ("{% macro again(n) %}{{ again(n) }}{% endmacro %}{{ again(stars) }}",
         "line 5: row 2: a macro or include calls itself without end (RecursionError)"),
        ('{{ {}.pop("k") }}', "line 5: row 2: no key 'k' (KeyError)"),
        ('{{ "★" * stars|int }}', "line 5: row 3: 1 × 10000000000 items is too large (at most 1,000,000)"),
        ("{{ 10 ** stars|int }}", "line 5: row 3: 10 ** 10000000000 is too large"),
    ],
    ids=["MemoryError", "RecursionError", "KeyError", "huge repeat from the list", "huge power from the list"],
)
def test_a_template_that_fails_gives_one_line_naming_file_line_and_row(folder: Path, body: str, said: str) -> None:
    write_xlsx(folder / "list.xlsx", ("email", "stars"), [("a@example.com", "3"), ("b@example.com", "10000000000")])
    if "center" in body:
        body = "{% if stars|int > 5 %}" + body + "{% endif %}"
    template = write_template(folder / "t.txt", f"From: club@example.com\nTo: {{{{ email }}}}\nSubject: Hi\n\n{body}\n")
    done = cli_with_memory_limit("check", folder / "list.xlsx", "-t", template)

    assert done.returncode == 2, done.stderr
    assert "Traceback" not in done.stderr + done.stdout
    assert done.stderr.strip() == f"error: {template}: {said}"


# --- 11. A template error on one row stops the run before anything is sent ------------


def test_a_template_error_on_row_3_sends_nothing_at_all(folder: Path) -> None:
    rows = [("a@example.com", "4"), ("b@example.com", "0"), ("c@example.com", "2")]
    write_xlsx(folder / "list.xlsx", ("email", "people"), rows)
    template = write_template(folder / "t.txt", "From: club@example.com\nTo: {{ email }}\nSubject: Hi\n\n"
                                                "Your share: {{ 100 // people|int }} euros.\n")
    with SmtpTestServer() as server:
        write_config(folder, server, security="none", username=None)
        run = run_cli("send", folder / "list.xlsx", "-t", template, "--yes")

    assert run.exit_code == 2
    assert server.messages == []
    assert run.stderr.strip() == f"error: {template}: line 5: row 3: ZeroDivisionError: integer division or modulo by zero"
