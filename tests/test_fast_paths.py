"""The fast paths against the public APIs they stand in for (issue 14, item 7).

mailmerge builds messages, renders templates and talks SMTP through a few
internals of the email package, Jinja and smtplib (each family in one module:
mailmerge/mime/email_internals.py, render/jinja_internals.py, delivery/smtplib_internals.py). These
tests make the same things through the documented APIs and compare: a Python
or Jinja upgrade that changes what the internals do fails here.

The messages are compared byte for byte. Where the two legitimately differ,
each case names the headers, and only those are compared decoded instead:

- a value mixing ASCII words and others (a long Korean and English subject):
  mailmerge encodes it whole with ``email.header.Header``, the header registry
  behind ``msg[name] = value`` word by word; both are RFC 2047;
- a list header with long URIs: the header registry folds it into RFC 2047
  encoded-words, in which no mail client finds a URI (what mailmerge's own
  folding avoids; see tests/test_list_headers.py).

The transfer encoding of each text part is mailmerge's choice: the public
build is told the same one, and encodes quoted-printable at RFC 2045's 76
characters a line (the email package's default is the header limit, 78).
"""

from __future__ import annotations

import mimetypes
import re
import traceback
from collections.abc import Callable
from email import policy
from email.headerregistry import Address
from email.message import MIMEPart
from pathlib import Path
from typing import Any

import jinja2
import pytest
from jinja2.sandbox import SandboxedEnvironment
from smtp_server import SmtpTestServer

from mailmerge.config.file import SmtpConfig
from mailmerge.delivery.smtp import SmtpSession
from mailmerge.mime.message import OutgoingMessage, build_message
from mailmerge.outcome import Status
from mailmerge.render.filters import FILTERS
from mailmerge.render.jinja_internals import render
from mailmerge.render.template import Draft, Mailbox

DATE = "Mon, 02 Mar 2026 10:00:00 +0900"
MESSAGE_ID = "<fast.path@example.com>"
KOREAN = "안녕하세요 민준님,\n이번 달 책은 📚 '채식주의자'입니다.\n"
PNG = bytes.fromhex("89504e470d0a1a0a0000000d49484452000000010000000108060000001f15c489") + b"\0" * 40


def build(draft: Draft) -> OutgoingMessage:
    """The fast path: mailmerge's message, with a fixed Message-ID and Date."""
    return build_message(draft, message_id=MESSAGE_ID, date=DATE)


# --- the same message through the email package's public API ---------------------------


def _boxes(boxes: list[Mailbox], utf8: bool) -> str | list[Address]:
    if utf8:  # Address() refuses a non-ASCII local part: the header is written by hand, as mailmerge does
        return ", ".join(f'"{box.name}" <{box.address}>' if box.name else box.address for box in boxes)
    return [Address(display_name=box.name, addr_spec=box.address) for box in boxes]


def _text(part: MIMEPart, text: str, subtype: str, like: MIMEPart) -> None:
    """``set_content`` with the transfer encoding mailmerge chose for ``like``
    (the choice itself is mailmerge's: 7bit, quoted-printable or base64)."""
    part.set_content(text, subtype=subtype, charset="utf-8", cte=like["Content-Transfer-Encoding"])
    # set_content writes the charset unquoted; mailmerge quotes it (as the email package's make_alternative does)
    part.replace_header("Content-Type", f'text/{subtype}; charset="utf-8"')


