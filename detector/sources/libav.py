"""Reading a source through libav (PyAV), in process: video with its own clock, audio, data.

Why libav and not OpenCV's FFmpeg backend: OpenCV hands out only pictures. A broadcast
detector also needs the source's 90 kHz PTS (what a splicer acts on), the audio (silence and
loudness at break edges) and the data streams (SCTE-35 cues already in the feed), and it
needs to *see* faults (corrupt packets, undecodable frames, a picture size change) instead of
having them retried or dropped silently. Options are per container (`av.open(options=...)`),
so channels open side by side: no process-wide environment variable and no lock.

One `grab()` demuxes until the next video frame is decoded; audio decoded on the way is
resampled into `take_audio()` chunks and SCTE-35 sections wait in `take_data()`. Only the
frames the analysis keeps are converted: `retrieve(size)` converts and scales in one libav
(swscale) call straight to the model's BGR input (bench/capture.py measures it against
OpenCV). Non-reference frames are not decoded when the source runs at several times the
analysis rate (`skip_nonref`): nothing references them, and at 25 fps analysed at 5 they
are most of the decoding work.
"""

from __future__ import annotations

import logging
import time
from collections import deque
from fractions import Fraction
from typing import Any

import numpy as np

from detector.analysis.clock import PTS_HZ, PtsUnwrapper, to_ticks, wrap
from detector.analysis.loudness import MIN_RATE as LOUDNESS_MIN_RATE, channel_weights
from detector.sources.base import AudioChunk, DataPacket, LoudnessChunk, Source
from detector.sources.cues import is_scte35_stream, packet_ticks
from detector.sources.urls import redact_text

log = logging.getLogger(__name__)

AUDIO_RATE = 16_000            # mono float32 at 16 kHz: enough for loudness, silence and speech/music
SCALER = "AREA"                # swscale's area filter: antialiased, and as cheap as OpenCV's bilinear here
MAX_PENDING_AUDIO = 4096       # chunks waiting for the capture (AAC at 48 kHz: 87 s; the capture drains every frame)
MAX_PENDING_DATA = 256
LOUDNESS_RATE = 48_000         # the loudness path's rate for a source below LOUDNESS_MIN_RATE (FFmpeg's ebur128 does the same)


