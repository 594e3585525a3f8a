"""Tests for mailmerge/mime/message.py: a Draft becomes the bytes on the wire and an envelope."""

from __future__ import annotations

import email.policy
from email.message import EmailMessage
from email.parser import BytesParser, Parser

import pytest
from email_validator import EmailNotValidError, validate_email

from mailmerge.errors import InvalidRow
from mailmerge.mime.message import (
    EnvelopeRecipient,
    OutgoingMessage,
    build_message,
    check_address,
    preview_text,
)
from mailmerge.render.template import Draft, Mailbox

SUBJECT = "3월 독서 모임 안내 📚"
BODY = "안녕하세요 민준님,\n이번 달 책은 📚 '채식주의자'입니다.\n"


def draft(
    *,
    to: list[Mailbox] | None = None,
    sender: list[Mailbox] | None = None,
    **fields: object,
) -> Draft:
    """A ready-to-build draft; keyword arguments override its fields."""
    values: dict[str, object] = {"subject": SUBJECT, "body": BODY, **fields}
    return Draft(
        row=2,
        sender=sender if sender is not None else [Mailbox("Book Club", "club@example.com")],
        to=to if to is not None else [Mailbox("김민준", "minjun@example.org")],
        **values,  # type: ignore[arg-type]
    )


def wire(outgoing: OutgoingMessage, *, eightbit: bool = True) -> tuple[bytes, EmailMessage]:
    """The bytes sent, and the message a mail client parses from them."""
    raw = outgoing.as_bytes(eightbit=eightbit)
    parsed = BytesParser(policy=email.policy.default).parsebytes(raw)
    assert isinstance(parsed, EmailMessage)
    return raw, parsed


def header_block(raw: bytes) -> bytes:
    return raw.split(b"\r\n\r\n", 1)[0]


def body(message: EmailMessage) -> str:
    """The body text as a mail client shows it (CRLF of the wire read as newlines)."""
    return message.get_content().replace("\r\n", "\n")


def addresses(message: EmailMessage, name: str) -> list[tuple[str, str]]:
    return [(a.display_name, a.addr_spec) for a in message[name].addresses]


# --- headers on the wire ------------------------------------------------------


def test_korean_and_emoji_subject_is_encoded_and_decodes_back() -> None:
    raw, parsed = wire(build_message(draft()))
    assert b"=?utf-8?" in header_block(raw)
    assert header_block(raw).isascii()
    assert parsed["Subject"] == SUBJECT


def test_korean_display_name_is_encoded_and_decodes_back() -> None:
    raw, parsed = wire(build_message(draft()))
    assert "김민준".encode() not in raw
    assert addresses(parsed, "To") == [("김민준", "minjun@example.org")]


@pytest.mark.parametrize("name", ["O'Brien, Jung", 'Kim "KJ" Lee'])
def test_display_name_with_specials_stays_one_address(name: str) -> None:
    _, parsed = wire(build_message(draft(to=[Mailbox(name, "jung@example.org")])))
    assert addresses(parsed, "To") == [(name, "jung@example.org")]


def test_date_mime_version_and_message_id_with_sender_domain() -> None:
    outgoing = build_message(draft())
    _, parsed = wire(outgoing)
    assert parsed["Date"].datetime is not None
    assert parsed["MIME-Version"] == "1.0"
    assert parsed["Message-ID"].startswith("<")
    assert parsed["Message-ID"].endswith("@example.com>")
    assert outgoing.message_id == parsed["Message-ID"]


def test_each_message_gets_its_own_message_id() -> None:
    first, second = build_message(draft()), build_message(draft())
    assert first.message_id != second.message_id


def test_body_is_utf8_and_decodes_exactly() -> None:
    _, parsed = wire(build_message(draft()))
    assert parsed.get_content_type() == "text/plain"
    assert parsed.get_content_charset() == "utf-8"
    assert body(parsed) == BODY


def test_other_headers_are_written() -> None:
    _, parsed = wire(build_message(draft(other_headers=[("X-Campaign", "spring-42")])))
    assert parsed["X-Campaign"] == "spring-42"


# --- envelope -----------------------------------------------------------------