def reference(draft: Draft, fast: OutgoingMessage) -> bytes:
    """``draft`` as a message built with the public API: ``msg[name] = value``,
    ``set_content``, ``add_alternative``, ``add_related``, ``add_attachment``,
    with the fast message's boundaries (else drawn at random) and transfer
    encodings (mailmerge's own choice)."""
    utf8 = fast.smtputf8
    # MIMEPart: its parts say MIME-Version only where it is set (EmailMessage's
    # set_content adds one to every part). Text is encoded with LF line ends,
    # as mailmerge encodes it, then written out with CRLF.
    build_policy = policy.default.clone(utf8=utf8, max_line_length=76)
    message = MIMEPart(policy=build_policy)
    message["From"] = _boxes(draft.sender, utf8)
    for name, boxes in (("To", draft.to), ("Cc", draft.cc), ("Reply-To", draft.reply_to)):
        if boxes:
            message[name] = _boxes(boxes, utf8)
    message["Subject"] = draft.subject
    for name, value in draft.other_headers:
        message[name] = value
    message["Date"] = DATE
    message["Message-ID"] = MESSAGE_ID
    message["MIME-Version"] = "1.0"
    parts = list(fast.message.walk())
    texts = [part for part in parts if part.get_content_maintype() == "text"]
    _text(message, draft.body, "plain", texts[0])
    if draft.html is not None:
        markup = texts[1].get_content()  # its <img src> made cid: references, as the fast path does
        message.add_alternative(markup, subtype="html", charset="utf-8", cte=texts[1]["Content-Transfer-Encoding"])
        html = message.get_payload()[1]
        html.replace_header("Content-Type", 'text/html; charset="utf-8"')
        cids = [part["Content-ID"] for part in parts if part["Content-ID"]]
        for cid, path in zip(cids, draft.images.values(), strict=True):
            maintype, subtype = mimetypes.guess_type(path.name)[0].split("/")
            html.add_related(path.read_bytes(), maintype, subtype, cid=cid, filename=path.name, disposition="inline")
    for path in [p for p in draft.attachments if p not in draft.images.values()]:
        maintype, subtype = (mimetypes.guess_type(path.name)[0] or "application/octet-stream").split("/")
        message.add_attachment(path.read_bytes(), maintype, subtype, filename=path.name)
    boundaries = [part.get_boundary() for part in parts if part.is_multipart()]
    for part, boundary in zip([p for p in message.walk() if p.is_multipart()], boundaries, strict=True):
        part.set_boundary(boundary)
    return message.as_bytes(policy=policy.SMTPUTF8 if utf8 else policy.SMTP)




def headers_and_body(raw: bytes) -> tuple[list[tuple[str, bytes]], bytes]:
    """The top-level headers (name, raw lines) in order, and the rest."""
    head, body = raw.split(b"\r\n\r\n", 1)
    headers = [(line.split(b":", 1)[0].decode(), line) for line in re.split(rb"\r\n(?![ \t])", head)]
    return headers, body


def decoded(name: str, lines: bytes) -> str:
    """A header's value as a person reads it (encoded-words decoded, unfolded)."""
    value = lines.split(b":", 1)[1].decode("utf-8").replace("\r\n", "").strip()
    return str(policy.default.header_factory(name, value))


def assert_same(fast: bytes, public: bytes, decoded_only: frozenset[str] = frozenset()) -> None:
    """``fast`` is ``public`` byte for byte, but for the headers in
    ``decoded_only``: those say the same decoded, and fit in 78 characters a
    line (998 for a list header, which mailmerge never splits inside a URI)."""
    if not decoded_only:
        assert fast == public
        return
    (fast_headers, fast_body), (public_headers, public_body) = headers_and_body(fast), headers_and_body(public)
    assert fast_body == public_body
    assert [name for name, _ in fast_headers] == [name for name, _ in public_headers]
    for (name, mine), (_, theirs) in zip(fast_headers, public_headers, strict=True):
        if name not in decoded_only:
            assert mine == theirs, name
        else:
            assert mine != theirs, f"{name} is the same: no need to compare it decoded"
            assert decoded(name, mine) == decoded(name, theirs)
            width = 998 if name.startswith("List-") else 78
            assert all(len(line) <= width for line in mine.split(b"\r\n")), mine


# --- the drafts ----------------------------------------------------------------------------

SENDER = [Mailbox("Book Club", "club@example.com")]
MINJUN = [Mailbox("김민준", "minjun@example.org")]
ANN = [Mailbox("Ann Lee", "ann@example.org")]
SIG = "9f2c" * 16  # a 64-character signature, as a one-click link carries
ONE_CLICK = f"https://club.example.com/unsubscribe/one-click?list=news&email=minjun%40example.org&sig={SIG}"


