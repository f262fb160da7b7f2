"""Argument and shape checks shared by every module of the package.

Each check names the argument it refuses and says what was expected, so that
bad input fails at construction or at the first call with a `TypeError` or a
`ValueError`, never later with a NaN or a backend's own error.
"""

from __future__ import annotations

import math
import numbers
from collections.abc import Sequence
from typing import Any

import numpy as np
from keras import ops

MINING_MODES = ("batch_hard", "batch_all", "semi_hard")


def check_positive_int(value: Any, argument: str) -> int:
    """Return `value` as an int after checking it is an integer `>= 1`.

    Raises:
        TypeError: if `value` is not an integer (`bool` included).
        ValueError: if `value < 1`.
    """
    if isinstance(value, bool) or not isinstance(value, numbers.Integral):
        raise TypeError(f"`{argument}` must be a positive integer; got {value!r}.")
    if value < 1:
        raise ValueError(f"`{argument}` must be a positive integer; got {value}.")
    return int(value)


def check_float(
    value: Any,
    argument: str,
    minimum: float | None = None,
    inclusive: bool = True,
    maximum: float | None = None,
) -> float:
    """Return `value` as a finite float, optionally bounded below and above.

    Args:
        value: the number to check.
        argument: its name, for the error message.
        minimum: the smallest allowed value, if any.
        inclusive: whether `minimum` itself is allowed.
        maximum: the largest allowed value (inclusive), if any.

    Raises:
        TypeError: if `value` is not a real number (`bool` included).
        ValueError: if `value` is NaN, infinite or out of bounds.
    """
    if isinstance(value, bool) or not isinstance(value, numbers.Real):
        raise TypeError(f"`{argument}` must be a number; got {value!r}.")
    value = float(value)
    bounds = []
    if minimum is not None:
        bounds.append(f"{'>=' if inclusive else '>'} {minimum:g}")
    if maximum is not None:
        bounds.append(f"<= {maximum:g}")
    expected = "a finite number" + (" " + " and ".join(bounds) if bounds else "")
    below = minimum is not None and (
        value < minimum or (not inclusive and value == minimum)
    )
    above = maximum is not None and value > maximum
    if not math.isfinite(value) or below or above:
        raise ValueError(f"`{argument}` must be {expected}; got {value!r}.")
    return value


def check_margin(margin: Any, argument: str = "margin") -> float:
    """A finite margin `>= 0`."""
    return check_float(margin, argument, minimum=0.0)


def check_threshold(threshold: Any, argument: str = "threshold") -> float:
    """A finite distance threshold."""
    return check_float(threshold, argument)


def check_similar_label(value: Any, argument: str = "similar_label") -> int:
    """The pair label that means "similar": the integer 1 or 0.

    Raises:
        TypeError: if `value` is not an integer (`bool` included).
        ValueError: if it is neither 1 nor 0.
    """
    if isinstance(value, bool) or not isinstance(value, numbers.Integral):
        raise TypeError(f"`{argument}` must be the integer 1 or 0; got {value!r}.")
    if value not in (0, 1):
        raise ValueError(f"`{argument}` must be 1 or 0; got {value}.")
    return int(value)


def check_bool(value: Any, argument: str) -> bool:
    """`value` itself, after checking it is `True` or `False`."""
    if not isinstance(value, bool):
        raise TypeError(f"`{argument}` must be True or False; got {value!r}.")
    return value


def check_choice(value: Any, choices: Sequence[str], argument: str) -> str:
    """`value` itself, after checking it is one of the strings `choices`."""
    if not isinstance(value, str) or value not in choices:
        raise ValueError(
            f"`{argument}` must be one of {tuple(choices)}; got {value!r}."
        )
    return value


def check_mining(mining: Any) -> str:
    """One of `MINING_MODES`."""
    return check_choice(mining, MINING_MODES, "mining")


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


def shapes_compatible(shape_a: Sequence[Any], shape_b: Sequence[Any]) -> bool:
    """Whether two shapes have the same rank and agree where both are known."""
    if len(shape_a) != len(shape_b):
        return False
    return all(a is None or b is None or a == b for a, b in zip(shape_a, shape_b))


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
    """Refuse two tensors whose known batch sizes differ."""
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


