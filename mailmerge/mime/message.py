"""Turn a :class:`~mailmerge.render.template.Draft` into an :class:`email.message.EmailMessage`
and its envelope (who it is from and to whom it goes, Bcc included).

Non-ASCII subjects and display names are encoded per RFC 2047 (``policy.SMTP``);
an address whose local part is not ASCII (``josé@example.com``) needs SMTPUTF8,
and then the whole message is written in UTF-8 (``policy.SMTPUTF8``). The Bcc
addresses are in the envelope, never in a header. List headers (URIs in angle
brackets, List-Id) are folded here, never encoded: see :mod:`mailmerge.mime.listheaders`.
"""

from __future__ import annotations

import base64
import binascii
import functools
import hashlib
import html
import itertools
import mimetypes
import re
import time
from collections.abc import Iterator
from dataclasses import dataclass
from email import policy
from email.header import Header
from email.headerregistry import Address
from email.message import EmailMessage, MIMEPart
from email.utils import formataddr, formatdate, make_msgid, quote
from pathlib import Path

from email_validator import EmailNotValidError, validate_email

from ..config.file import RecipientLimit
from ..errors import InvalidRow
from ..render.content import replace_image_sources
from ..render.template import Draft, Mailbox
from .email_internals import CachingHeaderRegistry, WrittenHeader, add_header_as_is, copy_headers
from .listheaders import URI_HEADERS, fold, is_no_post, parse_list_id, split_uris, to_uri, uri_words


_REGISTRY = CachingHeaderRegistry()
_SMTP = policy.SMTP.clone(header_factory=_REGISTRY)
_SMTPUTF8 = policy.SMTPUTF8.clone(header_factory=_REGISTRY)
_SEVEN_BIT = _SMTP.clone(cte_type="7bit")


@dataclass(frozen=True)
class EnvelopeRecipient:
    """One address the message is delivered to, and the header that named it."""

    field: str  # "To", "Cc" or "Bcc"
    address: str  # as it goes into RCPT TO (IDNA domain when the local part is ASCII)


@dataclass
class OutgoingMessage:
    """A message ready for the wire, with its envelope."""

    row: int
    message: EmailMessage
    sender: str
    recipients: list[EnvelopeRecipient]
    smtputf8: bool  # the envelope or headers hold a non-ASCII local part
    message_id: str  # as in its header (reading a header back parses it: kept here instead)
    date: str

    def as_bytes(self, *, eightbit: bool = True) -> bytes:
        """The message as sent, and as copied to the Sent folder.

        Its parts are 7-bit (see :func:`_set_text`), so the bytes are the same
        whether the server offers 8BITMIME (``eightbit``) or not."""
        if self.smtputf8:
            return self.message.as_bytes(policy=_SMTPUTF8)
        return self.message.as_bytes(policy=_SMTP if eightbit else _SEVEN_BIT)


@dataclass(frozen=True)
class _Checked:
    name: str
    unicode: str  # the address as the person wrote it, normalised
    ascii: str | None  # None when the local part is not ASCII

    @property
    def envelope(self) -> str:
        """The address for MAIL FROM / RCPT TO (IDNA domain when it can be ASCII)."""
        return self.unicode if self.ascii is None else self.ascii


# A pure function: the From repeats on every row, and every address is checked
# once when the plan is made and again when its message is built.
@functools.lru_cache(maxsize=1 << 16)
def check_address(address: str) -> tuple[str, str | None]:
    """Validate an address's syntax (no DNS); return ``(normalised, ascii or None)``.

    Raises :class:`InvalidRow` naming the address and what is wrong with it.
    """
    if not address:
        raise InvalidRow("an address is empty", address)
    local, _, domain = address.rpartition("@")
    try:
        if len(local) <= 64 and _DOT_ATOM.fullmatch(local):
            # email_validator takes such a local part as it is: only the domain
            # needs checking, and a list's addresses share a few domains.
            normalized, ascii_domain = _check_domain(domain)
            if len(local) + 1 + len(ascii_domain) <= 254:  # else the full check says what is too long
                return f"{local}@{normalized}", f"{local}@{ascii_domain}"
        result = validate_email(address, check_deliverability=False, allow_smtputf8=True)
    except EmailNotValidError as error:
        raise InvalidRow(f"'{address}' is not a valid address: {error}", address) from error
    return result.normalized, result.ascii_email


