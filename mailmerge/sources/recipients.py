"""Read a list of recipients (CSV or Excel) into rows of text.

Every value reaches the template as the person sees it in the sheet: ``007``
stays ``007``, a whole number is ``42`` (not ``42.0``), a date is
``2026-11-27`` (not ``2026-11-27 00:00:00``) and an empty cell is ``""``.
pandas does the reading (Excel with calamine when it is installed, else
openpyxl; both give the same text); this module turns its cells into that
text, finds the file's encoding and delimiter, and says what it assumed.
"""

from __future__ import annotations

import codecs
import csv
import datetime as dt
import html
import importlib.util
import io
import math
import os
import re
import tempfile
import zipfile
import zlib
from collections.abc import Iterable, Iterator, Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import IO, Any

import pandas as pd

from ..errors import RecipientsError, did_you_mean
from ..spool import Spool, spool_folder
from ..untrusted import from_spreadsheet

CSV_SUFFIXES = {".csv", ".tsv", ".txt"}
EXCEL_SUFFIXES = {".xlsx", ".xlsm"}
EXCEL_ENGINES = ("calamine", "openpyxl")
DELIMITERS = (",", ";", "\t")


@dataclass(frozen=True)
class Recipient:
    """One row of the list: its row number in the sheet and its values as text."""

    row: int  # as the person sees it: the header is row 1, the first data row is 2
    values: dict[str, str]


class RecipientList:
    """The rows of a list, its column names, and what the reader had to assume.

    Iterating gives the rows in order, as often as needed. A list read from a
    file is read once, into a :class:`~mailmerge.spool.Spool` on disk: a list
    of a million rows is neither held in memory nor parsed again.
    """

    def __init__(
        self,
        path: Path,
        columns: list[str],
        rows: Iterable[Recipient] | Spool[tuple[int, dict[str, str]]],
        notes: list[str] | None = None,
    ) -> None:
        self.path = path
        self.columns = columns
        self.notes = notes or []
        if isinstance(rows, Spool):
            self._spool: Spool[tuple[int, dict[str, str]]] | None = rows
            self._held: list[Recipient] | None = None
        else:
            self._spool, self._held = None, list(rows)
        self.count = len(self._held) if self._held is not None else len(rows)  # type: ignore[arg-type]

    def __len__(self) -> int:
        return self.count

    def __iter__(self) -> Iterator[Recipient]:
        if self._held is not None:
            return iter(self._held)
        return (Recipient(row, values) for row, values in self._spool)  # type: ignore[union-attr]

    @property
    def rows(self) -> list[Recipient]:
        """All rows as a list (for short lists and tests)."""
        return list(self)

    @property
    def first_row(self) -> int:
        return next(iter(self)).row


def read_recipients(
    path: Path | str,
    *,
    sheet: str | None = None,
    encoding: str | None = None,
    engine: str | None = None,
) -> RecipientList:
    """Read a .csv/.tsv/.txt or .xlsx/.xlsm file into a :class:`RecipientList`.

    ``sheet`` picks an Excel sheet by name (default: the sheet that was active
    when the workbook was saved; a note names it when there are others); ``encoding``
    overrides the guessed encoding of a CSV file; ``engine`` forces the pandas
    Excel engine, ``"calamine"`` or ``"openpyxl"`` (default:
    :func:`excel_engine`); both give the same text. Raises
    :class:`RecipientsError` with a message naming the file for anything that
    cannot be read, and for a list with no rows.
    """
    if engine is not None and engine not in EXCEL_ENGINES:
        raise ValueError(f"engine must be one of {EXCEL_ENGINES}, not {engine!r}")
    path = Path(path)
    suffix = path.suffix.lower()
    if suffix not in CSV_SUFFIXES | EXCEL_SUFFIXES:
        raise RecipientsError(
            f"{path}: cannot read '{suffix or 'no extension'}' files; "
            "save the list as .xlsx or .csv"
        )
    if not path.is_file():
        raise RecipientsError(f"{path}: no such file")
    notes: list[str] = []
    if suffix in EXCEL_SUFFIXES:
        table = _read_excel_table(path, sheet, engine or excel_engine(), notes)
        return _to_recipients(path, iter([table]), notes, excel=True)
    return _to_recipients(path, _csv_chunks(path, encoding, notes), notes, excel=False)


