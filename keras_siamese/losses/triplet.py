"""Triplet loss for explicit (anchor, positive, negative) triplets."""

from __future__ import annotations

from typing import Any

import keras

from keras_siamese import distances
from keras_siamese._checks import (
    check_bool,
    check_margin,
    check_triplets,
)
from keras_siamese.distances import as_float
from keras_siamese.losses.contrastive import total_of_empty_batch
from keras_siamese.losses.mining import hinge_or_softplus


@keras.saving.register_keras_serializable(package="keras_siamese")
def triplet_loss(
    y_true: Any,
    y_pred: Any,
    margin: float = 1.0,
    distance: str | distances.Distance = "euclidean",
    soft: bool = False,
) -> Any:
    """Per-triplet loss `max(d(a, p) - d(a, n) + margin, 0)`.

    Args:
        y_true: ignored (the triplet layout carries the labels); pass any
            array with the batch size, for example `np.zeros(batch)`.
        y_pred: stacked embeddings of shape `(batch, 3, dim)`: anchor,
            positive, negative, as `SiameseWrapper(..., merge="stack")`
            produces.
        margin: the required gap between `d(a, n)` and `d(a, p)`. Defaults to
            1.0 with the plain Euclidean distance, the default of TensorFlow
            Addons' triplet losses. FaceNet used 0.2 with squared distances
            between unit-norm embeddings; rescale the margin with the
            distance. Ignored when `soft=True`.
        distance: `"euclidean"` (default), `"squared_euclidean"`, `"cosine"`,
            `"manhattan"`, or a `Distance` (see `keras_siamese.distances.get`).
        soft: use the soft margin `softplus(d(a, p) - d(a, n))` of Hermans et
            al. (2017) instead of the hinge.

    Returns:
        The loss of every triplet, shape `(batch,)` (empty for no triplets,
        as Keras' own loss functions), in float32 for half-precision inputs
        and in the dtype of `y_pred` otherwise (float64 stays float64).

    Raises:
        ValueError: if `y_pred` is not `(batch, 3, dim)`, `margin` is negative
            or `distance` is unknown.

    Examples:
        >>> import numpy as np
        >>> triplets = np.array([[[0.0, 0.0], [1.0, 0.0], [3.0, 0.0]]])
        >>> [float(v) for v in triplet_loss(np.zeros(1), triplets, margin=1.0)]
        [0.0]

        Usage with `compile()`, on a model that stacks the embeddings of a
        triplet (the function takes the default arguments; `TripletLoss`
        takes others):

        >>> import keras
        >>> from keras_siamese import SiameseWrapper
        >>> triplet = [keras.Input((4,)) for _ in range(3)]
        >>> stacked = SiameseWrapper(keras.layers.Dense(2), merge="stack")(triplet)
        >>> model = keras.Model(triplet, stacked)
        >>> model.compile(optimizer="adam", loss=triplet_loss)
    """
    del y_true
    margin = check_margin(margin)
    measure = distances.get(distance, needs=("paired",), user="triplet_loss")
    soft = check_bool(soft, "soft")
    y_pred = as_float(y_pred)
    check_triplets(y_pred)
    anchor, positive, negative = y_pred[:, 0], y_pred[:, 1], y_pred[:, 2]
    positive_distance = measure.paired(anchor, positive)
    negative_distance = measure.paired(anchor, negative)
    return hinge_or_softplus(positive_distance - negative_distance, margin, soft)


@keras.saving.register_keras_serializable(package="keras_siamese")
class TripletLoss(keras.losses.Loss):
    """Triplet loss of explicit triplets, averaged over the batch.

    `y_pred` is `(batch, 3, dim)` (anchor, positive, negative), the output of
    `SiameseWrapper(encoder, merge="stack")` on three inputs; `y_true`
    is ignored, so fit with dummy targets such as `np.zeros(batch)`. A batch
    of no triplets has loss 0 (an empty vector with `reduction=None`).
    With `dtype="float64"`, Keras 3 computes the mean of the
    `"sum_over_batch_size"` and `"mean"` reductions in float32 on PyTorch
    and JAX (see `ContrastiveLoss`); `reduction=None` or `"sum"` keep
    float64.

    Args:
        margin: required gap between `d(a, n)` and `d(a, p)`; default 1.0 with
            the Euclidean distance (TensorFlow Addons' default). Ignored when
            `soft=True`.
        distance: `"euclidean"` (default), `"squared_euclidean"`, `"cosine"`,
            `"manhattan"`, or a `Distance` (see `keras_siamese.distances.get`).
        soft: use `softplus(d(a, p) - d(a, n))` instead of the hinge.
        reduction: Keras loss reduction; the default averages over triplets.
        name: name of the loss.
        dtype: dtype of the computation; defaults to `keras.backend.floatx()`.

    Raises:
        ValueError: for a negative margin or unknown distance (at
            construction), or a `y_pred` that is not `(batch, 3, dim)`.

    Examples:
        >>> import numpy as np
        >>> triplets = np.array([[[0.0, 0.0], [1.0, 0.0], [1.5, 0.0]]])
        >>> float(TripletLoss(margin=1.0)(np.zeros(1), triplets))
        0.5

        Usage with `compile()`, on a model that stacks the embeddings of a
        triplet; fit it with dummy targets such as `np.zeros(batch)`:

        >>> import keras
        >>> from keras_siamese import SiameseWrapper
        >>> triplet = [keras.Input((4,)) for _ in range(3)]
        >>> stacked = SiameseWrapper(keras.layers.Dense(2), merge="stack")(triplet)
        >>> model = keras.Model(triplet, stacked)
        >>> model.compile(optimizer="adam", loss=TripletLoss(margin=1.0))
    """

    def __init__(
        self,
        margin: float = 1.0,
        distance: str | distances.Distance = "euclidean",
        soft: bool = False,
        reduction: str = "sum_over_batch_size",
        name: str = "triplet_loss",
        dtype: str | None = None,
    ) -> None:
        super().__init__(name=name, reduction=reduction, dtype=dtype)
        self.margin = check_margin(margin)
        self._measure = distances.get(distance, needs=("paired",), user="TripletLoss")
        self.distance = self._measure.name
        self.soft = check_bool(soft, "soft")

    def __call__(self, y_true: Any, y_pred: Any, sample_weight: Any = None) -> Any:
        value = super().__call__(y_true, y_pred, sample_weight=sample_weight)
        return total_of_empty_batch(self, value)

    def call(self, y_true: Any, y_pred: Any) -> Any:
        return triplet_loss(
            y_true,
            y_pred,
            margin=self.margin,
            distance=self._measure,
            soft=self.soft,
        )

    def get_config(self) -> dict[str, Any]:
        config = super().get_config()
        config.update(
            {
                "margin": self.margin,
                "distance": distances.serialize(self._measure, "TripletLoss"),
                "soft": self.soft,
                "dtype": self.dtype,
            }
        )
        return config