# RFC 5322 dot-atom, in ASCII: what email_validator accepts, unchanged, before the @.
_DOT_ATOM = re.compile(r"[A-Za-z0-9!#$%&'*+/=?^_`{|}~-]+(?:\.[A-Za-z0-9!#$%&'*+/=?^_`{|}~-]+)*")


@functools.lru_cache(maxsize=4096)
def _check_domain(domain: str) -> tuple[str, str]:
    """A domain's normalised and ASCII (IDNA) forms, checked as email_validator
    checks the part after the @ (raises its EmailNotValidError)."""
    result = validate_email(f"a@{domain}", check_deliverability=False, allow_smtputf8=True)
    assert result.ascii_email is not None  # the local part "a" is ASCII
    return result.normalized.split("@", 1)[1], result.ascii_email.split("@", 1)[1]


def _checked(boxes: list[Mailbox]) -> list[_Checked]:
    return [_Checked(box.name, *check_address(box.address)) for box in boxes]


def _header_value(boxes: list[_Checked], utf8: bool) -> str | list[Address]:
    if utf8:  # Address() refuses non-ASCII local parts; write the header by hand
        return ", ".join(
            f'"{quote(box.name)}" <{box.unicode}>' if box.name else box.unicode for box in boxes
        )
    addresses = []
    for box in boxes:
        assert box.ascii is not None
        username, domain = box.ascii.rsplit("@", 1)
        addresses.append(Address(display_name=box.name, username=username, domain=domain))
    return addresses


@dataclass(frozen=True)
class CheckedAddresses:
    """Every address of a draft, checked and normalised."""

    sender: _Checked
    to: list[_Checked]
    cc: list[_Checked]
    bcc: list[_Checked]
    reply_to: list[_Checked]

    @property
    def envelope(self) -> list[EnvelopeRecipient]:
        """The recipients the message is delivered to, with their header."""
        return [
            *(EnvelopeRecipient("To", box.envelope) for box in self.to),
            *(EnvelopeRecipient("Cc", box.envelope) for box in self.cc),
            *(EnvelopeRecipient("Bcc", box.envelope) for box in self.bcc),
        ]

    @property
    def utf8(self) -> bool:
        """True when any address has a non-ASCII local part (needs SMTPUTF8)."""
        everyone = [self.sender, *self.to, *self.cc, *self.bcc, *self.reply_to]
        return any(box.ascii is None for box in everyone)


def check_addresses(draft: Draft, limit: RecipientLimit | None = None) -> CheckedAddresses:
    """Check every address of a draft (syntax only, no DNS), and, given a
    ``limit``, that the message has no more recipients than it allows.

    Raises :class:`InvalidRow` for the first address that is not valid, or
    for a message over the limit.
    """
    if len(draft.sender) != 1:
        raise InvalidRow(f"the From header must hold exactly one address, not {len(draft.sender)}")
    if limit is not None:
        # Counted before checking the addresses: a cell of 10,000 is refused at once.
        over = limit.exceeded_by(len(draft.to) + len(draft.cc) + len(draft.bcc))
        if over:
            raise InvalidRow(over)
    return CheckedAddresses(
        sender=_checked(draft.sender)[0],
        to=_checked(draft.to),
        cc=_checked(draft.cc),
        bcc=_checked(draft.bcc),
        reply_to=_checked(draft.reply_to),
    )