# --- Excel -----------------------------------------------------------------


def excel_engine() -> str:
    """The pandas engine for .xlsx/.xlsm: ``"calamine"`` (several times faster)
    when python-calamine is installed, else ``"openpyxl"``."""
    return "calamine" if importlib.util.find_spec("python_calamine") else "openpyxl"


def _read_excel_table(path: Path, sheet: str | None, engine: str, notes: list[str]) -> list[list[Any]]:
    with tempfile.TemporaryDirectory(prefix="mailmerge-") as folder:
        checked = checked_excel_copy(path, Path(folder))
        return _read_checked_excel(path, checked, sheet, engine, notes)


def _read_checked_excel(
    path: Path, checked: Path, sheet: str | None, engine: str, notes: list[str] | None = None,
) -> list[list[Any]]:
    try:
        with pd.ExcelFile(checked, engine=engine) as book:
            names = [str(name) for name in book.sheet_names]  # worksheets only, no charts
            if sheet is not None and sheet not in names:
                raise RecipientsError(
                    f"{path}: no sheet named '{sheet}'{did_you_mean(sheet, names)} "
                    f"(sheets: {', '.join(names)})"
                )
            if not names:
                raise RecipientsError(f"{path}: the workbook has no sheet; put the list on a sheet")
            chosen = sheet if sheet is not None else _active_sheet(checked, names)
            if len(names) > 1 and notes is not None:
                notes.append(_sheet_note(path, chosen, names, given=sheet is not None))
            frame = pd.read_excel(
                book,
                # By name: calamine's sheet index counts chart sheets too.
                sheet_name=chosen,
                header=None,
                dtype=object,
                keep_default_na=False,
                na_filter=False,
            )
    except RecipientsError:
        raise
    except Exception as error:  # zipfile, openpyxl, calamine and pandas each raise their own
        raise RecipientsError(_unreadable(path, f"{type(error).__name__}: {error}")) from error
    table = frame.values.tolist()
    if engine == "openpyxl":
        table = [[_unescape_ooxml(v) if isinstance(v, str) else v for v in row] for row in table]
    return table


def _sheet_note(path: Path, chosen: str, names: list[str], *, given: bool) -> str:
    others = ", ".join(f"'{name}'" for name in names if name != chosen)
    if given:
        return f"{path.name}: read the sheet '{chosen}' (--sheet); the others: {others}"
    return (f"{path.name}: read the sheet '{chosen}', the one open when the file was saved; "
            f"the others: {others}. Pass --sheet NAME to read another.")


# The workbook part, and in it the sheet that was open when the file was saved.
_WORKBOOK_PART = "xl/workbook.xml"  # where Excel, LibreOffice and openpyxl put it
_ACTIVE_TAB = re.compile(rb"""<(?:\w+:)?workbookView\b[^>]*?\sactiveTab\s*=\s*["']([0-9]{1,5})["']""")
_SHEET_NAME = re.compile(rb"""<(?:\w+:)?sheet\b[^>]*?\sname\s*=\s*(?:"([^"]*)"|'([^']*)')""")


def _active_sheet(checked: Path, names: list[str]) -> str:
    """The worksheet that was active when the workbook was saved (its
    ``activeTab``), else the first. ``activeTab`` counts chart sheets too, so
    it is looked up by name among all sheets; a chart sheet gives the first."""
    try:
        with zipfile.ZipFile(checked) as archive:
            data = archive.read(_WORKBOOK_PART)
    except (KeyError, OSError, zipfile.BadZipFile):
        return names[0]
    tab = _ACTIVE_TAB.search(data)
    if tab is None:
        return names[0]
    sheets = [html.unescape((double or single).decode("utf-8", "replace"))
              for double, single in _SHEET_NAME.findall(data)]
    index = int(tab[1])
    return sheets[index] if index < len(sheets) and sheets[index] in names else names[0]


