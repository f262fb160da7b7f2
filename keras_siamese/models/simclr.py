"""SimCLR: an encoder and a projection head."""

from __future__ import annotations

from typing import Any

import keras
from keras import ops

from keras_siamese._checks import check_bool
from keras_siamese.losses.ntxent import NTXentLoss
from keras_siamese.models._base import ProjectionModel


@keras.saving.register_keras_serializable(package="keras_siamese")
class SimCLR(ProjectionModel):
    """SimCLR (Chen et al., 2020): contrast each view with the other views.

    The encoder's features go through a projection head of
    `projection_layers` Dense layers (2 for SimCLR v1, 3 for v2), ReLU
    after all but the last and, with `batch_norm`, batch norm after every
    one, to the projections.

    `call` returns the projections `(batch, projection_dim)`, the layout `NTXentLoss` takes; `compile()` uses `NTXentLoss(temperature=0.5)` (the
    paper's temperature) unless given another. Train on
    batches of two views stacked on the batch axis (rows `k` and `N + k`
    are the views of example `k`), as `ClassBalancedDataset(...,
    samples_per_class=1, views=2, augment=...)` gives them; the targets of
    the dataset are ignored. The batch normalisation of the head sees both
    views of a batch together. After training, `model.encoder` is the
    trained encoder.

    The default sizes are those of the paper (and lightly's
    `SimCLRProjectionHead`).

    Args:
        encoder: a Keras layer or model mapping a batch of inputs to
            features `(batch, features)`.
        projection_hidden_dim: units of the hidden layers, default 2048.
        projection_dim: units of the projection, default 128.
        projection_layers: number of Dense layers of the head, at least 2,
            default 2.
        batch_norm: whether every Dense layer is batch-normalised, default
            True.
        **kwargs: `keras.Model` arguments (`name`, `trainable`).

    Raises:
        TypeError: if `encoder` is not a Keras layer, or a size is not an
            integer.
        ValueError: if a size is not positive or `projection_layers` is
            below 2; at the first call, if the
            encoder's output is not 2-D.

    Examples:
        >>> import keras, numpy as np
        >>> encoder = keras.Sequential([keras.Input((4,)), keras.layers.Dense(8)])
        >>> model = SimCLR(encoder, projection_hidden_dim=16, projection_dim=6)
        >>> model.compile(optimizer="sgd")
        >>> tuple(model(np.zeros((10, 4))).shape)
        (10, 6)
    """

    _config_keys = (*ProjectionModel._config_keys, "batch_norm")

    def __init__(
        self,
        encoder: Any,
        projection_hidden_dim: int = 2048,
        projection_dim: int = 128,
        projection_layers: int = 2,
        batch_norm: bool = True,
        **kwargs: Any,
    ) -> None:
        batch_norm = check_bool(batch_norm, "batch_norm")
        super().__init__(
            encoder,
            projection_hidden_dim,
            projection_dim,
            projection_layers,
            batch_norm=batch_norm,
            output_norm="affine" if batch_norm else None,
            **kwargs,
        )
        self.batch_norm = batch_norm

    def compute_loss(
        self,
        x: Any = None,
        y: Any = None,
        y_pred: Any = None,
        sample_weight: Any = None,
        training: bool = True,
    ) -> Any:
        del y
        examples = ops.shape(y_pred)[0] // 2
        views = ops.tile(ops.arange(examples, dtype="int32"), [2])
        return super().compute_loss(
            x=x,
            y=views,
            y_pred=y_pred,
            sample_weight=sample_weight,
            training=training,
        )

    def default_loss(self) -> keras.losses.Loss:
        return NTXentLoss(temperature=0.5)
