"""The list headers: URIs in angle brackets (RFC 2369: ``List-Unsubscribe``,
``List-Help``...) and ``List-Id`` (RFC 2919).

A client finds the URIs of ``List-Unsubscribe: <mailto:...>, <https://...>``
by their angle brackets, so each URI is written literally, in ASCII, and a
long header is folded only between URIs. The email package would fold a long
URI into RFC 2047 encoded-words (``=?utf-8?q?=3Chttps...``), in which no client
finds a URI, and Gmail's and Yahoo's one-click unsubscribe stops working.

Lists are written by strangers: the template's text alone says where a URI
begins and ends. A value from the list lands inside one URI, and what a URI
may not hold (a space, ``<``, ``>``, a non-ASCII letter) is percent-encoded
there (RFC 3987, IRI to URI), so it can never leave its angle brackets.
"""

from __future__ import annotations

import re
from collections.abc import Iterable
from urllib.parse import quote, urlsplit

import idna
from jinja2 import Environment, TemplateSyntaxError, nodes

from ..errors import InvalidRow

URI_HEADERS = ("List-Unsubscribe", "List-Help", "List-Subscribe", "List-Post", "List-Owner", "List-Archive")
MAX_LINE = 998  # octets in a line of a message, CRLF not counted (RFC 5322 2.1.1)
# The characters of a URI (RFC 3986): unreserved, reserved and "%" of a %XX.
_URI_SAFE = "-._~:/?#[]@!$&'()*+,;=%"
_SCHEME = re.compile(r"[A-Za-z][A-Za-z0-9+.-]*:")
_STRAY_PERCENT = re.compile(r"%(?![0-9A-Fa-f]{2})")
_URI = re.compile(r"(?:[A-Za-z0-9\-._~:/?#\[\]@!$&'()*+,;=]|%[0-9A-Fa-f]{2})*")  # already a URI: nothing to encode


def is_no_post(name: str, value: str) -> bool:
    """``List-Post: NO``: a list that takes no posts (RFC 2369 3.4), not a URI."""
    return name == "List-Post" and re.match(r"NO\b", value.strip(), re.IGNORECASE) is not None


def split_uris(text: str) -> list[str]:
    """The URIs of a header value: each in angle brackets (``<a>, <b>``, as
    RFC 2369 writes them), or bare and separated by commas. Empty ones are
    dropped; a comma inside angle brackets belongs to its URI."""
    uris = []
    for index, piece in enumerate(re.split(r"<([^<>]*)>", text)):
        uris += [piece] if index % 2 else piece.split(",")  # odd pieces: in brackets
    return [uri.strip() for uri in uris if uri.strip()]


def to_uri(header: str, text: str) -> str:
    """``text`` as a URI a mail client reads: percent-encoded where a URI may
    not hold the character (space, ``<``, ``"``, non-ASCII...), an IDNA host
    for a non-ASCII domain. InvalidRow when it is no URI or too long."""
    if not _SCHEME.match(text):
        raise InvalidRow(
            f"the {header} header needs a URI such as https://... or mailto:..., not '{text[:60]}'"
        )
    uri = text if _URI.fullmatch(text) else quote(_STRAY_PERCENT.sub("%25", _ascii_host(header, text)), safe=_URI_SAFE)
    if len(f"{header}: <{uri}>,") > MAX_LINE:
        raise InvalidRow(
            f"the {header} address is {len(uri):,} characters long, and a line of a message may "
            f"hold at most {MAX_LINE} (RFC 5322); use a shorter URL"
        )
    return uri


def _ascii_host(header: str, text: str) -> str:
    """``text`` with a non-ASCII host name written in IDNA (``xn--...``)."""
    try:
        parts = urlsplit(text)
        host = parts.hostname or ""
        if host.isascii():
            return text
        ascii_host = idna.encode(host, uts46=True).decode("ascii")
    except (ValueError, idna.IDNAError) as error:  # urlsplit: "Invalid IPv6 URL" and the like
        raise InvalidRow(f"the {header} header has an address that is not valid: '{text[:60]}' ({error})") from error
    # hostname is lower-cased: replace the host as written, case-insensitively.
    netloc = re.sub(re.escape(host), ascii_host, parts.netloc, count=1, flags=re.IGNORECASE)
    return parts._replace(netloc=netloc).geturl()


