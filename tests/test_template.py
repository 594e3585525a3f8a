"""Tests for mailmerge/render/template.py: parsing a template file and rendering rows."""

from __future__ import annotations

from pathlib import Path

import pytest

from mailmerge.errors import InvalidRow, TemplateError
from mailmerge.render.template import Draft, MailTemplate, Mailbox, load_template
from mailmerge.sources.recipients import Recipient

SENDER = "Club <club@example.com>"
COLUMNS = ["name", "email"]


def write(tmp_path: Path, text: str, name: str = "mail.txt") -> Path:
    path = tmp_path / name
    path.write_text(text, encoding="utf-8")
    return path


def template(tmp_path: Path, text: str, *, default_from: str | None = SENDER) -> MailTemplate:
    return load_template(write(tmp_path, text), default_from=default_from)


def render(tmp_path: Path, text: str, **values: str) -> Draft:
    """Load ``text`` as a template, check its columns, render one row (row 2)."""
    values = {"name": "Kim", "email": "kim@example.org", **values}
    mail = template(tmp_path, text)
    mail.check_columns(list(values), first_row=2)
    return mail.render(Recipient(row=2, values=values))


def template_error(tmp_path: Path, text: str, name: str = "mail.txt") -> str:
    with pytest.raises(TemplateError) as caught:
        mail = load_template(write(tmp_path, text, name), default_from=SENDER)
        mail.check_columns(COLUMNS, first_row=2)
    return str(caught.value)


NAMED_TO = "Subject: Hi\nTo: {{ name }} <{{ email }}>\n\nHello\n"


# --- headers ------------------------------------------------------------------


def test_header_names_are_case_insensitive(tmp_path: Path) -> None:
    draft = render(tmp_path, "SUBJECT: Hello {{ name }}\nto: {{ email }}\n\nBody\n")
    assert draft.subject == "Hello Kim"
    assert draft.to == [Mailbox("", "kim@example.org")]


def test_other_headers_are_passed_through(tmp_path: Path) -> None:
    text = "Subject: Hi\nTo: {{ email }}\nX-Campaign: spring-{{ id }}\n\nBody\n"
    draft = render(tmp_path, text, id="42")
    assert draft.other_headers == [("X-Campaign", "spring-42")]


def test_folded_header_lines_are_joined(tmp_path: Path) -> None:
    draft = render(tmp_path, "Subject: Your invoice\n  for {{ name }}\nTo: {{ email }}\n\nBody\n")
    assert draft.subject == "Your invoice for Kim"


@pytest.mark.parametrize("name", ["O'Brien, Jung", "김민준", 'Kim "KJ" Lee'])
def test_display_name_from_the_list_stays_one_mailbox(tmp_path: Path, name: str) -> None:
    draft = render(tmp_path, NAMED_TO, name=name)
    assert draft.to == [Mailbox(name, "kim@example.org")]


@pytest.mark.parametrize("cell", ["a@x.org, b@y.org", "a@x.org; b@y.org"])
def test_cell_with_two_addresses_gives_two_recipients(tmp_path: Path, cell: str) -> None:
    draft = render(tmp_path, "Subject: Hi\nTo: {{ email }}\n\nBody\n", email=cell)
    assert [box.address for box in draft.to] == ["a@x.org", "b@y.org"]


def test_to_defaults_to_the_email_column_in_any_case(tmp_path: Path) -> None:
    mail = template(tmp_path, "Subject: Hi\n\nHello {{ Name }}\n")
    mail.check_columns(["Name", "Email"], first_row=2)
    draft = mail.render(Recipient(row=2, values={"Name": "Kim", "Email": "kim@example.org"}))
    assert draft.to == [Mailbox("", "kim@example.org")]


def test_no_to_header_and_no_email_column(tmp_path: Path) -> None:
    mail = template(tmp_path, "Subject: Hi\n\nHello {{ name }}\n")
    with pytest.raises(TemplateError, match="add 'To:") as caught:
        mail.check_columns(["name", "address"], first_row=2)
    assert "no 'email' column" in str(caught.value)


def test_from_defaults_to_default_from(tmp_path: Path) -> None:
    draft = render(tmp_path, "Subject: Hi\nTo: {{ email }}\n\nBody\n")
    assert draft.sender == [Mailbox("Club", "club@example.com")]


def test_no_from_anywhere_points_to_the_config(tmp_path: Path) -> None:
    mail = template(tmp_path, "Subject: Hi\nTo: {{ email }}\n\nBody\n", default_from=None)
    with pytest.raises(TemplateError) as caught:
        mail.check_columns(COLUMNS, first_row=2)
    message = str(caught.value)
    assert "'from'" in message and "[message]" in message and "mailmerge.toml" in message


# --- check_columns ------------------------------------------------------------


def test_unknown_column_in_body_names_file_line_row_and_suggestion(tmp_path: Path) -> None:
    text = "Subject: Hi\nTo: {{ email }}\n\nDear {{ name }},\n\nBye {{ nmae }}\n"
    message = template_error(tmp_path, text)
    assert str(tmp_path / "mail.txt") in message
    assert "line 6" in message
    assert "'nmae' is not a column" in message
    assert "row 2" in message
    assert "did you mean 'name'" in message


def test_unknown_column_in_header_names_its_line(tmp_path: Path) -> None:
    message = template_error(tmp_path, "To: {{ email }}\nSubject: Hi {{ nmae }}\n\nBody\n")
    assert "line 2" in message and "'nmae' is not a column" in message


