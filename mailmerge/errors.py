"""The errors a user can cause or meet, as one hierarchy.

Every error carries the exit code the command ends with and a message written
for a person: what is wrong, where, and what to do. The CLI prints the message
and exits with the code; it never shows a traceback unless asked (--debug).
"""

from __future__ import annotations

import difflib
from collections.abc import Iterable
from typing import Any


class MailmergeError(Exception):
    """Base class of every error this tool reports to the user."""

    exit_code: int = 1


class InputError(MailmergeError):
    """The list, the template or the config is wrong: nothing was sent (exit 2)."""

    exit_code = 2


class RecipientsError(InputError):
    """The list of recipients cannot be read."""


class TemplateError(InputError):
    """The template cannot be read, parsed or rendered."""


class ConfigError(InputError):
    """The configuration file or an option is wrong."""


class SendError(MailmergeError):
    """The SMTP session failed in a way that stops the run (exit 1)."""

    exit_code = 1


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

    def __init__(self, message: str, outcomes: Iterable[Any] = ()) -> None:
        super().__init__(message)
        self.outcomes = list(outcomes)


def did_you_mean(name: str, choices: Iterable[str]) -> str:
    """Return ``"; did you mean 'x'?"`` for the closest of ``choices``, or ``""``."""
    by_lower = {choice.lower(): choice for choice in choices}
    close = difflib.get_close_matches(name.lower(), list(by_lower), n=1, cutoff=0.6)
    return f"; did you mean '{by_lower[close[0]]}'?" if close else ""


class InvalidRow(Exception):
    """One row cannot be sent because of its data (a broken address, a line
    break in a header value): that row is reported ``invalid``, the others go.

    Not a :class:`MailmergeError`: it never stops a run.
    """

    def __init__(self, reason: str, address: str = "") -> None:
        super().__init__(reason)
        self.reason = reason
        self.address = address  # the offending address, when there is one
