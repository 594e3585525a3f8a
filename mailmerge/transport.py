"""Send messages through ONE SMTP session: connect, EHLO, STARTTLS (or SSL
from the start), EHLO, AUTH once, every message, QUIT.

Each message goes out as MAIL, one RCPT per address, DATA, so every address
gets its own outcome with the server's code and text. A 5xx is a refusal; a
4xx is a temporary failure; a 421 or a dropped connection ends the session
(:class:`~mailmerge.errors.ConnectionLost`).
"""

from __future__ import annotations

import collections
import re
import smtplib
import socket
import ssl
from collections.abc import Callable
from dataclasses import dataclass, field
from types import TracebackType

from .config import SmtpConfig
from .errors import AuthenticationError, ClientRefused, ConnectError, ConnectionLost, SendError, ServerBusy
from .message import EnvelopeRecipient, OutgoingMessage
from .outcome import Outcome, Status
from .pacing import Backoff, StopSignal
from .providers import login_hint

# Tried in this order; only ONE is attempted (smtplib's login() tries them all,
# which counts double against an account's lockout).
AUTH_MECHANISMS = ("PLAIN", "LOGIN", "CRAM-MD5")


def _text(reply: bytes | str) -> str:
    return reply.decode("utf-8", "replace") if isinstance(reply, bytes) else reply


def _xoauth2(username: str, token: str) -> Callable[[bytes | None], str]:
    """SASL XOAUTH2 for smtplib's auth(): the initial response, then an empty
    answer to the server's error challenge, so a refused token ends in 535."""

    def respond(challenge: bytes | None = None) -> str:
        return f"user={username}\x01auth=Bearer {token}\x01\x01" if challenge is None else ""

    return respond


class _Conversation:
    """Mixin for smtplib's classes: tell ``log`` every command and reply, with
    the secrets of an AUTH exchange masked (smtplib's own debug output shows
    them, base64-encoded) and a message's content summed up in one line."""

    log: Callable[[str], None] | None = None
    _in_auth = False

    def send(self, s: bytes | str) -> None:
        if self.log is not None:
            text = s.decode("utf-8", "replace") if isinstance(s, bytes) else s
            if text.upper().startswith("AUTH "):
                self._in_auth = True
                self.log("C: " + " ".join(text.split()[:2]) + " ********")
            elif self._in_auth:
                self.log("C: ********")
            elif text.count("\n") > 1 or len(text) > 1000:
                self.log(f"C: (the message, {len(s)} bytes)")
            else:
                self.log("C: " + text.rstrip("\r\n"))
        super().send(s)  # type: ignore[misc]

    def send_group(self, payload: bytes, described: list[str]) -> None:
        """Send several commands (and a message) in one write: pipelining."""
        if self.log is not None:
            for line in described:
                self.log("C: " + line)
        log, self.log = self.log, None
        try:
            self.send(payload)
        finally:
            self.log = log

    def getreply(self) -> tuple[int, bytes]:
        code, reply = super().getreply()  # type: ignore[misc]
        if code != 334:
            self._in_auth = False
        if self.log is not None:
            lines = _text(reply).splitlines() or [""]
            for line in lines:
                self.log(f"S: {code} {line if code != 334 else '********'}")
        return code, reply


class _SMTP(_Conversation, smtplib.SMTP):
    pass


class _SMTPSSL(_Conversation, smtplib.SMTP_SSL):
    pass


