"""Shared, session-scoped real artefacts: a generated demo set, a backbone exported by the
real tf2onnx (random weights: no download here) and a bundle trained on the demo set.

They are built once per test run through the real command line, as a user would, and
reused by every test that needs them (a full export + train takes about two minutes on
two cores).
"""

from __future__ import annotations

import os
import shutil
import subprocess
import sys
from collections.abc import Iterator
from contextlib import contextmanager
from pathlib import Path

import pytest

REPO = Path(__file__).resolve().parents[1]
CLI = [sys.executable, "-m", "detector"]
TEST_DEMO = {"train_clips": 4, "test_clips": 2, "clip_seconds": 10.0, "train_recordings": 1,
             "recording_seconds": 90.0, "broadcast_seconds": 120.0}


def cli_env(extra: dict[str, str] | None = None) -> dict[str, str]:
    env = dict(os.environ)
    env.setdefault("TF_CPP_MIN_LOG_LEVEL", "2")
    env["PYTHONPATH"] = str(REPO) + os.pathsep + env.get("PYTHONPATH", "")
    if extra:
        env.update(extra)
    return env


def run_cli(*args: object, timeout: float = 900, env: dict[str, str] | None = None, cwd: Path | None = None) -> subprocess.CompletedProcess:
    """`ad-detector ARGS` as a subprocess; returns the completed process (text output)."""
    return subprocess.run([*CLI, *map(str, args)], capture_output=True, text=True, timeout=timeout, env=cli_env(env), cwd=cwd)


def assert_usage_error(proc: subprocess.CompletedProcess, *needles: str) -> str:
    """Exit 2, no traceback, and one `ad-detector: error:` line (the last) containing `needles`."""
    err = proc.stderr
    assert proc.returncode == 2, f"exit {proc.returncode}, expected 2\nstdout: {proc.stdout[-1500:]}\nstderr: {err[-3000:]}"
    assert "Traceback" not in err, err[-3000:]
    lines = [l for l in err.splitlines() if l.strip()]
    ours = [l for l in lines if l.startswith("ad-detector:")]
    assert len(ours) == 1 and lines[-1] == ours[0], f"expected one final error line, got:\n{err[-3000:]}"
    line = ours[0]
    assert line.startswith("ad-detector: error: "), line
    for needle in needles:
        assert needle in line, f"{needle!r} not in {line!r}"
    return line


def last_line(text: str) -> str:
    lines = [l for l in text.strip().splitlines() if l.strip()]
    return lines[-1] if lines else ""


# --------------------------------------------------------------------------- work units and their order (xdist)

SHARED = {"demo_set", "backbone_dir", "bundle_dir"}     # the session artefacts one worker builds, the other waits for
DURATIONS = REPO / "tests" / "durations.json"          # seconds per file from a full run (see tests/README.md)
# Files whose assertions ride on wall-clock pace (a live daemon's latency, a Ray cluster's
# start, a paced source): one work unit, so they run one after another on one worker and never
# two of them at once on the two cores (a cluster run beside the live test slowed both past
# their bounds).
REALTIME = ("tests/cluster/test_cluster.py", "tests/live/test_live.py", "tests/live/test_faults.py",
            "tests/live/test_watchdog.py", "tests/live/test_reload.py", "tests/live/test_source_clock.py",
            "tests/marker/test_marker_live.py")


def unit_of(path: str) -> str:
    return "realtime" if path in REALTIME else path


def unit_order(files: dict[str, set[str]], seconds: dict[str, float]) -> list[str]:
    """Work units (a file, or the realtime group) in the order the two workers take them (pure).

    `make test` runs `--dist loadfile --no-loadscope-reorder` with the scheduler below: whole units, in queue order; a
    worker takes the next unit when it is nearly done with its own. The longest unit that needs
    the session bundle goes first, so its worker starts building the bundle at once; then every
    unit that needs none, longest first, which the other worker runs meanwhile; then the rest
    longest first, so the run does not end with one worker in a long unit while the other
    idles. A file missing from `seconds` counts 10 s."""
    cost: dict[str, float] = {}
    needs: dict[str, bool] = {}
    for f, fixtures in files.items():
        u = unit_of(f)
        cost[u] = cost.get(u, 0.0) + seconds.get(f, 10.0)
        needs[u] = needs.get(u, False) or bool(fixtures & SHARED)
    needy = sorted((u for u in cost if needs[u]), key=lambda u: (-cost[u], u))
    free = sorted((u for u in cost if not needs[u]), key=lambda u: (-cost[u], u))
    return needy[:1] + free + needy[1:]


def pytest_xdist_make_scheduler(config, log):
    """`--dist loadfile`, with the REALTIME files as one scope: whole files to a worker, those
    together. (xdist's own `loadgroup` renames node ids through an attribute pytest 9.2 no
    longer reads, so its groups are silently ignored here; a scheduler's scope is a public hook.)"""
    if config.getvalue("dist") != "loadfile":
        return None
    from xdist.scheduler import LoadScopeScheduling

    class UnitScheduling(LoadScopeScheduling):
        def _split_scope(self, nodeid: str) -> str:
            return unit_of(nodeid.split("::")[0])

    return UnitScheduling(config, log)


BESIDE_REALTIME_NICE = 10     # CFS weight 110 against 1024: the paced tests get ~90 % of a contended core
_niced = False


