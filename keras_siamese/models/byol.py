"""BYOL: an online network, and a target network that follows it."""

from __future__ import annotations

import math
from typing import Any

import keras
from keras import ops

from keras_siamese._checks import check_choice, check_float, check_positive_int
from keras_siamese._keras_compat import in_symbolic_scope
from keras_siamese.losses.byol import BYOLLoss
from keras_siamese.models._base import SelfSupervisedModel
from keras_siamese.models._heads import check_head_layers, mlp_head

# `mlp_head`'s normalisations of the last layer: batch norm with a learned
# scale and offset, or without them.
_OUTPUT_NORMS = ("affine", "plain")


@keras.saving.register_keras_serializable(package="keras_siamese")
class BYOL(SelfSupervisedModel):
    """BYOL (Grill et al., 2020): predict a moving average of the network.

    The online network (the encoder, a projection head and a prediction
    head, each head by default a Dense layer with batch norm and ReLU then
    a Dense layer) predicts the projection of a target network: a copy of the
    encoder and of the projection head whose weights are not trained but
    follow the online ones, `target = m * target + (1 - m) * online`, at
    the start of every training step (every call with `training=True`)
    and before its forward pass. The momentum `m` follows a cosine schedule
    from `start_momentum` at step 0 to `end_momentum` at step
    `momentum_steps - 1` and after. The target's weights and the step
    count are non-trainable variables of the model, so the update is a
    state update that Keras carries on every backend (JAX's stateless
    training included), and they are saved with the model. The target's
    batch normalisation uses the batch statistics in training, as the
    online one does.

    `call` returns `ops.stack([p, t], axis=1)`, of shape
    `(batch, 2, projection_dim)`: per row the online prediction and the
    target projection, the layout `BYOLLoss` takes; `compile()` uses that
    loss unless given another. Train on batches of two views stacked on the
    batch axis (rows `k` and `N + k` are the views of example `k`), as
    `ClassBalancedDataset(..., samples_per_class=1, views=2, augment=...)`
    gives them; the targets of the dataset are ignored. After training,
    `model.encoder` is the trained (online) encoder.

    The default sizes are those of the paper (and lightly's
    `BYOLProjectionHead` and `BYOLPredictionHead`).

    Args:
        encoder: a Keras layer or model mapping a batch of inputs to
            features `(batch, features)`; it must be serializable (the
            target network is built from its config).
        momentum_steps: the number of training steps of the schedule,
            usually `epochs * steps_per_epoch`.
        projection_hidden_dim: units of the projection head's hidden layer,
            default 4096.
        projection_dim: units of the projection and of the prediction,
            default 256.
        prediction_hidden_dim: units of the prediction head's hidden layer,
            default 4096.
        start_momentum: the momentum at step 0, default 0.99.
        end_momentum: the momentum at the end of the schedule, default 1.
        projection_layers: Dense layers of the projection head (and of the
            target's), at least 2; default 2, the paper's.
        projection_output_norm: `None` (the paper's: a plain last layer),
            `"affine"` or `"plain"` (batch normalisation of the projection,
            with or without a learned scale and offset, as SimSiam's
            projection head ends with `"plain"`). `docs/benchmarks.md`
            measures `projection_layers=3, projection_output_norm="affine"`
            against the paper's head on short runs.
        **kwargs: `keras.Model` arguments (`name`, `trainable`).

    Raises:
        TypeError: if `encoder` is not a Keras layer, or a size is not an
            integer.
        ValueError: if a size is not positive, `projection_layers` is below
            2, `projection_output_norm` is not one of the above, or a momentum
            is outside `[0, 1]` or `start_momentum > end_momentum`; at the
            first call, if the encoder's output is not 2-D.

    Examples:
        >>> import keras, numpy as np
        >>> encoder = keras.Sequential([keras.Input((4,)), keras.layers.Dense(8)])
        >>> model = BYOL(encoder, momentum_steps=100, projection_hidden_dim=16,
        ...              projection_dim=6, prediction_hidden_dim=16)
        >>> model.compile(optimizer="sgd")
        >>> tuple(model(np.zeros((10, 4))).shape)
        (10, 2, 6)
    """

    def __init__(
        self,
        encoder: Any,
        momentum_steps: int,
        projection_hidden_dim: int = 4096,
        projection_dim: int = 256,
        prediction_hidden_dim: int = 4096,
        start_momentum: float = 0.99,
        end_momentum: float = 1.0,
        projection_layers: int = 2,
        projection_output_norm: str | None = None,
        **kwargs: Any,
    ) -> None:
        super().__init__(encoder, **kwargs)
        self.momentum_steps = check_positive_int(momentum_steps, "momentum_steps")
        self.projection_hidden_dim = check_positive_int(
            projection_hidden_dim, "projection_hidden_dim"
        )
        self.projection_dim = check_positive_int(projection_dim, "projection_dim")
        self.prediction_hidden_dim = check_positive_int(
            prediction_hidden_dim, "prediction_hidden_dim"
        )
        self.start_momentum = check_float(
            start_momentum, "start_momentum", minimum=0.0, maximum=1.0
        )
        self.end_momentum = check_float(
            end_momentum, "end_momentum", minimum=0.0, maximum=1.0
        )
        if self.start_momentum > self.end_momentum:
            raise ValueError(
                "`start_momentum` must not exceed `end_momentum`; got "
                f"{self.start_momentum} and {self.end_momentum}."
            )
        self.projection_layers = check_head_layers(projection_layers)
        if projection_output_norm is not None:
            projection_output_norm = check_choice(
                projection_output_norm, _OUTPUT_NORMS, "projection_output_norm"
            )
        self.projection_output_norm = projection_output_norm
        self.projector = self._projection_head("projector")
        self.predictor = mlp_head(
            "predictor", self.prediction_hidden_dim, self.projection_dim, num_layers=2
        )
        self.target_encoder = keras.saving.deserialize_keras_object(
            keras.saving.serialize_keras_object(self.encoder)
        )
        self.target_projector = self._projection_head("target_projector")
        self.momentum_step = self.add_weight(
            shape=(),
            dtype="int32",
            initializer="zeros",
            trainable=False,
            name="momentum_step",
        )

    def _projection_head(self, name: str) -> keras.Sequential:
        return mlp_head(
            name,
            self.projection_hidden_dim,
            self.projection_dim,
            self.projection_layers,
            output_norm=self.projection_output_norm,
        )

    def _pairs(self) -> list[tuple[Any, Any]]:
        """(target, online) variables, in the same order."""
        online = self.encoder.weights + self.projector.weights
        target = self.target_encoder.weights + self.target_projector.weights
        return list(zip(target, online))

    def build(self, input_shape: Any) -> None:
        inputs = keras.KerasTensor(tuple(input_shape))
        self.predictor(self.projector(self.encoder(inputs)))
        self.target_projector(self.target_encoder(inputs))
        online = self.encoder.weights + self.projector.weights
        target = self.target_encoder.weights + self.target_projector.weights
        if [tuple(v.shape) for v in online] != [tuple(v.shape) for v in target]:
            raise ValueError(
                "BYOL's target network, built from the config of `encoder`, "
                "does not have the encoder's weights; give an encoder whose "
                "`get_config` describes it fully."
            )
        for target_variable, online_variable in zip(target, online):
            # A copy: JAX must not see one buffer as two variables.
            target_variable.assign(ops.copy(online_variable))
        self._freeze_target()
        self.built = True

    def _freeze_target(self) -> None:
        # Only the variables: the target's layers stay trainable, so that
        # their batch normalisation uses the batch statistics in training.
        for variable in self.target_encoder.weights + self.target_projector.weights:
            variable.trainable = False

    @SelfSupervisedModel.trainable.setter
    def trainable(self, value: bool) -> None:
        SelfSupervisedModel.trainable.fset(self, value)
        # Unfreezing the model must not make the target trainable.
        if getattr(self, "target_projector", None) is not None:
            self._freeze_target()

    def momentum(self, step: Any) -> Any:
        """The momentum of the target update at training step `step` (from 0)."""
        start, end = self.start_momentum, self.end_momentum
        if self.momentum_steps <= 1:
            return ops.convert_to_tensor(end, "float32")
        fraction = ops.minimum(
            ops.cast(step, "float32") / float(self.momentum_steps - 1), 1.0
        )
        return end - (end - start) * (ops.cos(math.pi * fraction) + 1.0) / 2.0

    def _update_target(self) -> None:
        m = self.momentum(self.momentum_step)
        for target, online in self._pairs():
            if not online.trainable:
                # Batch-norm statistics: the target keeps its own.
                continue
            m_ = ops.cast(m, target.dtype)
            target.assign(m_ * target + (1.0 - m_) * ops.stop_gradient(online))
        self.momentum_step.assign(self.momentum_step + 1)

    def call(self, inputs: Any, training: Any = None) -> Any:
        if training and not in_symbolic_scope():
            self._update_target()
        features = self.encoder(inputs, training=training)
        if len(features.shape) != 2:
            raise ValueError(
                "BYOL needs an `encoder` whose output is one feature vector per "
                f"example, of shape (batch, features); got shape "
                f"{tuple(features.shape)}. End the encoder with a pooling or "
                "Flatten layer."
            )
        p = self.predictor(
            self.projector(features, training=training), training=training
        )
        t = self.target_projector(
            self.target_encoder(inputs, training=training), training=training
        )
        return ops.stack([p, ops.stop_gradient(t)], axis=1)

    def default_loss(self) -> keras.losses.Loss:
        return BYOLLoss()

    def get_config(self) -> dict[str, Any]:
        config = super().get_config()
        config.update(
            {
                "momentum_steps": self.momentum_steps,
                "projection_hidden_dim": self.projection_hidden_dim,
                "projection_dim": self.projection_dim,
                "prediction_hidden_dim": self.prediction_hidden_dim,
                "start_momentum": self.start_momentum,
                "end_momentum": self.end_momentum,
                "projection_layers": self.projection_layers,
                "projection_output_norm": self.projection_output_norm,
            }
        )
        return config
