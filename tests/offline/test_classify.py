"""`classify` and `evaluate` end to end (issue 3), with the demo bundle and generated recordings.

The full demo broadcast is classified once (with --annotate) and every contract file is
checked on that run; shorter generated recordings serve the remaining end-to-end checks
so the module stays within a few minutes on two cores.
"""

from __future__ import annotations

import json
import os
import re
import shutil
import subprocess
from pathlib import Path

import cv2
import pytest

from conftest import assert_usage_error, copy_bundle, run_cli
from detector.offline.scoring import score
from detector.analysis.segments import read_labels
from detector.offline.timeline import HEIGHT_PX, WIDTH_PX

CONTRACT_SUFFIXES = (".segments.json", ".edl", ".txt", ".ffmeta", ".probabilities.csv", ".timeline.png")
EVALUATE_KEYS = ("frame_accuracy", "ad_precision", "ad_recall", "ad_f1", "boundary_recall_1s", "boundary_recall_2s",
                 "boundary_error_median_s")


def assert_no_output(out: Path) -> None:
    """Refused before anything was written: OUT_DIR was not even created."""
    assert not out.exists(), sorted(p.name for p in out.iterdir())


def frame_count(path: Path) -> int:
    cap = cv2.VideoCapture(str(path))
    try:
        assert cap.isOpened(), path
        return int(cap.get(cv2.CAP_PROP_FRAME_COUNT))
    finally:
        cap.release()


def decode_count(path: Path) -> int:
    cap = cv2.VideoCapture(str(path))
    n = 0
    try:
        while cap.grab():
            n += 1
    finally:
        cap.release()
    return n


# ----------------------------------------------------------------------------- fixtures

@pytest.fixture(scope="module")
def classified(demo_set, bundle_dir: Path, tmp_path_factory) -> tuple[Path, subprocess.CompletedProcess]:
    """The demo broadcast classified once, with every format and the annotated video."""
    out = tmp_path_factory.mktemp("classified") / "out"
    proc = run_cli("classify", demo_set.broadcast, "-m", bundle_dir, "-o", out, "--annotate", "--no-progress")
    assert proc.returncode == 0, proc.stderr[-3000:]
    return out, proc


@pytest.fixture(scope="module")
def short_broadcast(tmp_path_factory) -> Path:
    """A 24 s generated broadcast (programme, one ad break, programme) with its CSV and EDL truth."""
    from detector.demo.data import write_broadcast

    path = tmp_path_factory.mktemp("short") / "short.mp4"
    write_broadcast(path, seed=11, duration=24.0, size=(320, 180), progress=False)
    return path


# ----------------------------------------------------------------------------- classify

