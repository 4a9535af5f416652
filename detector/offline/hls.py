"""`classify --formats hls`: an HLS playlist over the recording itself, with the breaks as cue tags.

Packagers and ad-insertion servers read breaks in HLS from `#EXT-X-CUE-OUT` / `#EXT-X-CUE-IN`
(the de-facto tags) and `#EXT-X-DATERANGE` with `SCTE35-OUT` / `SCTE35-IN` (RFC 8216). x9k3
writes only one of the two families per run, and its DATERANGE dates are the wall clock of
the packaging run, so we write the playlist ourselves; there is nothing to copy: each HLS
segment is a byte range of the MPEG-TS recording (`#EXT-X-BYTERANGE`, version 4).

Segments start at video keyframes (a player can start decoding there) and, where the
recording repeats its PAT/PMT, at the last PAT before the keyframe, so each segment carries
its program tables. A break starts and ends on a segment boundary, as a splicer needs: the
first keyframe at or after the splice point (with `-c copy` packaging a boundary cannot be
frame-exact; the cue inside the tags still says the exact PTS).

The recording has no wall clock of its own; `#EXT-X-PROGRAM-DATE-TIME` (which RFC 8216
requires beside a DATERANGE) starts at the file's modification time minus its duration,
which is when a recorder that just finished writing it started.

Pure parts (`plan_segments`, `hls_playlist`) are separate from reading the file (`scan_ts`).
"""

from __future__ import annotations

import math
from collections import deque
from collections.abc import Sequence
from dataclasses import dataclass
from datetime import datetime, timedelta, timezone
from pathlib import Path

import numpy as np

from detector.analysis.clock import PTS_HZ, PTS_MODULUS
from detector.errors import UsageError
from detector.offline.cues import CuePlan, OfflineCue

__all__ = ["Keyframe", "HlsSegment", "check_mpegts", "scan_ts", "plan_segments", "hls_playlist", "TARGET_SECONDS"]

TS_PACKET = 188
#: Apple's recommended segment length; breaks cut segments shorter.
TARGET_SECONDS = 6.0


@dataclass(frozen=True)
class Keyframe:
    time: float     # seconds from the recording's first frame (the timeline segments.json uses)
    offset: int     # byte offset where its segment may start (its PAT, else its own packet)


@dataclass(frozen=True)
class HlsSegment:
    start: float
    duration: float
    offset: int
    length: int
    cue_out: OfflineCue | None = None       # the break starts with this segment
    cue_in: OfflineCue | None = None        # the break ends where this segment starts
    in_break: tuple[float, float] | None = None   # (elapsed, planned duration) inside a break


def _pat_offsets(path: Path) -> np.ndarray:
    """Byte offsets of the PAT packets (PID 0) of an MPEG-TS file, in order (numpy: fast)."""
    data = np.memmap(path, dtype=np.uint8, mode="r")
    n = len(data) // TS_PACKET
    if n == 0 or data[0] != 0x47:
        return np.zeros(0, dtype=np.int64)
    pkts = data[: n * TS_PACKET].reshape(n, TS_PACKET)
    pid = ((pkts[:, 1].astype(np.int32) & 0x1F) << 8) | pkts[:, 2]
    return np.flatnonzero((pkts[:, 0] == 0x47) & (pid == 0)).astype(np.int64) * TS_PACKET


def check_mpegts(path: Path) -> None:
    """Refuse, in one line, what byte ranges cannot serve: anything but 188-byte MPEG-TS."""
    path = Path(path)
    with open(path, "rb") as fh:
        head = fh.read(TS_PACKET * 2 + 1)
    if len(head) <= TS_PACKET * 2 or head[0] != 0x47 or head[TS_PACKET] != 0x47 or head[2 * TS_PACKET] != 0x47:
        raise UsageError(f"{path}: --formats hls needs an MPEG-TS recording (188-byte packets); "
                         f"remux it first: ffmpeg -i {path.name} -c copy -f mpegts OUT.ts")


def scan_ts(path: Path, first_pts: int) -> list[Keyframe]:
    """The video keyframes of an MPEG-TS recording with their media time and byte offset.

    Packets only (no decoding). Media time is the keyframe's PTS minus the recording's first
    frame's (`first_pts`, from the analysis) modulo 2**33, so it matches segments.json also
    across a wrap. Refuses what byte ranges cannot serve: a file that is not 188-byte TS.
    """
    import av

    path = Path(path)
    check_mpegts(path)
    pats = _pat_offsets(path)
    keyframes: list[Keyframe] = []
    with av.open(str(path), mode="r", timeout=(30.0, 30.0)) as container:
        video = container.streams.video[0]
        tb = float(video.time_base)
        for packet in container.demux(video):
            if not packet.is_keyframe or packet.pts is None or packet.pos is None or packet.pos < 0:
                continue
            ticks = int(round(packet.pts * tb * PTS_HZ))
            time = ((ticks - first_pts) % PTS_MODULUS) / PTS_HZ
            offset = int(packet.pos)
            i = int(np.searchsorted(pats, offset, side="right")) - 1
            previous = keyframes[-1].offset if keyframes else -1
            if i >= 0 and pats[i] > previous:
                offset = int(pats[i])
            keyframes.append(Keyframe(time, offset))
    if keyframes:
        keyframes[0] = Keyframe(keyframes[0].time, 0)     # the first segment holds the file's head
    return keyframes


