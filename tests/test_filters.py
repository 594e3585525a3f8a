"""Tests for mailmerge/render/filters.py: date, money, number and first_name, alone
and through a real template render."""

from __future__ import annotations

import datetime as dt
from decimal import Decimal
from pathlib import Path

import pytest

from mailmerge.errors import TemplateError
from mailmerge.render.filters import FILTERS, date, first_name, money, number
from mailmerge.render.template import Draft, Mailbox, load_template
from mailmerge.sources.recipients import Recipient

SENDER = "club@example.com"


def render(tmp_path: Path, text: str, filename: str = "mail.txt", *, row: int = 2, **values: str) -> Draft:
    """Write ``text`` as a template, check its columns, render one row."""
    values = {"email": "kim@example.org", **values}
    path = tmp_path / filename
    path.write_text(text, encoding="utf-8")
    mail = load_template(path, default_from=SENDER)
    mail.check_columns(list(values), first_row=2)
    return mail.render(Recipient(row=row, values=values))


# --- through a template --------------------------------------------------------


def test_date_in_subject_and_body_with_a_korean_format(tmp_path: Path) -> None:
    text = 'Subject: Due {{ due | date("%d.%m.%Y") }}\n\n마감: {{ due | date("%Y년 %m월 %d일") }}\n'
    draft = render(tmp_path, text, due="2026-11-27")
    assert draft.subject == "Due 27.11.2026"
    assert draft.body == "마감: 2026년 11월 27일\n"


def test_date_default_format_drops_the_time(tmp_path: Path) -> None:
    draft = render(tmp_path, "Subject: Hi\n\n{{ when | date }} at {{ when | date('%H:%M') }}\n",
                   when="2026-11-27 14:30")
    assert draft.body == "2026-11-27 at 14:30\n"


def test_money_and_number_in_a_template(tmp_path: Path) -> None:
    text = ('Subject: Invoice {{ amount | money("KRW") }}\n\n'
            '{{ amount | number }} / {{ fee | money("EUR") }} / {{ fee | money("CHF") }}\n')
    draft = render(tmp_path, text, amount="1250000", fee="1,250.5")
    assert draft.subject == "Invoice ₩1,250,000"
    assert draft.body == "1,250,000 / €1,250.50 / 1,250.5 CHF\n"


def test_first_name_in_the_to_header_and_body(tmp_path: Path) -> None:
    """The address overlay has the filters too, and a comma in the value
    stays inside the display name."""
    text = "Subject: Hi {{ name | first_name }}\nTo: {{ name }} <{{ email }}>\n\nDear {{ name | first_name }},\n"
    draft = render(tmp_path, text, name="O'Brien, Jung")
    assert draft.subject == "Hi Jung"
    assert draft.to == [Mailbox("O'Brien, Jung", "kim@example.org")]
    assert draft.body == "Dear Jung,\n"


def test_filter_inside_an_address_header(tmp_path: Path) -> None:
    draft = render(tmp_path, "Subject: Hi\nTo: {{ name | first_name }} <{{ email }}>\n\nBody\n",
                   name="Dr. John Smith")
    assert draft.to == [Mailbox("John", "kim@example.org")]


def test_korean_first_name_in_a_template(tmp_path: Path) -> None:
    draft = render(tmp_path, "Subject: {{ name | first_name }}님, 안녕하세요\n\nBody\n", name="남궁민수")
    assert draft.subject == "민수님, 안녕하세요"


def test_html_template_still_escapes_filter_results(tmp_path: Path) -> None:
    text = "Subject: Hi\n\n<p>Dear {{ name | first_name }}, you owe {{ amount | money('USD') }}</p>\n"
    draft = render(tmp_path, text, "mail.html", name="<b>Ann</b> Lee", amount="1234.5")
    assert draft.html is not None
    assert "&lt;b&gt;Ann&lt;/b&gt;" in draft.html
    assert "<b>" not in draft.html
    assert "$1,234.50" in draft.html


def test_markdown_template_has_the_filters(tmp_path: Path) -> None:
    draft = render(tmp_path, "Subject: Hi\n\n**{{ due | date('%-d.%-m.') }}**\n", "mail.md", due="2026-03-05")
    assert draft.html is not None and "<strong>5.3.</strong>" in draft.html


