"""The config validator: the shipped example, `check-config` as a user runs it, every kind of
mistake an operator makes (each reported with its key path and line, all at once), secrets
kept out of every output, and fuzzing that nothing but a Config or a ConfigError comes out.

Fast: no models, no network.
"""

from __future__ import annotations

import string
from pathlib import Path

import pytest
import yaml
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

from detector.config import (Config, ConfigError, dump_resolved, load_config, parse_config, redact, redact_text,
                             source_kind)
from detector.analysis.decision import DecisionSettings
from detector.errors import UsageError
from tests.conftest import REPO, run_cli

EXAMPLE = REPO / "config.yaml"
MINIMAL = "model: models/demo\nchannels:\n  - name: demo\n    source: rtsp://127.0.0.1:8554/live\n"


def write(tmp_path: Path, text: str, name: str = "config.yaml") -> Path:
    path = tmp_path / name
    path.write_text(text, encoding="utf-8")
    return path


def errors_of(text: str, base_dir: Path | None = None) -> list[tuple[str, int | None, str]]:
    with pytest.raises(ConfigError) as info:
        parse_config(text, origin="cfg.yaml", base_dir=base_dir)
    return info.value.errors


def paths_of(text: str, base_dir: Path | None = None) -> dict[str, tuple[int | None, str]]:
    return {path: (line, msg) for path, line, msg in errors_of(text, base_dir)}


# --------------------------------------------------------------------------- the example

def test_example_config_validates_with_the_contract_values():
    cfg = load_config(EXAMPLE)
    assert cfg.source_path == EXAMPLE.resolve()
    assert cfg.model == REPO / "demo" / "models"
    assert [(c.name, c.source, c.realtime, c.kind) for c in cfg.channels] == [("demo", "rtsp://127.0.0.1:8554/demo", False, "rtsp")]
    assert cfg.inference.providers == ["CUDAExecutionProvider", "CPUExecutionProvider"]
    assert (cfg.inference.batch_size, cfg.inference.max_batch_delay_ms) == (16, 100)
    assert cfg.decision.to_settings() == DecisionSettings(enter_threshold=0.7, exit_threshold=0.3,
                                                          min_segment_seconds=3.0, smoothing_windows=2)
    assert (cfg.events.bind, cfg.events.snapshot_bind) == ("tcp://127.0.0.1:5556", "tcp://127.0.0.1:5557")
    assert cfg.events.journal == REPO / "events.jsonl"
    assert (cfg.metrics.bind, cfg.metrics.host, cfg.metrics.port) == ("127.0.0.1:9108", "127.0.0.1", 9108)


def test_example_documents_every_key():
    """Every key the validator knows appears in the shipped example (so it is documented there)."""
    text = EXAMPLE.read_text()
    data = yaml.safe_load(text)
    for section in ("capture", "inference", "decision", "events", "metrics"):
        model = type(getattr(load_config(EXAMPLE), section))
        assert set(data[section]) == set(model.model_fields), section
    assert set(data["channels"][0]) == {"name", "source", "realtime"}
    lines = text.splitlines()
    for before, line in zip(["", *lines], lines):
        if ":" in line and not line.lstrip().startswith("#") and not line.rstrip().endswith(":"):
            # a comment on the line, or on the line just above it
            assert "#" in line or before.lstrip().startswith("#"), f"undocumented: {line!r}"


def test_defaults_fill_every_optional_section(tmp_path):
    cfg = load_config(write(tmp_path, MINIMAL))
    assert cfg.capture.rtsp_transport == "tcp" and cfg.capture.ring_capacity == 64
    assert cfg.inference.require_gpu is False and cfg.inference.threads == 0
    assert cfg.decision.hop_seconds == 1.0 and cfg.decision.smoothing_windows == 2
    assert cfg.events.heartbeat_seconds == 5 and cfg.events.send_hwm == 1000
    # relative paths, written or defaulted, resolve against the config file's directory
    assert cfg.model == tmp_path / "models" / "demo"
    assert cfg.events.journal == tmp_path / "events.jsonl"


