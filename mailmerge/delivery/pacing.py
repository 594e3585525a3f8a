"""Time in a long send: the rate, batch pauses, backoff, and Ctrl-C.

Every wait here is a wait on :class:`StopSignal`, so a pause of ten minutes
ends at once when the user presses Ctrl-C.
"""

from __future__ import annotations

import re
import signal
import threading
import time
from collections.abc import Iterator
from contextlib import contextmanager
from dataclasses import dataclass
from types import FrameType
from typing import Any

from ..errors import ConfigError

_UNITS = {"s": 1.0, "sec": 1.0, "m": 60.0, "min": 60.0, "h": 3600.0, "hour": 3600.0, "d": 86400.0}


def parse_duration(text: str | float | int, what: str = "duration") -> float:
    """``"10m"``, ``"30s"``, ``"1h"``, ``"1.5"`` (seconds) -> seconds."""
    if isinstance(text, (int, float)):
        seconds = float(text)
    else:
        match = re.fullmatch(r"\s*(\d+(?:\.\d+)?)\s*([a-z]*)\s*", text.lower())
        if not match or match.group(2) not in ("", *_UNITS):
            raise ConfigError(f"{what} '{text}' is not a duration such as 30s, 10m or 1h")
        seconds = float(match.group(1)) * _UNITS.get(match.group(2), 1.0)
    if seconds < 0:
        raise ConfigError(f"{what} cannot be negative")
    return seconds


def parse_rate(text: str) -> float:
    """``"20/min"``, ``"2/s"``, ``"500/h"`` -> seconds between two messages."""
    match = re.fullmatch(r"\s*(\d+(?:\.\d+)?)\s*/\s*([a-z]+)\s*", text.lower())
    if not match or match.group(2) not in _UNITS or float(match.group(1)) <= 0:
        raise ConfigError(f"rate '{text}' is not a rate such as 20/min, 2/s or 500/h")
    return _UNITS[match.group(2)] / float(match.group(1))


# The signals that ask a run to stop, where they exist: SIGTERM cannot come from
# outside on Windows (it exists there, but only Ctrl-C and Ctrl-Break arrive).
_STOP_SIGNALS = {
    "SIGINT": "interrupted (Ctrl-C)",
    "SIGBREAK": "interrupted (Ctrl-Break)",  # Windows only
    "SIGTERM": "stopped (SIGTERM)",
}


class StopSignal:
    """Set by the first Ctrl-C (SIGINT), SIGTERM or Ctrl-Break (Windows):
    finish the message in flight, then stop. A second one raises
    KeyboardInterrupt at once."""

    def __init__(self) -> None:
        self._event = threading.Event()
        self.reason = ""
        self.interrupted = False  # stopped by the person (a signal), not by an error

    @property
    def requested(self) -> bool:
        return self._event.is_set()

    def request(self, reason: str, *, interrupted: bool = False) -> None:
        """Stop after the message in flight; ``interrupted``: the person asked."""
        if not self._event.is_set():
            self.reason, self.interrupted = reason, interrupted
        self._event.set()

    def sleep(self, seconds: float) -> bool:
        """Wait up to ``seconds``; return False when a stop was requested."""
        if seconds > 0:
            self._event.wait(seconds)
        return not self._event.is_set()

    @contextmanager
    def installed(self) -> Iterator[StopSignal]:
        """Handle the stop signals this platform has while the block runs, then
        put the previous handlers back (main thread only: Python allows no other)."""
        if threading.current_thread() is not threading.main_thread():
            yield self
            return
        reasons = {number: _STOP_SIGNALS[name] for name, number in stop_signals().items()}

        def handle(number: int, frame: FrameType | None) -> None:
            if self.requested:
                raise KeyboardInterrupt
            self.request(reasons.get(number, "stopped"), interrupted=True)

        previous: dict[int, Any] = {}
        try:
            for number in reasons:
                try:
                    previous[number] = signal.signal(number, handle)
                except (OSError, ValueError):  # one this platform cannot handle
                    continue
            yield self
        finally:
            for number, handler in previous.items():
                # None: a handler set outside Python, which Python cannot put back.
                signal.signal(number, signal.SIG_DFL if handler is None else handler)


def stop_signals() -> dict[str, int]:
    """The stop signals (name: number) that exist on this platform."""
    numbers = {name: getattr(signal, name, None) for name in _STOP_SIGNALS}
    return {name: number for name, number in numbers.items() if number is not None}


@dataclass
class Pacer:
    """Spaces messages: one every ``interval`` seconds at most (a token bucket
    holding one token: no burst at the start), counted from the server's
    answer to the previous message, so the provider never sees two closer than
    that, even pipelined; and tells when a batch of ``batch_size`` is done
    (the caller pauses)."""

    interval: float = 0.0
    batch_size: int = 0
    handed: int = 0  # messages handed to a session so far
    _last_handed: float | None = None
    _last_answered: float | None = None

    def delay(self) -> float:
        """Seconds to wait before the next message may go (check again then)."""
        if self.interval <= 0 or self._last_handed is None:
            return 0.0
        if self._last_answered is None or self._last_handed > self._last_answered:
            return min(self.interval, 0.05)  # one is on its way: look again shortly
        return max(0.0, self._last_answered + self.interval - time.monotonic())

    def handed_one(self) -> None:
        """A message is handed to a session now."""
        self.handed += 1
        self._last_handed = time.monotonic()

    def completed(self) -> None:
        """The server answered a message now."""
        self._last_answered = time.monotonic()

    @property
    def batch_done(self) -> bool:
        """True right after the last message of a batch was handed out."""
        return self.batch_size > 0 and self.handed > 0 and self.handed % self.batch_size == 0


@dataclass(frozen=True)
class Backoff:
    """Exponential backoff: ``initial``, doubling, at most ``maximum``, ``attempts`` times."""

    initial: float
    maximum: float
    attempts: int

    def delay(self, attempt: int) -> float:
        """The wait before attempt number ``attempt`` (1 is the first retry)."""
        return min(self.maximum, self.initial * (2 ** max(attempt - 1, 0)))

    @property
    def total(self) -> float:
        """Seconds waited in all when every attempt is needed."""
        return sum(self.delay(n) for n in range(1, self.attempts + 1))
