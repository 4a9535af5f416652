"""The interface every backbone runner implements, whatever runs the graph.

The backbone (InceptionV3) is the one costly stage, and where it runs is what deployments
change: ONNX Runtime on a CPU or an NVIDIA GPU, OpenVINO's CPU plugin, and later a Ray Serve
deployment or a Triton server shared by many machines. The daemon, classify, train and bench
only hand a batch of frames to a runner and read features back, so another place to run it
is one more module in this folder and one entry in the registry, and nothing else changes.

What a runner promises is kept small so a remote one can keep it:
- one call per batch, numpy in and out: a remote runner pays a round trip per call and
  can batch further on its side (`@serve.batch`, Triton's dynamic batcher); no session,
  device buffer or connection leaks out;
- nothing assumes the graph is a local file: `open` gets the `Plan`, whose file a remote
  runner only needs to check that the server runs the same graph (the bundle has its sha256);
- a report of what really runs (engine, precision, providers or devices in use, fallbacks),
  for the `backbone ready` log line and `ad_detector_model_info`;
- `warm_up` before READY, so first calls (allocation, kernel choice, TensorRT engine builds,
  a cold replica) never land on live frames; `close` for what `open` took.
"""

from __future__ import annotations

import os
from abc import ABC, abstractmethod
from collections.abc import Sequence
from dataclasses import dataclass, field
from pathlib import Path
from typing import ClassVar

import numpy as np

from detector.model.plan import GpuOptions, Plan


@dataclass
class SessionInfo:
    """What a runner (or the sequence model's ONNX Runtime session) really uses."""

    path: Path                       # the bundle file it runs (a remote runner: the file the server's copy matches)
    requested: list[str]             # providers / devices asked for
    in_use: list[str]                # the ones actually running it
    fallbacks: list[str] = field(default_factory=list)   # why a requested one is not in use
    engine: str = "onnxruntime"
    precision: str = "fp32"


@dataclass(frozen=True)
class RunSettings:
    """How the caller wants the backbone run; each backend takes what applies to it."""

    threads: int | None = None                            # in-process engines: compute threads (None: the engine's default)
    spin: bool = True                                     # ONNX Runtime: idle threads busy-wait (offline) or sleep (daemon)
    gpu: GpuOptions = field(default_factory=GpuOptions)   # config `inference.gpu`
    input_size: tuple[int, int] = (299, 299)              # (height, width) of the frames the runner is given


def default_threads() -> int:
    """The cores this process may run on (its CPU affinity, which containers and systemd narrow)."""
    return max(1, len(os.sched_getaffinity(0)) if hasattr(os, "sched_getaffinity") else (os.cpu_count() or 1))


def warm_up_sizes(batch_sizes: Sequence[int]) -> list[int]:
    """The distinct batch sizes worth a warm-up call, smallest first (at least batch 1)."""
    return sorted({int(b) for b in batch_sizes if b >= 1}) or [1]


class BackboneRunner(ABC):
    """Runs the backbone: uint8 BGR frames [N, H, W, 3] -> float32 features [N, 2048].

    One call at a time (the daemon has a single inference thread); a runner need not be
    thread-safe. Subclasses set `engine` (their name in the registry) and `info` in `open`.
    """

    engine: ClassVar[str]
    info: SessionInfo

    @classmethod
    @abstractmethod
    def open(cls, plan: Plan, settings: RunSettings) -> BackboneRunner:
        """Make the runner `plan` describes, or raise UsageError when it cannot be made as asked."""

    @abstractmethod
    def __call__(self, images: np.ndarray) -> np.ndarray:
        """One batch: uint8 [N, H, W, 3] (BGR, as the bundle's contract says) -> float32 [N, D]."""

    @property
    def precision(self) -> str:
        return self.info.precision

    @property
    def providers_in_use(self) -> list[str]:
        return self.info.in_use

    @property
    def fallbacks(self) -> list[str]:
        return self.info.fallbacks

    def warm_up(self, batch_sizes: Sequence[int], input_size: tuple[int, int]) -> int:
        """A call per batch size on black frames before READY; returns the feature width.

        In-process engines allocate and choose kernels per shape on first use (TensorRT
        builds its engine); a remote runner may override this to wait for its replicas.
        """
        h, w = input_size
        width = 0
        for n in warm_up_sizes(batch_sizes):
            width = int(self(np.zeros((n, h, w, 3), np.uint8)).shape[1])
        return width

    def close(self) -> None:
        """Release what `open` took (sessions, compiled models, connections); nothing by default."""