def test_empty_sections_mean_defaults(tmp_path):
    cfg = load_config(write(tmp_path, MINIMAL + "decision:\nevents: ~\n"))
    assert cfg.decision.enter_threshold == 0.7 and cfg.events.journal == tmp_path / "events.jsonl"


def test_config_is_immutable():
    cfg = parse_config(MINIMAL)
    with pytest.raises(Exception):
        cfg.decision.enter_threshold = 0.1  # type: ignore[misc]


# --------------------------------------------------------------------------- check-config, as a user runs it

def test_check_config_prints_the_resolved_config():
    proc = run_cli("check-config", "-c", EXAMPLE, timeout=60)
    assert proc.returncode == 0, proc.stderr
    resolved = yaml.safe_load(proc.stdout)
    assert resolved["model"] == str(REPO / "demo" / "models")
    assert resolved["events"]["journal"] == str(REPO / "events.jsonl")
    assert resolved["capture"]["stall_seconds"] == 10
    # the printed config is itself a valid config that means the same thing
    again = parse_config(proc.stdout, base_dir=Path("/elsewhere"))
    assert again.model_dump() == load_config(EXAMPLE).model_dump()


def test_dump_resolved_round_trips(tmp_path):
    cfg = load_config(write(tmp_path, MINIMAL + "capture: {rtsp_transport: udp}\n"))
    assert parse_config(dump_resolved(cfg)).model_dump() == cfg.model_dump()
    assert "source_path" not in dump_resolved(cfg)


def test_check_config_typo_names_key_path_and_line(tmp_path):
    path = write(tmp_path, MINIMAL + "decision:\n  enter_treshold: 0.8\n")
    proc = run_cli("check-config", "-c", path, timeout=60)
    assert proc.returncode == 2
    assert proc.stdout == ""
    assert f"{path}:6: decision.enter_treshold: unknown key; did you mean 'enter_threshold'?" in proc.stderr
    assert "Traceback" not in proc.stderr


def test_check_config_several_errors_all_reported_one_per_line(tmp_path):
    path = write(tmp_path, MINIMAL + "decison:\n  enter_threshold: 0.8\ninference:\n  batch_size: sixteen\n")
    proc = run_cli("check-config", "-c", path, timeout=60)
    assert proc.returncode == 2
    lines = proc.stderr.strip().splitlines()
    assert lines == [f"ad-detector: error: {path}: 2 errors",
                     f"{path}:5: decison: unknown key; did you mean 'decision'?",
                     f"{path}:8: inference.batch_size: input should be a valid integer (got 'sixteen')"]


def test_check_config_missing_file(tmp_path):
    proc = run_cli("check-config", "-c", tmp_path / "nope.yaml", timeout=60)
    assert proc.returncode == 2
    assert proc.stderr.strip() == f"ad-detector: error: {tmp_path / 'nope.yaml'}: not found"


def test_missing_file_is_a_usage_error(tmp_path):
    with pytest.raises(UsageError, match="not found"):
        load_config(tmp_path / "nope.yaml")


def test_directory_and_non_utf8(tmp_path):
    with pytest.raises(ConfigError, match="is a directory"):
        load_config(tmp_path)
    bad = tmp_path / "latin1.yaml"
    bad.write_bytes(b"model: caf\xe9\n")
    with pytest.raises(ConfigError, match="not UTF-8"):
        load_config(bad)


# --------------------------------------------------------------------------- each kind of mistake

def test_typo_in_section_name():
    errors = paths_of(MINIMAL + "decison:\n  enter_threshold: 0.8\n")
    assert errors == {"decison": (5, "unknown key; did you mean 'decision'?")}


def test_key_in_the_wrong_section():
    errors = paths_of(MINIMAL + "inference:\n  enter_threshold: 0.8\n")
    assert errors == {"inference.enter_threshold": (6, "unknown key here; it belongs in the decision section")}


def test_wrong_type():
    line, msg = paths_of(MINIMAL + 'inference:\n  batch_size: "sixteen"\n')["inference.batch_size"]
    assert line == 6 and "valid integer" in msg and "sixteen" in msg


def test_booleans_are_not_numbers_and_numbers_are_not_names():
    errors = paths_of("model: m\nchannels:\n  - name: 12\n    source: rtsp://h/x\ninference:\n  batch_size: true\n")
    assert errors["channels[0].name"][0] == 3 and "quote it" in errors["channels[0].name"][1]
    assert errors["inference.batch_size"][0] == 6


