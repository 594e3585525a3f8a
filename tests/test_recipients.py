"""Reading a recipient list (CSV or Excel) into text as the person sees it in the sheet."""
from __future__ import annotations

import datetime as dt
from pathlib import Path
from typing import Any

import openpyxl
import pandas as pd
import pytest

from mailmerge.errors import RecipientsError
from mailmerge.recipients import RecipientList, cell_text, read_recipients

Rows = list[list[Any]]


# --- helpers -----------------------------------------------------------------


def write_xlsx(path: Path, rows: Rows, **more_sheets: Rows) -> Path:
    """A real workbook: ``rows`` on the first sheet ("Sheet1"), then ``more_sheets`` by name."""
    book = openpyxl.Workbook()
    sheets = {"Sheet1": rows, **more_sheets}
    for index, (title, sheet_rows) in enumerate(sheets.items()):
        sheet = book.active if index == 0 else book.create_sheet()
        sheet.title = title
        for row in sheet_rows:
            sheet.append(row)
    book.save(path)
    return path


def write_csv(path: Path, text: str, encoding: str = "utf-8") -> Path:
    path.write_bytes(text.encode(encoding))
    return path


def read_xlsx(tmp_path: Path, rows: Rows) -> RecipientList:
    return read_recipients(write_xlsx(tmp_path / "list.xlsx", rows))


def values(recipients: RecipientList) -> list[dict[str, str]]:
    return [r.values for r in recipients]


def column(recipients: RecipientList, name: str) -> list[str]:
    return [r.values[name] for r in recipients]


def error_text(path: Path, **options: Any) -> str:
    with pytest.raises(RecipientsError) as caught:
        read_recipients(path, **options)
    assert caught.value.exit_code == 2
    return str(caught.value)


# --- Excel: sheets -----------------------------------------------------------


@pytest.mark.parametrize("suffix", [".xlsx", ".xlsm"])
def test_excel_reads_the_first_sheet_or_the_named_one(tmp_path: Path, suffix: str) -> None:
    path = write_xlsx(tmp_path / f"list{suffix}", [["name"], ["Ann"]], Donors=[["name"], ["Bob"]])
    assert values(read_recipients(path)) == [{"name": "Ann"}]
    assert values(read_recipients(path, sheet="Donors")) == [{"name": "Bob"}]


def test_wrong_sheet_name_lists_the_sheets_and_suggests_the_closest(tmp_path: Path) -> None:
    path = write_xlsx(tmp_path / "members.xlsx", [["name"], ["Ann"]], Donors=[["name"], ["Bob"]])
    message = error_text(path, sheet="donor")
    assert "members.xlsx" in message
    assert "'donor'" in message
    assert "did you mean 'Donors'" in message
    assert "Sheet1, Donors" in message


def test_formula_never_computed_by_excel_comes_out_empty(tmp_path: Path) -> None:
    """openpyxl stores no cached result for a formula, so there is nothing to show."""
    recipients = read_xlsx(tmp_path, [["name", "total"], ["Ann", "=1+1"]])
    assert values(recipients) == [{"name": "Ann", "total": ""}]


# --- Excel: values as the person sees them -----------------------------------


def test_text_with_leading_zeros_stays_as_typed(tmp_path: Path) -> None:
    assert column(read_xlsx(tmp_path, [["code"], ["007"]]), "code") == ["007"]


def test_whole_numbers_have_no_decimal_point_even_next_to_empty_cells(tmp_path: Path) -> None:
    rows = [["name", "seats"], ["Ann", 42], ["Bob", None], ["Cy", 7]]
    assert column(read_xlsx(tmp_path, rows), "seats") == ["42", "", "7"]


def test_fractions_show_as_in_the_sheet(tmp_path: Path) -> None:
    rows = [["name", "price"], ["Ann", 12.5], ["Bob", 0.1 + 0.2]]
    assert column(read_xlsx(tmp_path, rows), "price") == ["12.5", "0.3"]


