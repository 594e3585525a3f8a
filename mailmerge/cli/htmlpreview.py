"""A folder to look at a whole merge in a browser before anything is sent.

:func:`write_html_preview` writes, for every row of a plan::

    index.html                     one line per row: recipients, subject, status
    0002-minsu_example.com.html    the headers, then the message as a mail program shows it
    0002-minsu_example.com.eml     the message exactly as it would be sent

An invalid row gets a page saying why (and no ``.eml``). Every value from the
list is HTML-escaped: a name such as ``<script>alert(1)</script>`` shows as text.
The message's HTML goes into an ``<iframe srcdoc>`` whose sandbox runs no
scripts and keeps the message's CSS away from the page around it; its inline
images are ``data:`` URIs (browsers load no ``cid:``). The pages need no
JavaScript and no network.
"""

from __future__ import annotations

import re
from collections.abc import Iterable
from dataclasses import dataclass
from email.message import EmailMessage
from html import escape
from pathlib import Path
from urllib.parse import quote

from ..merge import Plan, message_of
from ..mime.message import OutgoingMessage, structure, viewable_html
from ..outcome import Outcome
from ..sources.recipients import Recipient

INDEX_NAME = "index.html"
# Characters kept in a file name: the rest of the address becomes "_".
_UNSAFE = re.compile(r"[^A-Za-z0-9@._+-]+")
_MAX_NAME = 60  # characters of the address kept in a file name
# Headers the page's table shows first, in this order (Bcc comes from the envelope).
_MAIN_HEADERS = ("From", "To", "Cc", "Reply-To", "Subject")
# Headers not worth a line: they are in the table already, or the MIME machinery.
_NOT_SHOWN = {
    "from", "to", "cc", "reply-to", "subject", "mime-version",
    "content-type", "content-transfer-encoding",
}

_STYLE = """\
body { font: 15px/1.45 system-ui, "Noto Sans", "Noto Sans CJK KR", sans-serif; margin: 1.5em; color: #222; }
table { border-collapse: collapse; }
th, td { text-align: left; vertical-align: top; padding: .3em .7em; border-bottom: 1px solid #ddd; }
th { color: #555; font-weight: 600; white-space: nowrap; }
.ok { color: #1a7f37; } .invalid { color: #b42318; }
.note { color: #777; font-size: 90%; }
.values { white-space: pre-wrap; overflow-wrap: anywhere; }
pre { white-space: pre-wrap; overflow-wrap: anywhere; background: #f6f6f6; padding: 1em; border: 1px solid #ddd; }
iframe { width: 100%; height: 80vh; border: 1px solid #bbb; background: #fff; }
nav { margin-bottom: 1em; }
details { margin: 1em 0; }
"""


@dataclass(frozen=True)
class _IndexLine:
    """What the index says about one row."""

    row: int
    recipients: list[str]  # "To: Name <address>" lines
    subject: str
    reason: str  # "" when the row is ok
    page: str  # file name of the row's page
    state: str = "invalid"  # why it is not sent: "invalid" or "duplicate"


def write_html_preview(plan: Plan, folder: Path) -> Path:
    """Write a page and an ``.eml`` file per row of ``plan``, and ``index.html``,
    into ``folder`` (made if missing; files of an earlier preview are replaced).

    Messages are built one at a time from the plan's drafts, as for a send,
    so memory does not grow with the list. Returns the path of ``index.html``.
    """
    folder.mkdir(parents=True, exist_ok=True)
    index = folder / INDEX_NAME
    with index.open("w", encoding="utf-8", newline="\n") as out:
        out.write(_index_head(plan))
        ok = 0
        skipped: dict[str, int] = {}  # rows not sent, by state
        for planned in plan.rows():
            recipient, draft = planned.recipient, planned.draft
            rendered = message_of(plan, recipient, draft)
            if isinstance(rendered, OutgoingMessage):
                line = _write_message(rendered, folder)
                ok += 1
            else:
                line = _write_invalid(recipient, draft.subject if draft is not None else "", rendered, folder)
                skipped[line.state] = skipped.get(line.state, 0) + 1
            out.write(_index_row(line))
        out.write(_index_foot(ok, skipped))
    return index


