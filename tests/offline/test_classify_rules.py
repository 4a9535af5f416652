"""`classify` with break-structure rules from the command line: the files show the rewrite."""

from __future__ import annotations

import json
from pathlib import Path

import pytest

from tests.conftest import assert_usage_error, run_cli


@pytest.fixture(scope="module")
def short_clip(tmp_path_factory) -> Path:
    """24 s: programme, one ad break, programme (as test_classify's short broadcast)."""
    from detector.demo.data import write_broadcast

    path = tmp_path_factory.mktemp("rules") / "short.mp4"
    write_broadcast(path, seed=11, duration=24.0, size=(320, 180), progress=False)
    return path


def test_classify_flags_long_breaks_and_relabels_short_ones(bundle_dir: Path, short_clip: Path, tmp_path: Path) -> None:
    flagged, relabelled = tmp_path / "flagged", tmp_path / "relabelled"
    proc = run_cli("classify", short_clip, "-m", bundle_dir, "-o", flagged, "--formats", "json", "edl", "--no-progress",
                   "--max-break", "1")
    assert proc.returncode == 0, proc.stderr[-3000:]
    segments = json.loads((flagged / "short.segments.json").read_text())
    ads = [s for s in segments if s["is_ad"]]
    assert ads, segments                                          # the demo model finds the break
    assert all(s["flags"] == ["long_break"] for s in ads)         # flagged, not cut: the EDL still lists them
    assert all("flags" not in s for s in segments if not s["is_ad"])
    assert len((flagged / "short.edl").read_text().splitlines()) == len(ads)
    assert proc.stderr.count("rule=max_break action=flagged") == len(ads)

    proc = run_cli("classify", short_clip, "-m", bundle_dir, "-o", relabelled, "--formats", "json", "edl", "--no-progress",
                   "--min-break", "60")
    assert proc.returncode == 0, proc.stderr[-3000:]
    after = json.loads((relabelled / "short.segments.json").read_text())
    assert [s["is_ad"] for s in after] == [False]                 # no break lasts 60 s: one programme segment
    assert (after[0]["start"], after[0]["end"]) == (segments[0]["start"], segments[-1]["end"])
    assert (relabelled / "short.edl").read_text() == ""
    assert proc.stderr.count("rule=min_break action=relabelled") == len(ads)


def test_classify_refuses_contradictory_rules(short_clip: Path, tmp_path: Path) -> None:
    proc = run_cli("classify", short_clip, "-m", tmp_path, "-o", tmp_path / "out", "--min-break", "30", "--max-break", "10")
    assert_usage_error(proc, "--max-break (10) must be >= --min-break (30)")
