"""The figures `evaluate` prints: how well predicted segments match ground truth.

Pure functions over `Segment` lists, so the numbers can be checked by hand and by tests.

Choices, stated once:
- Time is sampled on a grid (default 0.1 s) at the centres `k*grid + grid/2` inside
  [0, duration); every figure "by time" counts grid points. Anything no segment covers
  is programme (not ad), which is how an EDL truth file (ads only) reads.
- Only ad vs not-ad is compared. Which programme label or which ad label a stretch has
  does not count: `evaluate` measures ad-break detection, and EDL truth has no labels.
- Adjacent ad segments (e.g. two commercials back to back) form one ad break: the cut
  between them is not a boundary, since skipping an ad break is what users do.
- Boundaries are where an ad break starts or ends, except at the very start or end of
  the recording (within half a grid step of them), which is not a boundary anyone seeks to.
"""

from __future__ import annotations

import math
from collections.abc import Sequence
from statistics import median

import numpy as np

from detector.analysis.segments import Segment

AD_START, AD_END = "ad_start", "ad_end"
_JOIN = 1e-6  # ad segments closer than this (seconds) are one break


def _grid(duration: float, grid: float) -> np.ndarray:
    """Centres of the grid cells that lie in [0, duration)."""
    n = int(math.ceil(duration / grid))
    centres = (np.arange(n, dtype=np.float64) + 0.5) * grid
    return centres[centres < duration]


def _ad_mask(segments: Sequence[Segment], centres: np.ndarray) -> np.ndarray:
    """True where an ad segment covers the grid point (segments half-open [start, end))."""
    mask = np.zeros(centres.shape, dtype=bool)
    for seg in segments:
        if seg.is_ad and seg.end > seg.start:
            lo = int(np.searchsorted(centres, seg.start, side="left"))
            hi = int(np.searchsorted(centres, seg.end, side="left"))
            mask[lo:hi] = True
    return mask


def ad_breaks(segments: Sequence[Segment], duration: float) -> list[tuple[float, float]]:
    """Ad segments clipped to [0, duration], sorted, with touching/overlapping ones merged."""
    spans = sorted(
        (max(0.0, s.start), min(duration, s.end))
        for s in segments
        if s.is_ad and min(duration, s.end) > max(0.0, s.start)
    )
    merged: list[tuple[float, float]] = []
    for start, end in spans:
        if merged and start <= merged[-1][1] + _JOIN:
            merged[-1] = (merged[-1][0], max(merged[-1][1], end))
        else:
            merged.append((start, end))
    return merged


def boundaries(breaks: Sequence[tuple[float, float]], duration: float, edge: float) -> list[tuple[float, str]]:
    """(time, kind) of every ad start and ad end, leaving out those at 0 or at `duration`."""
    out: list[tuple[float, str]] = []
    for start, end in breaks:
        if start > edge:
            out.append((start, AD_START))
        if end < duration - edge:
            out.append((end, AD_END))
    return sorted(out)


def match_boundaries(
    true_b: Sequence[tuple[float, str]], pred_b: Sequence[tuple[float, str]]
) -> list[float | None]:
    """Signed error (predicted - true) for each true boundary, or None if unmatched.

    One-to-one, same kind only, greedy by distance over all pairs: the closest pair in the
    whole recording is fixed first, so one predicted boundary never serves two true ones and
    a far match cannot steal a near one.
    """
    pairs = sorted(
        (abs(p - t), i, j)
        for i, (t, tk) in enumerate(true_b)
        for j, (p, pk) in enumerate(pred_b)
        if tk == pk
    )
    errors: list[float | None] = [None] * len(true_b)
    used_pred: set[int] = set()
    for _dist, i, j in pairs:
        if errors[i] is None and j not in used_pred:
            errors[i] = pred_b[j][0] - true_b[i][0]
            used_pred.add(j)
    return errors


def _ratio(num: int, den: int, if_empty: float) -> float:
    return num / den if den else if_empty


def _tol_key(tol: float) -> str:
    return f"boundary_recall_{tol:g}s"


