"""Jinja filters for mail merge: dates, amounts and first names from the list.

Every value from the list reaches the template as text, as the person sees it
in the sheet (``1250000``, ``1,250,000``, ``2026-11-27``, ``""`` for an empty
cell). These filters read that text and write it the way a letter needs it::

    {{ due | date("%Y년 %m월 %d일") }}    2026-11-27       -> 2026년 11월 27일
    {{ due | date("%-d %B %Y") }}         2026-11-27 14:30 -> 27 November 2026
    {{ amount | money("KRW") }}           1250000          -> ₩1,250,000
    {{ amount | money("EUR") }}           1250.5           -> €1,250.50
    {{ amount | money("CHF") }}           1250000          -> 1,250,000 CHF
    {{ amount | number }}                 1250000          -> 1,250,000
    {{ amount | number(2) }}              1250000          -> 1,250,000.00
    {{ name | first_name }}               Dr. John Smith   -> John
    {{ name | first_name }}               김민수            -> 민수

An empty cell gives ``""`` from every filter, so a row with a blank date or
amount still renders. To put something in its place, use Jinja's built-in
``default`` filter with its second argument ``true`` (which also replaces an
empty string, not only a missing value)::

    Dear {{ nickname | default("friend", true) }},
    Due: {{ due | date("%d.%m.%Y") | default("on receipt", true) }}

A value that cannot be read (``next week`` for a date, ``abc`` for an amount)
raises :class:`ValueError` naming the value and what was expected; the
template layer reports it as an error of that row and line.

Every filter returns a plain ``str``, so in HTML and Markdown templates the
result is still HTML-escaped like any other value.
"""

from __future__ import annotations

import datetime as dt
import decimal
import re
from collections.abc import Callable
from decimal import ROUND_HALF_UP, Decimal
from typing import Any

__all__ = ["FILTERS", "date", "first_name", "money", "number"]

# --- date -----------------------------------------------------------------

# YYYY-MM-DD, YYYY/MM/DD or YYYY.MM.DD (one separator throughout), then an
# optional time: " 14:30", " 14:30:05", "T14:30:05.123".
_DATE = re.compile(
    r"(?P<year>\d{4})(?P<sep>[-/.])(?P<month>\d{1,2})(?P=sep)(?P<day>\d{1,2})"
    r"(?:[ T]+(?P<hour>\d{1,2}):(?P<minute>\d{2})(?::(?P<second>\d{2})(?:\.(?P<fraction>\d{1,6}))?)?)?"
)
# A strftime directive, with the "-" flag (no zero padding) that glibc knows.
_DIRECTIVE = re.compile(r"%(-?)(.)", re.DOTALL)
_DATE_EXAMPLE = "a date like 2026-11-27 (or 2026-11-27 14:30)"
_YEAR_LAST = re.compile(r"\d{1,2}[-/.]\d{1,2}[-/.]\d{4}\b.*")


def _is_empty(value: Any) -> bool:
    return value is None or (isinstance(value, str) and not value.strip())


def parse_date(value: Any) -> dt.date:
    """Read a cell as a :class:`datetime.date` or :class:`datetime.datetime`.

    Accepts date and datetime objects, and the unambiguous text forms
    ``2026-11-27``, ``2026/11/27`` and ``2026.11.27``, each with an optional
    time (``14:30`` or ``14:30:05``). A form such as ``27.11.2026`` or
    ``11/27/2026`` is refused: day and month could be either way round.
    """
    if isinstance(value, dt.date):  # a datetime is a date too
        return value
    text = str(value).strip()
    match = _DATE.fullmatch(text)
    if not match:
        hint = "; day and month could be either way round, write the year first" if _YEAR_LAST.fullmatch(text) else ""
        raise ValueError(f"date: {text!r} is not {_DATE_EXAMPLE}{hint}")
    parts = match.groupdict()
    try:
        if parts["hour"] is None:
            return dt.date(int(parts["year"]), int(parts["month"]), int(parts["day"]))
        return dt.datetime(
            int(parts["year"]), int(parts["month"]), int(parts["day"]),
            int(parts["hour"]), int(parts["minute"]), int(parts["second"] or 0),
            int((parts["fraction"] or "0").ljust(6, "0")),
        )
    except ValueError as error:  # 2026-02-30, 25:00
        raise ValueError(f"date: {text!r} is not a real date or time ({error})") from None