class SmtpSession:
    """One SMTP session for a whole run. Use as a context manager::

        with SmtpSession(config, secret) as session:
            outcomes = session.send(message)

    ``secret`` is the password, or the OAuth2 access token with
    ``auth = "xoauth2"``. ``log`` receives the conversation (``--verbose``);
    ``step`` receives one line per stage reached (``mailmerge check``).
    """

    def __init__(
        self,
        config: SmtpConfig,
        secret: str | None = None,
        *,
        log: Callable[[str], None] | None = None,
        step: Callable[[str], None] = lambda text: None,
    ) -> None:
        self.config = config
        self._secret = secret
        self._log = log
        self._step = step
        self._smtp: smtplib.SMTP | None = None

    # --- opening and closing ------------------------------------------------

    def open(self) -> None:
        """Connect, secure the connection and log in; raise a SendError subclass."""
        config = self.config
        if config.ca_file is not None and not config.ca_file.is_file():
            raise ConnectError(f"ca_file {config.ca_file} (in [smtp]) does not exist")
        context = ssl.create_default_context(
            cafile=str(config.ca_file) if config.ca_file else None
        )
        where = f"{config.host}:{config.port}"
        try:
            smtp: smtplib.SMTP
            if config.security == "ssl":
                smtp = _SMTPSSL(timeout=config.timeout, context=context)
            else:
                smtp = _SMTP(timeout=config.timeout)
            smtp.log = self._log  # type: ignore[attr-defined]
            self._smtp = smtp
            # Created without a host so the greeting is logged too; smtplib takes
            # the TLS server name (checked against the certificate) from _host.
            smtp._host = config.host  # type: ignore[attr-defined]
            greeting = smtp.connect(config.host, config.port)
            # The end of DATA goes out as its own small write (after the journal's
            # in-flight mark): without this, Nagle's algorithm holds it back until
            # the previous write is acknowledged, 40 ms later.
            assert smtp.sock is not None
            smtp.sock.setsockopt(socket.IPPROTO_TCP, socket.TCP_NODELAY, 1)
            self._check_greeting(*greeting)
            self._step(f"connected to {where}")
            smtp.ehlo()
            if config.security == "starttls":
                if not smtp.has_extn("starttls"):
                    raise ConnectError(
                        f"{where} does not offer STARTTLS, so the connection cannot be "
                        "encrypted; nothing was sent and no password either. Use "
                        "security = \"ssl\" (port 465) if the server wants TLS from the start."
                    )
                smtp.starttls(context=context)
                smtp.ehlo()
            if config.security != "none":
                version = smtp.sock.version() if isinstance(smtp.sock, ssl.SSLSocket) else "?"
                self._step(f"{version}, certificate verified for {config.host}")
            if config.username:
                self._login(smtp)
        except SendError:
            self.abort()
            raise
        except ssl.SSLCertVerificationError as error:
            self.abort()
            raise ConnectError(
                f"the certificate of {where} could not be verified ({error.verify_message}); "
                "if your server uses a private certificate authority, set ca_file in [smtp]"
            ) from error
        except ssl.SSLError as error:
            self.abort()
            raise ConnectError(
                f"TLS with {where} failed ({error.reason}); port 465 wants "
                "security = \"ssl\", port 587 wants security = \"starttls\""
            ) from error
        except socket.gaierror as error:
            self.abort()
            raise ConnectError(f"cannot find the server '{config.host}'; check host in [smtp]") from error
        except (OSError, smtplib.SMTPException) as error:
            self.abort()
            raise ConnectError(f"cannot connect to {where}: {error}; check host and port in [smtp]") from error

    def _check_greeting(self, code: int, reply: bytes | str) -> None:
        """Raise unless the server greeted with 220: a 4xx greeting is a
        temporary refusal, a 5xx one a refusal of this client."""
        if code == 220:
            return
        where, text = f"{self.config.host}:{self.config.port}", " ".join(_text(reply).split())
        self.close()  # a server that refuses still waits for QUIT (RFC 5321 3.1)
        if 400 <= code < 500:
            raise ServerBusy(f"{where} is refusing connections for now: {code} {text} "
                             "(a temporary limit: wait and try again)")
        if 500 <= code < 600:
            raise ClientRefused(
                f"{where} refuses connections from this computer: {code} {text} (this is about your "
                "network address or its reputation, not your settings: send from another network, "
                "or ask the server's administrator to let your address in)"
            )
        # smtplib gives -1 for a line that does not start with a code (an IMAP or HTTP server).
        raise ConnectError(f"{where} did not greet like an SMTP server; check host and port in [smtp]")

    def _login(self, smtp: smtplib.SMTP) -> None:
        """AUTH once, with one mechanism: a refused password is never tried twice."""
        config = self.config
        offered = smtp.esmtp_features.get("auth", "").upper().split()
        wanted = ("XOAUTH2",) if config.auth == "xoauth2" else AUTH_MECHANISMS
        mechanism = next((m for m in wanted if m in offered), None)
        if mechanism is None:
            raise AuthenticationError(
                f"{config.host} offers no login mechanism mailmerge can use "
                f"(offered: {' '.join(offered) or 'none'}; wanted: {' or '.join(wanted)}); "
                "if it needs no login, remove username from [smtp]"
            )
        secret = self._secret or ""
        try:
            if mechanism == "XOAUTH2":
                smtp.auth(mechanism, _xoauth2(config.username or "", secret))
            else:
                smtp.user, smtp.password = config.username or "", secret
                smtp.auth(mechanism, getattr(smtp, "auth_" + mechanism.lower().replace("-", "_")))
        except smtplib.SMTPAuthenticationError as error:
            raise AuthenticationError(
                f"{config.host} refused the login for {config.username}: "
                f"{error.smtp_code} {_text(error.smtp_error)}. {login_hint(config.host, config.provider)}"
            ) from None  # smtplib's own error may hold the encoded credentials
        finally:
            smtp.password = ""
        self._step(f"logged in as {config.username} ({mechanism})")

    def close(self) -> None:
        """Say QUIT and close; never raises."""
        if self._smtp is not None:
            try:
                self._smtp.quit()
            except (smtplib.SMTPException, OSError):
                self._smtp.close()
            self._smtp = None

    def abort(self) -> None:
        """Close the socket without QUIT (after an error)."""
        if self._smtp is not None:
            self._smtp.close()
            self._smtp = None

    def __enter__(self) -> SmtpSession:
        self.open()
        return self

    def __exit__(
        self,
        kind: type[BaseException] | None,
        error: BaseException | None,
        traceback: TracebackType | None,
    ) -> None:
        self.close()

    # --- sending ----------------------------------------------------------------

    @property
    def is_open(self) -> bool:
        return self._smtp is not None

    def send(
        self,
        message: OutgoingMessage,
        recipients: list[EnvelopeRecipient] | None = None,
        before_data_end: Callable[[list[EnvelopeRecipient]], None] | None = None,
    ) -> list[Outcome]:
        """Send one message; return one :class:`Outcome` per envelope recipient.

        ``recipients`` narrows the envelope (a retry of deferred addresses).
        ``before_data_end`` is called with the accepted recipients after the
        content went out and before the final ``.`` that makes the server take
        responsibility for the message: the journal marks them in flight there.

        Raises :class:`ConnectionLost` when the connection drops or the server
        closes it (421). Its outcomes say, per address, whether the message
        was surely not delivered (``failed``: send it again) or may have been
        (``unknown``: the end of DATA went out, no reply came).
        """
        smtp = self._smtp
        if smtp is None:
            raise ConnectionLost("the SMTP session is not open")
        targets = message.recipients if recipients is None else recipients
        replied: dict[str, Outcome] = {}  # addresses with a final answer of their own

        def settle(status: Status, code: int | None, reason: str) -> list[Outcome]:
            """Every target without an answer of its own gets this one."""
            return _settled(message, targets, replied, code, reason, status)

        if message.smtputf8 and not smtp.has_extn("smtputf8"):
            reason = (
                "not sent: the message has an internationalized address and the "
                "server does not accept them (no SMTPUTF8)"
            )
            return settle(Status.REFUSED, None, reason)

        eightbit = smtp.has_extn("8bitmime")
        options = ["BODY=8BITMIME"] if eightbit else []
        if message.smtputf8:
            options.append("SMTPUTF8")
        end_of_data_sent = False
        try:
            code, reply = smtp.mail(message.sender, options)
            if code != 250:
                return self._not_accepted(code, _text(reply), settle)
            accepted = []
            for r in targets:
                code, reply = smtp.rcpt(r.address)
                if code in (250, 251):
                    accepted.append(r)
                elif code == 421:
                    return self._not_accepted(code, _text(reply), settle)
                else:
                    replied[r.address] = _outcome(message, r, status_of(code), code, _text(reply))
            if not accepted:
                self._reset()
                return settle(Status.FAILED, None, "")  # every target has its answer
            code, reply = smtp.docmd("DATA")
            if code != 354:
                return self._not_accepted(code, _text(reply), settle)
            smtp.send(_dot_stuffed(message.as_bytes(eightbit=eightbit)))
            if before_data_end is not None:
                before_data_end(accepted)
            end_of_data_sent = True
            smtp.send(b".\r\n")
            code, reply = smtp.getreply()
            if code == 250:
                return settle(Status.SENT, code, _text(reply))
            return self._not_accepted(code, _text(reply), settle)
        except (smtplib.SMTPServerDisconnected, OSError) as error:
            self.abort()
            if end_of_data_sent:
                lost = settle(
                    Status.UNKNOWN,
                    None,
                    f"the connection was lost ({error or 'closed'}) after the message was sent and "
                    "before the server confirmed it: it may have been delivered",
                )
            else:
                lost = settle(Status.FAILED, None, f"not sent: the connection was lost ({error or 'closed'})")
            raise ConnectionLost(f"the connection to {self.config.host} was lost: {error or 'closed'}", lost) from error

    def _not_accepted(self, code: int, reply: str, settle: Callable[[Status, int | None, str], list[Outcome]]) -> list[Outcome]:
        """A reply other than 250 to MAIL or DATA, or a 421 anywhere."""
        if code == 421:  # the server closes the session: not a refusal, send again
            results = settle(Status.FAILED, code, f"not sent: {reply}")
            self.abort()
            raise ConnectionLost(f"{self.config.host} closed the session: {code} {reply}", results)
        results = settle(status_of(code), code, reply)
        self._reset()
        return results

    def _reset(self) -> None:
        try:
            if self._smtp is not None:
                self._smtp.rset()
        except (smtplib.SMTPException, OSError):
            self.abort()

    # --- a stream of messages, pipelined when the server allows ----------------

    def stream(self, next_job: Callable[[bool], Job | None], limit: int = 0) -> int:
        """Send the jobs ``next_job`` gives until it gives None (or ``limit``
        messages); return how many were handled.

        ``next_job(False)`` must not wait: None then means "none ready now"
        and the session finishes what it has before asking ``next_job(True)``.
        With PIPELINING (RFC 2920) each message costs one round trip: its
        content, the final ``.``, and the next message's MAIL, RCPTs and DATA go
        in one write. Raises :class:`_Interrupted` when the connection drops
        or the server says 421, with the jobs to send again.
        """
        smtp = self._smtp
        assert smtp is not None
        if smtp.has_extn("pipelining"):
            return self._stream_pipelined(smtp, next_job, limit)
        handled = 0
        while not limit or handled < limit:
            job = next_job(True)
            if job is None:
                break
            try:
                outcomes = self.send(job.message, job.targets, job.before_end)
            except ConnectionLost as lost:
                retry = [o for o in lost.outcomes if o.status is Status.FAILED]
                job.done([o for o in lost.outcomes if o.status is not Status.FAILED])
                raise _Interrupted(lost, [(job, retry)] if retry else [], handled) from lost
            handled += 1
            job.done(outcomes)
        return handled

    def _stream_pipelined(self, smtp: smtplib.SMTP, next_job: Callable[[bool], Job | None], limit: int) -> int:
        eightbit = smtp.has_extn("8bitmime")
        handled = 0

        def pull(wait: bool) -> Job | None:
            return None if limit and handled >= limit else self._sendable(lambda: next_job(wait), smtp)

        job = pull(True)
        payload, described = b"", list[str]()  # the previous message's content and end, not sent yet
        past_dot: Job | None = None  # its end of DATA went out; no reply read yet
        outstanding: Job | None = None  # its MAIL/RCPT/DATA went out; replies not all read
        nxt: Job | None = None  # the next one, rendered while the server answers
        try:
            while job is not None:
                group, lines = _envelope(job, eightbit)
                smtp.send_group(payload + group, described + lines)  # type: ignore[attr-defined]
                payload, described, outstanding = b"", [], job
                nxt = pull(False) if not limit or handled + 1 < limit else None
                if past_dot is not None:
                    self._finish(past_dot, smtp, job)
                    past_dot = None
                accepted, replied, data_code, data_reply = self._read_envelope(job, smtp)
                outstanding = None
                handled += 1
                if data_code == 354 and accepted:
                    job.before_end(accepted)
                    content = _dot_stuffed(job.message.as_bytes(eightbit=eightbit))
                    payload, described = content + b".\r\n", [f"(the message, {len(content)} bytes)", "."]
                    past_dot, job.accepted, job.replied = job, accepted, replied
                    if nxt is None:  # none ready: finish this one before waiting for the next
                        smtp.send_group(payload, described)  # type: ignore[attr-defined]
                        payload, described = b"", []
                        self._finish(past_dot, smtp, None)
                        past_dot = None
                else:
                    job.done(_settled(job.message, job.targets, replied, data_code, data_reply))
                    smtp.send_group(b"RSET\r\n", ["RSET"])  # type: ignore[attr-defined]
                    self._check(smtp.getreply(), None)  # the failed transaction is over
                job, nxt = (nxt if nxt is not None else pull(True)), None
        except (smtplib.SMTPServerDisconnected, OSError) as error:
            self.abort()
            if past_dot is not None:  # maybe delivered: never sent again on its own
                past_dot.done(_settled(
                    past_dot.message, past_dot.targets, past_dot.replied, None,
                    "the connection was lost after the message was sent and before the server "
                    "confirmed it: it may have been delivered", Status.UNKNOWN,
                ))
            lost = ConnectionLost(f"the connection to {self.config.host} was lost: {error or 'closed'}")
            retry: list[tuple[Job, list[Outcome]]] = [(j, []) for j in (outstanding, nxt) if j is not None]
            raise _Interrupted(lost, retry, handled) from error
        except _Interrupted as interrupted:
            interrupted.handled = handled
            if nxt is not None and all(j is not nxt for j, _ in interrupted.retry):
                interrupted.retry.append((nxt, []))  # prepared, never sent: send it again
            raise
        return handled

    def _sendable(self, pull: Callable[[], Job | None], smtp: smtplib.SMTP) -> Job | None:
        """The next job; one that needs SMTPUTF8 the server lacks is settled here."""
        job = pull()
        while job is not None and job.message.smtputf8 and not smtp.has_extn("smtputf8"):
            job.done(self.send(job.message, job.targets))  # refused without a word on the wire
            job = pull()
        return job

    def _read_envelope(self, job: Job, smtp: smtplib.SMTP) -> tuple[list[EnvelopeRecipient], dict[str, Outcome], int, str]:
        """Read the replies to MAIL, each RCPT and DATA of a pipelined group."""
        replied: dict[str, Outcome] = {}
        mail_code, mail_reply = self._check(smtp.getreply(), job)
        accepted = []
        for target in job.targets:
            code, reply = self._check(smtp.getreply(), job)
            if mail_code != 250:
                code, reply = mail_code, mail_reply  # RCPT got "503 need MAIL": MAIL's reply says why
            if code in (250, 251):
                accepted.append(target)
            else:
                replied[target.address] = _outcome(job.message, target, status_of(code), code, reply)
        data_code, data_reply = self._check(smtp.getreply(), job)
        if data_code == 354 and not accepted:  # a server that said 354 anyway: send an empty message
            smtp.send_group(b".\r\n", ["."])  # type: ignore[attr-defined]
            self._check(smtp.getreply(), job)
            data_code, data_reply = 503, "no recipient was accepted"
        return accepted, replied, data_code, data_reply

    def _finish(self, job: Job, smtp: smtplib.SMTP, outstanding: Job | None) -> None:
        """Read the reply to a message's end of DATA and settle it."""
        code, reply = smtp.getreply()
        if code == 421:  # not taken; the server is closing: send it again elsewhere
            self.abort()
            again: list[tuple[Job, list[Outcome]]] = [(job, [])] + ([(outstanding, [])] if outstanding else [])
            raise _Interrupted(ConnectionLost(f"{self.config.host} closed the session: 421 {_text(reply)}"), again, 0)
        job.done(_settled(job.message, job.targets, job.replied, code, _text(reply)))

    def _check(self, answer: tuple[int, bytes], job: Job | None) -> tuple[int, str]:
        """A reply of the envelope; 421 interrupts the stream (the job is sent again)."""
        code, reply = answer
        if code == 421:
            self.abort()
            raise _Interrupted(ConnectionLost(f"{self.config.host} closed the session: 421 {_text(reply)}"),
                               [(job, [])] if job else [], 0)
        return code, _text(reply)