def test_classify_writes_every_contract_file(classified, demo_set) -> None:
    out, proc = classified
    name = demo_set.broadcast.stem
    for suffix in CONTRACT_SUFFIXES + (".annotated.mp4",):
        path = out / f"{name}{suffix}"
        assert path.is_file() and path.stat().st_size > 0, path
        assert str(path) in proc.stdout, proc.stdout
    assert not [p for p in out.iterdir() if "partial" in p.name or p.name.startswith(".")]

    segments = json.loads((out / f"{name}.segments.json").read_text())
    assert segments[0]["start"] == 0.0 and segments[-1]["end"] == pytest.approx(120.0, abs=0.1)
    for a, b in zip(segments, segments[1:]):
        assert a["end"] == pytest.approx(b["start"]) and a["is_ad"] != b["is_ad"]
    for seg in segments:
        assert set(seg) == {"start", "end", "label", "is_ad", "confidence", "integrated_lufs", "loudness_range_lu"}
        # the demo's sound is levelled to about -24 dBFS RMS, as loudness rules level broadcasts
        assert -40.0 < seg["integrated_lufs"] < -10.0, seg
        assert seg["loudness_range_lu"] is None or 0.0 <= seg["loudness_range_lu"] < 40.0, seg
        assert seg["label"] == ("commercial" if seg["is_ad"] else "football")
        assert 0.0 <= seg["confidence"] <= 1.0
    ads = [s for s in segments if s["is_ad"]]

    edl_lines = (out / f"{name}.edl").read_text().splitlines()
    assert len(edl_lines) == len(ads)
    for line, seg in zip(edl_lines, ads):
        start, end, action = line.split("\t")
        assert (float(start), float(end), action) == (pytest.approx(seg["start"], abs=0.006), pytest.approx(seg["end"], abs=0.006), "3")

    txt = (out / f"{name}.txt").read_text().splitlines()
    assert txt[0] == "FILE PROCESSING COMPLETE %6li FRAMES AT %5i" % (3000, 2500)
    assert txt[1] == "-" * 19
    pairs = [tuple(map(int, l.split("\t"))) for l in txt[2:]]
    assert len(pairs) == len(ads)
    for (f0, f1), seg in zip(pairs, ads):      # frame = round(seconds x 25); JSON seconds have 3 decimals
        assert abs(f0 - seg["start"] * 25) <= 0.5 + 0.025 and abs(f1 - min(3000, seg["end"] * 25)) <= 0.5 + 0.025, (pairs, ads)

    ffmeta = (out / f"{name}.ffmeta").read_text()
    assert ffmeta.startswith(";FFMETADATA1\n") and ffmeta.count("[CHAPTER]") == len(segments)

    csv_lines = (out / f"{name}.probabilities.csv").read_text().splitlines()
    assert csv_lines[0] == "time,commercial,football"
    rows = [list(map(float, l.split(","))) for l in csv_lines[1:]]
    assert len(rows) >= 100                        # one per second after the first window
    assert all(abs(r[1] + r[2] - 1.0) < 2e-3 for r in rows)
    assert all(b[0] > a[0] for a, b in zip(rows, rows[1:]))

    png = cv2.imread(str(out / f"{name}.timeline.png"))
    assert png is not None and png.shape[:2] == (HEIGHT_PX, WIDTH_PX)


def test_annotated_video_has_every_frame(classified, demo_set) -> None:
    out, _ = classified
    annotated = out / f"{demo_set.broadcast.stem}.annotated.mp4"
    n_in = decode_count(demo_set.broadcast)
    n_out = decode_count(annotated)
    assert abs(n_out - n_in) <= 1, (n_in, n_out)
    cap = cv2.VideoCapture(str(annotated))
    ok, frame = cap.read()
    cap.release()
    src = cv2.VideoCapture(str(demo_set.broadcast))
    ok_src, frame_src = src.read()
    src.release()
    assert ok and ok_src and frame.shape == frame_src.shape
    # the label banner is drawn over the top of the picture
    assert float(abs(frame[:20].astype(int) - frame_src[:20].astype(int)).mean()) > 20


def test_classify_finds_every_ad_break_on_the_demo_broadcast(classified, demo_set) -> None:
    out, _ = classified
    from detector.analysis.segments import Segment

    pred = [Segment(s["start"], s["end"], s["label"], s["is_ad"], s["confidence"])
            for s in json.loads((out / f"{demo_set.broadcast.stem}.segments.json").read_text())]
    truth = read_labels(demo_set.truth_csv, {"commercial"})
    figures = score(pred, truth, 120.0)
    summary = (f"breaks detected {figures['ad_breaks_detected']}/{figures['ad_breaks_true']} "
               f"(predicted {figures['ad_breaks_predicted']}), boundary errors {figures['boundary_errors_s']} s, "
               f"recall@1s {figures['boundary_recall_1s']}, recall@2s {figures['boundary_recall_2s']}, "
               f"frame accuracy {figures['frame_accuracy']}, ad F1 {figures['ad_f1']}")
    print("\ndemo broadcast:", summary)
    assert figures["ad_breaks_detected"] == figures["ad_breaks_true"] >= 1, summary
    assert figures["ad_breaks_predicted"] <= figures["ad_breaks_true"] + 1, summary
    assert figures["boundary_recall_1s"] >= 0.5, summary
    assert figures["boundary_recall_2s"] >= 0.99, summary
    assert figures["frame_accuracy"] >= 0.9, summary