@pytest.mark.parametrize("key,value", [("batch_size", 0), ("batch_size", 257), ("max_batch_delay_ms", 10001), ("threads", -1)])
def test_inference_ranges(key, value):
    assert f"inference.{key}" in paths_of(MINIMAL + f"inference:\n  {key}: {value}\n")


@pytest.mark.parametrize("value", [".nan", ".inf", "-1", "0"])
def test_hop_seconds_must_be_positive_and_finite(value):
    assert paths_of(MINIMAL + f"decision:\n  hop_seconds: {value}\n")["decision.hop_seconds"][0] == 6


def test_provider_names():
    errors = paths_of(MINIMAL + "inference:\n  providers: [CUDAExecutionProvider, cuda]\n")
    assert "inference.providers[1]" in errors and "provider name" in errors["inference.providers[1]"][1]
    assert "inference.providers" in paths_of(MINIMAL + "inference:\n  providers: []\n")
    assert "listed twice" in paths_of(MINIMAL + "inference:\n  providers: [CPUExecutionProvider, CPUExecutionProvider]\n")[
        "inference.providers[1]"][1]
    # a single provider written without brackets is accepted as a list
    assert parse_config(MINIMAL + "inference:\n  providers: CPUExecutionProvider\n").inference.providers == ["CPUExecutionProvider"]


def test_require_gpu_with_only_cpu_is_contradictory():
    errors = paths_of(MINIMAL + "inference:\n  providers: [CPUExecutionProvider]\n  require_gpu: true\n")
    assert "inference.require_gpu" in errors


def test_duplicate_channel_names_name_both_positions():
    text = ("model: m\nchannels:\n  - {name: a, source: 'rtsp://h/1'}\n  - {name: b, source: 'rtsp://h/2'}\n"
            "  - {name: a, source: 'rtsp://h/3'}\n")
    assert paths_of(text) == {"channels[2].name": (5, "duplicate channel name 'a' (also channels[0].name)")}


def test_duplicates_reported_even_when_another_channel_is_broken():
    text = ("model: m\nchannels:\n  - {name: a, source: 'rtsp://h/1'}\n  - {name: a, source: 'rtsp://h/2'}\n"
            "  - {name: c, source: 'nope://h/3'}\n")
    errors = paths_of(text)
    assert set(errors) == {"channels[1].name", "channels[2].source"}


@pytest.mark.parametrize("name", ["bad name", "", "a/b", "ä", "x" * 65, "a.b"])
def test_bad_channel_name(name):
    errors = paths_of(f"model: m\nchannels:\n  - name: {name!r}\n    source: rtsp://h/x\n")
    assert errors["channels[0].name"][0] == 3


def test_exit_above_enter_names_both_keys():
    line, msg = paths_of(MINIMAL + "decision:\n  enter_threshold: 0.6\n  exit_threshold: 0.8\n")["decision.exit_threshold"]
    assert line == 7 and "exit_threshold" in msg and "enter_threshold" in msg


def test_threshold_range():
    assert "decision.enter_threshold" in paths_of(MINIMAL + "decision:\n  enter_threshold: 1.5\n")


def test_missing_channels_and_model():
    assert paths_of("model: m\n") == {"channels": (None, "required key missing")}
    assert paths_of("channels: [{name: a, source: 'rtsp://h/x'}]\n") == {"model": (None, "required key missing")}
    assert "channels" in paths_of("model: m\nchannels: []\n")


def test_missing_key_in_a_channel_points_at_the_channel():
    assert paths_of("model: m\nchannels:\n  - name: a\n  - name: b\n    source: rtsp://h/x\n") == {
        "channels[0].source": (3, "required key missing")}


def test_bad_yaml_syntax_has_the_line():
    errors = errors_of(MINIMAL + "decision:\n  enter_threshold: [0.7\n  exit_threshold: 0.3\n")
    assert len(errors) == 1
    path, line, msg = errors[0]
    assert path == "" and msg.startswith("invalid YAML") and line is not None and line >= 6


