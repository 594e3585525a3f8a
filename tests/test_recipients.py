"""Reading a recipient list (CSV or Excel) into text as the person sees it in the sheet."""
from __future__ import annotations

import datetime as dt
import importlib.util
import re
import sys
import zipfile
from collections.abc import Callable
from pathlib import Path
from typing import Any

import openpyxl
import pandas as pd
import pytest
from openpyxl.chart import BarChart, Reference
from openpyxl.utils.datetime import CALENDAR_MAC_1904

from mailmerge.errors import RecipientsError
from mailmerge.sources.recipients import RecipientList, cell_text, excel_engine, read_recipients

Rows = list[list[Any]]

HAVE_CALAMINE = importlib.util.find_spec("python_calamine") is not None


@pytest.fixture(
    params=[
        "openpyxl",
        pytest.param(
            "calamine",
            marks=pytest.mark.skipif(not HAVE_CALAMINE, reason="python-calamine not installed"),
        ),
    ]
)
def engine(request: pytest.FixtureRequest) -> str:
    """Each Excel test runs with both pandas engines: they must give the same text."""
    return str(request.param)


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


def read_xlsx(tmp_path: Path, rows: Rows, engine: str) -> RecipientList:
    return read_recipients(write_xlsx(tmp_path / "list.xlsx", rows), engine=engine)


def rewrite_parts(path: Path, edits: dict[str, Callable[[str], str]]) -> Path:
    """Rewrite XML parts of a workbook, in order (a new part starts empty), to add
    what openpyxl cannot write: formula results cached by Excel, shared strings."""
    with zipfile.ZipFile(path) as book:
        parts = {name: book.read(name) for name in book.namelist()}
    for part, edit in edits.items():
        parts[part] = edit(parts.get(part, b"").decode("utf-8")).encode("utf-8")
    with zipfile.ZipFile(path, "w", zipfile.ZIP_DEFLATED) as book:
        for name, data in parts.items():
            book.writestr(name, data)
    return path


def to_shared_strings(path: Path) -> Path:
    """Move the first sheet's text into xl/sharedStrings.xml, as Excel saves it
    (openpyxl writes every text inline)."""
    strings: list[str] = []

    def share(match: re.Match[str]) -> str:
        strings.append(match.group(2))
        return f'<c r="{match.group(1)}" t="s"><v>{len(strings) - 1}</v></c>'

    def move_text(xml: str) -> str:
        inline = r'<c r="(\w+)" t="inlineStr"><is><t>(.*?)</t></is></c>'
        return re.sub(inline, share, xml, flags=re.S)

    def string_table(_: str) -> str:
        items = "".join(f'<si><t xml:space="preserve">{text}</t></si>' for text in strings)
        return (
            '<?xml version="1.0" encoding="UTF-8"?>'
            '<sst xmlns="http://schemas.openxmlformats.org/spreadsheetml/2006/main" '
            f'count="{len(strings)}" uniqueCount="{len(strings)}">{items}</sst>'
        )

    content_type = (
        '<Override PartName="/xl/sharedStrings.xml" ContentType="application/'
        'vnd.openxmlformats-officedocument.spreadsheetml.sharedStrings+xml"/>'
    )
    relationship = (
        '<Relationship Id="rIdShared" Type="http://schemas.openxmlformats.org/'
        'officeDocument/2006/relationships/sharedStrings" Target="sharedStrings.xml"/>'
    )
    return rewrite_parts(path, {
        "xl/worksheets/sheet1.xml": move_text,
        "xl/sharedStrings.xml": string_table,  # after the sheet: it needs its strings
        "[Content_Types].xml": lambda xml: xml.replace("</Types>", content_type + "</Types>"),
        "xl/_rels/workbook.xml.rels": lambda xml: xml.replace(
            "</Relationships>", relationship + "</Relationships>"
        ),
    })


def rows_of(recipients: RecipientList) -> list[tuple[int, dict[str, str]]]:
    return [(r.row, r.values) for r in recipients]


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
def test_excel_reads_the_first_sheet_or_the_named_one(
    tmp_path: Path, suffix: str, engine: str
) -> None:
    path = write_xlsx(tmp_path / f"list{suffix}", [["name"], ["Ann"]], Donors=[["name"], ["Bob"]])
    assert values(read_recipients(path, engine=engine)) == [{"name": "Ann"}]
    assert values(read_recipients(path, sheet="Donors", engine=engine)) == [{"name": "Bob"}]