def test_dates_datetimes_and_times_show_without_spurious_parts(tmp_path: Path) -> None:
    rows = [
        ["day", "when", "at"],
        [dt.date(2026, 11, 27), dt.datetime(2026, 11, 27, 14, 30), dt.time(9, 5)],
    ]
    assert values(read_xlsx(tmp_path, rows)) == [
        {"day": "2026-11-27", "when": "2026-11-27 14:30", "at": "09:05"}
    ]


def test_empty_cell_is_empty_text_never_nan(tmp_path: Path) -> None:
    rows = [["name", "title", "city"], ["Ann", None, "Oslo"]]
    assert values(read_xlsx(tmp_path, rows)) == [{"name": "Ann", "title": "", "city": "Oslo"}]


def test_booleans_show_as_true_false_like_excel(tmp_path: Path) -> None:
    rows = [["name", "vip"], ["Ann", True], ["Bob", False]]
    assert column(read_xlsx(tmp_path, rows), "vip") == ["TRUE", "FALSE"]


def test_text_na_and_null_are_kept_not_emptied(tmp_path: Path) -> None:
    rows = [["name", "note"], ["NA", "null"], ["N/A", "NaN"]]
    assert values(read_xlsx(tmp_path, rows)) == [
        {"name": "NA", "note": "null"},
        {"name": "N/A", "note": "NaN"},
    ]


def test_korean_names_in_excel_come_through_exactly(tmp_path: Path) -> None:
    rows = [["이름", "email"], ["김민준", "kim@example.com"], ["박똠", "park@example.com"]]
    assert values(read_xlsx(tmp_path, rows)) == [
        {"이름": "김민준", "email": "kim@example.com"},
        {"이름": "박똠", "email": "park@example.com"},
    ]


# --- row numbers and headers -------------------------------------------------


def test_row_numbers_are_sheet_rows_and_empty_rows_do_not_shift_them(tmp_path: Path) -> None:
    rows = [["name"], ["Ann"], [None], ["Bob"]]
    recipients = read_xlsx(tmp_path, rows)
    assert [(r.row, r.values["name"]) for r in recipients] == [(2, "Ann"), (4, "Bob")]


def test_csv_row_numbers_skip_empty_rows_without_shifting(tmp_path: Path) -> None:
    text = "name,city\nAnn,Oslo\n,\n\nBob,Rome\n"  # an Excel-saved empty row, then a blank line
    recipients = read_recipients(write_csv(tmp_path / "l.csv", text))
    assert [(r.row, r.values["name"]) for r in recipients] == [(2, "Ann"), (5, "Bob")]


def test_spaces_around_header_names_are_trimmed_with_a_note(tmp_path: Path) -> None:
    recipients = read_xlsx(tmp_path, [[" name ", "email"], ["Ann", "a@example.com"]])
    assert recipients.columns == ["name", "email"]
    assert values(recipients) == [{"name": "Ann", "email": "a@example.com"}]
    assert any("' name '" in note and "'name'" in note for note in recipients.notes)


def test_duplicated_header_names_both_excel_columns(tmp_path: Path) -> None:
    path = write_xlsx(tmp_path / "list.xlsx", [["name", "email", "name"], ["Ann", "a@x.org", "A"]])
    message = error_text(path)
    assert "'name' appears twice" in message
    assert "column A" in message and "column C" in message
    assert "rename" in message


def test_unnamed_column_with_values_is_an_error_naming_the_column(tmp_path: Path) -> None:
    path = write_xlsx(tmp_path / "list.xlsx", [["name", None, "email"], ["Ann", "x", "a@x.org"]])
    message = error_text(path)
    assert "column B" in message and "no name" in message and "give it a name" in message


def test_unnamed_empty_column_is_ignored(tmp_path: Path) -> None:
    recipients = read_xlsx(tmp_path, [["name", None, "email"], ["Ann", None, "a@x.org"]])
    assert recipients.columns == ["name", "email"]
    assert values(recipients) == [{"name": "Ann", "email": "a@x.org"}]


# --- CSV: delimiters, quoting ------------------------------------------------


