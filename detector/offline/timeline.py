"""`NAME.timeline.png`: one picture that says where the ads are and how sure the model was.

Drawn with matplotlib's object API (`Figure` + `FigureCanvasAgg`), never `pyplot`: pyplot
keeps global figure state, which leaks memory in a long-running process and picks a GUI
backend on a desktop. The image has a fixed size (`WIDTH_PX` x `HEIGHT_PX`) so it lays out
the same for a 5-minute clip and a 3-hour recording, and tests can check it.
"""

from __future__ import annotations

import math
from collections.abc import Sequence
from pathlib import Path

import numpy as np

from detector.util.fsutil import atomic_path
from detector.analysis.segments import Segment

WIDTH_IN, HEIGHT_IN, DPI = 14.0, 4.0, 100
WIDTH_PX, HEIGHT_PX = int(WIDTH_IN * DPI), int(HEIGHT_IN * DPI)

#: Candidate spacings of the time ticks, in seconds: all land on whole minutes or hours.
_TICK_STEPS = (1, 2, 5, 10, 15, 30, 60, 120, 300, 600, 900, 1800, 3600, 7200, 10800, 21600)

AD_COLOUR = "#d62728"
TRUTH_COLOUR = "#2ca02c"
LINE_COLOUR = "#1f4e9c"


def format_clock(seconds: float, with_hours: bool) -> str:
    """`m:ss` (minutes may exceed 59) or `h:mm:ss`: how people read TV times."""
    total = int(math.floor(max(0.0, seconds) + 0.5))
    h, rem = divmod(total, 3600)
    m, s = divmod(rem, 60)
    if with_hours:
        return f"{h}:{m:02d}:{s:02d}"
    return f"{h * 60 + m:02d}:{s:02d}"


def tick_step(duration: float, max_ticks: int = 14) -> float:
    """The smallest round spacing giving at most `max_ticks` ticks over `duration`."""
    for step in _TICK_STEPS:
        if duration / step <= max_ticks:
            return float(step)
    return float(math.ceil(duration / max_ticks / 3600.0) * 3600)


def _plain(text: str) -> str:
    """Keep a file name literal: matplotlib would treat `$...$` as maths."""
    return text.replace("$", r"\$")


def render_timeline(
    path: Path,
    times: Sequence[float],
    p_ad: np.ndarray,
    segments: list[Segment],
    duration: float,
    title: str,
    truth: list[Segment] | None = None,
    thresholds: Sequence[float] = (),
) -> None:
    """Write a PNG of p(ad) over time with detected ad segments shaded.

    - p(ad) is a line, y from 0 to 1, x labelled `mm:ss` (or `h:mm:ss` past an hour);
    - detected ad segments are translucent red spans over the whole height;
    - `truth`, if given, is a thin green band along the top, so misses and false
      alarms show as red without green or green without red;
    - `thresholds` (e.g. the enter/exit thresholds) are dashed horizontal lines.
    The file is written atomically.
    """
    import matplotlib

    matplotlib.use("Agg")
    from matplotlib.backends.backend_agg import FigureCanvasAgg
    from matplotlib.figure import Figure
    from matplotlib.patches import Patch
    from matplotlib.ticker import FuncFormatter, MultipleLocator

    t = np.asarray(times, dtype=np.float64).reshape(-1)
    p = np.asarray(p_ad, dtype=np.float64).reshape(-1)
    if t.shape != p.shape:
        raise ValueError(f"times ({t.size}) and p_ad ({p.size}) differ in length")

    end = max(float(duration) if math.isfinite(duration) else 0.0, float(t.max()) if t.size else 0.0, 1.0)
    with_hours = end >= 3600

    fig = Figure(figsize=(WIDTH_IN, HEIGHT_IN), dpi=DPI)
    FigureCanvasAgg(fig)
    fig.subplots_adjust(left=0.05, right=0.985, bottom=0.14, top=0.86)
    ax = fig.add_subplot(1, 1, 1)

    handles = []
    ad_segments = [s for s in segments if s.is_ad]
    for seg in ad_segments:
        ax.axvspan(seg.start, seg.end, color=AD_COLOUR, alpha=0.22, linewidth=0)
    if ad_segments:
        handles.append(Patch(facecolor=AD_COLOUR, alpha=0.22, label=f"detected ads ({len(ad_segments)})"))

    if truth is not None:
        true_ads = [s for s in truth if s.is_ad]
        for seg in true_ads:
            ax.axvspan(seg.start, seg.end, ymin=0.94, ymax=1.0, color=TRUTH_COLOUR, alpha=0.9, linewidth=0)
        handles.append(Patch(facecolor=TRUTH_COLOUR, label=f"true ads ({len(true_ads)})"))

    if t.size:
        (line,) = ax.plot(t, p, color=LINE_COLOUR, linewidth=1.2, label="p(ad)")
        handles.insert(0, line)

    thr_lines = [
        ax.plot([0, end], [value, value], color="0.45", linestyle="--", linewidth=0.9)[0] for value in thresholds
    ]
    if thr_lines:
        thr_lines[0].set_label("threshold" + ("s " if len(thr_lines) > 1 else " ") + ", ".join(f"{v:g}" for v in thresholds))
        handles.append(thr_lines[0])

    ax.set_xlim(0.0, end)
    ax.set_ylim(-0.02, 1.12)  # headroom above 1.0 keeps the truth band off the curve
    ax.set_yticks([0.0, 0.25, 0.5, 0.75, 1.0])
    ax.set_ylabel("p(ad)")
    ax.set_xlabel("time (h:mm:ss)" if with_hours else "time (mm:ss)")
    ax.xaxis.set_major_locator(MultipleLocator(tick_step(end)))
    ax.xaxis.set_major_formatter(FuncFormatter(lambda x, _pos: format_clock(x, with_hours)))
    ax.grid(True, axis="both", color="0.88", linewidth=0.6)
    ax.set_axisbelow(True)
    ax.set_title(_plain(title), loc="left", fontsize=11)
    if handles:
        ax.legend(handles=handles, loc="lower right", bbox_to_anchor=(1.0, 1.0), ncol=len(handles), frameon=False, fontsize=9)

    with atomic_path(Path(path)) as tmp:
        fig.savefig(tmp, format="png", dpi=DPI)
