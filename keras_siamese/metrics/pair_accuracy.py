"""Accuracy of same/different decisions made by thresholding pair distances."""

from __future__ import annotations

from typing import Any

import keras
from keras import ops

from keras_siamese._checks import (
    as_vector,
    check_same_batch,
    check_similar_label,
    check_threshold,
)
from keras_siamese.distances import as_float
from keras_siamese.metrics._base import AccuracyMean


@keras.saving.register_keras_serializable(package="keras_siamese")
def pair_accuracy(
    y_true: Any, y_pred: Any, threshold: float = 0.5, similar_label: int = 1
) -> Any:
    """Per-pair correctness of predicting "similar" where distance < threshold.

    Label convention as in `contrastive_loss`: `y_true = 1` similar, 0
    dissimilar (labels above 0.5 count as similar), unless
    `similar_label=0` (labels below 0.5 count as similar).

    Args:
        y_true: pair labels, shape `(batch,)` or `(batch, 1)`.
        y_pred: pair distances, shape `(batch,)` or `(batch, 1)`; both shapes
            are flattened so they never broadcast to `(batch, batch)`.
        threshold: distances strictly below it are predicted similar.
        similar_label: the label of a similar pair, 1 (default) or 0.

    Returns:
        A float `(batch,)` tensor of 1.0 (correct) and 0.0 (wrong).

    Raises:
        ValueError: for shapes other than `(batch,)` / `(batch, 1)`,
            different batch sizes, or a `similar_label` other than 1 or 0.
        TypeError: if `similar_label` is not an integer.

    Examples:
        >>> import numpy as np
        >>> hits = pair_accuracy(np.array([1, 0]), np.array([[0.2], [0.4]]))
        >>> [float(v) for v in hits]
        [1.0, 0.0]

        Usage with `compile()`, on a model that outputs pair distances (the
        function takes the default threshold; `PairAccuracy` takes another):

        >>> import keras
        >>> from keras_siamese import ContrastiveLoss, EuclideanDistance, SiameseWrapper
        >>> pair = [keras.Input((4,)), keras.Input((4,))]
        >>> siamese = SiameseWrapper(keras.layers.Dense(2), merge=EuclideanDistance())
        >>> model = keras.Model(pair, siamese(pair))
        >>> model.compile(
        ...     optimizer="adam", loss=ContrastiveLoss(), metrics=[pair_accuracy]
        ... )
    """
    threshold = check_threshold(threshold)
    similar_label = check_similar_label(similar_label)
    distances = as_vector(as_float(y_pred), "y_pred")
    labels = as_vector(ops.convert_to_tensor(y_true), "y_true")
    check_same_batch(labels, distances, "y_true", "y_pred")
    labels = ops.cast(labels, distances.dtype)
    similar = labels > 0.5 if similar_label == 1 else labels < 0.5
    predicted = distances < threshold
    return ops.cast(predicted == similar, distances.dtype)


@keras.saving.register_keras_serializable(package="keras_siamese")
class PairAccuracy(AccuracyMean):
    """Fraction of pairs classified correctly by `distance < threshold`.

    `y_true = 1` means similar (`y_true = 0` with `similar_label=0`).
    Unlike the seed recipe's `accuracy` function, a `(batch, 1)` distance
    against `(batch,)` labels is compared pair by pair, not broadcast to
    `(batch, batch)`.

    Args:
        threshold: distances strictly below it are predicted similar; 0.5 by
            default (the seed recipe's value, half the contrastive margin of
            1.0). Use `verification_accuracy` on validation distances to pick
            the best one.
        name: name of the metric.
        dtype: dtype of the metric result.
        similar_label: the label of a similar pair, 1 (default) or 0, as in
            `ContrastiveLoss`.

    Raises:
        ValueError: if `threshold` is not finite or `similar_label` is
            neither 1 nor 0.
        TypeError: if `similar_label` is not an integer.

    Examples:
        >>> import numpy as np
        >>> metric = PairAccuracy(threshold=0.5)
        >>> metric.update_state(np.array([1, 0, 0]), np.array([[0.2], [0.4], [0.9]]))
        >>> round(float(metric.result()), 4)
        0.6667

        Usage with `compile()`, on a model that outputs pair distances:

        >>> import keras
        >>> from keras_siamese import ContrastiveLoss, EuclideanDistance, SiameseWrapper
        >>> pair = [keras.Input((4,)), keras.Input((4,))]
        >>> siamese = SiameseWrapper(keras.layers.Dense(2), merge=EuclideanDistance())
        >>> model = keras.Model(pair, siamese(pair))
        >>> model.compile(
        ...     optimizer="adam",
        ...     loss=ContrastiveLoss(margin=1.0),
        ...     metrics=[PairAccuracy(threshold=0.5)],
        ... )
    """

    def __init__(
        self,
        threshold: float = 0.5,
        name: str = "pair_accuracy",
        dtype: str | None = None,
        similar_label: int = 1,
    ) -> None:
        self.threshold = check_threshold(threshold)
        self.similar_label = check_similar_label(similar_label)
        super().__init__(
            fn=pair_accuracy,
            name=name,
            dtype=dtype,
            threshold=self.threshold,
            similar_label=self.similar_label,
        )

    def get_config(self) -> dict[str, Any]:
        return {
            "threshold": self.threshold,
            "name": self.name,
            "dtype": self.dtype,
            "similar_label": self.similar_label,
        }
