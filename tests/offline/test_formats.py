"""The offline output files, checked the way the programs that read them read them."""

from __future__ import annotations

import json
import shutil
import subprocess
from pathlib import Path

import cv2
import numpy as np
import pytest

from detector.offline import formats
from detector.errors import UsageError
from detector.analysis.segments import Segment, parse_edl
from detector.offline.timeline import HEIGHT_PX, WIDTH_PX, render_timeline

CLASSES = ["programme", "commercial"]

SEGMENTS = [
    Segment(0.0, 10.0, "programme", False, 0.91),
    Segment(10.0, 40.5, "commercial", True, 0.87654),
    Segment(40.5, 95.0, "programme", False, 0.95),
    Segment(95.0, 125.04, "commercial", True, 0.7),
    Segment(125.04, 130.0, "programme", False, 0.6),
]


def _probs(n: int) -> tuple[np.ndarray, np.ndarray]:
    times = np.arange(n, dtype=np.float64) * 0.5
    p_ad = (np.sin(times / 7.0) + 1) / 2
    return times, np.stack([1 - p_ad, p_ad], axis=1)


def test_segments_json_lists_every_segment_in_seconds() -> None:
    data = json.loads(formats.segments_json(SEGMENTS))
    assert [d["label"] for d in data] == [s.label for s in SEGMENTS]
    assert data[1] == {"start": 10.0, "end": 40.5, "label": "commercial", "is_ad": True, "confidence": 0.877}
    assert set(data[0]) == {"start", "end", "label", "is_ad", "confidence"}


def test_segments_json_stays_valid_json_with_nan_confidence() -> None:
    text = formats.segments_json([Segment(0, 1, "commercial", True, float("nan"))])
    assert json.loads(text)[0]["confidence"] is None


def _stepped_track() -> "LoudnessTrack":
    """100 ms sub-blocks over 0..130 s: ads (10-40.5, 95-125.04) 6 dB louder than the programme."""
    from detector.analysis.loudness import LoudnessTrack

    times = np.round(np.arange(1300) * 0.1, 3)
    loud = ((times >= 10.0) & (times < 40.5)) | ((times >= 95.0) & (times < 125.04))
    powers = np.where(loud, 10 ** ((-17.0 + 0.691) / 10), 10 ** ((-23.0 + 0.691) / 10))
    return LoudnessTrack(times, powers)


def test_segment_loudness_and_its_two_files() -> None:
    per = formats.segment_loudness(SEGMENTS, _stepped_track())
    assert [p.integrated_lufs for p in per] == pytest.approx([-23.0, -17.0, -23.0, -17.0, -23.0], abs=0.01)
    assert [p.loudness_range_lu for p in per] == pytest.approx([0.0] * 5, abs=0.01)
    data = json.loads(formats.segments_json(SEGMENTS, per))
    assert data[1] == {"start": 10.0, "end": 40.5, "label": "commercial", "is_ad": True, "confidence": 0.877,
                       "integrated_lufs": -17.0, "loudness_range_lu": 0.0}
    text = formats.loudness_csv(SEGMENTS, per)
    lines = text.splitlines()
    assert lines[0] == "start,end,label,integrated_lufs,loudness_range_lu"
    assert lines[2] == "10.000,40.500,commercial,-17.0,0.0"
    assert len(lines) == len(SEGMENTS) + 1


def test_loudness_of_a_recording_without_audio_is_null_and_empty() -> None:
    from detector.analysis.loudness import LoudnessTrack

    per = formats.segment_loudness(SEGMENTS, LoudnessTrack(np.zeros(0), np.zeros(0)))
    data = json.loads(formats.segments_json(SEGMENTS, per))
    assert all(d["integrated_lufs"] is None and d["loudness_range_lu"] is None for d in data)
    assert formats.loudness_csv(SEGMENTS, per).splitlines()[1] == "0.000,10.000,programme,,"
    # a 2 s segment has an integrated loudness but no range (that needs one 3 s block)
    short = formats.segment_loudness([Segment(0.0, 2.0, "commercial", True, 0.9)], _stepped_track())[0]
    assert short.integrated_lufs == pytest.approx(-23.0, abs=0.01) and short.loudness_range_lu is None


