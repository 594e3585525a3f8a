"""HTML and Markdown bodies, attachments, inline images and unsubscribe headers,
checked on what arrives at a real SMTP server, parsed as a mail program would."""

from __future__ import annotations

import csv
import shutil
from email.message import EmailMessage
from pathlib import Path

import pytest
from conftest import run_cli, write_config, write_template, write_xlsx
from smtp_server import SmtpTestServer

DATA = Path(__file__).parent / "data"
PDF = (DATA / "invoice.pdf").read_bytes()
PNG = (DATA / "logo.png").read_bytes()

NEWSLETTER = """\
From: Club <club@example.com>
Subject: News for {{ name }}
To: {{ name }} <{{ email }}>
Attachment: invoices/{{ invoice_no }}.pdf

<html><head><style>h1 { color: #123456; }</style></head><body>
<h1>Hello {{ name }}</h1>
<p><img src="logo.png" alt="Club logo"> Read <a href="https://example.com/news">the news</a>.</p>
</body></html>
"""


def shape(part: EmailMessage) -> object:
    """The MIME tree as nested (type, [children]) / type, to compare at a glance."""
    if part.is_multipart():
        return (part.get_content_type(), [shape(p) for p in part.iter_parts()])  # type: ignore[arg-type]
    return part.get_content_type()


@pytest.fixture
def folder(tmp_path: Path) -> Path:
    """A template folder with a logo and one invoice PDF per row."""
    shutil.copy(DATA / "logo.png", tmp_path / "logo.png")
    (tmp_path / "invoices").mkdir()
    for number in ("007", "012"):
        shutil.copy(DATA / "invoice.pdf", tmp_path / "invoices" / f"{number}.pdf")
    return tmp_path


def send(folder: Path, template_name: str, template_text: str, rows: list[tuple[str, ...]], *extra: str,
         header: tuple[str, ...] = ("name", "email", "invoice_no"), **config: str) -> tuple[SmtpTestServer, int, str]:
    xlsx = write_xlsx(folder / "list.xlsx", header, rows)
    template = write_template(folder / template_name, template_text)
    with SmtpTestServer() as server:
        path = write_config(folder, server, security="none", username=None)
        if config:
            text = path.read_text().replace("[message]", "[message]\n" + "\n".join(f'{k} = "{v}"' for k, v in config.items()))
            path.write_text(text)
        run = run_cli("send", xlsx, "-t", template, "--yes", *extra)
    return server, run.exit_code, run.output


def test_html_newsletter_with_logo_and_a_pdf_per_row(folder: Path) -> None:
    server, code, output = send(folder, "news.html", NEWSLETTER,
                                [("김민수", "minsu@example.com", "007"), ("Ann", "ann@example.com", "012")])

    assert code == 0, output
    message = server.messages[0].message
    assert shape(message) == ("multipart/mixed", [
        ("multipart/alternative", ["text/plain", ("multipart/related", ["text/html", "image/png"])]),
        "application/pdf",
    ])
    html_part = message.get_body(("html",))
    html = html_part.get_content()
    image = next(p for p in message.walk() if p.get_content_type() == "image/png")
    assert f'src="cid:{image["Content-ID"].strip("<>")}"' in html  # the src points at the image
    assert image.get_payload(decode=True) == PNG and image.get_content_disposition() == "inline"
    assert "<h1 style=\"color: #123456;\">Hello 김민수</h1>" in html  # CSS inlined, <style> gone
    assert "<style" not in html
    attachment = next(message.iter_attachments())
    assert attachment.get_filename() == "007.pdf" and attachment.get_payload(decode=True) == PDF
    plain = message.get_body(("plain",)).get_content()
    assert "Hello 김민수" in plain and "<" not in plain.replace("<https", "")
    assert "the news" in plain and "https://example.com/news" in plain  # the link survives as text


def test_values_are_escaped_in_html_unless_marked_safe(folder: Path) -> None:
    template = "From: c@example.com\nTo: {{ email }}\nSubject: Hi\n\n<p>{{ name }}</p><p>{{ name|safe }}</p>\n"
    server, code, output = send(folder, "t.html", template, [("<b>Kim & Lee</b>", "k@example.com", "1")])

    assert code == 0, output
    html = server.messages[0].message.get_body(("html",)).get_content()
    assert "<p>&lt;b&gt;Kim &amp; Lee&lt;/b&gt;</p>" in html
    assert "<p><b>Kim &amp; Lee</b></p>" in html  # tags kept (the & re-serialised)


def test_markdown_sends_readable_text_and_rendered_html(folder: Path) -> None:
    template = """\
From: c@example.com
To: {{ email }}
Subject: Your invoice

![logo](logo.png)

Dear **{{ name }}**, here is your summary:

| item | amount |
|------|-------:|
| fee  | {{ invoice_no }} |
"""
    server, code, output = send(folder, "t.md", template, [("Tom & Jerry", "t@example.com", "30")])

    assert code == 0, output
    message = server.messages[0].message
    plain = message.get_body(("plain",)).get_content()
    assert "Dear Tom & Jerry, here is your summary:" in plain  # readable text, unescaped
    assert "logo" not in plain and "**" not in plain and "|---" not in plain
    html = message.get_body(("html",)).get_content()
    assert "<strong>Tom &amp; Jerry</strong>" in html
    assert "<table>" in html and "<td>fee</td>" in html
    assert "src=\"cid:" in html
    assert shape(message) == ("multipart/alternative", ["text/plain", ("multipart/related", ["text/html", "image/png"])])