def file_stem(row: int, address: str) -> str:
    """``NNNN-address`` for a row's files: the row number (4 digits at least,
    so names sort in row order) and the address with anything but letters,
    digits and ``@._+-`` made ``_``."""
    safe = _UNSAFE.sub("_", address).strip("._")[:_MAX_NAME] or "no-address"
    return f"{row:04d}-{safe}"


# --- one row ---------------------------------------------------------------------


def _write_message(outgoing: OutgoingMessage, folder: Path) -> _IndexLine:
    """Write a row's ``.eml`` and its page; return its line of the index."""
    message = outgoing.message
    first = outgoing.recipients[0].address if outgoing.recipients else ""
    stem = file_stem(outgoing.row, first)
    data = outgoing.as_bytes()
    (folder / f"{stem}.eml").write_bytes(data)
    subject = _header(message, "Subject")
    page = _page(
        f"Row {outgoing.row}: {subject}",
        _nav(f"{stem}.eml", f"the message as it would be sent ({_size(len(data))})")
        + _headers_table(outgoing)
        + _body(outgoing),
    )
    (folder / f"{stem}.html").write_text(page, encoding="utf-8", newline="\n")
    return _IndexLine(outgoing.row, _recipient_lines(outgoing), subject, "", f"{stem}.html")


def _write_invalid(recipient: Recipient, subject: str, outcomes: list[Outcome], folder: Path) -> _IndexLine:
    """Write the page of a row that will not be sent, saying why (``subject``:
    "" when the row did not render)."""
    reason = outcomes[0].reason if outcomes else "invalid"
    state = outcomes[0].status.label if outcomes else "invalid"  # invalid, or duplicate
    addresses = [f"{o.field}: {o.address}" if o.field else o.address for o in outcomes if o.address]
    stem = file_stem(recipient.row, next((o.address for o in outcomes if o.address), ""))
    rows = [("Status", f'<span class="invalid">{escape(state)}, will not be sent: {escape(reason)}</span>')]
    if addresses:
        rows.append(("Recipients", _lines(addresses)))
    if subject:
        rows.append(("Subject", escape(subject)))
    values = "".join(
        f"<tr><th>{escape(name)}</th><td>{escape(value)}</td></tr>" for name, value in recipient.values.items()
    )
    body = (
        _nav()
        + _table(rows)
        + f"<h2>Row {recipient.row} of the list</h2><table class='values'>{values}</table>"
    )
    (folder / f"{stem}.html").write_text(_page(f"Row {recipient.row}: {state}", body), encoding="utf-8", newline="\n")
    return _IndexLine(recipient.row, addresses, subject, reason, f"{stem}.html", state)


def _header(message: EmailMessage, name: str) -> str:
    value = message[name]
    return str(value) if value is not None else ""


def _recipient_lines(outgoing: OutgoingMessage) -> list[str]:
    """To and Cc as their headers say (display names decoded), Bcc from the envelope."""
    lines = [f"{name}: {_header(outgoing.message, name)}" for name in ("To", "Cc") if outgoing.message[name]]
    bcc = [r.address for r in outgoing.recipients if r.field == "Bcc"]
    if bcc:
        lines.append(f"Bcc: {', '.join(bcc)}")
    return lines


def _headers_table(outgoing: OutgoingMessage) -> str:
    """From, To, Cc, Bcc (envelope only), Reply-To, Subject, the other headers
    sent, and the attachments with their sizes."""
    message = outgoing.message
    rows: list[tuple[str, str]] = []
    for name in _MAIN_HEADERS:
        if message[name]:
            rows.append((name, escape(_header(message, name))))
        if name == "Cc":
            bcc = [r.address for r in outgoing.recipients if r.field == "Bcc"]
            if bcc:
                note = ' <span class="note">(envelope only, not in the headers)</span>'
                rows.append(("Bcc", escape(", ".join(bcc)) + note))
    rows += [(name, escape(str(value))) for name, value in message.items() if name.lower() not in _NOT_SHOWN]
    attachments = [
        f"{part.get_filename() or '(no name)'}  ({part.get_content_type()}, {_size(len(part.get_payload(decode=True) or b''))})"
        for part in message.iter_attachments()
    ]
    if attachments:
        rows.append(("Attachments", _lines(attachments)))
    return _table(rows)


