"""Test media with SCTE-35 cues: a real MPEG-TS as a broadcaster's playout sends it.

`write_ts_with_cues` encodes H.264 + AAC with ffmpeg (lavfi testsrc2 and a sine), then adds a
SCTE-35 PID the way an injector does: the PMT gains an elementary stream of stream_type 0x86
and the CUEI registration descriptor (what libavformat needs to open it as `scte_35`), and each
splice_info_section (encoded by threefive) goes out in its own TS packet some frames before
the splice point it announces. FFmpeg's own muxer cannot do this (it writes SCTE-35 as stream
type 0x06), and threefive's SuperKabuki is a command line tool reading a sidecar file it
empties, checking cues only at I-frames and in float seconds (no 33-bit wrap), so this is a
small packetizer of its own, checked by reading the file back with ffprobe and PyAV.

The splice point of a cue at `t` seconds is the PTS of the video frame nearest `t` seconds
after the first video frame, taken from the file's own PES headers (exact, wrap included).
"""

from __future__ import annotations

from detector.sources.cues import crc32_mpeg2

import subprocess
from dataclasses import dataclass
from pathlib import Path

import threefive

TS = 188
PTS_HZ = 90_000
PTS_MODULUS = 2 ** 33
SCTE35_PID = 0x1F0
CUEI = b"\x05\x04CUEI"          # registration_descriptor, format_identifier "CUEI"


@dataclass(frozen=True)
class WrittenCue:
    """One cue as written: its splice point, where it went into the stream, its bytes."""

    time: float               # seconds after the first video frame (the frame's own, not the one asked)
    pts: int                  # splice point: that frame's PTS, mod 2**33
    insert_pts: int           # PTS of the video frame the cue's packet precedes, mod 2**33
    out_of_network: bool
    event_id: int
    section: bytes

    @property
    def base64(self) -> str:
        import base64

        return base64.b64encode(self.section).decode()


def _seconds(ticks: int) -> float:
    return round(ticks / PTS_HZ, 6)


def splice_insert_section(pts: int | None, out_of_network: bool, event_id: int,
                          duration: float | None = None, pts_adjustment: int = 0) -> bytes:
    """A splice_insert splice_info_section (threefive-encoded); pts None = splice immediate."""
    cue = threefive.Cue()
    cmd = threefive.SpliceInsert()
    cmd.splice_event_id = event_id
    cmd.splice_event_cancel_indicator = False
    cmd.out_of_network_indicator = out_of_network
    cmd.program_splice_flag = True
    cmd.duration_flag = duration is not None
    cmd.splice_immediate_flag = pts is None
    cmd.event_id_compliance_flag = True
    cmd.time_specified_flag = pts is not None
    cmd.pts_time = None if pts is None else _seconds(pts % PTS_MODULUS)
    if duration is not None:
        cmd.break_auto_return = True
        cmd.break_duration = duration
    cmd.unique_program_id = 1
    cmd.avail_num = 0
    cmd.avails_expected = 0
    cue.command = cmd
    cue.info_section.pts_adjustment = _seconds(pts_adjustment)
    cue.encode()
    return bytes(cue.bytes())


def time_signal_section(pts: int | None, segmentation_type_id: int, event_id: int,
                        duration: float | None = None, upid_type: int = 0x0F, upid: str = "https://example.com/ad") -> bytes:
    """A time_signal with one segmentation_descriptor (e.g. 0x34 Provider PO Start, 0x35 End)."""
    descriptor = {
        "tag": 2, "identifier": "CUEI", "segmentation_event_id": hex(event_id),
        "segmentation_event_cancel_indicator": False, "segmentation_event_id_compliance_indicator": True,
        "program_segmentation_flag": True, "segmentation_duration_flag": duration is not None,
        "delivery_not_restricted_flag": True, "segmentation_upid_type": upid_type,
        "segmentation_upid_length": len(upid) if upid_type == 0x0F else 0,
        "segmentation_upid": upid if upid_type == 0x0F else "", "segmentation_type_id": segmentation_type_id,
        "segment_num": 0, "segments_expected": 0, "sub_segment_num": 0, "sub_segments_expected": 0,
    }
    if duration is not None:
        descriptor["segmentation_duration"] = duration
    command = {"command_type": 6, "time_specified_flag": pts is not None,
               "pts_time": None if pts is None else _seconds(pts % PTS_MODULUS)}
    cue = threefive.Cue()
    cue.load({"info_section": {"pts_adjustment": 0.0}, "command": command, "descriptors": [descriptor]})
    cue.encode()
    return bytes(cue.bytes())


# -- MPEG-TS plumbing ---------------------------------------------------------------------

def _pid(pkt: bytes) -> int:
    return ((pkt[1] & 0x1F) << 8) | pkt[2]


def _payload_start(pkt: bytes) -> int:
    afc = (pkt[3] >> 4) & 3
    return 5 + pkt[4] if afc == 3 else 4 if afc == 1 else TS


