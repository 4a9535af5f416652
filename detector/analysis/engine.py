"""One channel's analysis after the backbone: window -> sequence -> decision -> boundary.

The same object serves the offline classifier (fed from a file as fast as it decodes) and
the live daemon (fed from the inference thread); only the sinks differ. It is not
thread-safe: one owner feeds it.

Two things differ between the two uses and are constructor options:
- `keep_segments`: the offline classifier needs every closed segment (None, the default);
  a daemon that runs for months keeps a bounded number (or 0), so memory stays flat.
- cue blocks: a bundle whose model.json declares `blocks` gets, per step, the cue vector of
  those blocks (`CueComputer`, the same code `train` runs) beside the backbone feature. The
  window and the boundary history hold the two side by side in one row [feature | cues],
  so they cannot drift apart; the model callable then receives `(features, cues)`.
- non-finite probabilities (a NaN from the model) are contained here: the window is
  skipped, never enters the decision or a segment's confidence, is counted in
  `nonfinite_windows` (the daemon exports it) and logged at most once per 10 s.

The break-structure rules (`DecisionSettings.rules`, detector.analysis.breakrules) act here
in their live form, since a published start cannot be taken back: a break closed before its
minimum length is `withdrawn`; an ad end is held until the programme after it has lasted
`min_programme_seconds` (a return to ad in that time continues the break, nothing is
published); a break or spot running past its maximum is logged, counted and flagged. What
they did is logged here and queued for the daemon's metric (`take_rule_actions`). The
offline classifier runs the engine without rules and applies their whole-recording form
(`breakrules.apply_offline`) to the closed segments, with the black-run marks collected
here (`spot_marks`).
"""

from __future__ import annotations

import logging
from collections import deque
from collections.abc import Callable
from dataclasses import dataclass

import numpy as np

from detector.analysis.blocks import CueComputer
from detector.analysis.boundary import BOUNDARY_KINDS, STREAM_START, BoundarySettings, History, locate
from detector.analysis.breakrules import LONG_BREAK, LONG_SPOT, MAX_BREAK, MAX_SPOT, MIN_PROGRAMME, BreakRules, RuleAction
from detector.model.bundle import Bundle
from detector.analysis.decision import Change, Decider, DecisionSettings
from detector.analysis.framestats import FrameStats, is_black
from detector.analysis.segments import Segment
from detector.analysis.window import Window
from detector.util.ratelog import RateLimitedLog

log = logging.getLogger(__name__)

__all__ = ["BOUNDARY_KINDS", "ChannelEngine", "Transition", "WindowResult", "expected_lag", "window_min_frames"]


@dataclass(frozen=True)
class Transition:
    """A new segment began at `boundary` (media time); `ended` is the segment it closed."""

    boundary: float
    decided_at: float
    is_ad: bool
    label: str
    p_ad: float
    boundary_kind: str          # what placed the boundary: one of BOUNDARY_KINDS (the events' `boundary` field)
    ended: Segment | None


@dataclass
class _Held:
    """A decided ad end not yet published (min_programme_seconds): where, how, and the
    programme's probability sums so far (they become the new segment's on release)."""

    boundary: float
    kind: str
    label: str
    p_ad: float
    p_sum: float = 0.0
    p_n: int = 0


# Black-run marks kept for the spot rules: live, the open break's are enough; offline, all of them.
LIVE_SPOT_MARKS = 1024
# Rule actions waiting for the daemon to count them (it drains them after every frame).
PENDING_ACTIONS = 256


@dataclass
class WindowResult:
    time: float                 # media time of the newest frame
    probs: np.ndarray           # [C]
    p_ad: float


def window_min_frames(bundle: Bundle) -> int:
    """From how many frames the bundle's model may decide (`model.json` `window_min_frames`,
    written by `train`: below T only when it trained on padded windows of short clips)."""
    value = bundle.manifest.get("window_min_frames")
    t = bundle.window_frames
    return int(value) if isinstance(value, int) and not isinstance(value, bool) and 1 <= value <= t else t


def expected_lag(bundle: Bundle, default: float) -> float:
    """The switch latency measured on the bundle's test split, if training recorded it."""
    lat = ((bundle.manifest.get("evaluation") or {}).get("switch_latency") or {}).get("median_s")
    return float(lat) if isinstance(lat, (int, float)) and 0 <= lat < 10 else default


