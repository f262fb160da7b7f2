"""The two-view layout of the self-supervised losses, and their base class.

A self-supervised batch holds two augmented views of `N` examples stacked on
the batch axis, as the datasets' `views=2` give them: row `k` is view 0 of
example `k` and row `N + k` its view 1. A model that embeds every row outputs
`y_pred` in the same order, so a loss finds the two branches in the two
halves of `y_pred`:

- `(2N, dim)`: one embedding per row (`BarlowTwinsLoss`, `VICRegLoss`, and
  `NegativeCosineSimilarity` / `BYOLLoss` without a predictor);
- `(2N, 2, dim)`: per row, the predictor's output `p` and the target
  projection `z` (`NegativeCosineSimilarity` for SimSiam, `BYOLLoss`), the
  `merge="stack"` layout of `SiameseWrapper`. The prediction of each view is
  compared with the target of the other view, through a stop-gradient.

`y_true` is ignored (the dataset's targets, or `None`). An odd number of
rows is refused where the batch size is known when the loss is traced (on
JAX and PyTorch, and eagerly); where it is only known at run time (a
TensorFlow graph), the last row is left out.
"""

from __future__ import annotations

from typing import Any

import keras
from keras import ops

from keras_siamese._keras_compat import in_symbolic_scope
from keras_siamese.distances import as_float, safe_sqrt


def _check_rows(rows: Any, min_examples: int, user: str) -> None:
    # Unknown until run time: None, a symbolic size, or a placeholder size.
    if not isinstance(rows, int) or in_symbolic_scope():
        return
    if rows % 2:
        raise ValueError(
            f"{user} takes the two views of every example stacked on the batch "
            "axis (rows `k` and `N + k` are the views of example `k`), so `y_pred` "
            f"must have an even number of rows; got {rows}."
        )
    if rows // 2 < min_examples:
        raise ValueError(
            f"{user} needs at least {min_examples} examples per view (its "
            "statistics are over the batch); got `y_pred` with "
            f"{rows} rows, {rows // 2} per view."
        )


def split_views(y_pred: Any, user: str, min_examples: int = 0) -> tuple[Any, Any]:
    """The two views `(N, dim)` of a `(2N, dim)` `y_pred`, in their compute dtype.

    Raises:
        ValueError: if `y_pred` is not 2-D, or its batch size is known and odd
            or smaller than `2 * min_examples`.
    """
    y_pred = as_float(y_pred)
    if len(y_pred.shape) != 2:
        raise ValueError(
            f"{user} takes `y_pred` of shape (2 * batch, dim), the embeddings of "
            "view 0 of every example followed by those of view 1; got shape "
            f"{tuple(y_pred.shape)}."
        )
    _check_rows(y_pred.shape[0], min_examples, user)
    half = ops.shape(y_pred)[0] // 2
    return y_pred[:half], y_pred[half : 2 * half]


def predictions_and_targets(y_pred: Any, user: str) -> tuple[Any, Any]:
    """The pairs `(x0, x1)` to compare, `(rows, dim)` each, from either layout.

    From `(2N, dim)`: view 0 and view 1, both differentiable. From
    `(2N, 2, dim)`: the predictions of both views, and the targets of the
    other view (rows swapped by halves) behind a stop-gradient.

    Raises:
        ValueError: for another shape, or a known odd batch size.
    """
    y_pred = as_float(y_pred)
    shape = tuple(y_pred.shape)
    if len(shape) == 2:
        return split_views(y_pred, user)
    if len(shape) != 3 or shape[1] != 2:
        raise ValueError(
            f"{user} takes `y_pred` of shape (2 * batch, dim) (the two views "
            "stacked on the batch axis) or (2 * batch, 2, dim) (per row, the "
            f"prediction and the target projection); got shape {shape}."
        )
    _check_rows(shape[0], 0, user)
    half = ops.shape(y_pred)[0] // 2
    predictions = y_pred[: 2 * half, 0]
    targets = ops.stop_gradient(y_pred[:, 1])
    swapped = ops.concatenate([targets[half : 2 * half], targets[:half]], axis=0)
    return predictions, swapped


def count(x: Any) -> Any:
    """The number of rows of `x`, as a scalar of its dtype."""
    return ops.cast(ops.shape(x)[0], x.dtype)


def mean_cosine(x0: Any, x1: Any, eps: float) -> Any:
    """Mean over rows of `x0 . x1 / (max(|x0|, eps) * max(|x1|, eps))`.

    Each vector is divided by its norm floored at `eps` (as PyTorch's
    `cosine_similarity`); a batch without rows gives 0.
    """

    def unit(x: Any) -> Any:
        norm = safe_sqrt(ops.sum(ops.square(x), axis=-1, keepdims=True))
        return x / ops.where(norm < eps, eps, norm)

    cosines = ops.sum(unit(x0) * unit(x1), axis=-1)
    rows = count(x0)
    return ops.sum(cosines) / ops.where(rows < 1, 1.0, rows)


class TwoViewLoss(keras.losses.Loss):
    """A batch-level loss of the two views of every example.

    Subclasses implement `compute(y_pred)`, which returns a scalar; `y_true`
    is ignored and may be `None`. `sample_weight` is refused (the loss is not a sum of
    per-example terms), and the scalar is returned as a one-element vector,
    as `LabelledEmbeddingLoss` does, so that Keras' division by the number of
    replicas under `tf.distribute` applies once.

    Args:
        reduction: Keras loss reduction (the loss is already a scalar).
        name: name of the loss.
        dtype: dtype of the computation; defaults to `keras.backend.floatx()`.
    """

    def __call__(self, y_true: Any, y_pred: Any, sample_weight: Any = None) -> Any:
        if sample_weight is not None:
            raise ValueError(
                f"{type(self).__name__} is computed over the whole batch and "
                "does not take a `sample_weight`."
            )
        # `y_true` is ignored, and may be `None` (a dataset without targets),
        # which Keras would refuse to convert.
        return super().__call__(0.0 if y_true is None else y_true, y_pred)

    def call(self, y_true: Any, y_pred: Any) -> Any:
        del y_true
        return ops.reshape(self.compute(y_pred), (1,))

    def compute(self, y_pred: Any) -> Any:
        """The scalar loss of one batch."""
        raise NotImplementedError

    def get_config(self) -> dict[str, Any]:
        config = super().get_config()
        config.update({"dtype": self.dtype})
        return config
