"""The interface every input kind implements, so the capture thread never asks what it reads.

A source is opened once per connection attempt, then read frame by frame: `grab()` moves to
the next video frame (decoding it, as H.264 needs, but not converting it to pixels),
`position()` and `pts()` say where that frame sits on the stream's own clock, and
`retrieve(size)` converts it to BGR pixels at the model's size only for the frames the
analysis rate keeps. That split is what makes a 25 fps channel analysed at 5 fps cheap.
Audio and data (SCTE-35) demuxed on the way wait in `take_audio()` / `take_data()`, and
what went wrong while reading (corrupt packets, frames that did not decode) in
`take_faults()`. The capture thread (detector.live.capture) owns the timeline, the
watchdog, pacing and reconnects; a source only reads.

What differs between kinds is small and declared as class attributes: which URL schemes it
takes, whether it arrives at its own pace (`live`), whether it arrives in bursts that must
be paced out (`bursty`: HLS delivers a segment at a time), and whether its timestamps can be
trusted (`clock`: a capture card has none worth using, so arrival time is its timeline).
"""

from __future__ import annotations

from abc import ABC, abstractmethod
from dataclasses import dataclass
from collections.abc import Callable
from typing import Any, ClassVar, Literal

import numpy as np


@dataclass(frozen=True)
class SourceOptions:
    """How to open a source: timeouts (seconds), protocol choices and decoding economy from the config."""

    open_timeout: float = 10.0
    read_timeout: float = 5.0
    rtsp_transport: str = "tcp"
    hls_read_timeout: float = 30.0     # HLS waits a whole segment (6-10 s) for the next one
    udp_fifo_packets: int = 100_000    # 188-byte TS packets libav buffers per UDP input (~19 MB)
    decode_threads: int = 1            # per channel; 0 = libav picks (offline, where speed is the point)
    analysis_fps: float = 0.0          # what the analysis keeps; decides whether non-reference frames are decoded
    skip_nonref: bool = True
    # the inline marker's raw-TS tap (detector.sources.tap): every input byte, as read; only
    # file, udp and srt sources honour it (check-config refuses an `output` on the others)
    tap: Callable[[bytes], None] | None = None
    measure_loudness: bool = False     # also deliver the source's own channels at >= 32 kHz (take_loudness)


@dataclass(frozen=True)
class AudioChunk:
    source_seconds: float      # start, on the source clock (as `position()`)
    samples: np.ndarray        # float32 mono at the source's AUDIO_RATE


@dataclass(frozen=True)
class LoudnessChunk:
    """The source's own audio channels, for the BS.1770 meter (detector.analysis.loudness)."""

    source_seconds: float      # start, on the source clock (as `position()`)
    rate: int                  # Hz, >= 32 kHz (the source's own rate, or 48 kHz for a lower one)
    samples: np.ndarray        # float32 [channels, n]
    weights: tuple[float, ...]  # BS.1770 weight of each channel (LFE 0, surround 1.41)


@dataclass(frozen=True)
class DataPacket:
    payload: bytes
    pts: int | None            # 90 kHz ticks mod 2**33 of the packet, as the source sent it
    source_seconds: float | None
    declared: bool = True      # on a stream declared SCTE-35 (0x86 + CUEI); False: a private-data stream that may carry it


class Source(ABC):
    """One connection to one input. Not thread-safe: the capture thread that opened it reads it."""

    kind: ClassVar[str]                     # the name in logs and `source_kind()`: rtsp, udp, file, ...
    schemes: ClassVar[tuple[str, ...]] = ()  # URL schemes this kind takes (none: matched by `matches`)
    live: ClassVar[bool] = True             # arrives at its own rate (a file is read as fast as possible)
    bursty: ClassVar[bool] = False          # live, but delivered in bursts the capture paces out (HLS)
    clock: ClassVar[Literal["stream", "arrival"]] = "stream"

    def __init__(self, url: str, options: SourceOptions):
        self.url = url
        self.options = options
        self.open_error: str | None = None    # why open() failed, one line, credentials redacted
        self.read_error: str | None = None    # why the last grab() failed, when it was an error
        self.decode_errors = 0                # a counter: frames/packets that did not decode
        self.frame_size: tuple[int, int] | None = None   # (width, height) of the grabbed frame
        self.has_audio: bool | None = None    # known after open()
        self.skipping_nonref = False

    @classmethod
    def matches(cls, url: str, scheme: str | None) -> bool:
        """Whether this kind reads `url` (its lower-case `scheme`, None for a plain path)."""
        return scheme is not None and scheme in cls.schemes

    @abstractmethod
    def open(self) -> bool:
        """Connect within `options.open_timeout`; False when the source cannot be opened."""

    @property
    @abstractmethod
    def fps(self) -> float | None:
        """Nominal frame rate the source announces, None when it does not say."""

    @abstractmethod
    def grab(self) -> bool:
        """Advance to the next frame; False at the end, on an error or a read timeout."""

    @abstractmethod
    def position(self) -> float | None:
        """Seconds of the grabbed frame on the source's clock (continuous across PTS wraps);
        None when it has none."""

    def pts(self) -> int | None:
        """The grabbed frame's PTS in 90 kHz ticks modulo 2**33; None for a source without one."""
        return None

    @abstractmethod
    def retrieve(self, size: tuple[int, int] | None = None) -> np.ndarray | None:
        """The grabbed frame as BGR uint8 pixels, scaled to `size` (height, width) when given;
        None when it does not decode."""

    @property
    def pts_wraps(self) -> int:
        """Times the source's 33-bit PTS wrapped on this connection (position() continued across)."""
        return 0

    def take_audio(self) -> list[AudioChunk]:
        """Audio decoded since the last call."""
        return []

    def take_loudness(self) -> list[LoudnessChunk]:
        """The source's own channels decoded since the last call (only with
        `options.measure_loudness`; empty for a source without audio)."""
        return []

    def take_data(self) -> list[DataPacket]:
        """SCTE-35 sections demuxed since the last call."""
        return []

    def take_faults(self) -> list[tuple[str, dict[str, Any]]]:
        """What went wrong while reading since the last call: (fault kind, details)."""
        return []

    def stop_skipping(self) -> None:
        """Decode every frame from now on (non-reference ones were skipped)."""

    @abstractmethod
    def close(self) -> None:
        """Release the connection (safe to call twice)."""
