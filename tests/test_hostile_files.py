"""Lists and replies written by strangers: what we write and show cannot be
turned against the reader, and no list can take the process down.

Zip bombs run the real command in a subprocess under an address-space limit
(RLIMIT_AS): the test process's own peak memory is a lifetime high-water mark,
and a bomb that got through would abort or exhaust that subprocess, not this one.
"""

from __future__ import annotations

import csv
import os
import random
import resource
import struct
import subprocess
import sys
import zipfile
import zlib
from collections.abc import Iterator
from contextlib import contextmanager
from pathlib import Path
from typing import Any

import pytest
from conftest import run_cli, write_config, write_template, write_xlsx
from smtp_server import SmtpTestServer

from mailmerge.sources.recipients import EXCEL_MAX_UNPACKED, checked_excel_copy, read_recipients
from mailmerge.untrusted import FORMULA_STARTS, from_spreadsheet, spreadsheet_safe, visible

TITLE = "\x1b]0;pwned\x07"  # sets the terminal window's title
CLEAR = "\x1b[2J"  # clears the screen
RESET = "\x1bc"  # resets the terminal
TEMPLATE = """\
From: Club <club@example.com>
To: {{ email }}
Subject: Your invoice

Dear {{ name }},
see you soon.
"""
MEMORY_BOUND = 1 << 30  # address space of a command reading a bomb


# --- helpers -----------------------------------------------------------------------


@contextmanager
def server_replying(replies: dict[str, str]) -> Iterator[SmtpTestServer]:
    """A plain SMTP server that answers RCPT TO of these addresses with these replies."""
    with SmtpTestServer() as server:
        handler = server._controller.handler  # type: ignore[union-attr]
        accept = handler.handle_RCPT

        async def handle_rcpt(smtp: Any, session: Any, envelope: Any, address: str, options: list[str]) -> str:
            if address in replies:
                return replies[address]
            return str(await accept(smtp, session, envelope, address, options))

        handler.handle_RCPT = handle_rcpt  # each new connection looks the hook up again
        yield server


def read_report(path: Path) -> list[dict[str, str]]:
    with path.open(encoding="utf-8-sig", newline="") as handle:
        return list(csv.DictReader(handle))


def run_bounded(*args: str | Path, cwd: Path) -> subprocess.CompletedProcess[str]:
    """``mailmerge ARGS`` in a subprocess that may use at most MEMORY_BOUND of address space."""

    def limit() -> None:
        resource.setrlimit(resource.RLIMIT_AS, (MEMORY_BOUND, MEMORY_BOUND))

    env = {**os.environ, "PYTHONPATH": os.pathsep.join(sys.path), "MAILMERGE_PASSWORD": "x"}
    return subprocess.run(
        [sys.executable, "-m", "mailmerge", *map(str, args)], cwd=cwd, env=env, capture_output=True,
        text=True, timeout=300, preexec_fn=limit,
    )


def assert_one_line_error(result: subprocess.CompletedProcess[str], expected: str) -> None:
    assert result.returncode == 2, (result.returncode, result.stderr[-2000:])
    assert "Traceback" not in result.stderr and "panicked" not in result.stderr
    assert len(result.stderr.strip().splitlines()) == 1, result.stderr
    assert expected in result.stderr


def workbook_parts(tmp_path: Path) -> dict[str, bytes]:
    """The parts of a real one-row workbook, written by openpyxl."""
    path = write_xlsx(tmp_path / "model.xlsx", ("name", "email"), [("Ann", "ann@example.com")])
    with zipfile.ZipFile(path) as book:
        return {name: book.read(name) for name in book.namelist()}


def sheet_with(parts: dict[str, bytes], extra_rows: bytes) -> dict[str, bytes]:
    sheet = parts["xl/worksheets/sheet1.xml"]
    return {**parts, "xl/worksheets/sheet1.xml": sheet.replace(b"</sheetData>", extra_rows + b"</sheetData>")}


def write_parts(path: Path, parts: dict[str, bytes], level: int = 9) -> Path:
    with zipfile.ZipFile(path, "w", zipfile.ZIP_DEFLATED, compresslevel=level) as book:
        for name, data in parts.items():
            book.writestr(name, data)
    return path