def build_message(
    draft: Draft, *, message_id: str = "", date: str = "", addresses: CheckedAddresses | None = None
) -> OutgoingMessage:
    """Build the message and envelope for a draft.

    ``message_id`` and ``date`` are given when the message went out before
    (a retry in a later run): the same message keeps the same identity.
    Raises :class:`InvalidRow` for an address that is not valid, or a header
    value the email package refuses.
    """
    addresses = addresses or check_addresses(draft)  # given when the caller checked them already
    sender, utf8 = addresses.sender, addresses.utf8
    headers = {"To": addresses.to, "Cc": addresses.cc, "Reply-To": addresses.reply_to}
    message = EmailMessage(policy=_SMTPUTF8 if utf8 else _SMTP)
    # make_msgid() without a domain asks DNS for this machine's name, every call.
    domain = sender.envelope.rsplit("@", 1)[1]
    try:
        if utf8:
            message["From"] = _header_value([sender], utf8)
            for name, boxes in headers.items():
                if boxes:
                    message[name] = _header_value(boxes, utf8)
            message["Subject"] = draft.subject
            for name, value in draft.other_headers:
                folded = _list_header(name, value)
                if folded is not None:
                    add_header_as_is(message, name, folded)
                else:
                    message[name] = value
        else:
            add_header_as_is(message, "From", _addresses([sender]))
            for name, boxes in headers.items():
                if boxes:
                    add_header_as_is(message, name, _addresses(boxes))
            add_header_as_is(message, "Subject", _text_value("Subject", draft.subject))
            for name, value in draft.other_headers:
                add_header_as_is(message, name, _list_header(name, value) or _text_value(name, value))
        date = date or _now()
        message_id = message_id or make_msgid(domain=domain)
        add_header_as_is(message, "Date", date)
        add_header_as_is(message, "Message-ID", message_id)
        add_header_as_is(message, "MIME-Version", "1.0")
        _set_body(message, draft, message_id)
    except (ValueError, TypeError) as error:
        raise InvalidRow(f"cannot build the message: {error}") from error
    except OSError as error:
        raise InvalidRow(f"cannot read a file of the message: {error}") from error

    return OutgoingMessage(
        row=draft.row,
        message=message,
        sender=sender.envelope,
        recipients=addresses.envelope,
        smtputf8=utf8,
        message_id=message_id,
        date=date,
    )


def _now() -> str:
    """The Date header for a message made now (RFC 5322, local time)."""
    return _date_of_second(int(time.time()))


@functools.lru_cache(maxsize=1)
def _date_of_second(second: int) -> str:  # the same text for every message of that second
    return formatdate(second, localtime=True)


# Header values made here are already RFC 2047-encoded by the email package's
# own helpers (formataddr, Header): they go in as they are (see email_internals).


def _addresses(boxes: list[_Checked]) -> str:
    """An address list, display names quoted or RFC 2047-encoded as needed."""
    for box in boxes:
        if len(box.name.splitlines()) > 1:  # what the email package refuses too (\u2028...)
            raise ValueError(f"a line break in the name {box.name!r}")
    return ", ".join(formataddr((box.name, box.ascii or box.unicode), charset="utf-8") for box in boxes)


def _text_value(name: str, value: str) -> str:
    """An unstructured header value, RFC 2047-encoded when it is not ASCII."""
    if len(value.splitlines()) > 1:  # what the email package refuses too (\u2028...)
        raise ValueError(f"a line break in the {name} header")
    return value if value.isascii() else Header(value, "utf-8", header_name=name).encode()


class _Folded(WrittenHeader):
    """A header mailmerge folds itself, between the words it is given: a URI
    list (RFC 2369) or a List-Id (RFC 2919). The email package would refold a
    long one into RFC 2047 encoded-words, in which no client finds a URI.
    The string is the header's value as a person reads it."""

    words: tuple[str, ...]

    def __new__(cls, name: str, value: str, words: tuple[str, ...]) -> _Folded:
        folded = super().__new__(cls, name, value)
        folded.words = words
        return folded

    def lines(self, linesep: str, width: int) -> str:
        return fold(self.name, self.words, linesep, width)

    def __reduce__(self) -> tuple[type[_Folded], tuple[str, str, tuple[str, ...]]]:  # type: ignore[override]
        return _Folded, (self.name, str(self), self.words)


def _list_header(name: str, value: str) -> _Folded | None:
    """A list header, folded only between its URIs, or between the words of a
    List-Id's name and before its ``<id>``; None for any other header."""
    if name in URI_HEADERS and not is_no_post(name, value):
        uris = split_uris(value)
        for uri in uris:
            if to_uri(name, uri) != uri:  # the template makes them so; a Draft made elsewhere may not
                raise ValueError(f"the {name} header holds {uri!r}, which is not a URI as it is")
        return _Folded(name, ", ".join(f"<{uri}>" for uri in uris), tuple(uri_words(uris)))
    if name == "List-Id":
        return _list_id_header(value)
    return None


