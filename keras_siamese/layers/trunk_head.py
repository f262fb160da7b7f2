"""`TrunkHead`: train through a projection head, retrieve with the trunk."""

from __future__ import annotations

from typing import Any

import keras


def _check_layer(value: Any, argument: str) -> keras.layers.Layer:
    if not isinstance(value, keras.layers.Layer):
        raise TypeError(
            f"`{argument}` must be a Keras layer or model; got {type(value).__name__}."
        )
    return value


@keras.saving.register_keras_serializable(package="keras_siamese")
class TrunkHead(keras.Model):
    """An encoder in two parts: a `trunk` for retrieval, a `head` for the loss.

    Calling the model gives `head(trunk(x))`, the output the metric-learning
    losses train; `model.trunk` gives the features that retrieval,
    verification and one-shot use. Features taken before a small projection
    head transfer better to classes never seen in training than the head's
    output, which the loss shapes for the training classes alone (Chen et al.
    2020, SimCLR; Khosla et al. 2020, SupCon).

    Use the `TrunkHead` wherever an encoder is trained (`model.fit`,
    `SiameseWrapper`, the online losses) and give it unchanged to the
    retrieval side: `EmbeddingIndex.from_encoder`, `Verifier`,
    `RetrievalEvaluation` and `EmbeddingPlot` embed with its trunk
    (`trunk_of`). `CollapseMonitor` watches what the loss acts on, the
    model's own output (the head), since that is where a collapse happens.

    Args:
        trunk: the feature extractor, a Keras layer or model.
        head: the projection head applied to the trunk's output.
        **kwargs: `keras.Model` arguments such as `name`.

    Raises:
        TypeError: if `trunk` or `head` is not a Keras layer or model.

    Examples:
        >>> import keras
        >>> import numpy as np
        >>> trunk = keras.Sequential([keras.Input((4,)), keras.layers.Dense(6)])
        >>> head = keras.Sequential([keras.Input((6,)), keras.layers.Dense(2)])
        >>> model = TrunkHead(trunk, head)
        >>> x = np.ones((3, 4), "float32")
        >>> model.predict(x, verbose=0).shape, trunk_of(model).predict(x, verbose=0).shape
        ((3, 2), (3, 6))
        >>> trunk_of(model) is trunk
        True
    """

    def __init__(
        self, trunk: keras.layers.Layer, head: keras.layers.Layer, **kwargs: Any
    ) -> None:
        super().__init__(**kwargs)
        self.trunk = _check_layer(trunk, "trunk")
        self.head = _check_layer(head, "head")
        if trunk.built and head.built:
            self.built = True

    def build(self, input_shape: Any) -> None:
        if not self.trunk.built:
            self.trunk.build(input_shape)
        if not self.head.built:
            self.head.build(self.trunk.compute_output_shape(input_shape))
        self.built = True

    def call(self, inputs: Any, training: bool | None = None) -> Any:
        return self.head(self.trunk(inputs, training=training), training=training)

    def get_config(self) -> dict[str, Any]:
        return {
            "name": self.name,
            "trainable": self.trainable,
            "trunk": keras.saving.serialize_keras_object(self.trunk),
            "head": keras.saving.serialize_keras_object(self.head),
        }

    @classmethod
    def from_config(cls, config: dict[str, Any]) -> TrunkHead:
        config = dict(config)
        trunk = keras.saving.deserialize_keras_object(config.pop("trunk"))
        head = keras.saving.deserialize_keras_object(config.pop("head"))
        return cls(trunk, head, **config)


def trunk_of(model: Any) -> Any:
    """The model that gives retrieval features: `model.trunk` for a `TrunkHead`.

    Any other model is returned as it is. `EmbeddingIndex.from_encoder`,
    `Verifier`, `RetrievalEvaluation` and `EmbeddingPlot` embed with
    `trunk_of(encoder)`.

    Args:
        model: a `TrunkHead` or any other model.

    Returns:
        `model.trunk` if `model` is a `TrunkHead`, else `model`.

    Examples:
        >>> import keras
        >>> encoder = keras.Sequential([keras.Input((2,)), keras.layers.Dense(2)])
        >>> trunk_of(encoder) is encoder
        True
    """
    return model.trunk if isinstance(model, TrunkHead) else model
