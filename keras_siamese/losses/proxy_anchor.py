"""Proxy-Anchor loss (Kim et al. 2020) on cosines to trainable class proxies."""

from __future__ import annotations

from typing import Any

import keras
from keras import ops

from keras_siamese._checks import check_float, check_margin
from keras_siamese.losses._proxy_inputs import ProxyLoss, proxy_inputs


def _log_one_plus_sum_exp(exponents: Any, mask: Any) -> Any:
    """`log(1 + sum(exp(z)))` over axis 0 where `mask` holds; 0 where it never does.

    Computed as `m + log(exp(-m) + sum(exp(z - m)))` with `m` the largest of
    0 and the kept exponents, so nothing overflows; excluded entries are
    replaced before the exponential, so their gradient is 0, not NaN.
    """
    kept = ops.where(mask, exponents, ops.zeros_like(exponents))
    largest = ops.stop_gradient(
        ops.maximum(ops.max(ops.where(mask, exponents, 0.0), axis=0), 0.0)
    )
    terms = ops.where(mask, ops.exp(kept - largest), 0.0)
    return largest + ops.log(ops.exp(-largest) + ops.sum(terms, axis=0))


@keras.saving.register_keras_serializable(package="keras_siamese")
def proxy_anchor_loss(
    labels: Any, similarities: Any, margin: float = 0.1, alpha: float = 32.0
) -> Any:
    """Proxy-Anchor loss of a batch, from its cosines to the class proxies.

    Each proxy is an anchor for the whole batch. With `s(x, p)` the cosine of
    embedding `x` to proxy `p`, `X_p+` the batch's examples of class `p`,
    `X_p-` the others, `P+` the classes present in the batch and `C` all
    classes:

        loss = 1/|P+| sum_{p in P+} log(1 + sum_{x in X_p+} exp(-alpha (s(x, p) - margin)))
             + 1/C    sum_{p}       log(1 + sum_{x in X_p-} exp( alpha (s(x, p) + margin)))

    as PyTorch Metric Learning's `ProxyAnchorLoss` computes it (its
    `DivisorReducer` divides the positive part by the classes present and
    the negative part by all classes). A batch without examples has loss 0.

    Args:
        labels: integer class indices, shape `(batch,)` or `(batch, 1)`.
        similarities: the cosines to the class proxies, shape
            `(batch, num_classes)`, e.g. the output of `CosineProxies`.
        margin: the margin `delta`; default 0.1.
        alpha: the scale `alpha`; default 32.

    Returns:
        A scalar, float32 for half-precision inputs; NaN if a tensor label is
        not a class (NumPy labels outside the classes are refused).

    Raises:
        ValueError: for a negative margin, an `alpha` that is not positive,
            badly shaped inputs, or NumPy labels outside the classes.

    Examples:
        >>> import numpy as np
        >>> cosines = np.array([[0.9, 0.1], [0.8, -0.1], [0.0, 0.7]])
        >>> round(float(proxy_anchor_loss(np.array([0, 0, 1]), cosines)), 4)
        4.8216
    """
    margin = check_margin(margin)
    alpha = check_float(alpha, "alpha", minimum=0.0, inclusive=False)
    _, similarities, positive = proxy_inputs(labels, similarities)
    negative = ops.logical_not(positive)
    positive_terms = _log_one_plus_sum_exp(alpha * (margin - similarities), positive)
    negative_terms = _log_one_plus_sum_exp(alpha * (similarities + margin), negative)
    present = ops.sum(ops.cast(ops.any(positive, axis=0), similarities.dtype))
    num_classes = ops.cast(ops.shape(similarities)[1], similarities.dtype)
    loss = ops.sum(positive_terms) / ops.maximum(present, 1.0) + ops.sum(
        negative_terms
    ) / ops.maximum(num_classes, 1.0)
    every_label_valid = ops.all(ops.any(positive, axis=1))
    return ops.where(every_label_valid, loss, float("nan"))


@keras.saving.register_keras_serializable(package="keras_siamese")
class ProxyAnchorLoss(ProxyLoss):
    """Proxy-Anchor loss on the output of `CosineProxies`.

    `y_true` holds integer class labels, `y_pred` the cosines
    `(batch, num_classes)` of a `CosineProxies` head; the loss is
    `proxy_anchor_loss`, one value for the whole batch (so `sample_weight`
    is not supported). With the defaults it equals PyTorch Metric Learning's
    `ProxyAnchorLoss(num_classes, embedding_size)` for the same embeddings
    and proxies, value and gradients. PyTorch Metric Learning draws these
    proxies with Kaiming's normal initialisation: build the head with
    `CosineProxies(num_classes, initializer="he_normal")` for the same scale.
    The paper trains the proxies with 100 times the encoder's learning rate
    (`CosineProxies(lr_multiplier=100)`).

    Args:
        margin: the margin `delta`; default 0.1.
        alpha: the scale `alpha`; default 32.
        reduction: Keras loss reduction (the loss is already a scalar).
        name: name of the loss.
        dtype: dtype of the computation; defaults to `keras.backend.floatx()`.

    Raises:
        ValueError: for a negative margin or an `alpha` that is not positive
            (at construction); for badly shaped inputs, NumPy labels outside
            the classes or a `sample_weight` (at call).

    Examples:
        >>> import numpy as np
        >>> loss = ProxyAnchorLoss()
        >>> cosines = np.array([[0.9, 0.1], [0.8, -0.1], [0.0, 0.7]])
        >>> round(float(loss(np.array([0, 0, 1]), cosines)), 4)
        4.8216

        Usage with `compile()`:

        >>> import keras
        >>> from keras_siamese import CosineProxies
        >>> encoder = keras.Sequential([keras.Input((4,)), keras.layers.Dense(2)])
        >>> head = CosineProxies(10, initializer="he_normal", lr_multiplier=100)
        >>> model = keras.Sequential([encoder, head])
        >>> model.compile(optimizer="adam", loss=ProxyAnchorLoss())
    """

    def __init__(
        self,
        margin: float = 0.1,
        alpha: float = 32.0,
        reduction: str = "sum_over_batch_size",
        name: str = "proxy_anchor_loss",
        dtype: str | None = None,
    ) -> None:
        super().__init__(name=name, reduction=reduction, dtype=dtype)
        self.margin = check_margin(margin)
        self.alpha = check_float(alpha, "alpha", minimum=0.0, inclusive=False)

    def __call__(self, y_true: Any, y_pred: Any, sample_weight: Any = None) -> Any:
        if sample_weight is not None:
            raise ValueError(
                "ProxyAnchorLoss is computed over the whole batch and does not "
                "take a `sample_weight`."
            )
        return super().__call__(y_true, y_pred)

    def call(self, y_true: Any, y_pred: Any) -> Any:
        loss = proxy_anchor_loss(y_true, y_pred, margin=self.margin, alpha=self.alpha)
        # A scalar per replica, reshaped as OnlineTripletLoss does so that
        # tf.distribute averages it over the replicas instead of summing.
        return ops.reshape(loss, (1,))

    def get_config(self) -> dict[str, Any]:
        config = super().get_config()
        config.update({"margin": self.margin, "alpha": self.alpha, "dtype": self.dtype})
        return config
