"""Is the delay long enough? The warning `check-config` prints and the daemon logs at start.

A cue can only reach the output `preroll_seconds` ahead of its splice point if the decision
came before that place left the delay line: `delay_seconds` >= decision latency + preroll.
The decision latency expected here is, per kind of boundary, the model's own switch latency
(`model.json` evaluation, as the engine uses: detector.analysis.engine.expected_lag) plus the
confirmation the decision waits for, one hop and the batching delay. Measured on the demo
broadcast (bench/RESULTS.md) ad starts were decided in about 2 s and ad ends in about 3.4 s
(the default `exit_confirm_seconds` of 3 s), which these figures bound from above.
"""

from __future__ import annotations

import json
from pathlib import Path
from types import SimpleNamespace
from typing import Any

DEFAULT_SWITCH_LATENCY = 0.6     # detector.analysis.boundary.BoundarySettings.expected_lag_seconds


def switch_latency(model_dir: Path) -> float:
    """The bundle's measured switch latency (its model.json), the engine's default without one."""
    try:
        manifest = json.loads((Path(model_dir) / "model.json").read_text())
    except (OSError, ValueError):
        return DEFAULT_SWITCH_LATENCY
    from detector.analysis.engine import expected_lag
    return expected_lag(SimpleNamespace(manifest=manifest), DEFAULT_SWITCH_LATENCY)  # type: ignore[arg-type]


def expected_decision_latency(cfg: Any) -> tuple[float, float]:
    """(ad start, ad end) decision latency this config should see, in seconds."""
    lag = switch_latency(cfg.model)
    d = cfg.decision
    common = lag + d.hop_seconds + cfg.inference.max_batch_delay_ms / 1000.0
    return common + d.enter_confirm_seconds, common + d.exit_confirm_seconds


def marker_warnings(cfg: Any) -> list[str]:
    """One line per channel whose `output.delay_seconds` is shorter than latency + preroll."""
    out = []
    start, end = expected_decision_latency(cfg)
    need = max(start, end)
    for i, ch in enumerate(cfg.channels):
        o = ch.output
        if o is None:
            continue
        if o.delay_seconds < need + o.preroll_seconds:
            out.append(f"channels[{i}].output.delay_seconds: {o.delay_seconds:g} s is less than the expected decision latency "
                       f"({start:.1f} s for an ad start, {end:.1f} s for an ad end) plus preroll_seconds ({o.preroll_seconds:g} s): "
                       f"cues will reach {o.url} late (counted in ad_detector_marker_late_cues_total); "
                       f"use delay_seconds >= {need + o.preroll_seconds:.0f}")
    return out
