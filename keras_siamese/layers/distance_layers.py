"""Keras layers that turn a pair of embeddings into one distance per pair."""

from __future__ import annotations

from typing import Any

import keras
from keras import ops

from keras_siamese import distances
from keras_siamese._checks import check_inputs_given


def _split_pair(layer_name: str, inputs: Any) -> tuple[Any, Any]:
    if not isinstance(inputs, (list, tuple)):
        raise TypeError(
            f"{layer_name} expects a list or tuple of two tensors [a, b]; got a "
            f"single {type(inputs).__name__}."
        )
    if len(inputs) != 2:
        raise ValueError(
            f"{layer_name} expects exactly two tensors [a, b]; got {len(inputs)}."
        )
    return inputs[0], inputs[1]


class _PairDistance(keras.layers.Layer):
    """Base of the distance layers: validates `[a, b]`, sums in float32.

    Half-precision embeddings are upcast to float32 before any square or sum,
    so a model under `mixed_float16` cannot overflow there; the distance is
    then returned in the layer's compute dtype, as every Keras layer does
    (give the layer `dtype="float32"` for float32 distances in a mixed
    precision model).
    """

    def __init__(self, **kwargs: Any) -> None:
        # Explicit, so that the documented `**kwargs` of the subclasses that
        # add no argument are part of their signature.
        super().__init__(**kwargs)

    def _distance(self, a: Any, b: Any) -> Any:
        raise NotImplementedError

    def __call__(self, inputs: Any, *args: Any, **kwargs: Any) -> Any:
        check_inputs_given(inputs, type(self).__name__)
        return super().__call__(inputs, *args, **kwargs)

    def call(self, inputs: Any) -> Any:
        a, b = _split_pair(type(self).__name__, inputs)
        return ops.cast(self._distance(a, b), self.compute_dtype)

    def compute_output_shape(self, input_shape: Any) -> tuple:
        shape_a, _ = _split_pair(type(self).__name__, input_shape)
        return (*tuple(shape_a)[:-1], 1)


@keras.saving.register_keras_serializable(package="keras_siamese")
class EuclideanDistance(_PairDistance):
    """Euclidean distance between two embeddings: `[a, b] -> (batch, 1)`.

    The replacement for the `Lambda(euclidean_distance)` layer of the classic
    Keras `mnist_siamese` recipe, which cannot be reloaded with
    `safe_mode=True`. The gradient is finite everywhere, including for two
    identical embeddings.

    Half-precision embeddings are summed in float32, so a mixed-precision
    model cannot overflow here; the distance is then returned in the layer's
    compute dtype, as every Keras layer's output is (float16 under
    `"mixed_float16"`). Pass `dtype="float32"` for float32 distances in a
    mixed-precision model.

    Args:
        squared: output the squared distance instead.
        epsilon: if given, output `sqrt(max(d**2, epsilon))` as the seed recipe
            did with `K.epsilon()`; if `None` (default), the exact distance.
        **kwargs: passed to `keras.layers.Layer` (`name`, `dtype`, ...);
            `dtype="float32"` gives float32 distances under a mixed policy.

    Returns:
        The distances, shape `(batch, 1)`, in the layer's compute dtype.

    Raises:
        ValueError: if `epsilon` is not positive, or the two inputs differ in
            shape.
        TypeError: if called on a single tensor instead of `[a, b]`, or on
            `None`.

    Examples:
        >>> import numpy as np
        >>> a = np.array([[0.0, 3.0]], "float32")
        >>> b = np.array([[4.0, 0.0]], "float32")
        >>> float(EuclideanDistance()([a, b])[0, 0])
        5.0

        In a mixed-precision model the distance comes in the compute dtype
        of the layer's policy, unless the layer is given `dtype="float32"`:

        >>> import keras
        >>> half = EuclideanDistance(dtype="mixed_float16")([a, b])
        >>> keras.backend.standardize_dtype(half.dtype)
        'float16'
        >>> full = EuclideanDistance(dtype="float32")([a, b])
        >>> keras.backend.standardize_dtype(full.dtype), float(full[0, 0])
        ('float32', 5.0)
    """

    def __init__(
        self, squared: bool = False, epsilon: float | None = None, **kwargs: Any
    ) -> None:
        super().__init__(**kwargs)
        self.squared = bool(squared)
        self.epsilon = distances.check_epsilon(epsilon)

    def _distance(self, a: Any, b: Any) -> Any:
        return distances.euclidean_distance(
            a, b, squared=self.squared, epsilon=self.epsilon
        )

    def get_config(self) -> dict:
        config = super().get_config()
        config.update({"squared": self.squared, "epsilon": self.epsilon})
        return config


