"""Send messages through ONE SMTP session: connect, EHLO, STARTTLS (or SSL
from the start), EHLO, AUTH once, every message, QUIT.

Each message goes out as MAIL, one RCPT per address, DATA, so every address
gets its own outcome with the server's code and text. A 5xx is a refusal; a
4xx is a temporary failure; a 421 or a dropped connection ends the session
(:class:`~mailmerge.errors.ConnectionLost`), and so does a 4xx to MAIL FROM
(the server limits the sender: wait, then go on). Whatever ends a session,
the replies already read are kept. One loop sends every message
(:meth:`SmtpSession.stream`), pipelined or one command at a time.
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

from ..config.file import SmtpConfig
from ..config.providers import PROVIDERS, login_hint
from ..errors import AuthenticationError, ClientRefused, ConnectError, ConnectionLost, SendError, ServerBusy
from ..mime.message import EnvelopeRecipient, OutgoingMessage
from ..outcome import Outcome, Status
from .pacing import Backoff, StopSignal
from .smtplib_internals import LoggedSMTP, LoggedSMTP_SSL, connect, socket_of

# Tried in this order; only ONE is attempted (smtplib's login() tries them all,
# which counts double against an account's lockout).
AUTH_MECHANISMS = ("PLAIN", "LOGIN", "CRAM-MD5")

# Seconds to wait for a plain connection's greeting before checking whether the
# port wants TLS from the first byte (such a port says nothing until the TLS
# handshake), and for that check's handshake. SMTP servers greet at once.
GREETING_WAIT = 3.0


def _text(reply: bytes | str) -> str:
    return reply.decode("utf-8", "replace") if isinstance(reply, bytes) else reply


def _xoauth2(username: str, token: str) -> Callable[[bytes | None], str]:
    """SASL XOAUTH2 for smtplib's auth(): the initial response, then an empty
    answer to the server's error challenge, so a refused token ends in 535."""

    def respond(challenge: bytes | None = None) -> str:
        return f"user={username}\x01auth=Bearer {token}\x01\x01" if challenge is None else ""

    return respond


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
        self._smtp: LoggedSMTP | None = None
        # A MAIL FROM was refused for now (a sender rate limit): from then on,
        # for the rest of the run, each MAIL waits for its reply before RCPTs follow.
        self.cautious = False

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
            smtp: LoggedSMTP
            if config.security == "ssl":
                smtp = LoggedSMTP_SSL(timeout=config.timeout, context=context)
            else:
                smtp = LoggedSMTP(timeout=config.timeout)
                smtp.greeting_wait, smtp.silent = GREETING_WAIT, lambda: self._refuse_if_tls_only(context)
            smtp.log = self._log
            self._smtp = smtp
            greeting = connect(smtp, config.host, config.port)
            # The end of DATA goes out as its own small write (after the journal's
            # in-flight mark): without this, Nagle's algorithm holds it back until
            # the previous write is acknowledged, 40 ms later.
            socket_of(smtp).setsockopt(socket.IPPROTO_TCP, socket.TCP_NODELAY, 1)
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
                tls = socket_of(smtp)
                version = tls.version() if isinstance(tls, ssl.SSLSocket) else "?"
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
            raise ConnectError(self._unresolved(error)) from error
        except (OSError, smtplib.SMTPException) as error:
            self.abort()
            raise ConnectError(f"cannot connect to {where}: {error}; check host and port in [smtp]") from error

    def _refuse_if_tls_only(self, context: ssl.SSLContext) -> None:
        """No greeting came on the plain connection: if the port answers a TLS
        handshake, it wants TLS from the first byte; say so (else wait on)."""
        config, where = self.config, f"{self.config.host}:{self.config.port}"
        if self._log is not None:
            self._log(f"(no greeting after {GREETING_WAIT:g} s: does {where} want TLS from the start?)")
        try:
            with socket.create_connection((config.host, config.port), timeout=min(GREETING_WAIT, config.timeout)) as raw:
                context.wrap_socket(raw, server_hostname=config.host).close()
        except ssl.SSLCertVerificationError:
            pass  # it speaks TLS; its certificate is checked when it is used as it wants
        except OSError:  # (ssl.SSLError too) not TLS either: a slow server, maybe
            return
        raise ConnectError(
            f"{where} expects TLS from the first byte (it said nothing to a plain connection, "
            f'and answered TLS): set security = "ssl" in [smtp]. Nothing was sent.'
        )

    def _unresolved(self, error: socket.gaierror) -> str:
        """Why the server's name gave no address, and what to do."""
        config = self.config
        preset = PROVIDERS.get(config.provider or "")
        if preset is not None and preset.host == config.host.lower():
            return (
                f'the name {config.host} could not be resolved (it comes from provider = "{config.provider}" '
                "in [smtp]): this computer seems to be offline; check its internet connection, then try again"
            )
        if error.errno == socket.EAI_NONAME:
            return f"the name {config.host} could not be resolved (no such server); check host in [smtp]"
        return (f"the name {config.host} could not be resolved ({error.strerror}); "
                "check the internet connection, and host in [smtp]")

    def _check_greeting(self, code: int, reply: bytes | str) -> None:
        """Raise unless the server greeted with 220: a 4xx greeting is a
        temporary refusal, a 5xx one a refusal of this client."""
        if code == 220:
            return
        where, text = f"{self.config.host}:{self.config.port}", " ".join(_text(reply).split())
        self.close()  # a server that refuses still waits for QUIT (RFC 5321 3.1)
        if 400 <= code < 500:
            raise ServerBusy(f"{where} is refusing connections for now: {code} {text} "
                             "(a temporary limit: wait and try again)", code=code, text=text)
        if 500 <= code < 600:
            raise ClientRefused(
                f"{where} refuses connections from this computer: {code} {text} (this is about your "
                "network address or its reputation, not your settings: send from another network, "
                "or ask the server's administrator to let your address in)", code=code, text=text,
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
                f"{error.smtp_code} {_text(error.smtp_error)}. {login_hint(config.host, config.provider)}",
                code=error.smtp_code, text=_text(error.smtp_error),
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

    # --- sending: one loop for one message or a stream of them -----------------

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

        Raises :class:`ConnectionLost` when the connection drops, the server
        closes it (421) or asks to slow down (a 4xx to MAIL FROM). Its outcomes
        keep every reply that came (a 550 stays ``refused``); the other
        addresses are ``not_sent_yet`` (surely not delivered: send it again) or
        ``unknown`` (the end of DATA went out, no reply came).
        """
        if self._smtp is None:
            raise ConnectionLost("the SMTP session is not open")
        targets = message.recipients if recipients is None else recipients
        outcomes: list[Outcome] = []
        jobs = iter([Job(message, targets, before_data_end or (lambda accepted: None), outcomes.extend)])
        end = self.stream(lambda wait: next(jobs, None))
        if end.error is None:
            return outcomes
        for job in end.retry:  # (the only job: the addresses that surely did not get it)
            job.done(_settled(job.message, job.targets, {}, None, f"not sent: {end.error}"))
        order = {target.address: i for i, target in enumerate(targets)}
        end.error.outcomes = sorted(outcomes, key=lambda outcome: order[outcome.address])
        raise end.error

    def stream(self, next_job: Callable[[bool], Job | None], limit: int = 0) -> StreamEnd:
        """Send the jobs ``next_job`` gives until it gives None (or ``limit``
        messages), or until the session ends; say how it ended.

        ``next_job(False)`` must not wait: None then means "none ready now"
        and the session finishes what it has before asking ``next_job(True)``.

        This is the one send loop. Each message is MAIL, one RCPT per address,
        DATA, the content and its final ``.``; every reply is read, in order,
        by :class:`_Wire`, and kept by the message's :class:`_Transaction`.
        Without PIPELINING (RFC 2920) each command waits for its reply. With
        it, a message costs one round trip: its content, the final ``.``, and
        the next message's MAIL, RCPTs and DATA go in one write; after a MAIL
        FROM that failed for now, each MAIL waits for its reply before the
        RCPTs follow (no RCPT or DATA answered "503 need MAIL" while the server
        limits us).

        Every outcome goes to its job's ``done``. A session that ends early
        is not an exception here but the :class:`StreamEnd`'s ``error`` (a
        :class:`ConnectionLost`): the connection dropped, the server said 421,
        or it refused a MAIL FROM for now (a 4xx: a sender rate limit; the
        session is closed, so that the caller waits before it connects
        again). The replies that came are kept in the outcomes; ``retry``
        holds what surely did not go, to send again.
        """
        smtp = self._smtp
        assert smtp is not None
        wire = _Wire(smtp, self.config.host)
        pipelining, eightbit = smtp.has_extn("pipelining"), smtp.has_extn("8bitmime")
        taken = handled = 0
        live: list[_Transaction] = []  # on the wire, not all settled
        nxt: Job | None = None  # the next job, rendered while the server answers

        def pull(wait: bool) -> Job | None:
            nonlocal taken
            while not limit or taken < limit:
                job = next_job(wait)
                if job is None:
                    return None
                if not job.message.smtputf8 or smtp.has_extn("smtputf8"):
                    taken += 1
                    return job
                _Transaction(job).settle(None, NO_SMTPUTF8, Status.REFUSED)  # not a word on the wire
            return None

        try:
            job = pull(True)
            while job is not None:
                tx = _Transaction(job)
                live = [t for t in live if not t.settled] + [tx]
                wire.command(tx, _MAIL, _mail_from(job.message, eightbit))
                if not pipelining or self.cautious:
                    wire.read_through(tx, _MAIL)
                if tx.mail is None or tx.mail[0] == 250:
                    for target in job.targets:
                        wire.command(tx, target, f"RCPT TO:<{target.address}>")
                        if not pipelining:
                            wire.read_through(tx, target)
                    if pipelining or tx.accepted:
                        wire.command(tx, _DATA, "DATA")
                wire.flush()
                if pipelining and not tx.refused_for_now and (not limit or taken < limit):
                    nxt = pull(False)
                wire.read_through(tx)  # (the previous message's end of DATA is answered first)
                if tx.refused_for_now:
                    self.cautious = True
                    self.close()  # no more on this connection for now: the caller waits, then reconnects
                    code, text = tx.mail or (None, "")
                    error = ConnectionLost(f"{self.config.host} asks to slow down: {tx.refused_for_now}",
                                           code=code, text=text)
                    return StreamEnd(handled, [job] + ([nxt] if nxt is not None else []), error)
                if tx.data is not None and tx.data[0] == 354 and tx.accepted:
                    job.before_end(tx.accepted)
                    wire.content(tx, _dot_stuffed(job.message.as_bytes(eightbit=eightbit)))
                    if nxt is None or not pipelining:  # none ready: finish this one before waiting for the next
                        wire.read_through(tx)
                else:
                    if tx.data is not None and tx.data[0] == 354:  # a server that said 354 to no recipient
                        wire.content(tx, b"")
                    wire.command(tx, _RSET, "RSET")  # the failed transaction is over
                    wire.read_through(tx)
                    tx.settle_envelope()
                handled += 1
                job, nxt = (nxt if nxt is not None else pull(True)), None
        except (ConnectionLost, smtplib.SMTPServerDisconnected, OSError) as error:
            self.abort()
            if isinstance(error, ConnectionLost):  # the server said 421 (see _Wire.read_through)
                lost = error
            else:
                lost = ConnectionLost(f"the connection to {self.config.host} was lost: {error or 'closed'}")
                lost.__cause__ = error
            maybe_delivered = lost.code is None  # a 421 to the end of DATA: not taken
            pending = [t for t in live if not t.settled]
            again = [j for t in pending for j in [t.interrupted(maybe_delivered)] if j is not None]
            progress = handled + sum(t.decided for t in pending)  # a refusal kept is progress too
            return StreamEnd(progress, again + ([nxt] if nxt is not None else []), lost)
        return StreamEnd(handled)


NO_SMTPUTF8 = ("not sent: the message has an internationalized address and the "
               "server does not accept them (no SMTPUTF8)")
UNKNOWN_AFTER_DOT = ("the connection was lost after the message was sent and before the "
                     "server confirmed it: it may have been delivered")

# The steps of a message whose replies are read, besides one per recipient.
_MAIL, _DATA, _END, _RSET = "MAIL", "DATA", "END", "RSET"
_Step = str | EnvelopeRecipient


class _Transaction:
    """One message on the wire: the replies to its MAIL, each RCPT, DATA and
    the end of DATA, kept as they are read, and the outcomes they mean. A
    message that is interrupted keeps every reply it got (a 550 stays refused)."""

    def __init__(self, job: Job) -> None:
        self.job = job
        self.mail: tuple[int, str] | None = None
        self.data: tuple[int, str] | None = None
        self.accepted: list[EnvelopeRecipient] = []
        self.replied: dict[str, Outcome] = {}  # refused or deferred by the reply to their RCPT
        self.past_dot = False  # the end of DATA went out (or may have)
        self.settled = False  # every target has its outcome
        self.decided = False  # some target got a final outcome (progress, even if the session ends)

    def take(self, step: _Step, code: int, text: str) -> None:
        """The server's reply to ``step``."""
        if step is _MAIL:
            self.mail = (code, text)
        elif step is _DATA:
            self.data = (code, text)
        elif step is _END and self.accepted:  # (after a 354 to no recipient, the RCPT replies say it all)
            self.settle(code, text)
        elif isinstance(step, EnvelopeRecipient) and self.mail is not None and self.mail[0] == 250:
            if code in (250, 251):
                self.accepted.append(step)
            else:
                self.replied[step.address] = _outcome(self.job.message, step, status_of(code), code, text)
        # (a RCPT after a failed MAIL got "503 need MAIL": MAIL's reply says why; RSET's says nothing)

    @property
    def refused_for_now(self) -> str:
        """MAIL FROM's reply when it was a 4xx (the server limits the sender:
        too much mail), else ""."""
        return f"{self.mail[0]} {self.mail[1]}" if self.mail is not None and 400 <= self.mail[0] < 500 else ""

    def settle(self, code: int | None, text: str, status: Status | None = None) -> None:
        """Each target gets the reply to its RCPT, or else this one."""
        self.settled = self.decided = True
        self.job.done(_settled(self.job.message, self.job.targets, self.replied, code, text, status))

    def settle_envelope(self) -> None:
        """No message went: a refused MAIL FROM answers for every address,
        else DATA's reply for those whose RCPT was accepted."""
        assert self.mail is not None
        self.settle(*(self.mail if self.mail[0] != 250 else self.data or (None, "")))

    def interrupted(self, maybe_delivered: bool) -> Job | None:
        """The connection ended before every reply came: settle what the
        replies so far settle; return the job for the rest (to send again)."""
        if self.past_dot and maybe_delivered:  # never sent again on its own
            self.settle(None, UNKNOWN_AFTER_DOT, Status.UNKNOWN)
            return None
        if self.mail is not None and self.mail[0] >= 500:
            self.settle(*self.mail)
            return None
        self.settled, self.decided = True, bool(self.replied)
        if self.replied:
            self.job.done([self.replied[t.address] for t in self.job.targets if t.address in self.replied])
        rest = [t for t in self.job.targets if t.address not in self.replied]
        return self.job.narrowed(rest) if rest else None


