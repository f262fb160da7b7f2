"""Argument and shape checks shared by every module of the package.

Each check names the argument it refuses and says what was expected, so that
bad input fails at construction or at the first call with a `TypeError` or a
`ValueError`, never later with a NaN or a backend's own error.
"""

from __future__ import annotations

import math
import numbers
import warnings
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


def renamed_argument(
    new_value: Any, old_value: Any, new: str, old: str, default: Any, owner: str
) -> Any:
    """Resolve an argument renamed from `old` to `new`, warning on the old name.

    Args:
        new_value: what was passed as `new` (its default if not passed).
        old_value: what was passed as `old`, or `None` if it was not passed.
        new: the new keyword.
        old: the deprecated keyword.
        default: the default value of `new`.
        owner: the function or class that takes them, for the message.

    Returns:
        The value to use.

    Raises:
        TypeError: if both keywords were given different values.
    """
    if old_value is None:
        return new_value
    warnings.warn(
        f"`{owner}({old}=...)` is deprecated and will be removed in a future "
        f"release; use `{new}=` instead.",
        DeprecationWarning,
        stacklevel=3,
    )
    if new_value != default and new_value != old_value:
        raise TypeError(
            f"`{owner}` got both `{new}={new_value!r}` and the deprecated "
            f"`{old}={old_value!r}`; pass only `{new}`."
        )
    return old_value


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