# Excel stores a control character in a cell's text as _xHHHH_ (a carriage
# return as _x000D_). calamine decodes these; openpyxl leaves them in the text.
_OOXML_CONTROL = re.compile(r"_x(00[01][0-9A-Fa-f])_")


def _unescape_ooxml(text: str) -> str:
    if "_x" not in text:
        return text
    return _OOXML_CONTROL.sub(lambda match: chr(int(match.group(1), 16)), text)


# --- Excel: unpacked within limits before a reader sees it -------------------
#
# An .xlsx is a zip archive of XML. A small one can unpack to gigabytes (a zip
# bomb), and a sheet with one cell at XFD1048576 makes calamine allocate every
# cell up to it, which aborts the process. So the archive is unpacked here,
# through Python's zipfile (which never inflates past the sizes it declares and
# checks each part's CRC), within these limits, and packed again (the fastest
# compression: calamine reads an uncompressed archive more slowly): the Excel
# reader only ever sees bytes that were counted. A real 100,000-row
# list unpacks to 30 MB (5 columns) to 126 MB (20 columns, text inline).

EXCEL_MAX_UNPACKED = 256 * 1024 * 1024  # bytes, all parts together
EXCEL_MAX_RATIO = 200  # unpacked/packed, for a part of more than EXCEL_RATIO_FROM
EXCEL_RATIO_FROM = 1024 * 1024
EXCEL_MAX_PARTS = 10_000
EXCEL_MAX_CELLS = 10_000_000  # the rows times the columns that the sheet spans
EXCEL_LAST_ROW, EXCEL_LAST_COLUMN = 1_048_576, 16_384  # Excel's own limits (XFD1048576)

_ZIP_MAGIC = b"PK\x03\x04"
_OLE_MAGIC = b"\xd0\xcf\x11\xe0"  # .xls, and any workbook saved with a password


def checked_excel_copy(path: Path, folder: Path) -> Path:
    """Unpack the .xlsx/.xlsm at ``path`` within the limits above and pack it
    again into ``folder``; return the copy's path. Raises
    :class:`RecipientsError` (one line, naming the limit) for a file that is
    not a workbook, is damaged, or goes past a limit."""
    try:
        handle = path.open("rb")  # opened once: the file checked is the file read
    except OSError as error:
        raise RecipientsError(f"{path}: cannot read the file ({error.strerror or error})") from error
    with handle:
        return _checked_copy(path, handle, folder)


def _checked_copy(path: Path, handle: IO[bytes], folder: Path) -> Path:
    magic = handle.read(4)
    if magic == _OLE_MAGIC:
        raise RecipientsError(_unreadable(path, "an old .xls file, or a workbook with a password"))
    if magic != _ZIP_MAGIC:
        raise RecipientsError(_unreadable(path, "not a zip archive, as every .xlsx is"))
    handle.seek(0)
    copy = folder / f"checked{path.suffix.lower()}"
    try:
        with zipfile.ZipFile(handle) as archive, \
                zipfile.ZipFile(copy, "w", zipfile.ZIP_DEFLATED, compresslevel=1) as checked:
            parts = [info for info in archive.infolist() if not info.is_dir()]
            _check_declared(path, parts)
            unpacked = 0
            for info in parts:
                with archive.open(info) as member:  # stops at the declared size
                    data = member.read(EXCEL_MAX_UNPACKED - unpacked + 1)
                unpacked += len(data)
                if unpacked > EXCEL_MAX_UNPACKED:  # not reached while the sizes tell the truth
                    raise RecipientsError(_too_big(path))
                _check_extent(path, data)
                checked.writestr(info.filename, data)
    except RecipientsError:
        raise
    except (zipfile.BadZipFile, zlib.error, EOFError, NotImplementedError, RuntimeError, ValueError) as error:
        raise RecipientsError(_unreadable(path, f"damaged: {error}")) from error
    except OSError as error:
        raise RecipientsError(f"{path}: cannot read the file ({error.strerror or error})") from error
    return copy


