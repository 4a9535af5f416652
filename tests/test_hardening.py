"""Loaders fed hostile or broken input: the model manifest, the truth/label files of
`evaluate --truth` and `train`, and certificate files. Whatever the bytes, the result is a
valid object or a UsageError of one line (exit 2 through the CLI), never a traceback.
(The config loader and the event decoder have their own fuzz tests in test_config.py and
test_events.py.)"""

from __future__ import annotations

import hashlib
import json
import string
from pathlib import Path

import pytest
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

from detector.model.bundle import load_bundle
from detector.errors import UsageError
from detector.events.curve import KeyFileError, load_public_key, load_secret_certificate
from detector.analysis.segments import read_labels

FUZZ = settings(max_examples=150, deadline=None, suppress_health_check=[HealthCheck.function_scoped_fixture])

JSON_LEAF = st.none() | st.booleans() | st.integers() | st.floats() | st.text(max_size=20)
JSON = st.recursive(JSON_LEAF, lambda inner: st.lists(inner, max_size=4) | st.dictionaries(st.text(max_size=8), inner, max_size=4),
                    max_leaves=12)


def one_line_usage_error(exc: BaseException) -> str:
    assert isinstance(exc, UsageError), f"{type(exc).__name__}: {exc}"
    text = str(exc)
    assert text and "\n" not in text and "\r" not in text, repr(text)
    return text


# --------------------------------------------------------------------------- model manifest

def bundle_with(tmp: Path, manifest: object | str) -> Path:
    tmp.mkdir(parents=True, exist_ok=True)
    (tmp / "backbone.onnx").write_bytes(b"not really onnx")
    (tmp / "model.json").write_text(manifest if isinstance(manifest, str) else json.dumps(manifest))
    return tmp


def good_manifest(tmp: Path) -> dict:
    digest = hashlib.sha256(b"not really onnx").hexdigest()
    return {"format": 1, "input_size": [299, 299], "analysis_fps": 5, "backbone": {"file": "backbone.onnx", "sha256": digest}}


def test_a_good_backbone_only_manifest_loads(tmp_path):
    root = bundle_with(tmp_path, good_manifest(tmp_path))
    assert load_bundle(root, require_sequence=False, check_graphs=False).backbone_path == root / "backbone.onnx"


@pytest.mark.parametrize("name", ["../backbone.onnx", "/etc/passwd", "sub/backbone.onnx", "..", ".", "a\\b", "x\0y", ""])
def test_manifest_file_names_cannot_leave_the_bundle(tmp_path, name):
    outside = tmp_path / "backbone.onnx"
    outside.write_bytes(b"not really onnx")  # a file that WOULD hash right, one level up
    manifest = good_manifest(tmp_path)
    manifest["backbone"]["file"] = name
    with pytest.raises(UsageError) as info:
        load_bundle(bundle_with(tmp_path / "bundle", manifest), require_sequence=False, check_graphs=False)
    one_line_usage_error(info.value)


@pytest.mark.parametrize("text", ["[" * 100_000, '{"format": 1, "analysis_fps": 1' + "0" * 400 + "}",
                                  '{"format": 1, "input_size": [299, 299], "analysis_fps": 1' + "0" * 400 + "}"])
def test_pathological_manifests_are_usage_errors(tmp_path, text):
    with pytest.raises(UsageError) as info:
        load_bundle(bundle_with(tmp_path, text), require_sequence=False, check_graphs=False)
    one_line_usage_error(info.value)


@FUZZ
@given(key=st.sampled_from(["format", "input_size", "analysis_fps", "backbone", "sequence", "classes", "ad_classes",
                            "window_frames"]), value=JSON)
def test_fuzz_one_bad_manifest_value(tmp_path, key, value):
    manifest = good_manifest(tmp_path)
    manifest["sequence"] = {"file": "backbone.onnx", "sha256": manifest["backbone"]["sha256"]}
    manifest.update(classes=["football", "commercial"], ad_classes=["commercial"], window_frames=40)
    manifest[key] = value
    try:
        load_bundle(bundle_with(tmp_path, manifest), check_graphs=False)
    except Exception as exc:  # noqa: BLE001 - the assertion is what it must be
        one_line_usage_error(exc)


@FUZZ
@given(st.binary(max_size=300))
def test_fuzz_manifest_bytes(tmp_path, data):
    tmp_path.joinpath("model.json").write_bytes(data)
    tmp_path.joinpath("backbone.onnx").write_bytes(b"x")
    try:
        load_bundle(tmp_path, require_sequence=False, check_graphs=False)
    except Exception as exc:  # noqa: BLE001
        one_line_usage_error(exc)


# --------------------------------------------------------------------------- truth / labels

CSV_TOKENS = ["start,end,label\n", "0", "1.5", "30", "-1", "nan", "inf", "1e400", ",", "\n", "\r\n", '"', "commercial",
              "football", " ", "\t", "\0", "#", "\ufeff", "x" * 10, "\u2028", "\x85", "\x0c"]


@pytest.mark.parametrize("suffix", [".csv", ".edl"])
@FUZZ
@given(text=st.lists(st.sampled_from(CSV_TOKENS), max_size=40).map("".join) | st.text(max_size=200))
def test_fuzz_truth_files(tmp_path, suffix, text):
    path = tmp_path / f"truth{suffix}"
    path.write_text(text, encoding="utf-8", errors="surrogatepass")
    try:
        segments = read_labels(path, {"commercial"})
    except Exception as exc:  # noqa: BLE001
        assert str(path) in one_line_usage_error(exc)
        return
    for a, b in zip(segments, segments[1:]):
        assert a.start < a.end <= b.start + 1e-6


@pytest.mark.parametrize("suffix", [".csv", ".edl"])
@FUZZ
@given(data=st.binary(max_size=300))
def test_fuzz_truth_bytes(tmp_path, suffix, data):
    path = tmp_path / f"truth{suffix}"
    path.write_bytes(data)
    try:
        read_labels(path, {"commercial"})
    except Exception as exc:  # noqa: BLE001
        one_line_usage_error(exc)


@pytest.mark.parametrize("text", ["start,end,label\n0,1,\"" + "x" * 200_000 + "\"\n",   # over csv's field limit
                                  "start,end,label\n0,1,a\0b\n",
                                  'start,end,label\n0,"multi\nline",commercial\n',
                                  "start,end,label\n0," + "9" * 5000 + ",commercial\n"])
def test_truth_csv_edge_cases_are_one_line(tmp_path, text):
    path = tmp_path / "truth.csv"
    path.write_text(text)
    try:
        read_labels(path, {"commercial"})
    except Exception as exc:  # noqa: BLE001
        one_line_usage_error(exc)


def test_truth_path_that_is_a_directory(tmp_path):
    with pytest.raises(UsageError) as info:
        read_labels(tmp_path, {"commercial"})
    one_line_usage_error(info.value)


# --------------------------------------------------------------------------- key files

@FUZZ
@given(data=st.lists(st.sampled_from([b"metadata\n", b"curve\n", b"    public-key = ", b"    secret-key = ", b'"',
                                      b"@cK*4}nmzXuT0Niy.ItbBwqaBUUGaG0Di<myVYLR", b"=", b"\n", b"#", b"\xff", b"\0"]),
                     max_size=20).map(b"".join) | st.binary(max_size=200))
def test_fuzz_certificate_files(tmp_path, data):
    path = tmp_path / "k.key_secret"
    path.write_bytes(data)
    path.chmod(0o600)
    for load in (load_public_key, load_secret_certificate):
        try:
            load(path)
        except KeyFileError as exc:
            assert "\n" not in str(exc) and str(path) in str(exc)