def write_streamed(book: zipfile.ZipFile, name: str, head: bytes, filler: bytes, size: int, tail: bytes) -> None:
    """A part of ``size`` bytes (head, filler repeated, tail), compressed as it is written."""
    with book.open(name, "w") as part:
        part.write(head)
        chunk = filler * (1 << 20)
        left = size - len(head) - len(tail)
        while left > 0:
            part.write(chunk[:left])
            left -= len(chunk)
        part.write(tail)


# --- 4. formulas in the report, 7. control characters on the terminal and in the report ---


def test_cells_and_replies_reach_neither_the_terminal_nor_the_report_raw(tmp_path: Path) -> None:
    replies = {
        "refused@example.com": f"550 5.1.1 {TITLE}no such user{CLEAR}",
        "formula@example.com": '550 =HYPERLINK("http://evil.example/","details")',
    }
    rows = [
        ("=HYPERLINK(\"http://evil.example/\",\"Click\")", "-bob@example.com"),  # valid: may start with -
        (f"Ann {TITLE}{CLEAR}", "refused@example.com"),
        ("Formula", "formula@example.com"),
        ("Eve", f"eve{RESET}@example.com"),
        ("+Cid", "=cid@example.com"),
    ]
    lines = ["name,email", *(f'"{name.replace(chr(34), chr(34) * 2)}",{email}' for name, email in rows)]
    listing = tmp_path / "list.csv"
    listing.write_text("\n".join(lines) + "\n", encoding="utf-8")
    template = write_template(tmp_path / "t.txt", TEMPLATE)
    with server_replying(replies) as server:
        write_config(tmp_path, server, security="none", username=None)
        run = run_cli("send", listing, "-t", template, "--yes")

    assert run.exit_code == 3, run.output
    shown = run.output
    assert "\x1b" not in shown and "\x07" not in shown
    assert r"no such user\x1b[2J" in shown  # the server's reply, on the progress line
    assert "row 5: invalid: the To header would contain a control character (U+001B, from the list)" in shown

    raw = (tmp_path / "list.report.csv").read_bytes()
    assert b"\x1b" not in raw and b"\x07" not in raw
    report = {int(line["row"]): line for line in read_report(tmp_path / "list.report.csv")}
    assert report[3]["reason"] == r"5.1.1 \x1b]0;pwned\x07no such user\x1b[2J"
    assert report[4]["reason"] == "'=HYPERLINK(\"http://evil.example/\",\"details\")"
    assert report[5]["status"] == "invalid" and "U+001B" in report[5]["reason"]
    for line in report.values():  # no cell a spreadsheet would run
        assert not any(value.startswith(FORMULA_STARTS) for value in line.values()), line
    # Addresses stay matchable: one ' in front, which from_spreadsheet takes off.
    assert (report[2]["status"], report[2]["address"]) == ("sent", "'-bob@example.com")
    assert (report[6]["status"], report[6]["address"]) == ("sent", "'=cid@example.com")
    assert [from_spreadsheet(report[n]["address"]) for n in (2, 6)] == ["-bob@example.com", "=cid@example.com"]
    assert sorted(r for m in server.messages for r in m.rcpt_tos) == ["-bob@example.com", "=cid@example.com"]


def test_preview_shows_cells_as_text_not_as_terminal_codes_markup_or_emoji(tmp_path: Path) -> None:
    listing = tmp_path / "list.csv"
    listing.write_text(f"name,email\n\"{TITLE}[bold red]Ann[/] :smile: {CLEAR}\u202eevil\x9b31m\",ann@example.com\n",
                       encoding="utf-8")
    template = write_template(tmp_path / "t.txt", TEMPLATE)

    run = run_cli("preview", listing, "-t", template)
    as_json = run_cli("preview", listing, "-t", template, "--json")

    assert run.exit_code == 0, run.output
    assert not any(ch in run.output for ch in "\x1b\x07\x9b\u202e")
    assert r"Dear \x1b]0;pwned\x07[bold red]Ann[/] :smile: \x1b[2J\u202eevil\x9b31m," in run.stdout
    assert "\x9b" not in as_json.stdout and "\\u009b" in as_json.stdout  # JSON escapes, same string when parsed
    assert f"{CLEAR}\u202eevil\x9b31m" in __import__("json").loads(as_json.stdout)["rows"][0]["text"]


