"""Resize filters for the model's 299x299 input: cost per frame and what they do to the features.

The engine squeezes each sampled frame to 299x299 with INTER_AREA (training did the same).
A cheaper filter would save CPU per channel, but the LSTM was trained on INTER_AREA
features, so a change needs retraining unless the features barely move. This measures,
on real decoded 720p frames: milliseconds per frame for each filter with one OpenCV thread
(as the daemon runs it), and the cosine similarity of the backbone's features against
INTER_AREA ones.

    .venv/bin/python bench/resize.py [--model DIR] [--video 720p.mp4] [--frames 64]
"""

from __future__ import annotations

import argparse
import sys
import time
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parent.parent))

import cv2  # noqa: E402
import numpy as np  # noqa: E402

from bench.common import OUT, add_common_args, ensure_backbone, log, machine_info, now, table, write_json  # noqa: E402

FILTERS = {"area (current)": cv2.INTER_AREA, "linear": cv2.INTER_LINEAR, "nearest": cv2.INTER_NEAREST, "cubic": cv2.INTER_CUBIC,
           "linear_exact": cv2.INTER_LINEAR_EXACT}


def main(argv: list[str] | None = None) -> int:
    p = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    p.add_argument("--model", type=Path, default=OUT / "backbone-none")
    p.add_argument("--video", type=Path, default=None, help="a 720p recording (default: the live benchmark's)")
    p.add_argument("--frames", type=int, default=64)
    add_common_args(p, "resize")
    args = p.parse_args(argv)
    ensure_backbone(args.model)
    video = args.video or next(iter(sorted(OUT.glob("live720-*.h264.mp4"))), None)
    if video is None:
        raise SystemExit("bench: no 720p video; pass --video or run bench/live.py once")
    cap = cv2.VideoCapture(str(video))
    frames = []
    i = 0
    while len(frames) < args.frames:
        ok, frame = cap.read()
        if not ok:
            break
        if i % 5 == 0:                      # 5 of 25 per second, as the analysis rate keeps
            frames.append(frame)
        i += 1
    cap.release()
    log(f"{len(frames)} frames of {video.name} ({frames[0].shape[1]}x{frames[0].shape[0]})")
    from detector.model.bundle import load_bundle
    from detector.model.models import Models

    models = Models(load_bundle(args.model, require_sequence=False), ["CPUExecutionProvider"], engine="onnxruntime", precision="fp32")
    cv2.setNumThreads(1)
    resized, cost = {}, {}
    for name, flag in FILTERS.items():
        t0 = time.perf_counter()
        for _ in range(3):
            out = [cv2.resize(f, (299, 299), interpolation=flag) for f in frames]
        cost[name] = (time.perf_counter() - t0) / (3 * len(frames)) * 1000
        resized[name] = np.stack(out)
    feats = {name: np.concatenate([models.features(x[i:i + 16]) for i in range(0, len(x), 16)]) for name, x in resized.items()}
    ref = feats["area (current)"]
    rows, results = [], []
    for name in FILTERS:
        f = feats[name]
        cos = (ref * f).sum(1) / (np.linalg.norm(ref, axis=1) * np.linalg.norm(f, axis=1) + 1e-12)
        pix = float(np.abs(resized[name].astype(np.int16) - resized["area (current)"]).mean())
        rows.append([name, f"{cost[name]:.2f}", f"{cost[name] * 5:.1f}", f"{cos.mean():.5f}", f"{cos.min():.5f}", f"{pix:.2f}"])
        results.append({"filter": name, "ms_per_frame": round(cost[name], 3), "ms_per_channel_second_at_5fps": round(cost[name] * 5, 2),
                        "feature_cosine_mean_vs_area": round(float(cos.mean()), 6), "feature_cosine_min_vs_area": round(float(cos.min()), 6),
                        "mean_abs_pixel_diff_vs_area": round(pix, 3)})
    text = table(["filter", "ms/frame (1 thread)", "ms per channel-second at 5 fps", "features cosine vs area (mean)", "(min)",
                  "mean |pixel diff| vs area"], rows)
    print(f"\n{len(frames)} frames of {video.name}, backbone {args.model}")
    print(text)
    write_json(args.out, {"benchmark": "resize", "date": now(), "video": str(video), "model": str(args.model),
                          "machine": machine_info(), "results": results, "table": text})
    return 0


if __name__ == "__main__":
    sys.exit(main())
