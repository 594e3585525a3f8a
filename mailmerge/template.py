"""Render one row of the list into a :class:`Draft`: the headers and the body.

A template file is a block of header lines, a blank line, then the body::

    Subject: Your invoice {{ invoice_no }}
    To: {{ name }} <{{ email }}>

    Dear {{ name }}, ...

Every header value and the body are Jinja2 templates (sandboxed, with
``StrictUndefined``). Header names are case-insensitive. In an address header
(From, To, Cc, Bcc, Reply-To) a value from the list stays one piece: a display
name such as ``O'Brien, Jung`` is one name, never two addresses.
"""

from __future__ import annotations

import re
import secrets
from dataclasses import dataclass, field
from email.utils import getaddresses
from pathlib import Path
from typing import Any, NamedTuple

import jinja2
from jinja2 import meta, nodes
from jinja2.sandbox import SandboxedEnvironment

from .errors import InvalidRow, TemplateError, did_you_mean
from .recipients import Recipient

ADDRESS_HEADERS = ("From", "To", "Cc", "Bcc", "Reply-To")
# Headers mailmerge writes itself; a template that sets them is wrong.
RESERVED_HEADERS = ("MIME-Version", "Content-Transfer-Encoding", "Message-ID", "Date")
_CANONICAL = {name.lower(): name for name in (*ADDRESS_HEADERS, "Subject", *RESERVED_HEADERS)}
_HEADER_LINE = re.compile(r"^([A-Za-z0-9][A-Za-z0-9_-]*)[ \t]*:[ \t]?(.*)$")


class Mailbox(NamedTuple):
    """One address with its display name (``""`` when there is none)."""

    name: str
    address: str


@dataclass
class Draft:
    """A rendered row: everything the message needs, nothing encoded yet."""

    row: int
    subject: str
    sender: list[Mailbox]
    to: list[Mailbox]
    cc: list[Mailbox] = field(default_factory=list)
    bcc: list[Mailbox] = field(default_factory=list)
    reply_to: list[Mailbox] = field(default_factory=list)
    other_headers: list[tuple[str, str]] = field(default_factory=list)
    body: str = ""

    def recipients(self) -> list[tuple[str, Mailbox]]:
        """Every envelope recipient with the header it came from (To, Cc, Bcc)."""
        return [
            *(("To", box) for box in self.to),
            *(("Cc", box) for box in self.cc),
            *(("Bcc", box) for box in self.bcc),
        ]


# Joins the lines of a folded or repeated header: a Jinja comment that holds a
# line break renders as nothing but keeps Jinja's line count equal to the file's.
_LINE_JOIN = "{#\n#}"


@dataclass
class _Part:
    """One Jinja template of the file: a header value or the body."""

    name: str  # header name, or "body"
    source: str
    lines: list[int]  # the file's line for each line of source ([] for defaults)
    compiled: jinja2.Template | None = None

    def add_line(self, separator: str, text: str, line: int) -> None:
        self.source += separator + _LINE_JOIN + text
        self.lines.append(line)


class _Placeholders:
    """Jinja ``finalize`` hook for address headers: each ``{{ value }}`` is
    replaced by an opaque token while the header is parsed as addresses, then
    put back into the name or address it landed in."""

    def __init__(self) -> None:
        self.nonce = secrets.token_hex(4)
        self.values: list[str] = []
        self.pattern = re.compile(rf"mmv{self.nonce}x(\d+)z")

    def __call__(self, value: Any) -> str:
        text = str(value)  # StrictUndefined raises here for a missing variable
        self.values.append(text)
        return f"mmv{self.nonce}x{len(self.values) - 1}z"

    def restore(self, text: str) -> str:
        return self.pattern.sub(lambda m: self.values[int(m.group(1))], text)

    def whole(self, text: str) -> str | None:
        """The value when ``text`` is exactly one placeholder, else None."""
        match = self.pattern.fullmatch(text)
        return self.values[int(match.group(1))] if match else None


