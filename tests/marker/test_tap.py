"""The raw-TS tap on the inputs the marker supports, read by the real source classes: the bytes
the marker receives are the input's own MPEG-TS, while libav decodes the same bytes as usual."""

from __future__ import annotations

import shutil
from pathlib import Path

import pytest

from detector.sources import SourceOptions, open_source
from detector.sources.support import needs_relay
from markerkit import packets, pid_of, program_map
from tests.tsmedia import SCTE35_PID, make_ts


@pytest.fixture(scope="module")
def cued_ts(tmp_path_factory) -> Path:
    path = tmp_path_factory.mktemp("tap") / "cued.ts"
    make_ts(path, seconds=4.0)
    return path


def read_through_tap(url: str, frames: int = 30) -> tuple[bytes, int]:
    got: list[bytes] = []
    source = open_source(url, SourceOptions(open_timeout=10, read_timeout=5, tap=got.append))
    assert source.open(), source.open_error
    try:
        n = sum(1 for _ in range(frames) if source.grab() and source.retrieve((64, 64)) is not None)
    finally:
        source.close()
    return b"".join(got), n


def aligned(data: bytes) -> bytes:
    start = next(i for i in range(188) if all(data[i + k * 188] == 0x47 for k in range(5)))
    data = data[start:]
    return data[:len(data) // 188 * 188]


def test_a_file_is_tapped_byte_for_byte_in_order(cued_ts):
    data, frames = read_through_tap(str(cued_ts))
    assert frames == 30
    assert cued_ts.read_bytes().startswith(data) and len(data) > 100 * 188


@pytest.mark.skipif(shutil.which("ffmpeg") is None or not needs_relay("srt"), reason="needs Debian's ffmpeg with libsrt")
def test_srt_through_the_relay_is_tapped_as_the_sender_sent_it(cued_ts):
    from senders import srt_sender

    with srt_sender(cued_ts, exact=True) as sender:
        data, frames = read_through_tap(sender.url)
    assert frames == 30
    pkts = packets(aligned(data))
    _, _, streams = program_map(pkts)
    assert (0x86, SCTE35_PID) in [(st, pid) for st, pid, _ in streams]      # the sender's PMT, SCTE-35 and all
    assert {pid_of(p) for p in pkts} >= {0, SCTE35_PID}


def test_udp_is_tapped_as_it_arrives_and_decoded_from_the_same_bytes(cued_ts):
    from senders import udp_sender

    with udp_sender(cued_ts, exact=True) as sender:
        data, frames = read_through_tap(sender.url)
    assert frames == 30
    pkts = packets(aligned(data))
    _, _, streams = program_map(pkts)
    assert (0x86, SCTE35_PID) in [(st, pid) for st, pid, _ in streams]


def test_a_silent_udp_input_times_out_instead_of_hanging():
    import socket
    import time

    from detector.sources.tap import UdpReader

    with socket.socket(socket.AF_INET, socket.SOCK_DGRAM) as s:
        s.bind(("127.0.0.1", 0))
        port = s.getsockname()[1]
    reader = UdpReader(f"udp://127.0.0.1:{port}", 0.3, 0.3, lambda b: None)
    t0 = time.monotonic()
    try:
        with pytest.raises(TimeoutError, match=f"udp://127.0.0.1:{port}"):
            reader.read()
    finally:
        reader.close()
    assert 0.25 < time.monotonic() - t0 < 2.0


def test_multicast_is_joined_and_tapped_inside_a_network_namespace(cued_ts):
    """The group is joined by the marker's own socket (never on the host's interfaces: the sender
    and the reader share one fresh namespace)."""
    import json
    import os
    import sys

    import senders

    if not senders.netns_available():
        pytest.skip("needs unshare -n and ip")
    reader = """
import json, os
from detector.sources import SourceOptions, open_source
got = []
src = open_source(os.environ["MCAST_URL"], SourceOptions(open_timeout=10, read_timeout=5, tap=got.append))
ok = src.open()
n = sum(1 for _ in range(25) if ok and src.grab())
src.close()
data = b"".join(got)
print(json.dumps({"ok": ok, "error": src.open_error, "frames": n, "bytes": len(data), "netns": os.environ["NETNS_INODE"],
                  "synced": any(all(data[i + k * 188] == 0x47 for k in range(5)) for i in range(188)) if len(data) > 2000 else False}))
"""
    env = {"PYTHONPATH": os.pathsep.join(sys.path)}
    result = senders.in_netns([sys.executable, "-c", reader], cued_ts, timeout=40, env=env)
    assert result.returncode == 0, result.stderr[-3000:]
    got = json.loads(result.stdout.strip().splitlines()[-1])
    assert got["ok"] and got["frames"] == 25 and got["bytes"] > 50 * 188 and got["synced"], got
    assert int(got["netns"]) != os.stat("/proc/self/ns/net").st_ino