def test_formats_picks_a_subset(bundle_dir: Path, demo_set, tmp_path: Path) -> None:
    clip = sorted((demo_set.data_dir / "test" / "commercial").glob("*.mp4"))[0]
    out = tmp_path / "out"
    proc = run_cli("classify", clip, "-m", bundle_dir, "-o", out, "--formats", "edl", "txt", "--no-progress")
    assert proc.returncode == 0, proc.stderr[-3000:]
    assert sorted(p.name for p in out.iterdir()) == sorted([f"{clip.stem}.edl", f"{clip.stem}.txt"])
    # an all-ad clip: one EDL line from 0 to the end, and the Comskip frames to match
    assert (out / f"{clip.stem}.edl").read_text() == "0.00\t10.00\t3\n"
    assert (out / f"{clip.stem}.txt").read_text().splitlines()[2] == "0\t250"


def test_comskip_output_for_a_29_97_fps_recording(bundle_dir: Path, tmp_path: Path) -> None:
    from detector.demo.data import write_clip

    fps = 30000 / 1001
    clip = tmp_path / "ntsc.mp4"
    write_clip(clip, "commercial", 10.0, seed=5, size=(320, 180), fps=fps)
    n = decode_count(clip)
    out = tmp_path / "out"
    proc = run_cli("classify", clip, "-m", bundle_dir, "-o", out, "--formats", "txt", "json", "--no-progress")
    assert proc.returncode == 0, proc.stderr[-3000:]
    lines = (out / "ntsc.txt").read_text().splitlines()
    assert lines[0] == "FILE PROCESSING COMPLETE %6li FRAMES AT %5i" % (n, 2997), lines[0]
    segments = json.loads((out / "ntsc.segments.json").read_text())
    ads = [s for s in segments if s["is_ad"]]
    assert ads, segments
    pairs = [tuple(map(int, l.split("\t"))) for l in lines[2:]]
    assert len(pairs) == len(ads)
    for (f0, f1), seg in zip(pairs, ads):      # frame = round(seconds x 29.97); JSON seconds have 3 decimals
        assert abs(f0 - seg["start"] * fps) <= 0.5 + 0.03 and abs(f1 - min(n, seg["end"] * fps)) <= 0.5 + 0.03, (pairs, ads)
    assert pairs[-1][1] == n          # the clip is all commercial: the break runs to the last frame


def test_truncated_recording_is_classified_up_to_where_it_decodes(bundle_dir: Path, short_broadcast: Path,
                                                                  tmp_path: Path) -> None:
    full = tmp_path / "faststart.mp4"
    subprocess.run(["ffmpeg", "-v", "error", "-y", "-i", str(short_broadcast), "-c", "copy", "-movflags", "+faststart",
                    str(full)], check=True, capture_output=True)
    data = full.read_bytes()
    cut = tmp_path / "cut.mp4"
    cut.write_bytes(data[: int(len(data) * 0.6)])
    out = tmp_path / "out"
    proc = run_cli("classify", cut, "-m", bundle_dir, "-o", out, "--formats", "json", "txt", "--no-progress")
    assert proc.returncode == 0, proc.stderr[-3000:]
    m = re.search(r"decoding stopped early file=\S+ decoded_until_s=([0-9.]+)", proc.stderr)
    assert m, proc.stderr[-3000:]
    until = float(m.group(1))
    assert 8.0 <= until < 23.0, until
    segments = json.loads((out / "cut.segments.json").read_text())
    assert segments[-1]["end"] == pytest.approx(until, abs=0.1)
    assert "Traceback" not in proc.stderr


# ----------------------------------------------------------------------------- evaluate

def test_evaluate_prints_the_contract_json_with_csv_and_edl_truth(bundle_dir: Path, short_broadcast: Path) -> None:
    results = {}
    for suffix, extra in ((".csv", ["--table"]), (".edl", [])):
        proc = run_cli("evaluate", short_broadcast, "--truth", short_broadcast.with_suffix(suffix), "-m", bundle_dir,
                       "--no-progress", *extra)
        assert proc.returncode == 0, proc.stderr[-3000:]
        figures = json.loads(proc.stdout)         # stdout is the JSON and nothing else
        for key in EVALUATE_KEYS:
            assert key in figures, key
        for key in EVALUATE_KEYS[:6]:
            assert 0.0 <= figures[key] <= 1.0, (key, figures[key])
        assert figures["boundary_error_median_s"] is None or figures["boundary_error_median_s"] >= 0
        results[suffix] = figures
        if extra:
            assert "frame accuracy" in proc.stderr and "boundary recall within 1 s" in proc.stderr, proc.stderr[-2000:]
    # an EDL lists the ads only; the gaps are programme, so both truths score the same
    assert {k: results[".csv"][k] for k in EVALUATE_KEYS} == {k: results[".edl"][k] for k in EVALUATE_KEYS}
    print("\nshort broadcast:", {k: results[".csv"][k] for k in EVALUATE_KEYS})