@pytest.mark.parametrize(
    ("value", "written"),
    [
        ("=1+1", "'=1+1"), ("-bob@example.com", "'-bob@example.com"), ("+82 10", "'+82 10"), ("@SUM(A1)", "'@SUM(A1)"),
        ("\t=1", "'\t=1"), ("\r=1", "'\r=1"), ("\uff1d1+1", "'\uff1d1+1"), ("'=1", "''=1"),
        ("O'Brien", "O'Brien"), ("'quoted'", "'quoted'"), ("a=b", "a=b"), ("", ""),
    ],
)
def test_spreadsheet_safe_defuses_formulas_and_from_spreadsheet_undoes_it(value: str, written: str) -> None:
    assert spreadsheet_safe(value) == written
    assert from_spreadsheet(written) == value


def test_visible_writes_out_controls_and_keeps_only_what_it_is_told() -> None:
    assert visible(f"a{TITLE}b\x00\x7f\x9b\u202ec") == r"a\x1b]0;pwned\x07b\x00\x7f\x9b\u202ec"
    assert visible("line\n\tnext\r", keep="\n\t") == "line\n\tnext\\x0d"
    assert visible("김민수 Zoë 📚") == "김민수 Zoë 📚"


def test_a_list_of_protected_values_reads_back_as_the_original(tmp_path: Path) -> None:
    listing = tmp_path / "again.csv"
    listing.write_text("name,email\n'=Ann,'-bob@example.com\nO'Brien,'plain@example.com\n", encoding="utf-8")

    rows = read_recipients(listing).rows

    assert [r.values for r in rows] == [
        {"name": "=Ann", "email": "-bob@example.com"},
        {"name": "O'Brien", "email": "'plain@example.com"},
    ]


# --- 5. Excel zip bombs ------------------------------------------------------------------


def test_an_xlsx_that_declares_gigabytes_is_refused_before_reading(tmp_path: Path) -> None:
    """300 parts of 1 MB each (under the ratio check's size): the total is over the limit."""
    path = tmp_path / "bomb.xlsx"
    with zipfile.ZipFile(path, "w", zipfile.ZIP_DEFLATED, compresslevel=9) as book:
        for name, data in workbook_parts(tmp_path).items():
            book.writestr(name, data)
        for n in range(300):
            book.writestr(f"xl/media/padding{n}.xml", bytes(1 << 20))
    assert path.stat().st_size < 2 << 20
    template = write_template(tmp_path / "t.txt", TEMPLATE)

    result = run_bounded("preview", path, "-t", template, cwd=tmp_path)

    assert_one_line_error(result, f"unpacks to more than {EXCEL_MAX_UNPACKED >> 20} MB")


def test_a_part_that_unpacks_to_a_thousand_times_its_size_is_refused(tmp_path: Path) -> None:
    """100 MB of text in one cell, 100 kB packed: under the total, over the ratio."""
    path = tmp_path / "bomb.xlsx"
    parts = workbook_parts(tmp_path)
    sheet = parts.pop("xl/worksheets/sheet1.xml")
    head, tail = sheet.split(b"</sheetData>")
    with zipfile.ZipFile(path, "w", zipfile.ZIP_DEFLATED, compresslevel=9) as book:
        for name, data in parts.items():
            book.writestr(name, data)
        write_streamed(book, "xl/worksheets/sheet1.xml", head + b'<row r="3"><c r="A3" t="inlineStr"><is><t>',
                       b"a", 100 << 20, b"</t></is></c></row></sheetData>" + tail)
    template = write_template(tmp_path / "t.txt", TEMPLATE)

    result = run_bounded("preview", path, "-t", template, cwd=tmp_path)

    assert_one_line_error(result, "xl/worksheets/sheet1.xml unpacks to")
    assert "(the limit is 200)" in result.stderr


def lie_about_size(path: Path, name: str, declared: int, crc_of: bytes) -> None:
    """Make the archive's headers (local and central) say ``name`` is
    ``declared`` bytes with the CRC of ``crc_of``: the checks Python's zipfile
    makes then pass on the first ``declared`` bytes, whatever follows."""
    data = bytearray(path.read_bytes())
    crc = zlib.crc32(crc_of)
    encoded = name.encode()
    for signature, crc_at, size_at in ((b"PK\x03\x04", 14, 22), (b"PK\x01\x02", 16, 24)):
        start = 0
        while (start := data.find(signature, start)) >= 0:
            name_at = start + (30 if signature == b"PK\x03\x04" else 46)
            if data[name_at:name_at + len(encoded)] == encoded:
                struct.pack_into("<I", data, start + crc_at, crc)
                struct.pack_into("<I", data, start + size_at, declared)
            start += 4
    path.write_bytes(data)


