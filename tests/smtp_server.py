"""A real SMTP server (aiosmtpd) on 127.0.0.1 for tests and benchmarks.

Usage::

    with SmtpTestServer(tls=True, auth={"user": "pw"}, refuse=["bad@x.org"]) as srv:
        ...  # point the code under test at srv.host / srv.port, trust srv.ca_file
    assert srv.recipients() == ["good@x.org"]
    print(srv.messages[0].message["Subject"])

Modes: plain SMTP (default), STARTTLS (``tls=True``, required before MAIL) or
SMTPS (``implicit_tls=True``, TLS from the first byte, like port 465).  Certificates
come from a throw-away ``trustme`` CA whose PEM is written to ``ca_file``; the
server's certificate names 127.0.0.1 and localhost unless ``cert_names`` says
otherwise.  ``auth_mechanisms=["LOGIN"]`` offers only AUTH LOGIN.
No pytest import here: ``bench/`` scripts import this module too.
"""
from __future__ import annotations

import asyncio
import email
import json
from base64 import b64decode
import email.policy
import shutil
import socket
import ssl
import tempfile
import threading
import time
import warnings
from dataclasses import dataclass, field
from email.message import EmailMessage
from email.parser import BytesParser
from pathlib import Path
from types import TracebackType
from typing import Any, Iterable, Sequence, cast

import trustme
from aiosmtpd.controller import Controller
from aiosmtpd.smtp import SMTP, AuthResult, Envelope, LoginPassword, Session

HOST = "127.0.0.1"


@dataclass
class ReceivedMessage:
    """One message accepted by the server (envelope + raw bytes)."""

    mail_from: str
    rcpt_tos: list[str]
    mail_options: list[str]  # e.g. ["SMTPUTF8", "BODY=8BITMIME"]
    data: bytes = field(repr=False)  # raw message bytes as received (CRLF line ends)
    received_at: float = field(default_factory=time.monotonic)  # when its DATA ended

    @property
    def message(self) -> EmailMessage:
        """The message parsed with ``email.policy.default``, line ends made
        local (LF) as a mail program stores it after delivery."""
        data = self.data.replace(b"\r\n", b"\n")
        if "SMTPUTF8" in self.mail_options:
            # UTF-8 headers: the bytes parser would leave surrogates in addresses.
            return cast(EmailMessage, email.message_from_string(
                data.decode("utf-8"), policy=email.policy.default))
        parser = BytesParser(policy=email.policy.default)
        return cast(EmailMessage, parser.parsebytes(data))


def free_port() -> int:
    """Return a currently free TCP port on 127.0.0.1 (bind to port 0, then close)."""
    with socket.socket(socket.AF_INET, socket.SOCK_STREAM) as sock:
        sock.bind((HOST, 0))
        return int(sock.getsockname()[1])


@dataclass
class Faults:
    """What the server does wrong on purpose, the way real servers do."""

    refuse: set[str] = field(default_factory=set)  # 550 to RCPT of these addresses
    defer: set[str] = field(default_factory=set)  # 451 to RCPT of these, every time
    defer_once: set[str] = field(default_factory=set)  # 451 to their first RCPT, 250 later
    refuse_senders: set[str] = field(default_factory=set)  # 553 to MAIL FROM these
    reject_data_with: bytes | None = None  # 554 to the end of DATA when the content holds this
    session_limit: int | None = None  # 421 to MAIL once a session carried this many messages
    drop_after: int | None = None  # close the connection at MAIL once a session carried this many
    drop_at_data: set[int] = field(default_factory=set)  # close instead of answering these DATAs (1-based)
    reply_delay: float = 0.0  # seconds before answering the end of DATA
    # Postfix's smtpd_hard_error_limit: once a session got this many error
    # replies, its next MAIL, RCPT, DATA or RSET gets 421 and the connection closes.
    error_limit: int | None = None
    # Postfix's smtpd_client_message_rate_limit: (messages, seconds): a MAIL FROM
    # beyond that many in a window (counted over every session, refused ones too)
    # gets 450 4.7.1; the window starts at the first MAIL after the last one ended.
    message_rate: tuple[int, float] | None = None

    def __post_init__(self) -> None:
        for name in ("refuse", "defer", "defer_once", "refuse_senders"):
            setattr(self, name, {address.lower() for address in getattr(self, name)})