def test_loudness_is_opt_in_and_segments_json_carries_it_when_measured(tmp_path: Path) -> None:
    times, probs = _probs(10)
    default = formats.write_outputs(tmp_path / "a", "show", SEGMENTS, times, probs, CLASSES, ["commercial"], 25.0, 3250, 130.0,
                                    formats=["json"])
    assert "integrated_lufs" not in json.loads(default[0].read_text())[0]       # nothing measured: the keys are left out
    paths = formats.write_outputs(tmp_path / "b", "show", SEGMENTS, times, probs, CLASSES, ["commercial"], 25.0, 3250, 130.0,
                                  formats=["json", "loudness"], loudness=_stepped_track())
    assert [p.name for p in paths] == ["show.segments.json", "show.loudness.csv"]
    assert json.loads(paths[0].read_text())[3]["integrated_lufs"] == -17.0
    assert "loudness" in formats.FORMATS and "loudness" not in formats.DEFAULT_FORMATS


def test_edl_reads_the_way_kodi_reads_it() -> None:
    text = formats.edl(SEGMENTS)
    lines = text.splitlines()
    assert len(lines) == 2  # ad segments only
    for line in lines:
        fields = line.split()
        assert len(fields) == 3
        start, end = float(fields[0]), float(fields[1])
        assert end > start
        assert int(fields[2]) == 3
        assert line.count("\t") == 2
    assert lines[0] == "10.00\t40.50\t3"
    back = parse_edl(text, "test.edl", "commercial")
    assert [(s.start, s.end) for s in back] == [(10.0, 40.5), (95.0, 125.04)]
    assert all(s.is_ad for s in back)


@pytest.mark.parametrize(
    ("fps", "field"),
    [(25.0, "FRAMES AT  2500"), (29.97, "FRAMES AT  2997"), (30000 / 1001, "FRAMES AT  2997")],
)
def test_comskip_header_matches_comskip(fps: float, field: str) -> None:
    lines = formats.comskip_txt(SEGMENTS, fps, 3900).splitlines()
    assert lines[0] == f"FILE PROCESSING COMPLETE   3900 {field}"
    assert lines[0] == "FILE PROCESSING COMPLETE %6li FRAMES AT %5i" % (3900, int(field.split()[-1]))
    assert set(lines[1]) == {"-"} and len(lines[1]) == 19


def test_comskip_frames_at_25_fps() -> None:
    lines = formats.comskip_txt(SEGMENTS, 25.0, 3250).splitlines()
    assert lines[2:] == ["250\t1013", "2375\t3126"]  # 40.5*25 = 1012.5: halves round up


def test_comskip_frames_at_29_97_fps() -> None:
    segs = [Segment(0, 10, "programme", False), Segment(10.0, 20.0, "commercial", True)]
    lines = formats.comskip_txt(segs, 29.97, 900).splitlines()
    assert lines[2:] == ["300\t599"]  # 10 s -> frame 300 (299.7 rounded), 20 s -> 599.4
    for line in lines[2:]:
        start, end = line.split("\t")
        assert int(start) < int(end)


def test_comskip_end_frame_never_past_the_recording() -> None:
    segs = [Segment(0.0, 10.02, "commercial", True)]
    assert formats.comskip_txt(segs, 25.0, 250).splitlines()[2] == "0\t250"


def test_comskip_rejects_zero_fps() -> None:
    with pytest.raises(ValueError):
        formats.comskip_txt(SEGMENTS, 0.0, 100)


def test_ffmeta_escapes_special_characters() -> None:
    text = formats.ffmetadata([Segment(0, 1.5, "a=b;c#d\\e", True)], title="x\ny")
    assert text.startswith(";FFMETADATA1\n")
    assert "title=x\\\ny\n" in text
    assert "START=0\nEND=1500\ntitle=a\\=b\\;c\\#d\\\\e\n" in text


@pytest.mark.skipif(shutil.which("ffmpeg") is None or shutil.which("ffprobe") is None, reason="needs ffmpeg/ffprobe")
def test_ffmeta_accepted_by_real_ffmpeg(tmp_path: Path) -> None:
    segs = [
        Segment(0.0, 2.5, "programme", False),
        Segment(2.5, 6.25, "a=b;c#d", True),
        Segment(6.25, 10.0, "back\\slash", False),
    ]
    meta = tmp_path / "clip.ffmeta"
    meta.write_text(formats.ffmetadata(segs, title="clip;1"), encoding="utf-8")
    out = tmp_path / "clip.mkv"
    subprocess.run(
        [
            "ffmpeg", "-nostdin", "-v", "error", "-y",
            "-f", "lavfi", "-i", "testsrc=duration=10:size=160x120:rate=25",
            "-i", str(meta), "-map", "0:v", "-map_metadata", "1", "-map_chapters", "1",
            "-c:v", "ffv1", str(out),
        ],
        check=True, capture_output=True, timeout=60,
    )
    probe = subprocess.run(
        ["ffprobe", "-v", "error", "-show_chapters", "-show_entries", "format_tags=title", "-of", "json", str(out)],
        check=True, capture_output=True, text=True, timeout=30,
    )
    info = json.loads(probe.stdout)
    chapters = info["chapters"]
    assert [c["tags"]["title"] for c in chapters] == ["programme", "a=b;c#d", "back\\slash"]
    assert [(float(c["start_time"]), float(c["end_time"])) for c in chapters] == [(0.0, 2.5), (2.5, 6.25), (6.25, 10.0)]
    assert info["format"]["tags"]["title"] == "clip;1"


