"""Template-driven mail merge: a list (CSV or Excel) and a Jinja2 template in,
one email per row out, through one authenticated SMTP session.

Use from Python through :class:`Campaign` (one method per command)::

    from mailmerge import Campaign
    campaign = Campaign.open("list.xlsx", "invoice.txt", config="mailmerge.toml")
    result = campaign.send()

The way from list to wire, one module per step::

    recipients  (file -> rows)
      -> template (row -> Draft: headers, body)
      -> message  (Draft -> EmailMessage + envelope)
      -> transport (one SMTP session -> an Outcome per address)
      -> report   (outcomes -> CSV)

``merge`` wires those steps for a whole list, ``campaign`` keeps the promises
around them (lock, recovery, the list unchanged); ``cli`` only talks to the person.

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
