"""The campaign's lock: one run of a campaign at a time.

``send`` holds it for the whole run. It is always a lock of the operating
system, which releases it when the process ends however it ends (``kill -9``,
a crash, a closed terminal), so a killed run never blocks the next one. It is
never a file whose mere presence means "locked" (filelock's soft lock): such a
file outlives a killed process, and the person would have to find and delete
it by hand.

Which lock, in order:

1. :class:`filelock.FileLock`: ``flock`` on Linux and macOS, ``LockFileEx`` on
   Windows. It holds the pid of the run that has it, for the message.
2. Where filelock has no such lock (a Python without ``fcntl`` that is not
   Windows, or a folder whose file system has no ``flock``): SQLite's own lock
   on a small database beside the lock file, held by an open ``BEGIN
   EXCLUSIVE``. SQLite takes it with the system's calls in C, so it is a real
   lock, released at process exit too. Every run on one machine finds the same
   platform and file system, so they all pick the same lock.
3. Where neither works, the send is refused with a message that says so.
"""

from __future__ import annotations

import errno
import os
import sqlite3
import sys
import warnings
from collections.abc import Callable
from pathlib import Path

from ..errors import MailmergeError

class CampaignLocked(MailmergeError):
    """Another run of the same campaign holds the lock (exit 1)."""


class LockUnavailable(MailmergeError):
    """No real lock works in the journal's folder: the send is refused (exit 1)."""


class CampaignLock:
    """The lock of one campaign, at ``path`` (see the module's docstring)."""

    def __init__(self, path: Path) -> None:
        self.path = path
        self._release: Callable[[], None] | None = None

    @property
    def held(self) -> bool:
        """True while this object holds the lock."""
        return self._release is not None

    def acquire(self) -> None:
        """Take the lock at once or raise :class:`CampaignLocked` (never waits).

        Raises :class:`LockUnavailable` when no real lock works here.
        """
        if self._release is None:
            self._release = _file_lock(self.path) or _sqlite_lock(self.sqlite_path)

    def release(self) -> None:
        """Let the next run in (nothing happens when it is not held)."""
        release, self._release = self._release, None
        if release is not None:
            release()

    @property
    def sqlite_path(self) -> Path:
        """The database whose SQLite lock stands in where filelock has no real lock."""
        return self.path.with_name(f"{self.path.name}.sqlite3")


def _file_lock(path: Path) -> Callable[[], None] | None:
    """filelock's operating-system lock (its release), or None where it has none."""
    with warnings.catch_warnings():
        warnings.simplefilter("ignore")  # "only soft file lock is available": we never use it
        import filelock

    if sys.platform != "win32" and not filelock.has_fcntl:
        return None
    lock = filelock.FileLock(
        path,
        timeout=0,
        mode=0o600,
        thread_local=False,  # a run may be closed from another thread than the one that took it
        fallback_to_soft=False,
        preserve_lock_file=True,
        on_acquired=_write_pid,
    )
    try:
        lock.acquire()
    except filelock.Timeout:
        raise _locked(_holder(path)) from None
    except OSError as error:
        if error.errno == errno.ENOSYS:  # this file system has no flock
            return None
        raise _unavailable(path, error.strerror or str(error)) from error
    return lock.release


def _write_pid(descriptor: int) -> None:
    os.ftruncate(descriptor, 0)
    os.write(descriptor, str(os.getpid()).encode())


def _holder(path: Path) -> str:
    """The pid the holder wrote (Windows keeps a locked file unreadable: then "")."""
    try:
        text = path.read_text(encoding="ascii", errors="replace").strip()
    except OSError:
        return ""
    return text if text.isdigit() else ""


def _sqlite_lock(path: Path) -> Callable[[], None]:
    """SQLite's exclusive lock on ``path`` (its release)."""
    try:
        db = sqlite3.connect(path, isolation_level=None, timeout=0, check_same_thread=False)
    except sqlite3.Error as error:
        raise _unavailable(path, str(error)) from error
    try:
        db.execute("BEGIN EXCLUSIVE")
    except sqlite3.Error as error:
        db.close()
        if getattr(error, "sqlite_errorname", "").startswith("SQLITE_BUSY"):
            raise _locked("") from None
        raise _unavailable(path, str(error)) from error
    return db.close


def _locked(pid: str) -> CampaignLocked:
    who = f"another run (pid {pid})" if pid else "another run"
    return CampaignLocked(f"this campaign is being sent by {who}; wait for it to finish, or stop it first")


def _unavailable(path: Path, detail: str) -> LockUnavailable:
    return LockUnavailable(
        f"cannot lock the campaign ({path}: {detail}), so two runs at once could send a message twice; "
        "nothing was sent. Keep the list in a folder on a local disk (not a network share) and try again"
    )
