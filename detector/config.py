"""The daemon's typed configuration: parsed and validated once at start, then passed down.

Why it looks the way it does:

- Every model forbids unknown keys (`extra="forbid"`): a typo such as `enter_treshold` would
  otherwise silently fall back to the default and the operator would never know.
- Validation reports *every* error at once, each with its key path (`channels[1].name`) and
  the YAML line it came from, so a broken config is fixed in one edit, not one per restart.
  Cross-field rules are field validators that look at fields validated before them, so they
  still run when an unrelated key elsewhere is wrong.
- Relative paths resolve against the config file's directory, never the process's working
  directory, so the same file means the same thing from a shell, a test or systemd.
- Source URLs may carry credentials (`rtsp://user:pass@cam/...`, SRT `passphrase=`), so
  everything this module prints or puts into an error goes through `redact`.
- YAML is read with the safe loader only (no tags that build Python objects, no `eval`).

No other module reads YAML or the environment: they receive a `Config` (or a section of it).
"""

from __future__ import annotations

import difflib
import os
import re
from pathlib import Path
from typing import TYPE_CHECKING, Annotated, Any, Literal, Union, get_args, get_origin
from urllib.parse import urlsplit

import yaml
from pydantic import (AfterValidator, BaseModel, BeforeValidator, ConfigDict, Field, PrivateAttr, Strict,
                      ValidationError, ValidationInfo, field_validator, model_validator)

from detector.errors import UsageError

if TYPE_CHECKING:
    from detector.analysis.decision import DecisionSettings

__all__ = [
    "CaptureConfig", "ChannelConfig", "Config", "ConfigError", "CurveConfig", "DecisionConfig", "EventsConfig",
    "InferenceConfig", "MetricsConfig", "dump_resolved", "load_config", "parse_config", "redact",
    "redact_text", "source_kind",
]

ErrorEntry = tuple[str, Union[int, None], str]
"""(key path such as "channels[1].name" or "" for the whole file, YAML line or None, message)."""


# --------------------------------------------------------------------------- errors

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


# --------------------------------------------------------------------------- secrets

_SCHEME_RE = re.compile(r"^([A-Za-z][A-Za-z0-9+.-]*)://")
# userinfo up to the last '@' before the path; a fallback for passwords with a raw '/' in them
_USERINFO_RE = re.compile(r"^(?P<user>[^:/?#@]*):(?P<password>[^/?#]*)@")
_USERINFO_LOOSE_RE = re.compile(r"^(?P<user>[^:/?#@]*):(?P<password>[^?#]*)@")
_SECRET_PARAM_RE = re.compile(
    r"(?i)([?&;](?:pass|passwd|password|passphrase|pwd|secret|token|access_token|auth|key|apikey|api_key|sig|signature)=)[^&;#]*")
_URL_IN_TEXT_RE = re.compile(r"[A-Za-z][A-Za-z0-9+.-]*://\S+")


def redact(url: str) -> str:
    """`url` with its password (and secret-looking query values, e.g. SRT's `passphrase`) as `***`.

    Errs on the side of hiding too much: a password containing a raw `/` or `@` is still
    hidden entirely, at the price of sometimes hiding part of the host in such odd URLs.
    Strings that are not URLs (file paths) come back unchanged.
    """
    m = _SCHEME_RE.match(url)
    if not m:
        return url
    head, rest = url[:m.end()], url[m.end():]
    # greedy to the last "@" before any ?/#: a raw "@" or "/" inside a password must not leak its tail
    u = _USERINFO_LOOSE_RE.match(rest) or _USERINFO_RE.match(rest)
    if u:
        rest = f"{u.group('user')}:***@{rest[u.end():]}"
    rest = _SECRET_PARAM_RE.sub(r"\1***", rest)
    return head + rest


def redact_text(text: str) -> str:
    """`text` with every URL in it redacted (for messages that may quote a user's value).

    A URL runs to the next whitespace, so a quote inside a password cannot end it early.
    """
    return _URL_IN_TEXT_RE.sub(lambda m: redact(m.group(0)), text)


# --------------------------------------------------------------------------- sources

_SOURCE_SCHEMES = {"rtsp": "rtsp", "rtsps": "rtsp", "rtmp": "rtmp", "rtmps": "rtmp", "udp": "udp", "srt": "srt",
                   "http": "http", "https": "http"}