def test_tab_indentation_line():
    assert errors_of("model: m\n\tchannels: []\n")[0][1] == 2


@pytest.mark.parametrize("text,needle", [("", "empty config"), ("# only a comment\n", "empty config"),
                                         ("- a\n- b\n", "top level must be a mapping"), ("just text\n", "top level"),
                                         ("a: 1\n---\nb: 2\n", "single document")])
def test_empty_or_not_a_mapping(text, needle):
    assert needle in errors_of(text)[0][2]


def test_duplicate_yaml_key_is_an_error():
    text = MINIMAL + "decision:\n  enter_threshold: 0.8\n  enter_threshold: 0.9\n"
    assert paths_of(text)["decision.enter_threshold"] == (7, "duplicate key (first on line 6)")


def test_yaml_merge_keys_are_not_duplicates():
    text = ("model: m\nchannels:\n  - &first {name: a, source: 'rtsp://h/1'}\n"
            "  - <<: *first\n    name: b\n")
    cfg = parse_config(text)
    assert [(c.name, c.source) for c in cfg.channels] == [("a", "rtsp://h/1"), ("b", "rtsp://h/1")]


def test_python_tags_are_refused():
    assert "could not determine a constructor" in errors_of("model: !!python/object/apply:os.system [true]\n")[0][2]


def test_file_source_must_exist_and_resolves_against_the_config_dir(tmp_path):
    (tmp_path / "media").mkdir()
    (tmp_path / "media" / "rec.ts").write_bytes(b"\0")
    path = write(tmp_path, "model: m\nchannels:\n  - {name: a, source: media/rec.ts, realtime: true}\n"
                           "  - {name: b, source: media/missing.ts}\n  - {name: c, source: media}\n")
    with pytest.raises(ConfigError) as info:
        load_config(path)
    errors = {p: (line, msg) for p, line, msg in info.value.errors}
    assert errors["channels[1].source"] == (4, f"file not found: {tmp_path / 'media' / 'missing.ts'}")
    assert errors["channels[2].source"][1].startswith("not a regular file")
    assert set(errors) == {"channels[1].source", "channels[2].source"}
    good = load_config(write(tmp_path, "model: m\nchannels:\n  - {name: a, source: media/rec.ts, realtime: true}\n", "ok.yaml"))
    assert good.channels[0].source == str(tmp_path / "media" / "rec.ts") and good.channels[0].kind == "file"


def test_realtime_only_for_files():
    errors = paths_of("model: m\nchannels:\n  - name: a\n    source: udp://@239.0.0.1:1234\n    realtime: true\n")
    assert errors["channels[0].realtime"][0] == 5


def test_network_sources_are_not_contacted_but_must_be_well_formed():
    cfg = parse_config("model: m\nchannels:\n" + "".join(
        f"  - {{name: c{i}, source: '{s}'}}\n" for i, s in enumerate(
            ["rtsp://10.255.255.1:554/x", "rtsps://cam/x", "rtmp://h/live/key", "udp://@239.0.0.1:1234",
             "srt://:9000?mode=listener", "https://h/playlist.m3u8", "/dev/video0"])))
    assert [c.kind for c in cfg.channels] == ["rtsp", "rtsp", "rtmp", "udp", "srt", "http", "device"]
    errors = paths_of("model: m\nchannels:\n  - {name: a, source: 'rstp://h/x'}\n  - {name: b, source: 'http://'}\n"
                      "  - {name: c, source: 'rtsp://h:99999/x'}\n")
    assert set(errors) == {"channels[0].source", "channels[1].source", "channels[2].source"}
    assert "unsupported source scheme 'rstp://'" in errors["channels[0].source"][1]


@pytest.mark.parametrize("source,kind", [("rtsp://h/x", "rtsp"), ("RTSP://h/x", "rtsp"), ("rtmp://h/x", "rtmp"),
                                         ("udp://@:1234", "udp"), ("srt://h:1", "srt"), ("http://h/a.m3u8", "http"),
                                         ("https://h/a.m3u8", "http"), ("/dev/video12", "device"),
                                         ("/dev/videox", "file"), ("rec.mp4", "file"), ("/srv/a b.ts", "file")])
