"""Issue 15, items 5 and 8, as a person meets them on the command line.

5. A workbook with several sheets: the sheet that was open when the file was
   saved is read, and the output says which one and that there are others.
8. ``{% if amount > 5 %}`` on a cell (text): the error names the template line
   and the row, says that cells are text, and shows the fix.
"""

from __future__ import annotations

import os
import subprocess
import sys
from pathlib import Path

import openpyxl
import pytest

from mailmerge.sources.recipients import EXCEL_ENGINES, read_recipients

TEMPLATE = """\
From: Book Club <club@example.com>
To: {{ name }} <{{ email }}>
Subject: Hello {{ name }}

Dear {{ name }},
"""


def mailmerge(folder: Path, *args: str | Path) -> subprocess.CompletedProcess[str]:
    """Run the command as a person would, in ``folder``, with no mail
    settings from the environment of the test run."""
    environ = {key: value for key, value in os.environ.items() if not key.startswith("MAILMERGE_")}
    environ.update(PYTHONIOENCODING="utf-8", COLUMNS="200")
    return subprocess.run(
        [sys.executable, "-m", "mailmerge", *(str(arg) for arg in args)],
        check=False, cwd=folder, env=environ, capture_output=True, text=True, encoding="utf-8", timeout=120,
    )


def three_sheets(path: Path, *, active: int) -> Path:
    """A workbook as a person leaves it: an old list first, this month's list
    second, a sheet of notes third; ``active`` is the sheet open when saved."""
    book = openpyxl.Workbook()
    old = book.active
    assert old is not None
    old.title = "Old list"
    old.append(["name", "email"])
    old.append(["Olaf", "olaf@example.com"])
    current = book.create_sheet("Members & friends")
    current.append(["name", "email"])
    current.append(["Nina", "nina@example.com"])
    current.append(["Noah", "noah@example.com"])
    book.create_sheet("Notes").append(["remember to print the badges"])
    book.active = active
    book.save(path)
    return path


@pytest.fixture
def folder(tmp_path: Path) -> Path:
    (tmp_path / "letter.txt").write_text(TEMPLATE, encoding="utf-8")
    return tmp_path


def test_the_sheet_open_when_saved_is_read_and_named(folder: Path) -> None:
    three_sheets(folder / "members.xlsx", active=1)

    done = mailmerge(folder, "preview", "members.xlsx", "-t", "letter.txt")

    assert done.returncode == 0, done.stderr
    assert "To: Nina <nina@example.com>" in done.stdout
    assert "To: Noah <noah@example.com>" in done.stdout
    assert "olaf@example.com" not in done.stdout
    assert "read the sheet 'Members & friends', the one open when the file was saved" in done.stderr
    assert "the others: 'Old list', 'Notes'" in done.stderr
    assert "--sheet NAME" in done.stderr


def test_the_first_sheet_when_it_was_the_one_open(folder: Path) -> None:
    three_sheets(folder / "members.xlsx", active=0)

    done = mailmerge(folder, "preview", "members.xlsx", "-t", "letter.txt")

    assert done.returncode == 0, done.stderr
    assert "To: Olaf <olaf@example.com>" in done.stdout
    assert "nina@example.com" not in done.stdout
    assert "read the sheet 'Old list', the one open when the file was saved" in done.stderr


def test_sheet_option_still_wins(folder: Path) -> None:
    three_sheets(folder / "members.xlsx", active=1)

    done = mailmerge(folder, "preview", "members.xlsx", "-t", "letter.txt", "--sheet", "Old list")

    assert done.returncode == 0, done.stderr
    assert "To: Olaf <olaf@example.com>" in done.stdout
    assert "nina@example.com" not in done.stdout
    assert "read the sheet 'Old list' (--sheet); the others: 'Members & friends', 'Notes'" in done.stderr


def test_one_sheet_says_nothing_about_sheets(folder: Path) -> None:
    book = openpyxl.Workbook()
    sheet = book.active
    assert sheet is not None
    sheet.append(["name", "email"])
    sheet.append(["Nina", "nina@example.com"])
    book.save(folder / "members.xlsx")

    done = mailmerge(folder, "check", "members.xlsx", "-t", "letter.txt")

    assert done.returncode == 0, done.stderr
    assert "sheet" not in (done.stdout + done.stderr).lower()


@pytest.mark.parametrize("engine", EXCEL_ENGINES)
def test_both_excel_readers_take_the_active_sheet(tmp_path: Path, engine: str) -> None:
    path = three_sheets(tmp_path / "members.xlsx", active=1)

    recipients = read_recipients(path, engine=engine)

    assert [r.values["email"] for r in recipients] == ["nina@example.com", "noah@example.com"]
    assert any("'Members & friends'" in note for note in recipients.notes)


NUMBERS = """\
From: Book Club <club@example.com>
To: {{ email }}
Subject: Your order

Dear {{ name }},
{% if amount > 5 %}
thank you for your large order.
{% endif %}
"""


def test_comparing_a_cell_with_a_number_says_cells_are_text(folder: Path) -> None:
    (folder / "orders.csv").write_text("name,email,amount\nNina,nina@example.com,12\n", encoding="utf-8")
    (folder / "order.txt").write_text(NUMBERS, encoding="utf-8")

    done = mailmerge(folder, "check", "orders.csv", "-t", "order.txt")

    assert done.returncode == 2
    error = done.stderr.strip()
    assert "Traceback" not in error and "TypeError" not in error
    assert error.startswith("error: ")
    assert "order.txt: line 6: row 2:" in error
    assert "every cell is text" in error
    assert "{% if amount | int > 5 %}" in error
    assert "| float" in error
    assert len(error.splitlines()) == 1


def test_the_hint_names_the_cell_on_the_right_too(folder: Path) -> None:
    (folder / "orders.csv").write_text("name,email,total\nNina,nina@example.com,12.5\n", encoding="utf-8")
    (folder / "order.txt").write_text(NUMBERS.replace("amount > 5", "10 <= total"), encoding="utf-8")

    done = mailmerge(folder, "check", "orders.csv", "-t", "order.txt")

    assert done.returncode == 2
    assert "line 6: row 2:" in done.stderr
    assert "'<=' compares text with a number" in done.stderr
    assert "{% if 10 <= total | int %}" in done.stderr


@pytest.mark.parametrize("engine", EXCEL_ENGINES)
def test_the_active_sheet_counted_past_a_chart_sheet(tmp_path: Path, engine: str) -> None:
    from openpyxl.chart import BarChart, Reference

    path = three_sheets(tmp_path / "members.xlsx", active=0)
    book = openpyxl.load_workbook(path)
    chart = BarChart()
    chart.add_data(Reference(book["Old list"], min_col=1, min_row=1, max_row=2))
    book.create_chartsheet("Chart", 0).add_chart(chart)  # tabs: Chart, Old list, Members & friends, Notes
    book.active = 2
    book.save(path)

    recipients = read_recipients(path, engine=engine)

    assert [r.values["email"] for r in recipients] == ["nina@example.com", "noah@example.com"]
