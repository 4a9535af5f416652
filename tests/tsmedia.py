"""A small broadcast-like MPEG-TS for the protocol tests: H.264 + AAC + a SCTE-35 PID.

ffmpeg writes the audio/video (testsrc2 + a sine, 1 s GOP, no B-frames); then, because no
stock muxer writes a SCTE-35 PID the way injectors do (stream type 0x86 plus a `CUEI`
registration descriptor), we add one ourselves: the PMT gains the descriptor and an
elementary stream of type 0x86, and a splice_insert section (built by threefive) is put on
that PID every `cue_every` seconds of video PTS, announcing a splice `preroll` seconds ahead.
"""

from __future__ import annotations

from detector.sources.cues import crc32_mpeg2

import subprocess
import threading
import time
from collections.abc import Iterator
from dataclasses import dataclass
from pathlib import Path

TS = 188
SCTE35_PID = 0x1F4


@dataclass(frozen=True)
class Cue:
    inserted_pts: int   # 90 kHz PTS of the video PES the cue was placed before
    splice_pts: int     # the splice point it announces
    out: bool           # cue-out (break starts) or cue-in
    event_id: int


def _payload(pkt: bytes) -> tuple[int, bytes]:
    """(offset of the payload in the packet, payload) of one TS packet."""
    afc = (pkt[3] >> 4) & 3
    off = 4 + (1 + pkt[4] if afc & 2 else 0)
    return off, (pkt[off:] if afc & 1 else b"")


def _pes_pts(payload: bytes) -> int | None:
    if len(payload) < 14 or payload[:3] != b"\x00\x00\x01" or not payload[7] & 0x80:
        return None
    p = payload[9:14]
    return ((p[0] >> 1) & 7) << 30 | p[1] << 22 | (p[2] >> 1) << 15 | p[3] << 7 | p[4] >> 1


def _with_scte35(pmt_pkt: bytes) -> bytes:
    """The PMT packet with a CUEI registration descriptor and a stream of type 0x86 added."""
    off, payload = _payload(pmt_pkt)
    start = 1 + payload[0]                          # pointer_field
    sec = payload[start:]
    length = ((sec[1] & 0x0F) << 8) | sec[2]
    body = bytearray(sec[3:3 + length - 4])         # from program_number up to the CRC
    pil = ((body[7] & 0x0F) << 8) | body[8]
    if b"CUEI" in bytes(body[9:9 + pil]):
        return pmt_pkt
    reg = b"\x05\x04CUEI"
    pil += len(reg)
    body[7:9] = bytes([0xF0 | (pil >> 8), pil & 0xFF])
    body[9:9] = reg
    body += bytes([0x86, 0xE0 | (SCTE35_PID >> 8), SCTE35_PID & 0xFF, 0xF0, 0x00])
    length = len(body) + 4
    head = bytes([sec[0], (sec[1] & 0xF0) | (length >> 8), length & 0xFF])
    new = head + bytes(body)
    new += crc32_mpeg2(new).to_bytes(4, "big")
    out = pmt_pkt[:off] + payload[:start] + new
    assert len(out) <= TS, "PMT no longer fits one packet"
    return out + b"\xff" * (TS - len(out))


def _cue_packet(section: bytes, cc: int) -> bytes:
    pkt = bytes([0x47, 0x40 | (SCTE35_PID >> 8), SCTE35_PID & 0xFF, 0x10 | (cc & 0x0F), 0x00]) + section
    assert len(pkt) <= TS
    return pkt + b"\xff" * (TS - len(pkt))


def _splice_insert(event_id: int, splice_pts: int, out: bool, duration: float) -> bytes:
    import threefive

    cmd = threefive.SpliceInsert()
    cmd.splice_event_id, cmd.splice_event_cancel_indicator = event_id, False
    cmd.out_of_network_indicator, cmd.program_splice_flag = out, True
    cmd.duration_flag, cmd.splice_immediate_flag, cmd.event_id_compliance_flag = out, False, True
    cmd.time_specified_flag, cmd.pts_time = True, splice_pts / 90000
    if out:
        cmd.break_auto_return, cmd.break_duration = True, duration
    cmd.unique_program_id, cmd.avail_num, cmd.avails_expected = 1, 0, 0
    cue = threefive.Cue()
    cue.command = cmd
    cue.encode()
    return cue.bites


