"""The order `make test` hands files to its two workers (tests/conftest.py: file_order)."""

from __future__ import annotations

import json

from tests.conftest import DURATIONS, REALTIME, unit_order


def test_the_longest_bundle_file_first_then_the_free_ones_then_the_rest_longest_first() -> None:
    files = {"a.py": {"bundle_dir", "tmp_path"}, "b.py": {"tmp_path"}, "c.py": {"demo_set"}, "d.py": set(),
             "e.py": {"backbone_dir"}, "new.py": {"bundle_dir"}}
    seconds = {"a.py": 50, "b.py": 5, "c.py": 300, "d.py": 40, "e.py": 20}
    # c builds the bundle at once; d and b run on the other worker meanwhile; new.py counts 10 s
    assert unit_order(files, seconds) == ["c.py", "d.py", "b.py", "a.py", "e.py", "new.py"]


def test_the_realtime_files_are_one_unit_costing_their_sum() -> None:
    files = {REALTIME[0]: {"bundle_dir"}, REALTIME[1]: {"tmp_path"}, "big.py": {"bundle_dir"}, "free.py": set()}
    seconds = {REALTIME[0]: 100, REALTIME[1]: 100, "big.py": 150, "free.py": 1}
    assert unit_order(files, seconds) == ["realtime", "free.py", "big.py"]


def test_every_timed_file_exists_and_the_slowest_are_timed() -> None:
    from tests.conftest import REPO

    seconds = json.loads(DURATIONS.read_text())
    assert all((REPO / f).is_file() for f in seconds), [f for f in seconds if not (REPO / f).is_file()]
    assert all((REPO / f).is_file() for f in REALTIME)
    assert all(v >= 0 for v in seconds.values())