def check_inputs_given(inputs: Any, layer: str) -> None:
    """Refuse a layer's `inputs` that are `None` or hold `None` at the top level.

    Called before Keras' `Layer.__call__`, which (up to Keras 3.12) fails on
    such an input with an `AttributeError` about `shape` before the layer's
    own checks can name the argument.
    """
    if inputs is None:
        raise TypeError(f"{layer} expects tensors as `inputs`; got None.")
    if isinstance(inputs, (list, tuple)):
        missing = [index for index, x in enumerate(inputs) if x is None]
        if missing:
            raise TypeError(
                f"{layer} expects a tensor for every item of `inputs`; got None "
                f"at position(s) {missing}."
            )


def check_class_labels(labels: Any, num_classes: int, argument: str = "labels") -> None:
    """Refuse NumPy or Python labels that are not integers in `[0, num_classes)`.

    Tensors are left alone: reading them would stop a compiled training step
    (or synchronise with the device); the proxy losses turn a label outside
    the classes into a NaN loss there instead.
    """
    if hasattr(labels, "shape") and not isinstance(labels, np.ndarray):
        return
    values = np.asarray(labels)
    if values.dtype.kind not in "biuf":
        return
    bad = (values < 0) | (values >= num_classes) | (values != np.floor(values))
    if np.any(bad):
        raise ValueError(
            f"`{argument}` must be integer class indices in [0, {num_classes}) "
            f"for {num_classes} classes; got {values[bad].ravel()[:5].tolist()}."
        )


def check_class_scores(labels: Any, scores: Any, argument: str = "y_pred") -> tuple:
    """Labels `(batch,)` and per-class scores `(batch, num_classes)`, checked.

    Returns:
        The labels as a vector and the scores, unchanged otherwise.

    Raises:
        ValueError: if `scores` is not 2-D, the labels not `(batch,)` or
            `(batch, 1)`, or the batch sizes differ.
    """
    if len(scores.shape) != 2:
        raise ValueError(
            f"`{argument}` must have shape (batch, num_classes), one score per "
            f"class (for example the output of CosineProxies); got shape "
            f"{tuple(scores.shape)}."
        )
    labels = as_vector(ops.convert_to_tensor(labels), "labels")
    check_same_batch(labels, scores, "labels", argument)
    return labels, scores


def check_embeddings(
    x: Any, argument: str, dim: int | None = None, allow_empty: bool = False
) -> np.ndarray:
    """`x` as a C-contiguous float32 NumPy array of shape `(n, dim)`.

    Args:
        x: embeddings, a 2-D array-like or tensor of real numbers.
        argument: its name, for the error message.
        dim: the embedding size `x` must have, if known.
        allow_empty: whether `n = 0` rows are allowed.

    Raises:
        TypeError: for strings, complex numbers and other non-real values.
        ValueError: if `x` is not 2-D, has no rows (unless allowed), has the
            wrong embedding size, or holds NaN or infinite values.
    """
    if hasattr(x, "numpy") and not isinstance(x, np.ndarray):
        x = ops.convert_to_numpy(x)
    array = np.asarray(x)
    check_real(array, argument)
    if array.ndim != 2:
        raise ValueError(
            f"`{argument}` must be a 2-D array (n, dim); got shape {array.shape}."
        )
    if array.shape[0] == 0 and not allow_empty:
        raise ValueError(f"`{argument}` has no rows; got shape {array.shape}.")
    if dim is not None and array.shape[1] != dim:
        raise ValueError(
            f"`{argument}` must have embedding size {dim} (the size already "
            f"indexed); got shape {array.shape}."
        )
    array = np.ascontiguousarray(array, dtype=np.float32)
    finite = np.isfinite(array)
    if not finite.all():
        row = int(np.argwhere(~finite)[0, 0])
        raise ValueError(
            f"`{argument}` must hold finite numbers; row {row} has NaN or "
            "infinite values (or values beyond the float32 range)."
        )
    return array


def truncate_embeddings(
    embeddings: np.ndarray, keep: int | None, message: str
) -> np.ndarray:
    """The first `keep` columns of checked `(n, dim)` embeddings, C-contiguous.

    The one check of a `truncate_dim` (Matryoshka prefix) against the
    embeddings it is applied to.

    Args:
        embeddings: float32 `(n, dim)`, as `check_embeddings` returns them.
        keep: the columns to keep (a `truncate_dim`), or `None` for all.
        message: the error where `dim < keep`, a format string that may use
            `{dim}` and `{keep}`.

    Raises:
        ValueError: if `dim < keep`.

    Examples:
        >>> truncate_embeddings(np.ones((2, 3), "float32"), 2, "{dim} < {keep}").shape
        (2, 2)
    """
    if keep is None:
        return embeddings
    if embeddings.shape[1] < keep:
        raise ValueError(message.format(dim=embeddings.shape[1], keep=keep))
    return np.ascontiguousarray(embeddings[:, :keep])


