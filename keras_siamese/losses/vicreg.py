"""VICReg loss: invariance, variance and covariance terms of two views."""

from __future__ import annotations

from typing import Any

import keras
from keras import ops

from keras_siamese._checks import check_float
from keras_siamese.losses._views import TwoViewLoss, count, split_views


def _variance_and_covariance(x: Any, eps: float) -> tuple[Any, Any]:
    """The variance and covariance terms of one view `(N, dim)`."""
    rows = count(x)
    # `N - 1` (the unbiased estimates); floored at 1 so that a batch of one
    # example, whose size is only known at run time, stays finite.
    dof = ops.where(rows < 2, 1.0, rows - 1.0)
    centered = x - ops.sum(x, axis=0, keepdims=True) / ops.where(rows < 1, 1.0, rows)
    std = ops.sqrt(ops.sum(ops.square(centered), axis=0) / dof + eps)
    variance = ops.mean(ops.relu(1.0 - std))
    covariance = ops.matmul(ops.transpose(centered), centered) / dof
    dim = ops.shape(covariance)[0]
    off_diagonal = covariance * (1.0 - ops.eye(dim, dtype=covariance.dtype))
    return variance, ops.sum(ops.square(off_diagonal)) / ops.cast(dim, x.dtype)


@keras.saving.register_keras_serializable(package="keras_siamese")
def vicreg_loss(
    y_true: Any,
    y_pred: Any,
    lambda_param: float = 25.0,
    mu_param: float = 25.0,
    nu_param: float = 1.0,
    eps: float = 1e-4,
) -> Any:
    """VICReg loss of the two views of every example (Bardes et al. 2022).

    `y_pred` `(2N, dim)` stacks the embeddings of view 0 of `N` examples and
    then of their view 1 (rows `k` and `N + k`, the datasets' `views=2`
    order). With `z0`, `z1` the two views:

        loss = lambda_param * mean((z0 - z1)^2)
             + mu_param * (v(z0) + v(z1)) / 2
             + nu_param * (c(z0) + c(z1))

    where `v(z) = mean_j relu(1 - sqrt(var_j(z) + eps))` keeps the standard
    deviation of every dimension over the batch at 1 or above (unbiased
    variance), and `c(z) = sum_{i != j} cov(z)_ij^2 / dim` decorrelates the
    dimensions (unbiased covariance). These are the value and gradients of
    lightly's `VICRegLoss()` and of pytorch-metric-learning's `VICRegLoss()`
    (`VICRegLoss()(z0, ref_emb=z1)`). Constant embeddings and identical
    views are finite, with finite gradients (`eps > 0`).

    Args:
        y_true: ignored (the dataset's targets, or `None`).
        y_pred: `(2N, dim)`, view 0 of every example, then view 1.
        lambda_param: weight of the invariance term, default 25.
        mu_param: weight of the variance term, default 25.
        nu_param: weight of the covariance term, default 1.
        eps: added to the variances under the square root, default 1e-4.

    Returns:
        A scalar, float32 for half-precision inputs.

    Raises:
        ValueError: if a weight is negative or `eps` not positive, or `y_pred`
            is not 2-D or has a known odd number of rows or fewer than 4 (two
            examples per view, for the unbiased variances).

    Examples:
        >>> import numpy as np
        >>> views = np.array([[1.0, 0.0], [-1.0, 1.0], [1.0, 0.0], [-1.0, 1.0]])
        >>> round(float(vicreg_loss(None, views)), 4)
        5.6603
    """
    del y_true
    lambda_param = check_float(lambda_param, "lambda_param", minimum=0.0)
    mu_param = check_float(mu_param, "mu_param", minimum=0.0)
    nu_param = check_float(nu_param, "nu_param", minimum=0.0)
    eps = check_float(eps, "eps", minimum=0.0, inclusive=False)
    z0, z1 = split_views(y_pred, "vicreg_loss", min_examples=2)
    invariance = ops.mean(ops.square(z0 - z1))
    variance0, covariance0 = _variance_and_covariance(z0, eps)
    variance1, covariance1 = _variance_and_covariance(z1, eps)
    return (
        lambda_param * invariance
        + mu_param * 0.5 * (variance0 + variance1)
        + nu_param * (covariance0 + covariance1)
    )


@keras.saving.register_keras_serializable(package="keras_siamese")
class VICRegLoss(TwoViewLoss):
    """VICReg loss: variance, invariance and covariance regularisation.

    `y_pred` `(2N, dim)` holds the embeddings of the two views of every
    example stacked on the batch axis (rows `k` and `N + k`, the order of a
    dataset's `views=2` batches): the views are pulled together (mean
    squared error, weight `lambda_param`), every dimension's standard
    deviation over the batch is held at 1 or above (`mu_param`) and the
    dimensions are decorrelated (`nu_param`); see `vicreg_loss`. Values,
    gradients and defaults are those of lightly's `VICRegLoss()` and
    pytorch-metric-learning's `VICRegLoss()`. `y_true` is ignored; the loss
    is a batch-level scalar, so `sample_weight` is not supported. Under a
    `tf.distribute` strategy, which splits a batch's rows among replicas,
    the two halves of a replica's slice are no longer the two views: train
    on one replica, or with JAX's `DataParallel`.

    Args:
        lambda_param: weight of the invariance term, default 25.
        mu_param: weight of the variance term, default 25.
        nu_param: weight of the covariance term, default 1.
        eps: added to the variances under the square root, default 1e-4.
        reduction: Keras loss reduction (the loss is already a scalar).
        name: name of the loss.
        dtype: dtype of the computation; defaults to `keras.backend.floatx()`.

    Raises:
        ValueError: if a weight is negative or `eps` not positive (at
            construction); for a badly shaped `y_pred`, fewer than two
            examples per view, or a `sample_weight` (at call).

    Examples:
        >>> import numpy as np
        >>> views = np.array([[1.0, 0.0], [-1.0, 1.0], [1.0, 0.0], [-1.0, 1.0]])
        >>> round(float(VICRegLoss(mu_param=0.0)(None, views)), 4)
        2.0

        Usage with `compile()`:

        >>> import keras
        >>> model = keras.Sequential([keras.Input((4,)), keras.layers.Dense(3)])
        >>> model.compile(optimizer="sgd", loss=VICRegLoss())
    """

    def __init__(
        self,
        lambda_param: float = 25.0,
        mu_param: float = 25.0,
        nu_param: float = 1.0,
        eps: float = 1e-4,
        reduction: str = "sum_over_batch_size",
        name: str = "vicreg_loss",
        dtype: str | None = None,
    ) -> None:
        super().__init__(name=name, reduction=reduction, dtype=dtype)
        self.lambda_param = check_float(lambda_param, "lambda_param", minimum=0.0)
        self.mu_param = check_float(mu_param, "mu_param", minimum=0.0)
        self.nu_param = check_float(nu_param, "nu_param", minimum=0.0)
        self.eps = check_float(eps, "eps", minimum=0.0, inclusive=False)

    def compute(self, y_pred: Any) -> Any:
        return vicreg_loss(
            None,
            y_pred,
            lambda_param=self.lambda_param,
            mu_param=self.mu_param,
            nu_param=self.nu_param,
            eps=self.eps,
        )

    def get_config(self) -> dict[str, Any]:
        config = super().get_config()
        config.update(
            {
                "lambda_param": self.lambda_param,
                "mu_param": self.mu_param,
                "nu_param": self.nu_param,
                "eps": self.eps,
            }
        )
        return config
