"""Read a list of recipients (CSV or Excel) into rows of text.

Every value reaches the template as the person sees it in the sheet: ``007``
stays ``007``, a whole number is ``42`` (not ``42.0``), a date is
``2026-11-27`` (not ``2026-11-27 00:00:00``) and an empty cell is ``""``.
pandas does the reading (Excel with calamine when it is installed, else
openpyxl; both give the same text); this module turns its cells into that
text, finds the file's encoding and delimiter, and says what it assumed.
"""

from __future__ import annotations

import csv
import datetime as dt
import importlib.util
import io
import math
import re
from collections.abc import Iterator, Sequence
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import pandas as pd
from openpyxl.utils import get_column_letter

from .errors import RecipientsError, did_you_mean

CSV_SUFFIXES = {".csv", ".tsv", ".txt"}
EXCEL_SUFFIXES = {".xlsx", ".xlsm"}
EXCEL_ENGINES = ("calamine", "openpyxl")
DELIMITERS = (",", ";", "\t")


@dataclass(frozen=True)
class Recipient:
    """One row of the list: its row number in the sheet and its values as text."""

    row: int  # as the person sees it: the header is row 1, the first data row is 2
    values: dict[str, str]


@dataclass
class RecipientList:
    """The rows of a list, its column names, and what the reader had to assume."""

    path: Path
    columns: list[str]
    rows: list[Recipient]
    notes: list[str] = field(default_factory=list)  # for the user: guesses, fixes

    def __len__(self) -> int:
        return len(self.rows)

    def __iter__(self) -> Iterator[Recipient]:
        return iter(self.rows)


