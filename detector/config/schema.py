"""The daemon's typed configuration: the sections and their rules (docs/CONTRACT.md "Config").

- Every model forbids unknown keys (`extra="forbid"`): a typo such as `enter_treshold` would
  otherwise silently fall back to the default and the operator would never know.
- Cross-field rules are field validators that look at fields validated before them, so they
  still run when an unrelated key elsewhere is wrong (every error is reported at once,
  detector.config.loading).
- Names with a meaning elsewhere (engines, precisions, source kinds) come from the module
  that defines them, so the schema, the CLI and the code cannot disagree.

No other module reads YAML or the environment: they receive a `Config` (or a section of it).
"""

from __future__ import annotations

import re
from pathlib import Path
from typing import TYPE_CHECKING, Annotated, Any, Literal
from urllib.parse import urlsplit

from pydantic import AfterValidator, Field, PrivateAttr, Strict, ValidationInfo, field_validator, model_validator

from detector.config.errors import _KeyedError
from detector.config.fields import (StatePath, writable_file_problem, _HOSTPORT_RE, _IPC_MAX_PATH, _NAME_RE, _PROVIDER_RE, _TCP_RE, ResolvedPath, Seconds,
                                    StrictBool, StrictStr, _Model, _overlap, _port, _resolve, _tcp_endpoint)
from detector.model.plan import Engine, Precision
from detector.sources import redact, scheme_of, source_kind
from detector.sources.support import unsupported_reason

if TYPE_CHECKING:
    from detector.analysis.decision import DecisionSettings

class OutputConfig(_Model):
    """The inline marker of a channel (detector/marker): the input re-emitted as MPEG-TS,
    `delay_seconds` later, with our SCTE-35 cues on a PID of their own, each reaching the
    output `preroll_seconds` before its splice point when the delay allows."""

    url: StrictStr
    delay_seconds: Annotated[float, Strict(), Field(ge=0, le=3600)] = 10.0
    preroll_seconds: Annotated[float, Strict(), Field(ge=0, le=600)] = 4.0
    # bound on what is held (and queued from the capture): a 10 s delay of a 20 Mbit/s feed is 25 MB
    max_buffer_mb: Annotated[float, Strict(), Field(gt=0, le=16384)] = 256.0

    @field_validator("url")
    @classmethod
    def _check_url(cls, v: str, info: ValidationInfo) -> str:
        if "\0" in v or not v.strip():
            raise ValueError("output url is empty or contains a NUL character")
        from detector.marker.destinations import output_problem
        if scheme_of(v) is None:
            v = str(_resolve(v, info))
        problem = output_problem(v)
        if problem:
            raise ValueError(problem)
        return v

    @property
    def max_buffer_bytes(self) -> int:
        return int(self.max_buffer_mb * 1024 * 1024)


