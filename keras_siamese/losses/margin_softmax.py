"""Additive-margin softmax losses on cosines to class proxies: ArcFace, CosFace.

Both take the labels and the cosines of a `CosineProxies` head (which holds
the class proxies: a Keras loss cannot own weights), lower the cosine of the
true class by a margin, scale all cosines into logits, and return the
softmax cross-entropy of each example. With the defaults they give the
numbers of PyTorch Metric Learning's `ArcFaceLoss`, `SubCenterArcFaceLoss`
(with `CosineProxies(sub_centers=3)`) and `CosFaceLoss` for the same
embeddings and proxies.
"""

from __future__ import annotations

import math
from typing import Any

import keras
from keras import ops

from keras_siamese._checks import check_float, check_margin
from keras_siamese.distances import safe_sqrt
from keras_siamese.losses._proxy_inputs import ProxyLoss, cross_entropy, proxy_inputs


def _check_scale(scale: Any) -> float:
    return check_float(scale, "scale", minimum=0.0, inclusive=False)


def _check_angle(margin: Any) -> float:
    return check_float(margin, "margin", minimum=0.0, maximum=180.0)


@keras.saving.register_keras_serializable(package="keras_siamese")
def arcface_loss(
    labels: Any, similarities: Any, margin: float = 28.6, scale: float = 64.0
) -> Any:
    """ArcFace loss (Deng et al. 2019) of each example, from cosines to proxies.

    With `theta` the angle between an embedding and the proxy of its class,
    the logit of that class becomes `scale * cos(theta + m)` and the others
    `scale * cos(theta_j)`; the loss is the softmax cross-entropy. Past
    `theta > pi - m`, where `cos(theta + m)` would increase again, the logit
    is `scale * (cos(theta) - m * sin(m))`, as in the paper's code and in
    PyTorch Metric Learning. `cos(theta + m)` is computed as
    `cos(theta) cos(m) - sin(theta) sin(m)`, without `arccos`, so the
    gradient stays finite where the cosine is exactly 1.

    Args:
        labels: integer class indices, shape `(batch,)` or `(batch, 1)`.
        similarities: the cosines to the class proxies, shape
            `(batch, num_classes)`: the output of `CosineProxies` (with
            `sub_centers=3` for sub-center ArcFace).
        margin: the additive angular margin `m`, in degrees; default 28.6
            (0.5 radians), PyTorch Metric Learning's default.
        scale: the scale `s` of the logits; default 64.

    Returns:
        The loss of each example, shape `(batch,)`, in float32 for
        half-precision inputs. An example whose label is not an integer in
        `[0, num_classes)` gets NaN when the labels are tensors (they are
        refused with a `ValueError` when they are NumPy arrays).

    Raises:
        ValueError: for a margin outside `[0, 180]`, a scale that is not
            positive, badly shaped inputs, or NumPy labels outside the
            classes.

    Examples:
        >>> import numpy as np
        >>> cosines = np.array([[1.0, 0.0], [0.0, 1.0]])
        >>> loss = arcface_loss(np.array([0, 1]), cosines, margin=0.0, scale=1.0)
        >>> [round(float(v), 4) for v in loss]
        [0.3133, 0.3133]
    """
    margin = math.radians(_check_angle(margin))
    scale = _check_scale(scale)
    _, similarities, target = proxy_inputs(labels, similarities)
    cosine = ops.sum(ops.where(target, similarities, 0.0), axis=1)
    cosine = ops.clip(cosine, -1.0, 1.0)
    sine = safe_sqrt(1.0 - ops.square(cosine))
    with_margin = ops.where(
        cosine >= -math.cos(margin),
        cosine * math.cos(margin) - sine * math.sin(margin),
        cosine - margin * math.sin(margin),
    )
    logits = scale * ops.where(target, ops.expand_dims(with_margin, 1), similarities)
    return cross_entropy(logits, target, scale * with_margin)


@keras.saving.register_keras_serializable(package="keras_siamese")
def cosface_loss(
    labels: Any, similarities: Any, margin: float = 0.35, scale: float = 64.0
) -> Any:
    """CosFace loss (Wang et al. 2018) of each example, from cosines to proxies.

    The logit of the true class is `scale * (cos(theta) - m)`, the others
    `scale * cos(theta_j)`; the loss is the softmax cross-entropy.

    Args:
        labels: integer class indices, shape `(batch,)` or `(batch, 1)`.
        similarities: the cosines to the class proxies, shape
            `(batch, num_classes)`, e.g. the output of `CosineProxies`.
        margin: the additive cosine margin `m`; default 0.35, PyTorch Metric
            Learning's default.
        scale: the scale `s` of the logits; default 64.

    Returns:
        The loss of each example, shape `(batch,)`, in float32 for
        half-precision inputs; NaN for an example whose tensor label is not
        a class (see `arcface_loss`).

    Raises:
        ValueError: for a negative margin, a scale that is not positive,
            badly shaped inputs, or NumPy labels outside the classes.

    Examples:
        >>> import numpy as np
        >>> cosines = np.array([[1.0, 0.0]])
        >>> loss = cosface_loss(np.array([0]), cosines, margin=0.5, scale=2.0)
        >>> round(float(loss[0]), 4)
        0.3133
    """
    margin = check_margin(margin)
    scale = _check_scale(scale)
    _, similarities, target = proxy_inputs(labels, similarities)
    logits = scale * (similarities - margin * ops.cast(target, similarities.dtype))
    target_logit = ops.sum(ops.where(target, logits, 0.0), axis=1)
    return cross_entropy(logits, target, target_logit)


