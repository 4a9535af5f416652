"""Compatibility facade: the names that used to live here, re-exported from their new homes.

Issue 18 split this module so that whoever changes where the backbone runs finds one folder:
`detector.model.plan` (engine and precision names, GPU options, the pure choice),
`detector.model.backends` (the runner interface, one module per engine, the registry) and
`detector.model.models` (`Models`: a bundle's graphs ready to run). New code imports from
those; this module stays only until the last importers have moved, then goes.
"""

from __future__ import annotations

from detector.model.backends.base import BackboneRunner, RunSettings, SessionInfo, default_threads
from detector.model.backends.onnxruntime import (BoundRunner, OnnxRuntimeRunner, make_session, nvidia_driver_present,
                                                 provider_options)
from detector.model.backends.openvino import OPENVINO_DEVICE, OpenVinoRunner, openvino_capabilities
from detector.model.bundle import BACKBONE_OUTPUT
from detector.model.models import Models
from detector.model.plan import ENGINES, GPU_PROVIDERS, PRECISIONS, GpuOptions, Plan, plan_backbone, resolve_providers

__all__ = ["BACKBONE_OUTPUT", "BackboneRunner", "BoundRunner", "ENGINES", "GPU_PROVIDERS", "GpuOptions", "Models",
           "OPENVINO_DEVICE", "OnnxRuntimeRunner", "OpenVinoRunner", "PRECISIONS", "Plan", "RunSettings", "SessionInfo",
           "default_threads", "make_session", "nvidia_driver_present", "openvino_capabilities", "plan_backbone",
           "provider_options", "resolve_providers"]
