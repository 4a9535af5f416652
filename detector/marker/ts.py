"""MPEG-TS plumbing for the inline marker: pure functions over 188-byte packets.

What the marker needs and no more: find the PMT (PAT), learn the video PID, rewrite the PMT
so it declares a SCTE-35 PID (stream_type 0x86, `CUEI` registration descriptor at program
level and on the stream, as SCTE 35 section 8 asks and as FFmpeg's demuxer needs to name the
stream `scte_35`), and wrap a splice_info_section in TS packets of that PID. Everything else
in the stream is copied byte for byte. FFmpeg's MPEG-TS muxer cannot be used for this: it
writes SCTE-35 as stream_type 0x06 without `CUEI` (docs/DESIGN.md), which splicers ignore.
"""

from __future__ import annotations

from dataclasses import dataclass

from detector.sources.cues import crc32_mpeg2

TS = 188
SYNC = 0x47
CUEI = b"\x05\x04CUEI"                     # registration_descriptor, format_identifier 0x43554549
SCTE35_STREAM_TYPE = 0x86
NULL_PID = 0x1FFF
# stream types carrying video (MPEG-1/2, MPEG-4 part 2, H.264, HEVC, VVC, AVS2/3, VC-1 in DVB)
VIDEO_STREAM_TYPES = frozenset({0x01, 0x02, 0x10, 0x1B, 0x24, 0x33, 0xD2, 0xD4, 0xEA, 0x42})


def pid_of(pkt: bytes | memoryview) -> int:
    return ((pkt[1] & 0x1F) << 8) | pkt[2]


def unit_start(pkt: bytes | memoryview) -> bool:
    return bool(pkt[1] & 0x40)


def payload_offset(pkt: bytes | memoryview) -> int:
    """Where the payload starts (188 when the packet has none)."""
    afc = (pkt[3] >> 4) & 3
    if not afc & 1:
        return TS
    return min(TS, 5 + pkt[4]) if afc & 2 else 4


def pes_pts(pkt: bytes | memoryview) -> int | None:
    """The PTS (90 kHz, 33 bits) of the PES header that starts in this packet, else None."""
    if not pkt[1] & 0x40:
        return None
    p = bytes(pkt[payload_offset(pkt):])
    if len(p) < 14 or p[:3] != b"\x00\x00\x01" or not p[7] & 0x80:
        return None
    b = p[9:14]
    return ((b[0] >> 1) & 7) << 30 | b[1] << 22 | (b[2] >> 1) << 15 | b[3] << 7 | b[4] >> 1


def sync_offset(data: bytes, need: int = 3) -> int | None:
    """The first offset at which `need` consecutive packets start with 0x47 (None: not found)."""
    limit = len(data) - TS * (need - 1)
    for i in range(max(0, min(TS, limit))):
        if all(data[i + k * TS] == SYNC for k in range(need)):
            return i
    return None


def looks_like_ts(head: bytes) -> bool:
    """Whether a file starts as a 188-byte MPEG-TS (what `check-config` asks of a file channel
    with an `output`; an MP4 or a 192-byte M2TS cannot be re-emitted packet for packet)."""
    return len(head) >= 3 * TS and sync_offset(head[:4 * TS]) == 0


@dataclass(frozen=True)
class Pmt:
    """What the marker reads from a PMT section."""

    program_number: int
    pcr_pid: int
    streams: tuple[tuple[int, int], ...]     # (stream_type, pid)

    @property
    def video_pid(self) -> int | None:
        return next((pid for stype, pid in self.streams if stype in VIDEO_STREAM_TYPES), None)


def section_complete(buf: bytes) -> bytes | None:
    """The section at the start of `buf` once all of it is there (by its section_length)."""
    if len(buf) < 3:
        return None
    n = 3 + (((buf[1] & 0x0F) << 8) | buf[2])
    return bytes(buf[:n]) if len(buf) >= n else None


def parse_pat(section: bytes) -> dict[int, int]:
    """program_number -> PMT PID (program 0, the NIT, left out)."""
    if len(section) < 12 or section[0] != 0x00:
        return {}
    end = 3 + (((section[1] & 0x0F) << 8) | section[2]) - 4
    out = {}
    for i in range(8, end - 3, 4):
        prog = (section[i] << 8) | section[i + 1]
        if prog:
            out[prog] = ((section[i + 2] & 0x1F) << 8) | section[i + 3]
    return out