def _set_batch_priority(nice: int) -> str:
    """Give this worker (and every process it starts from now on) the priority `nice`.

    Linux with autogroup (the default) shares the CPU fairly between sessions and applies a
    process's nice only inside its session: both xdist workers sit in `make test`'s session, so a
    plain nice would not move CPU between them. The worker therefore leaves for a session of its
    own (once) and sets that session's autogroup nice as well as its own. Returns what it did."""
    done = []
    if nice > 0:
        try:
            os.setsid()
            done.append("own session")
        except OSError:
            pass          # already a session or group leader: its autogroup is its own anyway
    try:
        Path("/proc/self/autogroup").write_text(f"{nice}\n")
        done.append(f"autogroup nice {nice}")
    except OSError:
        pass              # no autogroup (kernel without it) or no permission to lower a nice
    try:
        os.setpriority(os.PRIO_PROCESS, 0, nice)
        done.append(f"nice {nice}")
    except OSError:
        pass
    return ", ".join(done) or "nothing (not permitted)"


@pytest.hookimpl(tryfirst=True)
def pytest_runtest_setup(item) -> None:
    """The worker that runs wall-clock-free files runs them at a low CPU priority.

    The REALTIME files assert a live daemon's pace (latency, a Ray cluster's progress) and run on
    one worker; the other worker meanwhile trains, classifies and exports at full speed, and on two
    cores it took half the CPU from a live daemon that needs a core: decisions came 9 s late and
    the cluster test ran out of its bound. A daemon in production owns its machine; so do the
    REALTIME files here, while the other worker soaks up every idle cycle, so the wall time stays."""
    global _niced
    if not os.environ.get("PYTEST_XDIST_WORKER"):
        return
    realtime = unit_of(item.nodeid.split("::")[0]) == "realtime"
    if realtime == _niced:                     # a realtime file on a lowered worker: back up (root only)
        what = _set_batch_priority(0 if realtime else BESIDE_REALTIME_NICE)
        _niced = not realtime
        sys.stderr.write(f"[{os.environ['PYTEST_XDIST_WORKER']}] CPU priority for "
                         f"{'realtime' if realtime else 'batch'} files: {what}\n")


def pytest_collection_modifyitems(session, config, items) -> None:
    import json

    try:
        seconds = json.loads(DURATIONS.read_text())
    except (OSError, ValueError):
        seconds = {}
    files: dict[str, set[str]] = {}
    for item in items:
        files.setdefault(item.nodeid.split("::")[0], set()).update(item.fixturenames)
    rank = {u: i for i, u in enumerate(unit_order(files, seconds))}
    realtime = {f: i for i, f in enumerate(REALTIME)}
    # stable: a file's own order is kept; the realtime files in REALTIME's order
    items.sort(key=lambda item: (rank[unit_of(f := item.nodeid.split("::")[0])], realtime.get(f, 0)))


@pytest.fixture
def ctx():
    """A ZeroMQ context of the test's own, destroyed without lingering."""
    import zmq

    context = zmq.Context()
    yield context
    context.destroy(linger=0)


@pytest.fixture(scope="session")
def session_dir(tmp_path_factory) -> Path:
    """One directory for the run's shared artefacts. With pytest-xdist (`make test` runs two
    workers) every worker sees the same one, and `_built_once` makes the first worker build
    each artefact while the other waits for it: one demo set, one export, one training."""
    if not os.environ.get("PYTEST_XDIST_WORKER"):
        return tmp_path_factory.mktemp("session")
    shared = tmp_path_factory.getbasetemp().parent / "session"
    shared.mkdir(exist_ok=True)
    return shared


@contextmanager
def _built_once(session_dir: Path, name: str) -> Iterator[bool]:
    """Hold the artefact's lock; yields whether it still has to be built (then marks it done)."""
    from filelock import FileLock

    done = session_dir / f".{name}.done"
    with FileLock(str(session_dir / f".{name}.lock")):
        todo = not done.exists()
        yield todo
        if todo:
            done.touch()


@pytest.fixture(scope="session")
def cache_env(session_dir: Path) -> dict[str, str]:
    """Feature cache inside the test run, never the user's."""
    return {"XDG_CACHE_HOME": str(session_dir / "cache")}


@pytest.fixture(scope="session")
def demo_set(session_dir: Path):
    from detector.demo.data import generate_demo_set

    with _built_once(session_dir, "demo"):     # a finished demo set is reused by generate_demo_set itself
        return generate_demo_set(session_dir / "demo", seed=0, progress=False, **TEST_DEMO)


@pytest.fixture(scope="session")
def backbone_dir(session_dir: Path, cache_env) -> Path:
    out = session_dir / "backbone"
    with _built_once(session_dir, "backbone") as todo:
        if todo:
            proc = run_cli("export-backbone", "-o", out, "--weights", "none", env=cache_env)
            assert proc.returncode == 0, proc.stderr[-3000:]
    return out


@pytest.fixture(scope="session")
def bundle_dir(session_dir: Path, backbone_dir: Path, demo_set, cache_env) -> Path:
    """A trained bundle (backbone copied from `backbone_dir`, sequence trained on the demo set)."""
    out = session_dir / "bundle"
    with _built_once(session_dir, "bundle") as todo:
        if todo:
            shutil.rmtree(out, ignore_errors=True)      # a worker that failed half-way left it
            out.mkdir()
            for name in ("backbone.onnx", "model.json"):
                shutil.copy2(backbone_dir / name, out / name)
            proc = run_cli("train", demo_set.data_dir, "-o", out, "--no-progress", "--epochs", "20", env=cache_env)
            assert proc.returncode == 0, proc.stderr[-3000:]
    return out


def copy_bundle(src: Path, dst: Path) -> Path:
    shutil.copytree(src, dst, ignore=shutil.ignore_patterns("training"))
    return dst
