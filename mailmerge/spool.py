"""A spool: records written once, in order, to a temporary file, and read back
in order as often as needed, so a list of a million rows is read (and each
row rendered) once without being held in memory.

The file has no name on Linux and is deleted by the system when it is closed
or the process dies (:func:`tempfile.TemporaryFile`). It goes into the folder
given (the list's folder: /tmp is often memory, see :func:`spool_folder`).
Records are pickled: the file is this process's own, made private and never
read by another, so nothing from outside is ever unpickled.
"""

from __future__ import annotations

import contextlib
import os
import pickle
import tempfile
import threading
from collections.abc import Iterator
from pathlib import Path
from typing import IO, Any, Generic, TypeVar

from .errors import MailmergeError

Record = TypeVar("Record")

_SIZE = 4  # bytes of the length before each record
_BLOCK = 1 << 20  # read this much at a time


class SpoolError(MailmergeError):
    """The spool's file could not be written (a full disk)."""


class Spool(Generic[Record]):
    """Append records, then iterate over them in order, any number of times
    (also several iterations at once, from any thread)."""

    def __init__(self, folder: Path | None = None) -> None:
        self._file, self.folder = _temporary_file(folder)
        self._lock = threading.Lock()
        self._end = 0  # bytes written
        self._moved = False  # a reader moved the file's position away from the end
        self.count = 0  # records written

    def append(self, record: Record) -> None:
        """Write one record at the end."""
        data = pickle.dumps(record, pickle.HIGHEST_PROTOCOL)
        with self._lock, self._writing():
            if self._moved:  # (a seek empties the write buffer: only when needed)
                self._file.seek(self._end)
                self._moved = False
            self._file.write(len(data).to_bytes(_SIZE, "little"))
            self._file.write(data)
            self._end += _SIZE + len(data)
            self.count += 1

    @contextlib.contextmanager
    def _writing(self) -> Iterator[None]:
        try:
            yield
        except OSError as error:
            raise SpoolError(
                f"{self.folder}: cannot write the temporary file that holds the checked rows "
                f"({error.strerror or error}) after {self._end // 2**20:,} MB for {self.count:,} rows; "
                "free some space on that disk and run again"
            ) from error

    @property
    def size(self) -> int:
        """Bytes on disk."""
        return self._end

    def __len__(self) -> int:
        return self.count

    def __iter__(self) -> Iterator[Record]:
        # Each iteration keeps its own place in the file and reads a block at a
        # time: a few reads a megabyte, whoever else reads meanwhile.
        position, end = 0, self._end
        with self._lock, self._writing():
            self._file.flush()  # the last records written
        buffer, offset = memoryview(b""), 0
        while position < end or offset < len(buffer):
            if offset + _SIZE <= len(buffer):
                size = int.from_bytes(buffer[offset:offset + _SIZE], "little")
                if offset + _SIZE + size <= len(buffer):
                    yield pickle.loads(buffer[offset + _SIZE:offset + _SIZE + size])
                    offset += _SIZE + size
                    continue
                wanted = max(_BLOCK, offset + _SIZE + size - len(buffer))
            else:
                wanted = _BLOCK
            with self._lock:
                self._file.seek(position)
                block = self._file.read(min(wanted, end - position))
                self._moved = True
            if not block:
                raise OSError(f"the spool {self._file.name} ends early")  # the file was cut: never by us
            position += len(block)
            buffer, offset = memoryview(bytes(buffer[offset:]) + block), 0

    def close(self) -> None:
        """Delete the file (the system deletes it too when the process ends)."""
        self._file.close()


def pack(value: object) -> bytes:
    """``value`` as bytes, to keep inside a record: a pass that does not look
    at it does not pay for unpacking it."""
    return pickle.dumps(value, pickle.HIGHEST_PROTOCOL)


def unpack(data: bytes) -> Any:
    """The value that :func:`pack` made ``data`` of."""
    return pickle.loads(data)


def spool_folder(near: Path | None) -> Path | None:
    """Where to put a spool: the folder ``near`` when it can be written to
    (the list's: a disk that holds the list); else None, the system's temporary
    folder (TMPDIR), which may be memory (tmpfs)."""
    if near is not None and near.is_dir() and os.access(near, os.W_OK):
        return near
    return None


def _temporary_file(folder: Path | None) -> tuple[IO[bytes], Path]:
    """The file, and the folder it is in."""
    if folder is not None:
        try:
            return tempfile.TemporaryFile(prefix=".mailmerge-", suffix=".spool", dir=folder), folder
        except OSError:
            pass  # the system's temporary folder, then
    where = Path(tempfile.gettempdir())
    try:
        return tempfile.TemporaryFile(prefix=".mailmerge-", suffix=".spool", dir=where), where
    except OSError as error:
        raise SpoolError(f"{where}: cannot make a temporary file there ({error.strerror or error}); "
                         "set TMPDIR to a folder you can write to") from error