def test_first_sheet_means_the_first_worksheet_not_a_chart_sheet(
    tmp_path: Path, engine: str
) -> None:
    book = openpyxl.Workbook()
    data = book.active
    data.title = "Data"
    for row in [["name", "seats"], ["Ann", 2]]:
        data.append(row)
    chart = BarChart()
    chart.add_data(Reference(data, min_col=2, min_row=1, max_row=2))
    book.create_chartsheet("Chart", 0).add_chart(chart)
    book.save(tmp_path / "list.xlsx")
    recipients = read_recipients(tmp_path / "list.xlsx", engine=engine)
    assert values(recipients) == [{"name": "Ann", "seats": "2"}]


def test_wrong_sheet_name_lists_the_sheets_and_suggests_the_closest(
    tmp_path: Path, engine: str
) -> None:
    path = write_xlsx(tmp_path / "members.xlsx", [["name"], ["Ann"]], Donors=[["name"], ["Bob"]])
    message = error_text(path, sheet="donor", engine=engine)
    assert "members.xlsx" in message
    assert "'donor'" in message
    assert "did you mean 'Donors'" in message
    assert "Sheet1, Donors" in message


def test_formula_never_computed_by_excel_comes_out_empty(tmp_path: Path, engine: str) -> None:
    """openpyxl stores no cached result for a formula, so there is nothing to show."""
    recipients = read_xlsx(tmp_path, [["name", "total"], ["Ann", "=1+1"]], engine)
    assert values(recipients) == [{"name": "Ann", "total": ""}]


def test_formula_shows_the_result_excel_cached(tmp_path: Path, engine: str) -> None:
    path = write_xlsx(
        tmp_path / "list.xlsx",
        [["n", "text", "error", "day", "flag"],
         ["=1+1", '="x"&"y"', "=1/0", "=DATE(2026,11,27)", "=TRUE()"]],
    )
    book = openpyxl.load_workbook(path)
    book.active["D2"].number_format = "yyyy-mm-dd"
    book.save(path)
    cached = {  # what Excel writes after computing: <v> results, t= their type
        '<c r="A2"><f>1+1</f><v></v>': '<c r="A2"><f>1+1</f><v>2</v>',
        '<c r="B2"><f>"x"&amp;"y"</f><v></v>': '<c r="B2" t="str"><f>"x"&amp;"y"</f><v>xy</v>',
        '<c r="C2"><f>1/0</f><v></v>': '<c r="C2" t="e"><f>1/0</f><v>#DIV/0!</v>',
        "<f>DATE(2026,11,27)</f><v></v>": "<f>DATE(2026,11,27)</f><v>46353</v>",
        '<c r="E2"><f>TRUE()</f><v></v>': '<c r="E2" t="b"><f>TRUE()</f><v>1</v>',
    }

    def add_results(xml: str) -> str:
        for old, new in cached.items():
            assert old in xml
            xml = xml.replace(old, new)
        return xml

    rewrite_parts(path, {"xl/worksheets/sheet1.xml": add_results})
    assert values(read_recipients(path, engine=engine)) == [
        {"n": "2", "text": "xy", "error": "", "day": "2026-11-27", "flag": "TRUE"}
    ]


# --- Excel: values as the person sees them -----------------------------------


def test_text_with_leading_zeros_stays_as_typed(tmp_path: Path, engine: str) -> None:
    assert column(read_xlsx(tmp_path, [["code"], ["007"]], engine), "code") == ["007"]


def test_whole_numbers_have_no_decimal_point_even_next_to_empty_cells(
    tmp_path: Path, engine: str
) -> None:
    rows = [["name", "seats"], ["Ann", 42], ["Bob", None], ["Cy", 7]]
    assert column(read_xlsx(tmp_path, rows, engine), "seats") == ["42", "", "7"]


def test_fractions_show_as_in_the_sheet(tmp_path: Path, engine: str) -> None:
    rows = [["name", "price"], ["Ann", 12.5], ["Bob", 0.1 + 0.2]]
    assert column(read_xlsx(tmp_path, rows, engine), "price") == ["12.5", "0.3"]