@keras.saving.register_keras_serializable(package="keras_siamese")
class ArcFaceLoss(ProxyLoss):
    """ArcFace (additive angular margin) loss on the output of `CosineProxies`.

    `y_true` holds integer class labels, `y_pred` the cosines
    `(batch, num_classes)` of a `CosineProxies` head; the loss of each
    example is `arcface_loss`, averaged over the batch (the default
    reduction, PyTorch Metric Learning's mean). Sub-center ArcFace is this
    loss on `CosineProxies(num_classes, sub_centers=3)`.

    With `CosineProxies`' default initialisation and these defaults, the
    value and gradients equal PyTorch Metric Learning's
    `ArcFaceLoss(num_classes, embedding_size)` for the same embeddings and
    proxies (`SubCenterArcFaceLoss` with `sub_centers=3`). There the margin
    is also in degrees. Its proxies usually need a higher learning rate than
    the encoder: see `CosineProxies(lr_multiplier=...)`.

    Args:
        margin: the angular margin in degrees; default 28.6 (0.5 radians).
        scale: the scale of the logits; default 64.
        reduction: Keras loss reduction; default the mean over the batch.
        name: name of the loss.
        dtype: dtype of the computation; defaults to `keras.backend.floatx()`.

    Raises:
        ValueError: for a margin outside `[0, 180]` or a scale that is not
            positive (at construction); for badly shaped inputs or NumPy
            labels outside the classes (at call).

    Examples:
        >>> import numpy as np
        >>> cosines = np.array([[0.7, 0.6, 0.1], [0.2, 0.5, 0.45]])
        >>> labels = np.array([0, 1])
        >>> round(float(ArcFaceLoss()(labels, cosines)), 4)
        24.0907
        >>> round(float(ArcFaceLoss(margin=0.0)(labels, cosines)), 4)
        0.0208

        Usage with `compile()`:

        >>> import keras
        >>> from keras_siamese import CosineProxies
        >>> encoder = keras.Sequential([keras.Input((4,)), keras.layers.Dense(2)])
        >>> model = keras.Sequential([encoder, CosineProxies(10, sub_centers=3)])
        >>> model.compile(optimizer="adam", loss=ArcFaceLoss())
    """

    def __init__(
        self,
        margin: float = 28.6,
        scale: float = 64.0,
        reduction: str = "sum_over_batch_size",
        name: str = "arcface_loss",
        dtype: str | None = None,
    ) -> None:
        super().__init__(name=name, reduction=reduction, dtype=dtype)
        self.margin = _check_angle(margin)
        self.scale = _check_scale(scale)

    def call(self, y_true: Any, y_pred: Any) -> Any:
        return arcface_loss(y_true, y_pred, margin=self.margin, scale=self.scale)

    def get_config(self) -> dict[str, Any]:
        config = super().get_config()
        config.update({"margin": self.margin, "scale": self.scale, "dtype": self.dtype})
        return config


@keras.saving.register_keras_serializable(package="keras_siamese")
class CosFaceLoss(ProxyLoss):
    """CosFace (additive cosine margin) loss on the output of `CosineProxies`.

    `y_true` holds integer class labels, `y_pred` the cosines
    `(batch, num_classes)` of a `CosineProxies` head; the loss of each
    example is `cosface_loss`, averaged over the batch. With
    `CosineProxies`' default initialisation and these defaults, the value
    and gradients equal PyTorch Metric Learning's `CosFaceLoss` for the same
    embeddings and proxies.

    Args:
        margin: the cosine margin; default 0.35.
        scale: the scale of the logits; default 64.
        reduction: Keras loss reduction; default the mean over the batch.
        name: name of the loss.
        dtype: dtype of the computation; defaults to `keras.backend.floatx()`.

    Raises:
        ValueError: for a negative margin or a scale that is not positive
            (at construction); for badly shaped inputs or NumPy labels outside
            the classes (at call).

    Examples:
        >>> import numpy as np
        >>> cosines = np.array([[0.7, 0.6, 0.1], [0.2, 0.5, 0.45]])
        >>> round(float(CosFaceLoss()(np.array([0, 1]), cosines)), 4)
        17.6
    """

    def __init__(
        self,
        margin: float = 0.35,
        scale: float = 64.0,
        reduction: str = "sum_over_batch_size",
        name: str = "cosface_loss",
        dtype: str | None = None,
    ) -> None:
        super().__init__(name=name, reduction=reduction, dtype=dtype)
        self.margin = check_margin(margin)
        self.scale = _check_scale(scale)

    def call(self, y_true: Any, y_pred: Any) -> Any:
        return cosface_loss(y_true, y_pred, margin=self.margin, scale=self.scale)

    def get_config(self) -> dict[str, Any]:
        config = super().get_config()
        config.update({"margin": self.margin, "scale": self.scale, "dtype": self.dtype})
        return config
