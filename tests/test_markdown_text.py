"""The text part of a Markdown message is the readable text of its HTML (as
for an HTML template): no Markdown syntax, no tags, no image, links kept with
their address, and each value from the list as typed (not HTML-escaped).
Checked on what a real SMTP server received, and against reading the HTML
of the same row (the text is made once per template and the values put in)."""

from __future__ import annotations

import shutil
from email.message import EmailMessage
from pathlib import Path

import pytest
from conftest import run_cli, write_config, write_template, write_xlsx
from smtp_server import SmtpTestServer

from mailmerge.render.content import html_to_text
from mailmerge.render.template import MailTemplate, load_template
from mailmerge.sources.recipients import Recipient

DATA = Path(__file__).parent / "data"

NEWS = """\
From: Club <club@example.com>
To: {{ email }}
Subject: News

![logo](logo.png)

<p style="color: #123456">Hello {{ name }}, welcome.</p>

Dear **{{ name }}**, read [the news]({{ url }}).

- {{ note }}
"""
HEADER = ("name", "email", "url", "note")
ROWS = [
    ("김민수", "minsu@example.com", "https://example.com/ko?a=1&b=2", "이번 달 *소식* 📚"),
    ("O'Brien & Co <b>", "obrien@example.com", "https://example.com/en", "1 < 2 & 3 * 4 &amp;"),
]


def plain_text(message: EmailMessage) -> str:
    part = message.get_body(("plain",))
    assert part is not None
    return str(part.get_content()).replace("\r\n", "\n")


def test_the_text_part_is_the_readable_text_with_values_as_typed(tmp_path: Path) -> None:
    shutil.copy(DATA / "logo.png", tmp_path / "logo.png")
    xlsx = write_xlsx(tmp_path / "list.xlsx", HEADER, ROWS)
    template = write_template(tmp_path / "news.md", NEWS)
    with SmtpTestServer() as server:
        write_config(tmp_path, server, security="none", username=None)
        run = run_cli("send", xlsx, "-t", template, "--yes")

    assert run.exit_code == 0, run.output
    korean, obrien = (plain_text(m.message) for m in server.messages)
    assert korean == (
        "Hello 김민수, welcome.\n\n"
        "Dear 김민수, read [the news](https://example.com/ko?a=1&b=2).\n\n"
        "  * 이번 달 *소식* 📚\n"
    )
    assert obrien == (
        "Hello O'Brien & Co <b>, welcome.\n\n"
        "Dear O'Brien & Co <b>, read [the news](https://example.com/en).\n\n"
        "  * 1 < 2 & 3 * 4 &amp;\n"
    )
    for text in (korean, obrien):  # nothing of the source or of the HTML
        assert "logo" not in text and "style=" not in text and "<p" not in text and "**" not in text


def template(folder: Path, body: str, suffix: str = ".md") -> MailTemplate:
    path = write_template(folder / f"t{suffix}", f"From: club@example.com\nTo: {{{{ email }}}}\nSubject: Hi\n\n{body}")
    loaded = load_template(path)
    loaded.check_columns(["email", "name", "amount", "note"], 2)
    return loaded


VALUES = [
    {"email": "a@example.com", "name": "김민수", "amount": "1,250,000", "note": "이번 달 *소식*"},
    {"email": "b@example.com", "name": "O'Brien & Co <b>", "amount": "3", "note": "a [x](y) ![i](.env) & b"},
    {"email": "c@example.com", "name": "Ann", "amount": "", "note": "<script>x</script> &lt;"},
    {"email": "d@example.com", "name": " Kim  Lee ", "amount": "1\xa0000", "note": "two\nlines"},
]


@pytest.mark.parametrize(("suffix", "body"), [
    (".md", "# Hi {{ name }}\n\n> {{ note }}\n\n1. **{{ amount }}** for [you](https://example.com/{{ name }})\n"),
    (".html", "<h1>Hi {{ name }}</h1><blockquote>{{ note }}</blockquote><ol><li><b>{{ amount }}</b> for "
              "<a href='https://example.com/{{ name }}'>you</a></li></ol>\n"),
], ids=["markdown", "html"])
def test_the_text_is_what_reading_the_rows_html_gives(tmp_path: Path, suffix: str, body: str) -> None:
    mail = template(tmp_path, body, suffix)
    for row, values in enumerate(VALUES, start=2):
        draft = mail.render(Recipient(row, values))
        assert draft.html is not None
        assert draft.body == html_to_text(draft.html)  # empty cells and odd spaces included
        assert " ".join(values["name"].split()) in draft.body and " ".join(values["note"].split()) in draft.body


def test_a_table_lines_up_with_each_rows_values(tmp_path: Path) -> None:
    mail = template(tmp_path, "| item | amount |\n|------|-------:|\n| fee for {{ name }} | {{ amount }} |\n| tax | 3 |\n")
    drafts = [mail.render(Recipient(row, values)) for row, values in enumerate(VALUES, start=2)]

    assert drafts[0].body == "item         amount\nfee for 김민수  1,250,000\ntax          3\n"
    assert drafts[1].body == "item                      amount\nfee for O'Brien & Co <b>  3\ntax                       3\n"
    assert all(draft.html is not None and draft.body == html_to_text(draft.html) for draft in drafts)


def test_a_safe_value_is_read_as_markup_in_the_text(tmp_path: Path) -> None:
    mail = template(tmp_path, "Hello {{ name }}: {{ note|safe }}\n")
    draft = mail.render(Recipient(2, {**VALUES[1], "note": "<b>bold</b> &amp; <i>more</i>"}))

    assert draft.body == "Hello O'Brien & Co <b>: bold & more\n"


def test_html_to_text_shows_each_character_as_the_html_means_it() -> None:
    # inscriptis decodes entities a second time on its own; a typed "&lt;" stays "&lt;".
    markup = ('<p>A &amp; B &amp;lt;b&amp;gt; &lt;i&gt; &#39;q&#39;</p>'
              '<p><a href="https://example.com/?a=1&amp;b=&amp;lt;">the &amp;amp; link</a></p><pre>&amp;lt;pre&gt;</pre>')

    assert html_to_text(markup) == (
        "A & B &lt;b&gt; <i> 'q'\n\n[the &amp; link](https://example.com/?a=1&b=&lt;)\n\n&lt;pre>\n"
    )