def test_dates_datetimes_and_times_show_without_spurious_parts(tmp_path: Path, engine: str) -> None:
    rows = [
        ["day", "when", "at"],
        [dt.date(2026, 11, 27), dt.datetime(2026, 11, 27, 14, 30), dt.time(9, 5)],
    ]
    assert values(read_xlsx(tmp_path, rows, engine)) == [
        {"day": "2026-11-27", "when": "2026-11-27 14:30", "at": "09:05"}
    ]


def test_empty_cell_is_empty_text_never_nan(tmp_path: Path, engine: str) -> None:
    rows = [["name", "title", "city"], ["Ann", None, "Oslo"]]
    assert values(read_xlsx(tmp_path, rows, engine)) == [
        {"name": "Ann", "title": "", "city": "Oslo"}
    ]


def test_booleans_show_as_true_false_like_excel(tmp_path: Path, engine: str) -> None:
    rows = [["name", "vip"], ["Ann", True], ["Bob", False]]
    assert column(read_xlsx(tmp_path, rows, engine), "vip") == ["TRUE", "FALSE"]


def test_text_na_and_null_are_kept_not_emptied(tmp_path: Path, engine: str) -> None:
    rows = [["name", "note"], ["NA", "null"], ["N/A", "NaN"]]
    assert values(read_xlsx(tmp_path, rows, engine)) == [
        {"name": "NA", "note": "null"},
        {"name": "N/A", "note": "NaN"},
    ]


def test_korean_names_in_excel_come_through_exactly(tmp_path: Path, engine: str) -> None:
    rows = [["이름", "email"], ["김민준", "kim@example.com"], ["박똠", "park@example.com"]]
    assert values(read_xlsx(tmp_path, rows, engine)) == [
        {"이름": "김민준", "email": "kim@example.com"},
        {"이름": "박똠", "email": "park@example.com"},
    ]


def test_integers_stored_as_floats_have_no_decimal_point(tmp_path: Path, engine: str) -> None:
    rows = [["n"], [42.0], [-3.0], [0.0], [1234567.0], [2.5]]
    assert column(read_xlsx(tmp_path, rows, engine), "n") == ["42", "-3", "0", "1234567", "2.5"]


def test_times_and_datetimes_with_seconds_and_durations(tmp_path: Path, engine: str) -> None:
    rows = [
        ["at", "when", "took"],
        [
            dt.time(9, 5, 7),
            dt.datetime(2026, 11, 27, 14, 30, 15),
            dt.timedelta(hours=30, minutes=5),
        ],
        [dt.time(0, 0), dt.datetime(2026, 11, 27, 0, 0, 1), dt.timedelta(minutes=5, seconds=3)],
    ]
    assert values(read_xlsx(tmp_path, rows, engine)) == [
        {"at": "09:05:07", "when": "2026-11-27 14:30:15", "took": "30:05"},
        {"at": "00:00", "when": "2026-11-27 00:00:01", "took": "00:05:03"},
    ]


@pytest.mark.parametrize(
    ("serial", "number_format", "shown"),
    [
        (46353, "yyyy-mm-dd", "2026-11-27"),
        (46353.604166666664, "yyyy-mm-dd hh:mm", "2026-11-27 14:30"),
        (0.3784722222222222, "h:mm", "09:05"),
        (0.9999884259259259, "h:mm:ss", "23:59:59"),
        (1.2534722222222223, "[h]:mm", "30:05"),
        (1, "yyyy-mm-dd", "1900-01-01"),
        (61, "yyyy-mm-dd", "1900-03-01"),
    ],
)
def test_dates_stored_as_excel_stores_them(
    tmp_path: Path, engine: str, serial: float, number_format: str, shown: str
) -> None:
    """Excel saves a date or time as a day count with a date format, not as text."""
    book = openpyxl.Workbook()
    book.active.append(["value"])
    book.active.append([serial])
    book.active["A2"].number_format = number_format
    book.save(tmp_path / "list.xlsx")
    assert column(read_recipients(tmp_path / "list.xlsx", engine=engine), "value") == [shown]


def test_dates_of_a_1904_workbook_from_old_mac_excel(tmp_path: Path, engine: str) -> None:
    book = openpyxl.Workbook()
    book.epoch = CALENDAR_MAC_1904
    for row in [["day", "when"], [dt.date(2026, 11, 27), dt.datetime(2026, 11, 27, 14, 30)]]:
        book.active.append(row)
    book.save(tmp_path / "list.xlsx")
    recipients = read_recipients(tmp_path / "list.xlsx", engine=engine)
    assert values(recipients) == [{"day": "2026-11-27", "when": "2026-11-27 14:30"}]