@dataclass(eq=False)
class Job:
    """One message for the stream, and the merge's hooks around it."""

    message: OutgoingMessage
    targets: list[EnvelopeRecipient]
    before_end: Callable[[list[EnvelopeRecipient]], None]  # just before the end of DATA
    done: Callable[[list[Outcome]], None]  # with the outcome of every target that has one
    accepted: list[EnvelopeRecipient] = field(default_factory=list)
    replied: dict[str, Outcome] = field(default_factory=dict)

    def narrowed(self, targets: list[EnvelopeRecipient]) -> Job:
        """The same message for fewer recipients (to send again)."""
        return Job(self.message, targets, self.before_end, self.done)


class _Interrupted(Exception):
    """The stream broke: why, the jobs to send again, how many were handled."""

    def __init__(self, error: ConnectionLost, retry: list[tuple[Job, list[Outcome]]], handled: int) -> None:
        super().__init__(str(error))
        self.error, self.retry, self.handled = error, retry, handled


def _outcome(message: OutgoingMessage, target: EnvelopeRecipient, status: Status, code: int | None, reason: str) -> Outcome:
    return Outcome(message.row, target.field, target.address, status, code, reason, message.message_id)


def _settled(
    message: OutgoingMessage, targets: list[EnvelopeRecipient], replied: dict[str, Outcome],
    code: int | None, reply: str, status: Status | None = None,
) -> list[Outcome]:
    """Every target's outcome: its own RCPT answer, or the message's answer
    (``status``, else the one ``code`` means)."""
    final = status or (status_of(code) if code is not None else Status.FAILED)
    return [replied.get(t.address) or _outcome(message, t, final, code, reply) for t in targets]