def html_with_files(folder: Path) -> Draft:
    (folder / "그림.png").write_bytes(PNG)
    (folder / "청구서 3월.pdf").write_bytes(b"%PDF-1.4\n" + bytes(range(256)) * 8)
    return Draft(row=2, subject="3월 청구서", sender=SENDER, to=MINJUN, body=KOREAN,
                 html="<p>안녕하세요 <b>민준</b>님 <img src=\"그림.png\" alt=\"\"></p>\n",
                 images={"그림.png": folder / "그림.png"}, attachments=[folder / "청구서 3월.pdf"])


# name: (the draft, given a folder for its files; the headers compared decoded)
DRAFTS: dict[str, tuple[Callable[[Path], Draft], frozenset[str]]] = {
    "plain ASCII": (lambda folder: Draft(row=2, subject="March meeting", sender=SENDER, to=ANN,
                                         body="Hello Ann,\nSee you on Friday.\n"), frozenset()),
    "Korean subject and body": (lambda folder: Draft(row=2, subject="3월 독서 모임 안내 📚", sender=SENDER,
                                                     to=MINJUN, body=KOREAN), frozenset()),
    "Korean and English subject, long": (lambda folder: Draft(
        row=2, subject="3월 독서 모임 안내 📚 and a rather long subject that needs folding over the line limit",
        sender=SENDER, to=MINJUN, body="Hi\n"), frozenset({"Subject"})),
    "long lines": (lambda folder: Draft(row=2, subject="Invoice", sender=SENDER, to=ANN,
                                        body="x" * 200 + "\nshort\n" + "ab " * 60 + "\n"), frozenset()),
    "a .-leading line": (lambda folder: Draft(row=2, subject="Dots", sender=SENDER, to=ANN,
                                              body=".hidden\n..two\nend\n.\n"), frozenset()),
    "many addresses, Cc, Reply-To": (lambda folder: Draft(
        row=2, subject="Hi", sender=SENDER, to=[Mailbox(f"Person {i}", f"p{i}@example.org") for i in range(8)],
        cc=[Mailbox("박서연", "seo@example.org")], reply_to=[Mailbox("Desk", "desk@example.com")], body="Hi\n"),
        frozenset()),
    "HTML, inline image, attachment with a Korean name": (html_with_files, frozenset()),
    "list headers with long URLs": (lambda folder: Draft(
        row=2, subject="News", sender=SENDER, to=MINJUN, body="Hi\n", other_headers=[
            ("List-Unsubscribe", f"<{ONE_CLICK}>, <mailto:leave@club.example.com?subject=unsubscribe>"),
            ("List-Unsubscribe-Post", "List-Unsubscribe=One-Click"),
            ("List-Id", "독서 모임 소식 <news.club.example.com>")]), frozenset({"List-Unsubscribe"})),
    "SMTPUTF8 addresses": (lambda folder: Draft(row=2, subject="3월 안내", sender=SENDER,
                                                to=[Mailbox("José", "josé@example.org")], body=KOREAN), frozenset()),
}


@pytest.mark.parametrize("case", DRAFTS)
def test_message_bytes_are_what_the_public_api_makes(case: str, tmp_path: Path) -> None:
    make, decoded_only = DRAFTS[case]
    draft = make(tmp_path)
    fast = build(draft)
    assert_same(fast.as_bytes(), reference(draft, fast), decoded_only)


def test_seven_bit_bytes_are_the_same_too(tmp_path: Path) -> None:
    """Without 8BITMIME the message is written with a 7-bit policy: the same bytes."""
    draft = html_with_files(tmp_path)
    fast = build(draft)
    assert fast.as_bytes(eightbit=False) == reference(draft, fast)


# --- the bytes that arrive, through smtplib's internals ----------------------------------


@pytest.mark.parametrize("security", ["none", "starttls", "ssl"])
def test_session_delivers_the_public_api_bytes(security: str, tmp_path: Path) -> None:
    """Connected through smtplib_internals (the TLS name checked against the
    certificate comes from there), the server gets the reference bytes, the
    .-leading lines unstuffed again, and the log shows the greeting."""
    make, _ = DRAFTS["a .-leading line"]
    draft = make(tmp_path)
    fast = build(draft)
    log: list[str] = []
    with SmtpTestServer(tls=security == "starttls", implicit_tls=security == "ssl") as server:
        config = SmtpConfig(host=server.host, port=server.port, security=security, ca_file=server.ca_file, timeout=10)
        with SmtpSession(config, log=log.append) as session:
            [outcome] = session.send(fast)
    assert outcome.status is Status.SENT
    [received] = server.messages
    assert received.data == reference(draft, fast)
    assert log[0].startswith("S: 220 ")  # the greeting, read by connect()
    assert "C: ." in log