class _Wire:
    """The commands of a session and their replies, read in order: commands
    are held until a reply is needed (so that pipelined ones go in one
    write), and each reply goes to the transaction whose command it answers."""

    def __init__(self, smtp: LoggedSMTP, host: str) -> None:
        self.smtp = smtp
        self.host = host
        self.held = bytearray()
        self.described: list[str] = []  # the held commands, for the --verbose log
        self.expected: collections.deque[tuple[_Transaction, _Step]] = collections.deque()

    def command(self, tx: _Transaction, step: _Step, line: str) -> None:
        self.held += line.encode("utf-8") + b"\r\n"
        self.described.append(line)
        self.expected.append((tx, step))

    def content(self, tx: _Transaction, data: bytes) -> None:
        """The message and its final ``.``: from here on it may be delivered."""
        self.held += data + b".\r\n"
        self.described += [f"(the message, {len(data)} bytes)", "."] if data else ["."]
        self.expected.append((tx, _END))
        tx.past_dot = True

    def flush(self) -> None:
        if self.held:
            held, described = bytes(self.held), self.described
            self.held, self.described = bytearray(), []
            self.smtp.send_group(held, described)

    def read_through(self, tx: _Transaction, step: _Step | None = None) -> None:
        """Send what is held, then read every reply up to the one to ``step``
        of ``tx`` (its last one when None). Raises :class:`ConnectionLost`
        with the reply's code and text on 421 (the server closes the session)."""
        self.flush()
        waited = [i for i, (t, s) in enumerate(self.expected) if t is tx and (step is None or s is step)]
        for _ in range(waited[-1] + 1 if waited else 0):
            target, answered = self.expected.popleft()
            code, reply = self.smtp.getreply()
            if code == 421:
                text = _text(reply)
                raise ConnectionLost(f"{self.host} closed the session: {code} {text}", code=code, text=text)
            target.take(answered, code, _text(reply))


