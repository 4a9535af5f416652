"""Where the backbone can run: one module per engine behind `base.BackboneRunner`.

This registry is the only place that maps an engine name (`inference.engine`) to the code
that runs it. Adding one (a Ray Serve deployment, a Triton client) is a module here with a
`BackboneRunner` subclass, its entry below, its name in `detector.model.plan.Engine`, and
the plan's rule for when `auto` picks it. Engines import their libraries only when opened,
so the registry costs nothing for engines that are not used.
"""

from __future__ import annotations

from detector.errors import UsageError
from detector.model.backends.base import BackboneRunner, RunSettings, SessionInfo
from detector.model.backends.onnxruntime import OnnxRuntimeRunner
from detector.model.backends.openvino import OpenVinoRunner

BACKENDS: dict[str, type[BackboneRunner]] = {runner.engine: runner for runner in (OnnxRuntimeRunner, OpenVinoRunner)}


def backend(engine: str) -> type[BackboneRunner]:
    """The runner class for an engine name the plan chose."""
    try:
        return BACKENDS[engine]
    except KeyError:
        raise UsageError(f"inference.engine: no backend runs {engine!r} (known: {', '.join(BACKENDS)})") from None


__all__ = ["BACKENDS", "BackboneRunner", "OnnxRuntimeRunner", "OpenVinoRunner", "RunSettings", "SessionInfo", "backend"]
