"""From per-window class probabilities to programme/ad state changes (pure, no I/O).

Smoothing (mean of the last few windows), hysteresis (enter an ad above
`enter_threshold`, leave it below `exit_threshold`) and a minimum segment length (after a
change, the opposite change waits until the new segment is `min_segment_seconds` long)
keep a flickering probability from producing a flood of segments, at the price of at
most one hop of extra latency.

Confirmation (`enter_confirm_seconds`, `exit_confirm_seconds`): a change is decided only
once the smoothed probability has stayed on the new side of 0.5 for that long. Leaving an
ad is confirmed by default (3 s), entering one is not. Ads are made to look like anything,
programme included: a few seconds of a spot that the model takes for the programme (on the
demo, a green shot taken for football: 2-4 windows of p(ad) near 0 in the middle of a break)
otherwise ended the ad, and the minimum segment length then held back the return, so a
3 s programme segment was published inside the break: a cue-in and a cue-out in the middle
of a break, which an ad-insertion chain acts on. Smoothing and thresholds cannot absorb a
confident excursion of several windows. Measured over 8 demo broadcasts and two models
(bench figures in the issue): spurious segments 8 -> 1 and 2 -> 0; the price is about 2 s
more decision latency on ad *ends* only (the boundary time itself is still placed on the
cut, see boundary.py). The inline marker's `delay_seconds` must cover it.

Break-structure rules (Comskip's break / spot / programme lengths) travel in these settings
(`DecisionSettings.rules`, so a SIGHUP reload changes them too) but act in the engine, which
knows the segments: see detector.analysis.breakrules.

The decider only says *that* the state changed and where to look for the boundary;
`boundary.py` says *where* it was.

A window whose probabilities are not finite (NaN or inf from the model) is ignored: it
neither enters the smoothing nor decides a state, so one bad window can never turn into a
NaN confidence in an event. The engine counts and logs such windows before they get here.
"""

from __future__ import annotations

from collections import deque
from dataclasses import dataclass

import numpy as np

from detector.analysis.breakrules import BreakRules


@dataclass(frozen=True)
class DecisionSettings:
    enter_threshold: float = 0.7
    exit_threshold: float = 0.3
    min_segment_seconds: float = 3.0
    smoothing_windows: int = 2
    enter_confirm_seconds: float = 0.0   # programme -> ad: decided as soon as the thresholds say so
    exit_confirm_seconds: float = 3.0    # ad -> programme: the programme side must hold this long first
    rules: BreakRules = BreakRules()      # break-structure rules (detector.analysis.breakrules); applied by the engine


@dataclass(frozen=True)
class Change:
    """A decided state change. The boundary lies in (search_from, decided_at]."""

    decided_at: float        # media time of the newest frame of the deciding window
    search_from: float       # last time the smoothed probability was clearly on the old side
    is_ad: bool              # the new state
    label: str
    p_ad: float              # smoothed p(ad) at the decision


class Decider:
    """Streaming decision for one channel."""

    def __init__(self, classes: list[str] | tuple[str, ...], ad_classes: list[str] | tuple[str, ...], settings: DecisionSettings):
        if not 0.0 <= settings.exit_threshold <= settings.enter_threshold <= 1.0:
            raise ValueError("need 0 <= exit_threshold <= enter_threshold <= 1")
        if not (settings.enter_confirm_seconds >= 0 and settings.exit_confirm_seconds >= 0):
            raise ValueError("need enter_confirm_seconds >= 0 and exit_confirm_seconds >= 0")
        self.classes = list(classes)
        self.ad_mask = np.array([c in ad_classes for c in classes])
        self.settings = settings
        self._recent: deque[float] = deque(maxlen=max(1, settings.smoothing_windows))
        self.state: bool | None = None       # None: unknown (no window yet)
        self.label: str | None = None
        self.segment_start: float | None = None   # boundary time of the current segment
        self._last_clear: float | None = None     # last time smoothed p was on the current (old) side of 0.5

    def reset(self) -> None:
        """Forget the state (a reconnect: the next window decides afresh)."""
        self._recent.clear()
        self.state = None
        self.label = None
        self.segment_start = None
        self._last_clear = None

    def update_settings(self, settings: DecisionSettings) -> None:
        self.settings = settings
        self._recent = deque(self._recent, maxlen=max(1, settings.smoothing_windows))

    def p_ad(self, probs: np.ndarray) -> float:
        """p(ad) of one window; NaN when any class probability is not finite."""
        if not np.all(np.isfinite(probs)):
            return float("nan")
        return float(np.clip(probs[self.ad_mask].sum(), 0.0, 1.0))

    def _label(self, probs: np.ndarray, is_ad: bool) -> str:
        mask = self.ad_mask if is_ad else ~self.ad_mask
        idx = np.flatnonzero(mask)
        return self.classes[int(idx[np.argmax(probs[idx])])]

    def push(self, probs: np.ndarray, t: float) -> Change | None:
        """Feed one window's probabilities (newest frame at media time t); non-finite ones are ignored."""
        s = self.settings
        p_window = self.p_ad(probs)
        if not np.isfinite(p_window):
            return None
        self._recent.append(p_window)
        p = float(np.mean(self._recent))
        if self.state is None:
            # first window: the nearer side wins; its segment starts at the stream's start
            self.state = p >= 0.5
            self.label = self._label(probs, self.state)
            self._last_clear = t
            return Change(decided_at=t, search_from=t, is_ad=self.state, label=self.label, p_ad=p)
        on_old_side = (p < 0.5) if not self.state else (p >= 0.5)
        crossed = (p >= s.enter_threshold) if not self.state else (p <= s.exit_threshold)
        if on_old_side:
            self._last_clear = t
        if not crossed:
            return None
        if self.segment_start is not None and t - self.segment_start < s.min_segment_seconds:
            return None
        confirm = s.exit_confirm_seconds if self.state else s.enter_confirm_seconds
        if self._last_clear is not None and t - self._last_clear < confirm - 1e-9:
            return None          # not yet held long enough on the new side; a return to the old side resets _last_clear
        self.state = not self.state
        self.label = self._label(probs, self.state)
        change = Change(decided_at=t, search_from=self._last_clear if self._last_clear is not None else t,
                        is_ad=self.state, label=self.label, p_ad=p)
        self._last_clear = t
        return change

    def started(self, boundary: float) -> None:
        """The engine tells the decider where the new segment was placed."""
        self.segment_start = boundary