def test_evaluate_scores_trap_spans_and_writes_each_bundles_segments(bundle_dir: Path, tmp_path: Path) -> None:
    """A demo truth JSON adds accuracy on its trap spans; --segments-dir keeps what each bundle said,
    as files a user can open (and feed back as --truth), named apart even for two same-named bundles."""
    from detector.analysis.segments import read_labels
    from detector.demo.data import write_broadcast

    video = tmp_path / "trappy.mp4"
    write_broadcast(video, seed=11, duration=50.0, size=(320, 180), progress=False, traps=2)
    truth = tmp_path / "trappy.truth.json"
    spans = json.loads(truth.read_text())["traps"]
    assert {s[2] for s in spans} >= {"ad_on_pitch", "studio_programme"}
    twin = copy_bundle(bundle_dir, tmp_path / "other" / bundle_dir.name)
    out = tmp_path / "said"
    proc = run_cli("evaluate", video, "--truth", truth, "-m", bundle_dir, "-m", twin, "--segments-dir", out, "--no-progress",
                   "--table")
    assert proc.returncode == 0, proc.stderr[-3000:]
    rows = json.loads(proc.stdout)["models"]
    names = [f"trappy.{bundle_dir.name}", f"trappy.{bundle_dir.name}-2"]
    assert [r["segments_file"] for r in rows] == [str(out / f"{n}.segments.json") for n in names]
    for row, name in zip(rows, names):
        traps = row["trap_spans"]
        assert traps["count"] == len(spans) and [s["kind"] for s in traps["spans"]] == [s[2] for s in spans]
        assert 0.0 <= traps["accuracy"] <= 1.0
        said = json.loads((out / f"{name}.segments.json").read_text())
        assert said[0]["start"] == 0.0 and said[-1]["end"] == pytest.approx(50.0, abs=0.1)
        as_truth = read_labels(out / f"{name}.csv", {"commercial"})
        assert [(s.start, s.end, s.label) for s in as_truth] == [(x["start"], x["end"], x["label"]) for x in said]
    assert rows[0]["trap_spans"] == rows[1]["trap_spans"]     # the same bundle twice says the same
    assert "backbone shared with=" in proc.stderr            # ... from one decode and backbone pass
    assert "accuracy on trap spans" in proc.stderr


# ----------------------------------------------------------------------------- bad input

@pytest.fixture(scope="module")
def bad_files(tmp_path_factory) -> dict[str, Path]:
    d = tmp_path_factory.mktemp("bad")
    text = d / "notes.mp4"
    text.write_text("this is a shopping list, not a video\n" * 20)
    audio = d / "radio.m4a"
    subprocess.run(["ffmpeg", "-v", "error", "-y", "-f", "lavfi", "-i", "sine=duration=3", "-c:a", "aac", str(audio)],
                   check=True, capture_output=True)
    empty = d / "empty.mp4"
    empty.write_bytes(b"")
    regular = d / "a-file"
    regular.write_text("x")
    return {"missing": d / "missing.mp4", "text": text, "audio": audio, "empty": empty, "regular": regular}


@pytest.mark.parametrize("case, needle", [("missing", "no such file"), ("text", "not a video"), ("audio", "video"),
                                          ("empty", "empty file")])
def test_classify_bad_video_is_a_one_line_error(case: str, needle: str, bad_files, bundle_dir: Path, tmp_path: Path) -> None:
    out = tmp_path / "out"
    proc = run_cli("classify", bad_files[case], "-m", bundle_dir, "-o", out, "--no-progress")
    assert_usage_error(proc, str(bad_files[case]), needle)
    assert_no_output(out)