def date(value: Any, format: str = "%Y-%m-%d") -> str:
    """Write a date from the list with a strftime ``format``.

    ``{{ due | date("%Y년 %m월 %d일") }}`` gives ``2026년 11월 27일`` for
    ``2026-11-27``. The text of the format is kept as it is (any language);
    only its ``%`` directives are filled in, one at a time, so it works in any
    locale. ``%-d``, ``%-m``, ``%-H``... drop the leading zero on every
    platform: ``{{ due | date("%-m월 %-d일") }}`` gives ``3월 5일`` for
    ``2026-03-05``. Date and datetime objects work too. An empty cell gives
    ``""``; text that is not a date raises :class:`ValueError`.
    """
    if _is_empty(value):
        return ""
    when = parse_date(value)
    return _DIRECTIVE.sub(lambda m: _directive(when, m.group(1), m.group(2)), str(format))


def _directive(when: dt.date, flag: str, code: str) -> str:
    if code == "%":
        return "%"
    text = when.strftime("%" + code)  # an ASCII format: safe in any locale
    if flag == "-" and text.isdigit():
        text = text.lstrip("0") or "0"
    return text


# --- money and number ----------------------------------------------------

# symbol, decimals; the symbol goes before the amount.
CURRENCIES: dict[str, tuple[str, int]] = {
    "KRW": ("₩", 0),
    "USD": ("$", 2),
    "EUR": ("€", 2),
    "JPY": ("¥", 0),
    "GBP": ("£", 2),
    "CNY": ("¥", 2),
}
_NUMBER = re.compile(
    r"(?P<sign>[+-]?)(?P<whole>\d{1,3}(?:,\d{3})+|\d+)?(?:\.(?P<fraction>\d+))?(?:[eE][+-]?\d{1,3})?"
)
_NUMBER_EXAMPLE = "a number like 1250000, 1,250,000 or -42.50"
_MAX_DECIMALS = 10


def parse_number(value: Any, what: str = "number") -> Decimal:
    """Read a cell as a :class:`~decimal.Decimal`, exactly as written.

    Accepts ``1250000``, ``1,250,000`` (commas only between groups of three
    digits), ``1250000.5``, ``-42``, ``+42``, spaces around it, and the
    ``1.5e+20`` form a sheet gives for very large or small numbers; also int,
    float and Decimal objects. ``what`` names the filter in the error.
    """
    if isinstance(value, Decimal):
        amount = value
    elif isinstance(value, (int, float)) and not isinstance(value, bool):
        amount = Decimal(str(value))
    else:
        text = str(value).strip()
        match = _NUMBER.fullmatch(text)
        if not match or not (match.group("whole") or match.group("fraction")):
            raise ValueError(f"{what}: {text!r} is not {_NUMBER_EXAMPLE}")
        amount = Decimal(text.replace(",", ""))
    if not amount.is_finite():
        raise ValueError(f"{what}: {value!r} is not {_NUMBER_EXAMPLE}")
    return amount


def _own_decimals(amount: Decimal) -> int:
    """The decimals the value is written with, at most 2 (0 for a whole number)."""
    exponent = amount.as_tuple().exponent
    assert isinstance(exponent, int)  # finite
    return min(max(-exponent, 0), 2)


def _check_decimals(decimals: Any, what: str) -> int:
    if isinstance(decimals, bool) or not isinstance(decimals, int) or not 0 <= decimals <= _MAX_DECIMALS:
        raise ValueError(f"{what}: decimals must be a whole number from 0 to {_MAX_DECIMALS}, not {decimals!r}")
    return decimals


def _grouped(amount: Decimal, decimals: int) -> tuple[str, str]:
    """The sign (``"-"`` or ``""``) and the absolute amount rounded half up
    to ``decimals`` places, with commas between thousands."""
    shape = amount.as_tuple()
    assert isinstance(shape.exponent, int)  # finite
    digits = len(shape.digits) + abs(shape.exponent) + decimals
    with decimal.localcontext() as context:
        context.prec = max(28, digits + 2)
        rounded = amount.quantize(Decimal(1).scaleb(-decimals), rounding=ROUND_HALF_UP)
    sign = "-" if rounded < 0 else ""  # -0.001 rounds to 0.00, not -0.00
    return sign, f"{abs(rounded):,.{decimals}f}"