def _pes_pts(pkt: bytes) -> int | None:
    """The PTS of a PES header starting in this packet (payload_unit_start), else None."""
    if not pkt[1] & 0x40:
        return None
    p = pkt[_payload_start(pkt):]
    if len(p) < 14 or p[:3] != b"\x00\x00\x01" or not p[7] & 0x80:
        return None
    b = p[9:14]
    return ((b[0] >> 1) & 7) << 30 | b[1] << 22 | (b[2] >> 1) << 15 | b[3] << 7 | b[4] >> 1


def _packets(data: bytes) -> list[bytes]:
    if len(data) % TS or any(data[i] != 0x47 for i in range(0, len(data), TS)):
        raise ValueError("not a 188-byte MPEG-TS (lost sync)")
    return [data[i:i + TS] for i in range(0, len(data), TS)]


def _pmt_pid(packets: list[bytes]) -> int:
    for pkt in packets:
        if _pid(pkt) == 0 and pkt[1] & 0x40:
            sec = pkt[_payload_start(pkt) + 1 + pkt[_payload_start(pkt)]:]
            return ((sec[10] & 0x1F) << 8) | sec[11]         # first program's PMT PID
    raise ValueError("no PAT")


def _video_pid(pmt: bytes) -> int:
    info_len = ((pmt[10] & 0x0F) << 8) | pmt[11]
    i, end = 12 + info_len, 3 + (((pmt[1] & 0x0F) << 8) | pmt[2]) - 4
    while i < end:
        stype, pid, es_len = pmt[i], ((pmt[i + 1] & 0x1F) << 8) | pmt[i + 2], ((pmt[i + 3] & 0x0F) << 8) | pmt[i + 4]
        if stype in (0x1B, 0x24, 0x02):
            return pid
        i += 5 + es_len
    raise ValueError("no H.264/HEVC/MPEG-2 video in the PMT")


def _with_scte35(pmt: bytes, pid: int) -> bytes:
    """The PMT section plus the CUEI registration (program_info) and a 0x86 stream, new CRC."""
    length = ((pmt[1] & 0x0F) << 8) | pmt[2]
    body = pmt[3:3 + length - 4]
    info_len = ((body[7] & 0x0F) << 8) | body[8]
    info = body[9:9 + info_len] + CUEI
    es = body[9 + info_len:] + bytes([0x86, 0xE0 | pid >> 8, pid & 0xFF, 0xF0, len(CUEI)]) + CUEI
    head = body[:7] + bytes([0xF0 | len(info) >> 8, len(info) & 0xFF])
    new_len = len(head) + len(info) + len(es) + 4
    section = bytes([pmt[0], (pmt[1] & 0xF0) | new_len >> 8, new_len & 0xFF]) + head + info + es
    return section + crc32_mpeg2(section).to_bytes(4, "big")


def _rewrite_pmt(pkt: bytes, pid: int) -> tuple[bytes, bytes]:
    """(new packet, original PMT section): one-packet PMTs only, as FFmpeg writes them."""
    start = _payload_start(pkt)
    if not pkt[1] & 0x40:
        raise ValueError("PMT spans packets: not supported by this test helper")
    pointer = pkt[start]
    sec = pkt[start + 1 + pointer:]
    new = _with_scte35(sec, pid)
    out = pkt[:4] + b"\x00" + new
    if len(out) > TS:
        raise ValueError("PMT with SCTE-35 no longer fits one packet")
    if (pkt[3] >> 4) & 3 != 1:                     # PMT packets from FFmpeg carry no adaptation field
        raise ValueError("PMT packet with an adaptation field: not supported by this test helper")
    return out + b"\xff" * (TS - len(out)), sec


def _section_packet(section: bytes, pid: int, cc: int) -> bytes:
    if len(section) > TS - 5:
        raise ValueError("SCTE-35 section longer than one TS packet: not supported by this test helper")
    head = bytes([0x47, 0x40 | pid >> 8, pid & 0xFF, 0x10 | (cc & 0x0F), 0x00])
    return head + section + b"\xff" * (TS - 5 - len(section))


def video_pts(path: Path) -> list[int]:
    """The video PTS of every PES in the file, in stream order, raw 33-bit (mod 2**33)."""
    packets = _packets(Path(path).read_bytes())
    pmt_pid = _pmt_pid(packets)
    pmt = next(p for p in packets if _pid(p) == pmt_pid and p[1] & 0x40)
    s = _payload_start(pmt)
    vpid = _video_pid(pmt[s + 1 + pmt[s]:])
    return [pts for p in packets if _pid(p) == vpid and (pts := _pes_pts(p)) is not None]


