"""Barlow Twins: an encoder and a projection head."""

from __future__ import annotations

from typing import Any

import keras

from keras_siamese.losses.barlow_twins import BarlowTwinsLoss
from keras_siamese.models._base import ProjectionModel


@keras.saving.register_keras_serializable(package="keras_siamese")
class BarlowTwins(ProjectionModel):
    """Barlow Twins (Zbontar et al., 2021): decorrelated projections of two views.

    The encoder's features go through a projection head of three Dense
    layers, batch norm and ReLU after the first two, to the projections.

    `call` returns the projections `(batch, projection_dim)`, the layout `BarlowTwinsLoss` takes; `compile()` uses that loss unless given another. Train on
    batches of two views stacked on the batch axis (rows `k` and `N + k`
    are the views of example `k`), as `ClassBalancedDataset(...,
    samples_per_class=1, views=2, augment=...)` gives them; the targets of
    the dataset are ignored. The batch normalisation of the head sees both
    views of a batch together. After training, `model.encoder` is the
    trained encoder.

    The default sizes are those of the paper (and lightly's
    `BarlowTwinsProjectionHead`).

    Args:
        encoder: a Keras layer or model mapping a batch of inputs to
            features `(batch, features)`.
        projection_hidden_dim: units of the hidden layers, default 8192.
        projection_dim: units of the projection, default 8192.
        **kwargs: `keras.Model` arguments (`name`, `trainable`).

    Raises:
        TypeError: if `encoder` is not a Keras layer, or a size is not an
            integer.
        ValueError: if a size is not positive; at the first call, if the
            encoder's output is not 2-D.

    Examples:
        >>> import keras, numpy as np
        >>> encoder = keras.Sequential([keras.Input((4,)), keras.layers.Dense(8)])
        >>> model = BarlowTwins(encoder, projection_hidden_dim=16, projection_dim=6)
        >>> model.compile(optimizer="sgd")
        >>> tuple(model(np.zeros((10, 4))).shape)
        (10, 6)
    """

    # The head's depth is fixed at 3, so not an argument nor in the config.
    _config_keys = ("projection_hidden_dim", "projection_dim")

    def __init__(
        self,
        encoder: Any,
        projection_hidden_dim: int = 8192,
        projection_dim: int = 8192,
        **kwargs: Any,
    ) -> None:
        super().__init__(encoder, projection_hidden_dim, projection_dim, 3, **kwargs)

    def default_loss(self) -> keras.losses.Loss:
        return BarlowTwinsLoss()