def test_an_xlsx_whose_headers_lie_about_the_size_inflates_no_more_than_they_say(tmp_path: Path) -> None:
    """The sheet is 600 MB of one cell's text; the headers say 2,000 bytes, with
    the CRC of the first 2,000. Only those are inflated, and the reader gets a
    copy holding only them. (calamine 0.9.1's zip crate stops at the declared
    size too; the copy makes it so whatever the reader's version.)"""
    path = tmp_path / "liar.xlsx"
    parts = workbook_parts(tmp_path)
    sheet = parts.pop("xl/worksheets/sheet1.xml")
    head = sheet.split(b"<sheetData>")[0] + b'<sheetData><row r="1"><c r="A1" t="inlineStr"><is><t>'
    with zipfile.ZipFile(path, "w", zipfile.ZIP_DEFLATED, compresslevel=9) as book:
        for name, data in parts.items():
            book.writestr(name, data)
        write_streamed(book, "xl/worksheets/sheet1.xml", head, b"a", 600 << 20,
                       b"</t></is></c></row></sheetData></worksheet>")
    declared = 2000
    lie_about_size(path, "xl/worksheets/sheet1.xml", declared, (head + b"a" * declared)[:declared])
    template = write_template(tmp_path / "t.txt", TEMPLATE)

    result = run_bounded("preview", path, "-t", template, cwd=tmp_path)

    assert_one_line_error(result, "cannot read this Excel file")
    copy = checked_excel_copy(path, tmp_path)
    with zipfile.ZipFile(copy) as book:
        assert len(book.read("xl/worksheets/sheet1.xml")) == declared


def preview_a_sheet_with(tmp_path: Path, rows: bytes) -> subprocess.CompletedProcess[str]:
    """``preview`` of a workbook whose sheet holds ``rows`` (raw XML), in a bounded process."""
    path = write_parts(tmp_path / "far.xlsx", sheet_with(workbook_parts(tmp_path), rows))
    return run_bounded("preview", path, "-t", write_template(tmp_path / "t.txt", TEMPLATE), cwd=tmp_path)


def test_a_cell_at_the_last_cell_of_excel_is_refused_not_a_crash(tmp_path: Path) -> None:
    """One cell at XFD1048576 makes calamine allocate 17 billion cells: it aborts the process."""
    result = preview_a_sheet_with(tmp_path, b'<row r="1048576"><c r="XFD1048576" t="inlineStr"><is><t>x</t></is></c></row>')

    assert_one_line_error(result, "a cell of the sheet is at XFD1048576")


@pytest.mark.parametrize("far", ["T1000000", "A1048577"])
def test_a_row_far_down_is_refused_when_the_rectangle_is_too_big(tmp_path: Path, far: str) -> None:
    """20 columns down to row 1,000,000 is 20 million cells; row 1,048,577 is past Excel's last."""
    row = far.lstrip("AT")
    result = preview_a_sheet_with(tmp_path, f'<row r="{row}"><c r="{far}" t="inlineStr"><is><t>x</t></is></c></row>'.encode())

    assert_one_line_error(result, "more than the 10,000,000 cells mailmerge reads from Excel")


def test_cells_that_do_not_say_where_they_are_are_placed_as_calamine_places_them(tmp_path: Path) -> None:
    """16,384 cells without r in row 1048576: as far as XFD1048576."""
    result = preview_a_sheet_with(tmp_path, b'<row r="1048576">' + b'<c t="inlineStr"><is><t>x</t></is></c>' * 16384 + b"</row>")

    assert_one_line_error(result, "a cell of the sheet is at XFD1048576")


@pytest.mark.parametrize("engine", ["calamine", "openpyxl"])
def test_a_sheet_whose_cells_do_not_say_where_they_are_still_reads(tmp_path: Path, engine: str) -> None:
    parts = workbook_parts(tmp_path)
    sheet = parts["xl/worksheets/sheet1.xml"]
    for ref in (b' r="A1"', b' r="B1"', b' r="A2"', b' r="B2"'):
        sheet = sheet.replace(ref, b"")
    path = write_parts(tmp_path / "plain.xlsx", {**parts, "xl/worksheets/sheet1.xml": sheet})

    rows = read_recipients(path, engine=engine).rows

    assert [r.values for r in rows] == [{"name": "Ann", "email": "ann@example.com"}]