def plan_segments(keyframes: Sequence[Keyframe], plan: CuePlan, duration: float, size: int,
                  target: float = TARGET_SECONDS) -> list[HlsSegment]:
    """Cut the recording at keyframes: every `target` seconds, and at the first keyframe at or
    after each splice point, where that segment gets the cue's tags."""
    if not keyframes:
        return []
    pending = deque(sorted(plan.cues, key=lambda c: c.time))
    starts: list[tuple[Keyframe, OfflineCue | None]] = []
    for kf in keyframes:
        # one cue per keyframe: a break shorter than a GOP moves its cue-in to the next one
        cue = pending.popleft() if pending and pending[0].time <= kf.time + 1e-6 else None
        if starts and kf.offset <= starts[-1][0].offset:
            if cue is not None:
                pending.appendleft(cue)
            continue
        if not starts or cue is not None or kf.time - starts[-1][0].time >= target - 1e-6:
            starts.append((kf, cue))
    segments: list[HlsSegment] = []
    open_out: OfflineCue | None = None
    out_start = 0.0
    planned = {c.cue.event_id: c for c in plan.cues if not c.out_of_network}
    for i, (kf, cue) in enumerate(starts):
        end_time = starts[i + 1][0].time if i + 1 < len(starts) else duration
        end_off = starts[i + 1][0].offset if i + 1 < len(starts) else size
        cue_out = cue if cue is not None and cue.out_of_network else None
        cue_in = cue if cue is not None and not cue.out_of_network else None
        in_break = None
        if cue_out is not None:
            open_out, out_start = cue_out, kf.time
        elif cue_in is not None:
            open_out = None
        elif open_out is not None:
            end = planned.get(open_out.cue.event_id)
            length = (end.time if end else duration) - open_out.time
            in_break = (kf.time - out_start, length)
        segments.append(HlsSegment(kf.time, max(0.0, end_time - kf.time), kf.offset, end_off - kf.offset,
                                   cue_out, cue_in, in_break))
    return segments


def _date(value: datetime) -> str:
    return value.astimezone(timezone.utc).isoformat(timespec="milliseconds").replace("+00:00", "Z")


def hls_playlist(segments: Sequence[HlsSegment], plan: CuePlan, uri: str, start: datetime) -> str:
    """`NAME.m3u8`: a VOD media playlist, byte ranges of `uri`, breaks tagged both ways.

    At a break's first segment: `#EXT-X-DATERANGE` (ID from the splice_event_id, START-DATE =
    PROGRAM-DATE-TIME of the splice point, PLANNED-DURATION, SCTE35-OUT = the cue-out in hex)
    and `#EXT-X-CUE-OUT:DURATION=`; inside it `#EXT-X-CUE-OUT-CONT`; where it ends the same
    DATERANGE ID with END-DATE, DURATION and SCTE35-IN, and `#EXT-X-CUE-IN`.
    """
    ends = {c.cue.event_id: c for c in plan.cues if not c.out_of_network}
    starts = {c.cue.event_id: c for c in plan.cues if c.out_of_network}
    target = max([1, *(math.ceil(s.duration - 1e-6) for s in segments)])
    lines = ["#EXTM3U", "#EXT-X-VERSION:4", f"#EXT-X-TARGETDURATION:{target}", "#EXT-X-MEDIA-SEQUENCE:0",
             "#EXT-X-PLAYLIST-TYPE:VOD", "#EXT-X-INDEPENDENT-SEGMENTS",
             f"#EXT-X-PROGRAM-DATE-TIME:{_date(start + timedelta(seconds=segments[0].start if segments else 0))}"]
    for seg in segments:
        if seg.cue_out is not None:
            c = seg.cue_out
            end = ends.get(c.cue.event_id)
            length = (end.time - c.time) if end else max(0.0, segments[-1].start + segments[-1].duration - c.time)
            lines += [f'#EXT-X-DATERANGE:ID="splice-{c.cue.event_id}",START-DATE="{_date(start + timedelta(seconds=c.time))}",'
                      f"PLANNED-DURATION={length:.3f},SCTE35-OUT={c.cue.hex}",
                      f"#EXT-X-CUE-OUT:DURATION={length:.3f}"]
        elif seg.cue_in is not None:
            c = seg.cue_in
            begin = starts.get(c.cue.event_id)
            begin_time = begin.time if begin else c.time
            lines += [f'#EXT-X-DATERANGE:ID="splice-{c.cue.event_id}",START-DATE="{_date(start + timedelta(seconds=begin_time))}",'
                      f'END-DATE="{_date(start + timedelta(seconds=c.time))}",DURATION={c.time - begin_time:.3f},'
                      f"SCTE35-IN={c.cue.hex}",
                      "#EXT-X-CUE-IN"]
        elif seg.in_break is not None:
            lines.append(f"#EXT-X-CUE-OUT-CONT:ElapsedTime={seg.in_break[0]:.3f},Duration={seg.in_break[1]:.3f}")
        lines += [f"#EXTINF:{seg.duration:.3f},", f"#EXT-X-BYTERANGE:{seg.length}@{seg.offset}", uri]
    # a break that runs to the recording's end has no segment for its cue-in: its DATERANGE
    # (a playlist-level tag) still closes it, so a reader is not left with an open break
    placed = {seg.cue_in.cue.event_id for seg in segments if seg.cue_in is not None}
    for event_id, c in ends.items():
        begin = starts.get(event_id)
        if event_id in placed or begin is None:
            continue
        lines.append(f'#EXT-X-DATERANGE:ID="splice-{event_id}",START-DATE="{_date(start + timedelta(seconds=begin.time))}",'
                     f'END-DATE="{_date(start + timedelta(seconds=c.time))}",DURATION={c.time - begin.time:.3f},'
                     f"SCTE35-IN={c.cue.hex}")
    lines.append("#EXT-X-ENDLIST")
    return "\n".join(lines) + "\n"