def inject_scte35(src: Path, dst: Path, cue_every: float = 2.0, preroll: float = 1.0) -> list[Cue]:
    """Copy `src` (ffmpeg's MPEG-TS: one program) to `dst` with a SCTE-35 PID; the cues placed."""
    data = src.read_bytes()
    assert len(data) % TS == 0 and data[0] == 0x47
    pmt_pid = video_pid = None
    cues: list[Cue] = []
    next_at: int | None = None
    cc = 0
    out = bytearray()
    for i in range(0, len(data), TS):
        pkt = data[i:i + TS]
        pid = ((pkt[1] & 0x1F) << 8) | pkt[2]
        pusi = bool(pkt[1] & 0x40)
        _, payload = _payload(pkt)
        if pid == 0 and pusi and pmt_pid is None:
            sec = payload[1 + payload[0]:]
            pmt_pid = ((sec[10] & 0x1F) << 8) | sec[11]          # first programme of the PAT
        elif pid == pmt_pid and pusi:
            sec = payload[1 + payload[0]:]
            if video_pid is None:
                pil = ((sec[10] & 0x0F) << 8) | sec[11]
                end = 3 + (((sec[1] & 0x0F) << 8) | sec[2]) - 4
                j = 12 + pil
                while j + 5 <= end:                              # stream_type, PID, ES_info_length
                    if sec[j] == 0x1B and video_pid is None:
                        video_pid = ((sec[j + 1] & 0x1F) << 8) | sec[j + 2]
                    j += 5 + (((sec[j + 3] & 0x0F) << 8) | sec[j + 4])
            pkt = _with_scte35(pkt)
        elif pid == video_pid and pusi and (pts := _pes_pts(payload)) is not None:
            if next_at is None:
                next_at = pts
            if pts >= next_at:
                out_of_network = len(cues) % 2 == 0
                splice = (pts + int(preroll * 90000)) % (1 << 33)
                section = _splice_insert(len(cues) + 1, splice, out_of_network, cue_every)
                out += _cue_packet(section, cc)
                cc += 1
                cues.append(Cue(pts, splice, out_of_network, len(cues) + 1))
                next_at = pts + int(cue_every * 90000)
        out += pkt
    dst.write_bytes(bytes(out))
    return cues


def make_ts(path: Path, seconds: float = 6.0, scte35: bool = True, size: str = "320x240", fps: int = 25) -> list[Cue]:
    """Write the test broadcast to `path` (a few hundred kB); returns the SCTE-35 cues in it."""
    raw = path.with_suffix(".av.ts") if scte35 else path
    subprocess.run(
        ["ffmpeg", "-nostdin", "-hide_banner", "-loglevel", "error", "-y",
         "-f", "lavfi", "-i", f"testsrc2=size={size}:rate={fps}",
         "-f", "lavfi", "-i", "sine=frequency=440:sample_rate=48000",
         "-t", str(seconds), "-map", "0", "-map", "1",
         "-c:v", "libx264", "-preset", "ultrafast", "-g", str(fps), "-bf", "0", "-pix_fmt", "yuv420p",
         "-c:a", "aac", "-b:a", "64k", "-f", "mpegts", str(raw)],
        check=True, timeout=60, capture_output=True)
    if not scte35:
        return []
    try:
        return inject_scte35(raw, path)
    finally:
        raw.unlink(missing_ok=True)


def _pcr(pkt: bytes) -> int | None:
    """The PCR base (90 kHz) of a TS packet, if it carries one."""
    if (pkt[3] >> 4) & 2 and pkt[4] >= 7 and pkt[5] & 0x10:
        b = pkt[6:11]
        return b[0] << 25 | b[1] << 17 | b[2] << 9 | b[3] << 1 | b[4] >> 7
    return None


def _put_ts(field: bytearray, at: int, value: int) -> None:
    """Write a 33-bit PES timestamp, keeping its 4-bit prefix and marker bits."""
    field[at] = (field[at] & 0xF0) | ((value >> 29) & 0x0E) | 1
    field[at + 1] = (value >> 22) & 0xFF
    field[at + 2] = ((value >> 14) & 0xFE) | 1
    field[at + 3] = (value >> 7) & 0xFF
    field[at + 4] = ((value << 1) & 0xFE) | 1


def _get_ts(field: bytes | bytearray, at: int) -> int:
    p = field[at:at + 5]
    return ((p[0] >> 1) & 7) << 30 | p[1] << 22 | (p[2] >> 1) << 15 | p[3] << 7 | p[4] >> 1