def test_bcc_is_in_the_envelope_but_not_in_the_headers() -> None:
    outgoing = build_message(draft(bcc=[Mailbox("Secretary", "secret@example.net")]))
    raw, parsed = wire(outgoing)
    assert EnvelopeRecipient("Bcc", "secret@example.net") in outgoing.recipients
    assert parsed["Bcc"] is None
    assert b"secret@example.net" not in raw


def test_cc_is_in_the_header_and_the_envelope() -> None:
    outgoing = build_message(draft(cc=[Mailbox("", "board@example.org")]))
    _, parsed = wire(outgoing)
    assert addresses(parsed, "Cc") == [("", "board@example.org")]
    assert outgoing.recipients == [
        EnvelopeRecipient("To", "minjun@example.org"),
        EnvelopeRecipient("Cc", "board@example.org"),
    ]
    assert outgoing.sender == "club@example.com"


# --- invalid data -------------------------------------------------------------


@pytest.mark.parametrize("address", ["not-an-address", "a@b"])
def test_invalid_address_is_an_invalid_row_naming_it(address: str) -> None:
    with pytest.raises(InvalidRow) as caught:
        build_message(draft(to=[Mailbox("Kim", address)]))
    assert f"'{address}'" in caught.value.reason
    assert caught.value.address == address


def test_empty_address_is_an_invalid_row() -> None:
    with pytest.raises(InvalidRow, match="empty"):
        build_message(draft(to=[Mailbox("Kim", "")]))


@pytest.mark.parametrize("count", [0, 2])
def test_from_must_hold_exactly_one_address(count: int) -> None:
    senders = [Mailbox("", f"s{i}@example.com") for i in range(count)]
    with pytest.raises(InvalidRow, match=f"exactly one address, not {count}"):
        build_message(draft(sender=senders))


@pytest.mark.parametrize(
    "fields",
    [
        {"subject": "Hi\r\nBcc: everyone@example.com"},
        {"subject": "Hi\u2028there"},
        {"other_headers": [("X-Note", "a\nBcc: everyone@example.com")]},
        {"to": [Mailbox("Kim\r\nBcc: everyone@example.com", "kim@example.org")]},
    ],
)
def test_header_value_the_email_package_refuses_is_an_invalid_row(fields: dict) -> None:
    with pytest.raises(InvalidRow, match="cannot build the message"):
        build_message(draft(**fields))


# --- internationalised addresses ----------------------------------------------


def test_non_ascii_local_part_needs_smtputf8() -> None:
    outgoing = build_message(draft(to=[Mailbox("José", "josé@example.com")]))
    raw = outgoing.as_bytes()
    assert outgoing.smtputf8 is True
    assert outgoing.recipients == [EnvelopeRecipient("To", "josé@example.com")]
    assert "josé@example.com".encode() in header_block(raw)
    # An RFC 6532 client reads the headers as UTF-8 (BytesParser reads them as ASCII).
    headers = Parser(policy=email.policy.default).parsestr(raw.decode("utf-8"))
    assert addresses(headers, "To") == [("José", "josé@example.com")]  # type: ignore[arg-type]
    assert headers["Subject"] == SUBJECT
    assert body(wire(outgoing)[1]) == BODY


def test_idn_domain_only_uses_punycode_without_smtputf8() -> None:
    outgoing = build_message(draft(to=[Mailbox("", "user@bücher.de")]))
    raw, parsed = wire(outgoing)
    assert outgoing.smtputf8 is False
    assert outgoing.recipients == [EnvelopeRecipient("To", "user@xn--bcher-kva.de")]
    assert header_block(raw).isascii()
    assert addresses(parsed, "To") == [("", "user@xn--bcher-kva.de")]


def test_seven_bit_bytes_have_no_8bit_and_decode_the_same() -> None:
    raw, parsed = wire(build_message(draft()), eightbit=False)
    assert raw.isascii()
    assert parsed["Content-Transfer-Encoding"] in ("base64", "quoted-printable")
    assert parsed["Subject"] == SUBJECT
    assert body(parsed) == BODY


LONG_LINE = "Payment can be made by bank transfer = or by card; " * 12  # 612 characters, an "="


