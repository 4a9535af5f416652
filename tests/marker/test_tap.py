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
