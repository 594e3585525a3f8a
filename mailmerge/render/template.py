"""Render one row of the list into a :class:`Draft`: the headers and the body.

A template file is a block of header lines, a blank line, then the body::

    Subject: Your invoice {{ invoice_no }}
    To: {{ name }} <{{ email }}>

    Dear {{ name }}, ...

Every header value and the body are Jinja2 templates (sandboxed, with
``StrictUndefined``). Header names are case-insensitive. In an address header
(From, To, Cc, Bcc, Reply-To) a value from the list stays one piece: a display
name such as ``O'Brien, Jung`` is one name, never two addresses.

The body is plain text (``.txt``), HTML (``.html``) or Markdown (``.md``), by
the file's extension or a ``Content-Type:`` header; awdeorio/mailmerge's
hand-written ``multipart/alternative`` bodies work too. Repeatable
``Attachment:`` headers name files, relative to the template's folder.

Lists are written by strangers, so a value from the list is text, never markup:

- In an HTML body, and in the HTML of a Markdown or hand-written multipart
  body, each ``{{ value }}`` becomes an opaque placeholder while the template
  renders (and while the Markdown is turned into HTML), then the placeholder
  is replaced by the value, HTML-escaped. Markdown syntax in a cell
  (``![x](.env)``, ``[click](https://...)``) thus shows as typed. ``|safe`` is
  the author's explicit opt-out: that value is inserted as markup.
- A header value with a line break or a control character makes the row
  invalid.
- In a URI header (``List-Unsubscribe``, ``List-Help``...) the template's text
  alone says where each URI begins and ends; a value stays inside its URI,
  percent-encoded where a URI may not hold the character (see
  :mod:`mailmerge.mime.listheaders`).
- A file named by the list (an ``Attachment:`` or ``Style:`` made with Jinja, an
  ``<img src>`` not written in the template) is looked up only in the
  attachments folder, and never a hidden file or one of the config's secrets
  (see :func:`~mailmerge.render.content.resolve_list_file`).
"""

from __future__ import annotations

import email
import email.policy
import functools
import re
import secrets
from collections.abc import Callable, Iterable
from dataclasses import dataclass, field
from email.utils import getaddresses
from pathlib import Path
from typing import TYPE_CHECKING, Any, Literal, NamedTuple

import jinja2
from jinja2 import meta, nodes, pass_eval_context
from jinja2.nodes import EvalContext
from jinja2.sandbox import SandboxedEnvironment
from markupsafe import escape

from ..errors import InvalidRow, NoSender, TemplateError, did_you_mean
from .content import html_to_text, inline_css, local_images, markdown_to_html, resolve_file, resolve_list_file
from .filters import FILTERS
from .jinja_internals import render as render_jinja
from ..mime.listheaders import (
    LIST_ID_FORM, URI_HEADERS, describe_chars, is_no_post, needs_encoding, parse_list_id, raw_url_columns,
    split_uris, to_uri,
)

if TYPE_CHECKING:  # only a type here: importing it would load pandas for every command
    from ..sources.recipients import Recipient

ADDRESS_HEADERS = ("From", "To", "Cc", "Bcc", "Reply-To")
# Headers mailmerge writes itself; a template that sets them is wrong.
RESERVED_HEADERS = ("Content-Transfer-Encoding", "Message-ID", "Date")
# Headers that tell mailmerge what to do; they are not sent.
CONTROL_HEADERS = ("Attachment", "Style", "Content-Type", "MIME-Version")
_CANONICAL = {
    name.lower(): name
    for name in (*ADDRESS_HEADERS, "Subject", *URI_HEADERS, "List-Unsubscribe-Post", "List-Id",
                 *RESERVED_HEADERS, *CONTROL_HEADERS)
}
MAX_MESSAGE_BYTES = 25 * 1024 * 1024  # what Gmail, Outlook and most providers accept
BodyKind = Literal["text", "html", "markdown", "mime"]
_KIND_BY_TYPE: dict[str, BodyKind] = {"text/plain": "text", "text/html": "html", "text/markdown": "markdown"}
_KIND_BY_SUFFIX: dict[str, BodyKind] = {".html": "html", ".htm": "html", ".md": "markdown", ".markdown": "markdown"}
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
    body: str = ""  # the text/plain part
    html: str | None = None  # the text/html part, for HTML and Markdown templates
    attachments: list[Path] = field(default_factory=list)
    images: dict[str, Path] = field(default_factory=dict)  # <img src> -> file, sent inline

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
    compiled_html: jinja2.Template | None = None  # the body, HTML-escaping its values
    constant: dict[bool, str] = field(default_factory=dict)  # the rendering, when no Jinja in it
    constant_boxes: list[Mailbox] | None = None  # the same for an address header

    @property
    def from_list(self) -> bool:
        """True when the value is made from the list (any Jinja in it)."""
        return "{{" in self.source or "{%" in self.source

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


