"""Test helpers for the inline marker: a short broadcast as MPEG-TS, and reading a marked TS back.

Reading back uses our own packet scan only for *where* things are (which video frame follows
each cue packet, what the PMT declares); what the cues *say* is left to threefive.
"""

from __future__ import annotations

import subprocess
from pathlib import Path

TS = 188
PTS_HZ = 90_000

# (label, seconds, seed): programme long enough for the model's first window, one break, programme
PLAN = [("football", 10.0, 1), ("commercial", 8.0, 2), ("football", 9.0, 3)]


def write_broadcast_ts(out_dir: Path, plan=PLAN, size=(320, 240)) -> Path:
    """H.264 (no B-frames, 1 s GOP) + AAC sine in MPEG-TS, as a contribution feed would be."""
    from detector.demo.write import write_clip

    out_dir.mkdir(parents=True, exist_ok=True)
    parts = []
    for i, (label, secs, seed) in enumerate(plan):
        p = out_dir / f"part{i}.mp4"
        write_clip(p, label, secs, seed=2000 + seed, size=size)
        parts.append(p)
    listing = out_dir / "parts.txt"
    listing.write_text("".join(f"file '{p}'\n" for p in parts))
    total = sum(s for _, s, _ in plan)
    ts = out_dir / "broadcast.ts"
    subprocess.run(["ffmpeg", "-loglevel", "error", "-y", "-f", "concat", "-safe", "0", "-i", str(listing),
                    "-f", "lavfi", "-i", f"sine=frequency=330:sample_rate=48000:duration={total}",
                    "-map", "0:v", "-map", "1:a", "-c:v", "libx264", "-preset", "veryfast", "-g", "25", "-bf", "0",
                    "-pix_fmt", "yuv420p", "-c:a", "aac", "-b:a", "64k", "-t", str(total), "-f", "mpegts", str(ts)],
                   check=True, timeout=300)
    return ts


def packets(data: bytes) -> list[bytes]:
    assert len(data) % TS == 0 and all(data[i] == 0x47 for i in range(0, len(data), TS)), "not 188-byte aligned MPEG-TS"
    return [data[i:i + TS] for i in range(0, len(data), TS)]


def pid_of(pkt: bytes) -> int:
    return ((pkt[1] & 0x1F) << 8) | pkt[2]


def _payload(pkt: bytes) -> bytes:
    afc = (pkt[3] >> 4) & 3
    if not afc & 1:
        return b""
    return pkt[5 + pkt[4]:] if afc & 2 else pkt[4:]


def pes_pts(pkt: bytes) -> int | None:
    if not pkt[1] & 0x40:
        return None
    p = _payload(pkt)
    if len(p) < 14 or p[:3] != b"\x00\x00\x01" or not p[7] & 0x80:
        return None
    b = p[9:14]
    return ((b[0] >> 1) & 7) << 30 | b[1] << 22 | (b[2] >> 1) << 15 | b[3] << 7 | b[4] >> 1


def program_map(pkts: list[bytes]) -> tuple[int, bytes, list[tuple[int, int, bytes]]]:
    """(PMT PID, program_info descriptors, [(stream_type, pid, es descriptors)]) of the first programme."""
    pat = next(_payload(p) for p in pkts if pid_of(p) == 0 and p[1] & 0x40)
    sec = pat[1 + pat[0]:]
    pmt_pid = ((sec[10] & 0x1F) << 8) | sec[11]
    pmt = next(_payload(p) for p in pkts if pid_of(p) == pmt_pid and p[1] & 0x40)
    sec = pmt[1 + pmt[0]:]
    end = 3 + (((sec[1] & 0x0F) << 8) | sec[2]) - 4
    info_len = ((sec[10] & 0x0F) << 8) | sec[11]
    info = sec[12:12 + info_len]
    streams, i = [], 12 + info_len
    while i + 5 <= end:
        n = ((sec[i + 3] & 0x0F) << 8) | sec[i + 4]
        streams.append((sec[i], ((sec[i + 1] & 0x1F) << 8) | sec[i + 2], sec[i + 5:i + 5 + n]))
        i += 5 + n
    return pmt_pid, info, streams


def cue_places(data: bytes, cue_pid: int | None = None) -> list[tuple[bytes, int | None, int | None]]:
    """Per packet on the SCTE-35 PID (the first 0x86 stream unless given): (its section, PTS of
    the video frame before it, PTS of the video frame after it)."""
    pkts = packets(data)
    _, _, streams = program_map(pkts)
    video = next(pid for st, pid, _ in streams if st == 0x1B)
    cue_pid = cue_pid if cue_pid is not None else next(pid for st, pid, _ in streams if st == 0x86)
    out, last, waiting = [], None, []
    for p in pkts:
        pid = pid_of(p)
        if pid == cue_pid:
            body = _payload(p)
            sec = body[1 + body[0]:]
            n = 3 + (((sec[1] & 0x0F) << 8) | sec[2])
            waiting.append([sec[:n], last, None])
        elif pid == video and (pts := pes_pts(p)) is not None:
            for w in waiting:
                w[2] = pts
            out += [tuple(w) for w in waiting]
            waiting = []
            last = pts
    return out + [tuple(w) for w in waiting]


def without(data: bytes, pids: set[int]) -> bytes:
    return b"".join(p for p in packets(data) if pid_of(p) not in pids)


def from_first_pat(data: bytes) -> bytes:
    """`data` from its first PAT packet on (the marker starts its output there)."""
    pkts = packets(data)
    first = next(i for i, p in enumerate(pkts) if pid_of(p) == 0)
    return b"".join(pkts[first:])
