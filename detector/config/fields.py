"""Field types and checks the config sections share: paths, seconds, endpoints, ports.

Relative paths resolve against the config file's directory, never the process's working
directory, so the same file means the same thing from a shell, a test or systemd.
"""

from __future__ import annotations

import os
import re
from pathlib import Path
from typing import Annotated, Any

from pydantic import AfterValidator, BaseModel, BeforeValidator, ConfigDict, Field, Strict, ValidationInfo

def _base_dir(info: ValidationInfo) -> Path:
    """The directory relative paths resolve against: the config file's, else the working directory."""
    ctx = info.context if isinstance(info.context, dict) else {}
    base = ctx.get("base_dir")
    return Path(base) if base is not None else Path.cwd()


def _resolve(value: str | Path, info: ValidationInfo) -> Path:
    """Absolute, normalised (but symlinks kept, so dumps show what the user wrote)."""
    p = Path(os.path.expanduser(str(value)))
    if not p.is_absolute():
        p = _base_dir(info) / p
    return Path(os.path.abspath(p))


def _plain_path(value: Any) -> Any:
    """Reject empty paths and NUL bytes before they become Path('.') or an OSError later."""
    if isinstance(value, str):
        if not value.strip():
            raise ValueError("empty path")
        if "\0" in value:
            raise ValueError("path contains a NUL character")
    return value


ResolvedPath = Annotated[Path, BeforeValidator(_plain_path), AfterValidator(_resolve)]


def _resolve_state(value: str | Path, info: ValidationInfo) -> Path:
    """Like `_resolve`, but relative to the service's state directory when there is one.

    Under systemd the config directory is read-only for the service and `StateDirectory=`
    is where its state belongs (systemd passes it as $STATE_DIRECTORY; the CLI hands it in
    as `state_dir`), so a relative `events.journal` lands there and the unit and the
    default agree. Without a state directory it resolves like every other path.
    """
    ctx = info.context if isinstance(info.context, dict) else {}
    state = ctx.get("state_dir")
    p = Path(os.path.expanduser(str(value)))
    if state is not None and not p.is_absolute():
        return Path(os.path.abspath(Path(state) / p))
    return _resolve(value, info)


def writable_file_problem(path: Path) -> str | None:
    """Why the daemon could not create or append to `path`, or None (checked as the current user)."""
    if path.is_dir():
        return f"{path} is a directory; give a file path"
    if path.exists():
        return None if os.access(path, os.W_OK) else f"{path} is not writable by this user"
    parent = path.parent
    while not parent.exists() and parent != parent.parent:
        parent = parent.parent      # missing directories are created at start: the first existing one must take them
    if not parent.is_dir():
        return f"{parent} is not a directory"
    if not os.access(parent, os.W_OK | os.X_OK):
        return f"cannot create {path}: {parent} is not writable by this user"
    return None


StatePath = Annotated[Path, BeforeValidator(_plain_path), AfterValidator(_resolve_state)]
Seconds = Annotated[float, Strict(), Field(gt=0, le=86400)]
StrictStr = Annotated[str, Strict()]
StrictBool = Annotated[bool, Strict()]

_NAME_RE = re.compile(r"^[A-Za-z0-9_-]{1,64}$")
_TCP_RE = re.compile(r"^tcp://(?P<host>\*|\[[0-9A-Fa-f:.]+\]|[A-Za-z0-9][A-Za-z0-9.-]*):(?P<port>[0-9]{1,5})$")
_HOSTPORT_RE = re.compile(r"^(?P<host>\[[0-9A-Fa-f:.]+\]|[A-Za-z0-9][A-Za-z0-9.-]*):(?P<port>[0-9]{1,5})$")
_PROVIDER_RE = re.compile(r"^[A-Za-z]+ExecutionProvider$")
_WILDCARD_HOSTS = {"*", "0.0.0.0", "[::]"}
_IPC_MAX_PATH = 107   # sun_path is 108 bytes including the terminating NUL


def _port(text: str) -> int:
    port = int(text)
    if not 1 <= port <= 65535:
        raise ValueError(f"port {port} out of range 1..65535")
    return port


def _tcp_endpoint(endpoint: str) -> tuple[str, int] | None:
    """(host, port) of a tcp:// ZeroMQ endpoint, None for ipc://."""
    m = _TCP_RE.match(endpoint)
    return (m.group("host"), int(m.group("port"))) if m else None


def _overlap(a: tuple[str, int], b: tuple[str, int]) -> bool:
    """Two TCP listeners that cannot both bind: same port, and the same or a wildcard host."""
    return a[1] == b[1] and (a[0] == b[0] or a[0] in _WILDCARD_HOSTS or b[0] in _WILDCARD_HOSTS)


class _Model(BaseModel):
    """Shared model settings: unknown keys are errors, no NaN/inf, immutable once validated.

    Defaults are validated too, so a default path resolves against the config's directory
    exactly like a written one.
    """

    model_config = ConfigDict(extra="forbid", frozen=True, allow_inf_nan=False, validate_default=True)