@dataclass(eq=False)
class Job:
    """One message for the stream, and the merge's hooks around it."""

    message: OutgoingMessage
    targets: list[EnvelopeRecipient]
    before_end: Callable[[list[EnvelopeRecipient]], None]  # just before the end of DATA
    done: Callable[[list[Outcome]], None]  # with the outcome of every target that has one

    def narrowed(self, targets: list[EnvelopeRecipient]) -> Job:
        """The same message for fewer recipients (to send again)."""
        return Job(self.message, targets, self.before_end, self.done)


@dataclass
class StreamEnd:
    """How :meth:`SmtpSession.stream` ended."""

    handled: int  # messages handled on this connection (a refusal kept counts)
    retry: list[Job] = field(default_factory=list)  # what surely did not go: send it again
    error: ConnectionLost | None = None  # why the session ended early; None: no more jobs, or the limit


def _outcome(message: OutgoingMessage, target: EnvelopeRecipient, status: Status, code: int | None, reason: str) -> Outcome:
    return Outcome(message.row, target.field, target.address, status, code, reason, message.message_id)


def _settled(
    message: OutgoingMessage, targets: list[EnvelopeRecipient], replied: dict[str, Outcome],
    code: int | None, reply: str, status: Status | None = None,
) -> list[Outcome]:
    """Every target's outcome: its own RCPT answer, or the message's answer
    (``status``, else the one ``code`` means)."""
    final = status or (status_of(code) if code is not None else Status.NOT_SENT_YET)
    return [replied.get(t.address) or _outcome(message, t, final, code, reply) for t in targets]