class TsPacer:
    """A TS file's own bytes, in 7-packet chunks, paced by its PCR and looped forever with every
    clock moved on by the file's length (PCR, PES PTS/DTS, SCTE-35 pts_adjustment) and
    continuity counters carried on, so a reader sees one unbroken live stream."""

    def __init__(self, file: Path, realtime: bool = True, loop: bool = True, chunk_packets: int = 7):
        self.data = file.read_bytes()
        self.realtime, self.loop, self.chunk = realtime, loop, chunk_packets * TS
        first = last = None
        video_pts: list[int] = []
        self.due: list[float] = []            # seconds from the first PCR, per chunk
        for start in range(0, len(self.data), self.chunk):
            for i in range(start, min(start + self.chunk, len(self.data)), TS):
                pkt = self.data[i:i + TS]
                if (pcr := _pcr(pkt)) is not None:
                    first = pcr if first is None else first
                    last = pcr
                payload = _payload(pkt)[1]
                if pkt[1] & 0x40 and (pts := _pes_pts(payload)) is not None and 0xE0 <= payload[3] <= 0xEF:
                    video_pts.append(pts)
            self.due.append(0.0 if first is None or last is None else (last - first) / 90000)
        video_pts.sort()
        step = min((b - a for a, b in zip(video_pts, video_pts[1:]) if b > a), default=3600)
        self.span = (video_pts[-1] - video_pts[0] + step) if video_pts else int(self.due[-1] * 90000) + 3600

    def _shifted(self, chunk: bytes, offset: int, cc: dict[int, int]) -> bytes:
        out = bytearray(chunk)
        for i in range(0, len(out), TS):
            pid = ((out[i + 1] & 0x1F) << 8) | out[i + 2]
            if pid == 0x1FFF:
                continue
            afc = (out[i + 3] >> 4) & 3
            if afc & 1:
                cc[pid] = (cc.get(pid, out[i + 3] & 0x0F) + (1 if pid in cc else 0)) & 0x0F
                out[i + 3] = (out[i + 3] & 0xF0) | cc[pid]
            if not offset:
                continue
            if (pcr := _pcr(bytes(out[i:i + TS]))) is not None:
                v = (pcr + offset) % (1 << 33)
                out[i + 6:i + 11] = bytes([v >> 25 & 0xFF, v >> 17 & 0xFF, v >> 9 & 0xFF, v >> 1 & 0xFF,
                                           (v & 1) << 7 | 0x7E | (out[i + 10] & 0x01)])
            if not (out[i + 1] & 0x40 and afc & 1):
                continue
            off = 4 + (1 + out[i + 4] if afc & 2 else 0)
            p = i + off
            if out[p:p + 3] == b"\x00\x00\x01" and out[p + 7] & 0x80:
                _put_ts(out, p + 9, (_get_ts(out, p + 9) + offset) % (1 << 33))
                if out[p + 7] & 0x40:
                    _put_ts(out, p + 14, (_get_ts(out, p + 14) + offset) % (1 << 33))
            elif pid == SCTE35_PID:
                s = p + 1 + out[p]
                if out[s] == 0xFC:
                    adj = ((out[s + 4] & 1) << 32 | int.from_bytes(out[s + 5:s + 9], "big")) + offset
                    adj %= 1 << 33
                    out[s + 4] = (out[s + 4] & 0xFE) | (adj >> 32)
                    out[s + 5:s + 9] = (adj & 0xFFFFFFFF).to_bytes(4, "big")
                    n = 3 + (((out[s + 1] & 0x0F) << 8) | out[s + 2])
                    out[s + n - 4:s + n] = crc32_mpeg2(bytes(out[s:s + n - 4])).to_bytes(4, "big")
        return bytes(out)

    def chunks(self, stop: threading.Event) -> Iterator[bytes]:
        cc: dict[int, int] = {}
        t0 = time.monotonic()
        rounds = 0
        while not stop.is_set():
            base = rounds * self.span / 90000
            for n, start in enumerate(range(0, len(self.data), self.chunk)):
                if self.realtime:
                    delay = t0 + base + self.due[n] - time.monotonic()
                    if delay > 0 and stop.wait(delay):
                        return
                if stop.is_set():
                    return
                yield self._shifted(self.data[start:start + self.chunk], rounds * self.span, cc)
            if not self.loop:
                return
            rounds += 1