def test_session_refuses_a_certificate_for_another_name(tmp_path: Path) -> None:
    """The server name TLS checks is the configured host (smtplib's _host)."""
    make, _ = DRAFTS["plain ASCII"]
    with SmtpTestServer(tls=True, cert_names=["mail.example.net"]) as server:
        config = SmtpConfig(host=server.host, port=server.port, security="starttls", ca_file=server.ca_file, timeout=10)
        with pytest.raises(Exception, match="certificate"):
            SmtpSession(config).open()
    assert server.messages == []


# --- Jinja: the fast render is Template.render --------------------------------------------


def environment(autoescape: bool = False) -> jinja2.Environment:
    """An environment like mailmerge's: the sandbox, strict undefined, its filters."""
    env = SandboxedEnvironment(undefined=jinja2.StrictUndefined, keep_trailing_newline=True, autoescape=autoescape)
    env.filters.update(FILTERS)
    return env


VALUES = {"name": "김민준", "amount": "12,000", "items": "a,b,c", "late": "", "html": "<b>&</b>"}
TEMPLATES = [
    "Hello {{ name }}",
    "Dear {{ name }},\nyou owe {{ amount }}.\n",
    "{% if late %}Late{% else %}On time{% endif %}: {{ name | upper }}",
    "{% for item in items.split(',') %}{{ loop.index }}={{ item }} {% endfor %}",
    "{% set total = 3 * 4 %}{{ total }} {{ range(3) | list }} {{ dict(a=1) }}",
    "{% macro greet(who) %}Hi {{ who }}{% endmacro %}{{ greet(name) }}",
    "{{ html }} {{ html | e }}",
    "no placeholders at all\n",
]
FAILING = [
    "line 1\nline 2 {{ missing }}\n",  # UndefinedError
    "a\nb\n{{ 1 / (late | length) }}",  # ZeroDivisionError
    "{{ name.__class__ }}\n{{ name.__class__.__mro__ }}",  # SecurityError (sandbox)
    "x\n{{ amount + 1 }}",  # TypeError
]


@pytest.mark.parametrize("autoescape", [False, True])
@pytest.mark.parametrize("source", TEMPLATES)
def test_fast_render_is_template_render(source: str, autoescape: bool) -> None:
    compiled = environment(autoescape).from_string(source)
    assert render(compiled, VALUES) == compiled.render(VALUES)
    assert render(compiled, {**VALUES, "late": "yes"}) == compiled.render({**VALUES, "late": "yes"})


def failure(call: Callable[[], Any]) -> tuple[type[BaseException], str, int | None]:
    """The exception ``call`` raises: its type, its message, and the template line."""
    try:
        call()
    except Exception as error:  # noqa: BLE001 (any: compared with what render raises)
        lines = [frame.lineno for frame in traceback.extract_tb(error.__traceback__) if frame.filename == "<template>"]
        return type(error), str(error), lines[-1] if lines else None
    raise AssertionError("no error")


@pytest.mark.parametrize("source", FAILING)
def test_fast_render_fails_as_template_render(source: str) -> None:
    compiled = environment().from_string(source)
    expected = failure(lambda: compiled.render(VALUES))
    assert expected[2] is not None  # the line is there to compare
    assert failure(lambda: render(compiled, VALUES)) == expected


def test_row_values_go_over_the_globals_for_one_call_only() -> None:
    """A row may name a column like a global (``range``): it wins for that row
    only, as with render(), and the next row gets the global back."""
    compiled = environment().from_string("{{ range }}")
    assert render(compiled, {"range": "column"}) == compiled.render({"range": "column"}) == "column"
    assert render(compiled, {}) == compiled.render({})