class MailTemplate:
    """A parsed template file, ready to render rows into drafts."""

    def __init__(self, path: Path, parts: list[_Part], default_from: str | None, text: str = "") -> None:
        self.path = path
        self.text = text  # the file's text: part of the campaign's identity
        self._placeholders = _Placeholders()
        self._env = SandboxedEnvironment(
            undefined=jinja2.StrictUndefined, keep_trailing_newline=True, autoescape=False
        )
        self._address_env = self._env.overlay(finalize=self._placeholders)
        self.parts = parts
        if default_from and not any(p.name == "From" for p in parts):
            self.parts.insert(0, _Part("From", default_from, []))
        for part in self.parts:
            env = self._address_env if part.name in ADDRESS_HEADERS else self._env
            try:
                part.compiled = env.from_string(part.source)
            except jinja2.TemplateSyntaxError as error:
                raise TemplateError(
                    f"{self._where(part, error.lineno)}: {error.message}"
                ) from error

    # --- checks before any row is rendered ---------------------------------

    def check_columns(self, columns: list[str], first_row: int) -> None:
        """Fail when the template uses a name that is not a column.

        Also fills in ``To`` from the ``email`` column when the template has
        no ``To`` header, and fails when it cannot.
        """
        if not any(p.name == "To" for p in self.parts):
            email_column = next((c for c in columns if c.lower() == "email"), None)
            if email_column is None:
                raise TemplateError(
                    f"{self.path}: no 'To:' header, and the list has no 'email' column; "
                    "add 'To: {{ your_address_column }}' to the template"
                )
            part = _Part("To", "{{ " + email_column + " }}", [])
            part.compiled = self._address_env.from_string(part.source)
            self.parts.append(part)
        if not any(p.name == "From" for p in self.parts):
            raise TemplateError(
                f"{self.path}: no 'From:' header; add one to the template, or set "
                "'from' in the [message] section of mailmerge.toml"
            )
        known = set(columns)
        for part in self.parts:
            tree = self._env.parse(part.source)
            for name in sorted(meta.find_undeclared_variables(tree) - known):
                line = next(
                    (n.lineno for n in tree.find_all(nodes.Name) if n.name == name), 1
                )
                raise TemplateError(
                    f"{self._where(part, line)}: '{name}' is not a column of the list "
                    f"(row {first_row} and every row after it){did_you_mean(name, columns)}"
                )

    # --- rendering ----------------------------------------------------------

    def render(self, recipient: Recipient) -> Draft:
        """Render one row into a :class:`Draft`.

        Raises :class:`InvalidRow` when the row's data cannot make a message
        (a line break in a header value, no recipient) and
        :class:`TemplateError` when the template itself fails on this row.
        """
        draft = Draft(row=recipient.row, subject="", sender=[], to=[])
        for part in self.parts:
            if part.name == "body":
                draft.body = self._render(part, recipient)
            elif part.name in ADDRESS_HEADERS:
                boxes = self._render_addresses(part, recipient)
                attribute = part.name.lower().replace("-", "_")
                target = "sender" if attribute == "from" else attribute
                getattr(draft, target).extend(boxes)
            else:
                value = _single_line(part.name, self._render(part, recipient).strip())
                if part.name == "Subject":
                    draft.subject = value
                else:
                    draft.other_headers.append((part.name, value))
        if not draft.to and not draft.cc and not draft.bcc:
            raise InvalidRow("no recipient address (the To header is empty)")
        if not draft.body.endswith("\n"):
            draft.body += "\n"
        return draft

    def _render(self, part: _Part, recipient: Recipient) -> str:
        assert part.compiled is not None
        try:
            return part.compiled.render(recipient.values)
        except jinja2.UndefinedError as error:
            raise TemplateError(
                f"{self._where(part, _error_line(error))}: row {recipient.row}: {error.message}"
            ) from error
        except jinja2.TemplateError as error:
            raise TemplateError(
                f"{self._where(part, _error_line(error))}: row {recipient.row}: {error}"
            ) from error
        except (TypeError, ValueError, ArithmeticError) as error:
            raise TemplateError(
                f"{self._where(part, _error_line(error))}: row {recipient.row}: "
                f"{type(error).__name__}: {error}"
            ) from error

    def _render_addresses(self, part: _Part, recipient: Recipient) -> list[Mailbox]:
        self._placeholders.values = []
        text = self._render(part, recipient)
        for value in self._placeholders.values:
            _single_line(part.name, value)
        boxes: list[Mailbox] = []
        for name, address in getaddresses([_single_line(part.name, text)]):
            whole = self._placeholders.whole(address) if not name else None
            if whole is not None:
                # The cell holds the whole address: it may hold several ("a@x, b@y").
                pairs = getaddresses([whole.replace(";", ",")])
            else:
                pairs = [(self._placeholders.restore(name), self._placeholders.restore(address))]
            boxes.extend(Mailbox(n.strip(), a.strip()) for n, a in pairs if n or a)
        return boxes

    def _where(self, part: _Part, line: int | None) -> str:
        if not part.lines:  # a header that came from the config or a default
            return f"{self.path}: {part.name} (default)"
        index = min(max(line or 1, 1), len(part.lines)) - 1
        return f"{self.path}: line {part.lines[index]}"