def test_an_image_also_listed_as_attachment_is_sent_once(folder: Path) -> None:
    template = "From: c@example.com\nTo: {{ email }}\nSubject: Hi\nAttachment: logo.png\n\n<img src='logo.png'>\n"
    server, code, output = send(folder, "t.html", template, [("A", "a@example.com", "1")])

    assert code == 0, output
    message = server.messages[0].message
    assert [p.get_filename() for p in message.walk() if p.get_content_type() == "image/png"] == ["logo.png"]


def test_korean_attachment_name_is_encoded_per_rfc_2231(folder: Path) -> None:
    shutil.copy(DATA / "invoice.pdf", folder / "청구서 2026.pdf")
    template = "From: c@example.com\nTo: {{ email }}\nSubject: Hi\nAttachment: 청구서 2026.pdf\n\nSee attached.\n"
    server, code, output = send(folder, "t.txt", template, [("A", "a@example.com", "1")])

    assert code == 0, output
    received = server.messages[0]
    assert b"filename*=utf-8''%EC%B2%AD%EA%B5%AC%EC%84%9C%202026.pdf" in received.data
    attachment = next(received.message.iter_attachments())
    assert attachment.get_filename() == "청구서 2026.pdf" and attachment.get_content_type() == "application/pdf"


def test_a_missing_attachment_makes_only_that_row_invalid(folder: Path) -> None:
    server, code, output = send(folder, "news.html", NEWSLETTER,
                                [("A", "a@example.com", "007"), ("B", "b@example.com", "999")])

    assert code == 3
    assert server.recipients() == ["a@example.com"]
    assert "row 3: invalid: attachment not found:" in output and "999.pdf" in output
    with (folder / "list.report.csv").open(encoding="utf-8-sig") as handle:
        statuses = [row["status"] for row in csv.DictReader(handle)]
    assert statuses == ["sent", "invalid"]


def test_a_message_over_25_mb_is_flagged_before_sending(folder: Path) -> None:
    with (folder / "big.bin").open("wb") as big:
        big.truncate(20 * 1024 * 1024)  # 20 MB: about 27 MB once encoded
    template = "From: c@example.com\nTo: {{ email }}\nSubject: Hi\nAttachment: big.bin\n\nBig.\n"
    server, code, output = send(folder, "t.txt", template, [("A", "a@example.com", "1")], "--dry-run")

    assert code == 3
    assert "would be about 27 MB" in output and "25 MB" in output


@pytest.mark.parametrize(
    ("address", "post"),
    [("https://example.com/unsub?e={{ email }}", True), ("mailto:leave@example.com?subject=unsubscribe", False)],
)
def test_unsubscribe_headers(folder: Path, address: str, post: bool) -> None:
    template = "From: c@example.com\nTo: {{ email }}\nSubject: Hi\n\nNews.\n"
    server, code, output = send(folder, "t.txt", template, [("A", "a@example.com", "1")], unsubscribe=address)

    assert code == 0, output
    message = server.messages[0].message
    expected = address.replace("{{ email }}", "a@example.com")
    assert message["List-Unsubscribe"] == f"<{expected}>"
    assert (message["List-Unsubscribe-Post"] == "List-Unsubscribe=One-Click") is post


def test_attachment_paths_from_the_list_cannot_leave_the_folder(folder: Path, tmp_path_factory: pytest.TempPathFactory) -> None:
    outside = tmp_path_factory.mktemp("outside")
    (outside / "secret.txt").write_text("secret", encoding="utf-8")
    shared = tmp_path_factory.mktemp("shared")
    (shared / "link.txt").symlink_to(outside / "secret.txt")
    (shared / "ok.pdf").write_bytes(PDF)
    rows = [("A", "a@example.com", "../" * 8 + "etc/passwd"), ("B", "b@example.com", "/etc/passwd"),
            ("C", "c@example.com", "link.txt"), ("D", "d@example.com", str(shared / "ok.pdf")),
            ("E", "e@example.com", "ok.pdf"), ("F", "f@example.com", "invoices/007.pdf")]
    template = "From: c@example.com\nTo: {{ email }}\nSubject: Hi\nAttachment: {{ invoice_no }}\n\nHi\n"
    server, code, output = send(folder, "t.txt", template, rows, "--attachments-dir", str(shared))

    assert code == 3
    assert server.recipients() == ["d@example.com", "e@example.com"]
    assert output.count(f"(from the list) is outside {shared}: refused. Put the files the list names in {shared}\n") == 3
    # With --attachments-dir, the list's files come from there only, not from the template's folder.
    assert f"row 7: invalid: attachment not found: {shared / 'invoices' / '007.pdf'}" in output
    assert b"secret" not in b"".join(m.data for m in server.messages)


def test_preview_shows_the_structure_and_opens_the_html(folder: Path, tmp_path_factory: pytest.TempPathFactory) -> None:
    xlsx = write_xlsx(folder / "list.xlsx", ("name", "email", "invoice_no"), [("Ann", "ann@example.com", "007")])
    template = write_template(folder / "news.html", NEWSLETTER)
    opened = tmp_path_factory.mktemp("browser") / "opened.html"
    browser = folder / "browser.sh"  # a "browser" that keeps the page it was given
    browser.write_text(f'#!/bin/sh\ncp "${{1#file://}}" {opened}\n')
    browser.chmod(0o755)

    run = run_cli("preview", xlsx, "-t", template, "--open", env={"BROWSER": str(browser)})

    assert run.exit_code == 0, run.output
    assert "application/pdf  007.pdf  0.6 kB  attachment" in run.stdout
    assert "image/png  logo.png  0.1 kB  inline" in run.stdout
    page = opened.read_text(encoding="utf-8")
    assert "Hello Ann" in page and 'src="data:image/png;base64,' in page
