"""Argument and shape checks shared by the losses and metrics."""

from __future__ import annotations

import math
from typing import Any

import numpy as np
from keras import ops

MINING_MODES = ("batch_hard", "batch_all", "semi_hard")


def check_margin(margin: float, argument: str = "margin") -> float:
    """Return `margin` as a float after checking it is finite and `>= 0`."""
    if isinstance(margin, bool) or not isinstance(margin, (int, float)):
        raise TypeError(f"`{argument}` must be a float, got {margin!r}.")
    if not math.isfinite(margin) or margin < 0:
        raise ValueError(f"`{argument}` must be a finite number >= 0, got {margin!r}.")
    return float(margin)


def check_threshold(threshold: float) -> float:
    """Return a finite float distance threshold."""
    if isinstance(threshold, bool) or not isinstance(threshold, (int, float)):
        raise TypeError(f"`threshold` must be a float, got {threshold!r}.")
    if not math.isfinite(threshold):
        raise ValueError(f"`threshold` must be finite, got {threshold!r}.")
    return float(threshold)


def check_bool(value: bool, argument: str) -> bool:
    if not isinstance(value, bool):
        raise TypeError(f"`{argument}` must be True or False, got {value!r}.")
    return value


def check_mining(mining: str) -> str:
    if not isinstance(mining, str) or mining not in MINING_MODES:
        raise ValueError(f"`mining` must be one of {MINING_MODES}, got {mining!r}.")
    return mining


def check_real(x: Any, argument: str) -> None:
    """Refuse strings, complex numbers and other non-real inputs by name.

    Keras casts metric inputs to the metric's dtype before any of our code
    runs; on TensorFlow a string tensor then fails deep inside the cast.
    """
    dtype = getattr(x, "dtype", None)
    if dtype is None:  # lists and other array-likes
        dtype = np.asarray(x).dtype
    kind = getattr(dtype, "kind", None)  # NumPy dtypes
    name = (
        str(dtype)
        if kind is None
        else {"b": "bool", "i": "int", "u": "int", "f": "float"}.get(kind, str(dtype))
    )
    if not any(real in name for real in ("bool", "int", "float")):
        raise TypeError(f"`{argument}` must hold real numbers; got dtype {dtype}.")


def as_vector(x: Any, argument: str) -> Any:
    """Flatten a `(batch,)` or `(batch, 1)` tensor to `(batch,)`.

    Keras hands a distance layer's `(batch, 1)` output to losses and metrics
    next to `(batch,)` labels; comparing those directly broadcasts to
    `(batch, batch)`, so both are flattened first.
    """
    shape = tuple(x.shape)
    if len(shape) == 1:
        return x
    if len(shape) == 2 and shape[1] == 1:
        return ops.reshape(x, (-1,))
    raise ValueError(
        f"`{argument}` must have shape (batch,) or (batch, 1); got {shape}."
    )


def check_same_batch(a: Any, b: Any, name_a: str, name_b: str) -> None:
    size_a, size_b = a.shape[0], b.shape[0]
    if size_a is not None and size_b is not None and size_a != size_b:
        raise ValueError(
            f"`{name_a}` and `{name_b}` must have the same batch size; got "
            f"{size_a} and {size_b}."
        )


def check_triplets(y_pred: Any) -> None:
    """Require the `(batch, 3, dim)` layout of `SiameseWrapper(merge="stack")`."""
    shape = tuple(y_pred.shape)
    if len(shape) != 3 or shape[1] != 3:
        raise ValueError(
            "`y_pred` must be stacked triplets of shape (batch, 3, dim) "
            '(anchor, positive, negative), as SiameseWrapper(merge="stack") '
            f"produces; got shape {shape}."
        )


def hinge_or_softplus(difference: Any, margin: float, soft: bool) -> Any:
    """`max(difference + margin, 0)`, or `softplus(difference)` when `soft`."""
    if soft:
        return ops.softplus(difference)
    return ops.relu(difference + margin)