_INT64 = np.iinfo(np.int64)
_UINT64 = np.iinfo(np.uint64)


def _label_kind(value: Any) -> str:
    """The kind of one label: `int`, `float`, `str`, `bytes` or `object`."""
    if isinstance(value, (bool, np.bool_, numbers.Integral)):
        return "int"
    if isinstance(value, (float, np.floating)):
        return "float"
    if isinstance(value, str):
        return "str"
    if isinstance(value, bytes):
        return "bytes"
    return "object"


def integer_labels(values: Sequence[int], argument: str = "labels") -> np.ndarray:
    """Integers as int64, or as uint64 where one of them needs it.

    Raises:
        ValueError: if a value fits neither int64 nor uint64, or the values
            span negative numbers and numbers of at least `2**63`, which no
            one integer dtype holds.
    """
    values = [int(value) for value in values]
    low, high = min(values, default=0), max(values, default=0)
    if low >= _INT64.min and high <= _INT64.max:
        return np.asarray(values, dtype=np.int64).reshape(-1)
    if low >= 0 and high <= _UINT64.max:
        return np.asarray(values, dtype=np.uint64).reshape(-1)
    outside = [v for v in values if not _INT64.min <= v <= _UINT64.max]
    if outside:
        raise ValueError(
            f"`{argument}` must be integers within the int64 or uint64 range; "
            f"got {outside[0]}."
        )
    raise ValueError(
        f"`{argument}` mixes negative integers ({low}) with integers of at least "
        f"2**63 ({high}): no integer dtype holds both, so they cannot be kept "
        "exactly. Map the labels to one range (or to strings) first."
    )


def _labels_of_values(values: list, argument: str) -> np.ndarray:
    """Python label values as an array that keeps every value as it is."""
    for value in values:
        try:
            hash(value)
        except TypeError:
            raise TypeError(
                f"`{argument}` must hold hashable labels; got {value!r}."
            ) from None
    kinds = {_label_kind(value) for value in values}
    if kinds <= {"int"}:
        return integer_labels(values, argument)
    if kinds == {"str"}:
        return np.asarray(values, dtype=str).reshape(-1)
    if kinds == {"bytes"}:
        return np.asarray(values, dtype=bytes).reshape(-1).astype(str)
    if kinds <= {"int", "float"}:
        inexact = [
            value
            for value in values
            if _label_kind(value) == "int" and float(value) != int(value)
        ]
        if inexact:
            raise ValueError(
                f"`{argument}` mixes floating-point labels with the integer "
                f"{int(inexact[0])}, which float64 cannot hold exactly (it would "
                "merge with its neighbours). Use integer labels only."
            )
        return _float_labels(np.asarray(values, dtype=np.float64), argument)
    if kinds == {"object"}:
        result = np.empty(len(values), dtype=object)
        result[:] = values
        return result
    named = sorted(kinds - {"object"}) + (
        ["other objects"] if "object" in kinds else []
    )
    raise TypeError(
        f"`{argument}` mixes labels of different kinds ({', '.join(named)}); "
        "NumPy would turn them into one kind (say 1 into '1') and merge distinct "
        "labels. Give labels of one kind."
    )


def _float_labels(array: np.ndarray, argument: str) -> np.ndarray:
    if not np.isfinite(array).all():
        raise ValueError(f"`{argument}` must not hold NaN or infinite labels.")
    return array.astype(np.float64)


def _sequence_labels(labels: Any) -> np.ndarray:
    """A list of labels as an array, its integers exactly, others as objects.

    NumPy's own conversion of a list turns `[1, "a"]` into strings and
    `[2**63, -1]` into floats; it is kept only where it cannot have changed a
    label: integers (NumPy gives an integer dtype only when it holds every
    label exactly), or labels that all are strings, or all floats.
    """
    try:
        array = np.asarray(labels)
    except (TypeError, ValueError, OverflowError):
        array = None
    if array is not None:
        code = array.dtype.kind
        if code in "iub":
            return array
        one_kind = {"U": str, "f": (float, np.floating)}.get(code)
        if (
            one_kind is not None
            and array.ndim == 1
            and all(isinstance(label, one_kind) for label in labels)
        ):
            return array
    return np.asarray(labels, dtype=object)