_DEVICE_RE = re.compile(r"^/dev/video[0-9]+$")


def source_kind(source: str) -> str:
    """What kind of input a channel's `source` is: "rtsp" | "rtmp" | "udp" | "srt" | "http" | "file" | "device".

    `http` covers HLS (http:// and https://). `/dev/videoN` is a V4L2 capture device; any other
    string without a `scheme://` is a file path. Raises ValueError for an empty source or a
    scheme the capture code does not handle (so a typo like `rstp://` is caught at start).
    """
    if not source or not source.strip():
        raise ValueError("empty source")
    m = _SCHEME_RE.match(source)
    if m:
        scheme = m.group(1).lower()
        if scheme not in _SOURCE_SCHEMES:
            known = ", ".join(f"{s}://" for s in _SOURCE_SCHEMES)
            raise ValueError(f"unsupported source scheme '{scheme}://' (expected {known}, a file path or /dev/videoN)")
        return _SOURCE_SCHEMES[scheme]
    if _DEVICE_RE.match(source):
        return "device"
    return "file"


# --------------------------------------------------------------------------- field types

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


# --------------------------------------------------------------------------- sections

class ChannelConfig(_Model):
    """One live input. `source` comes out resolved: file paths are absolute."""

    name: StrictStr
    source: StrictStr
    realtime: StrictBool = False

    @field_validator("name")
    @classmethod
    def _check_name(cls, v: str) -> str:
        # names become ZeroMQ topics, metric labels and file names: keep them plain
        if not _NAME_RE.match(v):
            raise ValueError(f"invalid channel name {v!r}: use 1-64 characters from A-Z a-z 0-9 _ -")
        return v

    @field_validator("source")
    @classmethod
    def _check_source(cls, v: str, info: ValidationInfo) -> str:
        if "\0" in v:
            raise ValueError("source contains a NUL character")
        kind = source_kind(v)
        if kind == "file":
            path = _resolve(v, info)
            # a missing file never appears later (unlike a network stream): fail at start
            try:
                if not path.exists():
                    raise ValueError(f"file not found: {path}")
                if not path.is_file():
                    raise ValueError(f"not a regular file: {path}")
            except OSError as exc:
                raise ValueError(f"cannot access {path}: {exc.strerror}") from None
            return str(path)
        if kind != "device":
            # reachability is not checked (a stream down at start is retried), only the form
            try:
                parts = urlsplit(v)
                if parts.port is not None:
                    _port(str(parts.port))
            except ValueError as exc:
                raise ValueError(f"malformed URL {redact(v)!r}: {exc}") from None
            if not parts.netloc:
                raise ValueError(f"URL has no host: {redact(v)!r}")
        return v

    @field_validator("realtime")
    @classmethod
    def _check_realtime(cls, v: bool, info: ValidationInfo) -> bool:
        source = info.data.get("source")
        if v and source is not None and source_kind(source) != "file":
            raise ValueError(f"realtime pacing applies to file sources only (this source is {source_kind(source)})")
        return v

    @property
    def kind(self) -> str:
        """`source_kind(self.source)`."""
        return source_kind(self.source)


class CaptureConfig(_Model):
    """Capture defaults for every channel (timeouts, reconnect back-off, ring buffer)."""

    open_timeout_seconds: Seconds = 10.0
    read_timeout_seconds: Seconds = 5.0
    stall_seconds: Seconds = 10.0
    reconnect_initial_seconds: Seconds = 1.0
    reconnect_max_seconds: Seconds = 30.0
    ring_capacity: Annotated[int, Strict(), Field(ge=1, le=4096)] = 64
    rtsp_transport: Literal["tcp", "udp"] = "tcp"

    @field_validator("reconnect_max_seconds")
    @classmethod
    def _check_backoff(cls, v: float, info: ValidationInfo) -> float:
        initial = info.data.get("reconnect_initial_seconds")
        if initial is not None and v < initial:
            raise ValueError(f"reconnect_max_seconds ({v:g}) must be >= reconnect_initial_seconds ({initial:g})")
        return v


class GpuConfig(_Model):
    """What a GPU deployment tunes (ONNX Runtime CUDA / TensorRT providers)."""

    device_id: Annotated[int, Strict(), Field(ge=0, le=64)] = 0
    fp16: StrictBool = False
    tensorrt_cache_dir: ResolvedPath | None = None
    io_binding: StrictBool = True