class ChannelEngine:
    def __init__(self, bundle: Bundle, probabilities: Callable[[np.ndarray], np.ndarray], decision: DecisionSettings,
                 hop_seconds: float = 1.0, boundary: BoundarySettings | None = None, keep_segments: int | None = None,
                 channel: str | None = None):
        if keep_segments is not None and keep_segments < 0:
            raise ValueError("keep_segments must be None (keep all) or >= 0")
        self.bundle = bundle
        self.channel = channel
        self.probabilities = probabilities
        self.fps = bundle.analysis_fps
        self.t = bundle.window_frames
        self.hop = max(1, int(round(hop_seconds * self.fps)))
        self.window = Window(self.t, self.hop, window_min_frames(bundle))
        base = boundary or BoundarySettings()
        self.boundary_settings = BoundarySettings(**{**base.__dict__, "expected_lag_seconds": expected_lag(bundle, base.expected_lag_seconds)})
        self.history = History(self.t + int(self.boundary_settings.max_search_seconds * self.fps) + 2 * self.hop + 4)
        self.decider = Decider(bundle.classes, bundle.ad_classes, decision)
        self.ad_mask = np.array(bundle.ad_mask)
        self.keep_segments = keep_segments
        self.segments: list[Segment] = []        # closed segments, oldest first (the last keep_segments when bounded)
        self.segments_closed = 0                 # every segment ever closed, kept or not
        self.nonfinite_windows = 0               # windows skipped because the model gave NaN/inf (a counter: never decreases)
        self._nonfinite_log = RateLimitedLog()
        self._open: tuple[float, bool, str] | None = None    # start, is_ad, label
        self._p_sum = 0.0
        self._p_n = 0
        self.stream_start: float | None = None
        self.audio_steps: deque[np.ndarray | None] = deque(maxlen=self.t)
        # break-structure rules (live form): see the module docstring
        self.spot_marks: deque[float] = deque(maxlen=None if keep_segments is None else LIVE_SPOT_MARKS)
        self._prev_black = False
        self._held: _Held | None = None
        self._flags: list[str] = []              # flags of the open segment (long_break, long_spot)
        self._spot_from: float | None = None     # start of the open break's current spot
        self._actions: deque[RuleAction] = deque(maxlen=PENDING_ACTIONS)
        self.cues = CueComputer([b.name for b in bundle.blocks], fps=self.fps) if bundle.blocks else None
        self.last_cues: np.ndarray | None = None     # the newest step's raw cue vector (NaN = missing), for metrics and tests
        self._feature_dim: int | None = None

    def _model(self, rows: np.ndarray) -> np.ndarray:
        """Class probabilities of windows of [feature | cues] rows."""
        if self.cues is None:
            return self.probabilities(rows)
        d = self._feature_dim
        return self.probabilities(rows[..., :d], rows[..., d:])

    # -- pieces the live daemon also uses
    def ad_probability(self, windows: np.ndarray) -> np.ndarray:
        return self._model(windows)[:, self.ad_mask].sum(axis=1)

    def reset(self) -> None:
        """A gap in the stream: new window, new decision; the open segment stays open."""
        self.window.reset()
        self.history.reset()
        self.decider.reset()
        self.stream_start = None
        self.audio_steps.clear()
        self._prev_black = False
        if self.cues is not None:
            self.cues.reset()

    def update_decision(self, settings: DecisionSettings) -> None:
        self.decider.update_settings(settings)

    def adopt(self, old: "ChannelEngine", keep_window: bool) -> None:
        """Take over a running channel after a model reload: the open segment always
        survives; the window and decision state only when the features are compatible
        (same backbone, same window length, same cue blocks), otherwise a fresh window starts."""
        self._open, self._p_sum, self._p_n = old._open, old._p_sum, old._p_n
        self.stream_start = old.stream_start
        self._held, self._flags, self._spot_from = old._held, old._flags, old._spot_from
        self.spot_marks.extend(old.spot_marks)
        self._actions.extend(old._actions)
        # counters continue (the daemon exports them as counters), the closed segments too, within our bound
        self.nonfinite_windows += old.nonfinite_windows
        self.segments_closed += old.segments_closed
        self.segments = old.segments + self.segments
        self._trim_segments()
        same_blocks = [b.name for b in old.bundle.blocks] == [b.name for b in self.bundle.blocks]
        if keep_window and same_blocks:
            if self.cues is not None and old.cues is not None:
                self.cues, self._feature_dim = old.cues, old._feature_dim
            self.window, self.history = old.window, old.history
            settings = self.decider.settings
            self.decider = old.decider
            self.decider.update_settings(settings)
        else:
            self.stream_start = None      # a new model or new blocks: the window starts afresh, the open segment stays

    @property
    def current(self) -> tuple[float, bool, str] | None:
        """The open segment (start, is_ad, label): what has been published. During a held ad
        end (min_programme_seconds) that is still the ad."""
        return self._open

    @property
    def rules(self) -> BreakRules:
        return self.decider.settings.rules

    def take_rule_actions(self) -> list[RuleAction]:
        """What the break rules did since the last call (for the daemon's metric)."""
        out = list(self._actions)
        self._actions.clear()
        return out

    def _act(self, action: RuleAction, warn: bool = False) -> None:
        self._actions.append(action)
        (log.warning if warn else log.info)("%s", action.log_line(self.channel))

    def _mark_spots(self, t: float, stats: FrameStats) -> None:
        """Remember where black runs start: spot boundaries inside a break."""
        black = is_black(stats, self.boundary_settings.black_threshold)
        if black and not self._prev_black and self.stream_start is not None and t > self.stream_start:
            mark = t - 0.5 / self.fps
            self.spot_marks.append(mark)
            if (self._open is not None and self._open[1] and self._spot_from is not None
                    and mark - self._spot_from >= self.rules.min_spot_seconds):
                self._spot_from = mark
        self._prev_black = black

    def _watch_open_break(self, t: float) -> None:
        """Live maxima: a break or spot running past its maximum is logged and counted once."""
        if self._open is None or not self._open[1] or self._held is not None:
            return
        rules, start = self.rules, self._open[0]
        if rules.max_break_seconds is not None and LONG_BREAK not in self._flags and t - start > rules.max_break_seconds:
            self._flags.append(LONG_BREAK)
            self._act(RuleAction(MAX_BREAK, "flagged", start, t, f"limit={rules.max_break_seconds:g} still_open=true"), warn=True)
        spot_from = self._spot_from if self._spot_from is not None else start
        if rules.max_spot_seconds is not None and LONG_SPOT not in self._flags and t - spot_from > rules.max_spot_seconds:
            self._flags.append(LONG_SPOT)
            self._act(RuleAction(MAX_SPOT, "flagged", start, t, f"spot_start={spot_from:.2f} limit={rules.max_spot_seconds:g} "
                                 "still_open=true"), warn=True)

    def push(self, t: float, feature: np.ndarray, stats: FrameStats, audio: np.ndarray | None = None,
             image: np.ndarray | None = None) -> tuple[WindowResult | None, Transition | None]:
        """Feed one analysed frame (its backbone feature, stats and picture as the backbone saw
        it, and the audio since the previous one: mono float32 at 16 kHz, None when the source
        has none); returns the window's result when one was
        due, and any transition. The audio of the window's steps is kept beside the window
        (`audio_steps`) for the audio features of the sequence model's input."""
        if self.stream_start is None:
            self.stream_start = t
        self._mark_spots(t, stats)
        self.audio_steps.append(audio)
        row = feature
        if self.cues is not None:
            self.last_cues = self.cues.step(t, stats, audio, image)
            self._feature_dim = feature.shape[-1]
            row = np.concatenate([np.asarray(feature, np.float32).reshape(-1), self.last_cues])
        self.history.push(t, stats, row)
        if not self.window.push(row, t):
            return None, None
        probs = self._model(self.window.current()[None])[0]
        if not np.all(np.isfinite(probs)):
            self._skip_nonfinite(t, probs)
            return None, None
        p_ad = float(np.clip(probs[self.ad_mask].sum(), 0.0, 1.0))
        result = WindowResult(t, probs, p_ad)
        if self._held is not None:
            self._held.p_sum += p_ad
            self._held.p_n += 1
        else:
            self._p_sum += p_ad
            self._p_n += 1
        change = self.decider.push(probs, t)
        if self._held is not None:
            return result, self._held_step(t, change)
        if change is None:
            self._watch_open_break(t)
            return result, None
        if self._open is None:
            boundary, kind = self.stream_start, STREAM_START
        elif self._open[1] == change.is_ad:
            # after a reset the decider re-decided the state we were already in: nothing changed
            self.decider.started(self._open[0])
            return result, None
        else:
            # never a segment shorter than min_segment_seconds, even after the boundary moves back to a cue
            floor = self._open[0] + max(1.0 / self.fps, self.decider.settings.min_segment_seconds)
            boundary, kind = locate(self.history, change.decided_at, change.search_from, change.is_ad, self.t, self.fps,
                                    self.ad_probability, self.boundary_settings, floor)
            boundary = min(boundary, t)
            if self._open[1] and self.rules.min_programme_seconds > 0:
                # an ad end waits until the programme has lasted min_programme_seconds
                self._held = _Held(boundary, kind, change.label, change.p_ad)
                self.decider.started(boundary)
                return result, self._held_step(t, None)
        return result, self._begin(boundary, t, change.is_ad, change.label, change.p_ad, kind)

    def _begin(self, boundary: float, t: float, is_ad: bool, label: str, p_ad: float, kind: str) -> Transition:
        """Close the open segment at `boundary` and open the next."""
        ended = self._close(boundary)
        self._open = (boundary, is_ad, label)
        self._flags = []
        self._spot_from = boundary if is_ad else None
        self.decider.started(boundary)
        return Transition(boundary, t, is_ad, label, p_ad, kind, ended)

    def _held_step(self, t: float, change: Change | None) -> Transition | None:
        """One window during a held ad end: the break resumes, or the programme has lasted."""
        held = self._held
        assert held is not None and self._open is not None
        if change is not None and change.is_ad:
            # back to ad within min_programme_seconds: the gap belongs to the break, nothing was published
            self._held = None
            self._p_sum += held.p_sum
            self._p_n += held.p_n
            self.decider.started(self._open[0])
            self._act(RuleAction(MIN_PROGRAMME, "merged", held.boundary, t,
                                 f"break_start={self._open[0]:.2f} limit={self.rules.min_programme_seconds:g}"))
            return None
        if change is not None:
            self.decider.started(held.boundary)     # re-decided programme after a reset: still held
        if t - held.boundary < self.rules.min_programme_seconds - 1e-9:
            return None
        self._held = None
        transition = self._begin(held.boundary, t, False, held.label, held.p_ad, held.kind)
        self._p_sum, self._p_n = held.p_sum, held.p_n
        return transition

    def _close(self, end: float, final: bool = False) -> Segment | None:
        """Close the open segment at `end`; `final`: the stream ended, no boundary was detected
        (a break cut short by the end of the stream is not withdrawn for being short)."""
        if self._open is None:
            return None
        start, is_ad, label = self._open
        mean = self._p_sum / self._p_n if self._p_n else 0.5
        conf = mean if is_ad else 1.0 - mean
        end = max(end, start)
        short = self.rules.too_short(end - start) if is_ad and not final else None
        if short is not None:
            limit = self.rules.min_break_seconds if short == "min_break" else self.rules.min_spot_seconds
            self._act(RuleAction(short, "withdrawn", start, end, f"label={label} limit={limit:g}"))
        seg = Segment(start, end, label, is_ad, round(conf, 4), withdrawn=short is not None, flags=tuple(self._flags))
        self.segments.append(seg)
        self.segments_closed += 1
        self._trim_segments()
        self._p_sum, self._p_n = 0.0, 0
        return seg

    def _trim_segments(self) -> None:
        if self.keep_segments is not None and len(self.segments) > self.keep_segments:
            del self.segments[: len(self.segments) - self.keep_segments]

    def _skip_nonfinite(self, t: float, probs: np.ndarray) -> None:
        self.nonfinite_windows += 1
        count = self._nonfinite_log.hit()
        if count is not None:
            log.warning("non-finite class probabilities, window skipped channel=%s media_time=%.2f probabilities=%s "
                        "skipped_since_last_log=%d skipped_total=%d", self.channel or "-", t,
                        np.array2string(np.asarray(probs), precision=3, max_line_width=200), count, self.nonfinite_windows)

    def finish(self, end: float) -> Segment | None:
        """Close the open segment at `end` (end of file, or shutdown).

        With an ad end still held (min_programme_seconds) the break closes at the held
        boundary, which is where it ended; the programme after it was never published and
        is not recorded.
        """
        if self._held is not None:
            end, self._held = self._held.boundary, None
            seg = self._close(end)
        else:
            seg = self._close(end, final=True)
        self._open = None
        return seg