class LibavSource(Source):
    """A source opened with av.open(url, options, timeout=(open, read))."""

    format_name: str | None = None     # force a demuxer (None: probe)

    def __init__(self, url, options):
        super().__init__(url, options)
        self._container: Any = None
        self._demux: Any = None
        self._video: Any = None
        self._audio: Any = None
        self._resampler: Any = None
        self._loud_resampler: Any = None
        self._loud_key: tuple[str, int, int, str] | None = None   # (layout, channels, rate, format) of the last loudness frame
        self._loud_weights: tuple[float, ...] = ()
        self._loud_chunks: deque[LoudnessChunk] = deque(maxlen=MAX_PENDING_AUDIO)
        self._data_streams: set[int] = set()
        self._maybe_cues: set[int] = set()
        self._frames: deque[Any] = deque()
        self._frame: Any = None
        self._clock = PtsUnwrapper()
        self._audio_chunks: deque[AudioChunk] = deque(maxlen=MAX_PENDING_AUDIO)
        self._data: deque[DataPacket] = deque(maxlen=MAX_PENDING_DATA)
        self._faults: list[tuple[str, dict[str, Any]]] = []
        self._synth: tuple[float, int] | None = None   # (seconds, frames) for frames without a timestamp
        self._opened_mono = 0.0
        self._ended = False
        self.corrupt_packets = 0       # packets the demuxer flagged corrupt (TS continuity errors, ...)
        self.codec: str | None = None
        self.has_data = False

    # -- what a kind adds
    def av_options(self) -> dict[str, str]:
        """libav options of this kind's protocol/demuxer (strings, as av.open takes them).

        A live source is probed briefly: an MPEG-TS with a data stream libav cannot name
        (SCTE-35 remuxed as `bin_data`) otherwise keeps probing for 5 MB, which on a pipe
        ignores the open timeout (45 s here); 500 kB / 2 s find the video, audio and cue PIDs.
        """
        if not self.live:
            return {}
        return {"probesize": "500000", "analyzeduration": "2000000"}

    def av_input(self) -> Any:
        """What av.open reads: the URL, or a file-like object (the relay)."""
        return self.url

    def av_timeouts(self) -> tuple[float, float]:
        return self.options.open_timeout, self.options.read_timeout

    # -- Source
    def open(self) -> bool:
        import av
        self._opened_mono = time.monotonic()
        try:
            self._container = av.open(self.av_input(), mode="r", format=self.format_name, options=self.av_options(),
                                      timeout=self.av_timeouts())
        except Exception as exc:        # any libav or OS error: the capture reports unreachable/silent
            self.open_error = _describe(exc)
            return False
        c = self._container
        video = [s for s in c.streams if s.type == "video"]
        if not video:
            self.open_error = "no video stream"
            self.close()
            return False
        self._video = video[0]
        cc = self._video.codec_context
        cc.thread_type = "AUTO" if self.options.decode_threads != 1 else "SLICE"
        cc.thread_count = self.options.decode_threads
        self.codec = cc.name
        audio = [s for s in c.streams if s.type == "audio"]
        self._audio = audio[0] if audio else None
        self.has_audio = self._audio is not None
        if self._audio is not None:
            import av.audio.resampler
            self._resampler = av.audio.resampler.AudioResampler(format="flt", layout="mono", rate=AUDIO_RATE)
        self._data_streams = {s.index for s in c.streams if is_scte35_stream(s)}
        # an FFmpeg remux upstream rewrites SCTE-35's stream type 0x86 to private data (0x06,
        # `bin_data`): those are read too, and what parses as a splice_info_section is a cue
        self._maybe_cues = {s.index for s in c.streams if s.type == "data" and getattr(s, "name", None) == "bin_data"}
        self._data_streams |= self._maybe_cues
        self.has_data = bool(self._data_streams)
        wanted = [self._video] + ([self._audio] if self._audio is not None else []) + \
                 [s for s in c.streams if s.index in self._data_streams]
        self._demux = c.demux(wanted)
        self._maybe_skip_nonref()
        return True

    @property
    def fps(self) -> float | None:
        v = self._video
        if v is None:
            return None
        for rate in (v.average_rate, v.guessed_rate, v.base_rate):
            if rate:
                fps = float(rate)
                if 0 < fps < 1000:
                    return fps
        return None

    def grab(self) -> bool:
        self._frame = None
        while not self._frames:
            if self._ended or not self._pull():
                self._ended = True
                return False
        self._frame = self._frames.popleft()
        self.frame_size = (self._frame.width, self._frame.height)
        return True

    def position(self) -> float | None:
        f = self._frame
        if f is None:
            return None
        ticks = self._ticks(f.pts if f.pts is not None else f.dts, f.time_base or self._video.time_base)
        if ticks is None:
            return self._synthesized()
        self._synth = None
        return self._clock.unwrap(ticks) / PTS_HZ

    def pts(self) -> int | None:
        """The grabbed frame's PTS in 90 kHz ticks modulo 2**33, None when it has none."""
        f = self._frame
        if f is None:
            return None
        ticks = self._ticks(f.pts if f.pts is not None else f.dts, f.time_base or self._video.time_base)
        return None if ticks is None else wrap(ticks)

    def retrieve(self, size: tuple[int, int] | None = None) -> np.ndarray | None:
        f = self._frame
        if f is None:
            return None
        try:
            if size is None:
                return f.to_ndarray(format="bgr24")
            h, w = size
            return f.reformat(width=w, height=h, format="bgr24", interpolation=SCALER).to_ndarray()
        except Exception as exc:       # an odd pixel format or a broken frame
            self._fault("decode_error", error=_describe(exc))
            return None

    @property
    def pts_wraps(self) -> int:
        return self._clock.wraps

    def take_audio(self) -> list[AudioChunk]:
        out = list(self._audio_chunks)
        self._audio_chunks.clear()
        return out

    def take_loudness(self) -> list[LoudnessChunk]:
        out = list(self._loud_chunks)
        self._loud_chunks.clear()
        return out

    def take_data(self) -> list[DataPacket]:
        out = list(self._data)
        self._data.clear()
        return out

    def take_faults(self) -> list[tuple[str, dict[str, Any]]]:
        out, self._faults = self._faults, []
        return out

    def close(self) -> None:
        c, self._container = self._container, None
        self._demux = None
        self._frames.clear()
        self._frame = None
        if c is not None:
            try:
                c.close()
            except Exception:
                pass

    # -- inside
    def _pull(self) -> bool:
        """Demux one packet and decode it; False at the end, on a read error or a timeout."""
        if self._demux is None:
            return False
        try:
            packet = next(self._demux)
        except StopIteration:
            return False
        except Exception as exc:       # timeout (ExitError), connection reset, ...
            self.read_error = _describe(exc)
            return False
        stream = packet.stream
        if packet.is_corrupt:
            self.corrupt_packets += 1
            self._fault("corrupt", stream=stream.type)
        if stream is self._video:
            self._decode_video(packet)
        elif self._audio is not None and stream is self._audio:
            self._decode_audio(packet)
        elif packet.stream_index in self._data_streams:
            if packet.size:
                ticks = packet_ticks(packet)      # when it arrived (libav stamps sections with the PCR)
                seconds = None if ticks is None else (self._clock.near(ticks) or ticks) / PTS_HZ
                self._data.append(DataPacket(bytes(packet), None if ticks is None else wrap(ticks), seconds,
                                             declared=packet.stream_index not in self._maybe_cues))
        return True

    def _decode_video(self, packet: Any) -> None:
        try:
            frames = packet.decode()
        except Exception as exc:       # InvalidDataError and friends: counted, the stream goes on
            self.decode_errors += 1
            self._fault("decode_error", error=_describe(exc))
            return
        for frame in frames:
            if frame.is_corrupt:
                self.decode_errors += 1
                self._fault("decode_error", error="corrupt frame", pts=frame.pts)
            self._frames.append(frame)

    def _decode_audio(self, packet: Any) -> None:
        try:
            frames = packet.decode()
        except Exception as exc:
            self.decode_errors += 1
            self._fault("audio_decode_error", error=_describe(exc))
            return
        for frame in frames:
            ticks = self._ticks(frame.pts, frame.time_base or self._audio.time_base)
            try:
                out = self._resampler.resample(frame)
            except Exception as exc:   # a layout or rate change mid-stream: start a fresh resampler
                self._fault("audio_decode_error", error=_describe(exc))
                import av.audio.resampler
                self._resampler = av.audio.resampler.AudioResampler(format="flt", layout="mono", rate=AUDIO_RATE)
                continue
            if ticks is None or not out:
                continue
            near = self._clock.near(ticks)
            seconds = (near if near is not None else ticks) / PTS_HZ
            samples = np.concatenate([f.to_ndarray().reshape(-1) for f in out]).astype(np.float32, copy=False)
            if len(self._audio_chunks) == MAX_PENDING_AUDIO:
                self._fault("audio_decode_error", error="audio far ahead of its video (badly interleaved source): oldest dropped")
            self._audio_chunks.append(AudioChunk(seconds, samples))
            if self.options.measure_loudness:
                self._keep_for_loudness(frame, seconds)

    def _keep_for_loudness(self, frame: Any, seconds: float) -> None:
        """The frame's own channels as planar float at >= 32 kHz, for the BS.1770 meter.

        Beside the 16 kHz mono analysis audio, not derived from it: loudness sums the power of each
        channel (a mono downmix of correlated stereo reads 1.4 LU low) and K-weighting lifts
        frequencies above 8 kHz. AAC, AC-3 and MP2 decode to planar float, mostly at 48 kHz:
        those frames are taken as they are; other formats are converted, and a rate below
        32 kHz is raised to 48 kHz. A layout or rate change mid-stream gets a fresh
        resampler (the meter starts a new run).
        """
        import av.audio.resampler
        layout = frame.layout
        key = (layout.name, len(layout.channels), int(frame.sample_rate), frame.format.name)
        if key != self._loud_key:
            self._loud_weights = channel_weights([c.name for c in layout.channels])
        if frame.format.name == "fltp" and key[2] >= LOUDNESS_MIN_RATE:
            self._loud_key = key
            self._loud_chunks_append(seconds, key[2], frame.to_ndarray())
            return
        try:
            if key != self._loud_key or self._loud_resampler is None:
                rate = key[2] if key[2] >= LOUDNESS_MIN_RATE else LOUDNESS_RATE
                self._loud_resampler = av.audio.resampler.AudioResampler(format="fltp", layout=layout, rate=rate)
                self._loud_key = key
            out = self._loud_resampler.resample(frame)
        except Exception as exc:        # an odd layout: the analysis audio goes on without the loudness path
            self._loud_key = None
            self._loud_resampler = None
            self._fault("audio_decode_error", error="loudness path: " + _describe(exc))
            return
        if out:
            self._loud_chunks_append(seconds, out[0].sample_rate, np.concatenate([f.to_ndarray() for f in out], axis=1))

    def _loud_chunks_append(self, seconds: float, rate: int, samples: np.ndarray) -> None:
        samples = samples.astype(np.float32, copy=False)
        if len(self._loud_chunks) == MAX_PENDING_AUDIO:
            self._fault("audio_decode_error", error="loudness audio far ahead of its video: oldest dropped")
        self._loud_chunks.append(LoudnessChunk(seconds, int(rate), samples, self._loud_weights))

    def _ticks(self, value: int | None, time_base: Fraction | None) -> int | None:
        if value is None or time_base is None:
            return None
        return to_ticks(value, float(time_base))

    def _synthesized(self) -> float:
        """A frame without any timestamp (MJPEG over HTTP, raw feeds): live ones are placed
        by arrival time, a file's by frame count at its nominal rate."""
        if self.live:
            return time.monotonic() - self._opened_mono
        start, n = self._synth or (0.0, 0)
        self._synth = (start, n + 1)
        return start + n / (self.fps or 25.0)

    def _maybe_skip_nonref(self) -> None:
        fps, target = self.fps, self.options.analysis_fps
        want = self.options.skip_nonref and fps is not None and target > 0 and fps >= 3 * target
        if want:
            self._video.codec_context.skip_frame = "NONREF"
        self.skipping_nonref = bool(want)

    def stop_skipping(self) -> None:
        """The capture saw too few frames with non-reference ones skipped: decode them all."""
        if self.skipping_nonref and self._video is not None:
            self._video.codec_context.skip_frame = "DEFAULT"
            self.skipping_nonref = False

    def _fault(self, kind: str, **info: Any) -> None:
        if len(self._faults) < 64:
            self._faults.append((kind, info))


def _describe(exc: BaseException) -> str:
    text = str(exc).strip() or type(exc).__name__
    return redact_text(text.splitlines()[0][:300])
