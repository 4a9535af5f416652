"""Prometheus metrics of the daemon (served by detector.live.http).

Why this module looks the way it does (docs/CONTRACT.md "Metrics", docs/DESIGN.md "Prometheus"):

- Every metric lives in a registry owned by one `Metrics` object, not in prometheus_client's
  global registry, so tests (and a SIGHUP-style rebuild) can create as many as they like
  without "Duplicated timeseries" errors.
- Every labelled series is created in `__init__` for every channel and every known reason /
  type / model, so the first scrape already shows all series at 0. Without that, `rate()` and
  alerts such as `increase(...[5m]) > 0` miss the first increment of a series that appears
  mid-run, and dashboards show "no data" instead of 0.
- Base units (seconds), counters named without `_total` (prometheus_client appends it),
  histogram buckets sized for what they measure, `_info` metrics for versions.

Contract metrics (names are part of the outside contract; do not rename):

==============================================  =========  ==================================
name                                            type       labels
==============================================  =========  ==================================
ad_detector_frames_captured_total               counter    channel
ad_detector_frames_analyzed_total               counter    channel
ad_detector_frames_dropped_total                counter    channel, reason (DROP_REASONS)
ad_detector_stream_up                           gauge      channel (1 up, 0 down)
ad_detector_capture_reconnects_total            counter    channel
ad_detector_inference_seconds                   histogram  model (backbone | sequence)
ad_detector_batch_size                          histogram  (frames per backbone call)
ad_detector_ad_probability                      gauge      channel (latest p(ad))
ad_detector_events_published_total              counter    channel, type (EVENT_TYPES)
ad_detector_decision_latency_seconds            histogram  channel (newest frame captured
                                                           -> decision taken)
ad_detector_last_frame_timestamp_seconds        gauge      channel (unix time, last frame)
ad_detector_model_info                          info       classes, backbone_sha256,
                                                           sequence_sha256, providers,
                                                           precision
ad_detector_decode_errors_total                 counter    channel (packets/frames that did
                                                           not decode, corrupt packets)
ad_detector_upstream_cues_total                 counter    channel (SCTE-35 cues in the source)
==============================================  =========  ==================================

Extras (not in the contract, so they may change with a changelog note):

- ``ad_detector_events_dropped_total{reason}``: events the publisher could not deliver;
  ``hwm`` = a subscriber's ZeroMQ queue overflowed (a slow subscriber; the pipeline never
  waits): counted once per overflow episode, since ZeroMQ then skips that subscriber
  silently until it has read half its queue; subscribers see the loss as a gap in ``seq``.
  ``stopped`` = published after shutdown began. A failed journal write does not drop the
  event (it is still published): see ``ad_detector_journal_errors_total``.
- ``ad_detector_stream_faults_total{channel,kind}``: fault episodes of a channel's input
  (kinds in ``detector.live.faults.FAULT_KINDS``: unreachable, silent, read_error, stall,
  decode_error, corrupt, audio_decode_error, bad_cue, timestamp_reset, timestamp_jump,
  resolution_change, rate_low, rate_high),
  counted once per episode, each logged once as ``stream fault channel=... kind=...``.
- ``ad_detector_journal_errors_total``: failed journal writes (disk full, permissions).
- ``ad_detector_journal_ok``: 0 while the journal fails (from the first failed append to the
  next successful one), else 1; ``/healthz`` then answers 200 with ``"status": "degraded"``.
- ``ad_detector_provider_fallbacks_total{model}``: an execution provider that was requested
  but not used for that model (e.g. CUDA asked for, CPU running): a silent slowdown otherwise.
- ``ad_detector_healthy``: 1 when the daemon's health check passes, 0 when not. The
  `MetricsServer` refreshes it from the same callback as ``/healthz`` at every scrape, so the
  two never disagree.
- ``ad_detector_build_info{version,python,onnxruntime}``: what is running, for joins in PromQL.
- ``ad_detector_loudness_lufs{channel,window}``: ITU-R BS.1770 loudness of the source's own
  channels (not the analysis downmix), ``window`` = ``short_term`` (the latest 3 s) or
  ``integrated_segment`` (gated integrated loudness of the current segment since its boundary:
  what a station compares between an ad and the programme around it). NaN while there is no
  measurement: no audio, less than 3 s of it, only digital silence (below the -70 LUFS gate),
  or before the first segment.
- ``ad_detector_audio_present{channel}``: 1 when the source has an audio stream, 0 when not
  (logged once per connection: ``source has no audio``); ``ad_detector_audio_level_dbfs{channel}``:
  RMS level of the latest analysis step's audio.
- ``ad_detector_pts_wraps_total{channel}``: 33-bit PTS wraps the timeline continued across.
- ``ad_detector_frames_dropped_total{reason="replayed"}``: frames a reconnect delivered again
  (same PTS as already analysed, e.g. HLS restarting a segment back), skipped so that nothing
  is analysed or announced twice.
- The inline marker (channels with an ``output``; detector/marker): ``ad_detector_marker_cues_total{channel}``
  cues placed into the output stream (counted when placed, i.e. possibly still inside the delay; a
  cancel that removes its held cue-out is not counted again), ``ad_detector_marker_late_cues_total{channel}`` those of them that
  missed their preroll (their place had already gone out: `delay_seconds` too short for the
  decision latency plus `preroll_seconds`), ``ad_detector_marker_dropped_bytes_total{channel,reason}``
  (``queue_full``: the marker thread fell behind the capture; ``buffer_full``: more than
  `max_buffer_mb` held; ``output_down``: released while the destination failed),
  ``ad_detector_marker_output_errors_total{channel}`` (failed opens/writes, each retried with
  backoff), ``ad_detector_marker_delay_seconds{channel}`` (programme held back right now) and
  ``ad_detector_marker_output_up{channel}``.
- ``ad_detector_break_rule_actions_total{channel,rule}``: what the break-structure rules did
  (rule in ``detector.analysis.breakrules.RULES``: a break withdrawn by ``min_break`` /
  ``min_spot``, a programme gap merged into a break by ``min_programme``, a break or spot
  flagged by ``max_break`` / ``max_spot``), each also logged as ``break rule channel=... rule=...``.
- ``ad_detector_auth_failures_total{reason}``: client handshakes refused by CURVE
  (``unknown_key``, ``handshake``); see detector/events/curve.py.

prometheus_client also exposes ``*_created`` series (creation time) for counters and
histograms; set ``PROMETHEUS_DISABLE_CREATED_SERIES=True`` in the service environment to
drop them.
"""