def test_source_kind(source, kind):
    assert source_kind(source) == kind


@pytest.mark.parametrize("source", ["", "  ", "ftp://h/x", "file:///x.mp4"])
def test_source_kind_rejects(source):
    with pytest.raises(ValueError):
        source_kind(source)


def test_endpoints():
    assert "events.bind" in paths_of(MINIMAL + "events:\n  bind: 127.0.0.1:5556\n")
    assert "events.snapshot_bind" in paths_of(MINIMAL + "events:\n  snapshot_bind: tcp://127.0.0.1:5556\n")
    assert "events.snapshot_bind" in paths_of(MINIMAL + "events:\n  bind: tcp://*:5600\n  snapshot_bind: tcp://127.0.0.1:5600\n")
    assert "metrics.bind" in paths_of(MINIMAL + "metrics:\n  bind: 9108\n")
    assert "metrics.bind" in paths_of(MINIMAL + "metrics:\n  bind: 127.0.0.1:70000\n")
    assert paths_of(MINIMAL + "metrics:\n  bind: 0.0.0.0:5557\n")["metrics.bind"][1] == "port 5557 is also used by events.snapshot_bind"
    cfg = parse_config(MINIMAL + "events:\n  bind: ipc://run/ev.sock\n  snapshot_bind: tcp://[::1]:5557\nmetrics:\n  bind: '[::1]:9108'\n",
                       base_dir=Path("/srv/ad"))
    assert cfg.events.bind == "ipc:///srv/ad/run/ev.sock"
    assert (cfg.metrics.host, cfg.metrics.port) == ("::1", 9108)


def test_capture_backoff_order():
    errors = paths_of(MINIMAL + "capture:\n  reconnect_initial_seconds: 10\n  reconnect_max_seconds: 5\n  rtsp_transport: http\n")
    assert set(errors) == {"capture.reconnect_max_seconds", "capture.rtsp_transport"}


def test_many_errors_at_once_are_all_reported(tmp_path):
    text = ("model: ''\n"                                             # 1
            "channels:\n"                                             # 2
            "  - {name: 'bad name', source: 'rtsp://h/x'}\n"           # 3
            "  - {name: a, source: missing.mp4}\n"                     # 4
            "  - {name: a, source: 'rtsp://h/y', realtime: true}\n"    # 5
            "capture: {ring_capacity: 0}\n"                           # 6
            "inference: {batch_size: sixteen, providers: [gpu]}\n"    # 7
            "decision: {enter_threshold: 0.5, exit_threshold: 0.6, enter_treshold: 1}\n"  # 8
            "events: {heartbeat_seconds: 0, bind: 'nope'}\n"          # 9
            "metrics: {bind: 'x'}\n"                                  # 10
            "extra: 1\n")                                             # 11
    errors = errors_of(text, base_dir=tmp_path)
    found = {(p, line) for p, line, _ in errors}
    assert found == {("model", 1), ("channels[0].name", 3), ("channels[1].source", 4), ("channels[2].name", 5),
                     ("channels[2].realtime", 5), ("capture.ring_capacity", 6), ("inference.batch_size", 7),
                     ("inference.providers[0]", 7), ("decision.exit_threshold", 8), ("decision.enter_treshold", 8),
                     ("events.heartbeat_seconds", 9), ("events.bind", 9), ("metrics.bind", 10), ("extra", 11)}
    # sorted by line, and str() is a count line then one line per error
    assert [line for _, line, _ in errors] == sorted(line for _, line, _ in errors)
    text_lines = str(ConfigError("cfg.yaml", errors)).splitlines()
    assert text_lines[0] == f"cfg.yaml: {len(errors)} errors" and len(text_lines) == len(errors) + 1
    assert all(line.startswith("cfg.yaml:") for line in text_lines)


def test_single_error_is_one_line():
    exc = ConfigError("c.yaml", [("decision.x", 4, "unknown key")])
    assert str(exc) == "c.yaml:4: decision.x: unknown key"
    assert str(ConfigError("c.yaml", [("", None, "not found")])) == "c.yaml: not found"
    assert isinstance(exc, UsageError)


# --------------------------------------------------------------------------- secrets