def test_probabilities_csv_has_header_and_rows() -> None:
    times, probs = _probs(3)
    lines = formats.probabilities_csv(times, probs, CLASSES).splitlines()
    assert lines[0] == "time,programme,commercial"
    assert len(lines) == 4
    assert lines[1] == "0.000,0.5000,0.5000"
    t, a, b = lines[2].split(",")
    assert t == "0.500" and len(a.split(".")[1]) == 4 and abs(float(a) + float(b) - 1) < 1e-3


def test_probabilities_csv_rejects_shape_mismatch() -> None:
    with pytest.raises(ValueError):
        formats.probabilities_csv([0.0, 0.5], np.zeros((3, 2)), CLASSES)


def test_timeline_png_has_fixed_size(tmp_path: Path) -> None:
    times, probs = _probs(260)
    path = tmp_path / "show.timeline.png"
    truth = [Segment(11.0, 41.0, "commercial", True)]
    render_timeline(path, times, probs[:, 1], SEGMENTS, 130.0, "show $1 (test)", truth=truth, thresholds=(0.7, 0.3))
    image = cv2.imread(str(path))
    assert image is not None
    assert image.shape[:2] == (HEIGHT_PX, WIDTH_PX) == (400, 1400)
    assert not list(tmp_path.glob(".*partial*"))


def test_timeline_long_recording_and_no_data(tmp_path: Path) -> None:
    path = tmp_path / "empty.png"
    render_timeline(path, [], np.zeros(0), [], 3 * 3600.0, "empty")
    assert cv2.imread(str(path)).shape[:2] == (400, 1400)


def test_write_outputs_writes_every_format(tmp_path: Path) -> None:
    times, probs = _probs(260)
    out = tmp_path / "new" / "dir"
    paths = formats.write_outputs(out, "show", SEGMENTS, times, probs, CLASSES, ["commercial"], 25.0, 3250, 130.0)
    names = sorted(p.name for p in paths)
    assert names == sorted(
        ["show.segments.json", "show.edl", "show.txt", "show.ffmeta", "show.probabilities.csv", "show.timeline.png"]
    )
    assert sorted(p.name for p in out.iterdir()) == names  # no temporary files left behind
    assert (out / "show.edl").read_text() == formats.edl(SEGMENTS)


def test_write_outputs_subset(tmp_path: Path) -> None:
    times, probs = _probs(10)
    paths = formats.write_outputs(tmp_path, "x", SEGMENTS, times, probs, CLASSES, ["commercial"], 25.0, 3250, 130.0, formats=["edl", "JSON"])
    assert [p.name for p in paths] == ["x.segments.json", "x.edl"]


def test_write_outputs_unwritable_directory_is_usage_error(tmp_path: Path) -> None:
    blocker = tmp_path / "file.txt"
    blocker.write_text("not a directory")
    times, probs = _probs(10)
    for out in (blocker / "out", blocker):
        with pytest.raises(UsageError) as err:
            formats.write_outputs(out, "show", SEGMENTS, times, probs, CLASSES, ["commercial"], 25.0, 3250, 130.0)
        message = str(err.value)
        assert str(out) in message and "\n" not in message
    assert sorted(p.name for p in tmp_path.iterdir()) == ["file.txt"]


def test_write_outputs_unknown_format_is_usage_error(tmp_path: Path) -> None:
    times, probs = _probs(10)
    with pytest.raises(UsageError) as err:
        formats.write_outputs(tmp_path / "o", "show", SEGMENTS, times, probs, CLASSES, ["commercial"], 25.0, 3250, 130.0, formats=["edl", "srt"])
    message = str(err.value)
    assert "'srt'" in message
    for name in formats.FORMATS:
        assert name in message
    assert not (tmp_path / "o").exists()
