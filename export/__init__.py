"""Keras -> ONNX exports (needs the `[train]` extra: TensorFlow, Keras, tf2onnx, onnx)."""
