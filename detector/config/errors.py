"""How a broken config is reported: every problem at once, each with its key path and line.

A broken config should be fixed in one edit, not one per restart, so validation collects
every error; each names the key the user has to change (`channels[1].name`) and the YAML
line it came from, on one line of its own (a quoted value must never split a message).
"""

from __future__ import annotations

from typing import Union

from detector.errors import UsageError

ErrorEntry = tuple[str, Union[int, None], str]
"""(key path such as "channels[1].name" or "" for the whole file, YAML line or None, message)."""


class ConfigError(UsageError):
    """An invalid or unreadable config: exit 2, every problem on its own line.

    `str(exc)` is one line per error, `ORIGIN:LINE: key.path: message` (the line or key path
    left out where there is none); several errors get a first line `ORIGIN: N errors`, so the
    CLI's `ad-detector: error: ...` prefix reads well in both cases.
    """

    def __init__(self, origin: str, errors: list[ErrorEntry]):
        self.origin = _one_line(origin)
        self.errors: list[ErrorEntry] = [(_one_line(path), line, _one_line(message)) for path, line, message in errors]
        super().__init__("\n".join(self.lines()))

    def lines(self) -> list[str]:
        """The error lines, without the count header."""
        out = []
        for path, line, message in self.errors:
            where = f"{self.origin}:{line}" if line is not None else self.origin
            out.append(f"{where}: {path}: {message}" if path else f"{where}: {message}")
        return out

    def __str__(self) -> str:
        lines = self.lines()
        if len(lines) > 1:
            return "\n".join([f"{self.origin}: {len(lines)} errors", *lines])
        return "\n".join(lines)


def _one_line(text: str) -> str:
    r"""`text` with control and other non-printable characters escaped: a key or value quoted in
    a message must not split it (str.splitlines also breaks at \x1c-\x1e, \x85, \u2028...)."""
    if text.isprintable():
        return text
    return "".join(c if c.isprintable() else repr(c)[1:-1] for c in text)


class _KeyedError(ValueError):
    """A validator's error that belongs to a key below the one being validated.

    Pydantic places a validator's error at the validated field; `key` (relative to that
    location) moves it to the key the user has to change, e.g. `metrics.bind` instead of `metrics`.
    """

    def __init__(self, key: tuple[str | int, ...], message: str):
        super().__init__(message)
        self.key = key