@pytest.mark.parametrize("delimiter", [",", ";", "\t"])
def test_csv_delimiter_is_detected(tmp_path: Path, delimiter: str) -> None:
    text = f"name{delimiter}email\nAnn{delimiter}a@x.org\nBob{delimiter}b@x.org\n"
    recipients = read_recipients(write_csv(tmp_path / "list.csv", text))
    assert column(recipients, "name") == ["Ann", "Bob"]
    assert column(recipients, "email") == ["a@x.org", "b@x.org"]


def test_semicolon_csv_with_decimal_commas_splits_on_semicolons(tmp_path: Path) -> None:
    text = "name;amount;rate\nAnn;1,5;0,25\nBob;2,75;1,0\n"
    recipients = read_recipients(write_csv(tmp_path / "list.csv", text))
    assert values(recipients) == [
        {"name": "Ann", "amount": "1,5", "rate": "0,25"},
        {"name": "Bob", "amount": "2,75", "rate": "1,0"},
    ]


def test_quoted_values_keep_newlines_and_delimiters(tmp_path: Path) -> None:
    text = 'name,address\n"Lee, Ann","1 Main St\nApt 2"\nBob,Rome\n'
    recipients = read_recipients(write_csv(tmp_path / "list.csv", text))
    assert values(recipients) == [
        {"name": "Lee, Ann", "address": "1 Main St\nApt 2"},
        {"name": "Bob", "address": "Rome"},
    ]


def test_csv_text_is_kept_as_written(tmp_path: Path) -> None:
    text = "code,note,amount\n007,NA,42.0\n010,null,\n"
    recipients = read_recipients(write_csv(tmp_path / "list.csv", text))
    assert values(recipients) == [
        {"code": "007", "note": "NA", "amount": "42.0"},
        {"code": "010", "note": "null", "amount": ""},
    ]


# --- CSV: encodings ----------------------------------------------------------


def test_utf8_with_bom_first_column_name_has_no_bom(tmp_path: Path) -> None:
    path = write_csv(tmp_path / "list.csv", "name,email\nZoë,z@x.org\n", "utf-8-sig")
    recipients = read_recipients(path)
    assert recipients.columns == ["name", "email"]
    assert values(recipients) == [{"name": "Zoë", "email": "z@x.org"}]
    assert recipients.notes == []


def test_utf8_without_bom_is_read_without_a_note(tmp_path: Path) -> None:
    recipients = read_recipients(write_csv(tmp_path / "list.csv", "이름,city\n김민준,Zürich\n"))
    assert values(recipients) == [{"이름": "김민준", "city": "Zürich"}]
    assert recipients.notes == []


def test_utf16_unicode_text_from_excel_is_read(tmp_path: Path) -> None:
    """Excel's "Unicode text": UTF-16 with BOM, TAB separated, CRLF lines."""
    text = "\ufeffname\tcity\r\n김민준\tSeoul\r\nZoë\tParis\r\n"
    recipients = read_recipients(write_csv(tmp_path / "list.txt", text, "utf-16-le"))
    assert values(recipients) == [
        {"name": "김민준", "city": "Seoul"},
        {"name": "Zoë", "city": "Paris"},
    ]


@pytest.mark.parametrize(
    "text",
    [
        "이름,이메일\n김민준,kim@example.com\n박똠,park@example.com\n",
        # Half the syllables (똠) are outside KS X 1001's common set: still Korean.
        "name,email\n김똠,kim@example.com\n최똠,choi@example.com\n",
    ],
    ids=["korean-list-with-ddom", "short-3-lines"],
)
def test_cp949_from_korean_excel_is_decoded_with_a_note(tmp_path: Path, text: str) -> None:
    recipients = read_recipients(write_csv(tmp_path / "list.csv", text, "cp949"))
    expected = read_recipients(write_csv(tmp_path / "utf8.csv", text))
    assert values(recipients) == values(expected)
    assert any("cp949" in note and "--encoding" in note for note in recipients.notes)