class InferenceConfig(_Model):
    """Which engine runs the graphs, at which precision, and cross-channel batching."""

    engine: Literal["auto", "onnxruntime", "openvino"] = "auto"
    precision: Literal["auto", "fp32", "bf16", "int8"] = "auto"
    providers: Annotated[list[StrictStr], Field(min_length=1)] = ["CUDAExecutionProvider", "CPUExecutionProvider"]
    batch_size: Annotated[int, Strict(), Field(ge=1, le=256)] = 16
    max_batch_delay_ms: Annotated[int, Strict(), Field(ge=0, le=10000)] = 100
    require_gpu: StrictBool = False
    threads: Annotated[int, Strict(), Field(ge=0, le=1024)] = 0
    call_timeout_seconds: Seconds = 30.0
    gpu: GpuConfig = Field(default_factory=GpuConfig)

    def gpu_options(self) -> Any:
        from detector.model.inference import GpuOptions

        return GpuOptions(device_id=self.gpu.device_id, fp16=self.gpu.fp16, tensorrt_cache_dir=self.gpu.tensorrt_cache_dir,
                          io_binding=self.gpu.io_binding, max_batch=self.batch_size)

    @field_validator("providers", mode="before")
    @classmethod
    def _one_provider_is_a_list(cls, v: Any) -> Any:
        # `providers: CPUExecutionProvider` is an obvious intent; accept it as a one-item list
        return [v] if isinstance(v, str) else v

    @field_validator("providers")
    @classmethod
    def _check_providers(cls, v: list[str]) -> list[str]:
        for i, name in enumerate(v):
            if not _PROVIDER_RE.match(name):
                raise _KeyedError((i,), f"{name!r} is not an ONNX Runtime provider name (like CPUExecutionProvider)")
            if name in v[:i]:
                raise _KeyedError((i,), f"{name} listed twice")
        return v

    @field_validator("require_gpu")
    @classmethod
    def _check_require_gpu(cls, v: bool, info: ValidationInfo) -> bool:
        providers = info.data.get("providers")
        if v and providers is not None and all(p == "CPUExecutionProvider" for p in providers):
            raise ValueError("require_gpu is true but inference.providers lists only CPUExecutionProvider")
        return v


class DecisionConfig(_Model):
    """Smoothing and hysteresis (see detector.analysis.decision) plus how often a window is judged."""

    enter_threshold: Annotated[float, Strict(), Field(ge=0, le=1)] = 0.7
    exit_threshold: Annotated[float, Strict(), Field(ge=0, le=1)] = 0.3
    min_segment_seconds: Annotated[float, Strict(), Field(ge=0, le=86400)] = 3.0
    smoothing_windows: Annotated[int, Strict(), Field(ge=1, le=1000)] = 2
    hop_seconds: Annotated[float, Strict(), Field(gt=0, le=3600)] = 1.0

    @field_validator("exit_threshold")
    @classmethod
    def _check_hysteresis(cls, v: float, info: ValidationInfo) -> float:
        enter = info.data.get("enter_threshold")
        if enter is not None and v > enter:
            raise ValueError(f"exit_threshold ({v:g}) must be <= enter_threshold ({enter:g})")
        return v

    def to_settings(self) -> DecisionSettings:
        """The pure decider's settings (hop_seconds belongs to the engine, not the decider)."""
        from detector.analysis.decision import DecisionSettings   # numpy: not needed just to check a config

        return DecisionSettings(enter_threshold=self.enter_threshold, exit_threshold=self.exit_threshold,
                                min_segment_seconds=self.min_segment_seconds, smoothing_windows=self.smoothing_windows)


def _check_zmq_endpoint(v: str, info: ValidationInfo) -> str:
    """tcp://host:port (host may be * or [ipv6]) or ipc://path; relative ipc paths resolve like any path."""
    if _TCP_RE.match(v):
        _port(_TCP_RE.match(v).group("port"))  # type: ignore[union-attr]
        return v
    if v.startswith("ipc://"):
        path = v[len("ipc://"):]
        if not path or "\0" in path:
            raise ValueError("ipc:// endpoint needs a socket path")
        if not path.startswith("@"):          # '@name' is Linux's abstract namespace: no file
            path = str(_resolve(path, info))
        if len(path.encode()) > _IPC_MAX_PATH:
            raise ValueError(f"ipc socket path longer than {_IPC_MAX_PATH} bytes: {path}")
        return "ipc://" + path
    raise ValueError(f"expected tcp://HOST:PORT or ipc://PATH, got {v!r}")


