"""Append-only JSON-lines record of every published event (CONTRACT.md: `events.journal`).

The journal is the evidence a compliance subscriber or an operator goes back to, so:

- Each event is one line written with a single `os.write` on an `O_APPEND` descriptor (no
  user-space buffer to lose), then fsync'ed unless told otherwise; the publisher writes it
  before the event goes on the wire, so nobody can have seen an event the journal lacks.
- A failed write (disk full, read-only remount, a deleted directory) raises `JournalError`
  and closes the file; the next `append` reopens it, so the journal resumes by itself when
  the disk recovers instead of staying dead until a restart.
- A crash or a failed write can leave half a line. When the file is (re)opened, a missing
  final newline is added first, so the torn fragment stays on a line of its own and the
  next record is intact; `read_journal` skips such fragments.
- If the file is renamed or removed under us (logrotate without copytruncate), the next
  append notices and opens a fresh file at the configured path.
"""

from __future__ import annotations

import json
import logging
import os
from collections.abc import Iterator, Mapping
from pathlib import Path
from typing import Any

log = logging.getLogger(__name__)

_OPEN_FLAGS = os.O_WRONLY | os.O_APPEND | os.O_CREAT | getattr(os, "O_BINARY", 0)


class JournalError(Exception):
    """Appending to the journal failed (the OSError is the cause). The caller counts it."""

    def __init__(self, path: Path, exc: OSError) -> None:
        reason = exc.strerror or str(exc) or type(exc).__name__
        super().__init__(f"journal {path}: {reason}")
        self.path = path
        self.errno = exc.errno


class Journal:
    """Appends events as JSON lines. Not thread-safe: the publisher thread owns it."""

    def __init__(self, path: Path, fsync: bool = True) -> None:
        self.path = Path(path)
        self.fsync = fsync
        self._fd: int | None = None
        self._identity: tuple[int, int] | None = None  # (st_dev, st_ino) of the open file

    def open(self) -> None:
        """Open (or create) the file now; `append` does this lazily, this reports problems early."""
        if self._fd is None:
            try:
                self._open()
            except OSError as exc:
                raise JournalError(self.path, exc) from exc

    def _open(self) -> None:
        self.path.parent.mkdir(parents=True, exist_ok=True)
        created = not self.path.exists()
        fd = os.open(self.path, _OPEN_FLAGS, 0o666)
        try:
            st = os.fstat(fd)
            if st.st_size > 0 and not self._ends_with_newline():
                # a torn last line from a crash or a failed write: close it off so the next
                # record starts on its own line (read_journal skips the fragment)
                _write_all(fd, b"\n")
                log.warning("journal had a torn last line, terminated it path=%s", self.path)
            if created and self.fsync:
                _fsync_dir(self.path.parent)
        except BaseException:
            os.close(fd)
            raise
        self._fd = fd
        self._identity = (st.st_dev, st.st_ino)

    def _ends_with_newline(self) -> bool:
        with open(self.path, "rb") as fh:
            fh.seek(-1, os.SEEK_END)
            return fh.read(1) == b"\n"

    def _rotated(self) -> bool:
        """True when the path no longer names the file we hold open (renamed or deleted)."""
        try:
            st = os.stat(self.path)
        except FileNotFoundError:
            return True
        return (st.st_dev, st.st_ino) != self._identity

    def append(self, event: Mapping[str, Any]) -> None:
        """Write one event as one line, flushed (and fsync'ed if configured).

        Raises JournalError on any OSError; the file is closed and reopened on the next call.
        A TypeError/ValueError means the event is not JSON: a bug, so it is not wrapped.
        """
        line = json.dumps(event, ensure_ascii=False, separators=(",", ":"), allow_nan=False).encode("utf-8") + b"\n"
        try:
            if self._fd is not None and self._rotated():
                log.info("journal file was moved or removed, reopening path=%s", self.path)
                self.close()
            if self._fd is None:
                self._open()
            assert self._fd is not None
            _write_all(self._fd, line)
            if self.fsync:
                os.fsync(self._fd)
        except OSError as exc:
            self.close()
            raise JournalError(self.path, exc) from exc

    def close(self) -> None:
        """Close the file (idempotent). Errors on close are logged, not raised: nothing is buffered."""
        fd, self._fd, self._identity = self._fd, None, None
        if fd is not None:
            try:
                os.close(fd)
            except OSError as exc:
                log.warning("journal close failed path=%s error=%s", self.path, exc)

    def __enter__(self) -> Journal:
        return self

    def __exit__(self, *exc_info: object) -> None:
        self.close()


def _write_all(fd: int, data: bytes) -> None:
    view = memoryview(data)
    while view:
        written = os.write(fd, view)
        if written <= 0:
            raise OSError(28, "No space left on device (short write)")
        view = view[written:]


def _fsync_dir(directory: Path) -> None:
    """Make a newly created file's directory entry durable (POSIX only; best effort)."""
    if os.name != "posix":
        return
    try:
        dfd = os.open(directory, os.O_RDONLY)
    except OSError:
        return
    try:
        os.fsync(dfd)
    except OSError:
        pass
    finally:
        os.close(dfd)


def read_journal(path: Path) -> Iterator[dict[str, Any]]:
    """Yield the events recorded in a journal, oldest first.

    A torn last line (the process died mid-write) is skipped quietly. A damaged line in the
    middle is skipped with a warning: it is what a torn line becomes once the next run has
    appended after it, and one bad line must not make the whole record unreadable.
    """
    path = Path(path)
    with open(path, "rb") as fh:
        for lineno, raw in enumerate(fh, 1):
            complete = raw.endswith(b"\n")
            text = raw.strip()
            if not text:
                continue
            try:
                obj = json.loads(text.decode("utf-8"))
            except (UnicodeDecodeError, ValueError, RecursionError):
                obj = None
            if not isinstance(obj, dict):
                if complete:
                    log.warning("journal line skipped (not a JSON object) path=%s line=%d", path, lineno)
                else:
                    log.debug("journal torn last line skipped path=%s line=%d", path, lineno)
                continue
            yield obj