def _body(outgoing: OutgoingMessage) -> str:
    """The HTML part in a sandboxed frame (or the text part in ``<pre>``), then
    the text part and the MIME structure, folded."""
    message = outgoing.message
    text_part = message.get_body(("plain",))
    text = str(text_part.get_content()) if text_part is not None else ""
    parts = "\n".join(structure(message))
    folded = f"<details><summary>MIME structure</summary><pre>{escape(parts)}</pre></details>"
    if message.get_body(("html",)) is None:
        return f"<pre>{escape(text)}</pre>" + folded
    # allow-same-origin without allow-scripts: the message runs no script, and
    # the page (or a test) may still read the frame; links open in a new tab.
    frame = (
        '<iframe title="The message" sandbox="allow-same-origin allow-popups allow-popups-to-escape-sandbox" '
        f'srcdoc="{escape(viewable_html(outgoing), quote=True)}"></iframe>'
    )
    if text:
        folded = f"<details><summary>Text part</summary><pre>{escape(text)}</pre></details>" + folded
    return frame + folded


# --- the index -------------------------------------------------------------------


def _index_head(plan: Plan) -> str:
    source = escape(plan.recipients.path.name)
    return (
        _page_start(f"Preview of {plan.recipients.path.name}")
        + f"<h1>Preview of {source}</h1>\n"
        + '<p class="note">Nothing was sent. Each page shows a message as it will be sent; '
        + "the <code>.eml</code> files open in a mail program.</p>\n"
        + "<table>\n<thead><tr><th>Row</th><th>Recipients</th><th>Subject</th><th>Status</th></tr></thead>\n<tbody>\n"
    )


def _index_row(line: _IndexLine) -> str:
    href = escape(quote(line.page), quote=True)
    status = (
        f'<span class="invalid">{escape(line.state)}: {escape(line.reason)}</span>' if line.reason else '<span class="ok">ok</span>'
    )
    return (
        f'<tr><td><a href="{href}">{line.row}</a></td><td>{_lines(line.recipients)}</td>'
        f'<td><a href="{href}">{escape(line.subject) or "(no subject)"}</a></td><td>{status}</td></tr>\n'
    )


def _index_foot(ok: int, skipped: dict[str, int]) -> str:
    """``2 to send, 1 invalid, of 3 rows`` (and the duplicates, when there are any)."""
    counts = "".join(f", {count} {state}{'' if count == 1 else 's'}" for state, count in sorted(skipped.items()) if state != "invalid")
    total = ok + sum(skipped.values())
    return (f"</tbody>\n</table>\n<p>{ok} to send, {skipped.get('invalid', 0)} invalid{counts}, of {total} rows.</p>\n"
            "</body>\n</html>\n")


# --- HTML pieces -----------------------------------------------------------------


def _page_start(title: str) -> str:
    return (
        '<!doctype html>\n<html>\n<head>\n<meta charset="utf-8">\n'
        '<meta name="viewport" content="width=device-width, initial-scale=1">\n'
        f"<title>{escape(title)}</title>\n<style>\n{_STYLE}</style>\n</head>\n<body>\n"
    )


def _page(title: str, body: str) -> str:
    return _page_start(title) + body + "\n</body>\n</html>\n"


def _nav(eml: str = "", what: str = "") -> str:
    link = f' · <a href="{escape(quote(eml), quote=True)}">{escape(eml)}</a> <span class="note">{escape(what)}</span>' if eml else ""
    return f'<nav><a href="{INDEX_NAME}">← all rows</a>{link}</nav>\n'


def _table(rows: Iterable[tuple[str, str]]) -> str:
    """A two-column table; the values are HTML already (escaped by the caller)."""
    lines = "".join(f"<tr><th>{escape(name)}</th><td>{value}</td></tr>\n" for name, value in rows)
    return f'<table class="headers">\n{lines}</table>\n'


def _lines(values: Iterable[str]) -> str:
    """Values one per line, escaped."""
    return "<br>".join(escape(value) for value in values)


def _size(count: int) -> str:
    if count < 1024 * 1024:
        return f"{count / 1024:.1f} kB"
    return f"{count / 1024 / 1024:.1f} MB"
