"""The sequence model: an LSTM over a window of backbone features -> class probabilities.

Feature standardisation is a layer inside the model (its statistics taken from the
training features), so the exported `sequence.onnx` takes the backbone's raw output and
works whatever the backbone's scale (ImageNet weights give features around 0..5, random
weights for tests around 1e-3). A model with cue blocks has a second input `cues` [T, K],
standardised the same way with its own statistics and concatenated with the standardised
features before the LSTM.
"""

from __future__ import annotations

from typing import Any

import numpy as np

from detector.model.bundle import SEQUENCE_CUES, SEQUENCE_INPUT, SEQUENCE_OUTPUT


def build_sequence_model(t: int, d: int, n_classes: int, mean: np.ndarray, variance: np.ndarray,
                         arch: str = "small", units: int = 64, cue_mean: np.ndarray | None = None,
                         cue_variance: np.ndarray | None = None) -> Any:
    import keras

    inp = keras.Input((t, d), name=SEQUENCE_INPUT)
    inputs = [inp]
    x = keras.layers.Normalization(mean=mean.reshape(d), variance=variance.reshape(d), name="standardise")(inp)
    if cue_mean is not None and len(cue_mean):
        k = len(cue_mean)
        cues = keras.Input((t, k), name=SEQUENCE_CUES)
        inputs.append(cues)
        c = keras.layers.Normalization(mean=np.reshape(cue_mean, k), variance=np.reshape(cue_variance, k), name="standardise_cues")(cues)
        x = keras.layers.Concatenate(axis=-1, name="features_and_cues")([x, c])
    if arch == "original":
        # the tutorial's model: LSTM(2048) -> Dense 512 -> Dropout -> softmax
        x = keras.layers.LSTM(2048, name="lstm")(x)
        x = keras.layers.Dense(512, activation="relu", name="dense")(x)
        x = keras.layers.Dropout(0.5)(x)
    elif arch == "small":
        x = keras.layers.GaussianNoise(0.2)(x)
        x = keras.layers.LSTM(units, name="lstm")(x)
        x = keras.layers.Dropout(0.3)(x)
    else:
        raise ValueError(f"unknown arch {arch!r}")
    out = keras.layers.Dense(n_classes, activation="softmax", name=SEQUENCE_OUTPUT)(x)
    model = keras.Model(inputs if len(inputs) > 1 else inp, out, name="sequence")
    model.compile(optimizer=keras.optimizers.Adam(1e-3), loss="sparse_categorical_crossentropy", metrics=["accuracy"])
    return model
