"""Input checks, label indexing and vectorised index sampling for the datasets.

Everything that draws example indices lives here so that the pair, triplet
and class-balanced datasets share one tested implementation. Labels are
indexed once, at construction: `order` lists the example indices sorted by
class, and class `c` occupies `order[starts[c]:starts[c] + counts[c]]`. A
batch is then drawn with a handful of NumPy calls on arrays of the batch's
size, whatever the size of the data set, and only the chosen rows of `x` are
ever read.
"""

from __future__ import annotations

import math
import numbers
import operator
import os
from collections.abc import Sequence
from typing import Any

import numpy as np

# Label values shown in an error message before it says "and N more".
_MAX_NAMED = 10
# Up to this many classes, a batch's classes come from one permutation of all
# of them (cheapest for few classes); beyond, from `distinct_draws`, whose
# cost does not grow with the number of classes.
_PERMUTE_CLASSES_UP_TO = 256


def resolve_seed(seed: Any) -> int:
    """Return `seed` as a non-negative int, drawing a fresh one for `None`."""
    if seed is None:
        return int(np.random.SeedSequence().generate_state(1, np.uint64)[0])
    if isinstance(seed, bool) or not isinstance(seed, numbers.Integral):
        raise TypeError(f"`seed` must be None or a non-negative integer; got {seed!r}.")
    if seed < 0:
        raise ValueError(f"`seed` must be None or a non-negative integer; got {seed}.")
    return int(seed)


def _as_leaf(leaf: Any, path: str) -> np.ndarray:
    # NumPy arrays (np.memmap included) are kept as they are, so that nothing
    # copies them; other array-likes are converted once.
    if not isinstance(leaf, np.ndarray):
        leaf = np.asarray(leaf)
    if leaf.ndim == 0:
        raise ValueError(f"`{path}` must have a batch axis; got a scalar.")
    if leaf.dtype == object:
        raise TypeError(
            f"`{path}` must be a numeric array; got an array of Python objects."
        )
    return leaf


def normalize_x(x: Any) -> tuple[Any, int]:
    """Check `x` and return it with its number of examples.

    Args:
        x: a NumPy array (or `np.memmap`), or a tuple, list or dict of arrays
            for a multi-input encoder; every array has the examples on axis 0.

    Returns:
        `(x, num_examples)`: `x` with lists turned into tuples and non-NumPy
        leaves converted to arrays; NumPy arrays are never copied.

    Raises:
        TypeError: if `x` or one of its leaves is not array-like.
        ValueError: if `x` is empty or its arrays disagree on the number of
            examples.
    """
    if isinstance(x, dict):
        if not x:
            raise ValueError("`x` must not be an empty dict.")
        x = {key: _as_leaf(value, f"x[{key!r}]") for key, value in x.items()}
        leaves = list(x.values())
    elif isinstance(x, (tuple, list)):
        if not x:
            raise ValueError("`x` must not be an empty tuple or list.")
        x = tuple(_as_leaf(value, f"x[{i}]") for i, value in enumerate(x))
        leaves = list(x)
    else:
        if isinstance(x, (str, bytes)) or x is None:
            raise TypeError(
                "`x` must be a NumPy array or a tuple/dict of arrays; got "
                f"{type(x).__name__}."
            )
        x = _as_leaf(x, "x")
        leaves = [x]
    sizes = {len(leaf) for leaf in leaves}
    if len(sizes) != 1:
        raise ValueError(
            "All arrays in `x` must have the same number of examples (axis 0); "
            f"got {sorted(sizes)}."
        )
    return x, sizes.pop()