class _Handler:
    """aiosmtpd handler: applies the faults, stores messages, counts STARTTLS."""

    def __init__(self, owner: SmtpTestServer) -> None:
        self.owner = owner
        self.faults = owner.faults
        self.data_count = 0  # ends of DATA received, over all sessions
        self.rate_window_end = 0.0  # (message_rate) when the current window ends
        self.rate_count = 0  # MAIL FROMs in the current window

    async def handle_EHLO(self, server: SMTP, session: Session, envelope: Envelope,
                          hostname: str, responses: list[str]) -> list[str]:
        session.host_name = hostname
        if self.owner.pipelining:  # aiosmtpd handles pipelined commands, but does not say so
            responses.insert(-1, "250-PIPELINING")
        return responses

    async def handle_RCPT(self, server: SMTP, session: Session, envelope: Envelope,
                          address: str, rcpt_options: list[str]) -> str:
        key = address.lower()
        if key in self.faults.refuse:
            return f"550 5.1.1 <{address}>: Recipient address rejected: User unknown"
        if key in self.faults.defer:
            return f"451 4.7.1 <{address}>: Greylisted, try again later"
        if key in self.faults.defer_once:
            self.faults.defer_once.discard(key)
            return f"451 4.7.1 <{address}>: Greylisted, try again later"
        envelope.rcpt_tos.append(address)
        envelope.rcpt_options.extend(rcpt_options)
        return "250 OK"

    async def handle_MAIL(self, server: SMTP, session: Session, envelope: Envelope,
                          address: str, mail_options: list[str]) -> str:
        carried = getattr(session, "carried", 0)
        if self.faults.message_rate is not None:
            limit, window = self.faults.message_rate
            now = time.monotonic()
            if now >= self.rate_window_end:
                self.rate_window_end, self.rate_count = now + window, 0
            self.rate_count += 1
            if self.rate_count > limit:
                return f"450 4.7.1 Error: too much mail from {HOST}"
        if self.faults.session_limit is not None and carried >= self.faults.session_limit:
            return "421 4.7.0 Too many messages in this session, try again later"
        if self.faults.drop_after is not None and carried >= self.faults.drop_after:
            assert server.transport is not None
            server.transport.close()  # as if the network went away
            return "451 never seen by the client"
        if address.lower() in self.faults.refuse_senders:
            return f"553 5.7.1 <{address}>: Sender address rejected: not owned by user"
        envelope.mail_from = address
        envelope.mail_options.extend(mail_options)
        return "250 OK"

    async def handle_DATA(self, server: SMTP, session: Session, envelope: Envelope) -> str:
        self.data_count += 1
        marker = self.faults.reject_data_with
        if marker is not None and marker in (envelope.original_content or b""):
            return "554 5.7.1 Message rejected as spam"
        session.carried = getattr(session, "carried", 0) + 1  # type: ignore[attr-defined]
        self.owner.messages.append(ReceivedMessage(  # decode_data is off: bytes
            mail_from=envelope.mail_from or "", rcpt_tos=list(envelope.rcpt_tos),
            mail_options=list(envelope.mail_options),
            data=bytes(envelope.original_content or b"")))
        if self.data_count in self.faults.drop_at_data:
            assert server.transport is not None
            server.transport.close()  # the message was taken; its 250 never leaves
            return "250 never seen by the client"
        if self.faults.reply_delay:
            await asyncio.sleep(self.faults.reply_delay)
        return "250 OK"

    async def auth_XOAUTH2(self, server: SMTP, args: list[str]) -> AuthResult:
        """SASL XOAUTH2 as Gmail and Microsoft 365 do it: a bad token gets a 334
        challenge holding a JSON error; the client's empty answer gets 535."""
        raw: Any = b64decode(args[1]) if len(args) == 2 else await server.challenge_auth("")
        fields = dict(item.split("=", 1) for item in bytes(raw).decode().split("\x01") if "=" in item)
        self.owner.auth_attempts += 1
        token = fields.get("auth", "").removeprefix("Bearer ")
        if token and self.owner.oauth2_tokens.get(fields.get("user", "")) == token:
            self.owner.auth_successes += 1
            return AuthResult(success=True)
        await server.challenge_auth(json.dumps({"status": "401", "schemes": "bearer"}))
        return AuthResult(success=False, handled=False)

    def handle_STARTTLS(self, server: SMTP, session: Session, envelope: Envelope) -> bool:
        # Called (synchronously) once the STARTTLS handshake has succeeded.
        self.owner.starttls_count += 1
        return True