class ChannelConfig(_Model):
    """One live input. `source` comes out resolved: file paths are absolute."""

    name: StrictStr
    source: StrictStr
    realtime: StrictBool = False
    output: OutputConfig | None = None

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
            why_not = unsupported_reason(scheme_of(v))
            if why_not:
                raise ValueError(why_not)      # accepted here and broken at run time would be worse
        return v

    @field_validator("realtime")
    @classmethod
    def _check_realtime(cls, v: bool, info: ValidationInfo) -> bool:
        source = info.data.get("source")
        if v and source is not None and source_kind(source) != "file":
            raise ValueError(f"realtime pacing applies to file sources only (this source is {source_kind(source)})")
        return v

    @field_validator("output")
    @classmethod
    def _check_output_input(cls, v: OutputConfig | None, info: ValidationInfo) -> OutputConfig | None:
        # the marker copies the input's own MPEG-TS packets: only inputs that are MPEG-TS bytes
        source = info.data.get("source")
        if v is None or source is None:
            return v
        from detector.marker.ts import looks_like_ts
        from detector.sources.tap import TAPPABLE_KINDS
        kind = source_kind(source)
        if kind not in TAPPABLE_KINDS:
            raise _KeyedError(("url",), f"an output needs an MPEG-TS input (a .ts file, udp:// or srt://); this source is "
                              f"{kind}, which the marker cannot copy packet for packet: remove `output` or feed the channel MPEG-TS")
        if kind == "file":
            if not info.data.get("realtime"):
                raise ValueError("an output on a file channel needs realtime: true (read at its own pace, as if live); "
                                 "to mark a recording offline use `ad-detector classify --formats scte35`")
            if v.url == source:
                raise _KeyedError(("url",), f"output {v.url} is the channel's own source file")
            try:
                with open(source, "rb") as f:
                    head = f.read(4 * 188)
            except OSError as exc:
                raise ValueError(f"cannot read {source}: {exc.strerror}") from None
            if not looks_like_ts(head):
                raise ValueError(f"{source} is not an MPEG-TS file (188-byte packets): the inline marker copies TS packets; "
                                 "remux it first (ffmpeg -i IN -c copy -f mpegts OUT.ts) or remove `output`")
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
    # a fault episode ends after this long without recurrence (an outage: once frames have flowed this long)
    fault_quiet_seconds: Seconds = 5.0
    ring_capacity: Annotated[int, Strict(), Field(ge=1, le=4096)] = 64
    rtsp_transport: Literal["tcp", "udp"] = "tcp"
    # live HLS waits a whole segment (6-10 s) for the next: its reads may take this long
    hls_read_timeout_seconds: Seconds = 30.0
    # libav's UDP receive FIFO in 188-byte TS packets (100000 = 18.8 MB, about 15 s of a 10 Mbit/s feed)
    udp_fifo_packets: Annotated[int, Strict(), Field(ge=1000, le=10_000_000)] = 100_000
    # decoder threads per channel (0: libav chooses, one per core; 1 keeps many channels from oversubscribing)
    decode_threads: Annotated[int, Strict(), Field(ge=0, le=64)] = 1
    # skip decoding non-reference frames when the source runs at 3x the analysis rate or more
    skip_nonref_frames: StrictBool = True
    # seconds of decoded audio (mono 16 kHz) kept per channel for the analysis to read
    audio_buffer_seconds: Annotated[float, Strict(), Field(ge=5, le=600)] = 60.0

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

    engine: Engine = "auto"
    precision: Precision = "auto"
    providers: Annotated[list[StrictStr], Field(min_length=1)] = ["CUDAExecutionProvider", "CPUExecutionProvider"]
    batch_size: Annotated[int, Strict(), Field(ge=1, le=256)] = 16
    max_batch_delay_ms: Annotated[int, Strict(), Field(ge=0, le=10000)] = 100
    require_gpu: StrictBool = False
    threads: Annotated[int, Strict(), Field(ge=0, le=1024)] = 0
    call_timeout_seconds: Seconds = 30.0
    gpu: GpuConfig = Field(default_factory=GpuConfig)

    def gpu_options(self) -> Any:
        from detector.model.plan import GpuOptions

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
    # how long p(ad) must stay on the new side before a change is decided: leaving an ad waits
    # 3 s so an ad shot that looks like the programme does not cut a break in two (a cue-in and a
    # cue-out mid-break); it costs ad ends ~2 s of decision latency (the boundary time is not moved)
    enter_confirm_seconds: Annotated[float, Strict(), Field(ge=0, le=600)] = 0.0
    exit_confirm_seconds: Annotated[float, Strict(), Field(ge=0, le=600)] = 3.0
    # break-structure rules as Comskip has them (detector.analysis.breakrules); all off by default.
    # Live: a break shorter than the minimum is withdrawn (segment.end `withdrawn: true`, its cue
    # cancelled); min_programme_seconds holds ad ends back until the programme has lasted that
    # long (adds up to that much latency to ad ends). Offline: relabelled / merged. Maxima flag.
    min_break_seconds: Annotated[float, Strict(), Field(ge=0, le=86400)] = 0.0          # Comskip min_commercialbreak
    max_break_seconds: Annotated[float, Strict(), Field(gt=0, le=86400)] | None = None  # max_commercialbreak
    min_spot_seconds: Annotated[float, Strict(), Field(ge=0, le=86400)] = 0.0           # min_commercial_size
    max_spot_seconds: Annotated[float, Strict(), Field(gt=0, le=86400)] | None = None   # max_commercial_size
    min_programme_seconds: Annotated[float, Strict(), Field(ge=0, le=86400)] = 0.0      # min_show_segment_length

    @field_validator("exit_threshold")
    @classmethod
    def _check_hysteresis(cls, v: float, info: ValidationInfo) -> float:
        enter = info.data.get("enter_threshold")
        if enter is not None and v > enter:
            raise ValueError(f"exit_threshold ({v:g}) must be <= enter_threshold ({enter:g})")
        return v

    @field_validator("max_break_seconds", "max_spot_seconds")
    @classmethod
    def _check_max_over_min(cls, v: float | None, info: ValidationInfo) -> float | None:
        low_key = "min_break_seconds" if info.field_name == "max_break_seconds" else "min_spot_seconds"
        low = info.data.get(low_key)
        if v is not None and low is not None and v < low:
            raise ValueError(f"{info.field_name} ({v:g}) must be >= {low_key} ({low:g}), or null for no maximum")
        return v

    def to_settings(self) -> DecisionSettings:
        """The pure decider's settings (hop_seconds belongs to the engine, not the decider)."""
        from detector.analysis.breakrules import BreakRules
        from detector.analysis.decision import DecisionSettings   # numpy: not needed just to check a config

        rules = BreakRules(min_break_seconds=self.min_break_seconds, max_break_seconds=self.max_break_seconds,
                           min_spot_seconds=self.min_spot_seconds, max_spot_seconds=self.max_spot_seconds,
                           min_programme_seconds=self.min_programme_seconds)
        return DecisionSettings(enter_threshold=self.enter_threshold, exit_threshold=self.exit_threshold,
                                min_segment_seconds=self.min_segment_seconds, smoothing_windows=self.smoothing_windows,
                                enter_confirm_seconds=self.enter_confirm_seconds, exit_confirm_seconds=self.exit_confirm_seconds,
                                rules=rules)


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
    journal: StatePath = Path("events.jsonl")     # relative: in $STATE_DIRECTORY under systemd, else beside the config
    # rotation by size: events.jsonl -> .1 ... .journal_keep; a replay reads them oldest first
    journal_max_bytes: Annotated[int, Strict(), Field(ge=1024, le=2**40)] = 64 * 1024 * 1024
    journal_keep: Annotated[int, Strict(), Field(ge=1, le=1000)] = 5
    send_hwm: Annotated[int, Strict(), Field(ge=1, le=10_000_000)] = 1000
    curve: CurveConfig | None = None

    @field_validator("journal")
    @classmethod
    def _check_journal_writable(cls, v: Path) -> Path:
        # a journal that cannot be written fails with the first event and only shows as
        # "degraded": refuse it at start (and in check-config) instead
        problem = writable_file_problem(v)
        if problem:
            raise ValueError(f"{problem} (set events.journal to a writable path, e.g. in the service's state directory)")
        return v

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


