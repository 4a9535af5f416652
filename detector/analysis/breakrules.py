"""Break-structure rules (Comskip's lengths) on top of the model's decisions (pure, no I/O).

The sequence model judges a few seconds at a time; broadcast breaks have a structure it does
not see: a break lasts at least tens of seconds and at most a few minutes, it is made of spots
(single commercials, separated by black frames) of a few seconds to two minutes, and a
programme part between two breaks lasts minutes. Comskip encodes this as
`min_commercialbreak`, `max_commercialbreak`, `min_commercial_size`, `max_commercial_size`
and `min_show_segment_length`; ours are

=======================  ==========================  =====================================
ours (decision:)         Comskip                     what it does
=======================  ==========================  =====================================
min_break_seconds        min_commercialbreak         a shorter ad run is no break
max_break_seconds        max_commercialbreak         a longer one is logged and flagged
min_spot_seconds         min_commercial_size         black frames closer than this do not
                                                     split spots; a shorter ad run is no break
max_spot_seconds         max_commercial_size         a spot (black to black) longer than
                                                     this is logged and flagged
min_programme_seconds    min_show_segment_length     a shorter programme gap between two
                                                     ad runs belongs to the break
=======================  ==========================  =====================================

Every rule is off at its default (0, or None for the maxima), so a config without them
gives exactly the model's decisions. Maxima never cut or relabel anything: a break the
model is sure of and that runs long is more often a long break (or a stuck model, which
an operator should hear about) than a programme, so it is logged and flagged
(`Segment.flags`), never silently removed.

Offline (`apply_offline`, the whole recording known) the rules rewrite the closed segments:
first short programme gaps between ad runs are merged into the break (two halves of a break
the model split may together make a break long enough), then ad runs shorter than
`min_break_seconds` (or `min_spot_seconds`) become programme, then the maxima flag.

Live a published ad start cannot be unpublished, so the engine (detector.analysis.engine)
applies them as they can be: a break that ends before `min_break_seconds` closes with
`withdrawn=True` (its segment.end carries `withdrawn: true`, its SCTE-35 event is cancelled
instead of returned from); an ad end is held until the programme after it has lasted
`min_programme_seconds` (if the model returns to ad first, the break simply continues and
nothing is published), which delays ad-end events by up to that long; the maxima are logged
and counted when they are exceeded.
"""

from __future__ import annotations

from collections.abc import Iterable, Sequence
from dataclasses import dataclass, replace

from detector.analysis.segments import Segment

# The `rule` label values of ad_detector_break_rule_actions_total (created up front).
MIN_BREAK, MAX_BREAK, MIN_SPOT, MAX_SPOT, MIN_PROGRAMME = "min_break", "max_break", "min_spot", "max_spot", "min_programme"
RULES: tuple[str, ...] = (MIN_BREAK, MAX_BREAK, MIN_SPOT, MAX_SPOT, MIN_PROGRAMME)
# Flags a segment can carry (segments.json `flags`): seen by a rule that reports, not rewrites.
LONG_BREAK, LONG_SPOT = "long_break", "long_spot"


@dataclass(frozen=True)
class BreakRules:
    """Comskip-style lengths in seconds; 0 / None = rule off (the default for every one)."""

    min_break_seconds: float = 0.0
    max_break_seconds: float | None = None
    min_spot_seconds: float = 0.0
    max_spot_seconds: float | None = None
    min_programme_seconds: float = 0.0

    @property
    def active(self) -> bool:
        return bool(self.min_break_seconds or self.min_spot_seconds or self.min_programme_seconds
                    or self.max_break_seconds is not None or self.max_spot_seconds is not None)

    def too_short(self, duration: float) -> str | None:
        """The rule by which an ad run this long is no break (None: it may be one)."""
        if duration < self.min_break_seconds - 1e-9:
            return MIN_BREAK
        if duration < self.min_spot_seconds - 1e-9:
            return MIN_SPOT
        return None


@dataclass(frozen=True)
class RuleAction:
    """What a rule did, for the log, the metric and the offline summary."""

    rule: str           # one of RULES
    action: str         # relabelled | merged | withdrawn | held | flagged
    start: float        # the stretch it acted on (media seconds)
    end: float
    detail: str = ""

    def log_line(self, channel: str | None = None) -> str:
        """`key=value` log message of the action."""
        text = (f"break rule channel={channel or '-'} rule={self.rule} action={self.action} "
                f"start={self.start:.2f} end={self.end:.2f} duration={self.end - self.start:.2f}")
        return f"{text} {self.detail}" if self.detail else text


def spot_lengths(start: float, end: float, marks: Iterable[float], min_spot: float = 0.0) -> list[float]:
    """Lengths of the spots of a break [start, end): pieces between spot marks (black runs).

    A mark closer than `min_spot` to the previous accepted one (or to the end) does not
    split: a spot shorter than the minimum is no spot (a black flash inside a commercial).
    """
    cuts = [start]
    eps = 1e-6
    for m in sorted(marks):
        if start + eps < m < end - eps and m - cuts[-1] >= min_spot - eps and end - m >= min_spot - eps:
            cuts.append(m)
    cuts.append(end)
    return [b - a for a, b in zip(cuts, cuts[1:])]


def long_spot(seg: Segment, marks: Sequence[float], rules: BreakRules) -> float | None:
    """The longest spot of an ad segment when it exceeds `max_spot_seconds`, else None."""
    if rules.max_spot_seconds is None or not seg.is_ad:
        return None
    longest = max(spot_lengths(seg.start, seg.end, marks, rules.min_spot_seconds))
    return longest if longest > rules.max_spot_seconds + 1e-9 else None