class _CountingSMTP(SMTP):
    """aiosmtpd ``SMTP`` protocol that counts accepted TCP connections."""

    def __init__(self, handler: _Handler, **kwargs: Any) -> None:
        self._owner = handler.owner
        with warnings.catch_warnings():  # "AUTH without TLS" warning: intended here
            warnings.simplefilter("ignore")
            super().__init__(handler, **kwargs)

    def connection_made(self, transport: Any) -> None:
        if self._original_transport is None:  # not the re-entry after STARTTLS
            self._owner.connections += 1
            self._errors, self._command = 0, ""
        super().connection_made(transport)

    async def push(self, status: Any) -> None:
        text = status.decode("utf-8", "replace") if isinstance(status, bytes) else status
        if text[:1] in ("4", "5"):
            self._owner.error_replies.append(f"{self._command} {text}".strip())
            self._errors += 1
        await super().push(status)

    async def _guarded(self, command: str, method: Any, arg: Any) -> None:
        """Run an SMTP command, or answer 421 and close (``Faults.error_limit``)."""
        self._command = command
        limit = self._owner.faults.error_limit
        if limit is not None and self._errors >= limit:
            await self.push("421 4.7.0 Error: too many errors")
            assert self.transport is not None
            self.transport.close()
            return
        await method(arg)

    async def smtp_MAIL(self, arg: Any) -> None:
        await self._guarded("MAIL", super().smtp_MAIL, arg)

    async def smtp_RCPT(self, arg: Any) -> None:
        await self._guarded("RCPT", super().smtp_RCPT, arg)

    async def smtp_DATA(self, arg: Any) -> None:
        await self._guarded("DATA", super().smtp_DATA, arg)

    async def smtp_RSET(self, arg: Any) -> None:
        await self._guarded("RSET", super().smtp_RSET, arg)


class _Controller(Controller):
    """Controller whose factory builds a :class:`_CountingSMTP` (aiosmtpd 1.4.6 API)."""

    def factory(self) -> SMTP:
        return _CountingSMTP(self.handler, **self.SMTP_kwargs)


