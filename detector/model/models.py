"""A bundle's two graphs ready to run: what the daemon, classify, train and bench hold.

Callers want features and class probabilities, not engines: this is where the plan is made
from what the machine offers, the chosen backend opened, and what really runs logged once
(`backbone ready engine=... precision=...`) and kept for `ad_detector_model_info`. The small
sequence model always runs in ONNX Runtime (it is cheap, and one engine fewer to trust).

The defaults (engine "onnxruntime", precision "fp32") are the reference path that training
and the parity checks use; the daemon and the offline commands pass what the config or the
command line asked for, `auto` included.
"""

from __future__ import annotations

import logging
from collections.abc import Sequence
from typing import Any

import numpy as np

from detector.model.backends import BackboneRunner, RunSettings, SessionInfo, backend
from detector.model.backends.onnxruntime import available_providers, make_session, nvidia_driver_present
from detector.model.backends.openvino import openvino_capabilities
from detector.analysis.blocks import fill_missing
from detector.model.bundle import SEQUENCE_CUES, SEQUENCE_INPUT, Bundle
from detector.model.plan import GpuOptions, Plan, plan_backbone

log = logging.getLogger(__name__)


class Models:
    """Both graphs of a bundle, ready to run.

    `engine` / `precision` choose how the backbone runs (see `plan_backbone`); an explicit
    choice the machine or the bundle cannot honour raises UsageError (exit 2).
    """

    def __init__(self, bundle: Bundle, providers: Sequence[str] = ("CPUExecutionProvider",), threads: int | None = None,
                 spin: bool = True, engine: str = "onnxruntime", precision: str = "fp32", gpu: GpuOptions | None = None,
                 backbone: BackboneRunner | None = None) -> None:
        self.bundle = bundle
        gpu = gpu or GpuOptions()
        if backbone is not None:
            # a runner made elsewhere (a cluster worker's remote backbone): the plan only
            # records what it reports; the sequence model stays here, on the CPU
            self.plan: Plan = Plan(engine=backbone.info.engine, precision=backbone.info.precision,
                                   file=bundle.backbone_variants["fp32"], providers=("CPUExecutionProvider",))
            self.backbone: BackboneRunner = backbone
        else:
            caps = openvino_capabilities() if engine in ("auto", "openvino") else None
            self.plan = plan_backbone(engine, precision, bundle.backbone_variants, providers, available_providers(),
                                      nvidia_driver_present(), caps, bundle.root)
            for note in self.plan.notes:
                log.info("backbone plan note=%r", note)
            self.backbone = backend(self.plan.engine).open(
                self.plan, RunSettings(threads=threads, spin=spin, gpu=gpu, input_size=bundle.input_size))
        self.backbone_info: SessionInfo = self.backbone.info
        log.info("backbone ready engine=%s precision=%s file=%s in_use=%s", self.plan.engine, self.plan.precision,
                 self.plan.file.name, ",".join(self.backbone_info.in_use))
        self.sequence: Any = None
        self.sequence_info: SessionInfo | None = None
        if bundle.sequence_path is not None:
            seq_providers = self.plan.providers or ("CPUExecutionProvider",)
            self.sequence, self.sequence_info = make_session(bundle.sequence_path, seq_providers, threads, spin, gpu)

    @property
    def providers_in_use(self) -> list[str]:
        return self.backbone_info.in_use

    @property
    def precision(self) -> str:
        return self.plan.precision

    @property
    def backbone_sha256(self) -> str:
        """Hash of the backbone file actually running (the int8 file when int8 is in use)."""
        return self.bundle.variant_sha256(self.plan.precision)

    def features(self, images: np.ndarray) -> np.ndarray:
        """uint8 BGR [N, H, W, 3] -> float32 [N, D]."""
        return self.backbone(images)

    def probabilities(self, windows: np.ndarray, cues: np.ndarray | None = None) -> np.ndarray:
        """float32 [N, T, D] (and, for a bundle with blocks, cues float32 [N, T, K]) -> float32 [N, C].

        Cue values that are NaN (a missing input, such as a channel without audio) become the
        training mean, 0 after the graph standardises them; `cues` None on a bundle with blocks
        (warm-up) gives every element its training mean: no cue evidence either way. A bundle without blocks ignores `cues`.
        """
        if self.sequence is None:
            raise RuntimeError("bundle has no sequence model")
        feed = {SEQUENCE_INPUT: np.ascontiguousarray(windows, dtype=np.float32)}
        if self.bundle.blocks:
            shape = (*feed[SEQUENCE_INPUT].shape[:2], self.bundle.cue_size)
            raw = np.full(shape, np.nan, np.float32) if cues is None else cues
            feed[SEQUENCE_CUES] = np.ascontiguousarray(fill_missing(raw, self.bundle.cue_mean))
        return self.sequence.run(None, feed)[0]

    def warm_up(self, batch_sizes: Sequence[int] = (1,)) -> None:
        """A call of each graph per batch size, so the first real frames do not pay for
        allocation, kernel selection or (TensorRT) engine builds before READY."""
        width = self.backbone.warm_up(batch_sizes, self.bundle.input_size)
        if self.sequence is not None and width:
            self.probabilities(np.zeros((1, self.bundle.window_frames, width), np.float32))

    def close(self) -> None:
        """Release the backbone runner (a remote one holds connections); the sessions go with the object."""
        self.backbone.close()