@pytest.mark.parametrize(
    "headers",
    ["To: {{ email }}\nSubject: Hi\n  {{ nmae }}", "To: {{ email }}\nCc: a@x.org\nCc: {{ nmae }}"],
    ids=["folded-line", "second-cc-header"],
)
def test_unknown_column_on_a_later_header_line_names_that_line(
    tmp_path: Path, headers: str
) -> None:
    message = template_error(tmp_path, headers + "\n\nBody\n")
    assert "line 3" in message and "'nmae' is not a column" in message


# --- template file errors -----------------------------------------------------


def test_jinja_syntax_error_names_file_and_line(tmp_path: Path) -> None:
    message = template_error(tmp_path, "Subject: Hi\nTo: {{ email }}\n\nHello\n{% if name %}\n")
    assert str(tmp_path / "mail.txt") in message and "line 5" in message


def test_first_line_not_a_header_explains_the_layout(tmp_path: Path) -> None:
    message = template_error(tmp_path, "Dear {{ name }},\n\nThanks\n")
    assert "line 1" in message
    assert "a template is header lines, a blank line, then the body" in message


def test_headers_without_blank_line_and_body_is_an_error(tmp_path: Path) -> None:
    message = template_error(tmp_path, "Subject: Hi\nTo: {{ email }}")
    assert "no blank line after the headers" in message


def test_headers_only_file_with_final_newline_is_an_error(tmp_path: Path) -> None:
    # The final line break is not the blank line: every message would have no body.
    message = template_error(tmp_path, "Subject: Hi\nTo: {{ email }}\n")
    assert "blank line" in message


@pytest.mark.parametrize("header", ["Message-ID: <x@y>", "Content-Transfer-Encoding: 8bit", "date: today"])
def test_reserved_headers_are_refused(tmp_path: Path, header: str) -> None:
    message = template_error(tmp_path, f"Subject: Hi\n{header}\n\nBody\n")
    assert "line 2" in message and "mailmerge sets" in message and "remove it" in message


def test_non_utf8_template_says_save_as_utf8(tmp_path: Path) -> None:
    path = tmp_path / "mail.txt"
    path.write_bytes("Subject: Grüße\n\nBody\n".encode("latin-1"))
    with pytest.raises(TemplateError, match="save it as UTF-8"):
        load_template(path, default_from=SENDER)


def test_a_content_type_mailmerge_cannot_send_is_named(tmp_path: Path) -> None:
    message = template_error(tmp_path, "Subject: Hi\nContent-Type: application/pdf\n\nx\n")
    assert "Content-Type application/pdf is not one mailmerge can send" in message


# --- rendering a row ----------------------------------------------------------


@pytest.mark.parametrize(
    ("text", "values"),
    [
        (NAMED_TO, {"name": "Kim\r\nBcc: everyone@example.com"}),
        (NAMED_TO, {"name": "Kim\nBcc: everyone@example.com"}),
        ("Subject: Hi {{ name }}\nTo: {{ email }}\n\nBody\n", {"name": "Kim\r\nBcc: e@x.org"}),
    ],
)
def test_line_break_in_a_header_value_is_an_invalid_row(
    tmp_path: Path, text: str, values: dict[str, str]
) -> None:
    with pytest.raises(InvalidRow, match="line break"):
        render(tmp_path, text, **values)


def test_line_break_in_the_body_is_fine(tmp_path: Path) -> None:
    draft = render(tmp_path, "Subject: Hi\nTo: {{ email }}\n\n{{ name }}\n", name="Kim\r\nLee")
    assert draft.body == "Kim\r\nLee\n"


def test_empty_address_cell_is_an_invalid_row(tmp_path: Path) -> None:
    with pytest.raises(InvalidRow, match="no recipient address"):
        render(tmp_path, "Subject: Hi\nTo: {{ email }}\n\nBody\n", email="")


def test_body_keeps_korean_and_emoji_and_ends_with_newline(tmp_path: Path) -> None:
    draft = render(tmp_path, "Subject: Hi\nTo: {{ email }}\n\n안녕하세요 {{ name }}님 📚\n다음 주에 봬요", name="민준")
    assert draft.body == "안녕하세요 민준님 📚\n다음 주에 봬요\n"


def test_missing_attribute_on_a_value_names_the_row(tmp_path: Path) -> None:
    mail = template(tmp_path, "Subject: Hi\nTo: {{ email }}\n\nHello {{ name.nickname }}\n")
    with pytest.raises(TemplateError) as caught:
        mail.render(Recipient(row=7, values={"name": "Kim", "email": "kim@example.org"}))
    assert "row 7" in str(caught.value) and "nickname" in str(caught.value)


def test_template_is_sandboxed(tmp_path: Path) -> None:
    with pytest.raises(TemplateError, match="unsafe"):
        render(tmp_path, "Subject: Hi\nTo: {{ email }}\n\n{{ ''.__class__.__mro__ }}\n")


def test_macros_and_blocks_in_html_escape_each_value_once(tmp_path: Path) -> None:
    text = ("Subject: Hi\nTo: {{ email }}\n\n"
            "{% macro card(who) %}<div>{{ who }}</div>{% endmacro %}{{ card(name) }}"
            "{% set hi %}Hi {{ name }}{% endset %}<p>{{ hi }}</p>"
            "{% autoescape false %}<i>{{ name }}</i>{% endautoescape %}\n")
    mail = load_template(write(tmp_path, text, "mail.html"), default_from=SENDER)
    mail.check_columns(COLUMNS, first_row=2)
    draft = mail.render(Recipient(row=2, values={"name": "<b>Kim</b>", "email": "kim@example.org"}))
    assert draft.html == "<div>&lt;b&gt;Kim&lt;/b&gt;</div><p>Hi &lt;b&gt;Kim&lt;/b&gt;</p><i><b>Kim</b></i>\n"
