"""SCTE-35 cues for our own boundaries: the `scte35` object of ad segment events (CONTRACT.md).

The broadcast chain (splicers, packagers, ad-insertion servers) acts on SCTE-35, not on our
JSON, so every ad boundary is also a splice_insert: out_of_network at the break's first frame,
back in at its end, the same splice_event_id for the pair, pts_time = the boundary's source
PTS. A start withdrawn before it was final gets a cancel (splice_event_cancel_indicator) with
that event id, never a dangling cue-out.

The bits are threefive's (a maintained encoder that decoders agree with), not packed by hand.
threefive's own `mk_splice_insert` treats a pts of 0 as "no time" (`if pts:`), and 0 is a
legal PTS after a wrap, so the command is filled in here field by field.

Pure: values in, a frozen value out; the same cue goes into events, sidecars, the DASH
EventStream and the inline marker's TS packets, so they can never disagree.
"""

from __future__ import annotations

import zlib
from dataclasses import dataclass
from typing import Any

from threefive import Cue
from threefive.commands import SpliceInsert

from detector.analysis.clock import PTS_HZ, PTS_MODULUS

__all__ = ["Scte35Cue", "splice_insert", "splice_event_id"]


@dataclass(frozen=True)
class Scte35Cue:
    """One encoded splice_info_section and what it says."""

    command: str                    # always "splice_insert" here
    event_id: int                   # splice_event_id, 32 bits
    out_of_network: bool | None     # None for a cancel (the flag is not sent then)
    pts: int | None                 # pts_time in 90 kHz ticks mod 2**33; None = splice immediately
    cancel: bool
    section: bytes                  # the whole splice_info_section, CRC included

    @property
    def base64(self) -> str:
        import base64
        return base64.b64encode(self.section).decode("ascii")

    @property
    def hex(self) -> str:
        return "0x" + self.section.hex()

    def as_event(self) -> dict[str, Any]:
        """The event's `scte35` object (CONTRACT.md "Events"), plus `cancel` when it is one."""
        obj: dict[str, Any] = {"command": self.command, "event_id": self.event_id,
                               "out_of_network": self.out_of_network, "pts": self.pts,
                               "base64": self.base64, "hex": self.hex}
        if self.cancel:
            obj["cancel"] = True
        return obj


class _TruthyZero(float):
    """0.0 that threefive's `if not self.pts_time` check accepts (PTS 0 is legal after a wrap)."""

    def __bool__(self) -> bool:
        return True


def splice_event_id(segment_id: str) -> int:
    """A 32-bit splice_event_id from an ad segment's id: the same for its start and its end,
    different across segments and daemon restarts (segment ids carry the run id)."""
    return zlib.crc32(segment_id.encode("utf-8")) & 0xFFFFFFFF


def splice_insert(event_id: int, out_of_network: bool, pts: int | None, *, cancel: bool = False,
                  break_duration: int | None = None) -> Scte35Cue:
    """A splice_insert for one ad boundary (`out_of_network` True at the start, False at the end).

    `pts` is the boundary frame's source PTS in 90 kHz ticks (taken mod 2**33); None, as for a
    capture card that has no clock, makes it an immediate splice. `cancel` withdraws an
    announced event: SCTE 35 then sends only the event id and the cancel flag.
    `break_duration` (90 kHz ticks) is for a cue-out whose break length is known, as offline:
    it is sent with auto_return off (the cue-in still ends the break). x9k3 and HLS
    packagers need it for `#EXT-X-CUE-OUT:DURATION`; live cue-outs cannot know it.
    """
    if not 0 <= int(event_id) <= 0xFFFFFFFF:
        raise ValueError(f"splice_event_id must fit 32 bits, got {event_id}")
    cmd = SpliceInsert()
    cmd.splice_event_id = int(event_id)
    cmd.splice_event_cancel_indicator = bool(cancel)
    ticks: int | None = None
    if not cancel:
        cmd.out_of_network_indicator = bool(out_of_network)
        cmd.program_splice_flag = True
        cmd.duration_flag = break_duration is not None and bool(out_of_network)
        if cmd.duration_flag:
            assert break_duration is not None
            if not 0 < int(break_duration) < PTS_MODULUS:
                raise ValueError(f"break_duration must be 1 .. 2**33-1 ticks, got {break_duration}")
            cmd.break_auto_return = False
            cmd.break_duration = int(break_duration) / PTS_HZ
        cmd.event_id_compliance_flag = True
        cmd.unique_program_id = 1
        cmd.avail_num = 0
        cmd.avails_expected = 0
        if pts is None:
            cmd.splice_immediate_flag = True
            cmd.time_specified_flag = False
        else:
            ticks = int(pts) % PTS_MODULUS
            cmd.splice_immediate_flag = False
            cmd.time_specified_flag = True
            # threefive takes seconds (exact: ticks < 2**33 fit a double); it complains on stderr
            # about a pts_time that is falsy, so 0 goes in as a float that is truthy
            cmd.pts_time = ticks / PTS_HZ if ticks else _TruthyZero()
    cue = Cue()
    cue.command = cmd
    cue.encode()
    section = cue.bytes()
    return Scte35Cue("splice_insert", int(event_id), None if cancel else bool(out_of_network), ticks, bool(cancel), section)
