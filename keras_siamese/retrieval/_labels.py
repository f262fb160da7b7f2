"""Class labels of several sets encoded as one set of integer codes."""

from __future__ import annotations

import numpy as np

from keras_siamese.data.sampling import encode_classes


def combine(*arrays: np.ndarray) -> np.ndarray:
    """Concatenate label arrays without casting one kind into another.

    NumPy would turn `[1, 2]` and `["a"]` into the strings `"1", "2", "a"`;
    labels of different kinds are joined as objects instead.
    """
    arrays = tuple(np.asarray(array).reshape(-1) for array in arrays)
    kinds = {_kind(array) for array in arrays if array.size}
    if len(kinds) > 1:
        arrays = tuple(array.astype(object) for array in arrays)
    return np.concatenate(arrays) if arrays else np.zeros(0, dtype=np.int64)


def _kind(array: np.ndarray) -> str:
    kind = array.dtype.kind
    if kind in "iub":
        return "int"
    if kind in "US":
        return "str"
    if kind == "f":
        return "float"
    return "object"


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
