"""What the SMTP session takes from inside ``smtplib``.

:class:`LoggedSMTP` and :class:`LoggedSMTP_SSL` are smtplib's clients that
tell ``log`` every command and reply (``--verbose``), with the secrets of an
AUTH exchange masked (smtplib's own debug output shows them, base64-encoded),
and that can send several commands in one write (pipelining, which smtplib
does not do: one round trip per message instead of four or more).

What they rely on, beyond smtplib's documented API:

- every command goes out through ``SMTP.send`` and every reply is read
  through ``SMTP.getreply`` (overridden here to log them);
- ``SMTP._host`` is the TLS server name that ``starttls()`` and SMTPS check
  the certificate against: :func:`connect` sets it, because the client is
  made without a host (so that the greeting is logged too and a 4xx or 5xx
  greeting reaches :class:`~mailmerge.delivery.smtp.SmtpSession`, which says
  what it means and still says QUIT);
- ``SMTP._get_socket``, which opens the plain connection: :class:`LoggedSMTP`
  waits there for the greeting's first byte a short while only, and calls
  ``silent`` when none came (a port that wants TLS from the first byte says
  nothing to a plain connection);
- ``SMTP.sock``, the connection's socket: :func:`socket_of` returns it for
  TCP_NODELAY (the end of DATA goes out at once, not 40 ms later) and for
  the TLS version shown by ``mailmerge check``.

``tests/test_fast_paths.py`` runs these against the aiosmtpd test server
without TLS, with STARTTLS and with SMTPS (the certificate checked against
the host name), and checks the conversation log.
"""

from __future__ import annotations

import smtplib
import socket
from collections.abc import Callable


def _text(reply: bytes | str) -> str:
    return reply.decode("utf-8", "replace") if isinstance(reply, bytes) else reply


class _Conversation:
    """Mixin for smtplib's classes: the conversation log and pipelined writes."""

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


class LoggedSMTP(_Conversation, smtplib.SMTP):
    """smtplib.SMTP with the conversation log and :meth:`send_group`.

    When no byte of the greeting came within ``greeting_wait`` seconds,
    ``silent()`` is called (it may raise to end the attempt); then the
    greeting is awaited for the whole timeout as usual."""

    greeting_wait: float | None = None
    silent: Callable[[], None] | None = None

    def _get_socket(self, host: str, port: int, timeout: float) -> socket.socket:
        sock: socket.socket = super()._get_socket(host, port, timeout)  # type: ignore[misc]
        if self.greeting_wait is None or self.silent is None or self.greeting_wait >= timeout:
            return sock
        try:
            sock.settimeout(self.greeting_wait)
            try:
                sock.recv(1, socket.MSG_PEEK)  # (left in place for smtplib to read)
            except TimeoutError:
                self.silent()
            sock.settimeout(timeout)
        except BaseException:
            sock.close()
            raise
        return sock


class LoggedSMTP_SSL(_Conversation, smtplib.SMTP_SSL):  # noqa: N801 (as smtplib names it)
    """smtplib.SMTP_SSL with the conversation log and :meth:`send_group`."""


def connect(smtp: smtplib.SMTP, host: str, port: int) -> tuple[int, bytes]:
    """Connect a client made without a host; return the greeting.

    TLS (SMTPS now, or STARTTLS later) checks the server's certificate
    against ``host``."""
    smtp._host = host  # type: ignore[attr-defined]
    return smtp.connect(host, port)


def socket_of(smtp: smtplib.SMTP) -> socket.socket:
    """The connected client's socket (an ``ssl.SSLSocket`` once TLS is on)."""
    assert smtp.sock is not None, "not connected"
    return smtp.sock