def score(
    pred: list[Segment],
    truth: list[Segment],
    duration: float,
    grid: float = 0.1,
    tolerance_boundaries: Sequence[float] = (1.0, 2.0),
) -> dict:
    """Score predicted segments against truth over a recording of `duration` seconds.

    Returns a JSON-ready dict:
    - `frame_accuracy`: share of grid points where prediction and truth agree on ad / not ad.
    - `ad_precision`, `ad_recall`, `ad_f1`: by time (grid points), ads as the positive class.
      With nothing predicted precision is 1.0 if there is no true ad (nothing to find, no
      false alarm) else 0.0; with no true ad, recall is 1.0 if nothing was predicted else
      0.0, so false alarms on an ad-free recording score F1 0. F1 is 0 when both are 0.
    - `boundary_recall_<tol>s` per tolerance (`boundary_recall_1s`, `boundary_recall_2s`):
      share of true boundaries whose matched predicted boundary is within tol seconds
      (1.0 when there are no true boundaries).
    - `boundary_error_median_s`: median |error| over matched pairs at any distance, None if
      no pair; `boundary_errors_s`: signed error (predicted - true, negative = early) per
      true boundary in time order, None if unmatched; `boundaries`: the same with times.
    - `boundaries_true`: number of true boundaries; `boundaries_found`: number of boundaries
      in the prediction (matched or not).
    - `ad_breaks_true`: true ad breaks; `ad_breaks_detected`: true breaks overlapping any
      predicted ad; `ad_breaks_predicted`: predicted breaks.
    Ratios are rounded to 4 decimals, seconds to 3.
    """
    if not (math.isfinite(duration) and duration > 0):
        raise ValueError(f"duration must be a positive number of seconds, got {duration!r}")
    if not (math.isfinite(grid) and grid > 0):
        raise ValueError(f"grid must be a positive number of seconds, got {grid!r}")

    centres = _grid(duration, grid)
    p_mask = _ad_mask(pred, centres)
    t_mask = _ad_mask(truth, centres)
    n = int(centres.size)
    tp = int(np.count_nonzero(p_mask & t_mask))
    fp = int(np.count_nonzero(p_mask & ~t_mask))
    fn = int(np.count_nonzero(~p_mask & t_mask))
    agree = int(np.count_nonzero(p_mask == t_mask))

    precision = _ratio(tp, tp + fp, 1.0 if tp + fn == 0 else 0.0)
    recall = _ratio(tp, tp + fn, 1.0 if tp + fp == 0 else 0.0)
    f1 = 2 * precision * recall / (precision + recall) if precision + recall > 0 else 0.0

    true_breaks = ad_breaks(truth, duration)
    pred_breaks = ad_breaks(pred, duration)
    edge = grid / 2
    true_b = boundaries(true_breaks, duration, edge)
    pred_b = boundaries(pred_breaks, duration, edge)
    errors = match_boundaries(true_b, pred_b)
    matched = [abs(e) for e in errors if e is not None]

    detected = sum(
        1 for ts, te in true_breaks if any(min(te, pe) - max(ts, ps) > 0 for ps, pe in pred_breaks)
    )

    result: dict = {
        "frame_accuracy": round(_ratio(agree, n, 1.0), 4),
        "ad_precision": round(precision, 4),
        "ad_recall": round(recall, 4),
        "ad_f1": round(f1, 4),
    }
    for tol in tolerance_boundaries:
        hits = sum(1 for e in matched if e <= tol + 1e-9)
        result[_tol_key(tol)] = round(_ratio(hits, len(true_b), 1.0), 4)
    result.update(
        {
            "boundary_error_median_s": round(float(median(matched)), 3) if matched else None,
            "boundaries_true": len(true_b),
            "boundaries_found": len(pred_b),
            "boundary_errors_s": [None if e is None else round(float(e), 3) for e in errors],
            "boundaries": [
                {"kind": kind, "true_s": round(float(t), 3), "error_s": None if e is None else round(float(e), 3)}
                for (t, kind), e in zip(true_b, errors)
            ],
            "ad_breaks_true": len(true_breaks),
            "ad_breaks_detected": detected,
            "ad_breaks_predicted": len(pred_breaks),
            "duration_s": round(float(duration), 3),
            "grid_s": float(grid),
        }
    )
    return result


