"""The ``mailmerge`` command: the commands (:mod:`.commands`), how they talk
to the person (:mod:`.ui`), the browser preview (:mod:`.htmlpreview`) and
``mailmerge init`` with its starter files (:mod:`.scaffold`)."""

from .commands import app

__all__ = ["app"]
