"""Barlow Twins loss: the cross-correlation of two views, pushed to identity."""

from __future__ import annotations

from typing import Any

import keras
from keras import ops

from keras_siamese._checks import check_float
from keras_siamese.losses._views import TwoViewLoss, count, split_views

# The variance floor of the batch standardisation: PyTorch's `batch_norm`
# default, which lightly standardises with.
_BATCH_NORM_EPS = 1e-5


def standardize(x: Any) -> Any:
    """Each column of `x` `(N, dim)` to mean 0 and (biased) variance 1.

    `(x - mean) / sqrt(var + 1e-5)` over the batch axis, as a batch
    normalisation without scale and offset in training mode; a constant
    column becomes 0.
    """
    rows = count(x)
    rows = ops.where(rows < 1, 1.0, rows)
    centered = x - ops.sum(x, axis=0, keepdims=True) / rows
    variance = ops.sum(ops.square(centered), axis=0, keepdims=True) / rows
    return centered / ops.sqrt(variance + _BATCH_NORM_EPS)


@keras.saving.register_keras_serializable(package="keras_siamese")
def barlow_twins_loss(y_true: Any, y_pred: Any, lambda_param: float = 5e-3) -> Any:
    """Barlow Twins loss of the two views of every example (Zbontar et al. 2021).

    `y_pred` `(2N, dim)` stacks the embeddings of view 0 of `N` examples and
    then of their view 1 (rows `k` and `N + k`, the datasets' `views=2`
    order). Each view's batch is standardised per dimension (mean 0,
    variance 1 with the biased variance and a floor of 1e-5, a batch
    normalisation in training mode), and their cross-correlation
    `C = z0^T z1 / N` `(dim, dim)` is pushed to the identity:

        loss = sum_i (1 - C_ii)^2 + lambda_param * sum_{i != j} C_ij^2

    These are the value and gradients of lightly's `BarlowTwinsLoss()`
    (`BarlowTwinsLoss()(z0, z1)`). A dimension constant over the batch
    standardises to 0: its diagonal term is 1, its gradient finite.

    Args:
        y_true: ignored (the dataset's targets, or `None`).
        y_pred: `(2N, dim)`, view 0 of every example, then view 1.
        lambda_param: the weight of the off-diagonal (redundancy reduction)
            term, default 5e-3 (the paper's and lightly's).

    Returns:
        A scalar, float32 for half-precision inputs.

    Raises:
        ValueError: if `lambda_param` is negative, or `y_pred` is not 2-D or
            has a known odd number of rows or fewer than 4 (two examples per
            view; a standardisation over one example is undefined).

    Examples:
        >>> import numpy as np
        >>> views = np.array([[1.0, 0.0], [-1.0, 1.0], [2.0, 1.0], [-2.0, 0.0]])
        >>> round(float(barlow_twins_loss(None, views)), 4)
        4.0098
    """
    del y_true
    lambda_param = check_float(lambda_param, "lambda_param", minimum=0.0)
    z0, z1 = split_views(y_pred, "barlow_twins_loss", min_examples=2)
    rows = count(z0)
    correlation = ops.matmul(ops.transpose(standardize(z0)), standardize(z1))
    correlation = correlation / ops.where(rows < 1, 1.0, rows)
    diagonal = ops.eye(ops.shape(correlation)[0], dtype=correlation.dtype)
    on_diagonal = ops.sum(ops.square((correlation - 1.0) * diagonal))
    off_diagonal = ops.sum(ops.square(correlation * (1.0 - diagonal)))
    return on_diagonal + lambda_param * off_diagonal


@keras.saving.register_keras_serializable(package="keras_siamese")
class BarlowTwinsLoss(TwoViewLoss):
    """Barlow Twins loss: the views' cross-correlation pushed to the identity.

    `y_pred` `(2N, dim)` holds the embeddings (projections) of the two views
    of every example stacked on the batch axis (rows `k` and `N + k`, the
    order of a dataset's `views=2` batches). Each view is standardised over
    the batch, and their cross-correlation matrix `C` costs
    `sum_i (1 - C_ii)^2 + lambda_param * sum_{i != j} C_ij^2`; see
    `barlow_twins_loss`. Values, gradients and default are those of
    lightly's `BarlowTwinsLoss()`. `y_true` is ignored; the loss is a
    batch-level scalar, so `sample_weight` is not supported. Under a
    `tf.distribute` strategy, which splits a batch's rows among replicas,
    the two halves of a replica's slice are no longer the two views: train
    on one replica, or with JAX's `DataParallel`.

    Args:
        lambda_param: the weight of the off-diagonal terms, default 5e-3.
        reduction: Keras loss reduction (the loss is already a scalar).
        name: name of the loss.
        dtype: dtype of the computation; defaults to `keras.backend.floatx()`.

    Raises:
        ValueError: if `lambda_param` is negative (at construction); for a
            badly shaped `y_pred`, fewer than two examples per view, or a
            `sample_weight` (at call).

    Examples:
        >>> import numpy as np
        >>> views = np.array([[1.0, 0.0], [-1.0, 1.0], [2.0, 1.0], [-2.0, 0.0]])
        >>> round(float(BarlowTwinsLoss(lambda_param=1.0)(None, views)), 4)
        5.9997

        Usage with `compile()`:

        >>> import keras
        >>> model = keras.Sequential([keras.Input((4,)), keras.layers.Dense(3)])
        >>> model.compile(optimizer="sgd", loss=BarlowTwinsLoss())
    """

    def __init__(
        self,
        lambda_param: float = 5e-3,
        reduction: str = "sum_over_batch_size",
        name: str = "barlow_twins_loss",
        dtype: str | None = None,
    ) -> None:
        super().__init__(name=name, reduction=reduction, dtype=dtype)
        self.lambda_param = check_float(lambda_param, "lambda_param", minimum=0.0)

    def compute(self, y_pred: Any) -> Any:
        return barlow_twins_loss(None, y_pred, lambda_param=self.lambda_param)

    def get_config(self) -> dict[str, Any]:
        config = super().get_config()
        config.update({"lambda_param": self.lambda_param})
        return config