@pytest.mark.parametrize("url,expected", [
    ("rtsp://admin:hunter2@cam/live", "rtsp://admin:***@cam/live"),
    ("rtsp://admin:hun@ter2@cam:554/live", "rtsp://admin:***@cam:554/live"),
    ("rtsp://admin:hun/ter2@cam/live", "rtsp://admin:***@cam/live"),
    ("rtsp://admin@cam/live", "rtsp://admin@cam/live"),
    ("rtsp://cam/live", "rtsp://cam/live"),
    ("srt://h:9000?mode=caller&passphrase=hunter2pass&latency=200", "srt://h:9000?mode=caller&passphrase=***&latency=200"),
    ("https://cdn/x.m3u8?token=hunter2", "https://cdn/x.m3u8?token=***"),
    ("/srv/rec:1@x.ts", "/srv/rec:1@x.ts"),
])
def test_redact(url, expected):
    assert redact(url) == expected


@given(user=st.text(alphabet=string.ascii_letters + string.digits + "._-", max_size=12),
       password=st.text(alphabet="".join(c for c in string.printable if c not in "?# \t\n\r\x0b\x0c"), min_size=1, max_size=20))
def test_redact_hides_any_password(user, password):
    assert redact(f"rtsp://{user}:{password}@cam.example:554/live") == f"rtsp://{user}:***@cam.example:554/live"
    assert redact_text(f"got 'rtsp://{user}:{password}@cam/x' here") == f"got 'rtsp://{user}:***@cam/x' here"


def test_credentials_never_printed_by_check_config(tmp_path):
    secret = "Hunter2Secret"
    good = write(tmp_path, f"model: m\nchannels:\n  - {{name: a, source: 'rtsp://admin:{secret}@cam/live'}}\n"
                           f"  - {{name: b, source: 'srt://h:9000?passphrase={secret}'}}\n", "good.yaml")
    proc = run_cli("check-config", "-c", good, timeout=60)
    assert proc.returncode == 0, proc.stderr
    assert secret not in proc.stdout + proc.stderr and "admin:***@cam" in proc.stdout

    bad = write(tmp_path, f"model: m\nchannels:\n  - {{name: a, source: 'rtsp://admin:{secret}@cam:99999/live', realtime: true}}\n"
                          f"  - {{name: b, source: 'rtspp://admin:{secret}@cam/live'}}\n"
                          f"  - {{name: c, source: {{url: 'rtsp://admin:{secret}@cam/live'}}}}\n"
                          f"  - {{name: rtsp://admin:{secret}@cam/live, source: 'rtsp://h/x'}}\n", "bad.yaml")
    proc = run_cli("check-config", "-c", bad, timeout=60)
    assert proc.returncode == 2
    assert secret not in proc.stdout + proc.stderr
    assert "channels[0].source" in proc.stderr and "channels[1].source" in proc.stderr

    broken = write(tmp_path, f"model: m\nchannels:\n  - {{name: a, source: \"rtsp://admin:{secret}@cam/live\n", "broken.yaml")
    proc = run_cli("check-config", "-c", broken, timeout=60)
    assert proc.returncode == 2 and "invalid YAML" in proc.stderr
    assert secret not in proc.stdout + proc.stderr


# --------------------------------------------------------------------------- fuzzing

def parse_or_config_error(text: str) -> Config | None:
    """The only two outcomes allowed for any input: a Config, or a ConfigError with lines."""
    try:
        return parse_config(text, origin="fuzz.yaml", base_dir=Path("/nonexistent-base"))
    except ConfigError as exc:
        assert exc.errors
        for path, line, message in exc.errors:
            assert isinstance(path, str) and isinstance(message, str) and message
            assert line is None or (isinstance(line, int) and line >= 1)
        assert all(l.startswith("fuzz.yaml") for l in str(exc).splitlines())
        return None