class SmtpTestServer:
    """A real SMTP server in a background thread; see the module docstring.

    Counters (``connections``, ``auth_attempts``, ``auth_successes``,
    ``starttls_count``), ``error_replies`` and ``messages`` are reset by :meth:`start`.
    ``port`` and ``ca_file`` are set by :meth:`start`.
    """

    host: str = HOST
    pipelining_default = False  # offer PIPELINING (RFC 2920) when not told

    def __init__(self, *, tls: bool = False, auth: dict[str, str] | None = None,
                 refuse: Iterable[str] = (), smtputf8: bool = True,
                 cert_dir: Path | None = None, implicit_tls: bool = False,
                 faults: Faults | None = None, oauth2_tokens: dict[str, str] | None = None,
                 pipelining: bool | None = None, auth_mechanisms: Iterable[str] = ("PLAIN", "LOGIN"),
                 cert_names: Sequence[str] = (HOST, "localhost")) -> None:
        if tls and implicit_tls:
            raise ValueError("choose STARTTLS (tls) or SMTPS (implicit_tls), not both")
        self.tls, self.implicit_tls, self.smtputf8 = tls, implicit_tls, smtputf8
        self.auth = dict(auth) if auth is not None else None
        self.auth_mechanisms = {m.upper() for m in auth_mechanisms}  # offered with ``auth``
        self.cert_names = tuple(cert_names)  # the names on the server's certificate
        self.faults = faults or Faults()
        self.pipelining = self.pipelining_default if pipelining is None else pipelining
        self.oauth2_tokens = dict(oauth2_tokens or {})  # user -> the one valid access token
        self.faults.refuse |= {address.lower() for address in refuse}
        self.cert_dir = cert_dir
        self.port = 0
        self.ca_file: Path | None = None
        self._tmp_dir: Path | None = None
        self._controller: _Controller | None = None
        self._reset()

    def _reset(self) -> None:
        self.messages: list[ReceivedMessage] = []
        self.connections = self.auth_attempts = self.auth_successes = 0
        self.starttls_count = 0
        self.error_replies: list[str] = []  # every 4xx and 5xx reply, after its command: "RCPT 503 ..."
        self.auth_mechanisms_used: list[str] = []  # by each AUTH PLAIN/LOGIN, in order

    def _authenticate(self, server: SMTP, session: Session, envelope: Envelope,
                      mechanism: str, auth_data: Any) -> AuthResult:
        """Check PLAIN/LOGIN credentials against ``self.auth``."""
        self.auth_attempts += 1
        self.auth_mechanisms_used.append(mechanism)
        if isinstance(auth_data, LoginPassword) and self.auth is not None:
            user = auth_data.login.decode("utf-8", "replace")
            if self.auth.get(user) == auth_data.password.decode("utf-8", "replace"):
                self.auth_successes += 1
                return AuthResult(success=True, auth_data=auth_data)
        return AuthResult(success=False, handled=False)  # handled=True would hang

    def _server_ssl_context(self) -> ssl.SSLContext:
        """Make a trustme CA + cert for ``cert_names``; write ca.pem, server.pem."""
        if self.cert_dir is None:
            self._tmp_dir = Path(tempfile.mkdtemp(prefix="smtp-test-certs-"))
        cert_dir = self.cert_dir or self._tmp_dir
        assert cert_dir is not None
        cert_dir.mkdir(parents=True, exist_ok=True)
        ca = trustme.CA()
        self.ca_file = cert_dir / "ca.pem"
        ca.cert_pem.write_to_path(str(self.ca_file))
        server_pem = cert_dir / "server.pem"
        ca.issue_cert(*self.cert_names).private_key_and_cert_chain_pem.write_to_path(
            str(server_pem))
        ctx = ssl.create_default_context(ssl.Purpose.CLIENT_AUTH)
        ctx.load_cert_chain(str(server_pem))
        return ctx

    def start(self) -> SmtpTestServer:
        """Start listening; returns ``self``."""
        if self._controller is not None:
            raise RuntimeError("server already started")
        ctx = self._server_ssl_context() if (self.tls or self.implicit_tls) else None
        kwargs: dict[str, Any] = {"enable_SMTPUTF8": self.smtputf8}
        if self.tls:
            kwargs.update(tls_context=ctx, require_starttls=True)
        if self.auth is not None or self.oauth2_tokens:  # AUTH on plain/SMTPS needs
            # auth_require_tls off: aiosmtpd only counts STARTTLS as "TLS".
            kwargs.update(authenticator=self._authenticate, auth_required=True,
                          auth_require_tls=self.tls)
        offered = self.auth_mechanisms if self.auth is not None else set()
        excluded = [m for m in ("PLAIN", "LOGIN") if m not in offered]
        excluded += [] if self.oauth2_tokens else ["XOAUTH2"]
        kwargs.update(auth_exclude_mechanism=excluded)
        self.port = free_port()
        self._controller = _Controller(
            _Handler(self), hostname=HOST, port=self.port, server_hostname="localhost",
            ssl_context=ctx if self.implicit_tls else None, **kwargs)
        self._controller.start()  # opens one probe connection itself...
        self._reset()  # ...which must not show up in the counters
        return self

    def stop(self) -> None:
        """Stop the server (at most ~10 s, never hangs) and delete temp certs."""
        controller, self._controller = self._controller, None
        if controller is not None:
            stopper = threading.Thread(target=controller.stop, daemon=True)
            stopper.start()
            stopper.join(timeout=10)
        if self._tmp_dir is not None:
            shutil.rmtree(self._tmp_dir, ignore_errors=True)
            self._tmp_dir = None

    def __enter__(self) -> SmtpTestServer:
        """Start the server (see :meth:`start`)."""
        return self.start()

    def __exit__(self, exc_type: type[BaseException] | None,
                 exc: BaseException | None, tb: TracebackType | None) -> None:
        self.stop()

    def recipients(self) -> list[str]:
        """Every accepted recipient of every message, in arrival order."""
        return [rcpt for msg in self.messages for rcpt in msg.rcpt_tos]
