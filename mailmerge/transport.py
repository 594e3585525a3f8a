"""Send messages through ONE SMTP session: connect, EHLO, STARTTLS (or SSL
from the start), EHLO, AUTH once, every message, QUIT.

Each message goes out as MAIL, one RCPT per address, DATA, so every address
gets its own outcome with the server's code and text. A 5xx is a refusal; a
4xx is a temporary failure; a 421 or a dropped connection ends the session
(:class:`~mailmerge.errors.ConnectionLost`).
"""

from __future__ import annotations

import smtplib
import socket
import ssl
from types import TracebackType

from .config import SmtpConfig
from .errors import AuthenticationError, ConnectError, ConnectionLost, SendError
from .message import OutgoingMessage
from .outcome import Outcome, Status

# Tried in this order; only ONE is attempted (smtplib's login() tries them all,
# which counts double against an account's lockout).
AUTH_MECHANISMS = ("PLAIN", "LOGIN", "CRAM-MD5")


def _text(reply: bytes | str) -> str:
    return reply.decode("utf-8", "replace") if isinstance(reply, bytes) else reply


def auth_hint(host: str) -> str:
    """What a user of this provider usually needs to do when the login fails."""
    host = host.lower()
    if host.endswith(("gmail.com", "googlemail.com")):
        return (
            "Gmail needs an App Password (Google account > Security > 2-Step "
            "Verification > App passwords), not your normal password."
        )
    return "Check the username in mailmerge.toml and the password in MAILMERGE_PASSWORD."


class SmtpSession:
    """One SMTP session for a whole run. Use as a context manager::

        with SmtpSession(config, password) as session:
            outcomes = session.send(message)
    """

    def __init__(self, config: SmtpConfig, password: str | None = None) -> None:
        self.config = config
        self._password = password
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
            if config.security == "ssl":
                smtp: smtplib.SMTP = smtplib.SMTP_SSL(
                    config.host, config.port, timeout=config.timeout, context=context
                )
            else:
                smtp = smtplib.SMTP(config.host, config.port, timeout=config.timeout)
            self._smtp = smtp
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

    def _login(self, smtp: smtplib.SMTP) -> None:
        offered = smtp.esmtp_features.get("auth", "").upper().split()
        mechanism = next((m for m in AUTH_MECHANISMS if m in offered), None)
        if mechanism is None:
            raise AuthenticationError(
                f"{self.config.host} offers no login mechanism mailmerge knows "
                f"(offered: {' '.join(offered) or 'none'}); if it needs no login, "
                "remove username from [smtp]"
            )
        smtp.user, smtp.password = self.config.username or "", self._password or ""
        try:
            method = getattr(smtp, "auth_" + mechanism.lower().replace("-", "_"))
            smtp.auth(mechanism, method)
        except smtplib.SMTPAuthenticationError as error:
            raise AuthenticationError(
                f"{self.config.host} refused the login for {self.config.username}: "
                f"{error.smtp_code} {_text(error.smtp_error)}. {auth_hint(self.config.host)}"
            ) from None  # smtplib's own error may hold the encoded credentials
        finally:
            smtp.password = ""

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

    def send(self, message: OutgoingMessage) -> list[Outcome]:
        """Send one message; return one :class:`Outcome` per envelope recipient.

        Raises :class:`ConnectionLost` (carrying this message's outcomes) when
        the connection drops or the server closes it with 421.
        """
        smtp = self._smtp
        if smtp is None:
            raise ConnectionLost("the SMTP session is not open")
        outcomes: dict[str, Outcome] = {}

        def settle(address: str, field: str, code: int | None, reply: str) -> None:
            if code is None:
                status = Status.FAILED
            elif code in (250, 251):
                status = Status.SENT
            elif 500 <= code < 600:
                status = Status.REFUSED
            else:
                status = Status.FAILED
            outcomes[address] = Outcome(
                message.row, field, address, status, code, reply, message.message_id
            )

        def settle_rest(code: int | None, reply: str) -> list[Outcome]:
            # Addresses refused at RCPT keep their refusal; the others (unsent, or
            # accepted at RCPT but then lost with the message) take this reply.
            for recipient in message.recipients:
                if recipient.address not in outcomes or outcomes[recipient.address].status is Status.SENT:
                    settle(recipient.address, recipient.field, code, reply)
            return [outcomes[r.address] for r in message.recipients]

        if message.smtputf8 and not smtp.has_extn("smtputf8"):
            reason = (
                "not sent: the message has an internationalized address and the "
                "server does not accept them (no SMTPUTF8)"
            )
            return [
                Outcome(
                    message.row,
                    r.field,
                    r.address,
                    Status.REFUSED if not r.address.isascii() else Status.FAILED,
                    None,
                    reason,
                    message.message_id,
                )
                for r in message.recipients
            ]

        eightbit = smtp.has_extn("8bitmime")
        options = ["BODY=8BITMIME"] if eightbit else []
        if message.smtputf8:
            options.append("SMTPUTF8")
        try:
            code, reply = smtp.mail(message.sender, options)
            if code != 250:
                return self._after_error(code, _text(reply), settle_rest)
            accepted = []
            for recipient in message.recipients:
                code, reply = smtp.rcpt(recipient.address)
                if code == 421:
                    return self._after_error(code, _text(reply), settle_rest)
                settle(recipient.address, recipient.field, code, _text(reply))
                if code in (250, 251):
                    accepted.append(recipient)
            if not accepted:
                smtp.rset()
                return [outcomes[r.address] for r in message.recipients]
            code, reply = smtp.data(message.as_bytes(eightbit=eightbit))
            if code != 250:
                return self._after_error(code, _text(reply), settle_rest)
            for recipient in accepted:
                settle(recipient.address, recipient.field, code, _text(reply))
            return [outcomes[r.address] for r in message.recipients]
        except smtplib.SMTPDataError as error:  # DATA itself was not answered 354
            return self._after_error(error.smtp_code, _text(error.smtp_error), settle_rest)
        except (smtplib.SMTPServerDisconnected, OSError) as error:
            self.abort()
            lost = settle_rest(None, f"not sent: the connection was lost ({error})")
            raise ConnectionLost(f"the connection to {self.config.host} was lost: {error}", lost) from error

    def _after_error(self, code: int, reply: str, settle_rest) -> list[Outcome]:  # type: ignore[no-untyped-def]
        """A non-250 reply to MAIL or DATA (or a 421 anywhere): settle the rest."""
        results: list[Outcome] = settle_rest(code, reply)
        if code == 421:
            self.abort()
            raise ConnectionLost(f"{self.config.host} closed the session: {code} {reply}", results)
        try:
            assert self._smtp is not None
            self._smtp.rset()
        except (smtplib.SMTPException, OSError):
            pass
        return results