def status_of(code: int) -> Status:
    """5xx is final (refused); any other non-2xx reply is temporary (deferred)."""
    if 200 <= code < 300:
        return Status.SENT
    return Status.REFUSED if 500 <= code < 600 else Status.DEFERRED


def _envelope(job: Job, eightbit: bool) -> tuple[bytes, list[str]]:
    """MAIL, one RCPT per target and DATA, as one pipelined group."""
    options = (["BODY=8BITMIME"] if eightbit else []) + (["SMTPUTF8"] if job.message.smtputf8 else [])
    # Addresses were checked when the message was built: no need for smtplib's quoteaddr(),
    # which parses each one again.
    lines = [f"MAIL FROM:<{job.message.sender}>" + "".join(" " + o for o in options)]
    lines += [f"RCPT TO:<{t.address}>" for t in job.targets]
    lines.append("DATA")
    return "".join(line + "\r\n" for line in lines).encode("utf-8"), lines


def _dot_stuffed(data: bytes) -> bytes:
    """The message as DATA content: CRLF line ends, leading dots doubled (RFC 5321 4.5.2)."""
    crlf = data.count(b"\r\n")
    if crlf != data.count(b"\n") or crlf != data.count(b"\r"):  # the email package writes CRLF already
        data = re.sub(rb"(?:\r\n|\n|\r(?!\n))", b"\r\n", data)
    if data.startswith(b".") or b"\n." in data:
        data = re.sub(rb"(?m)^\.", b"..", data)
    return data if data.endswith(b"\r\n") else data + b"\r\n"