# --- 9. no traceback on bad input ----------------------------------------------------------


def hostile(tmp_path: Path, kind: str) -> tuple[Path, list[str]]:
    """A hostile list file, and the extra options to read it with."""
    noise = random.Random(12).randbytes(4000)
    if kind == "binary-as-latin-1":
        return write_bytes(tmp_path / "l.csv", noise), ["--encoding", "latin-1"]
    if kind == "binary-without-nul-as-latin-1":
        return write_bytes(tmp_path / "l.csv", noise.replace(b"\x00", b"x")), ["--encoding", "latin-1"]
    if kind == "binary-guessed":
        return write_bytes(tmp_path / "l.csv", noise), []
    if kind == "unknown-codec":
        return write_bytes(tmp_path / "l.csv", b"name,email\nA,a@example.com\n"), ["--encoding", "klingon"]
    if kind == "codec-of-bytes":
        return write_bytes(tmp_path / "l.csv", b"name,email\nA,a@example.com\n"), ["--encoding", "zlib_codec"]
    if kind == "xlsx-named-csv":
        path = write_xlsx(tmp_path / "book.xlsx", ("name", "email"), [("A", "a@example.com")])
        return write_bytes(tmp_path / "l.csv", path.read_bytes()), []
    if kind == "unclosed-quote":
        return write_bytes(tmp_path / "l.csv", b'name,email\nA,a@example.com\n"B,b@example.com\n'), []
    if kind == "xls-or-password":
        return write_bytes(tmp_path / "l.xlsx", b"\xd0\xcf\x11\xe0\xa1\xb1\x1a\xe1" + bytes(600)), []
    if kind == "xlsx-without-sheets":
        parts = {n: d for n, d in workbook_parts(tmp_path).items() if "worksheets" not in n}
        book = parts["xl/workbook.xml"]
        parts["xl/workbook.xml"] = book[:book.index(b"<sheets>")] + b"<sheets/>" + book[book.index(b"</sheets>") + 9:]
        return write_parts(tmp_path / "l.xlsx", parts), []
    raise AssertionError(kind)


def write_bytes(path: Path, data: bytes) -> Path:
    path.write_bytes(data)
    return path


@pytest.mark.parametrize(
    ("kind", "expected"),
    [
        ("binary-as-latin-1", "l.csv: not a text file (it is full of NUL bytes)"),
        ("binary-without-nul-as-latin-1", "l.csv: "),
        ("binary-guessed", "l.csv: "),
        ("unknown-codec", "--encoding klingon: no such encoding"),
        ("codec-of-bytes", "--encoding zlib_codec: not an encoding of text"),
        ("xlsx-named-csv", "l.csv: this is an Excel file, not a CSV file; rename it to .xlsx"),
        ("unclosed-quote", 'l.csv: a quote (") opened in line 3 is never closed'),
        ("xls-or-password", "an old .xls file, or a workbook with a password"),
        ("xlsx-without-sheets", "l.xlsx: the workbook has no sheet"),
    ],
)
def test_hostile_lists_give_a_short_error_and_exit_2(tmp_path: Path, kind: str, expected: str) -> None:
    path, options = hostile(tmp_path, kind)
    template = write_template(tmp_path / "t.txt", TEMPLATE)

    run = run_cli("preview", path, "-t", template, *options)

    assert run.exit_code == 2, run.output
    assert "Traceback" not in run.output
    assert 1 <= len(run.stderr.strip().splitlines()) <= 2, run.stderr
    assert expected in run.stderr


def test_a_bare_cr_ends_lines_and_stays_inside_a_quoted_value(tmp_path: Path) -> None:
    """Old Mac line ends (CR alone), and a CR inside a quoted value; the ; is still found."""
    listing = write_bytes(tmp_path / "l.csv", b'name;email\rA;a@example.com\r"B\rX";b@example.com\r')

    rows = read_recipients(listing).rows

    assert [r.values for r in rows] == [
        {"name": "A", "email": "a@example.com"},
        {"name": "B\rX", "email": "b@example.com"},
    ]
