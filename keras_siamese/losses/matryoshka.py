"""Matryoshka loss: one loss over several leading prefixes of the embeddings."""

from __future__ import annotations

import math
from collections.abc import Callable, Sequence
from typing import Any

import keras
from keras import ops

from keras_siamese._checks import check_bool

# Below this squared norm a prefix is left as it is instead of divided by
# its norm: the direction of a (near-)zero vector is noise, and its
# gradient would be unbounded.
_NORM_FLOOR = 1e-12


def _check_dims(dims: Any) -> tuple[int, ...]:
    if isinstance(dims, (int, str, bytes)) or not isinstance(dims, Sequence):
        raise TypeError(f"`dims` must be a list of embedding sizes; got {dims!r}.")
    checked = []
    for dim in dims:
        if isinstance(dim, bool) or not isinstance(dim, int) or dim < 1:
            raise ValueError(
                f"`dims` must hold positive integers (prefix sizes); got {dims!r}."
            )
        checked.append(int(dim))
    if not checked:
        raise ValueError("`dims` must hold at least one prefix size.")
    if len(set(checked)) != len(checked):
        raise ValueError(f"`dims` must not repeat a size; got {dims!r}.")
    return tuple(checked)


def _check_weights(weights: Any, count: int) -> tuple[float, ...]:
    if weights is None:
        return (1.0,) * count
    if isinstance(weights, (int, float, str, bytes)) or not isinstance(
        weights, Sequence
    ):
        raise TypeError(f"`weights` must be a list of numbers; got {weights!r}.")
    if len(weights) != count:
        raise ValueError(
            f"`weights` must hold one weight per size in `dims` ({count}); got "
            f"{len(weights)}."
        )
    checked = []
    for weight in weights:
        if isinstance(weight, bool) or not isinstance(weight, (int, float)):
            raise TypeError(f"`weights` must hold numbers; got {weights!r}.")
        if not math.isfinite(weight) or weight < 0:
            raise ValueError(
                f"`weights` must be finite and non-negative; got {weights!r}."
            )
        checked.append(float(weight))
    if not any(checked):
        raise ValueError("`weights` must not all be 0.")
    return tuple(checked)


def _prefix(embeddings: Any, dim: int, renormalize: bool) -> Any:
    part = embeddings[..., :dim]
    if not renormalize:
        return part
    squared = ops.sum(ops.square(part), axis=-1, keepdims=True)
    return part / ops.sqrt(ops.maximum(squared, _NORM_FLOOR))


def matryoshka_loss(
    y_true: Any,
    y_pred: Any,
    loss: Callable[..., Any],
    dims: Sequence[int],
    weights: Sequence[float] | None = None,
    renormalize: bool = True,
    sample_weight: Any = None,
) -> Any:
    """Weighted sum of `loss` over leading prefixes of the embeddings.

    For each size `d` in `dims`, `loss(y_true, y_pred[..., :d])` (the
    prefix divided by its L2 norm first, with `renormalize`), times its
    weight. Training so makes every prefix a usable embedding on its own
    (Kusupati et al., 2022), which can then be kept at serving time
    (`truncate_dim`).

    Args:
        y_true: passed to `loss` unchanged.
        y_pred: the embeddings, `(..., dim)`.
        loss: a loss called as `loss(y_true, embeddings)` (a Keras `Loss`
            or a loss function) whose `y_pred` has the embedding on its last
            axis: labelled losses `(batch, dim)`, stacked views or triplets
            `(batch, n, dim)`.
        dims: the prefix sizes, each at most `dim`.
        weights: one non-negative weight per size; default 1 each.
        renormalize: L2-normalise every prefix (default) before the loss.
        sample_weight: passed to `loss` when given.

    Returns:
        The weighted sum, a scalar where `loss` returns one.

    Raises:
        TypeError, ValueError: for malformed `dims` or `weights`, or a size
            above the embedding's.

    Examples:
        >>> import numpy as np
        >>> from keras_siamese import SupervisedContrastiveLoss
        >>> labels = np.array([0, 0, 1, 1])
        >>> embeddings = np.eye(4, dtype="float32")[[0, 0, 1, 1]] + 0.1
        >>> loss = SupervisedContrastiveLoss()
        >>> total = matryoshka_loss(labels, embeddings, loss, dims=[4, 2])
        >>> expected = loss(labels, embeddings) + loss(labels, embeddings[:, :2])
        >>> bool(np.isclose(total, expected, rtol=1e-5))
        True
    """
    dims = _check_dims(dims)
    weights = _check_weights(weights, len(dims))
    y_pred = ops.convert_to_tensor(y_pred)
    size = y_pred.shape[-1]
    if size is not None and max(dims) > size:
        raise ValueError(
            f"`dims` asks for a prefix of {max(dims)} but the embeddings have "
            f"{size} dimensions."
        )
    total = 0.0
    for dim, weight in zip(dims, weights):
        if not weight:
            continue
        part = _prefix(y_pred, dim, renormalize)
        if sample_weight is None:
            value = loss(y_true, part)
        else:
            value = loss(y_true, part, sample_weight=sample_weight)
        total = total + weight * value
    return total