def read_recipients(
    path: Path | str,
    *,
    sheet: str | None = None,
    encoding: str | None = None,
    engine: str | None = None,
) -> RecipientList:
    """Read a .csv/.tsv/.txt or .xlsx/.xlsm file into a :class:`RecipientList`.

    ``sheet`` picks an Excel sheet by name (default: the first); ``encoding``
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
        table = _read_excel_table(path, sheet, engine or excel_engine())
    else:
        table = _read_csv_table(path, encoding, notes)
    return _to_recipients(path, table, notes, excel=suffix in EXCEL_SUFFIXES)


# --- Excel -----------------------------------------------------------------


def excel_engine() -> str:
    """The pandas engine for .xlsx/.xlsm: ``"calamine"`` (several times faster)
    when python-calamine is installed, else ``"openpyxl"``."""
    return "calamine" if importlib.util.find_spec("python_calamine") else "openpyxl"


def _read_excel_table(path: Path, sheet: str | None, engine: str) -> list[list[Any]]:
    try:
        with pd.ExcelFile(path, engine=engine) as book:
            names = [str(name) for name in book.sheet_names]  # worksheets only, no charts
            if sheet is not None and sheet not in names:
                raise RecipientsError(
                    f"{path}: no sheet named '{sheet}'{did_you_mean(sheet, names)} "
                    f"(sheets: {', '.join(names)})"
                )
            if not names:
                return []
            frame = pd.read_excel(
                book,
                # By name: calamine's sheet index counts chart sheets too.
                sheet_name=sheet if sheet is not None else names[0],
                header=None,
                dtype=object,
                keep_default_na=False,
                na_filter=False,
            )
    except RecipientsError:
        raise
    except Exception as error:  # zipfile, openpyxl, calamine and pandas each raise their own
        raise RecipientsError(
            f"{path}: cannot read this Excel file ({type(error).__name__}: {error}); "
            "open it in Excel and save it again as .xlsx"
        ) from error
    table = frame.values.tolist()
    if engine == "openpyxl":
        table = [[_unescape_ooxml(v) if isinstance(v, str) else v for v in row] for row in table]
    return table


# Excel stores a control character in a cell's text as _xHHHH_ (a carriage
# return as _x000D_). calamine decodes these; openpyxl leaves them in the text.
_OOXML_CONTROL = re.compile(r"_x(00[01][0-9A-Fa-f])_")


def _unescape_ooxml(text: str) -> str:
    if "_x" not in text:
        return text
    return _OOXML_CONTROL.sub(lambda match: chr(int(match.group(1), 16)), text)


# --- CSV -------------------------------------------------------------------


def _read_csv_table(path: Path, encoding: str | None, notes: list[str]) -> list[list[Any]]:
    try:
        data = path.read_bytes()
    except OSError as error:
        raise RecipientsError(f"{path}: cannot read the file ({error.strerror})") from error
    text, used, guessed = decode_text(data, encoding, path)
    if guessed:
        notes.append(
            f"{path.name}: not UTF-8; read it as {used} ({ENCODING_NAMES.get(used, used)}). "
            "If names look wrong, pass --encoding."
        )
    delimiter = sniff_delimiter(text)
    try:
        frame = pd.read_csv(
            io.StringIO(text),
            sep=delimiter,
            header=None,
            dtype=str,
            keep_default_na=False,
            na_filter=False,
            skip_blank_lines=False,
        )
    except pd.errors.EmptyDataError:
        return []
    except pd.errors.ParserError as error:
        raise RecipientsError(
            f"{path}: the rows do not line up ({error}); "
            "a value with the delimiter in it needs quotes around it"
        ) from error
    return frame.values.tolist()


ENCODING_NAMES = {
    "cp949": "Korean Windows, as Korean Excel saves CSV",
    "cp1252": "Western Windows, as Western Excel saves CSV",
}


def decode_text(data: bytes, encoding: str | None, path: Path) -> tuple[str, str, bool]:
    """Decode a text file; return ``(text, encoding, guessed)``.

    UTF-8 (with or without BOM) and UTF-16 with BOM are recognised; anything
    else is a guess between cp949 (Korean Excel) and cp1252 (Western Excel),
    with charset-normalizer for the rest. ``guessed`` is True when the user
    should be told which encoding was assumed.
    """
    if encoding:
        try:
            return data.decode(encoding), encoding, False
        except LookupError as error:
            raise RecipientsError(f"--encoding {encoding}: no such encoding") from error
        except UnicodeDecodeError as error:
            raise RecipientsError(
                f"{path}: not valid {encoding} at byte {error.start}; "
                "try --encoding utf-8, cp949 or cp1252"
            ) from error
    if data.startswith(b"\xef\xbb\xbf"):
        return data[3:].decode("utf-8", errors="strict"), "utf-8-sig", False
    if data.startswith((b"\xff\xfe", b"\xfe\xff")):
        return data.decode("utf-16"), "utf-16", False
    try:
        return data.decode("utf-8"), "utf-8", False
    except UnicodeDecodeError:
        pass
    for candidate, plausible in (("cp949", _looks_korean), ("cp1252", _looks_western)):
        try:
            text = data.decode(candidate)
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
        rows = [row for row in csv.reader(io.StringIO(head), delimiter=delimiter) if row][:50]
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
    return f"column {get_column_letter(index + 1)}" if excel else f"column {index + 1}"


def _to_recipients(
    path: Path, table: Sequence[Sequence[Any]], notes: list[str], *, excel: bool
) -> RecipientList:
    """Turn a table of raw cells (header row first) into a RecipientList."""
    rows = [[cell_text(value) for value in raw] for raw in table]
    # The header is the first row with anything in it; rows above it are blank.
    start = next((i for i, row in enumerate(rows) if any(v.strip() for v in row)), None)
    if start is None:
        raise RecipientsError(f"{path}: the list is empty; put column names in the first row")
    header = rows[start]
    columns: list[str | None] = []
    seen: dict[str, int] = {}
    for index, raw_name in enumerate(header):
        name = raw_name.strip()
        if name != raw_name:
            notes.append(f"{path.name}: column name '{raw_name}' has spaces around it; using '{name}'")
        if not name:
            if any(index < len(row) and row[index].strip() for row in rows[start + 1 :]):
                raise RecipientsError(
                    f"{path}: {_column_name(index, excel)} has values but no name in row "
                    f"{start + 1}; give it a name"
                )
            columns.append(None)  # an empty, unnamed column: nothing to lose
            continue
        if name in seen:
            raise RecipientsError(
                f"{path}: the column name '{name}' appears twice "
                f"({_column_name(seen[name], excel)} and {_column_name(index, excel)}); "
                "rename one of them"
            )
        seen[name] = index
        columns.append(name)
    recipients = []
    for offset, row in enumerate(rows[start + 1 :], start=start + 2):
        if not any(value.strip() for value in row):
            continue  # a fully empty row
        values = {
            name: (row[i] if i < len(row) else "") for i, name in enumerate(columns) if name
        }
        recipients.append(Recipient(row=offset, values=values))
    if not recipients:
        raise RecipientsError(f"{path}: the list has column names but no rows")
    return RecipientList(path=path, columns=[c for c in columns if c], rows=recipients, notes=notes)