def check_labels(labels: Any, count: int, argument: str = "labels") -> np.ndarray:
    """`labels` as a 1-D NumPy array with one hashable label per row, kept exactly.

    Integer labels become int64, or uint64 where a value is at least `2**63`;
    strings a unicode array; floating-point labels float64; other hashable
    labels an object array. No label changes value: labels of different
    kinds (`1` and `"a"`), which NumPy would turn into one kind, are refused,
    as are integers outside the int64 and uint64 ranges.

    Args:
        labels: one label per row.
        count: the number of rows the labels belong to.
        argument: its name, for the error message.

    Raises:
        TypeError: if `labels` is a single string or not array-like, holds
            complex or unhashable values, or mixes kinds (integers with
            strings, say).
        ValueError: if `labels` is not 1-D, its length differs from `count`,
            it holds NaN, or an integer fits neither int64 nor uint64 (or
            the integers span both signs beyond int64).
    """
    if isinstance(labels, (str, bytes)) or labels is None:
        raise TypeError(f"`{argument}` must be a 1-D array of labels; got {labels!r}.")
    if hasattr(labels, "numpy") and not isinstance(labels, np.ndarray):
        labels = ops.convert_to_numpy(labels)
    array = labels if isinstance(labels, np.ndarray) else _sequence_labels(labels)
    if array.ndim == 2 and array.shape[1] == 1:
        array = array[:, 0]
    if array.ndim != 1:
        raise ValueError(
            f"`{argument}` must be 1-D, one label per row; got shape {array.shape}."
        )
    if len(array) != count:
        raise ValueError(
            f"`{argument}` must hold one label per row: {count} rows but "
            f"{len(array)} labels."
        )
    kind = array.dtype.kind
    if kind in "ib":
        return array.astype(np.int64)
    if kind == "u":
        if array.size and array.max() > _INT64.max:
            return array.astype(np.uint64)
        return array.astype(np.int64)
    if kind == "U":
        return array
    if kind == "S":
        return array.astype(str)
    if kind == "f":
        return _float_labels(array, argument)
    if kind == "c":
        raise TypeError(f"`{argument}` must not be complex numbers.")
    values = array.tolist()
    if any(isinstance(value, complex) for value in values):
        raise TypeError(f"`{argument}` must not be complex numbers.")
    return _labels_of_values(values, argument)


def check_pair_distances(
    distances: Any, labels: Any, argument: str = "labels"
) -> tuple[np.ndarray, np.ndarray]:
    """Distances of pairs and their same/different labels, as NumPy vectors.

    Args:
        distances: one distance per pair.
        labels: one label per pair, true (or 1) for a same-class pair.
        argument: the name of `labels`, for the error messages.

    Returns:
        The distances as float64 and the labels as booleans, both flat.

    Raises:
        ValueError: if the two differ in length, are empty, a distance is
            not finite, or a label is a number other than 0 and 1 (NaN
            included).
        TypeError: if the labels are not booleans or numbers.
    """
    distances = np.asarray(distances, dtype=np.float64).reshape(-1)
    labels = np.asarray(labels).reshape(-1)
    if distances.shape != labels.shape:
        raise ValueError(
            f"`distances` and `{argument}` must hold one value per pair; got "
            f"{distances.size} distances and {labels.size} labels."
        )
    if distances.size == 0:
        raise ValueError("`distances` is empty.")
    if not np.all(np.isfinite(distances)):
        raise ValueError("`distances` must be finite.")
    if labels.dtype.kind not in "biuf":
        raise TypeError(
            f"`{argument}` must be booleans or 0/1 numbers; got dtype {labels.dtype}."
        )
    if labels.dtype.kind != "b":
        # 0/1 only: class ids, 2 or NaN thresholded at 0.5 would silently
        # turn into a same/different decision.
        binary = (labels == 0) | (labels == 1)
        if not binary.all():
            bad = labels[~binary][:5].tolist()
            raise ValueError(
                f"`{argument}` must be booleans or 0/1 numbers (1 for a "
                f"same-class pair); got {bad}. Compare class ids first, e.g. "
                "`labels_a == labels_b`."
            )
    return distances, labels.astype(bool)