def _check_declared(path: Path, parts: list[zipfile.ZipInfo]) -> None:
    """Refuse an archive whose directory already says it is too big."""
    if len(parts) > EXCEL_MAX_PARTS:
        raise RecipientsError(f"{path}: {len(parts):,} parts in the archive, more than the {EXCEL_MAX_PARTS:,} "
                              "mailmerge reads; save the list as .csv")
    names = [info.filename for info in parts]
    if len(set(names)) != len(names):
        raise RecipientsError(_unreadable(path, "damaged: a part appears twice"))
    if sum(info.file_size for info in parts) > EXCEL_MAX_UNPACKED:
        raise RecipientsError(_too_big(path))
    for info in parts:
        if info.file_size > EXCEL_RATIO_FROM and info.file_size > EXCEL_MAX_RATIO * max(info.compress_size, 1):
            raise RecipientsError(
                f"{path}: the part {info.filename} unpacks to {info.file_size // max(info.compress_size, 1):,} "
                f"times its size (the limit is {EXCEL_MAX_RATIO}): not a list saved by a spreadsheet; "
                "save the list as .csv"
            )


def _unreadable(path: Path, why: str) -> str:
    return f"{path}: cannot read this Excel file ({why}); open it in Excel and save it again as .xlsx"


def _too_big(path: Path) -> str:
    return (f"{path}: unpacks to more than {EXCEL_MAX_UNPACKED // 2**20} MB (an .xlsx is a zip archive), the limit "
            "mailmerge reads; save the list as .csv, which has no limit")


# Where a cell is: the r="B7" of a <c> (a <row> has r="7"). The pattern takes r
# in any form calamine accepts (spaces around =, either quote, lower case),
# and ends of other attribute names too ("...r=") when their value looks like a
# position: that can only overestimate.
_POSITION_LETTERS = re.compile(rb"""r\s*=\s*["']([A-Za-z]*)[0-9]+["']""")
_POSITION_DIGITS = re.compile(rb"""r\s*=\s*["'][A-Za-z]*0*([0-9]+)["']""")
_ANY_CELL = re.compile(rb"<c(?=[\s/>])")
_PREFIXED = re.compile(rb":(?:c|row)[\s/>]")
_TAG = re.compile(rb"<(/?)(?:[A-Za-z_][\w.-]*:)?(row|c)(?=[\s/>])([^>]*)>")
_R_VALUES = re.compile(rb"""(?:^|\s)r\s*=\s*["']([A-Za-z]*)0*([0-9]+)["']""")


