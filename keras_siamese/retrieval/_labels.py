"""Class labels of several sets encoded as one set of integer codes."""

from __future__ import annotations

import numpy as np

from keras_siamese._checks import integer_labels
from keras_siamese.data.sampling import encode_classes


def combine(*arrays: np.ndarray) -> np.ndarray:
    """Concatenate label arrays without changing any label's value.

    NumPy would turn `[1, 2]` and `["a"]` into the strings `"1", "2", "a"`,
    and int64 with uint64 into float64; integers are joined in the integer
    dtype that holds them all, and labels of different kinds (or integers
    no one dtype holds) as objects, which compare as the values they are.
    """
    arrays = tuple(np.asarray(array).reshape(-1) for array in arrays)
    kinds = {kind(array) for array in arrays if array.size}
    if kinds == {"int"} and len({array.dtype for array in arrays if array.size}) > 1:
        try:
            joined = np.concatenate([array.astype(object) for array in arrays])
            return integer_labels(joined.tolist())
        except ValueError:
            pass  # negative and >= 2**63: only Python ints hold both
        kinds.add("object")
    if len(kinds) > 1:
        arrays = tuple(array.astype(object) for array in arrays)
    return np.concatenate(arrays) if arrays else np.zeros(0, dtype=np.int64)


def kind(array: np.ndarray) -> str:
    """The kind of a label array: `int`, `str`, `float` or `object`."""
    code = array.dtype.kind
    if code in "iub":
        return "int"
    if code in "US":
        return "str"
    if code == "f":
        return "float"
    return "object"


def check_join(existing: np.ndarray | None, new: np.ndarray) -> None:
    """Refuse labels whose kind differs from the labels already held.

    Raises:
        TypeError: if `new` is of another kind than `existing` (integers
            after strings, say), which could only be kept as objects.
        ValueError: for integers that no one dtype holds together with
            `existing` (negative ones with ones of at least `2**63`).
    """
    if existing is None or not existing.size or not new.size:
        return
    held, given = kind(existing), kind(new)
    if held != given:
        raise TypeError(
            f"The index holds {held} labels; labels of another kind ({given}) "
            "cannot be added: 1 and '1' would be indistinguishable when saved. "
            f"Give {held} labels."
        )
    if held == "int" and existing.dtype != new.dtype:
        bounds = (existing.min(), existing.max(), new.min(), new.max())
        integer_labels([int(value) for value in bounds])


def encode(*arrays: np.ndarray) -> list[np.ndarray]:
    """Integer codes of the labels of several arrays, equal where labels are.

    Args:
        *arrays: 1-D label arrays.

    Returns:
        One int64 code array per input, with codes in `[0, classes)`.
    """
    _, codes = encode_classes(combine(*arrays))
    bounds = np.cumsum([0] + [np.asarray(array).size for array in arrays])
    return [codes[bounds[i] : bounds[i + 1]] for i in range(len(arrays))]