from __future__ import annotations

import logging
import math
import platform
from collections.abc import Sequence
from importlib import metadata

from prometheus_client import CollectorRegistry, Counter, Gauge, Histogram, Info
from prometheus_client.exposition import generate_latest

from detector.analysis.breakrules import RULES as BREAK_RULES
from detector.events.outputs.base import AUTH_FAILURE_REASONS
from detector.events.outputs.base import DROP_REASONS as OUTPUT_DROP_REASONS
from detector.events.schema import TYPES
from detector.live.faults import FAULT_KINDS

log = logging.getLogger(__name__)

# No "stale": the ring's fixed capacity already bounds how old a frame can be when it is
# analysed (ring_capacity / analysis_fps, 12.8 s at the defaults), and dropping old frames by
# age would leave holes in the evenly spaced window the sequence model was trained on.
MARKER_DROP_REASONS = ("queue_full", "buffer_full", "output_down")
DROP_REASONS = ("ring_overflow", "decode_error", "timestamp_jump", "replayed", "shutdown")
EVENT_TYPES = TYPES           # the wire schema's event types (detector.events.schema), one series each
MODELS = ("backbone", "sequence")
LOUDNESS_WINDOWS = ("short_term", "integrated_segment")   # ad_detector_loudness_lufs{window}
EVENT_DROP_REASONS = OUTPUT_DROP_REASONS   # what an output may drop an event for (detector.events.outputs.base)

# One backbone batch on a CPU takes tens to hundreds of ms, a sequence call ~1 ms, a large
# batch on a slow CPU several seconds: 1 ms .. 10 s covers both models with useful resolution.
INFERENCE_BUCKETS = (0.001, 0.0025, 0.005, 0.01, 0.025, 0.05, 0.1, 0.25, 0.5, 1.0, 2.5, 5.0, 10.0)
# Batches are bounded by inference.batch_size; powers of two match how people configure it.
BATCH_SIZE_BUCKETS = (1, 2, 4, 8, 16, 32, 64, 128, 256)
# The target is a median under 3 s (docs/DESIGN.md "Targets"), so resolution is finest around 1-5 s;
# 30 s catches a pipeline that has fallen badly behind.
DECISION_LATENCY_BUCKETS = (0.05, 0.1, 0.25, 0.5, 0.75, 1.0, 1.5, 2.0, 2.5, 3.0, 4.0, 5.0, 7.5, 10.0, 15.0, 20.0, 30.0)

