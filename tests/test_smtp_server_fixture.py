"""Self-tests for tests/smtp_server.py, talking to it with plain smtplib."""
from __future__ import annotations

import smtplib
import ssl
import time
from email.message import EmailMessage

import pytest

from smtp_server import SmtpTestServer

TIMEOUT = 10  # seconds; every client call must finish well within this


def _message(subject: str, to: str = "a@example.org") -> EmailMessage:
    msg = EmailMessage()
    msg["From"], msg["To"], msg["Subject"] = "sender@example.org", to, subject
    msg.set_content("Grüße, ünïcödé body\n", cte="8bit")
    return msg


def test_starttls_auth_two_messages_one_login() -> None:
    with SmtpTestServer(tls=True, auth={"user": "secret"}) as srv:
        assert srv.ca_file is not None
        ctx = ssl.create_default_context(cafile=str(srv.ca_file))
        with smtplib.SMTP(srv.host, srv.port, timeout=TIMEOUT) as client:
            client.starttls(context=ctx)
            client.login("user", "secret")
            client.send_message(_message("one"), mail_options=["BODY=8BITMIME"])
            client.send_message(_message("two", to="b@example.org"))
        assert (srv.connections, srv.starttls_count) == (1, 1)
        assert (srv.auth_attempts, srv.auth_successes) == (1, 1)
        assert srv.recipients() == ["a@example.org", "b@example.org"]
        assert [m.message["Subject"] for m in srv.messages] == ["one", "two"]
        assert "Grüße" in srv.messages[0].message.get_content()
        assert "BODY=8BITMIME" in srv.messages[0].mail_options
        assert "Grüße".encode() in srv.messages[0].data  # 8bit body kept raw


def test_refused_recipient_gets_550_and_is_not_delivered() -> None:
    with SmtpTestServer(refuse=["Nobody@Example.org"]) as srv:
        with smtplib.SMTP(srv.host, srv.port, timeout=TIMEOUT) as client:
            refused = client.send_message(
                _message("hi"), to_addrs=["a@example.org", "nobody@example.org"])
        code, reply = refused["nobody@example.org"]
        assert code == 550 and reply.startswith(b"5.1.1 <nobody@example.org>")
        assert srv.recipients() == ["a@example.org"]
        assert srv.connections == 1 and srv.starttls_count == 0


def test_wrong_password_fails_promptly() -> None:
    with SmtpTestServer(tls=True, auth={"user": "secret"}) as srv:
        assert srv.ca_file is not None
        ctx = ssl.create_default_context(cafile=str(srv.ca_file))
        started = time.monotonic()
        with smtplib.SMTP(srv.host, srv.port, timeout=TIMEOUT) as client:
            client.starttls(context=ctx)
            with pytest.raises(smtplib.SMTPAuthenticationError):
                client.login("user", "wrong")
        assert time.monotonic() - started < TIMEOUT / 2
        assert (srv.auth_attempts, srv.auth_successes) == (2, 0)  # smtplib tries PLAIN, then LOGIN
        assert srv.messages == []


def test_implicit_tls_with_auth_and_smtputf8() -> None:
    with SmtpTestServer(implicit_tls=True, auth={"user": "secret"}) as srv:
        assert srv.ca_file is not None
        ctx = ssl.create_default_context(cafile=str(srv.ca_file))
        with smtplib.SMTP_SSL(srv.host, srv.port, timeout=TIMEOUT, context=ctx) as client:
            client.login("user", "secret")
            client.send_message(_message("utf8", to="jürgen@example.org"))
        assert srv.recipients() == ["jürgen@example.org"]
        assert "SMTPUTF8" in srv.messages[0].mail_options
        assert (srv.connections, srv.auth_successes, srv.starttls_count) == (1, 1, 0)
