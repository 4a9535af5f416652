"""Issue 14: a recording that carries its broadcaster's SCTE-35 cues needs no labels file.

`DATA/<split>/NAME.ts` with cue-outs and cue-ins and nothing beside it is labelled ad between
each out and its in, programme elsewhere; a labels file beside it still wins; a recording with
neither is the same one-line error as before.
"""

from __future__ import annotations

import logging
from pathlib import Path

import pytest

from cuekit import write_ts_with_cues
from detector.errors import UsageError
from ad_detector_train.dataset import discover


def _layout(root: Path) -> Path:
    for split in ("train", "test"):
        write_ts_with_cues(root / split / "football" / "clip.ts", 1.0, [], size=(160, 90), audio=False)
    write_ts_with_cues(root / "train" / "news.ts", 5.0, [(1.0, True, 1), (3.0, False, 1)], size=(160, 90))
    write_ts_with_cues(root / "test" / "late.ts", 4.0, [(2.0, True, 5)], size=(160, 90), audio=False)
    return root


def test_cues_label_a_recording_without_a_labels_file(tmp_path: Path, caplog) -> None:
    root = _layout(tmp_path / "DATA")
    with caplog.at_level(logging.INFO):
        ds = discover(root, "commercial")
    assert ds.classes == ["commercial", "football"]
    rec = next(i for i in ds.split("train") if i.is_recording)
    assert rec.path.name == "news.ts" and rec.labels_path is None and rec.gap_label == "football"
    assert [(s.start, s.end, s.label, s.is_ad) for s in rec.segments] == [(1.0, 3.0, "commercial", True)]
    late = next(i for i in ds.split("test") if i.is_recording)
    assert [(s.start, s.label) for s in late.segments] == [(2.0, "commercial")]
    assert abs(late.segments[0].end - 4.0) < 0.05                          # no cue-in: closed at the recording's end
    assert any("has no cue-in" in r.getMessage() for r in caplog.records)


def test_a_labels_file_beside_it_wins(tmp_path: Path) -> None:
    root = _layout(tmp_path / "DATA")
    (root / "train" / "news.edl").write_text("0.5\t1.5\t3\n")
    rec = next(i for i in discover(root).split("train") if i.is_recording)
    assert [(s.start, s.end) for s in rec.segments] == [(0.5, 1.5)] and rec.labels_path == root / "train" / "news.edl"


def test_a_recording_with_neither_is_the_one_line_error(tmp_path: Path) -> None:
    root = _layout(tmp_path / "DATA")
    write_ts_with_cues(root / "train" / "bare.ts", 1.0, [], size=(160, 90), audio=False)
    with pytest.raises(UsageError) as err:
        discover(root)
    message = str(err.value)
    assert "bare.ts" in message and "needs a labels file" in message and "SCTE-35" in message and "\n" not in message


def test_an_unreadable_recording_is_a_one_line_error(tmp_path: Path) -> None:
    root = _layout(tmp_path / "DATA")
    (root / "train" / "broken.ts").write_bytes(b"\x00" * 1000)
    with pytest.raises(UsageError) as err:
        discover(root)
    assert "broken.ts" in str(err.value) and "\n" not in str(err.value)