@functools.lru_cache(maxsize=64)  # the same List-Id on every row, or a few
def _list_id_header(value: str) -> _Folded:
    phrase, list_id = parse_list_id(value)
    return _Folded("List-Id", value, (*_phrase_words("List-Id", phrase), f"<{list_id}>"))


def _phrase_words(name: str, phrase: str) -> list[str]:
    """The display name of a List-Id as words: atoms, one quoted string, or
    RFC 2047 encoded-words when it is not ASCII."""
    if not phrase:
        return []
    if not phrase.isascii():
        return Header(phrase, "utf-8", header_name=name).encode().split()
    if re.search(r'[()<>\[\]:;@\\,."]|=\?', phrase):
        return [f'"{quote(phrase)}"']
    return phrase.split()


def _set_body(message: EmailMessage, draft: Draft, message_id: str) -> None:
    """The MIME structure: text, or text and HTML as alternatives (the HTML
    with its images in a multipart/related), then the attachments.

    Nothing in it is random: the boundaries and the Content-IDs come from the
    Message-ID, so the same draft with the same Message-ID and Date is the same
    bytes, in this run or a later one (the copy for the Sent folder is the
    message that went out).
    """
    inline = set(draft.images.values())
    attachments = [path for path in draft.attachments if path not in inline]  # an inline image goes once
    if draft.html is None and not attachments:
        _set_text(message, draft.body, "plain")  # the usual case, made as fast as it can be
        return
    text = _text_part(message.policy, draft.body, "plain")
    body, html = text, None
    if draft.html is not None:
        # <n.message-id>: unique wherever the Message-ID is.
        cids = {src: f"<{n}.{message_id.strip('<>')}>" for n, src in enumerate(draft.images, start=1)}
        markup = replace_image_sources(draft.html, {src: "cid:" + cid[1:-1] for src, cid in cids.items()})
        html = _text_part(message.policy, markup, "html")
    boundaries = _boundaries(message_id, [str(part.get_payload()) for part in (text, html) if part is not None])
    if html is not None:
        if draft.images:
            html = _multipart(message.policy, "related", next(boundaries), [html])
            for src, path in draft.images.items():
                maintype, subtype = _mime_type(path)
                html.add_related(path.read_bytes(), maintype, subtype, cid=cids[src],
                                 filename=path.name, disposition="inline")
        body = _multipart(message.policy, "alternative", next(boundaries), [text, html])
    if attachments:
        body = _multipart(message.policy, "mixed", next(boundaries), [body])
        for path in attachments:
            maintype, subtype = _mime_type(path)
            body.add_attachment(path.read_bytes(), maintype, subtype, filename=path.name)
    copy_headers(message, body)
    message.set_payload(body.get_payload())


def _boundaries(message_id: str, texts: list[str]) -> Iterator[str]:
    """The message's multipart boundaries, from a hash of its Message-ID.

    ``=_`` never occurs in base64 or quoted-printable, so only a 7-bit text
    part could hold one: a boundary found in ``texts`` is skipped (the
    email package makes the same check for its random boundaries)."""
    seed = hashlib.blake2b(message_id.encode("utf-8", "surrogateescape"), digest_size=10).hexdigest()
    for n in itertools.count(1):
        boundary = f"=_{seed}.{n}"
        if not any(boundary in text for text in texts):
            yield boundary


def _multipart(mail_policy: policy.Policy, subtype: str, boundary: str, parts: list[MIMEPart]) -> MIMEPart:
    """A multipart/``subtype`` part holding ``parts``, with its boundary set
    (the email package would draw a random one when writing it out)."""
    # A MIMEPart, not an EmailMessage: the parts add_related() and add_attachment()
    # make are then of its type too, without a MIME-Version header of their own.
    container = MIMEPart(policy=mail_policy)
    value = f'multipart/{subtype}; boundary="{boundary}"'
    add_header_as_is(container, "Content-Type", WrittenHeader("Content-Type", value))
    container.set_payload(list(parts))
    return container


def _text_part(mail_policy: policy.Policy, text: str, subtype: str) -> MIMEPart:
    part = MIMEPart(policy=mail_policy)
    _set_text(part, text, subtype)
    return part


