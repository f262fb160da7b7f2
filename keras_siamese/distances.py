"""Distances between embeddings, written with `keras.ops` only.

One vocabulary serves the whole package: every layer, loss, metric and
evaluation function that measures embeddings takes a `distance=` argument,
one of `"euclidean"`, `"squared_euclidean"`, `"cosine"` or `"manhattan"`,
resolved by `get`. Smaller always means more similar.

Every function here is safe to differentiate everywhere: the gradient of a
distance between identical embeddings is zero, never NaN or infinite, and
half-precision inputs are upcast to float32 before any square or sum so that
mixed-precision training cannot overflow.
"""

from __future__ import annotations

import dataclasses
from collections.abc import Callable
from typing import Any

import keras
from keras import ops

from keras_siamese._checks import (
    check_float,
    renamed_argument,
    shapes_compatible,
)

# Norm floor used when normalising for cosine: the gradient through a
# normalised zero vector is then bounded by 1 / _NORM_FLOOR instead of inf.
_NORM_FLOOR = 1e-6
_HALF_PRECISION = ("float16", "bfloat16")
# Elements of the `(n, m, features)` differences that one step of the
# pairwise Manhattan distance materialises.
_MANHATTAN_CHUNK_ELEMENTS = 2**22


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


def safe_abs(x: Any) -> Any:
    """`|x|` whose gradient at zero is zero on every backend.

    JAX differentiates `abs` at 0 as 1 while TensorFlow and PyTorch give 0;
    the distance between identical embeddings would then push them apart in
    an arbitrary direction on JAX only.
    """
    return x * ops.stop_gradient(ops.sign(x))


def check_epsilon(epsilon: float | None) -> float | None:
    """Validate the optional `epsilon` floor of the Euclidean distance."""
    if epsilon is None:
        return None
    return check_float(epsilon, "epsilon", minimum=0.0, inclusive=False)


def _pair(a: Any, b: Any) -> tuple[Any, Any]:
    a, b = as_float(a), as_float(b)
    if len(a.shape) < 1 or len(b.shape) < 1:
        raise ValueError(
            "Distances need embeddings `a` and `b` with at least one axis; got "
            f"shapes {tuple(a.shape)} and {tuple(b.shape)}."
        )
    if not shapes_compatible(a.shape, b.shape):
        raise ValueError(
            "Both embeddings of a pair, `a` and `b`, must have the same shape; got "
            f"{tuple(a.shape)} and {tuple(b.shape)}."
        )
    dtype = a.dtype if a.dtype == b.dtype else "float32"
    return ops.cast(a, dtype), ops.cast(b, dtype)


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

    Examples:
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
        # `where`, not `maximum`: Keras' `maximum` computes float64 in float32
        # on PyTorch (its type promotion maps 64-bit floats to 32-bit).
        return ops.sqrt(ops.where(squares > epsilon, squares, epsilon))
    return safe_sqrt(squares)