YAML_TOKENS = ["model", "channels", "name", "source", "realtime", "decision", "enter_threshold", "exit_threshold",
               "inference", "providers", "batch_size", "events", "bind", "journal", "metrics", "capture",
               ":", ": ", "- ", "  ", "\n", "{", "}", "[", "]", ",", "&a ", "*a", "<<: ", "? ", "!!binary ", "!!set ",
               "!!python/object:os.system ", "!!str ", "!!int ", "'", '"', "#", "\t", "|", ">", "---\n", "...\n",
               "%YAML 1.1\n", "!!float ", "!!timestamp ", "!!bool ", "2024-13-45", "2024-01-01 10:00:00", "0x1F",
               "1e999", ".nan", "-.inf", "~", "null",
               "yes", "no", "16", "0.7", "-1", "rtsp://u:p@h/x", "/dev/video0", "x.mp4", "tcp://*:1", "ipc://@x",
               "\\0", "\x00", "\x85", "\ufeff", "é"]


@settings(max_examples=300, deadline=None, suppress_health_check=[HealthCheck.too_slow])
@given(st.lists(st.sampled_from(YAML_TOKENS), max_size=40).map("".join))
def test_fuzz_yamlish_text(text):
    parse_or_config_error(text)


@settings(max_examples=200, deadline=None)
@given(st.text(max_size=200))
def test_fuzz_arbitrary_text(text):
    parse_or_config_error(text)


KEYS = st.sampled_from(["model", "channels", "name", "source", "realtime", "capture", "inference", "decision", "events",
                        "metrics", "providers", "batch_size", "enter_threshold", "exit_threshold", "bind", "journal",
                        "snapshot_bind", "hop_seconds", "ring_capacity", "rtsp_transport", "require_gpu"]) | st.text(max_size=8)
SCALARS = (st.none() | st.booleans() | st.integers(min_value=-2**70, max_value=2**70) | st.floats()
           | st.text(max_size=20) | st.sampled_from(["rtsp://u:p@h/x", "/dev/video0", "tcp://127.0.0.1:1", "CPUExecutionProvider"]))
NESTED = st.recursive(SCALARS, lambda inner: st.lists(inner, max_size=4) | st.dictionaries(KEYS, inner, max_size=5),
                      max_leaves=25)


@settings(max_examples=150, deadline=None, suppress_health_check=[HealthCheck.too_slow])
@given(st.dictionaries(KEYS, NESTED, max_size=8))
def test_fuzz_random_nested_dicts(data):
    parse_or_config_error(yaml.safe_dump(data, allow_unicode=True))


VALID = yaml.safe_load(EXAMPLE.read_text())


@settings(max_examples=200, deadline=None, suppress_health_check=[HealthCheck.too_slow])
@given(section=st.sampled_from(["capture", "inference", "decision", "events", "metrics"]), data=st.data(), value=NESTED)
def test_fuzz_one_bad_value_in_a_valid_config(section, data, value):
    """One key of the example replaced by anything: either still valid, or an error at that key."""
    key = data.draw(st.sampled_from(sorted(VALID[section])))
    mutated = {**VALID, section: {**VALID[section], key: value}}
    cfg = parse_or_config_error(yaml.safe_dump(mutated, allow_unicode=True, sort_keys=False))
    if cfg is None:
        with pytest.raises(ConfigError) as info:
            parse_config(yaml.safe_dump(mutated, allow_unicode=True, sort_keys=False))
        paths = {p for p, _, _ in info.value.errors}
        # the error is at the mutated key (or, for a cross-key rule, at its partner in the same section)
        assert paths and all(p.startswith(f"{section}.") or (section == "events" and p == "metrics.bind") for p in paths), paths


# --------------------------------------------------------------------------- journal rotation keys

def test_check_config_prints_the_journal_rotation_keys(tmp_path):
    path = write(tmp_path, MINIMAL + "events:\n  journal_max_bytes: 1048576\n  journal_keep: 3\n")
    proc = run_cli("check-config", "-c", path, timeout=60)
    assert proc.returncode == 0, proc.stderr
    resolved = yaml.safe_load(proc.stdout)["events"]
    assert (resolved["journal_max_bytes"], resolved["journal_keep"]) == (1048576, 3)
    defaults = load_config(write(tmp_path, MINIMAL, "defaults.yaml")).events
    assert (defaults.journal_max_bytes, defaults.journal_keep) == (64 * 1024 * 1024, 5)