@pytest.mark.parametrize(
    ("text", "encoding"),
    [
        ("Dear Ann,\nyour invoice is due.\n", "7bit"),  # short ASCII lines: as they are
        (BODY, "base64"),  # short lines in Hangul and an emoji: never 8bit (the same bytes for every server)
        ("Dear Jürgen, your invoice is attached; see you in Köln next week.\n", "quoted-printable"),  # a few accents
        (f"Dear Ann,\n{LONG_LINE}\n  indented, trailing spaces   \n.leading dot\n", "quoted-printable"),
        (f"민준님,\n{'이번 달 책은 채식주의자입니다. ' * 10}\n", "base64"),  # qp would be 3 times longer
    ],
)
def test_body_encoding_is_chosen_by_its_lines_and_decodes_exactly(text: str, encoding: str) -> None:
    raw, parsed = wire(build_message(draft(body=text)))
    assert parsed["Content-Transfer-Encoding"] == encoding
    assert parsed.get_content_type() == "text/plain" and parsed.get_content_charset() == "utf-8"
    assert body(parsed) == text
    assert max(len(line) for line in raw.split(b"\r\n")) <= 998  # RFC 5322's limit for a line
    seven_bit_raw, seven_bit = wire(build_message(draft(body=text)), eightbit=False)
    assert seven_bit_raw.isascii() and body(seven_bit) == text
    assert raw.isascii()  # a server without 8BITMIME gets the same body


def test_html_part_with_long_lines_decodes_exactly() -> None:
    html = f"<p>{LONG_LINE}</p><p>안녕하세요 📚</p>\n"
    raw, parsed = wire(build_message(draft(body="text\n", html=html)))
    assert parsed.get_content_type() == "multipart/alternative"
    part = parsed.get_body(("html",))
    assert part is not None and body(part) == html
    assert parsed["MIME-Version"] == "1.0" and raw.count(b"MIME-Version") == 1


# --- preview ------------------------------------------------------------------


def test_preview_shows_decoded_headers_bcc_and_body() -> None:
    outgoing = build_message(draft(bcc=[Mailbox("", "secret@example.net")]))
    text = preview_text(outgoing)
    assert f"Subject: {SUBJECT}\n" in text
    assert "To: 김민준 <minjun@example.org>" in text
    bcc_line = next(line for line in text.splitlines() if line.startswith("Bcc:"))
    assert "secret@example.net" in bcc_line and "envelope only" in bcc_line
    assert text.endswith("\n\n" + BODY)
    assert "=?utf-8?" not in text


# check_address() skips email_validator for the part before the @ when it is a
# plain ASCII dot-atom, and checks each domain once: the answers must not change.
TRICKY_ADDRESSES = [
    "Ann.Lee@Example.COM", "a+b@x.co.kr", "o'brien@x.ie", "a@123.com", "a@x.com.", "a@X.COM",
    "a@xn--bcher-kva.de", "user@bücher.de", "a@münchen.DE", "A@ＥＸＡＭＰＬＥ.com", "postmaster@x.com",
    "a@b.test", "a@localhost", "x@example.invalid", "a@b.onion", "a@sub.local", "a@x", "a@x.123", "a@x.c",
    "a..b@x.com", ".a@x.com", "a.@x.com", "a@-x.com", "a@x_y.com", "a@x..com", "a@.x.com", "a@ex ample.com",
    "a@[1.2.3.4]", "a@1.2.3.4", '"a b"@x.com', "josé@x.com", "Ⅻ@x.com", "@x.com", "a@b@c.com", "a b@x.com",
    "a\t@x.com", "a@x.com ", " a@x.com", "a@example.com\n",
    "a" * 64 + "@x.com", "a" * 65 + "@x.com", "a@" + "b" * 63 + ".com", "a@" + "b" * 64 + ".com",
    "a" * 60 + "@" + ("b" * 60 + ".") * 3 + "com", "a" * 64 + "@" + ("b" * 60 + ".") * 3 + "b" * 33 + ".com",
]


@pytest.mark.parametrize("address", TRICKY_ADDRESSES)
def test_check_address_answers_as_email_validator_does(address: str) -> None:
    try:
        result = validate_email(address, check_deliverability=False, allow_smtputf8=True)
        expected: tuple[str, str | None] = (result.normalized, result.ascii_email)
    except EmailNotValidError as error:
        with pytest.raises(InvalidRow) as raised:
            check_address(address)
        assert str(raised.value) == f"'{address}' is not a valid address: {error}"
        return
    assert check_address(address) == expected
