"""``send --outbox DIR``: a real SMTP server on 127.0.0.1, started and stopped
by the tool, that stores each message it receives as an ``.eml`` file in DIR.

The whole send path runs (SMTP session, MAIL, RCPT, DATA, report) and nothing
leaves the machine: a newcomer sees the tool work without a mail account, and
can open the files in any mail program.
"""

from __future__ import annotations

import re
import socket
import threading
from pathlib import Path
from types import TracebackType
from typing import Any

from aiosmtpd.controller import Controller
from aiosmtpd.smtp import SMTP, Envelope, Session

from .config import SmtpConfig


class _SaveToFolder:
    """aiosmtpd handler: write each message to ``NNNN-first-recipient.eml``."""

    def __init__(self, folder: Path) -> None:
        self.folder = folder
        self.count = 0
        self._lock = threading.Lock()

    async def handle_DATA(self, server: SMTP, session: Session, envelope: Envelope) -> str:
        with self._lock:
            self.count += 1
            number = self.count
        first = envelope.rcpt_tos[0] if envelope.rcpt_tos else "nobody"
        safe = re.sub(r"[^\w@.+-]", "_", first)[:80]
        data = envelope.original_content or b""
        (self.folder / f"{number:04d}-{safe}.eml").write_bytes(data)
        return "250 OK: saved to the outbox"


def _free_port() -> int:
    with socket.socket() as probe:
        probe.bind(("127.0.0.1", 0))
        return int(probe.getsockname()[1])


class OutboxServer:
    """The embedded server, as a context manager that yields its SMTP settings."""

    def __init__(self, folder: Path) -> None:
        self.folder = folder
        self.handler = _SaveToFolder(folder)
        self._controller: Controller | None = None

    def __enter__(self) -> SmtpConfig:
        self.folder.mkdir(parents=True, exist_ok=True)
        port = _free_port()
        self._controller = Controller(
            self.handler,
            hostname="127.0.0.1",
            port=port,
            server_hostname="localhost",  # no DNS look-up of this machine's name
            enable_SMTPUTF8=True,
            decode_data=False,
        )
        self._controller.start()
        return SmtpConfig(host="127.0.0.1", port=port, security="none", timeout=30)

    def __exit__(
        self,
        kind: type[BaseException] | None,
        error: BaseException | None,
        traceback: TracebackType | None,
    ) -> Any:
        if self._controller is not None:
            self._controller.stop()
            self._controller = None
