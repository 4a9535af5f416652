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
- Rotation by size (`max_bytes`, `keep`): before a line would take the file past `max_bytes`,
  `events.jsonl` becomes `events.jsonl.1`, `.1` becomes `.2` ... and `.keep` is deleted. Lines
  are never split across files, so every file stays a valid JSON-lines file on its own.
- `replay` reads the rotated files oldest first, so a subscriber that lost events (a network
  gap, its own restart, the daemon's restart) can get them back from the record, across runs
  and rotations, in the order they were published.
"""

from __future__ import annotations

import json
import logging
import mmap
import os
import re
from collections.abc import Callable, Iterator, Mapping
from dataclasses import dataclass, field
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


DEFAULT_MAX_BYTES = 64 * 1024 * 1024
DEFAULT_KEEP = 5
PAUSE_EVERY = 256   # lines between two `pause()` calls of a replay (about a millisecond of parsing)


class Journal:
    """Appends events as JSON lines, rotating by size. Not thread-safe: the publisher thread owns it.

    `max_bytes=None` never rotates (an external logrotate may still move the file away).
    """

    def __init__(self, path: Path, fsync: bool = True, max_bytes: int | None = DEFAULT_MAX_BYTES,
                 keep: int = DEFAULT_KEEP) -> None:
        if max_bytes is not None and max_bytes < 1:
            raise ValueError(f"max_bytes must be >= 1 or None, got {max_bytes!r}")
        if keep < 1:
            raise ValueError(f"keep must be >= 1, got {keep!r}")
        self.path = Path(path)
        self.fsync = fsync
        self.max_bytes = max_bytes
        self.keep = int(keep)
        self._fd: int | None = None
        self._identity: tuple[int, int] | None = None  # (st_dev, st_ino) of the open file
        self._size = 0

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
        self._size = os.fstat(fd).st_size

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
            if self.max_bytes is not None and self._size > 0 and self._size + len(line) > self.max_bytes:
                self._rotate()
            assert self._fd is not None
            try:
                _write_all(self._fd, line)
            finally:
                self._size = os.fstat(self._fd).st_size  # a short write counts too
            if self.fsync:
                os.fsync(self._fd)
        except OSError as exc:
            self.close()
            raise JournalError(self.path, exc) from exc

    def _rotate(self) -> None:
        """events.jsonl -> .1 -> .2 ... -> .keep (deleted); then a fresh events.jsonl.

        Renames only, no copying: it works on a full disk too, and a reader that has a file
        open keeps reading the same events under its new name.
        """
        self.close()
        oldest = rotated_path(self.path, self.keep)
        if oldest.exists():
            oldest.unlink()
        for n in range(self.keep - 1, 0, -1):
            src = rotated_path(self.path, n)
            if src.exists():
                os.replace(src, rotated_path(self.path, n + 1))
        os.replace(self.path, rotated_path(self.path, 1))
        log.info("journal rotated path=%s keep=%d max_bytes=%d", self.path, self.keep, self.max_bytes or 0)
        self._open()

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


def rotated_path(path: Path, n: int) -> Path:
    """`events.jsonl.N`, the N-th newest rotated file."""
    return path.with_name(f"{path.name}.{n}")


def journal_files(path: Path) -> list[Path]:
    """The journal's files that exist, oldest first: events.jsonl.N ... events.jsonl.1, events.jsonl.

    Every numeric suffix is included (also beyond the current `keep`, e.g. after lowering it),
    so a replay never silently skips a file that is still on disk.
    """
    path = Path(path)
    pattern = re.compile(re.escape(path.name) + r"\.([1-9][0-9]*)\Z")
    rotated: list[tuple[int, Path]] = []
    try:
        names = os.listdir(path.parent)
    except OSError:
        names = []
    for name in names:
        m = pattern.match(name)
        if m:
            rotated.append((int(m.group(1)), path.parent / name))
    files = [p for _, p in sorted(rotated, reverse=True)]
    if path.exists():
        files.append(path)
    return files


def _reject_constant(name: str) -> Any:
    raise ValueError(f"{name} is not JSON")


def parse_line(raw: bytes) -> dict[str, Any] | None:
    """One journal line as an event object, or None when it is not a JSON object in UTF-8.

    Stricter than json.loads, which also takes NaN/Infinity and lone UTF-16 surrogates
    (`"\\ud800"`): our writer never produces those (allow_nan=False, UTF-8), so a line holding
    them was damaged or edited by hand, and passing it on would break every reply and
    subscriber that re-encodes it.
    """
    try:
        obj = json.loads(raw, parse_constant=_reject_constant)
    except (UnicodeDecodeError, ValueError, RecursionError):
        return None
    if not isinstance(obj, dict):
        return None
    if b"\\u" in raw:  # only escapes can smuggle in a lone surrogate: check those lines alone
        try:
            json.dumps(obj, ensure_ascii=False).encode("utf-8")
        except (UnicodeEncodeError, ValueError):
            return None
    return obj


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
            obj = parse_line(text)
            if obj is None:
                if complete:
                    log.warning("journal line skipped (not a JSON object) path=%s line=%d", path, lineno)
                else:
                    log.debug("journal torn last line skipped path=%s line=%d", path, lineno)
                continue
            yield obj


@dataclass
class ReplayResult:
    """What `replay` found. `found` is False when `run_id` is in none of the files (rotated
    away, or never journaled); `events` is then empty and `oldest` says where the record begins."""

    events: list[dict[str, Any]] = field(default_factory=list)
    complete: bool = True
    found: bool = True
    oldest: dict[str, Any] | None = None


def _run_marker(run_id: str) -> bytes:
    # how Journal.append (compact separators) writes the field; used only as a fast prefilter,
    # every candidate line is still parsed and compared
    return b'"run_id":' + json.dumps(run_id, ensure_ascii=False, separators=(",", ":")).encode("utf-8")


def _lines_from(path: Path, start_marker: bytes | None, pause: Callable[[], None] | None = None,
                skip: Callable[[bytes], bool] | None = None) -> Iterator[dict[str, Any]]:
    """Parsed complete lines of one file, from the first line containing `start_marker` (all
    lines when None). A last line without its newline is being written right now: not yet an event.
    `pause()` is called every PAUSE_EVERY lines (see `replay`); lines `skip` accepts are not parsed."""
    try:
        fh = open(path, "rb")
    except FileNotFoundError:
        return  # rotated away between listing and opening
    with fh:
        offset = 0
        if start_marker is not None:
            size = os.fstat(fh.fileno()).st_size
            if size == 0:
                return
            with mmap.mmap(fh.fileno(), 0, access=mmap.ACCESS_READ) as mm:
                hit = mm.find(start_marker)
                if hit < 0:
                    return
                offset = mm.rfind(b"\n", 0, hit) + 1
        fh.seek(offset)
        for n, raw in enumerate(fh, 1):
            if pause is not None and n % PAUSE_EVERY == 0:
                pause()
            if not raw.endswith(b"\n"):
                return
            if skip is not None and skip(raw):
                continue
            obj = parse_line(raw)
            if obj is not None:  # else a torn fragment or a damaged line: read_journal explains those
                yield obj


def replay(path: Path, run_id: str, after_seq: int, limit: int, pause: Callable[[], None] | None = None) -> ReplayResult:
    """Journaled events after (`run_id`, `after_seq`): the rest of that run, then every later
    run, in journal order (oldest rotated file first), at most `limit` of them.

    `complete` is False when more events follow (ask again from the last one returned).
    Reads files while the publisher may append: a line is complete once its newline is there.
    A long run means parsing up to every line of every file (seconds); `pause`, called every
    PAUSE_EVERY lines, lets the caller step aside for more urgent threads meanwhile.
    """
    files = journal_files(Path(path))
    result = ReplayResult()
    marker = _run_marker(run_id)
    started = False

    def already_had(raw: bytes) -> bool:  # once in the run, its lines up to after_seq by their bytes alone
        return started and _at_or_before(raw, marker, after_seq)

    for file in files:
        for event in _lines_from(file, None if started else marker, pause, already_had):
            if not started:
                if event.get("run_id") != run_id:
                    continue  # the prefilter matched something else on this line
                started = True
            if event.get("run_id") == run_id and not _seq_after(event.get("seq"), after_seq):
                continue
            if len(result.events) >= limit:
                result.complete = False
                return result
            result.events.append(event)
    if not started:
        result.found = False
        result.oldest = _first_event_position(files)
    return result


# the envelope as Journal.append writes it (make_event's key order, compact separators)
_ENVELOPE_SEQ_RE = re.compile(rb'\{"schema":\d+,"type":"[^"\\]*","channel":"[^"\\]*","seq":(\d{1,20}),')


def _at_or_before(raw: bytes, marker: bytes, after_seq: int) -> bool:
    """True when the line is, by its bytes, an event of the marker's run with seq <= after_seq.

    Replaying the end of a long run used to parse every line of it only to drop it; matching
    the envelope's bytes skips those lines about ten times faster and without building objects.
    Lines in another layout (another writer) return False and are parsed as before.
    """
    m = _ENVELOPE_SEQ_RE.match(raw)
    return m is not None and raw.startswith(marker, m.end()) and int(m.group(1)) <= after_seq


def _seq_after(seq: Any, after: int) -> bool:
    return isinstance(seq, int) and not isinstance(seq, bool) and seq > after


def _first_event_position(files: list[Path]) -> dict[str, Any] | None:
    for file in files:
        for event in _lines_from(file, None):
            return {"run_id": event.get("run_id"), "seq": event.get("seq")}
    return None
