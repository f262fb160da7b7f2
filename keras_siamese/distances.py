"""Distances between embeddings: `keras.ops` forms and their NumPy twins.

One vocabulary serves the whole package: every layer, loss, metric and
evaluation function that measures embeddings takes a `distance=` argument,
one of `"euclidean"`, `"squared_euclidean"`, `"cosine"` or `"manhattan"`, a
name given to `register`, or a `Distance` object, resolved by `get`. The
`Distance` is the one source of every form the package uses (paired and
all-pairs `keras.ops` forms, the exact NumPy form, the layouts of search and
faiss): nothing else in the package tells distances apart by name. Smaller
always means more similar.

Every `keras.ops` function here is safe to differentiate everywhere: the gradient of a
distance between identical embeddings is zero, never NaN or infinite, and
half-precision inputs are upcast to float32 before any square or sum so that
mixed-precision training cannot overflow.
"""

from __future__ import annotations

import dataclasses
from collections.abc import Callable
from typing import Any

import keras
import numpy as np
from keras import ops

from keras_siamese._checks import (
    check_float,
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
        `sqrt(x)` where `x > 0`, NaN where `x` is NaN, else 0.
    """
    positive = x > 0
    root = ops.sqrt(ops.where(positive, x, ops.ones_like(x)))
    # `x * 0` rather than 0: a NaN stays NaN instead of reading as a distance
    # of 0, and its gradient at 0 is still 0.
    return ops.where(positive, root, x * 0.0)


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
        # on PyTorch (its type promotion maps 64-bit floats to 32-bit). The
        # comparison keeps a NaN as NaN, as `maximum` does.
        return ops.sqrt(ops.where(squares < epsilon, epsilon, squares))
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
    return x * ops.rsqrt(ops.where(squares < floor, floor, squares))


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
    # `where` keeps float64 on PyTorch (`maximum` does not) and a NaN as NaN.
    return ops.where(squares < 0.0, 0.0, squares)


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


def unit_rows(x: np.ndarray) -> np.ndarray:
    """Rows scaled to unit L2 norm in NumPy (float64), zero rows left at zero.

    Examples:
        >>> import numpy as np
        >>> unit_rows(np.array([[3.0, 4.0], [0.0, 0.0]])).tolist()
        [[0.6, 0.8], [0.0, 0.0]]
    """
    norms = np.sqrt(np.sum(np.square(x, dtype=np.float64), axis=-1, keepdims=True))
    return x / np.maximum(norms, _NORM_FLOOR)


@dataclasses.dataclass(frozen=True)
class MatmulForm:
    """How exact search scores a distance with one matrix product.

    For a fixed query `q`, the score `query(q) . w_g + b_g`, where
    `(w, b) = gallery(rows)`, must order the gallery rows as the distance
    does (smaller nearer); the nearest candidates are then measured again
    with the distance's exact form. The Euclidean distances use
    `w = -2 g`, `b = ||g||^2`; the cosine distance `w = -g / ||g||`, `b = 0`.

    Attributes:
        gallery: `rows -> (weights, bias)`, float32 `(m, k)` weights and
            `(m,)` bias of `m` gallery rows.
        query: `rows -> (n, k)` float32 query rows; `None` keeps them as
            they are (then `k = dim`).
        centered: the distance does not change when queries and gallery are
            shifted by the same vector; search then subtracts the gallery
            mean from both first, which loses less to cancellation.

    Examples:
        The Euclidean form: `||g||^2 - 2 q.g` is `||q - g||^2 - ||q||^2`.

        >>> import numpy as np
        >>> form = MatmulForm(
        ...     gallery=lambda g: (-2.0 * g, np.sum(np.square(g), axis=1)),
        ...     centered=True,
        ... )
        >>> weights, bias = form.gallery(np.array([[3.0, 4.0], [1.0, 0.0]]))
        >>> (np.array([[1.0, 1.0]]) @ weights.T + bias).tolist()
        [[11.0, -1.0]]
    """

    gallery: Callable[[np.ndarray], tuple[np.ndarray, np.ndarray]]
    query: Callable[[np.ndarray], np.ndarray] | None = None
    centered: bool = False


@dataclasses.dataclass(frozen=True)
class FaissForm:
    """How a faiss index searches a distance (for candidates, re-ranked exactly).

    Attributes:
        metric: the name of the faiss metric after `METRIC_`: `"L2"`,
            `"INNER_PRODUCT"`, `"L1"`, `"Linf"`, ...; faiss' ordering by it
            must be the distance's.
        rows: `rows -> rows` applied to gallery and queries before faiss
            sees them (unit rows for the cosine distance); `None` for none.

    Examples:
        The cosine distance's form: inner products of unit rows.

        >>> import numpy as np
        >>> form = FaissForm("INNER_PRODUCT", rows=unit_rows)
        >>> form.rows(np.array([[3.0, 4.0]])).tolist()
        [[0.6, 0.8]]
    """

    metric: str
    rows: Callable[[np.ndarray], np.ndarray] | None = None


@dataclasses.dataclass(frozen=True)
class GramForm:
    """How the exact form follows from float64 inner products of prepared rows.

    With `p = rows(x)` for queries and gallery alike, the distance of `a`
    and `b` is `finish(p_a . p_b, ||p_a||^2, ||p_b||^2)`: one matrix product
    measures many pairs, the rows being prepared once (normalised, for the
    cosine distance) instead of once per pair. Where the prepared rows are
    nearly equal (`||p_a - p_b||^2` within cancellation of the norms), the
    product loses precision; search measures those pairs again with
    `exact_form`.

    Attributes:
        rows: `(n, dim)` float64 rows -> `(n, dim')` float64 prepared rows.
        finish: `(products, squares_a, squares_b)` -> distances, float64,
            elementwise.

    Examples:
        The squared Euclidean distance: `||a||^2 + ||b||^2 - 2 a.b`.

        >>> import numpy as np
        >>> form = GramForm(rows=lambda x: x, finish=lambda p, a, b: a + b - 2 * p)
        >>> a, b = np.array([[1.0, 2.0]]), np.array([[4.0, 6.0]])
        >>> form.finish(a @ b.T, np.sum(a * a, axis=1)[:, None], np.sum(b * b, axis=1))
        array([[25.]])
    """

    rows: Callable[[np.ndarray], np.ndarray]
    finish: Callable[[np.ndarray, np.ndarray, np.ndarray], np.ndarray]


#: The forms a user of a distance can require (see `Distance.missing`).
FORMS = ("paired", "pairwise", "exact", "search", "faiss")


class Distance:
    """A distance between embeddings: every form the package uses of it.

    Subclass it to add a distance: set `name` and implement the forms its
    users need; `register` it to use it by name (and to save objects that
    refer to it). Smaller always means more similar. Every form must agree:

    - `paired_form(a, b, keepdims)`: `keras.ops`, row `i` of `a` against
      row `i` of `b`, over the last axis (losses such as `TripletLoss`,
      `TripletAccuracy`, the `PairDistance` layer);
    - `pairwise_form(x, y)`: `keras.ops`, the `(n, m)` distances between
      the rows of two float 2-D tensors (`OnlineTripletLoss`,
      `pairwise_distances`, and exact search without a matrix-product
      form);
    - `exact_form(a, b)`: NumPy in float64, broadcasting over the leading
      axes (search re-ranks its candidates with it; `one_shot_accuracy`,
      `Verifier`);
    - `matmul_form`: a `MatmulForm` if a matrix product orders the gallery
      as the distance does, else `None`: search then scores tiles with
      `pairwise_form` (as for `"manhattan"`);
    - `faiss_form`: a `FaissForm` if faiss has the metric, else `None`
      (the faiss engines refuse the distance);
    - `gram_form`: a `GramForm` if the exact form follows from inner
      products of prepared rows, else `None` (search then measures its
      candidates with `exact_form` alone, which is slower for many wide
      candidates);
    - `prototype_rows(x)`: where class means are taken (`one_shot_accuracy`
      with several shots); the rows themselves by default.

    A user that needs a form the distance lacks refuses it at construction
    with a `ValueError` naming the missing form. Two distances are equal when
    they are of the same class and name.

    Examples:
        >>> import numpy as np
        >>> from keras import ops
        >>> from keras_siamese import distances
        >>> class Chebyshev(distances.Distance):
        ...     name = "chebyshev"
        ...
        ...     def paired_form(self, a, b, keepdims):
        ...         return ops.max(ops.abs(a - b), axis=-1, keepdims=keepdims)
        ...
        ...     def pairwise_form(self, x, y):
        ...         return ops.max(ops.abs(x[:, None, :] - y[None, :, :]), axis=-1)
        ...
        ...     def exact_form(self, a, b):
        ...         return np.max(np.abs(a - b), axis=-1)
        >>> chebyshev = Chebyshev()
        >>> float(chebyshev.paired(np.array([[0.0, 0.0]]), np.array([[8.0, 1.0]]))[0])
        8.0
        >>> chebyshev.missing("search", "faiss")
        ['faiss']
    """

    name: str = ""
    #: Whether larger means more similar: never for a distance (the miners'
    #: `Similarity` objects are the measures for which it holds).
    inverted: bool = False
    matmul_form: MatmulForm | None = None
    faiss_form: FaissForm | None = None
    gram_form: GramForm | None = None

    # -- the forms a subclass implements ----------------------------------

    def paired_form(self, a: Any, b: Any, keepdims: bool) -> Any:
        """`d(a_i, b_i)` over the last axis of two float tensors of one shape."""
        raise NotImplementedError(_lacks(self, ["paired"], "paired"))

    def pairwise_form(self, x: Any, y: Any) -> Any:
        """`(n, m)` distances between the rows of float `(n, d)` and `(m, d)`."""
        raise NotImplementedError(_lacks(self, ["pairwise"], "pairwise"))

    def exact_form(self, a: np.ndarray, b: np.ndarray) -> np.ndarray:
        """`d(a, b)` over the last axis of broadcastable float64 arrays."""
        raise NotImplementedError(_lacks(self, ["exact"], "exact"))

    def prototype_rows(self, x: np.ndarray) -> np.ndarray:
        """The rows whose mean is a class prototype; `x` itself by default."""
        return x

    # -- what the package calls -------------------------------------------

    def paired(self, a: Any, b: Any, keepdims: bool = False) -> Any:
        """Distance between row `i` of `a` and row `i` of `b` (`keras.ops`).

        Raises:
            ValueError: if the shapes differ or the distance has no paired
                form.
        """
        a, b = _pair(a, b)
        return self.paired_form(a, b, keepdims)

    def pairwise(self, x: Any, y: Any | None = None) -> Any:
        """`(n, m)` distances between the rows of `x` and those of `y`.

        Without `y`, the rows of `x` against themselves, with an exact zero
        (and a zero gradient) on the diagonal.
        """
        return pairwise_distances(x, self, references=y)

    def exact(self, a: Any, b: Any) -> np.ndarray:
        """`d(a, b)` over the last axis (broadcast), in NumPy float64."""
        a = np.asarray(a, dtype=np.float64)
        b = np.asarray(b, dtype=np.float64)
        return self.exact_form(a, b)

    def missing(self, *forms: str) -> list[str]:
        """The forms among `forms` (see `FORMS`) this distance lacks.

        `"search"` (exact search) needs the exact form and a matrix-product
        or a pairwise form; `"faiss"` needs a `faiss_form`.

        Raises:
            ValueError: for a name not in `FORMS`.
        """
        lacking = []
        for form in forms:
            if form not in FORMS:
                raise ValueError(f"Unknown distance form {form!r}; use one of {FORMS}.")
            if form == "search":
                has = self._has("exact") and (
                    self.matmul_form is not None or self._has("pairwise")
                )
            elif form == "faiss":
                has = self.faiss_form is not None
            else:
                has = self._has(form)
            if not has:
                lacking.append(form)
        return lacking

    def _has(self, form: str) -> bool:
        method = f"{form}_form"
        return getattr(type(self), method) is not getattr(Distance, method)

    def _pairwise_matrix(self, x: Any, y: Any, zero_diagonal: bool) -> Any:
        result = self.pairwise_form(x, y)
        if zero_diagonal:
            result = ops.where(_diagonal(x), 0.0, result)
        return result

    def __eq__(self, other: object) -> bool:
        if not isinstance(other, Distance):
            return NotImplemented
        return type(self) is type(other) and self.name == other.name

    def __hash__(self) -> int:
        return hash((type(self), self.name))

    def __repr__(self) -> str:
        return f"<Distance {self.name!r} ({type(self).__name__})>"


_FORM_HELP = {
    "paired": "`paired_form` (the keras.ops distance of paired rows)",
    "pairwise": "`pairwise_form` (the keras.ops all-pairs distances)",
    "exact": "`exact_form` (the NumPy float64 distance)",
    "search": (
        "`exact_form` (the NumPy float64 distance) and a `matmul_form` or a "
        "`pairwise_form`"
    ),
    "faiss": "`faiss_form` (a faiss metric)",
}


def _lacks(distance: Distance, lacking: list[str], user: str) -> str:
    needs = "; ".join(_FORM_HELP[form] for form in lacking)
    return (
        f"{user} cannot use distance {distance.name!r} "
        f"({type(distance).__name__}): it lacks {needs}."
    )


def _diagonal(x: Any) -> Any:
    indices = ops.arange(ops.shape(x)[0])
    return ops.expand_dims(indices, 1) == ops.expand_dims(indices, 0)


class _Builtin(Distance):
    """A built-in distance: its forms as functions."""

    def __init__(
        self,
        name: str,
        paired_fn: Callable[..., Any],
        pairwise_fn: Callable[[Any, Any], Any],
        exact_fn: Callable[[np.ndarray, np.ndarray], np.ndarray],
        matmul_form: MatmulForm | None,
        faiss_form: FaissForm,
        prototype_fn: Callable[[np.ndarray], np.ndarray] | None = None,
        root: bool = False,
        gram_form: GramForm | None = None,
    ) -> None:
        self.name = name
        self.gram_form = gram_form
        self._paired_fn = paired_fn
        self._pairwise_fn = pairwise_fn
        self._exact_fn = exact_fn
        self.matmul_form = matmul_form
        self.faiss_form = faiss_form
        self._prototype_fn = prototype_fn
        # The all-pairs form gives squares; the root is taken after the
        # diagonal is zeroed, so that its gradient there is zero, not NaN.
        self._root = root

    def paired(self, a: Any, b: Any, keepdims: bool = False) -> Any:
        # The functions validate their inputs themselves.
        return self._paired_fn(a, b, keepdims=keepdims)

    def paired_form(self, a: Any, b: Any, keepdims: bool) -> Any:
        return self._paired_fn(a, b, keepdims=keepdims)

    def pairwise_form(self, x: Any, y: Any) -> Any:
        result = self._pairwise_fn(x, y)
        return safe_sqrt(result) if self._root else result

    def _pairwise_matrix(self, x: Any, y: Any, zero_diagonal: bool) -> Any:
        result = self._pairwise_fn(x, y)
        if zero_diagonal:
            result = ops.where(_diagonal(x), 0.0, result)
        return safe_sqrt(result) if self._root else result

    def exact_form(self, a: np.ndarray, b: np.ndarray) -> np.ndarray:
        return self._exact_fn(a, b)

    def prototype_rows(self, x: np.ndarray) -> np.ndarray:
        return x if self._prototype_fn is None else self._prototype_fn(x)


def _squared_euclidean(a: Any, b: Any, keepdims: bool = True) -> Any:
    return euclidean_distance(a, b, squared=True, keepdims=keepdims)


def _exact_squares(a: np.ndarray, b: np.ndarray) -> np.ndarray:
    return np.sum(np.square(a - b), axis=-1)


def _exact_euclidean(a: np.ndarray, b: np.ndarray) -> np.ndarray:
    return np.sqrt(_exact_squares(a, b))


def _exact_manhattan(a: np.ndarray, b: np.ndarray) -> np.ndarray:
    return np.sum(np.abs(a - b), axis=-1)


def _exact_cosine(a: np.ndarray, b: np.ndarray) -> np.ndarray:
    """`1 - cos` as half the squared distance between the unit vectors.

    That keeps its precision near 0; zero (or near-zero) vectors, which
    normalise to no unit vector, fall back to `1 - u.v` as in the
    `keras.ops` form.
    """
    u, v = unit_rows(a), unit_rows(b)
    half_chord = 0.5 * np.sum(np.square(u - v), axis=-1)
    degenerate = (np.sum(np.square(u), axis=-1) < 0.5) | (
        np.sum(np.square(v), axis=-1) < 0.5
    )
    if np.any(degenerate):
        dot = 1.0 - np.sum(u * v, axis=-1)
        half_chord = np.where(degenerate, dot, half_chord)
    return np.clip(half_chord, 0.0, 2.0)


def _euclidean_weights(rows: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
    # ||q - g||^2 - ||q||^2 = ||g||^2 - 2 q.g: the query's own term is
    # the same along a row of scores.
    return -2.0 * rows, np.sum(np.square(rows), axis=1)


def _unit_float32(rows: np.ndarray) -> np.ndarray:
    return unit_rows(rows).astype(np.float32)


def _cosine_weights(rows: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
    return -_unit_float32(rows), np.zeros(len(rows), dtype=np.float32)


_EUCLIDEAN_SEARCH = MatmulForm(gallery=_euclidean_weights, centered=True)


def _gram_squares(
    products: np.ndarray, squares_a: np.ndarray, squares_b: np.ndarray
) -> np.ndarray:
    return np.maximum(squares_a + squares_b - 2.0 * products, 0.0)


def _gram_euclidean(
    products: np.ndarray, squares_a: np.ndarray, squares_b: np.ndarray
) -> np.ndarray:
    return np.sqrt(_gram_squares(products, squares_a, squares_b))


def _gram_cosine(
    products: np.ndarray, squares_a: np.ndarray, squares_b: np.ndarray
) -> np.ndarray:
    # `1 - u.v` of the unit rows: the exact form's value, whose near-zero
    # pairs search measures again.
    del squares_a, squares_b
    return np.clip(1.0 - products, 0.0, 2.0)


def _float64_rows(x: np.ndarray) -> np.ndarray:
    return np.asarray(x, dtype=np.float64)


_DISTANCES: dict[str, Distance] = {
    "euclidean": _Builtin(
        "euclidean",
        euclidean_distance,
        _pairwise_euclidean_squares,
        _exact_euclidean,
        _EUCLIDEAN_SEARCH,
        FaissForm("L2"),
        root=True,
        gram_form=GramForm(_float64_rows, _gram_euclidean),
    ),
    "squared_euclidean": _Builtin(
        "squared_euclidean",
        _squared_euclidean,
        _pairwise_euclidean_squares,
        _exact_squares,
        _EUCLIDEAN_SEARCH,
        FaissForm("L2"),
        gram_form=GramForm(_float64_rows, _gram_squares),
    ),
    "cosine": _Builtin(
        "cosine",
        cosine_distance,
        _pairwise_cosine,
        _exact_cosine,
        MatmulForm(gallery=_cosine_weights, query=_unit_float32),
        FaissForm("INNER_PRODUCT", rows=unit_rows),
        prototype_fn=unit_rows,
        gram_form=GramForm(unit_rows, _gram_cosine),
    ),
    "manhattan": _Builtin(
        "manhattan",
        manhattan_distance,
        _pairwise_manhattan,
        _exact_manhattan,
        None,
        FaissForm("L1"),
    ),
}

#: The built-in names `get` accepts, in the order the documentation lists them.
DISTANCES = tuple(_DISTANCES)


def register(distance: Distance, *, override: bool = False) -> Distance:
    """Make a distance available by its name, everywhere a name is accepted.

    This is the one place a new distance is added: a registered `Distance`
    can be named in any `distance=` argument, and the objects that refer to
    it (losses, metrics, layers, a saved `EmbeddingIndex`) can be saved and
    loaded by that name (register it before loading).

    Args:
        distance: the `Distance` instance.
        override: replace a registered distance of the same name (the
            built-in ones cannot be replaced).

    Returns:
        The registered distance: `distance`, or the one already registered
        if it is equal (same class and name).

    Raises:
        TypeError: if `distance` is not a `Distance` instance or has no name.
        ValueError: if the name is taken and `override` is false, or is a
            built-in one.

    Examples:
        >>> import numpy as np
        >>> from keras import ops
        >>> from keras_siamese import distances
        >>> class Chebyshev(distances.Distance):
        ...     name = "chebyshev_example"
        ...
        ...     def paired_form(self, a, b, keepdims):
        ...         return ops.max(ops.abs(a - b), axis=-1, keepdims=keepdims)
        >>> _ = distances.register(Chebyshev())
        >>> float(distances.paired_distances([[0.0, 0.0]], [[8.0, 1.0]], "chebyshev_example")[0])
        8.0
    """
    distance = _check_instance(distance, "distance")
    name = distance.name
    if name in DISTANCES and distance is not _DISTANCES[name]:
        raise ValueError(f"The built-in distance {name!r} cannot be replaced.")
    registered = _DISTANCES.get(name)
    if registered is not None and registered == distance:
        return registered
    if registered is not None and not override:
        raise ValueError(
            f"A distance named {name!r} is already registered; pass "
            "`override=True` to replace it."
        )
    _DISTANCES[name] = distance
    return distance


def _check_instance(distance: Any, argument: str) -> Distance:
    if isinstance(distance, type) and issubclass(distance, Distance):
        raise TypeError(
            f"`{argument}` must be a Distance instance; got the class "
            f"{distance.__name__} (call it: {distance.__name__}())."
        )
    if not isinstance(distance, Distance):
        raise TypeError(f"`{argument}` must be a Distance; got {distance!r}.")
    if not isinstance(distance.name, str) or not distance.name:
        raise TypeError(
            f"A Distance needs a non-empty string `name`; {type(distance).__name__} "
            f"has {distance.name!r}."
        )
    return distance


def get(
    identifier: str | Distance,
    argument: str = "distance",
    *,
    needs: tuple[str, ...] = (),
    user: str | None = None,
) -> Distance:
    """Look up a distance by name, or check a `Distance` object.

    Args:
        identifier: a registered name (`"euclidean"`, `"squared_euclidean"`,
            `"cosine"`, `"manhattan"`, or one given to `register`), or a
            `Distance` (returned as it is, registered or not).
        argument: the name of the argument being resolved, for the error
            message.
        needs: forms the caller needs (see `FORMS`).
        user: who needs them, for the error message.

    Returns:
        The `Distance`.

    Raises:
        TypeError: if `identifier` is neither a string nor a `Distance`.
        ValueError: if the name is unknown, or the distance lacks one of
            `needs`.

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
    if isinstance(identifier, str):
        if identifier not in _DISTANCES:
            raise ValueError(
                f"`{argument}` must be one of {tuple(_DISTANCES)} or a Distance; "
                f"got {identifier!r} (a user-defined distance is known by name "
                "once `keras_siamese.distances.register` has been called on it)."
            )
        distance = _DISTANCES[identifier]
    elif isinstance(identifier, Distance) or isinstance(identifier, type):
        distance = _check_instance(identifier, argument)
    else:
        raise TypeError(
            f"`{argument}` must be one of {tuple(_DISTANCES)} or a Distance; got "
            f"{identifier!r}."
        )
    lacking = distance.missing(*needs)
    if lacking:
        raise ValueError(_lacks(distance, lacking, user or f"`{argument}`"))
    return distance


def check_distance(distance: str | Distance, argument: str = "distance") -> str:
    """The name of a valid distance (see `get`)."""
    return get(distance, argument).name


def serialize(distance: Distance, owner: str = "This object") -> str:
    """The name that saves `distance`; it must be registered under it.

    Raises:
        ValueError: if `get(distance.name)` is not this distance, so that the
            saved name would load another distance or none.
    """
    registered = _DISTANCES.get(distance.name)
    if registered is None or registered != distance:
        raise ValueError(
            f"{owner} uses the distance {distance.name!r} "
            f"({type(distance).__name__}), which is not registered under that "
            "name, so it cannot be saved by name: call "
            "`keras_siamese.distances.register(...)` on it first."
        )
    return distance.name


def paired_distances(a: Any, b: Any, distance: str | Distance = "euclidean") -> Any:
    """Distance between row `i` of `a` and row `i` of `b`, shape `(batch,)`.

    Args:
        a: embeddings, shape `(batch, dim)`.
        b: embeddings, shape `(batch, dim)`.
        distance: `"euclidean"` (default), `"squared_euclidean"`, `"cosine"`
            or `"manhattan"`.

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
    return get(distance, needs=("paired",), user="paired_distances").paired(
        a, b, keepdims=False
    )


def pairwise_distances(
    embeddings: Any,
    distance: str | Distance = "euclidean",
    *,
    references: Any | None = None,
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
    spec = get(distance, needs=("pairwise",), user="pairwise_distances")
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
    return spec._pairwise_matrix(x, y, zero_diagonal=references is None)


def _rows(x: Any, argument: str) -> Any:
    x = as_float(x)
    if len(x.shape) != 2:
        raise ValueError(
            f"`{argument}` must be a 2-D tensor (batch, dim); got shape "
            f"{tuple(x.shape)}."
        )
    return x
