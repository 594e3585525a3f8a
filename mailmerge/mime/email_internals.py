"""What the fast message path takes from inside Python's ``email`` package.

:mod:`mailmerge.mime.message` builds each message with ``EmailMessage`` but skips
the work the public API repeats for every row: the header registry parses
every value it is given and refolds it when the message is written out, and
``set_content`` parses back the headers it has just written. Here, the
headers mailmerge has already encoded and folded itself go into the message
as they are. A Korean text message takes 48 µs to build and write out
(``build_message`` and ``as_bytes``) against 790 µs through the public API
(``msg[name] = value``, ``set_content``, ``as_bytes``); an ASCII one 23 µs
against 545 µs (Python 3.11.7).

What it relies on, beyond the documented API:

- :meth:`email.message.Message.set_raw` and ``raw_items``: the hooks the
  parser uses to store a header line as it came, without the header registry.
- A header value with a ``name`` attribute counts as a header object: the
  policy writes it out by calling its ``fold(policy=...)`` and returns it as
  it is when the header is read (the EmailPolicy documentation says so; the
  code path is ``EmailPolicy._fold`` and ``header_fetch_parse``).
- The header registry makes a new class for every header of every message;
  :class:`CachingHeaderRegistry` makes each one once.

``tests/test_fast_paths.py`` builds the same messages through the public API
(``msg[name] = value``, ``set_content``, ``add_alternative``, ``add_related``,
``add_attachment``) and checks that the bytes are the same: a Python upgrade
that changes any of this fails there, not in someone's inbox.
"""

from __future__ import annotations

import functools
from email import headerregistry, policy
from email.message import Message


def add_header_as_is(message: Message, name: str, value: str) -> None:
    """Append a header whose value is already encoded (RFC 2047) and folded,
    or a :class:`WrittenHeader`: it is neither parsed now nor refolded when
    the message is written out (a line over 78 characters would be)."""
    message.set_raw(name, value)


def copy_headers(target: Message, source: Message) -> None:
    """Append every header of ``source`` to ``target``, as they are."""
    for name, value in source.raw_items():
        target.set_raw(name, value)


class WrittenHeader(str):
    """A header value that writes itself out: the string is the value as a
    person reads it (``msg[name]`` returns this object); :meth:`lines` is
    what goes on the wire. By default the value on one line, as it is: for
    constant ASCII values such as a part's ``Content-Type``, which the
    generator would otherwise parse and refold for every message."""

    name: str  # the attribute by which the email package knows a header object

    def __new__(cls, name: str, value: str) -> WrittenHeader:
        written = super().__new__(cls, value)
        written.name = name
        return written

    def fold(self, *, policy: policy.Policy) -> str:
        """Called by the email package when it writes the header out."""
        return self.lines(policy.linesep, policy.max_line_length or 78)

    def lines(self, linesep: str, width: int) -> str:
        """The header, name included, as its lines on the wire."""
        return f"{self.name}: {self}{linesep}"

    def __reduce__(self) -> tuple[type[WrittenHeader], tuple[str, str]]:  # for copy.deepcopy
        return type(self), (self.name, str(self))


class CachingHeaderRegistry(headerregistry.HeaderRegistry):
    """The standard registry, but making each header class once: the stock one
    builds a new class for every header of every message (a third of the time
    it takes to build a message)."""

    @functools.lru_cache(maxsize=None)  # noqa: B019 (one registry for the process)
    def __getitem__(self, name: str) -> type[headerregistry.BaseHeader]:
        return super().__getitem__(name)

