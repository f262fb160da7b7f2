"""Distance functions between embeddings, written with `keras.ops` only.

Every function here is safe to differentiate everywhere: the gradient of a
distance between identical embeddings is zero, never NaN or infinite, and
half-precision inputs are upcast to float32 before any square or sum so that
mixed-precision training cannot overflow.
"""

from __future__ import annotations

import math
from typing import Any

import keras
from keras import ops

PAIRWISE_METRICS = ("euclidean", "squared_euclidean", "cosine")

# Norm floor used when normalising for cosine: the gradient through a
# normalised zero vector is then bounded by 1 / _NORM_FLOOR instead of inf.
_NORM_FLOOR = 1e-6
_HALF_PRECISION = ("float16", "bfloat16")


def compute_dtype_of(x: Any) -> str:
    """Return the dtype distances of `x` are computed in.

    Half-precision and integer inputs are computed in float32 (the backend's
    `floatx` for integers); float32 and float64 inputs keep their dtype.

    Raises:
        TypeError: for strings, complex numbers and other non-real dtypes,
            which a cast would silently garble (or, on TensorFlow, fail with a
            backend-specific error).
    """
    dtype = keras.backend.standardize_dtype(x.dtype)
    if not (dtype == "bool" or "int" in dtype or "float" in dtype):
        raise TypeError(f"Embeddings must be real numbers; got dtype {dtype}.")
    if dtype in _HALF_PRECISION:
        return "float32"
    if "float" not in dtype:
        return keras.backend.floatx()
    return dtype


def as_float(x: Any) -> Any:
    """Convert `x` to a tensor in the dtype distances are computed in."""
    x = ops.convert_to_tensor(x)
    dtype = compute_dtype_of(x)
    if keras.backend.standardize_dtype(x.dtype) != dtype:
        x = ops.cast(x, dtype)
    return x


def safe_sqrt(x: Any) -> Any:
    """Square root whose value and gradient at zero are both zero.

    `sqrt` has an infinite derivative at 0, which turns the gradient of the
    distance between two identical embeddings into NaN. Here the square root
    is only ever evaluated on positive entries.

    Args:
        x: a non-negative tensor.

    Returns:
        `sqrt(x)` where `x > 0`, else 0.
    """
    positive = x > 0
    return ops.where(positive, ops.sqrt(ops.where(positive, x, ops.ones_like(x))), 0.0)


def check_epsilon(epsilon: float | None) -> float | None:
    """Validate the optional `epsilon` floor of the Euclidean distance."""
    if epsilon is None:
        return None
    if isinstance(epsilon, bool) or not isinstance(epsilon, (int, float)):
        raise TypeError(f"`epsilon` must be a float or None, got {epsilon!r}.")
    if not math.isfinite(epsilon) or epsilon <= 0:
        raise ValueError(f"`epsilon` must be a finite number > 0, got {epsilon!r}.")
    return float(epsilon)


def _pair(a: Any, b: Any) -> tuple[Any, Any]:
    a, b = as_float(a), as_float(b)
    if len(a.shape) < 1 or len(b.shape) < 1:
        raise ValueError(
            "Distances need embeddings `a` and `b` with at least one axis; got "
            f"shapes {tuple(a.shape)} and {tuple(b.shape)}."
        )
    if not _shapes_compatible(a.shape, b.shape):
        raise ValueError(
            "Both embeddings of a pair, `a` and `b`, must have the same shape; got "
            f"{tuple(a.shape)} and {tuple(b.shape)}."
        )
    dtype = a.dtype if a.dtype == b.dtype else "float32"
    return ops.cast(a, dtype), ops.cast(b, dtype)


def _shapes_compatible(shape_a: Any, shape_b: Any) -> bool:
    if len(shape_a) != len(shape_b):
        return False
    return all(x is None or y is None or x == y for x, y in zip(shape_a, shape_b))


def euclidean_distance(
    a: Any,
    b: Any,
    squared: bool = False,
    epsilon: float | None = None,
    keepdims: bool = True,
) -> Any:
    """Euclidean (L2) distance between paired embeddings, over the last axis.

    Args:
        a: embeddings, shape `(batch, ..., dim)`.
        b: embeddings of the same shape as `a`.
        squared: return the squared distance `sum((a - b) ** 2)`.
        epsilon: if given, return `sqrt(max(sum((a - b) ** 2), epsilon))`, the
            form of the classic Keras `mnist_siamese` recipe (it used
            `K.epsilon()`, 1e-7). If `None` (the default), the exact distance
            is returned with a zero gradient where `a == b`.
        keepdims: keep the reduced axis, so `(batch, dim) -> (batch, 1)`.

    Returns:
        The distances, shape `(batch, ..., 1)` (or `(batch, ...)` without
        `keepdims`), in float32 for half-precision inputs.

    Raises:
        ValueError: if the shapes of `a` and `b` differ, or `epsilon <= 0`.

    Example:
    >>> import numpy as np
    >>> d = euclidean_distance(np.array([[0.0, 3.0]]), np.array([[4.0, 0.0]]))
    >>> float(d[0, 0])
    5.0
    """
    epsilon = check_epsilon(epsilon)
    a, b = _pair(a, b)
    squares = ops.sum(ops.square(a - b), axis=-1, keepdims=keepdims)
    if squared:
        return squares
    if epsilon is not None:
        return ops.sqrt(ops.maximum(squares, epsilon))
    return safe_sqrt(squares)