# --- List-Id (RFC 2919) ------------------------------------------------------------

LIST_ID_FORM = (
    'write it as "Club news <news.club.example.com>": a name, then in angle brackets '
    "a label, a dot and a domain you own"
)
_DOT_ATOM = r"[A-Za-z0-9!#$%&'*+/=?^_`{|}~-]+"
_LIST_ID = re.compile(rf"{_DOT_ATOM}(?:\.{_DOT_ATOM})+")
_CONTROL = re.compile("[\x00-\x1f\x7f-\x9f\u2028\u2029]")


def parse_list_id(value: str) -> tuple[str, str]:
    """``(name, id)`` of a List-Id such as ``Club news <news.club.example.com>``
    (or the bare id). ValueError, saying why, when it has not that form."""
    value = value.strip()
    match = re.fullmatch(r"(.*?)\s*<([^<>]*)>", value)
    name, list_id = (match.group(1), match.group(2).strip()) if match else ("", value)
    if _CONTROL.search(name) or "<" in name or ">" in name:
        raise ValueError(f"'{value[:80]}' has a control character or a stray bracket")
    if not _LIST_ID.fullmatch(list_id):
        raise ValueError(f"'{list_id[:80]}' is not a list id (such as news.club.example.com)")
    if len(list_id) > 255:  # RFC 2919 2
        raise ValueError(f"the id is {len(list_id)} characters long, and may have at most 255")
    return name.strip(), list_id


# --- folding --------------------------------------------------------------------


def fold(name: str, words: Iterable[str], linesep: str = "\r\n", width: int = 78) -> str:
    """``Name: word word...``, a line break only between two words, the lines
    at most ``width`` long where the words allow. ValueError for a line over
    998 octets (RFC 5322)."""
    lines = [f"{name}:"]
    for index, word in enumerate(words):
        if index and len(lines[-1]) + 1 + len(word) > width:
            lines.append("")
        lines[-1] += " " + word
    too_long = next((line for line in lines if len(line.encode()) > MAX_LINE), None)
    if too_long is not None:
        raise ValueError(f"a line of the {name} header would be {len(too_long.encode()):,} octets, over {MAX_LINE}")
    return linesep.join(lines) + linesep


def uri_words(uris: list[str]) -> list[str]:
    """``<a>,`` ``<b>``: the words of a URI list, so that it folds after the commas."""
    return [f"<{uri}>" + ("," if index < len(uris) - 1 else "") for index, uri in enumerate(uris)]


# --- the check: a value put into a URL as it is --------------------------------------

_EXPRESSION = re.compile(r"\{\{-?(.*?)-?\}\}", re.DOTALL)
_COMMENT = re.compile(r"\{#.*?#\}", re.DOTALL)


def raw_url_columns(env: Environment, source: str) -> list[str]:
    """The names a URL header's template puts inside a URL (after its start,
    such as ``?email={{ email }}``) without ``| urlencode``. A name at the
    very start of a URI is skipped: that value is the whole URL."""
    found: list[str] = []
    for match in _EXPRESSION.finditer(source):
        before = _COMMENT.sub("", source[: match.start()])
        start = max(before.rfind("<"), before.rfind(","))
        if not before[start + 1:].strip():
            continue
        try:
            tree = env.parse("{{" + match.group(1) + "}}")
        except TemplateSyntaxError:
            continue  # the template's own check reports it
        names = {n.name for n in tree.find_all(nodes.Name)}
        encoded = {n.name for f in tree.find_all(nodes.Filter) if f.name == "urlencode" for n in f.find_all(nodes.Name)}
        found += [name for name in sorted(names - encoded) if name not in found]
    return found


# What ``| urlencode`` leaves as it is (urllib's quote with safe="/").
_URL_SAFE_VALUE = re.compile(r"[^A-Za-z0-9_.~/-]")


def needs_encoding(value: str) -> list[str]:
    """The characters of ``value`` that ``| urlencode`` would change (``+``,
    ``@``, space, ``&``, ``#``, ``%``, non-ASCII...), each once."""
    return list(dict.fromkeys(_URL_SAFE_VALUE.findall(value)))


def describe_chars(chars: list[str]) -> str:
    """``+ @ space``: characters for a person."""
    return " ".join("space" if char == " " else char for char in chars)