class _BodyValues:
    """Jinja ``finalize`` hook for HTML bodies: each ``{{ value }}`` becomes an
    opaque token (digits only: Markdown, markdown-it's link encoding and
    ``|upper`` leave it alone); :meth:`restore` puts the values back, escaped.
    A value that is markup (``|safe``, a macro's output, an ``{% autoescape
    false %}`` block) goes back as it is, with the tokens inside it restored."""

    def __init__(self) -> None:
        self.nonce = _nonce()
        self.values: list[tuple[str, bool]] = []  # (text, is markup)
        self.pattern = re.compile(rf"{self.nonce}(\d{{6}})")

    @pass_eval_context
    def finalize(self, context: EvalContext, value: Any) -> str:
        markup = hasattr(value, "__html__") or not context.autoescape
        self.values.append((str(value), markup))  # StrictUndefined raises here for a missing variable
        return f"{self.nonce}{len(self.values) - 1:06d}"

    def guard(self, name: str, function: Callable[..., Any]) -> Callable[..., Any]:
        """``function`` (a filter), refusing text that holds tokens: in
        ``{% filter upper %}Hi {{ name }}{% endfilter %}`` it would change the
        tokens, not the values."""
        if name in _TOKEN_SAFE_FILTERS:
            return function

        @functools.wraps(function)
        def guarded(*args: Any, **kwargs: Any) -> Any:
            if any(isinstance(arg, str) and self.pattern.search(arg) for arg in args[:2]):
                raise jinja2.TemplateRuntimeError(
                    f"|{name} on a block or macro that holds values: in an HTML or Markdown body, "
                    f"apply it to each value instead ({{{{ name|{name} }}}})"
                )
            return function(*args, **kwargs)

        return guarded

    def restore(self, text: str, before: int | None = None) -> str:
        """``text`` with each token replaced by its value, HTML-escaped unless
        markup. A markup value holds only tokens made before it (a macro's
        output is finished first), so it never expands itself."""
        limit = len(self.values) if before is None else before

        def value(match: re.Match[str]) -> str:
            index = int(match.group(1))
            if index >= limit:
                return match.group(0)
            text, markup = self.values[index]
            return self.restore(text, index) if markup else str(escape(text))

        return self.pattern.sub(value, text)

    def restore_text(self, text: str) -> str:
        """``text`` (read from the HTML) with each token replaced by its value
        as typed, not escaped. For values that are not markup."""
        count = len(self.values)

        def value(match: re.Match[str]) -> str:
            index = int(match.group(1))
            return self.values[index][0] if index < count else match.group(0)

        return self.pattern.sub(value, text)


# Filters that leave the tokens in their text as they are.
_TOKEN_SAFE_FILTERS = {"safe", "escape", "e", "forceescape", "trim", "indent", "string", "default", "d"}


def _nonce() -> str:
    """12 random digits that cannot overlap themselves, so a token is found at
    its place even between other digits."""
    while True:
        nonce = "".join(secrets.choice("0123456789") for _ in range(12))
        if not any(nonce[:size] == nonce[-size:] for size in range(1, len(nonce))):
            return nonce


class _Sandbox(SandboxedEnvironment):
    """Jinja's sandbox, with a bound on ``*`` and ``**``: ``{{ "★" * stars|int }}``
    with ``stars`` = 10000000000 from the list would take all the memory."""

    intercepted_binops = frozenset({"*", "**"})
    MAX_ITEMS = 1_000_000  # a string or list made with *
    MAX_BITS = 100_000  # an integer made with **

    def call_binop(self, context: jinja2.runtime.Context, operator: str, left: Any, right: Any) -> Any:
        """``left operator right``, refused when the result would be huge."""
        if operator == "*":
            for items, times in ((left, right), (right, left)):
                if isinstance(items, (str, list, tuple)) and isinstance(times, int) and len(items) * times > self.MAX_ITEMS:
                    raise jinja2.TemplateRuntimeError(
                        f"{len(items)} × {times} items is too large (at most {self.MAX_ITEMS:,})"
                    )
        elif (isinstance(left, int) and isinstance(right, int) and abs(left) > 1
              and right * abs(left).bit_length() > self.MAX_BITS):
            raise jinja2.TemplateRuntimeError(f"{left} ** {right} is too large")
        return super().call_binop(context, operator, left, right)


