"""VICReg: an encoder and a projection head."""

from __future__ import annotations

from typing import Any

import keras

from keras_siamese.losses.vicreg import VICRegLoss
from keras_siamese.models._base import ProjectionModel


@keras.saving.register_keras_serializable(package="keras_siamese")
class VICReg(ProjectionModel):
    """VICReg (Bardes et al., 2022): variance, invariance and covariance terms.

    The encoder's features go through a projection head of
    `projection_layers` Dense layers, batch norm and ReLU after all but the
    last, to the projections.

    `call` returns the projections `(batch, projection_dim)`, the layout `VICRegLoss` takes; `compile()` uses that loss unless given another. Train on
    batches of two views stacked on the batch axis (rows `k` and `N + k`
    are the views of example `k`), as `ClassBalancedDataset(...,
    samples_per_class=1, views=2, augment=...)` gives them; the targets of
    the dataset are ignored. The batch normalisation of the head sees both
    views of a batch together. After training, `model.encoder` is the
    trained encoder.

    The default sizes are those of the paper (and lightly's
    `VICRegProjectionHead`).

    Args:
        encoder: a Keras layer or model mapping a batch of inputs to
            features `(batch, features)`.
        projection_hidden_dim: units of the hidden layers, default 8192.
        projection_dim: units of the projection, default 8192.
        projection_layers: number of Dense layers of the head, at least 2,
            default 3.
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
        >>> model = VICReg(encoder, projection_hidden_dim=16, projection_dim=6)
        >>> model.compile(optimizer="sgd")
        >>> tuple(model(np.zeros((10, 4))).shape)
        (10, 6)
    """

    def __init__(
        self,
        encoder: Any,
        projection_hidden_dim: int = 8192,
        projection_dim: int = 8192,
        projection_layers: int = 3,
        **kwargs: Any,
    ) -> None:
        super().__init__(
            encoder,
            projection_hidden_dim,
            projection_dim,
            projection_layers,
            **kwargs,
        )

    def default_loss(self) -> keras.losses.Loss:
        return VICRegLoss()
