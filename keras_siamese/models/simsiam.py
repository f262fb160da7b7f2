"""SimSiam: an encoder, a projection head and a prediction head."""

from __future__ import annotations

from typing import Any

import keras
from keras import ops

from keras_siamese._checks import check_positive_int
from keras_siamese.losses.negative_cosine import NegativeCosineSimilarity
from keras_siamese.models._base import SelfSupervisedModel
from keras_siamese.models._heads import mlp_head


@keras.saving.register_keras_serializable(package="keras_siamese")
class SimSiam(SelfSupervisedModel):
    """SimSiam (Chen and He, 2021): two views, a predictor, a stop-gradient.

    The encoder's features go through a projection head (three Dense
    layers, each batch-normalised, ReLU after the first two, the last
    normalisation without scale and offset) to `z`, and a prediction head
    (two Dense layers, batch norm and ReLU after the first) maps `z` to `p`.
    `call` returns `ops.stack([p, z], axis=1)`, of shape
    `(batch, 2, projection_dim)`, the layout `NegativeCosineSimilarity`
    takes; `compile()` uses that loss unless given another. Train on
    batches of two views stacked on the batch axis (rows `k` and `N + k`
    are the views of example `k`), as `ClassBalancedDataset(...,
    samples_per_class=1, views=2, augment=...)` gives them; the targets of
    the dataset are ignored. The batch normalisation of the heads sees both
    views of a batch together. After training, `model.encoder` is the
    trained encoder.

    The default sizes are those of the paper (and lightly's
    `SimSiamProjectionHead` and `SimSiamPredictionHead`).

    Args:
        encoder: a Keras layer or model mapping a batch of inputs to
            features `(batch, features)`.
        projection_hidden_dim: units of the projection head's hidden
            layers, default 2048.
        projection_dim: units of the projection (and of the prediction),
            default 2048.
        prediction_hidden_dim: units of the prediction head's hidden layer,
            default 512.
        **kwargs: `keras.Model` arguments (`name`, `trainable`).

    Raises:
        TypeError: if `encoder` is not a Keras layer, or a size is not an
            integer.
        ValueError: if a size is not positive; at the first call, if the
            encoder's output is not 2-D.

    Examples:
        >>> import keras, numpy as np
        >>> encoder = keras.Sequential([keras.Input((4,)), keras.layers.Dense(8)])
        >>> model = SimSiam(encoder, projection_hidden_dim=16, projection_dim=6,
        ...                 prediction_hidden_dim=4)
        >>> model.compile(optimizer="sgd")
        >>> tuple(model(np.zeros((10, 4))).shape)
        (10, 2, 6)
    """

    def __init__(
        self,
        encoder: Any,
        projection_hidden_dim: int = 2048,
        projection_dim: int = 2048,
        prediction_hidden_dim: int = 512,
        **kwargs: Any,
    ) -> None:
        super().__init__(encoder, **kwargs)
        self.projection_hidden_dim = check_positive_int(
            projection_hidden_dim, "projection_hidden_dim"
        )
        self.projection_dim = check_positive_int(projection_dim, "projection_dim")
        self.prediction_hidden_dim = check_positive_int(
            prediction_hidden_dim, "prediction_hidden_dim"
        )
        self.projector = mlp_head(
            "projector",
            self.projection_hidden_dim,
            self.projection_dim,
            num_layers=3,
            output_norm="plain",
        )
        self.predictor = mlp_head(
            "predictor", self.prediction_hidden_dim, self.projection_dim, num_layers=2
        )

    def _heads(self, features: Any, training: Any) -> Any:
        z = self.projector(features, training=training)
        p = self.predictor(z, training=training)
        return ops.stack([p, z], axis=1)

    def default_loss(self) -> keras.losses.Loss:
        return NegativeCosineSimilarity()

    def get_config(self) -> dict[str, Any]:
        config = super().get_config()
        config.update(
            {
                "projection_hidden_dim": self.projection_hidden_dim,
                "projection_dim": self.projection_dim,
                "prediction_hidden_dim": self.prediction_hidden_dim,
            }
        )
        return config