class BackboneDeploymentConfig(_Model):
    """The backbone as a Ray Serve deployment (cluster section): how many replicas, on what.

    `replicas` is the fixed count, or the lower bound when `max_replicas` is set (then Serve
    autoscales between the two on queued requests). `cpus_per_replica` is what Ray reserves
    for one replica and how many threads its ONNX Runtime session uses.
    """

    replicas: Annotated[int, Strict(), Field(ge=1, le=4096)] = 1
    max_replicas: Annotated[int, Strict(), Field(ge=1, le=4096)] | None = None
    gpus_per_replica: Annotated[float, Field(ge=0, le=64)] = 0
    cpus_per_replica: Annotated[float, Field(gt=0, le=1024)] = 1

    @field_validator("max_replicas")
    @classmethod
    def _bounds(cls, v: int | None, info: ValidationInfo) -> int | None:
        low = info.data.get("replicas")
        if v is not None and low is not None and v < low:
            raise ValueError(f"max_replicas {v} is below replicas {low} (the autoscaling lower bound)")
        return v


_RAY_ADDRESS_RE = re.compile(r"^ray://(?P<host>\[[0-9A-Fa-f:.]+\]|[A-Za-z0-9.-]+):(?P<port>[0-9]{1,5})$")


def ray_missing() -> str | None:
    """Why a `cluster` section cannot run on this install (Ray not importable), or None."""
    try:
        import ray  # noqa: F401  (the import is the check)
    except ImportError as exc:
        return f"needs Ray, which is not installed ({exc}); pip install '.[cluster]' (or pip install 'ad-detector[cluster]')"
    return None


class ClusterConfig(_Model):
    """Run the pipeline on a Ray cluster (extra `[cluster]`; detector.cluster).

    `address`: `local` starts a single-machine cluster owned by this process (stopped with
    it); `auto` joins the cluster this node belongs to (`ray start` ran here); `ray://HOST:PORT`
    joins a remote head through Ray Client. Channels are grouped `channels_per_worker` to an
    actor; an actor that dies is restarted up to `worker_max_restarts` times (-1: always).
    """

    address: StrictStr = "local"
    backbone: BackboneDeploymentConfig = Field(default_factory=BackboneDeploymentConfig)
    channels_per_worker: Annotated[int, Strict(), Field(ge=1, le=4096)] = 8
    cpus_per_worker: Annotated[float, Field(gt=0, le=1024)] = 1.0   # what Ray reserves per channel worker (decode runs there)
    num_cpus: Annotated[int, Strict(), Field(ge=1, le=4096)] | None = None   # local only: CPUs the cluster offers (default: all)
    node_ip: StrictStr = "127.0.0.1"          # local only: the address Ray announces for this node
    worker_max_restarts: Annotated[int, Strict(), Field(ge=-1, le=1_000_000)] = -1
    backbone_timeout_seconds: Seconds = 30.0  # a batch that no replica answers within this is retried, then fails the worker
    start_timeout_seconds: Seconds = 120.0    # the deployment and every worker ready within this, or `run` exits 1

    @field_validator("address")
    @classmethod
    def _check_address(cls, v: str) -> str:
        if v in ("local", "auto"):
            return v
        m = _RAY_ADDRESS_RE.match(v)
        if not m:
            raise ValueError(f"expected local, auto or ray://HOST:PORT, got {v!r}")
        _port(m.group("port"))
        return v


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
    cluster: ClusterConfig | None = None       # optional: run on Ray (detector.cluster)

    _source_path: Path | None = PrivateAttr(default=None)
    _state_dir: Path | None = PrivateAttr(default=None)

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

    @field_validator("cluster")
    @classmethod
    def _ray_installed(cls, v: ClusterConfig | None) -> ClusterConfig | None:
        why = ray_missing() if v is not None else None
        if why:
            raise ValueError(why)
        return v

    @property
    def state_dir(self) -> Path | None:
        """The service's state directory the journal resolved against (SIGHUP reloads use it again)."""
        return self._state_dir

    @property
    def source_path(self) -> Path | None:
        """The config file this was loaded from (absolute), None when parsed from a string."""
        return self._source_path