def normalize_paths(paths: Any) -> tuple[tuple[str, ...], int]:
    """Check a sequence of file paths and return it as a tuple of strings.

    Raises:
        TypeError: if `paths` is not a sequence of `str` or `os.PathLike`.
        ValueError: if it is empty.
    """
    if isinstance(paths, (str, bytes, os.PathLike)) or not hasattr(paths, "__len__"):
        raise TypeError(
            "With a `loader`, `x` must be a sequence of file paths; got "
            f"{type(paths).__name__}."
        )
    paths = np.asarray(paths, dtype=object).reshape(-1).tolist()
    if not paths:
        raise ValueError("`x` must not be an empty sequence of paths.")
    for path in paths:
        if not isinstance(path, (str, os.PathLike)):
            raise TypeError(
                "With a `loader`, `x` must be a sequence of file paths (str or "
                f"os.PathLike); got an element {path!r}."
            )
    return tuple(os.fspath(path) for path in paths), len(paths)


def load_files(paths: Sequence[str], indices: np.ndarray, loader: Any) -> np.ndarray:
    """`loader` applied to the paths of rows `indices`, stacked.

    Each distinct row is loaded once (a batch may repeat rows).

    Raises:
        ValueError: if the loader returns arrays of different shapes.
    """
    distinct, inverse = np.unique(indices, return_inverse=True)
    arrays = [np.asarray(loader(paths[row])) for row in distinct.tolist()]
    shapes = {array.shape for array in arrays}
    if len(shapes) > 1:
        first = arrays[0].shape
        odd = next(k for k, array in enumerate(arrays) if array.shape != first)
        raise ValueError(
            "`loader` must return arrays of one shape; got "
            f"{first} for {paths[distinct[0]]!r} and {arrays[odd].shape} for "
            f"{paths[distinct[odd]]!r}."
        )
    return np.stack(arrays)[inverse.reshape(-1)]


def gather(x: Any, indices: np.ndarray) -> Any:
    """Rows `indices` of every array in `x`, in the structure of `x`."""
    if isinstance(x, dict):
        return {key: _take(value, indices) for key, value in x.items()}
    if isinstance(x, tuple):
        return tuple(_take(value, indices) for value in x)
    return _take(x, indices)


def _take(array: np.ndarray, indices: np.ndarray) -> np.ndarray:
    rows = np.take(array, indices, axis=0)
    # `np.take` on a memmap returns a memmap-typed copy in memory; a plain
    # ndarray is what Keras and the worker queues expect.
    return rows.view(np.ndarray) if type(rows) is not np.ndarray else rows


