"""The training data layout: `DATA/<split>/<class>/*.mp4` clips, and long recordings with a
labels file beside them (`DATA/<split>/NAME.mp4` + `NAME.csv` or `NAME.edl`), or an MPEG-TS
recording whose own SCTE-35 cues mark its breaks (`DATA/<split>/NAME.ts`, nothing beside it).

Class names come from the folder names (as in the original scripts) and from the labels
of recordings. Everything wrong with the layout is reported here, before any decoding.
"""

from __future__ import annotations

import logging
from dataclasses import dataclass, field
from pathlib import Path

from detector.errors import UsageError
from detector.sources.video import VIDEO_SUFFIXES
from detector.analysis.segments import Segment, read_labels
from detector.sources.cues import cue_labels

log = logging.getLogger(__name__)

SPLITS = ("train", "test")


@dataclass(frozen=True)
class Item:
    path: Path
    split: str
    label: str | None = None                          # a single-class clip
    segments: tuple[Segment, ...] | None = None       # a labelled recording
    labels_path: Path | None = None                   # None: labelled by its own SCTE-35 cues
    gap_label: str | None = None                      # label of time no segment covers (EDL, cues: programme)

    @property
    def is_recording(self) -> bool:
        return self.segments is not None


@dataclass
class Dataset:
    root: Path
    classes: list[str]
    ad_class: str
    items: dict[str, list[Item]] = field(default_factory=dict)

    def split(self, name: str) -> list[Item]:
        return self.items.get(name, [])


def _videos(folder: Path) -> list[Path]:
    return sorted(p for p in folder.iterdir() if p.is_file() and p.suffix.lower() in VIDEO_SUFFIXES and not p.name.startswith("."))


def _labels_file(video: Path) -> Path | None:
    for suffix in (".csv", ".edl"):
        candidate = video.with_suffix(suffix)
        if candidate.is_file():
            return candidate
    return None


def discover(root: Path, ad_class: str = "commercial") -> Dataset:
    """Find clips and labelled recordings under `root`; validate classes."""
    root = Path(root)
    if not root.is_dir():
        raise UsageError(f"{root}: data directory not found; expected {root}/train/<class>/*.mp4 and {root}/test/<class>/*.mp4")
    folder_classes: dict[str, set[str]] = {}
    clip_items: dict[str, list[tuple[Path, str]]] = {}
    recordings: dict[str, list[tuple[Path, Path | None]]] = {}
    parsed: dict[Path, list[Segment]] = {}
    for split in SPLITS:
        sdir = root / split
        if not sdir.is_dir():
            raise UsageError(f"{sdir}: missing; expected {sdir}/<class>/*.mp4 (one folder per class)")
        folder_classes[split] = set()
        clip_items[split] = []
        recordings[split] = []
        for sub in sorted(p for p in sdir.iterdir() if p.is_dir() and not p.name.startswith(".")):
            vids = _videos(sub)
            if not vids:
                raise UsageError(f"{sub}: class folder has no videos ({', '.join(sorted(VIDEO_SUFFIXES)[:4])}, ...); add clips or remove the folder")
            folder_classes[split].add(sub.name)
            clip_items[split].extend((v, sub.name) for v in vids)
        for video in _videos(sdir):
            labels = _labels_file(video)
            if labels is None:
                cued = _cue_segments(video, ad_class)
                if cued is None:
                    raise UsageError(f"{video}: a recording directly in {sdir} needs a labels file beside it ({video.stem}.csv with start,end,label or {video.stem}.edl) or SCTE-35 cues in the file; or move it into a class folder")
                parsed[video] = cued
            recordings[split].append((video, labels))
        if not folder_classes[split] and not recordings[split]:
            raise UsageError(f"{sdir}: no class folders and no labelled recordings; expected {sdir}/<class>/*.mp4")

    # classes: folder names, plus labels used by CSV-labelled recordings
    classes = set().union(*folder_classes.values())
    for split in SPLITS:
        for video, labels in recordings[split]:
            if labels is not None and labels.suffix.lower() == ".csv":
                segs = read_labels(labels, {ad_class})
                classes.update(s.label for s in segs)
                parsed[video] = segs
    if any(labels_is_edl(l) for s in SPLITS for _, l in recordings[s]):
        classes.add(ad_class)
    if ad_class not in classes:
        raise UsageError(f"{root}: no class named '{ad_class}' (classes found: {', '.join(sorted(classes)) or 'none'}); name the ad class with --ad-class")
    if len(classes) < 2:
        raise UsageError(f"{root}: only one class ({', '.join(sorted(classes))}); training needs the ad class and at least one programme class")
    programme = sorted(c for c in classes if c != ad_class)
    for split in SPLITS:
        for video, labels in recordings[split]:
            if labels is None and len(programme) != 1:
                raise UsageError(f"{video}: its SCTE-35 cues only mark the ads, but there are {len(programme)} programme classes ({', '.join(programme)}); label this recording with a CSV instead")
            if labels is not None and labels.suffix.lower() == ".edl":
                if len(programme) != 1:
                    raise UsageError(f"{labels}: an EDL only marks the ads, but there are {len(programme)} programme classes ({', '.join(programme)}); label this recording with a CSV instead")
                parsed[video] = read_labels(labels, {ad_class}, ad_label=ad_class)
    in_train = set(folder_classes["train"])
    for video, labels in recordings["train"]:
        in_train.update(s.label for s in parsed[video])
        if labels_is_edl(labels):
            in_train.update(programme)  # the gaps between an EDL's ads are programme
    missing_in_train = sorted(classes - in_train)
    if missing_in_train:
        raise UsageError(f"{root / 'train'}: no training examples of class {', '.join(missing_in_train)}")
    ds = Dataset(root=root, classes=sorted(classes), ad_class=ad_class)
    for split in SPLITS:
        items = [Item(v, split, label=c) for v, c in clip_items[split]]
        items += [Item(v, split, segments=tuple(parsed[v]), labels_path=l, gap_label=programme[0] if labels_is_edl(l) else None)
                  for v, l in recordings[split]]
        ds.items[split] = items
    return ds


def labels_is_edl(path: Path | None) -> bool:
    """Does this labels file (None: the recording's own SCTE-35 cues) mark only the ads?"""
    return path is None or path.suffix.lower() == ".edl"


def _cue_segments(video: Path, ad_class: str) -> list[Segment] | None:
    """The ad breaks the recording's SCTE-35 cues mark, or None when it carries none."""
    segments, report = cue_labels(video, ad_class)
    if report.cues == 0:
        return None
    for note in report.notes:
        log.warning("SCTE-35 labels: %s", note)
    log.info("labelled by its SCTE-35 cues file=%s cues=%d breaks=%d ad_seconds=%.1f", video, report.cues, len(segments),
             sum(s.duration for s in segments))
    return segments
