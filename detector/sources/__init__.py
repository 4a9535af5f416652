"""Where frames come from: one module per input kind behind `base.Source`, the scheme table
and credential redaction (`urls`), and the file decoder the offline path uses (`video`).

Adding an input kind is one module with a `Source` subclass and one line in `SOURCES` below;
`source_kind()` (config validation) and `open_source()` (the capture thread) follow from it.
"""

from __future__ import annotations

from detector.sources.base import Source, SourceOptions
from detector.sources.device import DeviceSource
from detector.sources.file import FileSource
from detector.sources.hls import HlsSource
from detector.sources.rtmp import RtmpSource
from detector.sources.rtsp import RtspSource
from detector.sources.srt import SrtSource
from detector.sources.udp import UdpSource
from detector.sources.urls import redact, redact_text, scheme_of

# tried in order: the device before the catch-all file
SOURCES: tuple[type[Source], ...] = (RtspSource, RtmpSource, UdpSource, SrtSource, HlsSource, DeviceSource, FileSource)
SOURCE_KINDS: tuple[str, ...] = tuple(s.kind for s in SOURCES)
SCHEMES: tuple[str, ...] = tuple(scheme for s in SOURCES for scheme in s.schemes)

__all__ = ["SCHEMES", "SOURCES", "SOURCE_KINDS", "Source", "SourceOptions", "open_source", "redact", "redact_text",
           "source_class", "source_kind"]


def source_class(url: str) -> type[Source]:
    """The kind that reads `url`. ValueError for an empty source or a scheme no kind takes
    (so a typo like `rstp://` is caught when the config is checked, not at the first open)."""
    if not url or not url.strip():
        raise ValueError("empty source")
    scheme = scheme_of(url)
    for cls in SOURCES:
        if cls.matches(url, scheme):
            return cls
    known = ", ".join(f"{s}://" for s in SCHEMES)
    raise ValueError(f"unsupported source scheme '{scheme}://' (expected {known}, a file path or /dev/videoN)")


def source_kind(url: str) -> str:
    """What kind of input `url` is: rtsp | rtmp | udp | srt | http (HLS) | file | device."""
    return source_class(url).kind


def open_source(url: str, options: SourceOptions) -> Source:
    """A new, not yet opened, source for `url` (call `.open()` on the capture thread)."""
    return source_class(url)(url, options)