def status_of(code: int) -> Status:
    """5xx is final (refused); any other non-2xx reply is temporary (deferred)."""
    if 200 <= code < 300:
        return Status.SENT
    return Status.REFUSED if 500 <= code < 600 else Status.DEFERRED


def _mail_from(message: OutgoingMessage, eightbit: bool) -> str:
    """The MAIL FROM command. (Addresses were checked when the message was
    built: no need for smtplib's quoteaddr(), which parses each one again.)"""
    options = (["BODY=8BITMIME"] if eightbit else []) + (["SMTPUTF8"] if message.smtputf8 else [])
    return f"MAIL FROM:<{message.sender}>" + "".join(" " + o for o in options)


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
    timeout, a 421 or a 4xx to MAIL FROM (the server limits the sender) it
    reconnects (TLS and AUTH again) with exponential backoff and sends what
    was surely not delivered again. The backoff starts over after a session
    that settled something (a refusal kept counts). It also starts a fresh
    session after ``max_per_connection`` messages. A wrong password is never
    retried.
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
        the last attempt (the jobs not sent are settled ``not_sent_yet`` first).
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
            except ConnectError as failure:
                if self.connections == 0 and not isinstance(failure, ServerBusy):
                    again.popleft()
                    raise  # the first connection: a setting is wrong, say so now
                failures, error = failures + 1, failure
                continue
            end = self.session.stream(source, self.max_per_connection)
            if end.error is not None:
                failures = 1 if end.handled else failures + 1
                error = end.error
                again.extendleft(reversed(end.retry))
                continue
            failures = 0
            self._sent_on_connection += end.handled
            if not (self.max_per_connection and end.handled >= self.max_per_connection):
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
