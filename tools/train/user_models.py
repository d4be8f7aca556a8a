"""The two model shapes ``edgeline-train`` fits, sized to the feature count (Keras, lazily imported).

- unsupervised: a dense autoencoder F -> h -> z -> h -> F trained to reproduce the normalised
  features of normal windows; score = mean squared reconstruction error
  (manifest ``output.score = "reconstruction_mse"``).
- supervised: a dense classifier F -> h -> 8 -> 1 (sigmoid), class-weighted binary
  cross-entropy; score = P(anomalous) (manifest ``output.score = "probability"``).

Both stop early on the validation split's loss (patience :data:`PATIENCE` epochs) and keep the
best weights; the classifier on its training loss instead when the validation split holds no
anomalous window (its loss would then be least for a model that never says anomalous). Progress
goes to stderr every :data:`PROGRESS_EVERY` epochs.
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Any

import numpy as np

from tools.train.common import FloatArray, log

BATCH_SIZE = 64
PATIENCE = 15
PROGRESS_EVERY = 10
LEARNING_RATE = 1e-3


@dataclass(frozen=True)
class Fitted:
    model: Any  # keras.Model
    epochs_run: int
    best_epoch: int
    architecture: str
    stopped_on: str = "val_loss"  # the loss early stopping watched: "val_loss" or "loss" (training)


def hidden_sizes(n_features: int) -> tuple[int, int]:
    """(outer, bottleneck) layer widths for F features: F/2 in 8..64, F/8 in 2..16."""
    return min(64, max(8, n_features // 2)), min(16, max(2, n_features // 8))


def _progress(epochs: int, tag: str) -> Any:
    import keras

    class Progress(keras.callbacks.Callback):  # type: ignore[misc]
        def on_epoch_end(self, epoch: int, logs: dict[str, float] | None = None) -> None:
            n = epoch + 1
            if n == 1 or n % PROGRESS_EVERY == 0:
                shown = ", ".join(f"{k} {v:.4g}" for k, v in sorted((logs or {}).items()))
                log(f"[edgeline-train] {tag} epoch {n}/{epochs}: {shown}")

    return Progress()


def _fit(
    model: Any,
    xy: tuple[FloatArray, FloatArray],
    val: tuple[FloatArray, FloatArray],
    *,
    epochs: int,
    tag: str,
    monitor: str = "val_loss",
    **kw: Any,
) -> tuple[int, int]:
    import keras

    stop = keras.callbacks.EarlyStopping(monitor=monitor, patience=PATIENCE, restore_best_weights=True)
    hist = model.fit(
        *xy,
        epochs=epochs,
        batch_size=BATCH_SIZE,
        shuffle=True,
        verbose=0,
        validation_data=val,
        callbacks=[stop, _progress(epochs, tag)],
        **kw,
    )
    losses = hist.history.get(monitor, [])
    run = len(losses)
    best = int(np.argmin(losses)) + 1 if losses else run
    which = "validation" if monitor == "val_loss" else "training"
    log(f"[edgeline-train] {tag}: {run} epochs, best {which} loss at epoch {best}")
    return run, best


def fit_autoencoder(x_train: FloatArray, x_val: FloatArray, *, epochs: int, name: str) -> Fitted:
    """Autoencoder on normal windows; early stopping on the validation split's normal windows."""
    import keras

    n = x_train.shape[1]
    h, z = hidden_sizes(n)
    inp = keras.Input((n,), name="features")
    t = keras.layers.Dense(h, activation="relu")(inp)
    t = keras.layers.Dense(z, activation="relu")(t)
    t = keras.layers.Dense(h, activation="relu")(t)
    out = keras.layers.Dense(n, name="reconstruction")(t)
    model = keras.Model(inp, out, name=name)
    model.compile(optimizer=keras.optimizers.Adam(LEARNING_RATE), loss="mse")
    run, best = _fit(model, (x_train, x_train), (x_val, x_val), epochs=epochs, tag="autoencoder")
    return Fitted(model, run, best, f"{n}-{h}-{z}-{h}-{n} dense relu autoencoder")


def class_weights(y: FloatArray) -> dict[int, float]:
    """Weights that give both classes the same total weight (normal windows weigh 1)."""
    n1 = int(np.sum(y > 0.5))
    n0 = int(y.size - n1)
    return {0: 1.0, 1: float(n0) / max(n1, 1)}


def fit_classifier(
    x_train: FloatArray, y_train: FloatArray, x_val: FloatArray, y_val: FloatArray, *, epochs: int, name: str
) -> Fitted:
    """P(anomalous window) from the features, class-weighted; early stopping on the validation
    split, or on the training loss when the validation split has no anomalous window."""
    import keras

    n = x_train.shape[1]
    h, _ = hidden_sizes(n)
    inp = keras.Input((n,), name="features")
    t = keras.layers.Dense(h, activation="relu")(inp)
    t = keras.layers.Dense(8, activation="relu")(t)
    out = keras.layers.Dense(1, activation="sigmoid", name="p_anomaly")(t)
    model = keras.Model(inp, out, name=name)
    model.compile(optimizer=keras.optimizers.Adam(LEARNING_RATE), loss="binary_crossentropy")
    monitor = "val_loss" if np.any(y_val > 0.5) else "loss"
    if monitor == "loss":
        log("[edgeline-train] the validation split has no anomalous window: early stopping on the training loss")
    run, best = _fit(
        model,
        (x_train, y_train.reshape(-1, 1)),
        (x_val, y_val.reshape(-1, 1)),
        epochs=epochs,
        tag="classifier",
        monitor=monitor,
        class_weight=class_weights(y_train),
    )
    return Fitted(model, run, best, f"{n}-{h}-8-1 dense relu classifier, sigmoid output", monitor)