def _weighted(parts: Sequence[tuple[float, float]]) -> float:
    """Duration-weighted mean of (duration, value) pairs."""
    total = sum(d for d, _ in parts)
    return sum(d * v for d, v in parts) / total if total > 0 else parts[0][1]


def _as_ad_confidence(seg: Segment) -> float:
    """A segment's confidence restated as confidence in an ad (mean p(ad) over it)."""
    return seg.confidence if seg.is_ad else 1.0 - seg.confidence


def _merge_gap(a: Segment, gap: Segment, b: Segment) -> Segment:
    """One ad segment from ad a, the programme gap and ad b; labelled by the longer ad part."""
    label = a.label if a.duration >= b.duration else b.label
    conf = _weighted([(s.duration, _as_ad_confidence(s)) for s in (a, gap, b)])
    flags = tuple(dict.fromkeys(a.flags + b.flags))
    return Segment(a.start, b.end, label, True, round(conf, 4), flags=flags)


def merge_short_programme(segments: list[Segment], rules: BreakRules) -> tuple[list[Segment], list[RuleAction]]:
    """Programme segments shorter than `min_programme_seconds` between two ad runs join the break."""
    if not rules.min_programme_seconds:
        return list(segments), []
    out: list[Segment] = []
    actions = []
    for seg in segments:
        if (seg.is_ad and len(out) >= 2 and not out[-1].is_ad and out[-2].is_ad
                and out[-1].duration < rules.min_programme_seconds - 1e-9):
            gap = out.pop()
            a = out.pop()
            actions.append(RuleAction(MIN_PROGRAMME, "merged", gap.start, gap.end,
                                      f"break_start={a.start:.2f} break_end={seg.end:.2f} limit={rules.min_programme_seconds:g}"))
            out.append(_merge_gap(a, gap, seg))
        else:
            out.append(seg)
    return out, actions


def _coalesce(segments: list[Segment]) -> list[Segment]:
    """Adjacent programme segments with the same label become one (after a relabelling)."""
    out: list[Segment] = []
    for seg in segments:
        prev = out[-1] if out else None
        if prev is not None and not prev.is_ad and not seg.is_ad and prev.label == seg.label:
            conf = _weighted([(prev.duration, prev.confidence), (seg.duration, seg.confidence)])
            out[-1] = Segment(prev.start, seg.end, prev.label, False, round(conf, 4), flags=prev.flags)
        else:
            out.append(seg)
    return out


def relabel_short_breaks(segments: list[Segment], rules: BreakRules,
                         programme_label: str) -> tuple[list[Segment], list[RuleAction]]:
    """Ad runs shorter than the minimum break (or spot) become programme, labelled as the
    programme before them (else after them, else `programme_label`)."""
    if not (rules.min_break_seconds or rules.min_spot_seconds):
        return list(segments), []
    out = list(segments)
    actions = []
    for i, seg in enumerate(out):
        rule = rules.too_short(seg.duration) if seg.is_ad else None
        if rule is None:
            continue
        neighbours = [s for s in (out[i - 1] if i else None, out[i + 1] if i + 1 < len(out) else None) if s is not None and not s.is_ad]
        label = neighbours[0].label if neighbours else programme_label
        limit = rules.min_break_seconds if rule == MIN_BREAK else rules.min_spot_seconds
        actions.append(RuleAction(rule, "relabelled", seg.start, seg.end, f"label={seg.label} new_label={label} limit={limit:g}"))
        out[i] = Segment(seg.start, seg.end, label, False, round(1.0 - seg.confidence, 4))
    return _coalesce(out), actions


def flag_long(segments: list[Segment], rules: BreakRules, marks: Sequence[float]) -> tuple[list[Segment], list[RuleAction]]:
    """Ad segments over `max_break_seconds` / with a spot over `max_spot_seconds` get flags."""
    if rules.max_break_seconds is None and rules.max_spot_seconds is None:
        return list(segments), []
    out = []
    actions = []
    for seg in segments:
        flags = list(seg.flags)
        if seg.is_ad and rules.max_break_seconds is not None and seg.duration > rules.max_break_seconds + 1e-9:
            actions.append(RuleAction(MAX_BREAK, "flagged", seg.start, seg.end, f"limit={rules.max_break_seconds:g}"))
            flags.append(LONG_BREAK)
        longest = long_spot(seg, marks, rules)
        if longest is not None:
            actions.append(RuleAction(MAX_SPOT, "flagged", seg.start, seg.end,
                                      f"longest_spot={longest:.2f} limit={rules.max_spot_seconds:g}"))
            flags.append(LONG_SPOT)
        out.append(replace(seg, flags=tuple(dict.fromkeys(flags))) if flags != list(seg.flags) else seg)
    return out, actions


def apply_offline(segments: list[Segment], rules: BreakRules, programme_label: str,
                  spot_marks: Sequence[float] = ()) -> tuple[list[Segment], list[RuleAction]]:
    """The rules over a whole recording's closed segments (sorted, contiguous); see the module
    docstring for the order. Returns the new segments and what each rule did."""
    if not rules.active:
        return list(segments), []
    merged, a1 = merge_short_programme(segments, rules)
    relabelled, a2 = relabel_short_breaks(merged, rules, programme_label)
    flagged, a3 = flag_long(relabelled, rules, spot_marks)
    return flagged, a1 + a2 + a3
