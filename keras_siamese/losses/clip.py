"""CLIP's symmetric contrastive loss, and the layer that holds its logit scale."""

from __future__ import annotations

import math
from typing import Any

import keras
from keras import ops

from keras_siamese._checks import check_float
from keras_siamese.distances import as_float, l2_normalize
from keras_siamese.losses.base import FunctionLoss
from keras_siamese.losses.multiple_negatives_ranking import (
    multiple_negatives_ranking_loss,
)


class _Clip(keras.constraints.Constraint):
    """Clip a weight into `[minimum, maximum]` after every optimizer step."""

    def __init__(self, minimum: float, maximum: float) -> None:
        self.minimum = minimum
        self.maximum = maximum

    def __call__(self, w: Any) -> Any:
        return ops.clip(w, self.minimum, self.maximum)

    def get_config(self) -> dict[str, Any]:
        return {"minimum": self.minimum, "maximum": self.maximum}


@keras.saving.register_keras_serializable(package="keras_siamese")
class LogitScale(keras.layers.Layer):
    """Normalise embeddings and scale them by a learnable logit scale's root.

    A Keras loss holds no trainable weights, so CLIP's learnable temperature
    lives in the model, in this layer, before `ClipLoss`. It holds
    `log_scale`, the logarithm of the logit scale `s` (CLIP's
    parametrisation), and outputs `sqrt(s) * x / ||x||` along the last axis:
    the dot product of two outputs is then `s * cos(x, y)`, the logit of
    CLIP, so the loss needs nothing but `y_pred`. As open_clip, `s` starts at
    `initial` (1 / 0.07) and is clamped into `[1, maximum]` (`log_scale` into
    `[0, log(maximum)]`) after every optimizer step, as a constraint of the
    weight. Place it on the `(batch, 2, dim)` stacked output of the two
    encoders (or on each one's output); at inference, cosine similarities
    of its outputs rank as those of the encoders'.

    Args:
        initial: the logit scale at initialisation, in `[1, maximum]`;
            default `1 / 0.07`.
        maximum: the largest logit scale, default 100.0.
        **kwargs: `keras.layers.Layer` arguments (`name`, `dtype`, ...).

    Raises:
        ValueError: for `maximum` below 1 or `initial` outside `[1, maximum]`.

    Examples:
        >>> import numpy as np
        >>> layer = LogitScale(initial=4.0)
        >>> y = layer(np.array([[[3.0, 4.0], [0.0, 2.0]]]))
        >>> [round(float(v), 4) for v in y[0, 0]]
        [1.2, 1.6]
        >>> round(float(layer.logit_scale), 4)
        4.0
    """

    def __init__(
        self, initial: float = 1.0 / 0.07, maximum: float = 100.0, **kwargs: Any
    ) -> None:
        super().__init__(**kwargs)
        self.maximum = check_float(maximum, "maximum", minimum=1.0)
        self.initial = check_float(
            initial, "initial", minimum=1.0, maximum=self.maximum
        )

    def build(self, input_shape: Any) -> None:
        self.log_scale = self.add_weight(
            shape=(),
            initializer=keras.initializers.Constant(math.log(self.initial)),
            constraint=_Clip(0.0, math.log(self.maximum)),
            name="log_scale",
        )

    @property
    def logit_scale(self) -> Any:
        """The logit scale `s = exp(log_scale)`."""
        return ops.exp(ops.convert_to_tensor(self.log_scale))

    def call(self, inputs: Any) -> Any:
        root = ops.exp(ops.cast(self.log_scale, self.compute_dtype) / 2.0)
        return l2_normalize(ops.cast(inputs, self.compute_dtype)) * root

    def compute_output_shape(self, input_shape: Any) -> Any:
        return input_shape

    def get_config(self) -> dict[str, Any]:
        config = super().get_config()
        config.update({"initial": self.initial, "maximum": self.maximum})
        return config


