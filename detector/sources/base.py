"""The interface every input kind implements, so the capture thread never asks what it reads.

A source is opened once per connection attempt, then read frame by frame: `grab()` moves to
the next frame (decoding it, as H.264 needs, but not converting it to pixels), `position()`
says where that frame sits on the stream's own clock, and `retrieve()` converts it to BGR
pixels only for the frames the analysis rate keeps. That split is what makes a 25 fps
channel analysed at 5 fps cheap. The capture thread (detector.live.capture) owns the
timeline repair, the watchdog, pacing and reconnects; a source only reads.

What differs between kinds is small and declared as class attributes: which URL schemes it
takes, whether it arrives at its own pace (`live`), and whether its timestamps can be trusted
(`clock`: a capture card has none worth using, so arrival time is its timeline).
"""

from __future__ import annotations

from abc import ABC, abstractmethod
from dataclasses import dataclass
from typing import ClassVar, Literal

import numpy as np


@dataclass(frozen=True)
class SourceOptions:
    """How to open a source: timeouts (seconds) and protocol choices from the config."""

    open_timeout: float = 10.0
    read_timeout: float = 5.0
    rtsp_transport: str = "tcp"


class Source(ABC):
    """One connection to one input. Not thread-safe: the capture thread that opened it reads it."""

    kind: ClassVar[str]                     # the name in logs and `source_kind()`: rtsp, udp, file, ...
    schemes: ClassVar[tuple[str, ...]] = ()  # URL schemes this kind takes (none: matched by `matches`)
    live: ClassVar[bool] = True             # arrives at its own rate (a file is read as fast as possible)
    clock: ClassVar[Literal["stream", "arrival"]] = "stream"

    def __init__(self, url: str, options: SourceOptions):
        self.url = url
        self.options = options

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
        """Seconds of the grabbed frame on the source's clock; None when it has none."""

    @abstractmethod
    def retrieve(self) -> np.ndarray | None:
        """The grabbed frame as BGR uint8 pixels, None when it does not decode."""

    @abstractmethod
    def close(self) -> None:
        """Release the connection (safe to call twice)."""