def test_classify_audio_only_says_there_is_no_video_stream(bad_files, bundle_dir: Path, tmp_path: Path) -> None:
    out = tmp_path / "out"
    proc = run_cli("classify", bad_files["audio"], "-m", bundle_dir, "-o", out, "--no-progress")
    assert_usage_error(proc, str(bad_files["audio"]), "no video stream")


def test_classify_with_a_bundle_that_fails_its_checks(bundle_dir: Path, backbone_dir: Path, demo_set, tmp_path: Path) -> None:
    clip = sorted((demo_set.data_dir / "test" / "football").glob("*.mp4"))[0]
    # a backbone-only bundle
    out = tmp_path / "out"
    proc = run_cli("classify", clip, "-m", backbone_dir, "-o", out, "--no-progress")
    assert_usage_error(proc, "model.json", "no sequence model yet")
    assert_no_output(out)
    # a damaged sequence.onnx
    bad = tmp_path / "bad"
    bad.mkdir()
    os.link(bundle_dir / "backbone.onnx", bad / "backbone.onnx")
    shutil.copy2(bundle_dir / "model.json", bad / "model.json")
    data = (bundle_dir / "sequence.onnx").read_bytes()
    (bad / "sequence.onnx").write_bytes(data[: len(data) // 2])
    proc = run_cli("classify", clip, "-m", bad, "-o", out, "--no-progress")
    assert_usage_error(proc, str(bad / "sequence.onnx"))
    assert_no_output(out)
    # not a bundle at all
    proc = run_cli("classify", clip, "-m", tmp_path / "nowhere", "-o", out, "--no-progress")
    assert_usage_error(proc, str(tmp_path / "nowhere"))
    assert_no_output(out)


def test_classify_unwritable_output_directory(bad_files, bundle_dir: Path, demo_set) -> None:
    clip = sorted((demo_set.data_dir / "test" / "football").glob("*.mp4"))[0]
    out = bad_files["regular"] / "out"        # under a regular file: not even root can create it
    proc = run_cli("classify", clip, "-m", bundle_dir, "-o", out, "--no-progress")
    assert_usage_error(proc, str(out))
    proc = run_cli("classify", clip, "-m", bundle_dir, "-o", bad_files["regular"], "--no-progress")
    assert_usage_error(proc, str(bad_files["regular"]), "not a directory")


@pytest.mark.parametrize("name, text, needle", [
    ("overlap.csv", "start,end,label\n0,50,football\n40,60,commercial\n60,120,football\n", "overlaps"),
    ("unsorted.csv", "start,end,label\n50,60,commercial\n0,50,football\n", "not sorted"),
    ("unsorted.edl", "50\t60\t3\n10\t20\t3\n", "not sorted"),
    ("overlap.edl", "10\t30\t3\n20\t40\t3\n", "overlaps"),
    ("noheader.csv", "0,50,football\n", "header"),
])
def test_evaluate_bad_truth_is_a_one_line_error(name: str, text: str, needle: str, bundle_dir: Path, demo_set,
                                               tmp_path: Path) -> None:
    truth = tmp_path / name
    truth.write_text(text)
    proc = run_cli("evaluate", demo_set.broadcast, "--truth", truth, "-m", bundle_dir, "--no-progress")
    assert_usage_error(proc, str(truth), needle)
    assert proc.stdout == ""


def test_truth_files_as_spreadsheets_and_kodi_write_them(tmp_path: Path) -> None:
    csv_path = tmp_path / "truth.csv"
    csv_path.write_bytes("\ufeffstart,end,label\r\n0,30,football\r\n30,77.12,commercial\r\n".encode("utf-8"))
    segs = read_labels(csv_path, {"commercial"})
    assert [(s.start, s.end, s.is_ad) for s in segs] == [(0.0, 30.0, False), (30.0, 77.12, True)]
    edl_path = tmp_path / "truth.edl"
    edl_path.write_text("30.00 77.12 3\n# a comment\n\n100\t110\t3\n")
    segs = read_labels(edl_path, {"commercial"})
    assert [(s.start, s.end, s.is_ad) for s in segs] == [(30.0, 77.12, True), (100.0, 110.0, True)]
