"""ad-detector: real-time ad-break detection for live TV.

This package is the runtime: it must never import TensorFlow, Keras or tf2onnx
(directly or indirectly), so a broadcast machine installs it without them.
"""

__version__ = "0.1.0"
