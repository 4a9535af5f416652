"""SCTE-35 cues already in the feed: one splice_info_section -> one `UpstreamCue`.

Broadcasters mark their breaks with SCTE-35 on a data PID of the MPEG-TS. The capture hands
each section here with the 90 kHz time it arrived at; the detector publishes it as a
`cue.upstream` event (CONTRACT.md, "Events") and `train` can label a recording by its cues
(`cue_labels`). Decoding is threefive's (maintained, complete); this module checks the
section's framing and CRC first, because threefive is lenient by design (it searches for a
0xFC byte, takes digits as an integer, prints to stderr) and a capture must never act on, or
stop for, a corrupt section: anything malformed gives None and the caller counts it.

Pure: bytes in, values out. `is_scte35_stream`/`packet_ticks` take PyAV objects duck-typed,
and only `cue_labels` opens a file (PyAV imported there, lazily).
"""

from __future__ import annotations

import base64 as _b64
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from detector.analysis.clock import PTS_HZ, PTS_MODULUS, signed_delta
from detector.analysis.cuebreaks import CueMark, breaks_from_marks
from detector.analysis.segments import Segment
from detector.errors import UsageError

COMMANDS = {0x00: "splice_null", 0x04: "splice_schedule", 0x05: "splice_insert", 0x06: "time_signal",
            0x07: "bandwidth_reservation", 0xFF: "private_command"}
"""splice_command_type -> the name events carry (SCTE 35 table 7)."""

BREAK_STARTS = frozenset({0x22, 0x30, 0x32, 0x34, 0x36, 0x44, 0x46})
"""segmentation_type_id that open an ad break: Break, Provider/Distributor Advertisement,
Provider/Distributor Placement Opportunity, Provider/Distributor Ad Block (each `Start`)."""
BREAK_ENDS = frozenset({t + 1 for t in BREAK_STARTS})
"""The matching `End` type ids (each start's id + 1 in SCTE 35 table 22)."""

_MIN_SECTION = 3 + 11 + 2 + 4       # header, fixed fields, descriptor_loop_length, CRC_32


@dataclass(frozen=True)
class UpstreamCue:
    """One decoded SCTE-35 cue, in the source's own 90 kHz clock (modulo 2**33).

    `out_of_network` is the splice_insert flag; for a time_signal it is derived from its
    segmentation descriptors (a break/ad `Start` -> True, `End` -> False, else None), so both
    ways of marking a break read the same. `event_id` is the splice_event_id, or for a
    time_signal the segmentation_event_id of the descriptor that decided `out_of_network`
    (else of the first descriptor).
    """

    pts: int | None                 # splice time: pts_time + pts_adjustment mod 2**33; None = immediate / no time
    packet_pts: int | None          # 90 kHz time the carrying data packet arrived at (mod 2**33), as given
    command: str                    # splice_insert, time_signal, splice_null, ...
    out_of_network: bool | None
    event_id: int | None
    duration: float | None          # break_duration (splice_insert) or segmentation_duration, seconds
    segmentation: list[dict] = field(default_factory=list, compare=False)
    base64: str = ""
    cancel: bool = False            # splice_event_cancel_indicator / segmentation_event_cancel_indicator

    def payload(self) -> dict[str, Any]:
        """The `cue.upstream` event fields (CONTRACT.md), plus `duration`, `cancel` and `segmentation`."""
        return {"pts": self.pts, "packet_pts": self.packet_pts, "command": self.command,
                "out_of_network": self.out_of_network, "event_id": self.event_id, "base64": self.base64,
                "duration": self.duration, "cancel": self.cancel,
                "segmentation": [dict(d) for d in self.segmentation]}


def is_out(cue: UpstreamCue) -> bool:
    """Does this cue start an ad break (splice_insert out, or a break/ad `Start` time_signal)?"""
    return cue.out_of_network is True and not cue.cancel and cue.command in ("splice_insert", "time_signal")


def is_in(cue: UpstreamCue) -> bool:
    """Does this cue end an ad break (splice_insert back to network, or a break/ad `End`)?"""
    return cue.out_of_network is False and not cue.cancel and cue.command in ("splice_insert", "time_signal")


def crc32_mpeg2(data: bytes) -> int:
    """CRC-32/MPEG-2 (PSI tables and splice_info_sections; over a section with its CRC it is 0)."""
    crc = 0xFFFFFFFF
    for byte in data:
        crc ^= byte << 24
        for _ in range(8):
            crc = ((crc << 1) ^ 0x04C11DB7) if crc & 0x80000000 else crc << 1
        crc &= 0xFFFFFFFF
    return crc


