"""BYOL's normalised mean squared error of the two views of every example."""

from __future__ import annotations

from typing import Any

import keras
from keras import ops

from keras_siamese._checks import check_float
from keras_siamese.losses._views import (
    TwoViewLoss,
    count,
    mean_cosine,
    predictions_and_targets,
)


@keras.saving.register_keras_serializable(package="keras_siamese")
def byol_loss(y_true: Any, y_pred: Any, eps: float = 1e-8) -> Any:
    """BYOL's loss: the squared distance of L2-normalised vectors, `2 - 2 cos`.

    `||x0 / |x0| - x1 / |x1| ||^2 = 2 - 2 cos(x0, x1)`, averaged over the
    pairs, each vector divided by its norm floored at `eps`. `y_pred` stacks
    the two views of `N` examples on the batch axis (rows `k` and `N + k`
    are the views of example `k`, the datasets' `views=2` order):

    - `(2N, 2, dim)`: per row the online network's prediction `p` and the
      target network's projection `z`. The loss is BYOL's symmetrised loss,
      the prediction of each view against the target of the other behind a
      stop-gradient, averaged over both directions:
      `mean(2 - 2 cos(p0, sg(z1)), 2 - 2 cos(p1, sg(z0)))`, in `[0, 4]`.
      This is half the sum `L + L~` of Grill et al. (2020), and
      `2 + 2 * negative_cosine_similarity(y_true, y_pred)`: lightly trains
      BYOL with `NegativeCosineSimilarity`, which differs by this affine map.
    - `(2N, dim)`: `mean_k (2 - 2 cos(view 0_k, view 1_k))`, both views
      differentiable.

    Args:
        y_true: ignored (the dataset's targets, or `None`).
        y_pred: `(2N, 2, dim)` or `(2N, dim)`, as above.
        eps: the floor of every vector's norm, default 1e-8.

    Returns:
        A scalar (0 for a batch without rows), float32 for half-precision
        inputs.

    Raises:
        ValueError: if `eps` is not positive, or `y_pred` has another shape
            or a known odd number of rows.

    Examples:
        >>> import numpy as np
        >>> views = np.array([[1.0, 0.0], [1.0, 1.0], [2.0, 0.0], [0.0, 1.0]])
        >>> p_and_z = np.stack([views, views[::-1]], axis=1)
        >>> round(float(byol_loss(None, p_and_z)), 4)
        1.2929
    """
    del y_true
    eps = check_float(eps, "eps", minimum=0.0, inclusive=False)
    x0, x1 = predictions_and_targets(y_pred, "byol_loss")
    # 2 - 2 * mean(cos) for a batch with rows, 0 for an empty one.
    return 2.0 * ops.cast(count(x0) > 0, x0.dtype) - 2.0 * mean_cosine(x0, x1, eps)


@keras.saving.register_keras_serializable(package="keras_siamese")
class BYOLLoss(TwoViewLoss):
    """BYOL's normalised mean squared error `2 - 2 cos` between two views.

    `y_pred` holds the two views of every example stacked on the batch axis
    (rows `k` and `N + k`, the order of a dataset's `views=2` batches); with
    the layout `(2N, 2, dim)` (per row, the online prediction `p` and the
    target projection `z`) the loss is BYOL's symmetrised loss with a
    stop-gradient on the targets, averaged over both directions; see
    `byol_loss`. It equals `2 + 2 *` lightly's `NegativeCosineSimilarity`
    applied as in lightly's BYOL, `0.5 * (loss(p0, z1) + loss(p1, z0))`.
    `y_true` is ignored; the loss is a batch-level scalar, so
    `sample_weight` is not supported. Under a `tf.distribute` strategy,
    which splits a batch's rows among replicas, the two halves of a
    replica's slice are no longer the two views: train on one replica, or
    with JAX's `DataParallel`.

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
        >>> views = np.array([[1.0, 0.0], [1.0, 1.0], [2.0, 0.0], [0.0, 1.0]])
        >>> p_and_z = np.stack([views, views[::-1]], axis=1)
        >>> round(float(BYOLLoss()(None, p_and_z)), 4)
        1.2929

        Usage with `compile()`, on a model whose output stacks the
        prediction and the (target) projection of every row:

        >>> import keras
        >>> x = keras.Input((4,))
        >>> z = keras.layers.Dense(3)(x)
        >>> p = keras.layers.Dense(3)(z)
        >>> model = keras.Model(x, keras.ops.stack([p, z], axis=1))
        >>> model.compile(optimizer="sgd", loss=BYOLLoss())
    """

    def __init__(
        self,
        eps: float = 1e-8,
        reduction: str = "sum_over_batch_size",
        name: str = "byol_loss",
        dtype: str | None = None,
    ) -> None:
        super().__init__(name=name, reduction=reduction, dtype=dtype)
        self.eps = check_float(eps, "eps", minimum=0.0, inclusive=False)

    def compute(self, y_pred: Any) -> Any:
        return byol_loss(None, y_pred, eps=self.eps)

    def get_config(self) -> dict[str, Any]:
        config = super().get_config()
        config.update({"eps": self.eps})
        return config
