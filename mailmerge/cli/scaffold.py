"""``mailmerge init``: a working starting point in a folder.

::

    mailmerge.toml              the settings, every option explained in comments
    .env.example                where the password goes (the real .env is never committed)
    .gitignore                  keeps .env, the journal, outboxes and reports out of git
    templates/newsletter.md     a Markdown newsletter with an embedded logo and a table
    templates/logo.png
    templates/invoice.txt       a plain-text invoice
    samples/recipients.xlsx     the same rows as an Excel sheet (a real date cell)
    samples/recipients.csv      ... and as a CSV (UTF-8 with BOM, so Excel opens it)

Right after ``init``, with no edits, ``mailmerge preview samples/recipients.xlsx``
and ``mailmerge send samples/recipients.xlsx --outbox outbox`` work.

The text files are copied from ``mailmerge/cli/starter/`` (shipped inside the
package); the logo and the Excel sheet are made here (the sheet from the rows of
the starter CSV, so both lists always hold the same rows). A file that already
exists is never overwritten, not even by a race: every file is created with
exclusive creation, and listed as kept when it is there.
"""

from __future__ import annotations

import csv
import datetime as dt
import io
import shutil
import struct
import zlib
from collections.abc import Callable
from dataclasses import dataclass, field
from importlib import resources
from importlib.resources.abc import Traversable
from pathlib import Path

from ..errors import InputError

STARTER = "starter"

# Destination (relative to the folder) -> source in mailmerge/cli/starter/.
# `.env.example` and `.gitignore` are shipped without their dot: package-data globs skip dot files.
COPIED: dict[str, str] = {
    "mailmerge.toml": "mailmerge.toml",
    ".env.example": "env.example",
    ".gitignore": "gitignore",
    "templates/newsletter.md": "templates/newsletter.md",
    "templates/invoice.txt": "templates/invoice.txt",
    "samples/recipients.csv": "samples/recipients.csv",
}
LOGO = "templates/logo.png"
XLSX = "samples/recipients.xlsx"

#: Every file ``init_folder`` writes, in the order it writes them.
FILES: tuple[str, ...] = (
    "mailmerge.toml",
    ".env.example",
    ".gitignore",
    "templates/newsletter.md",
    LOGO,
    "templates/invoice.txt",
    XLSX,
    "samples/recipients.csv",
)


@dataclass
class ScaffoldResult:
    """What ``init_folder`` did: the files it wrote, and those it found and kept."""

    written: list[Path] = field(default_factory=list)
    kept: list[Path] = field(default_factory=list)


def init_folder(folder: Path) -> ScaffoldResult:
    """Write the starter files into ``folder`` (created if needed); never
    overwrite a file that exists: it is listed in ``kept`` instead."""
    folder = Path(folder)
    result = ScaffoldResult()
    makers: dict[str, Callable[[], bytes]] = {LOGO: logo_png, XLSX: recipients_xlsx}
    for name in FILES:
        target = folder / name
        if target.exists() or target.is_symlink():  # a dangling link is kept too
            result.kept.append(target)
            continue
        try:
            target.parent.mkdir(parents=True, exist_ok=True)
        except (FileExistsError, NotADirectoryError):
            raise InputError(f"{target.parent}: is a file, not a folder; cannot write {target.name} there") from None
        except OSError as error:
            raise InputError(f"{target.parent}: cannot create this folder ({error.strerror or error})") from error
        try:
            content = makers[name]() if name in makers else None
            with target.open("xb") as out:
                try:
                    if content is not None:
                        out.write(content)
                    else:
                        with starter_file(COPIED[name]).open("rb") as source:
                            shutil.copyfileobj(source, out)
                except BaseException:
                    out.close()
                    target.unlink(missing_ok=True)  # ours, half written: not left to be "kept" later
                    raise
        except FileExistsError:  # created by someone else since the check: theirs
            result.kept.append(target)
            continue
        except OSError as error:
            raise InputError(f"{target}: cannot write it ({error.strerror or error})") from error
        result.written.append(target)
    return result