MODEL_INFO_KEYS = ("classes", "backbone_sha256", "sequence_sha256", "providers", "precision")


def _distribution_version(*names: str) -> str:
    """Installed version of the first distribution found, read from package metadata.

    Reading metadata instead of importing keeps a scrape-side module from loading
    onnxruntime (and its CUDA libraries) just to print a version string.
    """
    for name in names:
        try:
            return metadata.version(name)
        except metadata.PackageNotFoundError:
            continue
    return "unknown"


class Metrics:
    """All metrics of one daemon process, in their own registry, every series pre-created.

    Attribute names are what the rest of the daemon uses; metric names are the contract's.
    """

    def __init__(self, channels: Sequence[str], registry: CollectorRegistry | None = None,
                 marker_channels: Sequence[str] = ()) -> None:
        self.channels: tuple[str, ...] = tuple(dict.fromkeys(channels))
        self.marker_channels: tuple[str, ...] = tuple(dict.fromkeys(marker_channels))
        self.registry: CollectorRegistry = registry if registry is not None else CollectorRegistry()
        r = self.registry

        self.frames_captured = Counter(
            "ad_detector_frames_captured", "Frames read from the source (before analysis-rate sampling).",
            ["channel"], registry=r)
        self.frames_analyzed = Counter(
            "ad_detector_frames_analyzed", "Frames that went through the backbone.",
            ["channel"], registry=r)
        self.frames_dropped = Counter(
            "ad_detector_frames_dropped", "Frames lost before analysis, by reason.",
            ["channel", "reason"], registry=r)
        self.stream_up = Gauge(
            "ad_detector_stream_up", "1 while the channel's source delivers frames, else 0.",
            ["channel"], registry=r)
        self.capture_reconnects = Counter(
            "ad_detector_capture_reconnects", "Times the capture of a channel was reopened.",
            ["channel"], registry=r)
        self.inference_seconds = Histogram(
            "ad_detector_inference_seconds", "Wall time of one inference call, by model.",
            ["model"], buckets=INFERENCE_BUCKETS, registry=r)
        self.batch_size = Histogram(
            "ad_detector_batch_size", "Frames per backbone call (across channels).",
            buckets=BATCH_SIZE_BUCKETS, registry=r)
        self.ad_probability = Gauge(
            "ad_detector_ad_probability", "Latest probability that the channel shows an ad.",
            ["channel"], registry=r)
        self.events_published = Counter(
            "ad_detector_events_published", "Events sent on the PUB socket, by type.",
            ["channel", "type"], registry=r)
        self.decision_latency = Histogram(
            "ad_detector_decision_latency_seconds",
            "Time from capture of a window's newest frame to the decision on that window.",
            ["channel"], buckets=DECISION_LATENCY_BUCKETS, registry=r)
        self.last_frame_timestamp = Gauge(
            "ad_detector_last_frame_timestamp_seconds", "Unix time at which the last frame was captured.",
            ["channel"], registry=r)
        self.model_info = Info(
            "ad_detector_model", "The model bundle in use and the execution providers actually running it.",
            registry=r)

        # Extras (see the module docstring).
        self.events_dropped = Counter(
            "ad_detector_events_dropped", "Event delivery losses, by reason (hwm: a slow subscriber's queue overflowed, once per episode; stopped: after shutdown began).",
            ["reason"], registry=r)
        self.stream_faults = Counter(
            "ad_detector_stream_faults", "Stream fault episodes by kind (one per episode, not per frame; see detector.live.faults).",
            ["channel", "kind"], registry=r)
        self.journal_errors = Counter(
            "ad_detector_journal_errors", "Failed appends to the event journal.", registry=r)
        self.journal_ok = Gauge(
            "ad_detector_journal_ok", "1 while the event journal accepts appends, 0 from a failed append "
            "until one succeeds (events are still published, but not replayable).", registry=r)
        self.provider_fallbacks = Counter(
            "ad_detector_provider_fallbacks", "Requested execution providers not in use, by model.",
            ["model"], registry=r)
        self.healthy = Gauge(
            "ad_detector_healthy", "1 when the daemon's health check passes, else 0.", registry=r)
        self.build_info = Info(
            "ad_detector_build", "Versions of the running daemon.", registry=r)
        self.nonfinite_windows = Counter(
            "ad_detector_nonfinite_windows", "Windows skipped because the sequence model gave NaN or infinity "
            "(the decision keeps its last state; a few mean a broken input frame, many a broken model).",
            ["channel"], registry=r)
        self.decode_errors = Counter(
            "ad_detector_decode_errors", "Video or audio packets and frames that did not decode, and packets the "
            "demuxer flagged corrupt (MPEG-TS continuity errors): mild corruption shows here before it becomes a fault.",
            ["channel"], registry=r)
        self.upstream_cues = Counter(
            "ad_detector_upstream_cues", "SCTE-35 cues found in the source (each also a cue.upstream event).",
            ["channel"], registry=r)
        self.audio_present = Gauge(
            "ad_detector_audio_present", "1 when the channel's source has an audio stream, 0 when it has none "
            "(or is down); the audio features are then marked missing.", ["channel"], registry=r)
        self.audio_level = Gauge(
            "ad_detector_audio_level_dbfs", "RMS level of the audio of the latest analysis step (dBFS; -120 for silence).",
            ["channel"], registry=r)
        self.loudness = Gauge(
            "ad_detector_loudness_lufs", "ITU-R BS.1770 loudness of the channel's own audio channels (LUFS): "
            "window=short_term the latest 3 s, window=integrated_segment the gated integral of the current segment; "
            "NaN without a measurement (no audio, digital silence).", ["channel", "window"], registry=r)
        self.pts_wraps = Counter(
            "ad_detector_pts_wraps", "Times the source's 33-bit 90 kHz PTS wrapped to 0 (every 26.5 h of a live "
            "MPEG-TS); the media timeline continues across it.", ["channel"], registry=r)
        self.break_rule_actions = Counter(
            "ad_detector_break_rule_actions", "Actions of the break-structure rules (decision.*_break/spot/programme_seconds), "
            "by rule: withdrawn short breaks, merged short programme gaps, flagged long breaks and spots.",
            ["channel", "rule"], registry=r)
        self.auth_failures = Counter(
            "ad_detector_auth_failures", "Client handshakes refused by CURVE (events.curve), by reason "
            "(unknown_key: key not in allowed_clients_dir; handshake: failed before authentication, e.g. a client without CURVE).",
            ["reason"], registry=r)

        self.marker_cues = Counter(
            "ad_detector_marker_cues", "SCTE-35 cues the inline marker placed into its output stream (counted when placed, before the delay has passed).", ["channel"], registry=r)
        self.marker_late_cues = Counter(
            "ad_detector_marker_late_cues", "Marker cues that reached the output less than preroll_seconds before their "
            "splice point (their place had already gone out: raise output.delay_seconds).", ["channel"], registry=r)
        self.marker_dropped_bytes = Counter(
            "ad_detector_marker_dropped_bytes", "Input bytes the inline marker did not write, by reason (queue_full, "
            "buffer_full, output_down).", ["channel", "reason"], registry=r)
        self.marker_output_errors = Counter(
            "ad_detector_marker_output_errors", "Failed opens or writes of the marker's destination (retried with backoff).",
            ["channel"], registry=r)
        self.marker_delay = Gauge(
            "ad_detector_marker_delay_seconds", "Programme the inline marker holds back right now.", ["channel"], registry=r)
        self.marker_output_up = Gauge(
            "ad_detector_marker_output_up", "1 while the marker's destination is open, else 0.", ["channel"], registry=r)

        self._create_series()
        self.model_info.info({key: "" for key in MODEL_INFO_KEYS})
        self.build_info.info({
            "version": _distribution_version("ad-detector"),
            "python": platform.python_version(),
            "onnxruntime": _distribution_version("onnxruntime", "onnxruntime-gpu", "onnxruntime-openvino"),
            "openvino": _distribution_version("openvino"),
        })

    def _create_series(self) -> None:
        """Touch every label combination so each series is exported (at 0) from the first scrape."""
        for channel in self.channels:
            self.frames_captured.labels(channel=channel)
            self.frames_analyzed.labels(channel=channel)
            for reason in DROP_REASONS:
                self.frames_dropped.labels(channel=channel, reason=reason)
            self.stream_up.labels(channel=channel).set(0)
            self.capture_reconnects.labels(channel=channel)
            self.ad_probability.labels(channel=channel).set(0)
            for event_type in EVENT_TYPES:
                self.events_published.labels(channel=channel, type=event_type)
            self.decision_latency.labels(channel=channel)
            self.nonfinite_windows.labels(channel=channel)
            self.decode_errors.labels(channel=channel)
            self.upstream_cues.labels(channel=channel)
            self.audio_present.labels(channel=channel).set(0)
            self.audio_level.labels(channel=channel).set(-120)
            for window in LOUDNESS_WINDOWS:
                self.loudness.labels(channel=channel, window=window).set(math.nan)
            self.pts_wraps.labels(channel=channel)
            self.last_frame_timestamp.labels(channel=channel).set(0)
            for kind in FAULT_KINDS:
                self.stream_faults.labels(channel=channel, kind=kind)
            for rule in BREAK_RULES:
                self.break_rule_actions.labels(channel=channel, rule=rule)
        for channel in self.marker_channels:
            self.marker_cues.labels(channel=channel)
            self.marker_late_cues.labels(channel=channel)
            for reason in MARKER_DROP_REASONS:
                self.marker_dropped_bytes.labels(channel=channel, reason=reason)
            self.marker_output_errors.labels(channel=channel)
            self.marker_delay.labels(channel=channel).set(0)
            self.marker_output_up.labels(channel=channel).set(0)
        for model in MODELS:
            self.inference_seconds.labels(model=model)
            self.provider_fallbacks.labels(model=model)
        for reason in AUTH_FAILURE_REASONS:
            self.auth_failures.labels(reason=reason)
        for reason in EVENT_DROP_REASONS:
            self.events_dropped.labels(reason=reason)
        self.journal_ok.set(1)

    def set_model_info(self, classes: Sequence[str], backbone_sha256: str, sequence_sha256: str,
                       providers: Sequence[str], precision: str) -> None:
        """Publish what is loaded; called at start and again after a SIGHUP model reload.

        `providers` must be the providers ONNX Runtime reports as in use, not the ones asked
        for: a GPU request that fell back to CPU has to be visible here.
        """
        self.model_info.info({
            "classes": ",".join(classes),
            "backbone_sha256": backbone_sha256,
            "sequence_sha256": sequence_sha256,
            "providers": ",".join(providers),
            "precision": precision,
        })

    # -- detector.events.outputs.base.EventCounters: what outputs report
    def event_sent(self, channel: str, type: str) -> None:
        self.events_published.labels(channel=channel, type=type).inc()

    def event_dropped(self, reason: str) -> None:
        self.events_dropped.labels(reason=reason).inc()

    def journal_error(self) -> None:
        self.journal_errors.inc()      # per failed append; the publisher logs once per episode

    def journal_state(self, ok: bool) -> None:
        self.journal_ok.set(1 if ok else 0)

    def auth_failure(self, reason: str) -> None:
        self.auth_failures.labels(reason=reason).inc()

    # -- detector.marker.marker.MarkerCounters
    def marker_cue(self, channel: str, late: bool) -> None:
        self.marker_cues.labels(channel=channel).inc()
        if late:
            self.marker_late_cues.labels(channel=channel).inc()

    def marker_dropped(self, channel: str, reason: str, nbytes: int) -> None:
        self.marker_dropped_bytes.labels(channel=channel, reason=reason).inc(nbytes)

    def marker_output_error(self, channel: str) -> None:
        self.marker_output_errors.labels(channel=channel).inc()

    def marker_state(self, channel: str, held_seconds: float, up: bool) -> None:
        self.marker_delay.labels(channel=channel).set(round(held_seconds, 3))
        self.marker_output_up.labels(channel=channel).set(1 if up else 0)

    def exposition(self) -> bytes:
        """The registry in the Prometheus text format (what `GET /metrics` returns)."""
        return generate_latest(self.registry)