ZmqEndpoint = Annotated[StrictStr, AfterValidator(_check_zmq_endpoint)]


def _key_check(check: Any) -> Any:
    """A validator running a detector.events.curve key-file check; its one-line message is the error."""
    def validate(v: Path) -> Path:
        from detector.events import curve as security
        try:
            check(security, v)
        except security.KeyFileError as exc:
            raise ValueError(str(exc)) from None
        return v
    return AfterValidator(validate)


class CurveConfig(_Model):
    """ZeroMQ CURVE encryption + client authentication for both event sockets (README "Security").

    Only paths live here, never key material, so dumps and errors cannot leak a secret.
    """

    server_secret_key: Annotated[ResolvedPath, _key_check(lambda sec, p: sec.load_secret_certificate(p))]
    allowed_clients_dir: Annotated[ResolvedPath, _key_check(lambda sec, p: sec.check_allowed_clients_dir(p))]


class EventsConfig(_Model):
    """ZeroMQ publisher, snapshot service and the append-only journal."""

    bind: ZmqEndpoint = "tcp://127.0.0.1:5556"
    snapshot_bind: ZmqEndpoint = "tcp://127.0.0.1:5557"
    heartbeat_seconds: Annotated[float, Strict(), Field(gt=0, le=3600)] = 5.0
    journal: ResolvedPath = Path("events.jsonl")
    # rotation by size: events.jsonl -> .1 ... .journal_keep; a replay reads them oldest first
    journal_max_bytes: Annotated[int, Strict(), Field(ge=1024, le=2**40)] = 64 * 1024 * 1024
    journal_keep: Annotated[int, Strict(), Field(ge=1, le=1000)] = 5
    send_hwm: Annotated[int, Strict(), Field(ge=1, le=10_000_000)] = 1000
    curve: CurveConfig | None = None

    @field_validator("snapshot_bind")
    @classmethod
    def _check_distinct(cls, v: str, info: ValidationInfo) -> str:
        bind = info.data.get("bind")
        if bind is None:
            return v
        a, b = _tcp_endpoint(bind), _tcp_endpoint(v)
        if v == bind or (a and b and _overlap(a, b)):
            raise ValueError(f"snapshot_bind {v} clashes with events.bind {bind}")
        return v


class MetricsConfig(_Model):
    """Prometheus /metrics and /healthz over HTTP."""

    bind: StrictStr = "127.0.0.1:9108"

    @field_validator("bind")
    @classmethod
    def _check_bind(cls, v: str) -> str:
        m = _HOSTPORT_RE.match(v)
        if not m:
            raise ValueError(f"expected HOST:PORT (e.g. 127.0.0.1:9108 or [::1]:9108), got {v!r}")
        _port(m.group("port"))
        return v

    @property
    def host(self) -> str:
        """The address to listen on (IPv6 without brackets, as http.server wants it)."""
        return _HOSTPORT_RE.match(self.bind).group("host").strip("[]")  # type: ignore[union-attr]

    @property
    def port(self) -> int:
        return int(_HOSTPORT_RE.match(self.bind).group("port"))  # type: ignore[union-attr]


def _duplicate_name_errors(channels: Any) -> list[tuple[tuple[str | int, ...], str]]:
    """Every repeated channel name, at its later position, naming the first one.

    Works on raw (unvalidated) data too, so duplicates are reported even when another
    channel has an error that stops the whole list from validating.
    """
    if not isinstance(channels, list):
        return []
    first: dict[str, int] = {}
    out = []
    for i, ch in enumerate(channels):
        name = ch.get("name") if isinstance(ch, dict) else getattr(ch, "name", None)
        if not isinstance(name, str):
            continue
        if name in first:
            out.append((("channels", i, "name"), f"duplicate channel name {name!r} (also channels[{first[name]}].name)"))
        else:
            first[name] = i
    return out


_SECTIONS = ("capture", "inference", "decision", "events", "metrics")