def test_empty_cells_render_as_nothing(tmp_path: Path) -> None:
    text = "Subject: Hi\n\n[{{ due | date('%d.%m') }}][{{ amount | money('KRW') }}][{{ amount | number }}][{{ name | first_name }}]\n"
    draft = render(tmp_path, text, due="", amount="", name="  ")
    assert draft.body == "[][][][]\n"


def test_default_with_true_replaces_an_empty_cell(tmp_path: Path) -> None:
    text = ('Subject: Hi\n\nDear {{ nickname | default("friend", true) }}, '
            'due {{ due | date("%d.%m.%Y") | default("on receipt", true) }}\n')
    assert render(tmp_path, text, nickname="", due="").body == "Dear friend, due on receipt\n"
    assert render(tmp_path, text, nickname="Min", due="2026-11-27").body == "Dear Min, due 27.11.2026\n"


def test_a_bad_date_is_an_error_naming_the_row_line_and_value(tmp_path: Path) -> None:
    text = "Subject: Hi\n\nHello,\nplease pay by {{ due | date('%d.%m.%Y') }}.\n"
    with pytest.raises(TemplateError) as caught:
        render(tmp_path, text, row=7, due="next week")
    message = str(caught.value)
    assert "row 7" in message
    assert "line 4" in message
    assert "'next week'" in message
    assert "2026-11-27" in message  # what was expected


def test_a_bad_amount_is_an_error_naming_the_row_and_value(tmp_path: Path) -> None:
    with pytest.raises(TemplateError) as caught:
        render(tmp_path, "Subject: Pay {{ amount | money('KRW') }}\n\nBody\n", row=5, amount="12만원")
    assert "row 5" in str(caught.value) and "'12만원'" in str(caught.value)


def test_overlays_share_the_filters(tmp_path: Path) -> None:
    path = tmp_path / "mail.html"
    path.write_text("Subject: Hi\n\n<p>Hi</p>\n", encoding="utf-8")
    mail = load_template(path, default_from=SENDER)
    for env in (mail._env, mail._address_env, mail._html_env):
        for name in FILTERS:  # in HTML bodies wrapped, to refuse text holding placeholders
            assert getattr(env.filters[name], "__wrapped__", env.filters[name]) is FILTERS[name]
        assert "default" in env.filters  # Jinja's own filters are still there


# --- date ----------------------------------------------------------------------


@pytest.mark.parametrize("value", [
    "2026-11-27", "2026/11/27", "2026.11.27", " 2026-11-27 ", "2026-11-27 14:30", "2026-11-27 14:30:05",
    "2026-11-27T14:30:05", "2026-11-27 14:30:05.250",
])
def test_date_reads_iso_like_forms(value: str) -> None:
    assert date(value, "%d/%m/%Y") == "27/11/2026"


def test_date_accepts_date_and_datetime_objects() -> None:
    assert date(dt.date(2026, 11, 27), "%Y년 %m월 %d일") == "2026년 11월 27일"
    assert date(dt.datetime(2026, 11, 27, 9, 5), "%H시 %M분") == "09시 05분"


def test_date_format_is_filled_in_piece_by_piece() -> None:
    assert date("2026-03-05 09:07", "%-m월 %-d일 %-H시 %M분") == "3월 5일 9시 07분"
    assert date("2026-11-27", "100%% on %A, %-d %B") == "100% on Friday, 27 November"
    assert date("2026-11-27", "일정 없음") == "일정 없음"  # no directives: the text as it is


@pytest.mark.parametrize("value, expected", [
    ("next week", "is not a date like 2026-11-27"),
    ("27.11.2026", "write the year first"),
    ("11/27/2026", "write the year first"),
    ("2026-11-27 / 2026-11-28", "is not a date"),
    ("2026-02-30", "is not a real date"),
    ("2026-11-27 24:00", "is not a real date or time"),
])
def test_date_errors_name_the_value(value: str, expected: str) -> None:
    with pytest.raises(ValueError) as caught:
        date(value)
    assert str(caught.value).startswith(f"date: {value!r} ")
    assert expected in str(caught.value)


# --- money and number --------------------------------------------------------


