"""Contrastive loss for pairs of embeddings (Hadsell, Chopra and LeCun, 2006)."""

from __future__ import annotations

from typing import Any

import keras
from keras import ops

from keras_siamese._checks import (
    as_vector,
    check_margin,
    check_same_batch,
    check_similar_label,
)
from keras_siamese.distances import as_float


def total_of_empty_batch(loss: keras.losses.Loss, value: Any) -> Any:
    """A reduced loss of an empty batch as the scalar 0.

    Keras returns the losses of a batch of statically known size 0 unreduced,
    an empty vector, whatever the reduction; the sum of no losses is 0, and
    so is Keras' own mean of them (`divide_no_nan(0, 0)`) when the size is
    only known at run time.
    """
    if loss.reduction in (None, "none") or tuple(value.shape) != (0,):
        return value
    return ops.sum(value)


@keras.saving.register_keras_serializable(package="keras_siamese")
def contrastive_loss(
    y_true: Any, y_pred: Any, margin: float = 1.0, similar_label: int = 1
) -> Any:
    """Per-pair contrastive loss `y * d**2 + (1 - y) * max(margin - d, 0)**2`.

    Label convention: **`y_true = 1` means the pair is similar** (same class)
    and `y_true = 0` means dissimilar, unless `similar_label=0`. Similar
    pairs are pulled together (`d**2`); dissimilar pairs are pushed apart
    until they are `margin` away. This is the formula of the classic Keras
    `mnist_siamese` recipe and of TensorFlow Addons' `contrastive_loss`. The
    current keras-io example `siamese_contrastive` labels the other way
    (0 = similar) with a loss to match; its labels given to this loss with
    the default `similar_label=1` train the inverse of what is meant, with
    no error, so say `similar_label=0` for such labels (or flip them).

    Args:
        y_true: pair labels, 1 (similar) or 0 (dissimilar), shape `(batch,)` or
            `(batch, 1)`.
        y_pred: distances between the two embeddings of each pair (for example
            the output of `EuclideanDistance`), shape `(batch,)` or
            `(batch, 1)`.
        margin: the distance beyond which dissimilar pairs cost nothing.
            Defaults to 1.0, the value of the seed recipe and of TensorFlow
            Addons.
        similar_label: the label of a similar pair, 1 (default) or 0; with
            0 the loss is `(1 - y) * d**2 + y * max(margin - d, 0)**2`.

    Returns:
        The loss of every pair, shape `(batch,)` (empty for no pairs, as
        Keras' own loss functions), in float32 for half-precision inputs and
        in the dtype of `y_pred` otherwise (float64 stays float64).

    Raises:
        ValueError: if a shape is not `(batch,)` or `(batch, 1)`, the batch
            sizes differ, `margin` is negative, or `similar_label` is
            neither 1 nor 0.
        TypeError: if `similar_label` is not an integer.

    Examples:
        >>> import numpy as np
        >>> loss = contrastive_loss(np.array([1.0, 0.0]), np.array([[0.5], [0.25]]))
        >>> [round(float(v), 4) for v in loss]
        [0.25, 0.5625]

        The same pairs labelled with 0 for "similar":

        >>> loss = contrastive_loss(
        ...     np.array([0.0, 1.0]), np.array([[0.5], [0.25]]), similar_label=0
        ... )
        >>> [round(float(v), 4) for v in loss]
        [0.25, 0.5625]

        Usage with `compile()`, on a model that outputs pair distances (the
        function takes the default margin; `ContrastiveLoss` takes another):

        >>> import keras
        >>> from keras_siamese import EuclideanDistance, SiameseWrapper
        >>> pair = [keras.Input((4,)), keras.Input((4,))]
        >>> siamese = SiameseWrapper(keras.layers.Dense(2), merge=EuclideanDistance())
        >>> model = keras.Model(pair, siamese(pair))
        >>> model.compile(optimizer="adam", loss=contrastive_loss)
    """
    margin = check_margin(margin)
    similar_label = check_similar_label(similar_label)
    distances = as_vector(as_float(y_pred), "y_pred")
    labels = as_vector(
        ops.cast(ops.convert_to_tensor(y_true), distances.dtype), "y_true"
    )
    check_same_batch(labels, distances, "y_true", "y_pred")
    if similar_label == 0:
        labels = 1.0 - labels
    shortfall = ops.relu(margin - distances)
    return labels * ops.square(distances) + (1.0 - labels) * ops.square(shortfall)


