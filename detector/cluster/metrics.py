"""One Prometheus view of the whole cluster: the driver's endpoint with the workers' series.

Every worker keeps a `Metrics` of its own (the same class, so the same names and labels)
for its channels; the driver keeps one for every channel with all series pre-created at 0.
At each scrape the driver answers with its own registry in which the series a worker owns
(frames, drops, stream state, probabilities, inference and batch histograms: `WORKER_FAMILIES`)
are replaced by the sum over the workers that report them. Per-channel series have exactly
one worker; the unlabelled inference histograms add up across workers, as one process's
would. What only the driver does (events published and dropped, journal, CURVE, health,
model info) stays the driver's. Families only workers or replicas have (backbone retries,
replica batch sizes) are appended.

A restarted worker starts its counters at 0 again: Prometheus's `rate()` and `increase()`
treat that as a counter reset, as after a daemon restart.
"""

from __future__ import annotations

import copy
from collections.abc import Iterable, Sequence
from typing import Any

from prometheus_client.exposition import generate_latest
from prometheus_client.samples import Sample

from detector.live.metrics import Metrics

WORKER_FAMILIES = frozenset({
    "ad_detector_frames_captured", "ad_detector_frames_analyzed", "ad_detector_frames_dropped", "ad_detector_stream_up",
    "ad_detector_capture_reconnects", "ad_detector_inference_seconds", "ad_detector_batch_size",
    "ad_detector_ad_probability", "ad_detector_decision_latency_seconds", "ad_detector_last_frame_timestamp_seconds",
    "ad_detector_nonfinite_windows", "ad_detector_decode_errors", "ad_detector_upstream_cues",
    "ad_detector_audio_present", "ad_detector_audio_level_dbfs", "ad_detector_pts_wraps", "ad_detector_stream_faults",
})


def _key(s: Sample) -> tuple[str, tuple[tuple[str, str], ...]]:
    return s.name, tuple(sorted(s.labels.items()))


def _combine(samples: Iterable[Sample]) -> dict[tuple[str, tuple[tuple[str, str], ...]], Sample]:
    """Same series from several sources: values add up, `_created` keeps the earliest."""
    out: dict[tuple[str, tuple[tuple[str, str], ...]], Sample] = {}
    for s in samples:
        k = _key(s)
        if k not in out:
            out[k] = s
        elif s.name.endswith("_created"):
            out[k] = out[k]._replace(value=min(out[k].value, s.value))
        else:
            out[k] = out[k]._replace(value=out[k].value + s.value)
    return out


def merge_families(own: Sequence[Any], reports: Sequence[Sequence[Any]]) -> list[Any]:
    """The driver's families with worker-owned series taken from the workers' reports (pure)."""
    by_name: dict[str, list[Any]] = {}
    for families in reports:
        for fam in families:
            by_name.setdefault(fam.name, []).append(fam)
    out = []
    for fam in own:
        if fam.name not in WORKER_FAMILIES or fam.name not in by_name:
            out.append(fam)
            continue
        theirs = _combine(s for f in by_name[fam.name] for s in f.samples)
        merged = copy.copy(fam)
        seen = set()
        samples = []
        for s in fam.samples:
            k = _key(s)
            seen.add(k)
            samples.append(theirs.get(k, s))
        samples += [s for k, s in theirs.items() if k not in seen]
        merged.samples = samples
        out.append(merged)
    own_names = {f.name for f in own}
    for name, fams in by_name.items():
        if name not in own_names:
            merged = copy.copy(fams[0])
            merged.samples = list(_combine(s for f in fams for s in f.samples).values())
            out.append(merged)
    return out


class ClusterMetrics(Metrics):
    """The driver's metrics; `exposition` merges the latest report of every live worker and replica."""

    def __init__(self, channels: Sequence[str]) -> None:
        super().__init__(channels)
        self.reports: dict[str, Sequence[Any]] = {}      # worker or replica name -> its families (latest)

    def collect(self) -> list[Any]:
        return merge_families(list(self.registry.collect()), list(self.reports.values()))

    def exposition(self) -> bytes:
        return generate_latest(self)    # type: ignore[arg-type]  (anything with collect() will do)