@keras.saving.register_keras_serializable(package="keras_siamese")
def clip_loss(y_true: Any, y_pred: Any) -> Any:
    """CLIP's symmetric cross entropy over the logits of a batch of pairs.

    `y_pred` `(batch, 2, dim)` holds per row the features `u_i` and `v_i`
    of the two sides of a pair (an image and its caption, say), scaled so
    that their dot products are the logits (`LogitScale` does that):

        loss = 1/2 * (CE(U V^T, identity) + CE(V U^T, identity))

    the mean over the batch of the cross entropy of each `u_i` against all
    `v` and of each `v_i` against all `u`, the correct class being the
    other side of its own pair. This is open_clip's `ClipLoss()(u, v,
    logit_scale)` with `logit_scale` folded into the features (its values
    and gradients, for the normalised features times `sqrt(logit_scale)`).
    `y_true` is ignored and may be `None`.

    Args:
        y_true: ignored.
        y_pred: `(batch, 2, dim)`, the two sides of every pair.

    Returns:
        A scalar, float32 for half-precision features; 0 for an empty batch.

    Raises:
        ValueError: if `y_pred` is not of shape `(batch, 2, dim)`.

    Examples:
        >>> import numpy as np
        >>> images = np.array([[2.0, 0.0], [0.0, 2.0]])
        >>> texts = np.array([[1.0, 0.0], [0.0, 1.0]])
        >>> round(float(clip_loss(None, np.stack([images, texts], axis=1))), 4)
        0.1269
    """
    y_pred = as_float(y_pred)
    shape = tuple(y_pred.shape)
    if len(shape) != 3 or shape[1] not in (2, None):
        raise ValueError(
            "`y_pred` must have shape (batch, 2, dim): the two sides of every "
            f"pair, stacked on axis 1; got shape {shape}."
        )
    return multiple_negatives_ranking_loss(
        None, y_pred, scale=1.0, similarity="dot", symmetric=True
    )


@keras.saving.register_keras_serializable(package="keras_siamese")
class ClipLoss(FunctionLoss):
    """CLIP's symmetric contrastive loss of `(batch, 2, dim)` scaled pairs.

    Radford et al. 2021: every first side of a pair must pick its own second
    side among the batch's, and the other way round; see `clip_loss`. The
    learnable temperature is not the loss's (a Keras loss holds no trainable
    weights) but the model's: end the model with `LogitScale`, which
    normalises the features and scales them by the square root of its
    learnable logit scale (initially 1 / 0.07, clamped at 100, as open_clip),
    so that the dot products the loss takes are CLIP's logits. Without it,
    the loss takes the features' dot products as they are. `y_true` is
    ignored. The loss is a batch-level scalar, so `sample_weight` is not
    supported.

    Args:
        global_batch: under a `tf.distribute` strategy with several replicas,
            compute the loss over the global batch (all-gathered from every
            replica), as open_clip gathers the features of every device. A
            no-op on JAX (whose `DataParallel` already sees the global batch)
            and PyTorch.
        reduction: Keras loss reduction (the loss is already a scalar).
        name: name of the loss.
        dtype: dtype of the computation; defaults to `keras.backend.floatx()`.

    Raises:
        ValueError: for a `y_pred` not of shape `(batch, 2, dim)` or a
            `sample_weight` (at call).

    Examples:
        >>> import numpy as np
        >>> images = np.array([[2.0, 0.0], [0.0, 2.0]])
        >>> texts = np.array([[1.0, 0.0], [0.0, 1.0]])
        >>> round(float(ClipLoss()(None, np.stack([images, texts], axis=1))), 4)
        0.1269

        A model with two encoders, its logit scale trained with it:

        >>> import keras
        >>> image = keras.Input((4,))
        >>> text = keras.Input((6,))
        >>> pair = keras.ops.stack(
        ...     [keras.layers.Dense(3)(image), keras.layers.Dense(3)(text)], axis=1)
        >>> model = keras.Model([image, text], LogitScale()(pair))
        >>> model.compile(optimizer="adam", loss=ClipLoss())
    """

    y_true_holds = None

    def __init__(
        self,
        global_batch: bool = False,
        reduction: str = "sum_over_batch_size",
        name: str = "clip_loss",
        dtype: str | None = None,
    ) -> None:
        super().__init__(
            clip_loss,
            global_batch=global_batch,
            reduction=reduction,
            name=name,
            dtype=dtype,
        )
