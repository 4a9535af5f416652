"""Training: labelled videos -> features through backbone.onnx -> LSTM -> sequence.onnx (needs `[train]`)."""