def l2_normalize(x: Any, axis: int = -1) -> Any:
    """Scale `x` to unit L2 norm along `axis`; zero vectors stay zero.

    Args:
        x: a float tensor.
        axis: the axis to normalise over.

    Returns:
        `x / max(||x||, 1e-6)`, so its gradient stays finite at zero.
    """
    squares = ops.sum(ops.square(x), axis=axis, keepdims=True)
    return x * ops.rsqrt(ops.maximum(squares, _NORM_FLOOR**2))


def cosine_distance(a: Any, b: Any, keepdims: bool = True) -> Any:
    """Cosine distance `1 - cos(a, b)` between paired embeddings, in `[0, 2]`.

    A zero vector has cosine similarity 0 with everything, so its distance is
    1; gradients stay finite there.

    Args:
        a: embeddings, shape `(batch, ..., dim)`.
        b: embeddings of the same shape as `a`.
        keepdims: keep the reduced axis, so `(batch, dim) -> (batch, 1)`.

    Returns:
        The distances, shape `(batch, ..., 1)` (or `(batch, ...)`).

    Raises:
        ValueError: if the shapes of `a` and `b` differ.

    Example:
    >>> import numpy as np
    >>> d = cosine_distance(np.array([[1.0, 0.0]]), np.array([[0.0, 2.0]]))
    >>> float(d[0, 0])
    1.0
    """
    a, b = _pair(a, b)
    similarity = ops.sum(l2_normalize(a) * l2_normalize(b), axis=-1, keepdims=keepdims)
    return ops.clip(1.0 - similarity, 0.0, 2.0)


def manhattan_distance(a: Any, b: Any, keepdims: bool = True) -> Any:
    """Manhattan (L1) distance `sum(|a - b|)` between paired embeddings.

    Args:
        a: embeddings, shape `(batch, ..., dim)`.
        b: embeddings of the same shape as `a`.
        keepdims: keep the reduced axis, so `(batch, dim) -> (batch, 1)`.

    Returns:
        The distances, shape `(batch, ..., 1)` (or `(batch, ...)`).

    Raises:
        ValueError: if the shapes of `a` and `b` differ.

    Example:
    >>> import numpy as np
    >>> d = manhattan_distance(np.array([[1.0, -1.0]]), np.array([[0.0, 1.0]]))
    >>> float(d[0, 0])
    3.0
    """
    a, b = _pair(a, b)
    return ops.sum(ops.abs(a - b), axis=-1, keepdims=keepdims)


def paired_distances(a: Any, b: Any, metric: str = "euclidean") -> Any:
    """Distance between row `i` of `a` and row `i` of `b`, shape `(batch,)`.

    Args:
        a: embeddings, shape `(batch, dim)`.
        b: embeddings, shape `(batch, dim)`.
        metric: one of `"euclidean"`, `"squared_euclidean"`, `"cosine"`.

    Returns:
        A `(batch,)` tensor of distances.

    Raises:
        ValueError: if `metric` is unknown or the shapes differ.

    Example:
    >>> import numpy as np
    >>> d = paired_distances(np.ones((4, 8)), np.zeros((4, 8)), "squared_euclidean")
    >>> tuple(d.shape)
    (4,)
    """
    metric = check_metric(metric)
    if metric == "cosine":
        return cosine_distance(a, b, keepdims=False)
    return euclidean_distance(
        a, b, squared=metric == "squared_euclidean", keepdims=False
    )


def check_metric(metric: str, argument: str = "metric") -> str:
    """Validate a distance name against `PAIRWISE_METRICS` and return it."""
    if not isinstance(metric, str):
        raise TypeError(
            f"`{argument}` must be one of {PAIRWISE_METRICS}, got {metric!r}."
        )
    if metric not in PAIRWISE_METRICS:
        raise ValueError(
            f"`{argument}` must be one of {PAIRWISE_METRICS}, got {metric!r}."
        )
    return metric


def pairwise_distances(embeddings: Any, metric: str = "euclidean") -> Any:
    """All-pairs distance matrix of a batch of embeddings.

    Computed from the Gram matrix (`||x||^2 - 2 x.y + ||y||^2`), so memory is
    `O(B^2)` and the work is one matrix multiply. The diagonal is exactly 0 and
    its gradient is 0; round-off below zero is clipped.

    Args:
        embeddings: a `(B, dim)` tensor.
        metric: `"euclidean"` (default), `"squared_euclidean"` or `"cosine"`.

    Returns:
        A `(B, B)` symmetric, non-negative tensor; float32 for half-precision
        inputs.

    Raises:
        ValueError: if `embeddings` is not 2-D or `metric` is unknown.

    Example:
    >>> import numpy as np
    >>> d = pairwise_distances(np.array([[0.0, 0.0], [3.0, 4.0]]))
    >>> float(d[0, 1])
    5.0
    """
    metric = check_metric(metric)
    x = as_float(embeddings)
    if len(x.shape) != 2:
        raise ValueError(
            "`embeddings` must be a 2-D tensor (batch, dim); got shape "
            f"{tuple(x.shape)}."
        )
    indices = ops.arange(ops.shape(x)[0])
    diagonal = ops.expand_dims(indices, 1) == ops.expand_dims(indices, 0)
    if metric == "cosine":
        unit = l2_normalize(x)
        distances = ops.clip(1.0 - ops.matmul(unit, ops.transpose(unit)), 0.0, 2.0)
        return ops.where(diagonal, 0.0, distances)
    squared_norms = ops.sum(ops.square(x), axis=1)
    gram = ops.matmul(x, ops.transpose(x))
    squares = (
        ops.expand_dims(squared_norms, 1)
        - 2.0 * gram
        + ops.expand_dims(squared_norms, 0)
    )
    squares = ops.where(diagonal, 0.0, ops.maximum(squares, 0.0))
    if metric == "squared_euclidean":
        return squares
    return safe_sqrt(squares)