def starter_file(name: str) -> Traversable:
    """A file of ``mailmerge/cli/starter/`` (``name`` with ``/``)."""
    path = resources.files("mailmerge.cli").joinpath(STARTER)
    for part in name.split("/"):
        path = path.joinpath(part)
    return path


# --- the sample list, as an Excel sheet -----------------------------------------


def sample_rows() -> tuple[list[str], list[list[object]]]:
    """The header and rows of the starter CSV, typed as an Excel user would
    type them: ``amount`` a number, ``due`` a date, everything else text (so
    ``007`` keeps its zeros)."""
    text = starter_file(COPIED["samples/recipients.csv"]).read_text(encoding="utf-8-sig")
    reader = csv.reader(io.StringIO(text, newline=""))
    header = next(reader)
    rows: list[list[object]] = []
    for record in reader:
        if not any(record):
            continue
        row: list[object] = []
        for column, value in zip(header, record, strict=True):
            if column == "amount":
                row.append(int(value))
            elif column == "due":
                row.append(dt.date.fromisoformat(value))
            else:
                row.append(value)
        rows.append(row)
    return header, rows


def recipients_xlsx() -> bytes:
    """``samples/recipients.xlsx``: the starter rows, a real date cell in ``due``,
    ``invoice_no`` as text."""
    import openpyxl
    from openpyxl.styles import Font
    from openpyxl.utils import get_column_letter

    header, rows = sample_rows()
    book = openpyxl.Workbook()
    sheet = book.active
    assert sheet is not None
    sheet.title = "Recipients"
    sheet.append(header)
    for row in rows:
        sheet.append(row)
    for column_index, column in enumerate(header, start=1):
        letter = get_column_letter(column_index)
        for cell in sheet[letter][1:]:
            if column == "due":
                cell.number_format = "yyyy-mm-dd"
            elif column == "invoice_no":
                cell.number_format = "@"  # text: Excel keeps the leading zeros when edited
        width = max(len(str(value)) for value in [column, *(row[column_index - 1] for row in rows)])
        sheet.column_dimensions[letter].width = max(10, width + 4)
    for cell in sheet[1]:
        cell.font = Font(bold=True)
    sheet.freeze_panes = "A2"
    buffer = io.BytesIO()
    book.save(buffer)
    return buffer.getvalue()


# --- the logo: a small envelope, drawn pixel by pixel ---------------------------

LOGO_SIZE = (64, 40)
_PAPER = (255, 255, 255)
_INK = (37, 99, 235)
_BACKGROUND = (219, 234, 254)


def logo_png() -> bytes:
    """``templates/logo.png``: a 64x40 RGB PNG of an envelope (always the same bytes)."""
    width, height = LOGO_SIZE
    left, top, right, bottom = 8, 6, width - 9, height - 7
    middle_x, middle_y = (left + right) / 2, (top + bottom) / 2 + 2
    raw = bytearray()
    for y in range(height):
        raw.append(0)  # filter: none
        for x in range(width):
            color = _BACKGROUND
            if left <= x <= right and top <= y <= bottom:
                color = _PAPER
                on_border = x in (left, left + 1, right - 1, right) or y in (top, top + 1, bottom - 1, bottom)
                # the flap: two lines from the top corners to the middle
                flap = False
                if y <= middle_y:
                    along = (y - top) / (middle_y - top)
                    flap = abs(x - (left + along * (middle_x - left))) <= 1.2 or abs(
                        x - (right - along * (right - middle_x))
                    ) <= 1.2
                if on_border or flap:
                    color = _INK
            raw.extend(color)

    def chunk(kind: bytes, data: bytes) -> bytes:
        return struct.pack(">I", len(data)) + kind + data + struct.pack(">I", zlib.crc32(kind + data))

    header = struct.pack(">IIBBBBB", width, height, 8, 2, 0, 0, 0)  # 8-bit RGB
    return (
        b"\x89PNG\r\n\x1a\n"
        + chunk(b"IHDR", header)
        + chunk(b"IDAT", zlib.compress(bytes(raw), 9))
        + chunk(b"IEND", b"")
    )