def section_ok(section: bytes) -> bytes | None:
    """The splice_info_section framed by its own length, if table id, length and CRC_32 hold."""
    if len(section) < _MIN_SECTION or section[0] != 0xFC:
        return None
    total = 3 + (((section[1] & 0x0F) << 8) | section[2])
    if total < _MIN_SECTION or total > len(section):
        return None
    framed = bytes(section[:total])
    if crc32_mpeg2(framed) != 0:          # CRC over the whole section including its CRC_32 is 0
        return None
    command_length = ((framed[11] & 0x0F) << 8) | framed[12]
    if command_length != 0xFFF and 14 + command_length + 2 > total - 4:
        return None
    return framed


def _ticks(seconds: Any) -> int | None:
    """threefive's seconds (ticks / 90000 rounded to 6 decimals) back to exact ticks."""
    if seconds is None or isinstance(seconds, bool) or not isinstance(seconds, (int, float)):
        return None
    return int(round(float(seconds) * PTS_HZ))


def _segmentation(descriptors: list[Any]) -> list[dict]:
    out = []
    for d in descriptors:
        type_id = getattr(d, "segmentation_type_id", None)
        if getattr(d, "tag", None) != 2 or not isinstance(type_id, int):
            continue
        dur = getattr(d, "segmentation_duration", None)
        out.append({"type_id": type_id, "type": getattr(d, "segmentation_message", None),
                    "upid_type": getattr(d, "segmentation_upid_type", None),
                    "event_id": _int_or_none(getattr(d, "segmentation_event_id", None)),
                    "cancel": bool(getattr(d, "segmentation_event_cancel_indicator", False)),
                    "duration": float(dur) if isinstance(dur, (int, float)) and not isinstance(dur, bool) else None})
    return out


def _int_or_none(value: Any) -> int | None:
    if isinstance(value, bool):
        return None
    if isinstance(value, int):
        return value
    if isinstance(value, str):
        try:
            return int(value, 0)
        except ValueError:
            return None
    return None


def _from_segmentation(segs: list[dict]) -> tuple[bool | None, int | None, float | None, bool]:
    """(out_of_network, event_id, duration, cancel) a time_signal's descriptors amount to."""
    for d in segs:
        if d["type_id"] in BREAK_STARTS or d["type_id"] in BREAK_ENDS:
            return d["type_id"] in BREAK_STARTS, d["event_id"], d["duration"], d["cancel"]
    if segs:
        return None, segs[0]["event_id"], segs[0]["duration"], segs[0]["cancel"]
    return None, None, None, False


def parse_cue(section: bytes, packet_pts: int | None) -> UpstreamCue | None:
    """One splice_info_section (table_id 0xFC through CRC_32) -> UpstreamCue; None if malformed.

    Never raises: a capture calls this on whatever the data PID carried.
    """
    try:
        framed = section_ok(bytes(section))
    except (TypeError, ValueError):
        return None
    if framed is None:
        return None
    text = _b64.b64encode(framed).decode("ascii")
    packet_pts = None if packet_pts is None else int(packet_pts) % PTS_MODULUS
    ctype = framed[13]
    name = COMMANDS.get(ctype, f"command_0x{ctype:02x}")
    if framed[4] & 0x80:                      # encrypted_packet: the command cannot be read
        return UpstreamCue(None, packet_pts, "encrypted", None, None, None, [], text)
    if ctype not in (0x00, 0x05, 0x06):       # nothing in these to place or pair
        return UpstreamCue(None, packet_pts, name, None, None, None, [], text)
    try:
        import threefive

        cue = threefive.Cue(text)             # base64 text: threefive's only unambiguous input form
        cmd = cue.command
        if cmd is None or getattr(cmd, "command_type", None) != ctype:
            return None
        adjust = _ticks(cue.info_section.pts_adjustment) or 0
        segs = _segmentation(cue.descriptors)
        pts_ticks = _ticks(getattr(cmd, "pts_time", None))
        if ctype == 0x05:
            cancel = bool(cmd.splice_event_cancel_indicator)
            out = None if cancel else bool(cmd.out_of_network_indicator)
            event_id = _int_or_none(cmd.splice_event_id)
            duration = float(cmd.break_duration) if cmd.duration_flag and cmd.break_duration is not None else None
            timed = not cancel and cmd.program_splice_flag and not cmd.splice_immediate_flag
        elif ctype == 0x06:
            out, event_id, duration, cancel = _from_segmentation(segs)
            timed = bool(cmd.time_specified_flag)
        else:
            out, event_id, duration, cancel, timed = None, None, None, False, False
        pts = (pts_ticks + adjust) % PTS_MODULUS if timed and pts_ticks is not None else None
        return UpstreamCue(pts, packet_pts, name, out, event_id, duration, segs, text, cancel)
    except Exception:                         # threefive on a CRC-valid but nonsensical section
        return None


