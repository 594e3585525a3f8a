"""Text from strangers (a list's cells, a server's replies, a mail's headers),
made harmless where it is shown or stored.

- :func:`visible`: no control character reaches a terminal or a report raw (an
  ESC in a cell could clear the screen or retitle the window).
- :func:`spreadsheet_safe`: no cell of a CSV we write is run as a formula by
  Excel or LibreOffice; :func:`from_spreadsheet` is its inverse, for whatever
  reads such a file back (the list reader applies it).
"""

from __future__ import annotations

# C0 controls, DEL, C1 controls (0x9b is a terminal's CSI, like ESC [), and the
# bidirectional overrides and isolates that make text read in another order.
_CONTROLS = [*range(0x00, 0x20), *range(0x7F, 0xA0), *range(0x202A, 0x202F), *range(0x2066, 0x206A)]
_VISIBLE = {code: (f"\\x{code:02x}" if code < 0x100 else f"\\u{code:04x}") for code in _CONTROLS}


def visible(text: str, keep: str = "") -> str:
    """``text`` with every control character written out (ESC as ``\\x1b``),
    so that it cannot move the cursor, clear the screen or retitle the window
    of whoever looks at it. ``keep`` names the ones left as they are (``"\\n\\t"``
    for a message body)."""
    if text.isprintable():  # the common case: nothing to do
        return text
    table = _VISIBLE if not keep else {code: v for code, v in _VISIBLE.items() if chr(code) not in keep}
    return text.translate(table)


# What makes a spreadsheet read a cell as a formula (OWASP's list), and the
# full-width forms that East Asian input methods type and spreadsheets accept.
FORMULA_STARTS = ("=", "+", "-", "@", "\t", "\r", "\uff1d", "\uff0b", "\uff0d", "\uff20")


def spreadsheet_safe(text: str) -> str:
    """``text`` for a CSV cell that Excel or LibreOffice will not run: a value
    that would start a formula (``=``, ``+``, ``-``, ``@``, TAB, CR) gets a
    ``'`` in front (``-bob@example.com`` is written ``'-bob@example.com``).

    A value that is already such a ``'`` followed by a formula start gets one
    more, so :func:`from_spreadsheet` always gives the original back.
    """
    return "'" + text if text.lstrip("'").startswith(FORMULA_STARTS) else text


def from_spreadsheet(text: str) -> str:
    """The inverse of :func:`spreadsheet_safe`: the original value of a cell
    read from a CSV file that was protected that way."""
    return text[1:] if text.startswith("'") and text.lstrip("'").startswith(FORMULA_STARTS) else text