def _check_extent(path: Path, data: bytes) -> None:
    """Refuse a part that places a cell so far out that the sheet would span
    more than EXCEL_MAX_CELLS cells (calamine holds the whole rectangle)."""
    if b"<c" not in data:
        return
    if not _PREFIXED.search(data) and len(_ANY_CELL.findall(data)) == data.count(b'<c r="'):
        # Every cell says where it is (as Excel, LibreOffice and openpyxl write): fast.
        columns = max((_column_number(word) for word in set(_POSITION_LETTERS.findall(data))), default=0)
        rows = _rows_past(data, min(EXCEL_LAST_ROW, EXCEL_MAX_CELLS // max(columns, 1)))
    else:
        rows, columns = _walk_cells(data)
    if rows > EXCEL_LAST_ROW or columns > EXCEL_LAST_COLUMN or rows * columns > EXCEL_MAX_CELLS:
        where = f"{_column_letters(columns)}{rows}" if columns <= EXCEL_LAST_COLUMN and rows <= EXCEL_LAST_ROW \
            else "beyond XFD1048576, the last cell of Excel"
        raise RecipientsError(
            f"{path}: a cell of the sheet is at {where}, which makes more than the {EXCEL_MAX_CELLS:,} cells "
            "mailmerge reads from Excel; delete what is after your data, or save the list as .csv"
        )


def _rows_past(data: bytes, limit: int) -> int:
    """The last row named in ``data`` when one is past ``limit``, else 0. Reads
    only the row numbers as long as ``limit``'s: few, in a sheet within it."""
    as_long = re.compile(rb"""r\s*=\s*["'][A-Za-z]*0*([1-9][0-9]{%d,})["']""" % (len(str(limit)) - 1))
    last = max((_row_number(digits) for digits in set(as_long.findall(data))), default=0)
    return last if last > limit else 0


def _walk_cells(data: bytes) -> tuple[int, int]:
    """The last row and column a cell lands on, placed as calamine places them
    (a cell or a row without r follows the one before; ``<c/>`` is a cell).
    Slow; only for files whose cells do not all say where they are."""
    row = column = last_row = last_column = 0  # row, column: where the next cell goes (from 0)
    for closing, name, attributes in _TAG.findall(data):
        if closing:
            if name == b"row":
                row, column = row + 1, 0
            continue
        # Several r in one tag: the largest, which can only overestimate.
        positions = [(_row_number(d), _column_number(w)) for w, d in _R_VALUES.findall(attributes)]
        if name == b"row":
            if positions:
                row = max(r for r, _ in positions) - 1
            if attributes.endswith(b"/"):
                row, column = row + 1, 0
            continue
        if positions:
            row_here, column_here = max(r for r, _ in positions) - 1, max(c for _, c in positions) - 1
        else:
            row_here, column_here = row, column
        column = column_here + 1
        last_row, last_column = max(last_row, row_here + 1), max(last_column, column_here + 1)
    return last_row, last_column


def _row_number(digits: bytes) -> int:
    return int(digits) if len(digits) <= 8 else EXCEL_LAST_ROW + 1


def _column_number(letters: bytes) -> int:
    """Excel's number of a column (A -> 1, AA -> 27); 0 for none."""
    if len(letters) > 4:
        return EXCEL_LAST_COLUMN + 1
    number = 0
    for letter in letters.upper():
        number = number * 26 + letter - ord("A") + 1
    return number


# --- CSV -------------------------------------------------------------------


CSV_SAMPLE_BYTES = 1 << 20  # enough to tell the encoding and the delimiter
CSV_CHUNK_ROWS = 20_000


def _looks_binary(text: str) -> bool:
    """NUL in more than one character in a thousand: a binary file, not a list.
    A stray one in a cell (a web form's export) is not enough: that row is
    then judged on its own (a control character in a header makes it invalid)."""
    found = text.count("\x00")
    return found > 3 and found * 1000 > len(text)


def _csv_chunks(path: Path, encoding: str | None, notes: list[str]) -> Iterator[list[list[Any]]]:
    """Read the whole file in chunks of rows, through one opening of it: its
    start tells the encoding and the delimiter, then pandas reads it all."""
    try:
        handle = path.open("rb")
    except OSError as error:
        raise RecipientsError(f"{path}: cannot read the file ({error.strerror})") from error
    with handle:
        try:
            sample = handle.read(CSV_SAMPLE_BYTES)
            size = os.fstat(handle.fileno()).st_size
            handle.seek(0)
        except OSError as error:
            raise RecipientsError(f"{path}: cannot read the file ({error.strerror})") from error
        if sample.startswith((_ZIP_MAGIC, _OLE_MAGIC)):
            raise RecipientsError(f"{path}: this is an Excel file, not a CSV file; rename it to .xlsx")
        text, used, guessed = decode_text(sample, encoding, path, partial=size > len(sample))
        if _looks_binary(text):
            raise RecipientsError(
                f"{path}: not a text file (it is full of NUL bytes); "
                "a CSV list is text: save it from your spreadsheet as 'CSV UTF-8'"
            )
        if guessed:
            notes.append(
                f"{path.name}: not UTF-8; read it as {used} ({ENCODING_NAMES.get(used, used)}). "
                "If names look wrong, pass --encoding."
            )
        try:
            reader = pd.read_csv(
                handle, sep=sniff_delimiter(text), encoding=used, header=None, dtype=str, keep_default_na=False,
                na_filter=False, skip_blank_lines=False, chunksize=CSV_CHUNK_ROWS,
            )
            with reader:
                for frame in reader:
                    yield frame.values.tolist()
        except pd.errors.EmptyDataError:
            return
        except pd.errors.ParserError as error:
            raise RecipientsError(_parser_error(path, error)) from error
        except UnicodeDecodeError as error:
            raise RecipientsError(
                f"{path}: not valid {used} further in the file ({error.reason}); "
                "pass --encoding (utf-8, cp949 or cp1252)"
            ) from error


def _parser_error(path: Path, error: Exception) -> str:
    """pandas' complaint about a CSV file, said for a person, in one line."""
    text = " ".join(str(error).split())
    if quote := re.search(r"EOF inside string starting at row (\d+)", text):
        return (f"{path}: a quote (\") opened in line {int(quote[1]) + 1} is never closed; "
                "close it, or remove it")
    if fields := re.search(r"Expected (\d+) fields in line (\d+), saw (\d+)", text):
        return (f"{path}: the rows do not line up: line {fields[2]} has {fields[3]} values, the first {fields[1]}; "
                "a value with the delimiter in it needs quotes around it")
    return f"{path}: cannot read this CSV file ({text.removeprefix('Error tokenizing data. ')})"


ENCODING_NAMES = {
    "cp949": "Korean Windows, as Korean Excel saves CSV",
    "cp1252": "Western Windows, as Western Excel saves CSV",
}


def decode_text(data: bytes, encoding: str | None, path: Path, *, partial: bool = False) -> tuple[str, str, bool]:
    """Decode a text file; return ``(text, encoding, guessed)``.

    ``partial``: ``data`` is the start of a longer file, maybe cut inside a
    character, which must not count against an encoding.

    UTF-8 (with or without BOM) and UTF-16 with BOM are recognised; anything
    else is a guess between cp949 (Korean Excel) and cp1252 (Western Excel),
    with charset-normalizer for the rest. ``guessed`` is True when the user
    should be told which encoding was assumed.
    """
    if encoding:
        try:
            text_codec = codecs.lookup(encoding)._is_text_encoding  # not zlib, base64, rot13
        except LookupError as error:
            raise RecipientsError(f"--encoding {encoding}: no such encoding; try utf-8, cp949 or cp1252") from error
        if not text_codec:
            raise RecipientsError(f"--encoding {encoding}: not an encoding of text; try utf-8, cp949 or cp1252")
        try:
            return _decode(data, encoding, partial), encoding, False
        except UnicodeDecodeError as error:
            raise RecipientsError(
                f"{path}: not valid {encoding} at byte {error.start}; "
                "try --encoding utf-8, cp949 or cp1252"
            ) from error
    if data.startswith(b"\xef\xbb\xbf"):
        return _decode(data[3:], "utf-8", partial), "utf-8-sig", False
    if data.startswith((b"\xff\xfe", b"\xfe\xff")):
        return _decode(data, "utf-16", partial), "utf-16", False
    try:
        return _decode(data, "utf-8", partial), "utf-8", False
    except UnicodeDecodeError:
        pass
    for candidate, plausible in (("cp949", _looks_korean), ("cp1252", _looks_western)):
        try:
            text = _decode(data, candidate, partial)
        except UnicodeDecodeError:
            continue
        if plausible(text):
            return text, candidate, True
    from charset_normalizer import from_bytes

    best = from_bytes(data).best()
    if best is None:
        raise RecipientsError(
            f"{path}: cannot tell the file's encoding; save it as 'CSV UTF-8' "
            "or pass --encoding"
        )
    return str(best), best.encoding, True


def _decode(data: bytes, encoding: str, partial: bool) -> str:
    """Decode strictly; with ``partial``, a character cut at the end is not an error."""
    return codecs.getincrementaldecoder(encoding)(errors="strict").decode(data, final=not partial)


def _non_ascii(text: str) -> list[str]:
    return [ch for ch in text if ord(ch) > 127]


def _looks_korean(text: str) -> bool:
    """True when the text decoded as cp949 reads as Korean.

    cp949 decodes some Western text without error (``À`` or a curly quote and
    the next letter make a rare syllable), so a successful decode proves
    nothing. Korean text is mostly Hangul syllables, and a good share of them
    are among the 2,350 common ones of KS X 1001 (both bytes in 0xA1..0xFE);
    misread Western bytes land almost only among the rare ones.
    """
    chars = _non_ascii(text)
    syllables = [ch for ch in chars if "\uac00" <= ch <= "\ud7a3"]
    if not chars or len(syllables) < 0.6 * len(chars):
        return False
    common = 0
    for ch in syllables:
        encoded = ch.encode("cp949")
        if 0xB0 <= encoded[0] <= 0xC8 and encoded[1] >= 0xA1:
            common += 1
    return common >= 0.25 * len(syllables)


def _looks_western(text: str) -> bool:
    """True when most non-ASCII characters are Latin letters or typographic marks."""
    chars = _non_ascii(text)
    latin = sum(1 for ch in chars if ch.isalpha() or ch in "€‚„…†‡ˆ‰‹‘’“”•–—˜™›°§£¥©®«»±·¿¡")
    return latin >= 0.6 * len(chars)


def sniff_delimiter(text: str) -> str:
    """Pick ``,``, ``;`` or TAB: the one that splits the first lines into the
    same number of columns (most columns wins a tie); ``,`` for one column."""
    head = text[:65536]
    if len(text) > len(head) and "\n" in head:
        head = head[: head.rindex("\n")]
    best, best_score = ",", (0.0, 1)
    for delimiter in DELIMITERS:
        try:  # newline="": a CR alone ends a line, as pandas reads it
            rows = [row for row in csv.reader(io.StringIO(head, newline=""), delimiter=delimiter) if row][:50]
        except csv.Error:  # a stray quote: the file's own problem, said when pandas reads it
            continue
        if not rows or len(rows[0]) < 2:
            continue
        width = len(rows[0])
        score = (sum(len(row) == width for row in rows) / len(rows), width)
        if score > best_score:
            best, best_score = delimiter, score
    return best


# --- cells to text ---------------------------------------------------------


def cell_text(value: Any) -> str:
    """The text a spreadsheet shows for a cell value read by pandas."""
    if value is None or value is pd.NaT:
        return ""
    if isinstance(value, str):
        return value
    if isinstance(value, bool):
        return "TRUE" if value else "FALSE"
    if isinstance(value, int):
        return str(value)
    if isinstance(value, float):
        if math.isnan(value):
            return ""
        if value.is_integer() and abs(value) < 1e15:
            return str(int(value))
        return f"{value:.15g}"  # Excel shows at most 15 significant digits
    if isinstance(value, dt.datetime):  # pandas.Timestamp is one too
        if (value.hour, value.minute, value.second, value.microsecond) == (0, 0, 0, 0):
            return value.strftime("%Y-%m-%d")
        return value.strftime("%Y-%m-%d %H:%M" if value.second == 0 else "%Y-%m-%d %H:%M:%S")
    if isinstance(value, dt.date):
        return value.isoformat()
    if isinstance(value, dt.time):
        return value.strftime("%H:%M" if value.second == 0 else "%H:%M:%S")
    if isinstance(value, dt.timedelta):  # a duration cell ([h]:mm:ss); pandas.Timedelta too
        return _duration_text(value)
    return str(value)


def _duration_text(value: dt.timedelta) -> str:
    """``30:05`` for 30 h 5 min, as Excel shows ``[hh]:mm``: hours go past 24;
    seconds only when there are any, and fractions dropped, as for a time."""
    seconds = abs(value) // dt.timedelta(seconds=1)
    hours, rest = divmod(seconds, 3600)
    minutes, seconds = divmod(rest, 60)
    text = f"{hours:02d}:{minutes:02d}" + (f":{seconds:02d}" if seconds else "")
    return f"-{text}" if value < dt.timedelta(0) else text


def _column_name(index: int, excel: bool) -> str:
    return f"column {_column_letters(index + 1)}" if excel else f"column {index + 1}"


def _column_letters(number: int) -> str:
    """Excel's name of column ``number`` (1 -> A, 27 -> AA)."""
    letters = ""
    while number:
        number, rest = divmod(number - 1, 26)
        letters = chr(ord("A") + rest) + letters
    return letters


def _to_recipients(
    path: Path, tables: Iterator[Sequence[Sequence[Any]]], notes: list[str], *, excel: bool,
) -> RecipientList:
    """Turn chunks of raw cells (header row first) into a RecipientList, in one
    pass: find and check the header, check every row, and write the rows to a
    spool beside the list, from which every later pass reads them."""
    columns: list[str | None] | None = None
    header_at = 0  # the header's row number in the sheet
    spool: Spool[tuple[int, dict[str, str]]] = Spool(spool_folder(path.parent))
    for number, row in _numbered_rows(tables):
        if columns is None:
            if any(value.strip() for value in row):
                columns, header_at = _columns(path, row, number, excel, notes), number
            continue
        if not any(value.strip() for value in row):
            continue  # a fully empty row
        for index, name in enumerate(columns):
            if name is None and index < len(row) and row[index].strip():
                raise RecipientsError(
                    f"{path}: {_column_name(index, excel)} has values but no name in row "
                    f"{header_at}; give it a name"
                )
        spool.append((number, _values(row, columns)))
    if columns is None:
        raise RecipientsError(f"{path}: the list is empty; put column names in the first row")
    if not spool.count:
        raise RecipientsError(f"{path}: the list has column names but no rows")
    return RecipientList(path, [c for c in columns if c], spool, notes)


def _numbered_rows(tables: Iterator[Sequence[Sequence[Any]]]) -> Iterator[tuple[int, list[str]]]:
    """Each row as text, with its number in the sheet (the first row is 1).

    A value that a spreadsheet export protected against formulas (``'=1+1``,
    ``'-bob@example.com``, as our report writes them) gets its value back."""
    number = 0
    for table in tables:
        for raw in table:
            number += 1
            row = [cell_text(value) for value in raw]
            if "\n'" in "\n" + "\n".join(row):  # a cell starts with ': rare, so found for the whole row at once
                row = [from_spreadsheet(text) for text in row]
            yield number, row


def _values(row: list[str], columns: list[str | None]) -> dict[str, str]:
    return {name: (row[i] if i < len(row) else "") for i, name in enumerate(columns) if name}


def _columns(path: Path, header: list[str], number: int, excel: bool, notes: list[str]) -> list[str | None]:
    """The column names of the header row; None for an unnamed column."""
    columns: list[str | None] = []
    seen: dict[str, int] = {}
    for index, raw_name in enumerate(header):
        name = raw_name.strip()
        if name != raw_name:
            notes.append(f"{path.name}: column name '{raw_name}' has spaces around it; using '{name}'")
        if not name:
            columns.append(None)  # checked for values row by row
            continue
        if name in seen:
            raise RecipientsError(
                f"{path}: the column name '{name}' appears twice "
                f"({_column_name(seen[name], excel)} and {_column_name(index, excel)}); "
                "rename one of them"
            )
        seen[name] = index
        columns.append(name)
    return columns