def parse_pmt(section: bytes) -> Pmt | None:
    if len(section) < 16 or section[0] != 0x02:
        return None
    end = 3 + (((section[1] & 0x0F) << 8) | section[2]) - 4
    info_len = ((section[10] & 0x0F) << 8) | section[11]
    streams = []
    i = 12 + info_len
    while i + 5 <= end:
        es_len = ((section[i + 3] & 0x0F) << 8) | section[i + 4]
        streams.append((section[i], ((section[i + 1] & 0x1F) << 8) | section[i + 2]))
        i += 5 + es_len
    return Pmt((section[3] << 8) | section[4], ((section[8] & 0x1F) << 8) | section[9], tuple(streams))


def pmt_with_cues(section: bytes, cue_pid: int) -> bytes:
    """The PMT section declaring `cue_pid` as SCTE-35 (0x86 + CUEI), CRC recomputed.

    The program-level CUEI is added unless the programme already has one (an upstream
    SCTE-35 PID); the version number is kept, since the same input PMT always gives the
    same output PMT. An upstream stream on `cue_pid` is never overwritten (choose_cue_pid).
    """
    length = ((section[1] & 0x0F) << 8) | section[2]
    body = section[3:3 + length - 4]              # program_number .. end of the ES loop
    info_len = ((body[7] & 0x0F) << 8) | body[8]
    info = body[9:9 + info_len]
    if not _has_cuei(info):
        info = info + CUEI
    es = body[9 + info_len:] + bytes([SCTE35_STREAM_TYPE, 0xE0 | cue_pid >> 8, cue_pid & 0xFF, 0xF0, len(CUEI)]) + CUEI
    head = body[:7] + bytes([0xF0 | len(info) >> 8, len(info) & 0xFF])
    new_len = len(head) + len(info) + len(es) + 4
    if new_len > 1021:
        raise ValueError("PMT too long to add a SCTE-35 stream (section_length > 1021)")
    out = bytes([section[0], (section[1] & 0xF0) | new_len >> 8, new_len & 0xFF]) + head + info + es
    return out + crc32_mpeg2(out).to_bytes(4, "big")


def _has_cuei(descriptors: bytes) -> bool:
    i = 0
    while i + 2 <= len(descriptors):
        tag, n = descriptors[i], descriptors[i + 1]
        if tag == 0x05 and descriptors[i + 2:i + 6] == b"CUEI":
            return True
        i += 2 + n
    return False


def choose_cue_pid(used: set[int]) -> int:
    """A PID no stream of the input uses: 0x1F0 upwards is SCTE-35's customary range, then
    anything from the top of the user range down."""
    for pid in (*range(0x1F0, 0x200), *range(0x1FFE, 0x0FFF, -1)):
        if pid not in used:
            return pid
    raise ValueError("no free PID for the SCTE-35 stream")


def section_packets(section: bytes, pid: int, cc: int) -> tuple[list[bytes], int]:
    """`section` as TS packets of `pid` (pointer_field 0, 0xFF stuffing), continuity counters
    from `cc`; returns the packets and the next counter."""
    out = []
    rest = b"\x00" + section          # pointer_field
    first = True
    while rest:
        chunk, rest = rest[:TS - 4], rest[TS - 4:]
        head = bytes([SYNC, (0x40 if first else 0) | pid >> 8, pid & 0xFF, 0x10 | (cc & 0x0F)])
        out.append(head + chunk + b"\xff" * (TS - 4 - len(chunk)))
        cc = (cc + 1) & 0x0F
        first = False
    return out, cc


class SectionAssembler:
    """Reassembles the PSI sections of one PID across TS packets (a PMT can span several)."""

    def __init__(self) -> None:
        self._buf: bytearray | None = None

    def push(self, pkt: bytes) -> list[bytes]:
        """The sections completed by this packet (usually none or one)."""
        off = payload_offset(pkt)
        payload = pkt[off:]
        if not payload:
            return []
        done = []
        if unit_start(pkt):
            pointer = payload[0]
            if self._buf is not None:      # the tail of the previous section sits before the pointer's target
                self._buf += payload[1:1 + pointer]
                sec = section_complete(self._buf)
                if sec:
                    done.append(sec)
            self._buf = bytearray(payload[1 + pointer:])
        elif self._buf is not None:
            self._buf += payload
        else:
            return done
        sec = section_complete(self._buf)
        if sec and sec[0] != 0xFF:
            done.append(sec)
            self._buf = None
        elif self._buf and self._buf[0] == 0xFF:    # stuffing
            self._buf = None
        return done