def _single_line(header: str, value: str) -> str:
    if "\r" in value or "\n" in value:
        raise InvalidRow(f"the {header} header would contain a line break (from the list)")
    return value


def _error_line(error: BaseException) -> int | None:
    """The template line of a Jinja error, read from the traceback when needed."""
    line = getattr(error, "lineno", None)
    if line:
        return int(line)
    tb = error.__traceback__
    found = None
    while tb is not None:
        if tb.tb_frame.f_code.co_filename == "<template>":
            found = tb.tb_lineno
        tb = tb.tb_next
    return found


def load_template(path: Path | str, *, default_from: str | None = None) -> MailTemplate:
    """Read and parse a template file; ``default_from`` is used when it has no From."""
    path = Path(path)
    try:
        raw = path.read_bytes()
    except FileNotFoundError as error:
        raise TemplateError(f"{path}: no such template file") from error
    except OSError as error:
        raise TemplateError(f"{path}: cannot read the template ({error.strerror})") from error
    try:
        text = raw.decode("utf-8-sig")
    except UnicodeDecodeError as error:
        raise TemplateError(
            f"{path}: the template is not UTF-8 (byte {error.start}); save it as UTF-8"
        ) from error
    if path.suffix.lower() in (".html", ".htm", ".md"):
        raise TemplateError(f"{path}: HTML and Markdown templates are not supported yet; use .txt")
    return MailTemplate(path, parse_template(text, path), default_from, text)


def parse_template(text: str, path: Path) -> list[_Part]:
    """Split a template's text into header parts and the body part."""
    lines = text.replace("\r\n", "\n").replace("\r", "\n").split("\n")
    if lines[-1] == "":
        lines.pop()  # the file's final line break, not a blank line
    parts: list[_Part] = []
    current: _Part | None = None
    body_start = None
    for number, line in enumerate(lines, start=1):
        if line.strip() == "":
            body_start = number
            break
        if line[0] in " \t" and current is not None:  # a folded header continues
            current.add_line(" ", line.strip(), number)
            continue
        match = _HEADER_LINE.match(line)
        if not match:
            raise TemplateError(
                f"{path}: line {number}: expected a header such as 'Subject: ...', got "
                f"'{line[:40]}'; a template is header lines, a blank line, then the body"
            )
        current = _header_part(parts, match.group(1), match.group(2).strip(), number, path)
    if body_start is None:
        raise TemplateError(f"{path}: no blank line after the headers, so no body")
    body_lines = lines[body_start:]
    body = "\n".join(body_lines) + "\n"
    parts.append(_Part("body", body, list(range(body_start + 1, body_start + 2 + len(body_lines)))))
    return parts


def _header_part(parts: list[_Part], raw_name: str, value: str, number: int, path: Path) -> _Part | None:
    """Add one header line to ``parts``; return the part it went into."""
    name = _CANONICAL.get(raw_name.lower(), raw_name)
    if name in RESERVED_HEADERS:
        raise TemplateError(f"{path}: line {number}: mailmerge sets {name} itself; remove it")
    if name.lower() == "content-type":
        if value.split(";")[0].strip().lower() != "text/plain":
            raise TemplateError(f"{path}: line {number}: only text/plain bodies are supported yet")
        return None
    earlier = next((p for p in parts if p.name == name), None)
    if earlier is not None and name in ("From", "Subject"):
        raise TemplateError(f"{path}: line {number}: a second {name} header")
    if earlier is not None and name in ADDRESS_HEADERS:  # To: a, then To: b
        earlier.add_line(", ", value, number)
        return earlier
    part = _Part(name, value, [number])
    parts.append(part)
    return part
