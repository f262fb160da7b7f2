"""The base class of the self-supervised models: an encoder and its heads."""

from __future__ import annotations

from typing import Any

import keras

from keras_siamese._checks import check_positive_int
from keras_siamese._keras_compat import mark_shared
from keras_siamese.models._heads import check_head_layers, mlp_head


def check_encoder(encoder: Any, model: str) -> keras.layers.Layer:
    if not isinstance(encoder, keras.layers.Layer):
        raise TypeError(
            f"{model} takes a Keras layer or model as `encoder`; got "
            f"{type(encoder).__name__}."
        )
    return encoder


class SelfSupervisedModel(keras.Model):
    """An encoder followed by heads, trained on batches of two views.

    Subclasses set `self.encoder` and their heads, and define `_heads(x)`
    (the output from the encoder's features) and `default_loss()`.
    """

    def __init__(self, encoder: Any, **kwargs: Any) -> None:
        super().__init__(**kwargs)
        self.encoder = check_encoder(encoder, type(self).__name__)

    def build(self, input_shape: Any) -> None:
        # Traced once on placeholders, so that `build(input_shape)` creates
        # the heads' weights too: Keras' default would mark the model built
        # with its heads unbuilt (and `load_weights` would then fail).
        self.call(keras.tree.map_shape_structure(keras.KerasTensor, input_shape))
        self.built = True

    def call(self, inputs: Any, training: Any = None) -> Any:
        features = self.encoder(inputs, training=training)
        if len(features.shape) != 2:
            raise ValueError(
                f"{type(self).__name__} needs an `encoder` whose output is "
                "one feature vector per example, of shape (batch, features); "
                f"got shape {tuple(features.shape)}. End the encoder with a "
                "pooling or Flatten layer."
            )
        return self._heads(features, training)

    def _heads(self, features: Any, training: Any) -> Any:
        raise NotImplementedError

    def default_loss(self) -> keras.losses.Loss:
        """The loss `compile()` uses when it is given none."""
        raise NotImplementedError

    def compile(
        self, optimizer: Any = "rmsprop", loss: Any = None, **kwargs: Any
    ) -> None:
        """Configures the model for training, with `default_loss()` by default.

        Takes the arguments of `keras.Model.compile`; `loss=None` means the
        model's own self-supervised loss.
        """
        if loss is None:
            loss = self.default_loss()
        super().compile(optimizer=optimizer, loss=loss, **kwargs)

    def compile_from_config(self, config: dict[str, Any]) -> None:
        # Keras skips a model whose `compile` is overridden unless this is
        # overridden too; the saved loss is the one given to `compile`.
        self.compile(**keras.saving.deserialize_keras_object(config))
        if self.built:
            self.optimizer.build(self.trainable_variables)

    def get_config(self) -> dict[str, Any]:
        config = {"name": self.name, "trainable": self.trainable}
        config["encoder"] = mark_shared(
            keras.saving.serialize_keras_object(self.encoder), self.encoder
        )
        return config

    @classmethod
    def from_config(cls, config: dict[str, Any]) -> SelfSupervisedModel:
        config = dict(config)
        encoder = keras.saving.deserialize_keras_object(config.pop("encoder"))
        return cls(encoder, **config)


class ProjectionModel(SelfSupervisedModel):
    """An encoder followed by one projection head, its output.

    The head is `mlp_head("projector", ...)` of `projection_layers` Dense
    layers. Subclasses pass their head's layout and define
    `default_loss()`; `_config_keys` names the attributes `get_config`
    saves besides the encoder's.
    """

    _config_keys: tuple[str, ...] = (
        "projection_hidden_dim",
        "projection_dim",
        "projection_layers",
    )

    def __init__(
        self,
        encoder: Any,
        projection_hidden_dim: int,
        projection_dim: int,
        projection_layers: int,
        batch_norm: bool = True,
        output_norm: str | None = None,
        **kwargs: Any,
    ) -> None:
        super().__init__(encoder, **kwargs)
        self.projection_hidden_dim = check_positive_int(
            projection_hidden_dim, "projection_hidden_dim"
        )
        self.projection_dim = check_positive_int(projection_dim, "projection_dim")
        self.projection_layers = check_head_layers(projection_layers)
        self.projector = mlp_head(
            "projector",
            self.projection_hidden_dim,
            self.projection_dim,
            num_layers=self.projection_layers,
            batch_norm=batch_norm,
            output_norm=output_norm,
        )

    def _heads(self, features: Any, training: Any) -> Any:
        return self.projector(features, training=training)

    def get_config(self) -> dict[str, Any]:
        config = super().get_config()
        config.update({key: getattr(self, key) for key in self._config_keys})
        return config