class Config(_Model):
    """The whole daemon configuration. `source_path` is the file it came from (not part of dumps)."""

    model: ResolvedPath
    channels: Annotated[list[ChannelConfig], Field(min_length=1)]
    capture: CaptureConfig = Field(default_factory=CaptureConfig)
    inference: InferenceConfig = Field(default_factory=InferenceConfig)
    decision: DecisionConfig = Field(default_factory=DecisionConfig)
    events: EventsConfig = Field(default_factory=EventsConfig)
    metrics: MetricsConfig = Field(default_factory=MetricsConfig)

    _source_path: Path | None = PrivateAttr(default=None)

    @model_validator(mode="before")
    @classmethod
    def _empty_sections_are_defaults(cls, data: Any) -> Any:
        # `decision:` with every key commented out is YAML null: it means "all defaults", not an
        # error. Absent sections are validated from {} rather than taken as prebuilt defaults so
        # their relative paths (events.journal) resolve against this config's directory.
        if isinstance(data, dict):
            data = {k: ({} if k in _SECTIONS and v is None else v) for k, v in data.items()}
            for section in _SECTIONS:
                data.setdefault(section, {})
        return data

    @field_validator("channels")
    @classmethod
    def _unique_names(cls, v: list[ChannelConfig]) -> list[ChannelConfig]:
        dups = _duplicate_name_errors(v)
        if dups:
            loc, message = dups[0]
            raise _KeyedError(loc[1:], message)
        return v

    @field_validator("metrics")
    @classmethod
    def _metrics_port_free(cls, v: MetricsConfig, info: ValidationInfo) -> MetricsConfig:
        events = info.data.get("events")
        if events is None:
            return v
        m = _HOSTPORT_RE.match(v.bind)
        mine = (m.group("host"), int(m.group("port"))) if m else None
        for key in ("bind", "snapshot_bind"):
            other = _tcp_endpoint(getattr(events, key))
            if mine and other and _overlap(mine, other):
                raise _KeyedError(("bind",), f"port {mine[1]} is also used by events.{key}")
        return v

    @property
    def source_path(self) -> Path | None:
        """The config file this was loaded from (absolute), None when parsed from a string."""
        return self._source_path


# --------------------------------------------------------------------------- loading

def _line_map(root: yaml.Node | None) -> tuple[dict[tuple[str | int, ...], int], list[ErrorEntry]]:
    """Key path -> 1-based YAML line, plus duplicate-key errors (which PyYAML silently resolves).

    A mapping entry maps to its key's line, a list item to the item's first line. Each node is
    visited once, so aliases (even recursive ones or "billion laughs") cannot blow up the walk.
    Iterative, so deeply nested input cannot exhaust the stack.
    """
    lines: dict[tuple[str | int, ...], int] = {}
    errors: list[ErrorEntry] = []
    seen: set[int] = set()
    stack: list[tuple[yaml.Node, tuple[str | int, ...]]] = [(root, ())] if root is not None else []
    while stack:
        node, path = stack.pop()
        if id(node) in seen:
            continue
        seen.add(id(node))
        if isinstance(node, yaml.MappingNode):
            first_line: dict[str, int] = {}
            pairs = list(node.value)
            for key_node, value_node in pairs:
                if key_node.tag == "tag:yaml.org,2002:merge":
                    # `<<: *defaults`: the merged keys belong to this mapping
                    merged = value_node.value if isinstance(value_node, yaml.SequenceNode) else [value_node]
                    stack.extend((m, path) for m in merged if isinstance(m, yaml.MappingNode))
                    continue
                if not isinstance(key_node, yaml.ScalarNode):
                    continue
                key = key_node.value
                line = key_node.start_mark.line + 1
                if key in first_line:
                    errors.append((_format_path((*path, key)), line, f"duplicate key (first on line {first_line[key]})"))
                else:
                    first_line[key] = line
                    lines.setdefault((*path, key), line)
                stack.append((value_node, (*path, key)))
        elif isinstance(node, yaml.SequenceNode):
            for i, item in enumerate(node.value):
                lines.setdefault((*path, i), item.start_mark.line + 1)
                stack.append((item, (*path, i)))
    return lines, errors


def _format_path(loc: tuple[Any, ...] | list[Any]) -> str:
    """('channels', 1, 'name') -> 'channels[1].name'."""
    out = ""
    for part in loc:
        if isinstance(part, int) and not isinstance(part, bool):
            out += f"[{part}]"
        else:
            out += ("." if out else "") + str(part)
    return out