def encode_classes(y: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
    """The distinct labels of `y` and the int64 code of each element.

    Sorted labels where they can be ordered; labels that cannot (say ints
    mixed with strings, as objects) in order of first appearance.
    """
    try:
        classes, codes = np.unique(y, return_inverse=True)
    except TypeError:
        # Object labels that cannot be ordered (say ints mixed with strings):
        # number them in order of first appearance instead.
        mapping: dict = {}
        codes = np.fromiter(
            (mapping.setdefault(label, len(mapping)) for label in y.tolist()),
            dtype=np.int64,
            count=len(y),
        )
        classes = np.empty(len(mapping), dtype=object)
        classes[:] = list(mapping)
    return classes, np.asarray(codes, dtype=np.int64).reshape(-1)


def describe_labels(labels: Any) -> str:
    """A short, readable list of label values for an error message."""
    labels = [
        label.item() if isinstance(label, np.generic) else label for label in labels
    ]
    shown = ", ".join(repr(label) for label in labels[:_MAX_NAMED])
    if len(labels) > _MAX_NAMED:
        shown += f", ... ({len(labels) - _MAX_NAMED} more)"
    return f"[{shown}]"


class LabelIndex:
    """Labels encoded once, with each class's examples contiguous in `order`.

    Args:
        y: 1-D array-like of hashable labels, one per example.
        num_examples: the number of examples in `x`, which `y` must match.

    Raises:
        TypeError: if `y` is not array-like.
        ValueError: if `y` is not 1-D, its length differs from
            `num_examples`, or it has fewer than two classes.
    """

    def __init__(self, y: Any, num_examples: int, names: Any = None) -> None:
        if isinstance(y, (str, bytes)) or y is None:
            raise TypeError(f"`y` must be a 1-D array of labels; got {y!r}.")
        y = np.asarray(y)
        if y.ndim != 1:
            raise ValueError(f"`y` must be a 1-D array of labels; got shape {y.shape}.")
        if len(y) != num_examples:
            raise ValueError(
                f"`x` and `y` must have the same number of examples; got "
                f"len(x) = {num_examples} and len(y) = {len(y)}."
            )
        classes, codes = encode_classes(y)
        if len(classes) < 2:
            raise ValueError(
                "`y` must contain at least two classes, since negatives come "
                f"from a different class; got {len(classes)}: "
                f"{describe_labels(classes)}."
            )
        self.classes = classes
        self.names = names
        self.num_examples = num_examples
        self.order = np.argsort(codes, kind="stable").astype(np.intp)
        self.counts = np.bincount(codes, minlength=len(classes)).astype(np.intp)
        self.starts = np.cumsum(self.counts) - self.counts
        # Per position of `order`: its class, and where and how long that
        # class's block is, so that sampling needs one lookup per draw.
        self.sorted_codes = np.repeat(np.arange(len(classes)), self.counts)
        self.block_start = self.starts[self.sorted_codes]
        self.block_count = self.counts[self.sorted_codes]
        # Integer labels are returned as they are (as int32 when they fit,
        # whatever their dtype); other labels as int32 codes into `classes`.
        if np.issubdtype(classes.dtype, np.integer):
            fits = (
                np.iinfo(np.int32).min <= classes.min()
                and classes.max() <= np.iinfo(np.int32).max
            )
            self._label_values = classes.astype(np.int32 if fits else np.int64)
        else:
            self._label_values = np.arange(len(classes), dtype=np.int32)

    @property
    def num_classes(self) -> int:
        return len(self.classes)

    def require_pairs_within_classes(self, reason: str) -> None:
        """Raise, naming them, if some classes have a single example."""
        singles = self.classes[self.counts < 2]
        if len(singles):
            named = ""
            if self.names is not None:
                folders = [self.names[int(label)] for label in singles]
                named = f" (class names {describe_labels(folders)})"
            raise ValueError(
                f"{reason}, so every class needs at least two examples; "
                f"{len(singles)} class(es) of `y` have only one: "
                f"{describe_labels(singles)}{named}. Drop their examples first, "
                "e.g. with `keep = np.isin(y, those_labels, invert=True)`."
            )

    def batch_labels(self, codes: np.ndarray) -> np.ndarray:
        """`y`'s own values for integer labels, else codes into `classes`."""
        return self._label_values[codes]

    def partner_positions(
        self, positions: np.ndarray, u: np.ndarray
    ) -> tuple[np.ndarray, np.ndarray]:
        """For each position, a same-class and an other-class position.

        The same-class position is drawn uniformly among the other members of
        the class (which must have at least two), so it never equals the
        input position: a positive is never its own anchor. The other-class
        position is drawn uniformly from `order[:start]` and
        `order[start + count:]`, by drawing from `[0, N - count)` and skipping
        the class's own block.

        Args:
            positions: positions in `order`, shape `(n,)`.
            u: uniform variates in [0, 1), shape `(2, n)`.

        Returns:
            `(same, other)`, two arrays of positions of shape `(n,)`.
        """
        start, count = self.block_start[positions], self.block_count[positions]
        highs = np.stack([np.maximum(count - 1, 1), self.num_examples - count])
        step, draw = floor_scaled(u, highs)
        same = start + (positions - start + 1 + step) % count
        return same, draw + (draw >= start) * count

    def sample_class_blocks(
        self,
        rng: np.random.Generator,
        num_classes: int,
        per_class: int,
        num_batches: int,
    ) -> tuple[np.ndarray, np.ndarray]:
        """Per batch, `num_classes` distinct classes with `per_class` examples each.

        Each batch draws its classes uniformly, without replacement. Within a
        class the examples are distinct when the class has at least
        `per_class` of them; a smaller class contributes all its examples once
        and fills the rest of its block by drawing from them again.

        Returns:
            `(indices, codes)`: `num_batches * num_classes * per_class` example
            indices, batch by batch and class by class, and the class code of
            each.
        """
        if self.num_classes <= _PERMUTE_CLASSES_UP_TO:
            every_class = np.tile(np.arange(self.num_classes), (num_batches, 1))
            classes = rng.permuted(every_class, axis=1)[:, :num_classes]
        else:
            classes = distinct_draws(
                rng, np.full(num_batches, self.num_classes), num_classes
            )
        classes = classes.reshape(-1)
        local = distinct_draws(rng, self.counts[classes], per_class)
        positions = self.starts[classes][:, None] + local
        return self.order[positions.reshape(-1)], np.repeat(classes, per_class)


def distinct_draws(rng: np.random.Generator, counts: np.ndarray, k: int) -> np.ndarray:
    """Per row, `k` values drawn uniformly from `range(count)`, distinct if they can be.

    A row with `count >= k` gets a uniformly random `k`-subset, in random or
    sorted order; a row with `count < k` gets every value once, then more
    drawn with replacement.

    Returns:
        An integer array of shape `(len(counts), k)`.
    """
    counts = np.asarray(counts)
    small = counts < 2 * k
    if small.all():
        return _distinct_by_sorting_keys(rng, counts, k)
    if not small.any():
        return _distinct_by_redrawing(rng, counts, k)
    draws = np.empty((len(counts), k), dtype=np.intp)
    draws[small] = _distinct_by_sorting_keys(rng, counts[small], k)
    draws[~small] = _distinct_by_redrawing(rng, counts[~small], k)
    return draws


def floor_scaled(u: np.ndarray, high: Any) -> np.ndarray:
    """`floor(u * high)` for `u` in [0, 1): a uniform draw from `range(high)`."""
    # The product can round up to `high` for `u` just below 1.
    return np.minimum((u * high).astype(np.intp), np.asarray(high) - 1)


def _distinct_by_sorting_keys(
    rng: np.random.Generator, counts: np.ndarray, k: int
) -> np.ndarray:
    """Per row, a random permutation of `range(count)` cut or padded to `k`.

    Used where classes are small, so the `(rows, max(count, k))` key matrix is
    small too. Columns past `count` are redrawn with replacement.
    """
    width = max(int(counts.max()), k)
    high = counts[:, None]
    keys = rng.random((len(counts), width + k))
    # Keys of columns past `count` sort last; the last `k` keys are reused
    # as the variates of the draws with replacement.
    permutation = np.argsort(
        np.where(np.arange(width) < high, keys[:, :width], 2.0), axis=1
    )[:, :k]
    return np.where(
        np.arange(k) < high, permutation, floor_scaled(keys[:, width:], high)
    )


def _distinct_by_redrawing(
    rng: np.random.Generator, counts: np.ndarray, k: int
) -> np.ndarray:
    """Per row, `k` distinct values drawn uniformly from `range(count)`.

    Draws with replacement and redraws surplus copies until none is left.
    Relabelling `range(count)` commutes with every step, so the resulting set
    is uniform over all `k`-subsets; with `count >= 2k` each redraw collides
    with probability below one half, so few rounds are needed.
    """
    high = counts[:, None]
    draws = np.sort(floor_scaled(rng.random((len(counts), k)), high), axis=1)
    while True:
        repeated = draws[:, 1:] == draws[:, :-1]
        if not repeated.any():
            return draws
        # Redraw the later copy of each repeated value (the rows are sorted).
        fresh = floor_scaled(rng.random(repeated.shape), high)
        draws[:, 1:] = np.where(repeated, fresh, draws[:, 1:])
        draws.sort(axis=1)


def batch_index(index: Any, length: int) -> int:
    """Check a batch index against the dataset length."""
    index = operator.index(index)
    if not 0 <= index < length:
        raise IndexError(f"Batch index {index} is out of range for {length} batches.")
    return index


def default_length(num_examples: int, batch_size: int) -> int:
    """Batches per epoch such that each example is drawn once on average."""
    return max(1, math.ceil(num_examples / batch_size))
