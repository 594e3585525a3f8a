"""Template-driven mail merge: a list (CSV or Excel) and a Jinja2 template in,
one email per row out, through one authenticated SMTP session.

Use from Python through :class:`Campaign` (one method per command)::

    from mailmerge import Campaign
    campaign = Campaign.open("list.xlsx", "invoice.txt", config="mailmerge.toml")
    result = campaign.send()

The way from list to wire, one package per step::

    sources   the list file     -> rows of text
    render    a row             -> Draft (headers, body, files)
    mime      a Draft           -> the message's bytes + its envelope
    delivery  messages          -> one SMTP session (or --outbox), an Outcome per address
    state     outcomes          -> the journal (SQLite), under the campaign's lock
              the journal       -> the report (CSV) and the counts
    imap      after a send      -> sent copies in the Sent folder, bounces into the journal
    config    mailmerge.toml, the providers' presets, the password
    cli       the commands: parse options, call Campaign, print

At the top, what every step shares or what wires them: ``campaign`` (the
front door, keeping the promises: lock, recovery, the list unchanged),
``merge`` (the steps for a whole list), ``outcome`` (the states: delivery
makes them, state keeps them, the report and cli show them, so none of those
owns them), ``errors`` (one hierarchy, raised everywhere) and ``untrusted``
(text from strangers made harmless, wherever it is read or shown). The
``*_internals`` modules (the private parts of ``email``, Jinja and
``smtplib`` the fast paths use) sit beside the one module that uses each.

The names below are imported when first used, so ``import mailmerge`` (and
``mailmerge --help``) does not load pandas.
"""

from __future__ import annotations

import importlib

TYPE_CHECKING = False  # typing.TYPE_CHECKING without importing typing: `import mailmerge` stays instant

__version__ = "0.1.0"

# Each public name, and the module that defines it.
_EXPORTS = {
    "Campaign": "campaign",
    "Events": "campaign",
    "SendResult": "campaign",
    "Start": "campaign",
    "Template": "render.template",
    "MailTemplate": "render.template",
    "Config": "config.file",
    "Outcome": "outcome",
    "Status": "outcome",
    "Summary": "state.report",
    "MailmergeError": "errors",
    "InputError": "errors",
    "SendError": "errors",
    "Interrupted": "errors",
    "CampaignLocked": "state.journal",
    "ListChanged": "state.journal",
    "JournalLost": "state.marker",
}
__all__ = ["__version__", *_EXPORTS]

if TYPE_CHECKING:
    from typing import Any

    from .campaign import Campaign, Events, SendResult, Start
    from .config.file import Config
    from .errors import InputError, Interrupted, MailmergeError, SendError
    from .state.journal import CampaignLocked, ListChanged
    from .state.marker import JournalLost
    from .outcome import Outcome, Status
    from .state.report import Summary
    from .render.template import MailTemplate
    from .render.template import MailTemplate as Template


def __getattr__(name: str) -> Any:
    """Import a public name's module on first use (PEP 562)."""
    if name not in _EXPORTS:
        raise AttributeError(f"module 'mailmerge' has no attribute {name!r}")
    module = importlib.import_module(f".{_EXPORTS[name]}", __name__)
    value = getattr(module, "MailTemplate" if name == "Template" else name)
    globals()[name] = value
    return value


def __dir__() -> list[str]:
    return sorted([*globals(), *_EXPORTS])