def number(value: Any, decimals: int | None = None) -> str:
    """Write a number with commas between thousands.

    ``{{ amount | number }}`` gives ``1,250,000`` for ``1250000``;
    ``{{ amount | number(2) }}`` gives ``1,250,000.00``. Without ``decimals``
    the number keeps the decimals it is written with, at most 2 (``1250.5``
    gives ``1,250.5``, ``3.14159`` gives ``3.14``). Rounding is half up, as
    accountants do (``0.125`` -> ``0.13``), on the exact decimal value. An
    empty cell gives ``""``.
    """
    if _is_empty(value):
        return ""
    amount = parse_number(value, "number")
    places = _own_decimals(amount) if decimals is None else _check_decimals(decimals, "number")
    sign, text = _grouped(amount, places)
    return sign + text


def money(value: Any, currency: str = "", decimals: int | None = None) -> str:
    """Write an amount with commas between thousands and its currency.

    ``{{ amount | money("KRW") }}`` gives ``₩1,250,000``; ``money("EUR")``
    gives ``€1,250.50`` for ``1250.5``. Known codes (any case) put their
    symbol before the amount and use their usual decimals: KRW ``₩`` 0,
    USD ``$`` 2, EUR ``€`` 2, JPY ``¥`` 0, GBP ``£`` 2, CNY ``¥`` 2. Any other
    currency is written after the amount: ``1,250,000 CHF``. A negative
    amount is ``-₩1,250``. ``decimals`` overrides the currency's; without a
    currency (or with an unknown one) the amount keeps its own decimals, at
    most 2, as :func:`number` does. Rounding is half up. An empty cell gives
    ``""``.
    """
    if _is_empty(value):
        return ""
    amount = parse_number(value, "money")
    code = str(currency).strip()
    symbol, places = CURRENCIES.get(code.upper(), ("", _own_decimals(amount)))
    if decimals is not None:
        places = _check_decimals(decimals, "money")
    sign, text = _grouped(amount, places)
    if symbol:
        return f"{sign}{symbol}{text}"
    return f"{sign}{text} {code}" if code else sign + text


# --- first_name ----------------------------------------------------------

_TITLES = {"dr", "mr", "mrs", "ms", "miss", "mx", "prof"}
_SUFFIXES = {"jr", "sr", "ii", "iii", "iv", "phd", "md", "esq"}
# Two-syllable Korean family names; every other family name is one syllable.
KOREAN_TWO_SYLLABLE_FAMILY_NAMES = ("남궁", "황보", "제갈", "선우", "독고", "사공", "서문")
_HANGUL = re.compile(r"[\uac00-\ud7a3]+")


def _bare(word: str) -> str:
    return word.rstrip(".").lower()


def first_name(value: Any) -> str:
    """The given name, to write ``Dear {{ name | first_name }}``.

    - Western order, the first word: ``Anne-Marie Dupont`` -> ``Anne-Marie``;
      titles are dropped: ``Dr. John Smith`` -> ``John`` (Dr, Mr, Mrs, Ms,
      Miss, Mx, Prof, with or without the dot).
    - ``Last, First``: ``O'Brien, Jung`` -> ``Jung`` (but ``John Smith, Jr.``
      -> ``John``).
    - A Korean name in Hangul (2 to 4 syllables, with or without a space
      after the family name): the family name is the first syllable,
      ``김민수`` -> ``민수``, or the first two for 남궁, 황보, 제갈, 선우, 독고,
      사공, 서문: ``남궁민수`` -> ``민수``.
    - A romanized Korean name such as ``Kim Minsu`` cannot tell its order,
      so the Western rule applies: ``Kim``.

    An empty cell gives ``""``.
    """
    if _is_empty(value):
        return ""
    text = " ".join(str(value).split())
    if "," in text:
        last, _, rest = text.partition(",")
        if rest.strip() and not all(_bare(w) in _SUFFIXES for w in rest.split()):
            text = rest.strip()  # "O'Brien, Jung"
        else:
            text = last.strip()  # "John Smith, Jr."
    words = text.split()
    while words and _bare(words[0]) in _TITLES:
        words.pop(0)
    if not words:
        return ""
    if all(_HANGUL.fullmatch(word) for word in words):
        return _korean_given_name("".join(words))
    return words[0]


def _korean_given_name(name: str) -> str:
    """The given name of a Hangul name written family name first."""
    if not 2 <= len(name) <= 4:
        return name  # not a usual Korean name: leave it whole
    if len(name) >= 3 and name[:2] in KOREAN_TWO_SYLLABLE_FAMILY_NAMES:
        return name[2:]
    return name[1:]


FILTERS: dict[str, Callable[..., str]] = {
    "date": date,
    "money": money,
    "number": number,
    "first_name": first_name,
}
"""The filters :class:`mailmerge.render.template.MailTemplate` adds to Jinja."""
