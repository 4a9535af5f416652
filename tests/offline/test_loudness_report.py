"""`classify --formats loudness` end to end: a generated broadcast with stereo audio whose ads are
6 dB louder, classified by the session's bundle; every segment's figures against FFmpeg's
ebur128 filter on the same span of the same file (the contract's 0.5 LU)."""

from __future__ import annotations

import csv
import json
import re
import subprocess
from pathlib import Path

import pytest

from conftest import run_cli

CONTRACT_LU = 0.5


def ffmpeg_span(path: Path, start: float, end: float) -> tuple[float, float]:
    err = subprocess.run(["ffmpeg", "-hide_banner", "-nostats", "-i", str(path), "-map", "0:a:0", "-af",
                          f"atrim=start={start}:end={end},ebur128", "-f", "null", "-"],
                         capture_output=True, text=True, check=True).stderr
    summary = err[err.rindex("Summary:"):]
    return (float(re.search(r"I:\s+(-?[\d.]+) LUFS", summary).group(1)),
            float(re.search(r"LRA:\s+(-?[\d.]+) LU", summary).group(1)))


def test_classify_reports_each_segments_loudness_as_ffmpeg_measures_it(bundle_dir: Path, tmp_path: Path) -> None:
    from detector.demo.write import write_broadcast

    silent = tmp_path / "silent.mp4"
    truth = write_broadcast(silent, seed=11, duration=24.0, size=(320, 180), progress=False)
    ads = "+".join(f"between(t,{s.start},{s.end})" for s in truth if s.is_ad) or "0"
    video = tmp_path / "show.mp4"
    subprocess.run(["ffmpeg", "-v", "error", "-y", "-i", str(silent), "-f", "lavfi", "-i",
                    "anoisesrc=color=pink:amplitude=0.2:sample_rate=48000:seed=3", "-filter_complex",
                    f"[1:a]volume='if({ads},1,0.5)':eval=frame,pan=stereo|c0=c0|c1=0.8*c0[a]", "-map", "0:v", "-map", "[a]",
                    "-c:v", "copy", "-c:a", "aac", "-b:a", "192k", "-t", "24", str(video)], check=True, capture_output=True)

    out = tmp_path / "out"
    proc = run_cli("classify", video, "-m", bundle_dir, "-o", out, "--formats", "json", "loudness", "--no-progress")
    assert proc.returncode == 0, proc.stderr[-3000:]
    assert proc.stdout.split() == [str(out / "show.segments.json"), str(out / "show.loudness.csv")]
    segments = json.loads((out / "show.segments.json").read_text())
    with open(out / "show.loudness.csv", newline="") as f:
        rows = list(csv.DictReader(f))
    assert list(rows[0]) == ["start", "end", "label", "integrated_lufs", "loudness_range_lu"]
    assert len(rows) == len(segments) >= 1
    for seg, row in zip(segments, rows):
        assert (float(row["start"]), float(row["end"]), row["label"]) == (seg["start"], seg["end"], seg["label"])
        assert float(row["integrated_lufs"]) == seg["integrated_lufs"]
        ref_i, ref_lra = ffmpeg_span(video, seg["start"], seg["end"])
        assert abs(seg["integrated_lufs"] - ref_i) <= CONTRACT_LU, (seg, ref_i)
        if seg["end"] - seg["start"] >= 3.0:
            assert abs(seg["loudness_range_lu"] - ref_lra) <= CONTRACT_LU, (seg, ref_lra)
        else:
            assert seg["loudness_range_lu"] is None and row["loudness_range_lu"] == ""
    # what the report is for: the ads (6 dB louder here) read louder than the programme around them
    found_ads = [s for s in segments if s["is_ad"] and s["end"] - s["start"] >= 3.0]
    found_programme = [s for s in segments if not s["is_ad"] and s["end"] - s["start"] >= 3.0]
    if found_ads and found_programme:
        assert min(s["integrated_lufs"] for s in found_ads) > max(s["integrated_lufs"] for s in found_programme)
