"""Base of the accuracy metrics: a mean of per-sample scores, higher is better."""

from __future__ import annotations

from typing import Any

import keras

from keras_siamese._checks import check_real


class AccuracyMean(keras.metrics.MeanMetricWrapper):
    """`MeanMetricWrapper` that refuses non-real inputs by name.

    Keras casts `y_true` and `y_pred` to the metric's dtype before the
    wrapped function runs, so strings must be refused here, first.
    """

    def __init__(self, fn: Any, name: str, dtype: str | None, **kwargs: Any) -> None:
        super().__init__(fn=fn, name=name, dtype=dtype, **kwargs)
        # Tells callbacks in mode="auto" (EarlyStopping, ModelCheckpoint)
        # that higher is better, whatever the metric is named.
        self._direction = "up"

    def update_state(self, y_true: Any, y_pred: Any, sample_weight: Any = None) -> None:
        check_real(y_true, "y_true")
        check_real(y_pred, "y_pred")
        super().update_state(y_true, y_pred, sample_weight=sample_weight)