def test_error_cells_come_out_empty(tmp_path: Path, engine: str) -> None:
    rows = [["name", "ratio", "lookup"], ["Ann", "#DIV/0!", "#N/A"]]
    assert values(read_xlsx(tmp_path, rows, engine)) == [
        {"name": "Ann", "ratio": "", "lookup": ""}
    ]


@pytest.mark.parametrize("shared", [False, True], ids=["inline-text", "shared-strings"])
def test_escaped_carriage_return_in_text_is_a_carriage_return(
    tmp_path: Path, engine: str, shared: bool
) -> None:
    """Excel writes a CR in a cell as _x000D_, and a literal "_x" text as _x005F_x."""
    rows = [["address", "code"], ["1 Main St_x000D_\nApt 2", "_x005F_x0041_"]]
    path = write_xlsx(tmp_path / "list.xlsx", rows)
    if shared:
        to_shared_strings(path)
    address, code = values(read_recipients(path, engine=engine))[0].values()
    assert address == "1 Main St\r\nApt 2"
    if shared:  # inline, openpyxl and calamine disagree on "_x005F_"; Excel never writes it there
        assert code == "_x0041_"


# --- engines -----------------------------------------------------------------


def test_default_engine_is_calamine_when_installed_else_openpyxl(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    assert excel_engine() == ("calamine" if HAVE_CALAMINE else "openpyxl")
    monkeypatch.setitem(sys.modules, "python_calamine", None)  # as if not installed
    assert excel_engine() == "openpyxl"
    path = write_xlsx(tmp_path / "list.xlsx", [["name"], ["Ann"]])
    assert values(read_recipients(path)) == [{"name": "Ann"}]


def test_unknown_engine_is_a_programming_error(tmp_path: Path) -> None:
    path = write_xlsx(tmp_path / "list.xlsx", [["name"], ["Ann"]])
    with pytest.raises(ValueError, match="xlrd"):
        read_recipients(path, engine="xlrd")


def write_rich_workbook(path: Path) -> Path:
    """Every kind of cell a list holds, with the header at B2, blank rows and columns,
    merged cells, formulas, error cells and Excel-style date serials."""
    book = openpyxl.Workbook()
    sheet = book.active
    sheet.title = "Members"
    header = ["이름", "email", "code", "seats", "price", "vip", "joined", "last seen",
              "at", "took", "total", "ratio", "note", "serial day"]
    people = [
        ["김민준", "kim@example.com", "007", 42, 12.5, True, dt.date(2026, 11, 27),
         dt.datetime(2026, 11, 27, 14, 30), dt.time(9, 5), dt.timedelta(hours=30, minutes=5),
         "=D3*E3", "#DIV/0!", "NA", 46353],
        ["Zoë Lefèvre", "zoe@example.com", "010", 7.0, 0.1 + 0.2, False,
         dt.date(1999, 1, 1), dt.datetime(2026, 1, 2, 3, 4, 5), dt.time(23, 59, 59),
         dt.timedelta(minutes=5, seconds=3), None, "#N/A", "a_x000D_\nb", 46353.604166666664],
        [None] * len(header),
        ["박똠", "park@example.com", "000123", -3, 1e-7, None, None, None, None, None,
         None, None, "  spaced  ", 0.3784722222222222],
        ["Merged", "m@example.com", "1", 1234567890123, 2.0 / 3.0, True, None, None, None,
         None, None, None, "over two cells", None],
    ]
    for row_index, row in enumerate([header, *people], start=2):
        for column_index, value in enumerate(row, start=2):
            sheet.cell(row=row_index, column=column_index, value=value)
    for row_index, number_format in ((3, "yyyy-mm-dd"), (4, "yyyy-mm-dd hh:mm"), (6, "h:mm")):
        sheet.cell(row=row_index, column=15).number_format = number_format
    sheet.merge_cells("N7:O7")
    book.create_sheet("Other").append(["name"])
    book.save(path)
    return path


@pytest.mark.skipif(not HAVE_CALAMINE, reason="python-calamine not installed")
def test_both_engines_give_identical_rows_for_a_rich_workbook(tmp_path: Path) -> None:
    path = write_rich_workbook(tmp_path / "rich.xlsx")
    by_openpyxl = read_recipients(path, engine="openpyxl")
    by_calamine = read_recipients(path, engine="calamine")
    assert by_calamine.columns == by_openpyxl.columns
    assert rows_of(by_calamine) == rows_of(by_openpyxl)
    assert by_calamine.notes == by_openpyxl.notes
    assert rows_of(by_calamine)[0] == (3, {
        "이름": "김민준", "email": "kim@example.com", "code": "007", "seats": "42",
        "price": "12.5", "vip": "TRUE", "joined": "2026-11-27", "last seen": "2026-11-27 14:30",
        "at": "09:05", "took": "30:05", "total": "", "ratio": "", "note": "NA",
        "serial day": "2026-11-27",
    })
    assert [row for row, _ in rows_of(by_calamine)] == [3, 4, 6, 7]
    assert rows_of(by_calamine)[1][1]["serial day"] == "2026-11-27 14:30"
    assert rows_of(by_calamine)[1][1]["note"] == "a\r\nb"
    assert rows_of(by_calamine)[2][1]["serial day"] == "09:05"


# --- row numbers and headers -------------------------------------------------


def test_row_numbers_are_sheet_rows_and_empty_rows_do_not_shift_them(
    tmp_path: Path, engine: str
) -> None:
    rows = [["name"], ["Ann"], [None], ["Bob"]]
    recipients = read_xlsx(tmp_path, rows, engine)
    assert [(r.row, r.values["name"]) for r in recipients] == [(2, "Ann"), (4, "Bob")]


def test_sheet_starting_at_b3_keeps_the_sheets_row_numbers_and_column_letters(
    tmp_path: Path, engine: str
) -> None:
    book = openpyxl.Workbook()
    sheet = book.active
    sheet["B3"], sheet["C3"] = "name", "email"
    sheet["B4"], sheet["C4"] = "Ann", "a@x.org"
    sheet["B6"], sheet["C6"] = "Cy", "c@x.org"
    book.save(tmp_path / "list.xlsx")
    recipients = read_recipients(tmp_path / "list.xlsx", engine=engine)
    assert recipients.columns == ["name", "email"]
    assert rows_of(recipients) == [
        (4, {"name": "Ann", "email": "a@x.org"}),
        (6, {"name": "Cy", "email": "c@x.org"}),
    ]
    sheet["E5"] = "stray"  # a value under no name: the message names the sheet's column
    book.save(tmp_path / "list.xlsx")
    message = error_text(tmp_path / "list.xlsx", engine=engine)
    assert "column E has values but no name in row 3" in message


def test_merged_cells_have_their_value_in_the_first_cell_only(
    tmp_path: Path, engine: str
) -> None:
    path = write_xlsx(
        tmp_path / "list.xlsx",
        [["name", "city", "note"], ["Ann", "Oslo", "x"], ["Bob", None, "y"], ["Cy", "Rome", "z"]],
    )
    book = openpyxl.load_workbook(path)
    book.active.merge_cells("B2:B3")
    book.active.merge_cells("A4:C4")
    book.save(path)
    assert values(read_recipients(path, engine=engine)) == [
        {"name": "Ann", "city": "Oslo", "note": "x"},
        {"name": "Bob", "city": "", "note": "y"},
        {"name": "Cy", "city": "", "note": ""},
    ]


def test_csv_row_numbers_skip_empty_rows_without_shifting(tmp_path: Path) -> None:
    text = "name,city\nAnn,Oslo\n,\n\nBob,Rome\n"  # an Excel-saved empty row, then a blank line
    recipients = read_recipients(write_csv(tmp_path / "l.csv", text))
    assert [(r.row, r.values["name"]) for r in recipients] == [(2, "Ann"), (5, "Bob")]


def test_spaces_around_header_names_are_trimmed_with_a_note(tmp_path: Path, engine: str) -> None:
    recipients = read_xlsx(tmp_path, [[" name ", "email"], ["Ann", "a@example.com"]], engine)
    assert recipients.columns == ["name", "email"]
    assert values(recipients) == [{"name": "Ann", "email": "a@example.com"}]
    assert any("' name '" in note and "'name'" in note for note in recipients.notes)


def test_duplicated_header_names_both_excel_columns(tmp_path: Path, engine: str) -> None:
    path = write_xlsx(tmp_path / "list.xlsx", [["name", "email", "name"], ["Ann", "a@x.org", "A"]])
    message = error_text(path, engine=engine)
    assert "'name' appears twice" in message
    assert "column A" in message and "column C" in message
    assert "rename" in message


def test_unnamed_column_with_values_is_an_error_naming_the_column(
    tmp_path: Path, engine: str
) -> None:
    path = write_xlsx(tmp_path / "list.xlsx", [["name", None, "email"], ["Ann", "x", "a@x.org"]])
    message = error_text(path, engine=engine)
    assert "column B" in message and "no name" in message and "give it a name" in message


def test_unnamed_empty_column_is_ignored(tmp_path: Path, engine: str) -> None:
    recipients = read_xlsx(tmp_path, [["name", None, "email"], ["Ann", None, "a@x.org"]], engine)
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


def broken_xlsx(path: Path, kind: str) -> Path:
    """A file named .xlsx that is not a readable workbook."""
    if kind == "not-a-zip":
        path.write_bytes(b"this is not a zip file at all")
    elif kind == "empty-file":
        path.write_bytes(b"")
    elif kind == "csv-renamed":
        path.write_bytes(b"name,email\nAnn,a@x.org\n")
    elif kind == "zip-without-workbook":
        with zipfile.ZipFile(path, "w") as archive:
            archive.writestr("hello.txt", "hi")
    elif kind == "truncated":
        write_xlsx(path, [["name"], ["Ann"]])
        path.write_bytes(path.read_bytes()[:2000])
    elif kind == "broken-sheet-xml":
        write_xlsx(path, [["name"], ["Ann"]])
        rewrite_parts(path, {"xl/worksheets/sheet1.xml": lambda _: "<worksheet><sheetData><row"})
    return path


BROKEN_KINDS = [
    "not-a-zip", "empty-file", "csv-renamed", "zip-without-workbook", "truncated",
    "broken-sheet-xml",
]


@pytest.mark.parametrize("kind", BROKEN_KINDS)
def test_broken_xlsx_says_it_cannot_read_the_excel_file(
    tmp_path: Path, kind: str, engine: str
) -> None:
    path = broken_xlsx(tmp_path / "list.xlsx", kind)
    message = error_text(path, engine=engine)
    assert message.startswith(f"{path}: cannot read this Excel file (")
    assert message.endswith("); open it in Excel and save it again as .xlsx")


@pytest.mark.skipif(not HAVE_CALAMINE, reason="python-calamine not installed")
@pytest.mark.parametrize("kind", BROKEN_KINDS)
def test_broken_xlsx_message_is_the_same_with_both_engines_but_the_detail(
    tmp_path: Path, kind: str
) -> None:
    """Only the reader's own words in the parentheses differ."""
    path = broken_xlsx(tmp_path / "list.xlsx", kind)
    without_detail = [
        re.sub(r"\(.*\)", "(...)", error_text(path, engine=engine), flags=re.S)
        for engine in ("openpyxl", "calamine")
    ]
    assert without_detail[0] == without_detail[1]


def test_header_without_rows_is_an_error(tmp_path: Path, engine: str) -> None:
    assert "column names but no rows" in error_text(write_csv(tmp_path / "l.csv", "name,email\n"))
    path = write_xlsx(tmp_path / "l.xlsx", [["name", "email"], [None, None]])
    assert "column names but no rows" in error_text(path, engine=engine)


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
        (dt.time(9, 5, 7, 999999), "09:05:07"),
        (dt.timedelta(hours=30, minutes=5), "30:05"),
        (dt.timedelta(minutes=5, seconds=3), "00:05:03"),
        (dt.timedelta(0), "00:00"),
        (dt.timedelta(hours=-1, minutes=-30), "-01:30"),
        (dt.timedelta(hours=100, seconds=59, microseconds=999999), "100:00:59"),
        (pd.Timedelta(hours=2, minutes=15), "02:15"),
        (True, "TRUE"),
        (False, "FALSE"),
    ],
)
def test_cell_text_shows_values_as_a_spreadsheet_does(value: Any, shown: str) -> None:
    assert cell_text(value) == shown