@pytest.mark.parametrize("value, currency, expected", [
    ("1250000", "KRW", "₩1,250,000"),
    ("1,250,000", "krw", "₩1,250,000"),
    ("1250.5", "EUR", "€1,250.50"),
    ("1250.5", "USD", "$1,250.50"),
    ("1250.5", "GBP", "£1,250.50"),
    ("1250000.4", "JPY", "¥1,250,000"),
    ("1250.5", "CNY", "¥1,250.50"),
    ("1250000", "CHF", "1,250,000 CHF"),
    ("-1250", "KRW", "-₩1,250"),
    ("  42 ", "", "42"),
    ("1250000", "", "1,250,000"),
    ("1250000.5", "", "1,250,000.5"),
    ("+3.14159", "", "3.14"),
])
def test_money(value: str, currency: str, expected: str) -> None:
    assert money(value, currency) == expected


def test_money_rounds_half_up_on_the_exact_decimal() -> None:
    assert money("1250.5", "KRW") == "₩1,251"  # half up, not to even
    assert money("2.675", "USD") == "$2.68"  # a float would give 2.67
    assert money("0.125") == "0.13"
    assert money("-2.5", "KRW") == "-₩3"
    assert money("-0.001", "USD") == "$0.00"  # no "-$0.00"


def test_money_decimals_override() -> None:
    assert money("1250000", "KRW", 2) == "₩1,250,000.00"
    assert money("1250.456", "EUR", 0) == "€1,250"
    assert money("1250", "", 3) == "1,250.000"


def test_money_and_number_accept_numbers() -> None:
    assert money(1250000, "KRW") == "₩1,250,000"
    assert money(Decimal("1250.5"), "EUR") == "€1,250.50"
    assert number(1234.5) == "1,234.5"
    assert number("1.5e+20") == "150,000,000,000,000,000,000"


def test_number() -> None:
    assert number("1250000") == "1,250,000"
    assert number("1,250,000") == "1,250,000"
    assert number("-1234567.891") == "-1,234,567.89"
    assert number("1250.00") == "1,250.00"  # as written
    assert number("1250000", 2) == "1,250,000.00"
    assert number("0.5", 0) == "1"
    assert number("999") == "999"
    assert number("") == ""


@pytest.mark.parametrize("value", ["abc", "1,25", "1.250,50", "12,34,567", "-", ".", "1 250", "₩1000", "NaN", "Infinity"])
def test_number_errors_name_the_value(value: str) -> None:
    with pytest.raises(ValueError, match=r"^number: .* is not a number like 1250000"):
        number(value)
    with pytest.raises(ValueError, match=r"^money: "):
        money(value, "KRW")


@pytest.mark.parametrize("decimals", [-1, 11, "2", True, 1.5])
def test_bad_decimals_are_an_error(decimals: object) -> None:
    with pytest.raises(ValueError, match="decimals must be a whole number"):
        number("1", decimals)  # type: ignore[arg-type]


# --- first_name --------------------------------------------------------------


@pytest.mark.parametrize("value, expected", [
    ("Anne-Marie Dupont", "Anne-Marie"),
    ("O'Brien, Jung", "Jung"),
    ("Dupont,Anne-Marie", "Anne-Marie"),
    ("Dr. John Smith", "John"),
    ("Mrs Jane Doe", "Jane"),
    ("PROF. DR. Hans Meier", "Hans"),
    ("John Smith, Jr.", "John"),
    ("  Madonna  ", "Madonna"),
    ("Kim Minsu", "Kim"),  # romanized: the order cannot be told, the Western rule applies
    ("김민수", "민수"),
    ("이수", "수"),
    ("남궁민수", "민수"),
    ("황보민", "민"),
    ("제갈공명", "공명"),
    ("김 민수", "민수"),
    ("Dr. 김민수", "민수"),
    ("김수한무거북이", "김수한무거북이"),  # not a usual Korean name: left whole
    ("", ""),
    ("Dr.", ""),
])
def test_first_name(value: str, expected: str) -> None:
    assert first_name(value) == expected


def test_filters_return_plain_str() -> None:
    from markupsafe import Markup

    for result in (date(Markup("2026-11-27")), money(Markup("1"), "KRW"), number(Markup("1")),
                   first_name(Markup("Ann Lee"))):
        assert type(result) is str
