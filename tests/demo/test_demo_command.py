"""`ad-detector demo --offline`'s table: the first segment of the stream is a start, not a boundary.

The engine names what placed each boundary with the contract's kinds (BOUNDARY_KINDS); the demo
prints the stream's first segment as "starts as" and every later transition beside the nearest
true boundary. Models and decoding are replaced by a made-up analysis, so this runs in a second.
"""

from __future__ import annotations

from pathlib import Path
from types import SimpleNamespace

import numpy as np

from detector.analysis.boundary import BOUNDARY_KINDS, STREAM_START
from detector.analysis.engine import Transition
from detector.analysis.segments import Segment, labels_csv_text
from detector.sources.video import DecodeReport


def test_offline_table_prints_the_stream_start_and_the_breaks(tmp_path: Path, monkeypatch, capsys) -> None:
    import detector.model.bundle as bundle_mod
    import detector.model.models as models_mod
    import detector.offline.analyse as analyse_mod
    import detector.offline.formats as formats_mod
    from detector.demo import command
    from detector.offline.analyse import Analysis

    truth = [Segment(0.0, 40.0, "football", False), Segment(40.0, 80.0, "commercial", True), Segment(80.0, 120.0, "football", False)]
    truth_csv = tmp_path / "broadcast.csv"
    truth_csv.write_text(labels_csv_text(truth))
    segs = [Segment(0.0, 40.1, "football", False), Segment(40.1, 80.0, "commercial", True), Segment(80.0, 120.0, "football", False)]
    transitions = [Transition(0.0, 8.0, False, "football", 0.01, STREAM_START, None),
                   Transition(40.1, 41.6, True, "commercial", 0.99, "cut", segs[0]),
                   Transition(80.0, 83.4, False, "football", 0.02, "black", segs[1])]
    assert all(tr.boundary_kind in BOUNDARY_KINDS for tr in transitions)
    result = Analysis(tmp_path / "broadcast.mp4", ["commercial", "football"], ["commercial"], np.arange(8.0, 120.0),
                      np.tile([0.5, 0.5], (112, 1)), segs, transitions, 120.0, 25.0, 3000, DecodeReport(), {"total_s": 1.0})
    fake_bundle = SimpleNamespace(ad_classes=("commercial",))
    monkeypatch.setattr(bundle_mod, "load_bundle", lambda _d: fake_bundle)
    monkeypatch.setattr(models_mod, "Models", lambda *a, **k: SimpleNamespace(plan=SimpleNamespace(engine="fake"), precision="fp32"))
    monkeypatch.setattr(analyse_mod, "analyse", lambda *a, **k: result)
    monkeypatch.setattr(formats_mod, "write_outputs", lambda *a, **k: [])

    assert command.offline_run(tmp_path / "broadcast.mp4", truth_csv, tmp_path / "model", tmp_path / "out") == 0
    out = capsys.readouterr().out
    rows = [l for l in out.splitlines() if l.strip().startswith(("00:", "01:", "02:"))]
    assert len(rows) == 3, out
    assert "starts as" in rows[0] and "football" in rows[0] and "-" not in rows[0].split("football")[1], rows[0]
    assert "ad starts" in rows[1] and "cut" in rows[1] and "+0.1 s" in rows[1], rows[1]
    assert "ad ends" in rows[2] and "black" in rows[2] and "+0.0 s" in rows[2], rows[2]
    assert "boundary recall within 1 s" in out