def inject_sections(src: Path, dst: Path, sections: list[tuple[int, bytes]], pid: int = SCTE35_PID) -> list[int]:
    """Copy `src` to `dst` with a SCTE-35 PID; each (ticks, section) goes in just before the
    first video PES whose PTS is at least `ticks` after the first video PTS (wrap-aware).

    Returns, per section, the PTS (mod 2**33) of the video frame its packet precedes.
    """
    packets = _packets(Path(src).read_bytes())
    pmt_pid = _pmt_pid(packets)
    pending = sorted(((max(0, t), i, s) for i, (t, s) in enumerate(sections)), key=lambda x: x[:2])
    placed: list[int] = [0] * len(sections)
    out: list[bytes] = []
    vpid = first = None
    cc = 0
    for pkt in packets:
        pid_ = _pid(pkt)
        if pid_ == pmt_pid and pkt[1] & 0x40:
            pkt, sec = _rewrite_pmt(pkt, pid)
            vpid = _video_pid(sec)
        elif vpid is not None and pid_ == vpid and (pts := _pes_pts(pkt)) is not None:
            first = pts if first is None else first
            offset = (pts - first) % PTS_MODULUS
            while pending and pending[0][0] <= offset:
                _, i, section = pending.pop(0)
                out.append(_section_packet(section, pid, cc))
                cc += 1
                placed[i] = pts
        out.append(pkt)
    if pending:
        raise ValueError(f"{len(pending)} cue(s) fall after the last video frame of {src}")
    Path(dst).write_bytes(b"".join(out))
    return placed


# -- the whole thing ----------------------------------------------------------------------

def _encode(path: Path, seconds: float, size: tuple[int, int], fps: int, audio: bool, offset: float | None) -> None:
    w, h = size
    cmd = ["ffmpeg", "-v", "error", "-y", "-f", "lavfi", "-i", f"testsrc2=size={w}x{h}:rate={fps}"]
    if audio:
        cmd += ["-f", "lavfi", "-i", "sine=frequency=440:sample_rate=48000"]
    cmd += ["-t", f"{seconds}", "-c:v", "libx264", "-preset", "ultrafast", "-g", str(fps), "-pix_fmt", "yuv420p"]
    if audio:
        cmd += ["-c:a", "aac", "-b:a", "64k"]
    if offset is not None:
        cmd += ["-output_ts_offset", f"{offset:.6f}"]
    cmd += ["-f", "mpegts", str(path)]
    proc = subprocess.run(cmd, capture_output=True, text=True, timeout=120)
    if proc.returncode != 0:
        raise RuntimeError(f"ffmpeg failed writing {path}: {proc.stderr.strip()[-500:]}")


def write_ts_with_cues(path: Path, seconds: float, cues: list[tuple[float, bool, int]], size: tuple[int, int] = (640, 360),
                       fps: int = 25, audio: bool = True, start_pts_seconds: float | None = None,
                       preroll: float = 1.5, pid: int = SCTE35_PID) -> list[WrittenCue]:
    """An MPEG-TS of `seconds` with a splice_insert per (time, out_of_network, event_id).

    Each cue announces pts_time = the PTS of the video frame nearest `time` seconds after the
    first video frame, and its packet precedes the video frame `preroll` seconds earlier (the
    first frame for a cue closer to the start). `start_pts_seconds` puts the first video PTS
    there (mod 2**33): 95440 makes the clock wrap past 2**33 (95443.7 s) a few seconds in.
    """
    path = Path(path)
    path.parent.mkdir(parents=True, exist_ok=True)
    raw = path.with_name(f".{path.stem}.plain.ts")          # hidden: a folder scan never sees it
    offset = None if start_pts_seconds is None else start_pts_seconds - 1.4    # FFmpeg's default mux delay
    _encode(raw, seconds, size, fps, audio, offset)
    frames = video_pts(raw)
    if start_pts_seconds is not None:                # the muxer's own shift varies: measure, correct once
        miss = (round(start_pts_seconds * PTS_HZ) - frames[0]) % PTS_MODULUS
        miss = miss - PTS_MODULUS if miss > PTS_MODULUS // 2 else miss
        if abs(miss) > PTS_HZ // 1000:
            _encode(raw, seconds, size, fps, audio, offset + miss / PTS_HZ)
            frames = video_pts(raw)
    first = frames[0]
    frames = sorted(frames, key=lambda p: (p - first) % PTS_MODULUS)
    written, sections = [], []
    for t, out, event_id in cues:
        rel = min(((p - first) % PTS_MODULUS for p in frames), key=lambda r: abs(r - t * PTS_HZ))
        pts = (first + rel) % PTS_MODULUS
        section = splice_insert_section(pts, out, event_id)
        sections.append((rel - int(round(preroll * PTS_HZ)), section))
        written.append((rel / PTS_HZ, pts, out, event_id, section))
    placed = inject_sections(raw, path, sections, pid)
    raw.unlink()
    return [WrittenCue(t, pts, at, out, eid, sec) for (t, pts, out, eid, sec), at in zip(written, placed)]