def span_scores(pred: list[Segment], truth: list[Segment], spans: Sequence[tuple[float, float, str]], duration: float,
                grid: float = 0.1) -> dict:
    """Accuracy (ad vs not ad agreeing with truth, on the same grid as `score`) inside given spans.

    For the cases an aggregate hides: the trap spans of a demo broadcast, where the picture or
    the sound misleads (detector.demo.traps). Returns a JSON-ready dict:
    - `count`, `accuracy`: all spans pooled (a grid point inside two spans counts once),
      accuracy None when no grid point falls in any span;
    - `by_kind`: per kind `{spans, points, seconds, accuracy}` (points: grid points inside,
      so callers can pool kinds themselves);
    - `spans`: every span with its own `accuracy`, in the order given.
    """
    centres = _grid(duration, grid)
    agree = _ad_mask(pred, centres) == _ad_mask(truth, centres)

    def inside(start: float, end: float) -> np.ndarray:
        lo = int(np.searchsorted(centres, start, side="left"))
        hi = int(np.searchsorted(centres, end, side="left"))
        mask = np.zeros(centres.shape, dtype=bool)
        mask[lo:hi] = True
        return mask

    def acc(mask: np.ndarray) -> float | None:
        n = int(np.count_nonzero(mask))
        return round(float(np.count_nonzero(agree & mask)) / n, 4) if n else None

    pooled = np.zeros(centres.shape, dtype=bool)
    kinds: dict[str, np.ndarray] = {}
    counts: dict[str, int] = {}
    rows = []
    for start, end, kind in spans:
        mask = inside(start, end)
        pooled |= mask
        kinds[kind] = kinds.get(kind, np.zeros(centres.shape, dtype=bool)) | mask
        counts[kind] = counts.get(kind, 0) + 1
        rows.append({"start": round(float(start), 3), "end": round(float(end), 3), "kind": kind, "accuracy": acc(mask)})
    return {
        "count": len(rows),
        "accuracy": acc(pooled),
        "by_kind": {k: {"spans": counts[k], "points": int(np.count_nonzero(m)), "seconds": round(float(np.count_nonzero(m) * grid), 3),
                        "accuracy": acc(m)} for k, m in sorted(kinds.items())},
        "spans": rows,
    }


def _fmt_ratio(value: float | None) -> str:
    return "-" if value is None else f"{value:.4f}"


def table(result: dict) -> str:
    """The main figures of a `score` result as an aligned two-column text table."""
    rows: list[tuple[str, str]] = [
        ("frame accuracy", _fmt_ratio(result.get("frame_accuracy"))),
        ("ad precision", _fmt_ratio(result.get("ad_precision"))),
        ("ad recall", _fmt_ratio(result.get("ad_recall"))),
        ("ad F1", _fmt_ratio(result.get("ad_f1"))),
    ]
    n_true = result.get("boundaries_true")
    for key, value in result.items():
        if key.startswith("boundary_recall_") and key.endswith("s"):
            tol = key[len("boundary_recall_") : -1]
            text = _fmt_ratio(value)
            if isinstance(n_true, int) and n_true and value is not None:
                text += f"  ({round(value * n_true)}/{n_true})"
            rows.append((f"boundary recall within {tol} s", text))
    med = result.get("boundary_error_median_s")
    rows.append(("median boundary error", "-" if med is None else f"{med:.3f} s"))
    rows.append(("boundaries (true / predicted)", f"{result.get('boundaries_true', '-')} / {result.get('boundaries_found', '-')}"))
    rows.append(("ad breaks detected", f"{result.get('ad_breaks_detected', '-')} of {result.get('ad_breaks_true', '-')}"))
    if "ad_breaks_predicted" in result:
        rows.append(("ad breaks predicted", str(result["ad_breaks_predicted"])))
    traps = result.get("trap_spans")
    if isinstance(traps, dict) and traps.get("count"):
        rows.append((f"accuracy on trap spans ({traps['count']})", _fmt_ratio(traps.get("accuracy"))))
        for kind, figures in traps.get("by_kind", {}).items():
            rows.append((f"  {kind} ({figures['spans']}, {figures['seconds']:g} s)", _fmt_ratio(figures.get("accuracy"))))
    width = max(len(name) for name, _ in rows)
    header = f"{'metric':<{width}}  value"
    lines = [header, "-" * max(len(header), width + 2 + max(len(v) for _, v in rows))]
    lines += [f"{name:<{width}}  {value}" for name, value in rows]
    return "\n".join(lines) + "\n"