def _line_for(loc: tuple[Any, ...], lines: dict[tuple[str | int, ...], int]) -> int | None:
    """The line of `loc`, else of its nearest ancestor present in the file (a missing key's
    mapping); None when only the document itself contains it."""
    for n in range(len(loc), 0, -1):
        line = lines.get(tuple(loc[:n]))
        if line is not None:
            return line
    return None


def _model_at(loc: tuple[Any, ...]) -> type[BaseModel] | None:
    """The model class whose keys live at `loc` (for 'did you mean' hints)."""
    current: Any = Config
    for part in loc:
        if isinstance(part, int):
            continue
        if not (isinstance(current, type) and issubclass(current, BaseModel)):
            return None
        field = current.model_fields.get(part)
        if field is None:
            return None
        current = field.annotation
        while get_origin(current) in (list, Annotated, Union) or type(current).__name__ == "UnionType":
            args = [a for a in get_args(current) if a is not type(None)]
            current = args[0] if args else None
    return current if isinstance(current, type) and issubclass(current, BaseModel) else None


def _unknown_key_hint(loc: tuple[Any, ...]) -> str:
    key = loc[-1] if loc else None
    model = _model_at(loc[:-1])
    if not isinstance(key, str) or model is None:
        return "unknown key"
    close = difflib.get_close_matches(key, list(model.model_fields), n=1, cutoff=0.6)
    if close:
        return f"unknown key; did you mean {close[0]!r}?"
    for section in _SECTIONS:
        cls = _model_at((section,))
        if cls is not None and cls is not model and key in cls.model_fields:
            return f"unknown key here; it belongs in the {section} section"
    return f"unknown key (allowed: {', '.join(model.model_fields)})"


def _describe(value: Any) -> str:
    """A short, redacted rendering of the offending value."""
    if isinstance(value, (str, int, float, bool)) or value is None:
        # redact the value itself before quoting and shortening it, so neither can split a URL
        text = repr(redact(value) if isinstance(value, str) else value)
        if len(text) > 60:
            text = text[:57] + "..."
        return redact_text(text)
    return f"a {'mapping' if isinstance(value, dict) else 'list' if isinstance(value, list) else type(value).__name__}"


def _message(err: dict[str, Any]) -> tuple[tuple[Any, ...], str]:
    """A pydantic error as (location, one-line message for an operator)."""
    loc = tuple(err.get("loc", ()))
    kind = err.get("type", "")
    ctx = err.get("ctx") or {}
    cause = ctx.get("error")
    value = err.get("input")
    if isinstance(cause, _KeyedError):
        return loc + cause.key, str(cause)
    if kind in ("value_error", "assertion_error") and cause is not None:
        return loc, str(cause)
    if kind == "extra_forbidden":
        return loc, _unknown_key_hint(loc)
    if kind == "missing":
        return loc, "required key missing"
    if kind == "invalid_key":
        return loc[:-1], f"keys must be text, got {_describe(loc[-1] if loc else value)}"
    if kind in ("model_type", "model_attributes_type", "dict_type"):
        return loc, f"expected a mapping of keys, got {_describe(value)}"
    if kind == "path_type":
        return loc, f"expected a path, got {_describe(value)}"
    if kind == "list_type":
        return loc, f"expected a list, got {_describe(value)}"
    msg = str(err.get("msg", "invalid value"))
    msg = msg[:1].lower() + msg[1:]
    hint = ""
    if kind == "string_type" and isinstance(value, (bool, int, float)):
        hint = "; quote it if you meant text"
    return loc, f"{msg} (got {_describe(value)}{hint})"


def _yaml_error(exc: Exception, text: str) -> ErrorEntry:
    """A YAML syntax or construction error as an entry, without PyYAML's source snippet (it may
    quote a line holding a password)."""
    if isinstance(exc, yaml.MarkedYAMLError):
        mark = exc.problem_mark or exc.context_mark
        context = exc.context
        if context and exc.context_mark is not None and exc.problem_mark is not None \
                and exc.context_mark.line != exc.problem_mark.line:
            context += f" (line {exc.context_mark.line + 1})"
        parts = [p for p in (context, exc.problem) if p]
        return "", (mark.line + 1 if mark else None), redact_text("invalid YAML: " + ", ".join(parts or ["syntax error"]))
    if isinstance(exc, yaml.reader.ReaderError):
        line = text.count("\n", 0, max(0, exc.position)) + 1
        return "", line, f"invalid YAML: character #x{exc.character:04x} is not allowed"
    return "", None, redact_text(f"invalid YAML: {exc}")