@keras.saving.register_keras_serializable(package="keras_siamese")
class MatryoshkaLoss(keras.losses.Loss):
    """Trains every leading prefix of the embeddings with one loss.

    The wrapped loss is computed on the first `d` dimensions of the
    embeddings for each `d` in `dims` (each prefix L2-normalised unless
    `renormalize=False`), and the results are summed with `weights`, as
    sentence-transformers' `MatryoshkaLoss` does. The model must output
    embeddings (the loss's `y_pred` with the embedding on its last axis),
    not distances: wrap `SupervisedContrastiveLoss`, `OnlineTripletLoss`,
    `TripletLoss` on stacked triplets, `NTXentLoss`, and so on. Serve a
    prefix with `EmbeddingIndex(truncate_dim=...)`.

    Args:
        loss: the wrapped Keras `Loss` object (registered serialisable, as
            every loss of this package, so that the wrapper saves).
        dims: the prefix sizes, e.g. `[768, 512, 256, 128, 64]`.
        weights: one non-negative weight per size; default 1 each.
        renormalize: L2-normalise each prefix before the loss (default).
        name: name of the loss.
        dtype: dtype of the computation (the embeddings are cast to it);
            defaults to `keras.backend.floatx()`.

    Raises:
        TypeError: if `loss` is not a Keras `Loss`, or `dims`/`weights` are
            not lists of numbers.
        ValueError: for sizes that are not positive, repeated, or (at the
            first call) larger than the embeddings; for weights of the wrong
            length, negative, non-finite or all 0.

    Examples:
        >>> import numpy as np
        >>> from keras_siamese import SupervisedContrastiveLoss
        >>> loss = MatryoshkaLoss(SupervisedContrastiveLoss(), dims=[4, 2])
        >>> labels = np.array([0, 0, 1, 1])
        >>> embeddings = np.eye(4, dtype="float32")[[0, 0, 1, 1]] + 0.1
        >>> float(loss(labels, embeddings)) > 0
        True

        Usage with `compile()`:

        >>> import keras
        >>> model = keras.Sequential([keras.Input((4,)), keras.layers.Dense(8)])
        >>> model.compile(
        ...     optimizer="adam",
        ...     loss=MatryoshkaLoss(SupervisedContrastiveLoss(), dims=[8, 4, 2]),
        ... )
    """

    def __init__(
        self,
        loss: keras.losses.Loss,
        dims: Sequence[int],
        weights: Sequence[float] | None = None,
        renormalize: bool = True,
        name: str = "matryoshka_loss",
        dtype: str | None = None,
    ) -> None:
        if not isinstance(loss, keras.losses.Loss):
            raise TypeError(
                "`loss` must be a Keras Loss object, e.g. "
                f"SupervisedContrastiveLoss(); got {type(loss).__name__}."
            )
        super().__init__(name=name, dtype=dtype)
        self.loss = loss
        self.dims = _check_dims(dims)
        self.weights = _check_weights(weights, len(self.dims))
        self.renormalize = check_bool(renormalize, "renormalize")

    def __call__(self, y_true: Any, y_pred: Any, sample_weight: Any = None) -> Any:
        y_pred = ops.cast(y_pred, self.dtype)
        return matryoshka_loss(
            y_true,
            y_pred,
            self.loss,
            self.dims,
            self.weights,
            self.renormalize,
            sample_weight,
        )

    def call(self, y_true: Any, y_pred: Any) -> Any:
        return matryoshka_loss(
            y_true, y_pred, self.loss, self.dims, self.weights, self.renormalize
        )

    def get_config(self) -> dict[str, Any]:
        config = super().get_config()
        config.pop("reduction", None)
        config.update(
            {
                "loss": keras.saving.serialize_keras_object(self.loss),
                "dims": list(self.dims),
                "weights": list(self.weights),
                "renormalize": self.renormalize,
                "dtype": self.dtype,
            }
        )
        return config

    @classmethod
    def from_config(cls, config: dict[str, Any]) -> MatryoshkaLoss:
        config = dict(config)
        loss = config.pop("loss")
        if isinstance(loss, dict):
            loss = keras.saving.deserialize_keras_object(loss)
        return cls(loss, **config)