@dataclass
class TemplateConfig:
    """What the config adds to every template."""

    default_from: str | None = None  # [message] from
    unsubscribe: str | None = None  # [message] unsubscribe: a mailto: or https: address (Jinja)
    list_id: str | None = None  # [message] list_id: "Club news <news.club.example.com>" (Jinja)
    css: Path | None = None  # [message] css: a stylesheet inlined into HTML bodies
    attachments_dir: Path | None = None  # files the list names come from here (default: the template's folder)
    protected: dict[Path, str] = field(default_factory=dict)  # files a list may never name -> what they are


class MailTemplate:
    """A parsed template file, ready to render rows into drafts."""

    def __init__(
        self, path: Path, parts: list[_Part], kind: BodyKind, content_type: str,
        config: TemplateConfig | None = None, text: str = "",
    ) -> None:
        self.path = path
        self.folder = path.parent
        self.text = text  # the file's text: part of the campaign's identity
        self.kind = kind
        self.content_type = content_type  # the full header, for hand-written MIME bodies
        self.config = config or TemplateConfig()
        self.list_folder = self.config.attachments_dir or self.folder  # where files named by the list are
        self._protected = {path.resolve(): what for path, what in self.config.protected.items()}
        self._placeholders = _Placeholders()
        self._body_values = _BodyValues()
        self._env = _Sandbox(undefined=jinja2.StrictUndefined, keep_trailing_newline=True, autoescape=False)
        self._env.filters.update(FILTERS)
        self._address_env = self._env.overlay(finalize=self._placeholders)
        self._html_env = self._env.overlay(autoescape=True, finalize=self._body_values.finalize)
        self._html_env.filters = {name: self._body_values.guard(name, f) for name, f in self._env.filters.items()}
        self.parts = parts
        defaults = {"From": self.config.default_from, "List-Unsubscribe": self.config.unsubscribe,
                    "List-Id": self.config.list_id}
        for name, value in defaults.items():
            if value and not any(p.name == name for p in parts):
                self.parts.insert(0, _Part(name, value, []))
        for part in self.parts:
            # A URI list renders with placeholders too: the template alone says where a URI ends.
            env = self._address_env if part.name in (*ADDRESS_HEADERS, *URI_HEADERS) else self._env
            part.compiled = self._compile(env, part)
            if part.name == "body" and kind in ("html", "markdown", "mime"):
                part.compiled_html = self._compile(self._html_env, part)

    def _compile(self, env: jinja2.Environment, part: _Part) -> jinja2.Template:
        try:
            return env.from_string(part.source)
        except jinja2.TemplateSyntaxError as error:
            raise TemplateError(f"{self._where(part, error.lineno)}: {error.message}") from error

    # --- checks before any row is rendered ---------------------------------

    @classmethod
    def from_string(
        cls, text: str, *, name: str = "template.txt", folder: Path | str | None = None,
        config: TemplateConfig | None = None,
    ) -> MailTemplate:
        """A template from its text instead of a file. ``name``'s suffix gives
        the body's kind when the text has no Content-Type (.txt, .html, .md);
        files it names (attachments, images) are looked for in ``folder``
        (default: the current folder)."""
        return template_from_text(text, Path(folder or Path.cwd()) / name, config)

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
            raise NoSender(
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
        (a line break in a header value, no recipient, a missing attachment)
        and :class:`TemplateError` when the template itself fails on this row.
        """
        draft = Draft(row=recipient.row, subject="", sender=[], to=[])
        css = ""
        authors_images: set[str] = set()
        for part in self.parts:
            if part.name == "body":
                authors_images = self._render_body(part, recipient, draft)
            elif part.name in ADDRESS_HEADERS:
                boxes = self._render_addresses(part, recipient)
                attribute = part.name.lower().replace("-", "_")
                target = "sender" if attribute == "from" else attribute
                getattr(draft, target).extend(boxes)
            elif part.name in ("Attachment", "Style"):
                value = _single_line(part.name, self._render(part, recipient).strip(), part.from_list)
                if not value:
                    continue  # an empty cell: no attachment for this row
                what = "attachment" if part.name == "Attachment" else "stylesheet"
                found = self._file(value, from_list=part.from_list, what=what)
                if part.name == "Attachment":
                    draft.attachments.append(found)
                else:
                    css += _read_css(found)
            elif part.name in URI_HEADERS:
                draft.other_headers += self._render_uris(part, recipient)
            else:
                value = _single_line(part.name, self._render(part, recipient).strip(), part.from_list)
                if part.name == "Subject":
                    draft.subject = value
                elif part.name == "List-Id":
                    if value:
                        draft.other_headers.append((part.name, _list_id(value)))
                else:
                    draft.other_headers.append((part.name, value))
        if not draft.to and not draft.cc and not draft.bcc:
            raise InvalidRow("no recipient address (the To header is empty)")
        if draft.html is not None:
            if self.config.css:
                css = _read_css(self.config.css) + css
            draft.html = inline_css(draft.html, css)
            for src in local_images(draft.html):
                # An <img src> the template does not write came from a value (|safe, an attribute).
                draft.images[src] = self._file(src, from_list=src not in authors_images, what="image")
        _check_size(draft)
        return draft

    def to_text(self, recipient: Recipient) -> str:
        """The To header as this row renders it, unchecked ("" when it does not
        render): the address of a row that is invalid for another reason, for
        the report (which makes its control characters visible)."""
        texts = []
        for part in self.parts:
            if part.name == "To":
                self._placeholders.values = []
                try:
                    texts.append(self._placeholders.restore(self._render(part, recipient)).strip())
                except TemplateError:
                    return ""
        return ", ".join(text for text in texts if text)

    def _file(self, text: str, *, from_list: bool, what: str) -> Path:
        """The file an Attachment, Style or image names (see the module's docstring)."""
        if not from_list:
            return resolve_file(text, self.folder, what=what)
        hint = "" if self.config.attachments_dir else " (or pass --attachments-dir DIR)"
        return resolve_list_file(text, self.list_folder, what=what, protected=self._protected, hint=hint)

    def _render_body(self, part: _Part, recipient: Recipient, draft: Draft) -> set[str]:
        """The text (and HTML) parts, by the kind of template; returns the
        local images the template itself names."""
        html: str | None = None  # the HTML with the values as tokens
        if self.kind == "html":
            html = self._render_tokens(part, recipient)
        elif self.kind == "markdown":  # the text part is made from the HTML, as for HTML
            html = _markdown_to_html(self._render_tokens(part, recipient))
        elif self.kind == "mime":
            texts = self._split_mime(self._render(part, recipient))
            html = self._split_mime(self._render_tokens(part, recipient)).get("text/html")
            draft.body = texts.get("text/plain", "")
        else:
            draft.body = self._render(part, recipient)
        if html is not None:
            draft.html = self._body_values.restore(html)
            if not draft.body:
                draft.body = self._text_of(html, draft.html)
        if not draft.body.endswith("\n"):
            draft.body += "\n"
        return set(_local_images(html)) if html is not None else set()

    def _text_of(self, tokens_html: str, html: str) -> str:
        """The text part for an HTML or Markdown body: the readable text of
        ``html`` (links kept with their address), each value as typed.

        Made from the HTML with the values as tokens, which is the same for
        every row: its text is made once (inscriptis takes a quarter of a
        millisecond), then the values go in. The row's own HTML is read
        instead where that could give another text: in a table (whose columns
        are as wide as their text), or for a value that is markup, empty, or
        has spaces that HTML collapses."""
        values = self._body_values.values
        if "<table" in tokens_html.lower() or not all(
            text and not markup and " ".join(text.split()) == text for text, markup in values
        ):
            return html_to_text(html)
        return self._body_values.restore_text(_html_to_text(tokens_html))

    def _render_tokens(self, part: _Part, recipient: Recipient) -> str:
        """The body rendered with each value as a token (see :class:`_BodyValues`)."""
        self._body_values.values = []
        return self._render(part, recipient, html=True)

    def _split_mime(self, body: str) -> dict[str, str]:
        """The first text/plain and text/html leaves of a hand-written
        multipart body (awdeorio/mailmerge), by content type."""
        parsed = email.message_from_string(
            f"Content-Type: {self.content_type}\n\n{body}", policy=email.policy.default
        )
        texts: dict[str, str] = {}
        for leaf in parsed.walk():
            kind = leaf.get_content_type()
            if kind in ("text/plain", "text/html") and kind not in texts:
                texts[kind] = str(leaf.get_content())
        return texts

    def _render(self, part: _Part, recipient: Recipient, *, html: bool = False) -> str:
        if html in part.constant:  # a part without Jinja renders the same for every row
            return part.constant[html]
        compiled = part.compiled_html if html else part.compiled
        assert compiled is not None
        try:
            text = render_jinja(compiled, recipient.values)
            if not part.from_list:
                part.constant[html] = text
            return text
        except Exception as error:  # noqa: BLE001 - whatever the template does wrong, in one line
            line = _error_line(error)
            raise TemplateError(
                f"{self._where(part, line)}: row {recipient.row}: {_describe(error, _source_line(part.source, line))}"
            ) from error

    def _render_addresses(self, part: _Part, recipient: Recipient) -> list[Mailbox]:
        if part.constant_boxes is not None:  # e.g. the From of every row
            return list(part.constant_boxes)
        boxes = self._parse_addresses(part, recipient)
        if not part.from_list:
            part.constant_boxes = list(boxes)
        return boxes

    def _parse_addresses(self, part: _Part, recipient: Recipient) -> list[Mailbox]:
        self._placeholders.values = []
        text = self._render(part, recipient)
        for value in self._placeholders.values:
            _single_line(part.name, value, True)
        boxes: list[Mailbox] = []
        for name, address in _split_addresses(_single_line(part.name, text, part.from_list)):
            whole = self._placeholders.whole(address) if not name else None
            if whole is not None:
                # The cell holds the whole address: it may hold several ("a@x, b@y").
                pairs = getaddresses([whole.replace(";", ",")])
            else:
                pairs = [(self._placeholders.restore(name), self._placeholders.restore(address))]
            boxes.extend(Mailbox(n.strip(), a.strip()) for n, a in pairs if n or a)
        return boxes

    def _render_uris(self, part: _Part, recipient: Recipient) -> list[tuple[str, str]]:
        """A URI list header (RFC 2369), each URI checked and percent-encoded
        (see :mod:`mailmerge.mime.listheaders`). List-Unsubscribe with an https
        address also gets List-Unsubscribe-Post (RFC 8058), which Gmail and
        Yahoo require from bulk senders."""
        self._placeholders.values = []
        text = _single_line(part.name, self._render(part, recipient), part.from_list)
        for value in self._placeholders.values:
            _single_line(part.name, value, True)
        if is_no_post(part.name, text):
            return [(part.name, self._placeholders.restore(text).strip())]
        pieces = [self._placeholders.restore(piece).strip() for piece in split_uris(text)]
        uris = [to_uri(part.name, piece) for piece in pieces if piece]  # an empty cell: no address
        if not uris:
            return []
        headers = [(part.name, ", ".join(f"<{uri}>" for uri in uris))]
        one_click = any(uri.lower().startswith("https://") for uri in uris)
        if part.name == "List-Unsubscribe" and one_click and not any(p.name == "List-Unsubscribe-Post" for p in self.parts):
            headers.append(("List-Unsubscribe-Post", "List-Unsubscribe=One-Click"))
        return headers

    # --- warnings before sending ----------------------------------------------

    def url_warnings(self, recipients: Iterable[Recipient]) -> list[str]:
        """Where a URL header puts a column into a URL as it is (no ``| urlencode``)
        and a row's value holds characters that change the URL (``+`` becomes a
        space on most servers, ``&`` and ``#`` cut it): one warning per header
        and column, with the first such row and the fix."""
        raw = [(part, column) for part in self.parts if part.name in URI_HEADERS
               for column in raw_url_columns(self._env, part.source)]
        if not raw:
            return []
        first: dict[int, tuple[int, str]] = {}  # index in raw -> (row, value)
        counts = dict.fromkeys(range(len(raw)), 0)
        for recipient in recipients:
            for index, (_, column) in enumerate(raw):
                value = recipient.values.get(column, "")
                if needs_encoding(value):
                    counts[index] += 1
                    first.setdefault(index, (recipient.row, value))
        warnings = []
        for index, (row, value) in first.items():
            part, column = raw[index]
            where = f"template line {part.lines[0]}" if part.lines else "unsubscribe in the config"
            more = counts[index] - 1
            others = f" (and {more:,} more row{'s' if more > 1 else ''})" if more else ""
            warnings.append(
                f"{part.name} ({where}) puts {{{{ {column} }}}} into the URL as it is; row {row}'s {value!r} "
                f"has {describe_chars(needs_encoding(value))}, to be encoded in a URL{others}: "
                f"write {{{{ {column} | urlencode }}}}"
            )
        return warnings

    def _where(self, part: _Part, line: int | None) -> str:
        if not part.lines:  # a header that came from the config or a default
            return f"{self.path}: {part.name} (default)"
        index = min(max(line or 1, 1), len(part.lines)) - 1
        return f"{self.path}: line {part.lines[index]}"


# The text parsed here holds placeholders, not values: it is the same for
# every row of the list, so each distinct text is parsed once.
@functools.lru_cache(maxsize=256)
def _split_addresses(text: str) -> tuple[tuple[str, str], ...]:
    return tuple(getaddresses([text]))


# What may not be in a header value: C0 controls but TAB, DEL, C1 controls,
# and every character str.splitlines() breaks at (U+2028...), which the email
# package refuses when it builds the message: found here, ``check`` and
# ``--dry-run`` find the same invalid rows as ``send``.
_NOT_IN_HEADER = re.compile("[\x00-\x08\x0a-\x1f\x7f-\x9f\u2028\u2029]")


def _single_line(header: str, value: str, from_list: bool) -> str:
    """``value``, or :class:`InvalidRow` when it has a line break or a control character."""
    found = _NOT_IN_HEADER.search(value)
    if found is None:
        return value
    source = "from the list" if from_list else "in the template"
    char = found.group()
    if len(f"a{char}b".splitlines()) > 1:
        raise InvalidRow(f"the {header} header would contain a line break (U+{ord(char):04X}, {source})")
    raise InvalidRow(f"the {header} header would contain a control character (U+{ord(char):04X}, {source})")


@functools.lru_cache(maxsize=64)
def _markdown_to_html(text: str) -> str:
    # The text holds tokens, not values: the same for every row of the list.
    return markdown_to_html(text)


@functools.lru_cache(maxsize=64)
def _html_to_text(markup: str) -> str:
    # The markup holds tokens, not values: the same for every row of the list.
    return html_to_text(markup)


@functools.lru_cache(maxsize=64)
def _local_images(markup: str) -> tuple[str, ...]:
    return tuple(local_images(markup))


def _source_line(source: str, line: int | None) -> str:
    """Line ``line`` (from 1) of a template's source; "" when there is none."""
    lines = source.splitlines()
    return lines[line - 1] if line and 0 < line <= len(lines) else ""


# Python's words when a template compares a cell (text) with a number.
_TEXT_VS_NUMBER = re.compile(
    r"'(?P<op>[<>]=?)' not supported between instances of "
    r"'(?:str' and '(?:int|float|Decimal)|(?:int|float|Decimal)' and 'str)'"
)
_COMPARED_NAME = r"([A-Za-z_][\w.]*)"  # the cell's name on either side of the operator


def _compare_hint(op: str, line: str) -> str:
    """The error of ``{% if amount > 5 %}`` for a person: what and what to write."""
    operator = re.escape(op)
    found = re.search(rf"{_COMPARED_NAME}\s*{operator}\s*-?[0-9][0-9.]*", line) or \
        re.search(rf"-?[0-9][0-9.]*\s*{operator}\s*{_COMPARED_NAME}", line)
    name = found.group(1) if found else "amount"
    example = found.group(0).replace(name, f"{name} | int", 1) if found else f"amount | int {op} 5 (e.g.)"
    return (
        f"'{op}' compares text with a number: every cell is text, as the list shows it; "
        f"convert it first with | int (whole numbers) or | float (decimals): {{% if {example} %}}"
    )


def _describe(error: Exception, line: str = "") -> str:
    """An error raised while a template renders, for a person; ``line`` is
    the template line it happened in, when known."""
    if isinstance(error, TypeError) and (compared := _TEXT_VS_NUMBER.search(str(error))):
        return _compare_hint(compared["op"], line)
    if isinstance(error, jinja2.UndefinedError):
        return str(error.message)
    if isinstance(error, jinja2.TemplateError):
        return str(error)
    if isinstance(error, MemoryError):
        return "the template needs more memory than there is (MemoryError)"
    if isinstance(error, RecursionError):
        return "a macro or include calls itself without end (RecursionError)"
    if isinstance(error, KeyError):
        return f"no key {error} (KeyError)"
    return f"{type(error).__name__}: {error}"


@functools.lru_cache(maxsize=32)
def _read_css(path: Path) -> str:
    try:
        return path.read_text(encoding="utf-8-sig")
    except (OSError, UnicodeDecodeError) as error:
        raise InvalidRow(f"cannot read the stylesheet {path}: {error}") from error


def _list_id(value: str) -> str:
    """A List-Id value (RFC 2919), or InvalidRow saying the form."""
    try:
        name, list_id = parse_list_id(value)
    except ValueError as error:
        raise InvalidRow(f"the List-Id header: {error}; {LIST_ID_FORM}") from error
    return f"{name} <{list_id}>" if name else f"<{list_id}>"


def _check_size(draft: Draft) -> None:
    """Refuse a row whose message would be over what providers accept."""
    files = {*draft.attachments, *draft.images.values()}
    encoded = sum(path.stat().st_size for path in files) * 4 // 3  # base64
    encoded += len(draft.body.encode()) + len((draft.html or "").encode())
    if encoded > MAX_MESSAGE_BYTES:
        raise InvalidRow(
            f"the message would be about {encoded / 1024 / 1024:.0f} MB with its attachments; "
            "most providers refuse more than 25 MB"
        )


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


def load_template(path: Path | str, config: TemplateConfig | None = None, *, default_from: str | None = None) -> MailTemplate:
    """Read and parse a template file.

    ``config`` carries what the config adds (default From, unsubscribe
    address, stylesheet, attachments folder); ``default_from`` is a shortcut.
    """
    path = Path(path)
    config = config or TemplateConfig(default_from=default_from)
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
    return template_from_text(text, path, config)


def template_from_text(text: str, path: Path, config: TemplateConfig | None = None) -> MailTemplate:
    """Parse a template's ``text``. ``path`` names it in errors, its suffix
    says the body's kind when there is no Content-Type header (.txt, .html,
    .md), and its folder is where the files it names are looked for."""
    parts, content_type = parse_template(text, path)
    kind = _body_kind(content_type, path)
    return MailTemplate(path, parts, kind, content_type, config, text)


def _body_kind(content_type: str, path: Path) -> BodyKind:
    main = content_type.split(";")[0].strip().lower()
    if not main:
        return _KIND_BY_SUFFIX.get(path.suffix.lower(), "text")
    if main.startswith("multipart/"):
        return "mime"
    if main not in _KIND_BY_TYPE:
        raise TemplateError(
            f"{path}: Content-Type {main} is not one mailmerge can send; use text/plain, "
            "text/html, text/markdown or a multipart/alternative body"
        )
    return _KIND_BY_TYPE[main]


def parse_template(text: str, path: Path) -> tuple[list[_Part], str]:
    """Split a template's text into header parts and the body part; also
    return its Content-Type header ("" when it has none)."""
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
    content_type = ""
    for part in [p for p in parts if p.name in ("Content-Type", "MIME-Version")]:
        parts.remove(part)
        if part.name == "Content-Type":
            content_type = part.source
    body_lines = lines[body_start:]
    body = "\n".join(body_lines) + "\n"
    parts.append(_Part("body", body, list(range(body_start + 1, body_start + 2 + len(body_lines)))))
    return parts, content_type


def _header_part(parts: list[_Part], raw_name: str, value: str, number: int, path: Path) -> _Part:
    """Add one header line to ``parts``; return the part it went into."""
    name = _CANONICAL.get(raw_name.lower(), raw_name)
    if name in RESERVED_HEADERS:
        raise TemplateError(f"{path}: line {number}: mailmerge sets {name} itself; remove it")
    earlier = next((p for p in parts if p.name == name), None)
    if earlier is not None and name in ("From", "Subject", "Content-Type", "List-Id"):
        raise TemplateError(f"{path}: line {number}: a second {name} header")
    if earlier is not None and name in (*ADDRESS_HEADERS, *URI_HEADERS):  # To: a, then To: b
        earlier.add_line(", ", value, number)
        return earlier
    part = _Part(name, value, [number])
    parts.append(part)
    return part
