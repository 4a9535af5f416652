"""The daemon's configuration, parsed and validated once at start, then passed down as objects.

`schema` holds the sections, `loading` turns a YAML file into a `Config` with every error at
once, `errors` formats them, `fields` holds the shared field types.
"""

from __future__ import annotations

from detector.config.errors import ConfigError
from detector.config.loading import dump_resolved, load_config, parse_config, state_dir_from
from detector.config.schema import (CaptureConfig, ChannelConfig, Config, CurveConfig, DecisionConfig, EventsConfig,
                                    GpuConfig, InferenceConfig, MetricsConfig)
from detector.sources import redact, redact_text, source_kind

__all__ = [
    "CaptureConfig", "ChannelConfig", "Config", "ConfigError", "CurveConfig", "DecisionConfig", "EventsConfig", "GpuConfig",
    "InferenceConfig", "MetricsConfig", "dump_resolved", "load_config", "parse_config", "redact", "redact_text",
    "source_kind", "state_dir_from",
]