@keras.saving.register_keras_serializable(package="keras_siamese")
class ContrastiveLoss(keras.losses.Loss):
    """Contrastive loss of pair distances, averaged over the batch.

    Label convention: **`y_true = 1` means similar, 0 means dissimilar**,
    unless `similar_label=0` (the convention of the current keras-io
    `siamese_contrastive` example). Per pair the loss is
    `y * d**2 + (1 - y) * max(margin - d, 0)**2` for similar label 1; see
    `contrastive_loss`. `y_pred` is the `(batch, 1)` output of a distance
    layer (or `(batch,)`); both shapes are handled without broadcasting
    against `(batch,)` labels. A batch of no pairs has loss 0 (an empty
    vector with `reduction=None`).

    With `dtype="float64"`, the per-pair losses are float64 on every
    backend (JAX needs `jax_enable_x64`), but Keras 3 computes the mean of
    the `"sum_over_batch_size"` and `"mean"` reductions in float32 on
    PyTorch and JAX (its type promotion turns 64-bit floats into 32-bit
    ones there); take `reduction=None` or `"sum"` and reduce yourself to keep
    float64.

    Args:
        margin: distance beyond which dissimilar pairs cost nothing. Defaults
            to 1.0 (the classic Keras recipe and TensorFlow Addons).
        similar_label: the label of a similar pair, 1 (default) or 0.
        reduction: Keras loss reduction; the default averages over pairs.
        name: name of the loss.
        dtype: dtype of the computation; defaults to `keras.backend.floatx()`
            so mixed-precision models still compute the loss in float32.

    Raises:
        ValueError: if `margin` is negative or `similar_label` is neither 1
            nor 0 (at construction), or shapes are wrong (at the first call).
        TypeError: if `similar_label` is not an integer.

    Examples:
        >>> import numpy as np
        >>> loss = ContrastiveLoss(margin=1.0)
        >>> round(float(loss(np.array([1.0, 0.0]), np.array([[0.5], [0.25]]))), 4)
        0.4062

        Usage with `compile()`, on a model that outputs pair distances:

        >>> import keras
        >>> from keras_siamese import EuclideanDistance, SiameseWrapper
        >>> pair = [keras.Input((4,)), keras.Input((4,))]
        >>> siamese = SiameseWrapper(keras.layers.Dense(2), merge=EuclideanDistance())
        >>> model = keras.Model(pair, siamese(pair))
        >>> model.compile(optimizer="adam", loss=ContrastiveLoss(margin=1.0))
    """

    def __init__(
        self,
        margin: float = 1.0,
        reduction: str = "sum_over_batch_size",
        name: str = "contrastive_loss",
        dtype: str | None = None,
        similar_label: int = 1,
    ) -> None:
        super().__init__(name=name, reduction=reduction, dtype=dtype)
        self.margin = check_margin(margin)
        self.similar_label = check_similar_label(similar_label)

    def __call__(self, y_true: Any, y_pred: Any, sample_weight: Any = None) -> Any:
        value = super().__call__(y_true, y_pred, sample_weight=sample_weight)
        return total_of_empty_batch(self, value)

    def call(self, y_true: Any, y_pred: Any) -> Any:
        return contrastive_loss(
            y_true, y_pred, margin=self.margin, similar_label=self.similar_label
        )

    def get_config(self) -> dict[str, Any]:
        config = super().get_config()
        config.update(
            {
                "margin": self.margin,
                "similar_label": self.similar_label,
                "dtype": self.dtype,
            }
        )
        return config