@keras.saving.register_keras_serializable(package="keras_siamese")
class CosineDistance(_PairDistance):
    """Cosine distance `1 - cos(a, b)`, in `[0, 2]`: `[a, b] -> (batch, 1)`.

    Args:
        **kwargs: passed to `keras.layers.Layer` (`name`, `dtype`, ...);
            `dtype="float32"` gives float32 distances under a mixed policy.

    Returns:
        The distances, shape `(batch, 1)`, in the layer's compute dtype.

    Raises:
        ValueError: if the two inputs differ in shape.
        TypeError: if called on a single tensor instead of `[a, b]`, or on
            `None`.

    Examples:
        >>> import numpy as np
        >>> a = np.array([[1.0, 0.0]], "float32")
        >>> float(CosineDistance()([a, -a])[0, 0])
        2.0
    """

    def __init__(self, **kwargs: Any) -> None:
        super().__init__(**kwargs)

    def _distance(self, a: Any, b: Any) -> Any:
        return distances.cosine_distance(a, b)


@keras.saving.register_keras_serializable(package="keras_siamese")
class ManhattanDistance(_PairDistance):
    """Manhattan (L1) distance `sum(|a - b|)`: `[a, b] -> (batch, 1)`.

    Args:
        **kwargs: passed to `keras.layers.Layer` (`name`, `dtype`, ...);
            `dtype="float32"` gives float32 distances under a mixed policy.

    Returns:
        The distances, shape `(batch, 1)`, in the layer's compute dtype.

    Raises:
        ValueError: if the two inputs differ in shape.
        TypeError: if called on a single tensor instead of `[a, b]`, or on
            `None`.

    Examples:
        >>> import numpy as np
        >>> a = np.array([[1.0, -1.0]], "float32")
        >>> b = np.array([[0.0, 1.0]], "float32")
        >>> float(ManhattanDistance()([a, b])[0, 0])
        3.0
    """

    def __init__(self, **kwargs: Any) -> None:
        super().__init__(**kwargs)

    def _distance(self, a: Any, b: Any) -> Any:
        return distances.manhattan_distance(a, b)


@keras.saving.register_keras_serializable(package="keras_siamese")
class PairDistance(_PairDistance):
    """Any distance between two embeddings: `[a, b] -> (batch, 1)`.

    The layer for a distance of `keras_siamese.distances` by name, or for a
    user-defined `Distance` (for example to train with `ContrastiveLoss` on
    it). A model holding it saves the distance's name: a user-defined
    distance must be registered (`keras_siamese.distances.register`) before
    saving and before loading.

    Args:
        distance: a distance name (`"euclidean"` by default) or a `Distance`
            with a paired form.
        **kwargs: passed to `keras.layers.Layer` (`name`, `dtype`, ...);
            `dtype="float32"` gives float32 distances under a mixed policy.

    Returns:
        The distances, shape `(batch, 1)`, in the layer's compute dtype.

    Raises:
        ValueError: for an unknown distance or one without a paired form (at
            construction), if the two inputs differ in shape, or (at
            `get_config`) for a distance not registered under its name.
        TypeError: if called on a single tensor instead of `[a, b]`, or on
            `None`.

    Examples:
        >>> import numpy as np
        >>> a = np.array([[1.0, -1.0]], "float32")
        >>> b = np.array([[0.0, 1.0]], "float32")
        >>> float(PairDistance("manhattan")([a, b])[0, 0])
        3.0
    """

    def __init__(
        self, distance: str | distances.Distance = "euclidean", **kwargs: Any
    ) -> None:
        super().__init__(**kwargs)
        self._measure = distances.get(distance, needs=("paired",), user="PairDistance")
        self.distance = self._measure.name

    def _distance(self, a: Any, b: Any) -> Any:
        return self._measure.paired(a, b, keepdims=True)

    def get_config(self) -> dict:
        config = super().get_config()
        config["distance"] = distances.serialize(self._measure, "PairDistance")
        return config
