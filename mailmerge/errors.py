"""The errors a user can cause or meet, as one hierarchy.

Every exception the tool raises on purpose derives from :class:`MailmergeError`
(the journal's, the marker's, IMAP's and SMTP's errors too), and its message is
written for a person: what is wrong, where, and what to do. SMTP errors carry
the server's reply as ``code`` and ``text`` when there was one.

Which exit code the command ends with is decided by the class alone, in one
table (:data:`EXIT_CODES`, walked along the class's MRO); no message text is
ever parsed for it. The CLI prints the message and exits with that code; it
never shows a traceback unless asked (--debug).
"""

from __future__ import annotations

import difflib
from collections.abc import Iterable
from typing import Any


class MailmergeError(Exception):
    """Base class of every error this tool reports to the user."""

    @property
    def exit_code(self) -> int:
        """The exit code of a command that stops on this error (see :data:`EXIT_CODES`)."""
        return exit_code_of(self)


class InputError(MailmergeError):
    """The list, the template, the config or the journal's state is wrong:
    nothing was sent (exit 2)."""


class RecipientsError(InputError):
    """The list of recipients cannot be read."""


class TemplateError(InputError):
    """The template cannot be read, parsed or rendered."""


class NoSender(TemplateError):
    """Neither the template nor the config says who the mail is from."""


class ConfigError(InputError):
    """The configuration file or an option is wrong."""


class SendError(MailmergeError):
    """The SMTP session failed in a way that stops the run (exit 1).

    ``code`` and ``text`` are the server's reply that caused it, when there
    was one (the aiosmtplib model): a script can tell a 421 from a 535
    without reading the message.
    """

    def __init__(self, message: str, *, code: int | None = None, text: str = "") -> None:
        super().__init__(message)
        self.code = code
        self.text = text


class ConnectError(SendError):
    """The server could not be reached, or TLS could not be set up."""


class ServerBusy(ConnectError):
    """The server turned the connection away for now (a 4xx greeting, such as
    a connection rate limit): wait and connect again."""


class ClientRefused(ConnectError):
    """The server refuses this client (a 5xx greeting): the client's address
    or its reputation, not a setting."""


class AuthenticationError(SendError):
    """The server refused the user name and password."""


class ConnectionLost(SendError):
    """The connection dropped (or the server said 421) in the middle of a run.

    ``outcomes`` holds what became of the message that was being sent.
    """

    def __init__(
        self, message: str, outcomes: Iterable[Any] = (), *, code: int | None = None, text: str = ""
    ) -> None:
        super().__init__(message, code=code, text=text)
        self.outcomes = list(outcomes)


class Interrupted(MailmergeError):
    """The person stopped the run (Ctrl-C, SIGTERM): what was sent is in the
    journal; the same command again sends the rest (exit 130)."""


# The exit code of each kind of error: the first class of an error's MRO found
# here wins. The only place that decides an exit code from an error.
EXIT_CODES: dict[type[BaseException], int] = {
    Interrupted: 130,
    InputError: 2,
    SendError: 1,
    MailmergeError: 1,
}


def exit_code_of(error: BaseException) -> int:
    """The exit code for ``error``, from :data:`EXIT_CODES` (1 for anything else)."""
    for kind in type(error).__mro__:
        if kind in EXIT_CODES:
            return EXIT_CODES[kind]
    return 1


def did_you_mean(name: str, choices: Iterable[str]) -> str:
    """Return ``"; did you mean 'x'?"`` for the closest of ``choices``, or ``""``."""
    by_lower = {choice.lower(): choice for choice in choices}
    close = difflib.get_close_matches(name.lower(), list(by_lower), n=1, cutoff=0.6)
    return f"; did you mean '{by_lower[close[0]]}'?" if close else ""


class InvalidRow(MailmergeError):
    """One row cannot be sent because of its data (a broken address, a line
    break in a header value): that row is reported ``invalid``, the others go.

    It never stops a run: the merge catches it for each row.
    """

    def __init__(self, reason: str, address: str = "") -> None:
        super().__init__(reason)
        self.reason = reason
        self.address = address  # the offending address, when there is one