@pytest.mark.parametrize("key, value, needle", [
    ("journal_max_bytes", "100", "greater than or equal to 1024"),
    ("journal_max_bytes", "'64M'", "valid integer"),
    ("journal_keep", "0", "greater than or equal to 1"),
    ("journal_keep", "1.5", "valid integer"),
])
def test_bad_journal_rotation_values_name_their_key(key, value, needle):
    errors = paths_of(MINIMAL + f"events:\n  {key}: {value}\n")
    assert list(errors) == [f"events.{key}"]
    line, message = errors[f"events.{key}"]
    assert line == 6 and needle in message, message


# --------------------------------------------------------------------------- the journal under systemd

def test_a_relative_journal_lands_in_the_service_state_directory(tmp_path):
    """systemd makes the config directory read-only and passes StateDirectory= as $STATE_DIRECTORY:
    the shipped config's `journal: events.jsonl` must land there, not beside the config."""
    conf_dir, state = tmp_path / "etc", tmp_path / "var-lib"
    conf_dir.mkdir()
    state.mkdir()
    path = write(conf_dir, MINIMAL + "events:\n  journal: events.jsonl\n")
    proc = run_cli("check-config", "-c", path, timeout=60, env={"STATE_DIRECTORY": f"{state}:{tmp_path / 'other'}"})
    assert proc.returncode == 0, proc.stderr
    resolved = yaml.safe_load(proc.stdout)
    assert resolved["events"]["journal"] == str(state / "events.jsonl")
    assert resolved["model"] == str(conf_dir / "models" / "demo")        # other paths still beside the config
    absolute = write(conf_dir, MINIMAL + f"events:\n  journal: {tmp_path / 'abs.jsonl'}\n", name="abs.yaml")
    proc = run_cli("check-config", "-c", absolute, timeout=60, env={"STATE_DIRECTORY": str(state)})
    assert yaml.safe_load(proc.stdout)["events"]["journal"] == str(tmp_path / "abs.jsonl")
    proc = run_cli("check-config", "-c", path, timeout=60)               # no service: beside the config, as before
    assert yaml.safe_load(proc.stdout)["events"]["journal"] == str(conf_dir / "events.jsonl")


@pytest.mark.parametrize("journal,needle", [
    ("a-file/events.jsonl", "is not a directory"),
    ("a-dir", "is a directory; give a file path"),
])
def test_check_config_refuses_a_journal_it_cannot_write(tmp_path, journal, needle):
    (tmp_path / "a-file").write_text("x")
    (tmp_path / "a-dir").mkdir()
    path = write(tmp_path, MINIMAL + f"events:\n  journal: {journal}\n")
    proc = run_cli("check-config", "-c", path, timeout=60)
    assert proc.returncode == 2 and "Traceback" not in proc.stderr
    assert f"{path}:6: events.journal: " in proc.stderr and needle in proc.stderr, proc.stderr


def test_check_config_refuses_a_journal_on_a_read_only_disk(tmp_path):
    """What a service whose config dir is read-only saw: the journal failing from the first event."""
    from livekit import mount_small_tmpfs, remount, unmount

    disk = tmp_path / "ro"
    why = mount_small_tmpfs(disk)
    if why:
        pytest.skip(why)
    try:
        remount(disk, "ro")
        path = write(tmp_path, MINIMAL + f"events:\n  journal: {disk / 'events.jsonl'}\n")
        proc = run_cli("check-config", "-c", path, timeout=60)
        assert proc.returncode == 2, proc.stderr
        assert "events.journal: " in proc.stderr and "not writable" in proc.stderr, proc.stderr
    finally:
        unmount(disk)


def test_decision_confirmation_reaches_the_decider():
    cfg = parse_config(MINIMAL + "decision:\n  enter_confirm_seconds: 0.5\n  exit_confirm_seconds: 0\n")
    settings = cfg.decision.to_settings()
    assert (settings.enter_confirm_seconds, settings.exit_confirm_seconds) == (0.5, 0.0)
    assert parse_config(MINIMAL).decision.to_settings().exit_confirm_seconds == 3.0
    assert "decision.exit_confirm_seconds" in "\n".join(f"{p}" for p, _, _ in errors_of(MINIMAL + "decision:\n  exit_confirm_seconds: -1\n"))