def parse_config(text: str, origin: str = "<string>", base_dir: Path | None = None) -> Config:
    """Validate config text. Relative paths resolve against `base_dir` (default: the working directory).

    Raises ConfigError listing every problem found; never any other exception for any input text.
    """
    loader: yaml.SafeLoader | None = None
    try:
        loader = yaml.SafeLoader(text)      # the reader already rejects control characters here
        root = loader.get_single_node()
        # map lines before constructing: construction flattens `<<` merges into the node tree
        lines, errors = _line_map(root)
        data = loader.construct_document(root) if root is not None else None
    except yaml.YAMLError as exc:
        raise ConfigError(origin, [_yaml_error(exc, text)]) from None
    except RecursionError:
        raise ConfigError(origin, [("", None, "invalid YAML: nested too deeply")]) from None
    except Exception as exc:  # noqa: BLE001
        # PyYAML's constructors raise plain Python errors on some malformed values (a timestamp
        # like 2024-13-45: ValueError; an empty `!!int`: IndexError). Still the user's input.
        raise ConfigError(origin, [("", None, redact_text(f"invalid YAML value: {exc or type(exc).__name__}"))]) from None
    finally:
        if loader is not None:
            loader.dispose()

    if data is None:
        raise ConfigError(origin, [("", None, "empty config: expected a mapping with at least `model` and `channels`")])
    if not isinstance(data, dict):
        raise ConfigError(origin, [("", root.start_mark.line + 1 if root is not None else None,
                                    f"the top level must be a mapping of keys, got {_describe(data)}")])

    context = {"base_dir": Path(os.path.abspath(base_dir)) if base_dir is not None else Path.cwd()}
    located: list[tuple[tuple[Any, ...], str]] = []
    config: Config | None = None
    try:
        config = Config.model_validate(data, context=context)
    except ValidationError as exc:
        located.extend(_message(e) for e in exc.errors())
    except RecursionError:
        errors.append(("", None, "nested too deeply"))
    located.extend(_duplicate_name_errors(data.get("channels")))

    seen: set[tuple[str, str]] = {(p, m) for p, _, m in errors}
    for loc, message in located:
        key = (_format_path(loc), redact_text(message))
        if key not in seen:
            seen.add(key)
            errors.append((key[0], _line_for(loc, lines), key[1]))
    if errors or config is None:
        errors.sort(key=lambda e: (e[1] is None, e[1] or 0, e[0]))
        raise ConfigError(origin, errors or [("", None, "invalid config")])
    return config


def load_config(path: Path | str) -> Config:
    """Read and validate a config file; relative paths in it resolve against its directory."""
    path = Path(path)
    origin = str(path)
    try:
        text = path.read_bytes().decode("utf-8")
    except FileNotFoundError:
        raise ConfigError(origin, [("", None, "not found")]) from None
    except IsADirectoryError:
        raise ConfigError(origin, [("", None, "is a directory, not a config file")]) from None
    except UnicodeDecodeError as exc:
        raise ConfigError(origin, [("", None, f"not UTF-8 text (byte {exc.start})")]) from None
    except OSError as exc:
        raise ConfigError(origin, [("", None, f"cannot read: {exc.strerror or exc}")]) from None
    absolute = Path(os.path.abspath(path))
    config = parse_config(text, origin=origin, base_dir=absolute.parent)
    config._source_path = absolute
    return config


def dump_resolved(cfg: Config) -> str:
    """The config as the daemon will use it, as YAML: defaults filled in, paths absolute,
    passwords in source URLs replaced by `***` (so the output is safe to paste into a ticket)."""
    data = cfg.model_dump(mode="json")
    for channel in data["channels"]:
        channel["source"] = redact(channel["source"])
    origin = f" from {cfg.source_path}" if cfg.source_path is not None else ""
    header = f"# ad-detector: resolved configuration{origin}\n"
    return header + yaml.safe_dump(data, sort_keys=False, default_flow_style=False, allow_unicode=True)