def l2_normalize(x: Any, axis: int = -1) -> Any:
    """Scale `x` to unit L2 norm along `axis`; zero vectors stay zero.

    Args:
        x: a float tensor or array.
        axis: the axis to normalise over.

    Returns:
        `x / max(||x||, 1e-6)`, so its gradient stays finite at zero.

    Examples:
        >>> import numpy as np
        >>> [round(float(v), 4) for v in l2_normalize(np.array([3.0, 4.0]))]
        [0.6, 0.8]
    """
    x = ops.convert_to_tensor(x)
    squares = ops.sum(ops.square(x), axis=axis, keepdims=True)
    floor = _NORM_FLOOR**2  # `where` keeps float64 on PyTorch, `maximum` not
    return x * ops.rsqrt(ops.where(squares > floor, squares, floor))


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

    Examples:
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

    The gradient between identical embeddings is zero on every backend.

    Args:
        a: embeddings, shape `(batch, ..., dim)`.
        b: embeddings of the same shape as `a`.
        keepdims: keep the reduced axis, so `(batch, dim) -> (batch, 1)`.

    Returns:
        The distances, shape `(batch, ..., 1)` (or `(batch, ...)`).

    Raises:
        ValueError: if the shapes of `a` and `b` differ.

    Examples:
        >>> import numpy as np
        >>> d = manhattan_distance(np.array([[1.0, -1.0]]), np.array([[0.0, 1.0]]))
        >>> float(d[0, 0])
        3.0
    """
    a, b = _pair(a, b)
    return ops.sum(safe_abs(a - b), axis=-1, keepdims=keepdims)


# ---------------------------------------------------------------------------
# All-pairs distances between two sets of rows.


def _pairwise_euclidean_squares(x: Any, y: Any) -> Any:
    """`||x_i - y_j||^2` from the Gram matrix, clipped at 0 against round-off."""
    # `einsum`, not `matmul`, which computes float64 in float32 on PyTorch.
    gram = ops.einsum("ik,jk->ij", x, y)
    squares = (
        ops.expand_dims(ops.sum(ops.square(x), axis=1), 1)
        - 2.0 * gram
        + ops.expand_dims(ops.sum(ops.square(y), axis=1), 0)
    )
    return ops.where(squares > 0.0, squares, 0.0)  # `maximum`: float32 on PyTorch


def _pairwise_cosine(x: Any, y: Any) -> Any:
    similarity = ops.einsum("ik,jk->ij", l2_normalize(x), l2_normalize(y))
    return ops.clip(1.0 - similarity, 0.0, 2.0)


def _pairwise_manhattan(x: Any, y: Any) -> Any:
    """`sum_k |x_ik - y_jk|`, a few features at a time.

    There is no matrix-product form of the L1 distance: the `(n, m, dim)`
    differences are needed. They are built for a slice of the features at a
    time so that the forward pass holds at most `_MANHATTAN_CHUNK_ELEMENTS`
    of them; differentiating keeps every slice's signs, `O(n * m * dim)`.
    """
    rows, columns, features = x.shape[0], y.shape[0], x.shape[1]
    if features is None:
        raise ValueError(
            'distance="manhattan" needs a known embedding size; got shape '
            f"{tuple(x.shape)}."
        )
    if isinstance(rows, int) and isinstance(columns, int):
        step = max(1, _MANHATTAN_CHUNK_ELEMENTS // max(rows * columns, 1))
    else:
        step = 8
    total = None
    for start in range(0, features, step):
        stop = min(start + step, features)
        part = ops.expand_dims(x[:, start:stop], 1) - ops.expand_dims(
            y[:, start:stop], 0
        )
        part = ops.sum(safe_abs(part), axis=-1)
        total = part if total is None else total + part
    if total is None:  # embeddings of size 0
        return ops.zeros((ops.shape(x)[0], ops.shape(y)[0]), dtype=x.dtype)
    return total


@dataclasses.dataclass(frozen=True)
class Distance:
    """A named distance: its paired form and its all-pairs form.

    Obtain one with `keras_siamese.distances.get(name)`; layers, losses and
    metrics store only the `name` in their configs.

    Attributes:
        name: the name `get` resolves.
        paired_fn: `(a, b, keepdims) -> d(a_i, b_i)`, over the last axis.
        pairwise_squares: whether `pairwise_fn` returns squared Euclidean
            distances that still need a square root.
        pairwise_fn: `(x, y) -> (n, m)` distances between the rows.
    """

    name: str
    paired_fn: Callable[..., Any]
    pairwise_fn: Callable[[Any, Any], Any]
    pairwise_squares: bool = False

    def paired(self, a: Any, b: Any, keepdims: bool = False) -> Any:
        """Distance between row `i` of `a` and row `i` of `b`."""
        return self.paired_fn(a, b, keepdims=keepdims)

    def pairwise(self, x: Any, y: Any | None = None) -> Any:
        """`(n, m)` distances between the rows of `x` and those of `y`.

        Without `y`, the rows of `x` against themselves, with an exact zero
        (and a zero gradient) on the diagonal.
        """
        return pairwise_distances(x, self.name, references=y)


def _squared_euclidean(a: Any, b: Any, keepdims: bool = True) -> Any:
    return euclidean_distance(a, b, squared=True, keepdims=keepdims)


_DISTANCES = {
    "euclidean": Distance(
        "euclidean",
        euclidean_distance,
        _pairwise_euclidean_squares,
        pairwise_squares=True,
    ),
    "squared_euclidean": Distance(
        "squared_euclidean", _squared_euclidean, _pairwise_euclidean_squares
    ),
    "cosine": Distance("cosine", cosine_distance, _pairwise_cosine),
    "manhattan": Distance("manhattan", manhattan_distance, _pairwise_manhattan),
}

#: The names `get` accepts, in the order the documentation lists them.
DISTANCES = tuple(_DISTANCES)


def get(identifier: str | Distance, argument: str = "distance") -> Distance:
    """Look up a distance by name.

    Args:
        identifier: one of `"euclidean"`, `"squared_euclidean"`, `"cosine"`,
            `"manhattan"`, or a `Distance` (returned as it is).
        argument: the name of the argument being resolved, for the error
            message.

    Returns:
        The `Distance`, with its paired and all-pairs forms.

    Raises:
        TypeError: if `identifier` is neither a string nor a `Distance`.
        ValueError: if the name is unknown.

    Examples:
        >>> import numpy as np
        >>> from keras_siamese import distances
        >>> cosine = distances.get("cosine")
        >>> cosine.name
        'cosine'
        >>> d = cosine.pairwise(np.array([[1.0, 0.0], [0.0, 1.0]]))
        >>> float(d[0, 1])
        1.0
    """
    if isinstance(identifier, Distance):
        return identifier
    if not isinstance(identifier, str):
        raise TypeError(f"`{argument}` must be one of {DISTANCES}; got {identifier!r}.")
    if identifier not in _DISTANCES:
        raise ValueError(
            f"`{argument}` must be one of {DISTANCES}; got {identifier!r}."
        )
    return _DISTANCES[identifier]


def check_distance(distance: str | Distance, argument: str = "distance") -> str:
    """The name of a valid distance (see `get`)."""
    return get(distance, argument).name


def paired_distances(
    a: Any, b: Any, distance: str = "euclidean", *, metric: str | None = None
) -> Any:
    """Distance between row `i` of `a` and row `i` of `b`, shape `(batch,)`.

    Args:
        a: embeddings, shape `(batch, dim)`.
        b: embeddings, shape `(batch, dim)`.
        distance: `"euclidean"` (default), `"squared_euclidean"`, `"cosine"`
            or `"manhattan"`.
        metric: deprecated name of `distance` (0.1.0).

    Returns:
        A `(batch,)` tensor of distances.

    Raises:
        ValueError: if `distance` is unknown or the shapes differ.

    Examples:
        >>> import numpy as np
        >>> d = paired_distances(np.ones((4, 8)), np.zeros((4, 8)), "manhattan")
        >>> [float(v) for v in d]
        [8.0, 8.0, 8.0, 8.0]
    """
    distance = renamed_argument(
        distance, metric, "distance", "metric", "euclidean", "paired_distances"
    )
    return get(distance).paired(a, b, keepdims=False)


def pairwise_distances(
    embeddings: Any,
    distance: str = "euclidean",
    *,
    references: Any | None = None,
    metric: str | None = None,
) -> Any:
    """All-pairs distance matrix of a batch of embeddings, or of two sets.

    Euclidean and cosine distances come from one matrix product (the Gram
    form `||x||^2 - 2 x.y + ||y||^2`), so memory is `O(n * m)`; round-off
    below zero is clipped. The Manhattan distance has no such form and costs
    `O(n * m * dim)` work. Without `references`, the diagonal is exactly 0
    with a zero gradient.

    Args:
        embeddings: a `(n, dim)` tensor.
        distance: `"euclidean"` (default), `"squared_euclidean"`, `"cosine"`
            or `"manhattan"`.
        references: an optional `(m, dim)` tensor; the result is then the
            `(n, m)` distances from every row of `embeddings` to every row of
            `references`.
        metric: deprecated name of `distance` (0.1.0).

    Returns:
        A `(n, n)` symmetric (or `(n, m)`), non-negative tensor; float32 for
        half-precision inputs.

    Raises:
        ValueError: if the inputs are not 2-D, their embedding sizes differ,
            or `distance` is unknown.

    Examples:
        >>> import numpy as np
        >>> d = pairwise_distances(np.array([[0.0, 0.0], [3.0, 4.0]]))
        >>> float(d[0, 1])
        5.0
        >>> d = pairwise_distances(
        ...     np.array([[0.0, 0.0]]),
        ...     "manhattan",
        ...     references=np.array([[1.0, 1.0], [3.0, 4.0]]),
        ... )
        >>> [float(v) for v in d[0]]
        [2.0, 7.0]
    """
    distance = renamed_argument(
        distance, metric, "distance", "metric", "euclidean", "pairwise_distances"
    )
    spec = get(distance)
    x = _rows(embeddings, "embeddings")
    if references is None:
        y = x
    else:
        y = _rows(references, "references")
        if (
            x.shape[1] is not None
            and y.shape[1] is not None
            and x.shape[1] != y.shape[1]
        ):
            raise ValueError(
                "`embeddings` and `references` must have the same embedding size; "
                f"got {tuple(x.shape)} and {tuple(y.shape)}."
            )
        if x.dtype != y.dtype:
            x, y = ops.cast(x, "float32"), ops.cast(y, "float32")
    result = spec.pairwise_fn(x, y)
    if references is None:
        indices = ops.arange(ops.shape(x)[0])
        diagonal = ops.expand_dims(indices, 1) == ops.expand_dims(indices, 0)
        result = ops.where(diagonal, 0.0, result)
    if spec.pairwise_squares:
        return safe_sqrt(result)
    return result


def _rows(x: Any, argument: str) -> Any:
    x = as_float(x)
    if len(x.shape) != 2:
        raise ValueError(
            f"`{argument}` must be a 2-D tensor (batch, dim); got shape "
            f"{tuple(x.shape)}."
        )
    return x