def _set_text(part: MIMEPart, text: str, subtype: str) -> None:
    """Make ``part`` a UTF-8 text part, always 7-bit.

    What ``set_content`` does, at a tenth of its cost (it parses the headers it
    has just written): short ASCII lines go as they are (``7bit``); other text
    is quoted-printable, or base64 when that is shorter (text in Hangul, say).
    Never ``8bit``: a server without 8BITMIME would get it re-encoded, and then
    the bytes sent would depend on the server. Here they do not, so the copy
    in the Sent folder is byte for byte the message that went out.
    """
    data = b"\n".join(text.encode("utf-8").splitlines()) + b"\n"
    if data.isascii() and max(map(len, data.splitlines())) <= 78:  # the email package's own limit (RFC 5322 says SHOULD)
        encoding, payload = "7bit", data.decode("ascii")
    else:
        quoted = binascii.b2a_qp(data, istext=True)
        base64_length = -(-len(data) // 3) * 4 * 77 // 76  # 76 characters and a newline a line
        if len(quoted) <= base64_length:
            encoding, payload = "quoted-printable", quoted.decode("ascii")
        else:
            encoding, payload = "base64", base64.encodebytes(data).decode("ascii")
    add_header_as_is(part, "Content-Type", _content_header("Content-Type", f'text/{subtype}; charset="utf-8"'))
    add_header_as_is(part, "Content-Transfer-Encoding", _content_header("Content-Transfer-Encoding", encoding))
    part.set_payload(payload)


@functools.lru_cache(maxsize=32)
def _content_header(name: str, value: str) -> WrittenHeader:
    """A constant Content-* header, made once for all messages, and written
    out as it is (neither parsed nor refolded for each message)."""
    return WrittenHeader(name, value)


def _mime_type(path: Path) -> tuple[str, str]:
    guessed, _ = mimetypes.guess_type(path.name)
    maintype, subtype = (guessed or "application/octet-stream").split("/", 1)
    return maintype, subtype


def preview_text(outgoing: OutgoingMessage) -> str:
    """The message as a person reads it: decoded headers (Bcc included), the
    structure of its parts when it has several, then the text."""
    message = outgoing.message
    lines = [f"{name}: {message[name]}" for name in ("From", "To", "Cc", "Reply-To", "Subject") if message[name]]
    bcc = [r.address for r in outgoing.recipients if r.field == "Bcc"]
    if bcc:
        lines.append(f"Bcc: {', '.join(bcc)}  (envelope only, not in the headers)")
    skip = {"from", "to", "cc", "reply-to", "subject", "date", "message-id", "mime-version",
            "content-type", "content-transfer-encoding"}
    lines += [f"{name}: {value}" for name, value in message.items() if name.lower() not in skip]
    if message.is_multipart():
        lines += ["", "Parts:", *structure(message)]
    text = message.get_body(("plain",))
    return "\n".join(lines) + "\n\n" + (str(text.get_content()) if text is not None else "")


def structure(part: MIMEPart, depth: int = 1) -> list[str]:
    """One line per MIME part, indented by depth: type, file name, size."""
    line = "  " * depth + part.get_content_type()
    if part.is_multipart():
        children = part.iter_parts()
        return [line] + [row for child in children for row in structure(child, depth + 1)]  # type: ignore[arg-type]
    size = len(part.get_payload(decode=True) or b"")
    name = part.get_filename()
    disposition = part.get_content_disposition()
    details = [f"{name}" if name else "", f"{size / 1024:.1f} kB", disposition or ""]
    return [line + "  " + "  ".join(d for d in details if d)]


def viewable_html(outgoing: OutgoingMessage) -> str:
    """The message's HTML as a browser can show it from a file: inline images
    as ``data:`` URIs (browsers load no ``cid:``), text bodies in ``<pre>``."""
    message = outgoing.message
    body = message.get_body(("html", "plain"))
    if body is None:
        return ""
    content = str(body.get_content())
    if body.get_content_subtype() == "plain":
        return f"<!doctype html><meta charset='utf-8'><pre>{html.escape(content)}</pre>"
    sources = {}
    for part in message.walk():
        cid = part.get("Content-ID")
        if cid and not part.is_multipart():
            payload = part.get_payload(decode=True)
            data = base64.b64encode(payload if isinstance(payload, bytes) else b"").decode()
            sources["cid:" + cid.strip("<>")] = f"data:{part.get_content_type()};base64,{data}"
    return replace_image_sources(content, sources)