def is_scte35_stream(stream: Any) -> bool:
    """Is this PyAV stream the SCTE-35 data PID?

    libavformat opens a PID of stream_type 0x86 as a data stream with codec `scte_35` when the
    PMT carries the CUEI registration descriptor. PyAV 18 gives a data stream no codec context
    (`stream.codec_context` is None): its codec name is `stream.name`.
    """
    if getattr(stream, "type", None) != "data":
        return False
    ctx = getattr(stream, "codec_context", None)
    name = getattr(stream, "name", None) or getattr(ctx, "name", None) or getattr(stream, "codec_name", None)
    return name == "scte_35"


def packet_ticks(packet: Any) -> int | None:
    """A PyAV packet's pts as 90 kHz ticks mod 2**33 (None without one).

    libavformat stamps a SCTE-35 section with the program clock (last PCR / 300) when it
    arrived, and unwraps timestamps past 2**33 itself: the modulo gives back the wire value.
    """
    pts = getattr(packet, "pts", None)
    if pts is None:
        return None
    tb = getattr(packet, "time_base", None) or getattr(getattr(packet, "stream", None), "time_base", None)
    if tb is None or (tb.numerator, tb.denominator) == (1, PTS_HZ):
        return int(pts) % PTS_MODULUS
    return int(round(pts * tb.numerator * PTS_HZ / tb.denominator)) % PTS_MODULUS


def cue_times(cues: list[UpstreamCue], first_pts: int) -> list[float]:
    """Each cue's splice time in seconds from `first_pts` (the recording's first video PTS).

    Wrap-aware for any length of recording: the arrival times (`packet_pts`) are unwrapped one
    after the other, and each splice time is placed nearest its own arrival. An immediate
    splice (pts None) happens where it arrived.
    """
    ref, ref_t, out = first_pts % PTS_MODULUS, 0.0, []
    for cue in cues:
        if cue.packet_pts is not None:
            ref_t += signed_delta(cue.packet_pts, ref) / PTS_HZ
            ref = cue.packet_pts
        out.append(ref_t if cue.pts is None else ref_t + signed_delta(cue.pts, ref) / PTS_HZ)
    return out


def cue_marks(cues: list[UpstreamCue], first_pts: int) -> list[CueMark]:
    """Cues that open or close a break, as marks on the recording's timeline."""
    marks = []
    for cue, t in zip(cues, cue_times(cues, first_pts)):
        if is_out(cue) or is_in(cue):
            marks.append(CueMark(t, is_out(cue), cue.event_id, cue.duration))
    return marks


@dataclass
class CueLabelReport:
    """What `cue_labels` found, for the log: counts and one line per oddity."""

    cues: int = 0
    malformed: int = 0
    notes: list[str] = field(default_factory=list)


def cue_labels(path: Path, ad_label: str = "commercial") -> tuple[list[Segment], CueLabelReport]:
    """The ad breaks a recording's own SCTE-35 cues mark, in seconds from its first video frame.

    Demuxes the data PID only (no decoding), so an hour of TS takes seconds. Returns ([], report)
    with report.cues == 0 when the file carries no SCTE-35 stream or no cue.
    """
    import av   # lazily: the module stays pure for the capture's and the tests' imports

    path = Path(path)
    try:
        return _cue_labels(av, path, ad_label)
    except (av.FFmpegError, OSError) as exc:
        raise UsageError(f"{path}: cannot read it to look for SCTE-35 cues ({str(exc).strip()[:200]}); check it plays with ffprobe") from None


def _cue_labels(av: Any, path: Path, ad_label: str) -> tuple[list[Segment], CueLabelReport]:
    report = CueLabelReport()
    with av.open(str(path)) as container:
        data = [s for s in container.streams if is_scte35_stream(s)]
        video = container.streams.video[0] if container.streams.video else None
        if not data or video is None or video.start_time is None:
            return [], report
        tb = video.time_base
        first = int(round(video.start_time * tb.numerator * PTS_HZ / tb.denominator))
        end = None
        if container.duration is not None and container.start_time is not None:
            end = (container.start_time + container.duration) / 1e6 - first / PTS_HZ
        cues = []
        for packet in container.demux(*data):            # never demux(): that would read every stream
            if packet.size == 0 or not is_scte35_stream(packet.stream):
                continue
            cue = parse_cue(bytes(packet), packet_ticks(packet))
            if cue is None:
                report.malformed += 1
            else:
                cues.append(cue)
    report.cues = len(cues)
    if report.malformed:
        report.notes.append(f"{path}: {report.malformed} malformed SCTE-35 section(s) skipped")
    marks = cue_marks(cues, first)
    if end is None:
        end = max((m.time for m in marks), default=0.0)
    segments, notes = breaks_from_marks(marks, end, ad_label)
    report.notes += [f"{path}: {n}" for n in notes]
    return segments, report