class SmtpClient:
    """The session of a whole run, kept open across faults.

    Opens the session when first needed; after a dropped connection, a
    timeout or a 421 it reconnects (TLS and AUTH again) with exponential
    backoff and sends what was surely not delivered again; it also starts a
    fresh session after ``max_per_connection`` messages. A wrong password is
    never retried.
    """

    def __init__(
        self,
        config: SmtpConfig,
        password: str | None,
        *,
        backoff: Backoff,
        stop: StopSignal,
        max_per_connection: int = 0,
        notify: Callable[[str], None] = lambda text: None,
        before_wait: Callable[[], None] = lambda: None,
        log: Callable[[str], None] | None = None,
    ) -> None:
        self.session = SmtpSession(config, password, log=log)
        self.backoff = backoff
        self.stop = stop
        self.max_per_connection = max_per_connection
        self.notify = notify
        self.before_wait = before_wait  # called before waiting to reconnect
        self.connections = 0
        self._sent_on_connection = 0

    def stream(self, next_job: Callable[[bool], Job | None]) -> None:
        """Send every job ``next_job`` gives (see :meth:`SmtpSession.stream`),
        reconnecting as needed and sending again what was surely not delivered.

        Raises :class:`ConnectionLost` when the server stays unreachable after
        the last attempt (the jobs not sent are settled ``failed`` first).
        """
        again: collections.deque[Job] = collections.deque()

        def source(wait: bool) -> Job | None:
            return again.popleft() if again else next_job(wait)

        failures = 0
        error: SendError | None = None
        while True:
            if failures:
                if failures > self.backoff.attempts or not self._wait(failures, error):
                    reason = f"not sent: {error}" if failures > self.backoff.attempts else "not sent: stopped"
                    for job in again:
                        job.done(_settled(job.message, job.targets, {}, None, reason))
                    if failures > self.backoff.attempts:
                        raise ConnectionLost(f"gave up after {self.backoff.attempts} reconnection attempts: {error}")
                    return
            first = source(True)
            if first is None:
                return
            again.appendleft(first)
            try:
                self._ensure_open()
                handled = self.session.stream(source, self.max_per_connection)
            except ConnectError as failure:
                if self.connections == 0 and not isinstance(failure, ServerBusy):
                    again.popleft()
                    raise  # the first connection: a setting is wrong, say so now
                failures, error = failures + 1, failure
                continue
            except _Interrupted as interrupted:
                failures = 1 if interrupted.handled else failures + 1
                error = interrupted.error
                for job, outcomes in reversed(interrupted.retry):
                    failed = {o.address for o in outcomes if o.status is Status.FAILED}
                    again.appendleft(job.narrowed([t for t in job.targets if t.address in failed]) if outcomes else job)
                continue
            failures = 0
            self._sent_on_connection += handled
            if not (self.max_per_connection and handled >= self.max_per_connection):
                return

    def _wait(self, attempt: int, error: SendError | None) -> bool:
        delay = self.backoff.delay(attempt)
        self.notify(f"{error}; reconnecting in {delay:g} s (attempt {attempt} of {self.backoff.attempts})")
        self.before_wait()
        return self.stop.sleep(delay)

    def _ensure_open(self) -> None:
        if self.session.is_open and self.max_per_connection and self._sent_on_connection >= self.max_per_connection:
            self.session.close()  # the server limits messages per session
        if not self.session.is_open:
            self.session.open()
            self.connections += 1
            self._sent_on_connection = 0

    def abort(self) -> None:
        """Cut the connection at once (a second Ctrl-C)."""
        self.session.abort()

    def close(self) -> None:
        self.session.close()