def test_cp1252_from_western_excel_is_decoded_with_a_note(tmp_path: Path) -> None:
    text = "name,city,note\nZoë Lefèvre,Café Müller,€5\n"
    recipients = read_recipients(write_csv(tmp_path / "list.csv", text, "cp1252"))
    assert values(recipients) == [{"name": "Zoë Lefèvre", "city": "Café Müller", "note": "€5"}]
    assert any("cp1252" in note and "--encoding" in note for note in recipients.notes)


def test_encoding_option_overrides_the_guess(tmp_path: Path) -> None:
    # Latin-1 bytes would be guessed as cp1252; the user says what they are.
    path = write_csv(tmp_path / "list.csv", "name\nZoë\nJürgen\n", "latin-1")
    recipients = read_recipients(path, encoding="latin-1")
    assert column(recipients, "name") == ["Zoë", "Jürgen"]
    assert recipients.notes == []


def test_wrong_encoding_option_says_where_and_what_to_try(tmp_path: Path) -> None:
    path = write_csv(tmp_path / "list.csv", "name\n김민준\n", "cp949")
    message = error_text(path, encoding="utf-8")
    assert "list.csv" in message
    assert "not valid utf-8 at byte 5" in message
    assert "--encoding" in message


def test_unknown_encoding_name_is_a_clear_error(tmp_path: Path) -> None:
    path = write_csv(tmp_path / "list.csv", "name\nAnn\n")
    assert "--encoding klingon: no such encoding" in error_text(path, encoding="klingon")


# --- errors ------------------------------------------------------------------


@pytest.mark.parametrize("name", ["list.pdf", "list.numbers", "list"])
def test_unknown_file_type_says_to_save_as_xlsx_or_csv(tmp_path: Path, name: str) -> None:
    path = tmp_path / name
    path.write_bytes(b"name\nAnn\n")
    message = error_text(path)
    assert name in message
    assert "save the list as .xlsx or .csv" in message


def test_missing_file_says_no_such_file(tmp_path: Path) -> None:
    assert "nope.csv: no such file" in error_text(tmp_path / "nope.csv")


def test_garbage_xlsx_says_it_cannot_read_the_excel_file(tmp_path: Path) -> None:
    path = tmp_path / "list.xlsx"
    path.write_bytes(b"this is not a zip file at all")
    message = error_text(path)
    assert "list.xlsx" in message
    assert "cannot read this Excel file" in message and "save it again as .xlsx" in message


def test_header_without_rows_is_an_error(tmp_path: Path) -> None:
    assert "column names but no rows" in error_text(write_csv(tmp_path / "l.csv", "name,email\n"))
    path = write_xlsx(tmp_path / "l.xlsx", [["name", "email"], [None, None]])
    assert "column names but no rows" in error_text(path)


def test_totally_empty_file_is_an_error(tmp_path: Path) -> None:
    message = error_text(write_csv(tmp_path / "empty.csv", ""))
    assert "empty.csv: the list is empty" in message
    assert "column names in the first row" in message


def test_csv_row_with_more_fields_than_header_says_rows_do_not_line_up(tmp_path: Path) -> None:
    path = write_csv(tmp_path / "list.csv", "name,city\nAnn,Oslo\nLee, Bob,Rome\n")
    message = error_text(path)
    assert "list.csv" in message
    assert "rows do not line up" in message and "quotes" in message


# --- cell_text ---------------------------------------------------------------


@pytest.mark.parametrize(
    ("value", "shown"),
    [
        (None, ""),
        (float("nan"), ""),
        (pd.NaT, ""),  # a datetime subclass without strftime
        (42, "42"),
        (42.0, "42"),
        (12.5, "12.5"),
        (0.1 + 0.2, "0.3"),
        (dt.datetime(2026, 11, 27), "2026-11-27"),
        (pd.Timestamp("2026-11-27 14:30"), "2026-11-27 14:30"),
        (dt.date(2026, 11, 27), "2026-11-27"),
        (dt.time(9, 5), "09:05"),
        (True, "TRUE"),
        (False, "FALSE"),
    ],
)
def test_cell_text_shows_values_as_a_spreadsheet_does(value: Any, shown: str) -> None:
    assert cell_text(value) == shown
