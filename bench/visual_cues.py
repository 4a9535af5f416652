"""CPU cost per analysed frame of the classic picture cues (detector.analysis.visualcues).

On real decoded demo frames at the model's 299x299 input size, with one OpenCV thread (as a
channel's analysis runs), interleaved rounds of: the existing per-frame stats (framestats,
for reference), each cue's part (grey conversion, bars, corner edges, logo presence against
a learnt mask, logo learning) and the whole `visual_cues` call. Figures are the median over
rounds of CPU microseconds per frame (process time) and wall microseconds per frame, and
what one channel analysed at 5 frames/s costs in cores.

    .venv/bin/python bench/visual_cues.py [--frames 400] [--rounds 7]
"""

from __future__ import annotations

import argparse
import statistics
import sys
import time
from collections.abc import Callable
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parent.parent))

import cv2  # noqa: E402
import numpy as np  # noqa: E402

from bench.common import add_common_args, demo_frames, log, machine_info, now, table, wait_for_quiet, write_json  # noqa: E402
from detector.analysis.framestats import frame_stats  # noqa: E402
from detector.analysis.visualcues import LogoLearner, VisualCueState, bar_cues, corner_edges, visual_cues  # noqa: E402

ANALYSIS_FPS = 5.0


def _measure(fn: Callable[[int], object], n: int) -> tuple[float, float]:
    """(CPU us, wall us) per call of fn(i) over i in range(n)."""
    c0, w0 = time.process_time(), time.perf_counter()
    for i in range(n):
        fn(i)
    return (time.process_time() - c0) * 1e6 / n, (time.perf_counter() - w0) * 1e6 / n


def main(argv: list[str] | None = None) -> int:
    p = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    p.add_argument("--frames", type=int, default=400)
    p.add_argument("--rounds", type=int, default=7)
    add_common_args(p, "visual_cues")
    args = p.parse_args(argv)
    if args.quick:
        args.frames, args.rounds = 60, 2
    cv2.setNumThreads(1)
    log(f"decoding {args.frames} demo frames")
    frames = demo_frames(args.frames)
    # a station logo on every frame, so the learner has something to learn and presence does its full work
    for f in frames:
        cv2.rectangle(f, (237, 10), (287, 38), (255, 255, 255), 2)
        cv2.putText(f, "TV1", (241, 32), cv2.FONT_HERSHEY_SIMPLEX, 0.6, (255, 255, 255), 2, cv2.LINE_AA)
    greys = [cv2.cvtColor(f, cv2.COLOR_BGR2GRAY) for f in frames]
    stats = [frame_stats(f) for f in frames]
    edges = [corner_edges(g) for g in greys]
    learnt = LogoLearner(horizon_frames=3000, min_frames=30)
    for e in edges:
        learnt.update(e)
    assert learnt.mask is not None, "the logo was not learnt from the benchmark frames"
    learning = LogoLearner(horizon_frames=3000, min_frames=30)
    n = len(frames)

    def whole() -> Callable[[int], object]:
        state = VisualCueState.create(ANALYSIS_FPS, 40, LogoLearner(horizon_frames=3000, min_frames=30))
        return lambda i: visual_cues(frames[i], stats[i], state)

    parts: dict[str, Callable[[], Callable[[int], object]]] = {
        "framestats (existing, reference)": lambda: lambda i: frame_stats(frames[i]),
        "grey conversion": lambda: lambda i: cv2.cvtColor(frames[i], cv2.COLOR_BGR2GRAY),
        "letterbox/pillarbox": lambda: lambda i: bar_cues(greys[i]),
        "corner edges (Canny)": lambda: lambda i: corner_edges(greys[i]),
        "logo presence": lambda: lambda i: learnt.presence(edges[i]),
        "logo learning": lambda: lambda i: learning.update(edges[i]),
        "visual_cues (all cues)": whole,
    }
    quiet = wait_for_quiet(args.max_load, args.max_wait)
    rounds: dict[str, list[tuple[float, float]]] = {name: [] for name in parts}
    for r in range(args.rounds):
        for name, make in parts.items():
            rounds[name].append(_measure(make(), n))
        log(f"round {r + 1}/{args.rounds} done")
    rows, results = [], {}
    for name, figures in rounds.items():
        cpu = statistics.median(c for c, _ in figures)
        wall = statistics.median(w for _, w in figures)
        results[name] = {"cpu_us_per_frame": round(cpu, 1), "wall_us_per_frame": round(wall, 1),
                         "cores_per_channel_at_5fps": round(cpu * 1e-6 * ANALYSIS_FPS, 5), "rounds": figures}
        rows.append([name, round(cpu, 1), round(wall, 1), f"{cpu * 1e-6 * ANALYSIS_FPS * 100:.3f}%"])
    print(table(["part", "CPU us/frame", "wall us/frame", "of one core per 5 fps channel"], rows))
    write_json(args.out, {"when": now(), "machine": machine_info(["opencv-python-headless", "numpy"]), "quiet": quiet,
                          "frames": n, "rounds": args.rounds, "opencv_threads": 1, "frame_size": [299, 299],
                          "analysis_fps": ANALYSIS_FPS, "results": results})
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
