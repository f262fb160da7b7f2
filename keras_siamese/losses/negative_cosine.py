"""Negative cosine similarity (SimSiam) of the two views of every example."""

from __future__ import annotations

from typing import Any

import keras

from keras_siamese._checks import check_float
from keras_siamese.losses._views import (
    TwoViewLoss,
    mean_cosine,
    predictions_and_targets,
)


@keras.saving.register_keras_serializable(package="keras_siamese")
def negative_cosine_similarity(y_true: Any, y_pred: Any, eps: float = 1e-8) -> Any:
    """Negative cosine similarity of the two views, SimSiam's loss.

    `D(x0, x1) = -mean_k cos(x0_k, x1_k)`, each vector divided by its norm
    floored at `eps` (so a zero vector has similarity 0 with everything and
    a finite gradient). `y_pred` stacks the two views of `N` examples on the
    batch axis (rows `k` and `N + k` are the views of example `k`, the
    datasets' `views=2` order) in one of two layouts:

    - `(2N, dim)`: `D(view 0, view 1)`, lightly's
      `NegativeCosineSimilarity()(x0, x1)`; both views get gradients.
    - `(2N, 2, dim)`: per row the predictor's output `p` and the
      projection `z` (for instance `ops.stack([p, z], axis=1)`). This is
      SimSiam's symmetric loss with a stop-gradient on the target branch,
      `(D(p0, sg(z1)) + D(p1, sg(z0))) / 2`, in `[-1, 1]`: lightly's
      `0.5 * (NegativeCosineSimilarity()(p0, z1.detach()) +
      NegativeCosineSimilarity()(p1, z0.detach()))`. No gradient reaches `z`.

    Args:
        y_true: ignored (the dataset's targets, or `None`).
        y_pred: `(2N, dim)` or `(2N, 2, dim)`, as above.
        eps: the floor of every vector's norm, default 1e-8 (lightly's and
            PyTorch's).

    Returns:
        A scalar (0 for a batch without rows), float32 for half-precision
        inputs.

    Raises:
        ValueError: if `eps` is not positive, or `y_pred` has another shape
            or a known odd number of rows.

    Examples:
        >>> import numpy as np
        >>> views = np.array([[1.0, 0.0], [1.0, 1.0], [2.0, 0.0], [0.0, 1.0]])
        >>> round(float(negative_cosine_similarity(None, views)), 4)
        -0.8536
        >>> p_and_z = np.stack([views, views[::-1]], axis=1)
        >>> round(float(negative_cosine_similarity(None, p_and_z)), 4)
        -0.3536
    """
    del y_true
    eps = check_float(eps, "eps", minimum=0.0, inclusive=False)
    x0, x1 = predictions_and_targets(y_pred, "negative_cosine_similarity")
    return -mean_cosine(x0, x1, eps)


@keras.saving.register_keras_serializable(package="keras_siamese")
class NegativeCosineSimilarity(TwoViewLoss):
    """Negative cosine similarity of two views: SimSiam's loss.

    `y_pred` holds the two views of every example stacked on the batch axis
    (rows `k` and `N + k`, the order of a dataset's `views=2` batches):
    `(2N, dim)` gives `-mean cos(view 0, view 1)`, and `(2N, 2, dim)` (per
    row, the predictor's output `p` and the projection `z`) gives SimSiam's
    symmetric `(D(p0, sg(z1)) + D(p1, sg(z0))) / 2` with a stop-gradient on
    the targets; see `negative_cosine_similarity`. Values and gradients are
    those of lightly's `NegativeCosineSimilarity()`, applied as SimSiam
    applies it. `y_true` is ignored; the loss is a batch-level scalar, so
    `sample_weight` is not supported. Under a `tf.distribute` strategy,
    which splits a batch's rows among replicas, the two halves of a
    replica's slice are no longer the two views: train on one replica, or
    with JAX's `DataParallel`, which computes the loss on the global batch.

    Args:
        eps: the floor of every vector's norm, default 1e-8.
        reduction: Keras loss reduction (the loss is already a scalar).
        name: name of the loss.
        dtype: dtype of the computation; defaults to `keras.backend.floatx()`.

    Raises:
        ValueError: if `eps` is not positive (at construction); for a badly
            shaped `y_pred` or a `sample_weight` (at call).

    Examples:
        >>> import numpy as np
        >>> loss = NegativeCosineSimilarity()
        >>> views = np.array([[1.0, 0.0], [1.0, 1.0], [2.0, 0.0], [0.0, 1.0]])
        >>> round(float(loss(None, views)), 4)
        -0.8536

        Usage with `compile()`, on a model whose output stacks the
        predictor's output and the projection of every row:

        >>> import keras
        >>> x = keras.Input((4,))
        >>> z = keras.layers.Dense(3)(x)
        >>> p = keras.layers.Dense(3)(z)
        >>> model = keras.Model(x, keras.ops.stack([p, z], axis=1))
        >>> model.compile(optimizer="sgd", loss=NegativeCosineSimilarity())
    """

    def __init__(
        self,
        eps: float = 1e-8,
        reduction: str = "sum_over_batch_size",
        name: str = "negative_cosine_similarity",
        dtype: str | None = None,
    ) -> None:
        super().__init__(name=name, reduction=reduction, dtype=dtype)
        self.eps = check_float(eps, "eps", minimum=0.0, inclusive=False)

    def compute(self, y_pred: Any) -> Any:
        return negative_cosine_similarity(None, y_pred, eps=self.eps)

    def get_config(self) -> dict[str, Any]:
        config = super().get_config()
        config.update({"eps": self.eps})
        return config
