"""`make_pairs`: a fixed, balanced set of pairs for validation and testing."""

from __future__ import annotations

from typing import Any

import numpy as np

from keras_siamese._checks import check_positive_int
from keras_siamese.data.sampling import (
    LabelIndex,
    gather,
    normalize_x,
    resolve_seed,
)


def make_pairs(
    x: Any,
    y: Any,
    seed: int | None = None,
    pairs_per_class: int | None = None,
) -> tuple[tuple[Any, Any], np.ndarray]:
    """Build a fixed set of pairs, alternating positive and negative per class.

    This is the pair layout of the Keras Siamese MNIST example, made
    reproducible: each class's examples are shuffled once; the `i`-th pair of
    class `c` joins its `i`-th and `(i + 1)`-th examples (a positive, two
    different examples), and is followed by a negative joining the same `i`-th
    example with the `i`-th example of another class drawn uniformly. Every
    class contributes the same number of pairs, so the set is balanced across
    classes and exactly half positive. Use it for validation and test data;
    for training, `PairDataset` draws new pairs every epoch instead.

    Unlike the datasets, this materialises the pairs: it copies
    `2 * num_classes * pairs_per_class` rows per side.

    Args:
        x: a NumPy array, or a tuple, list or dict of arrays for a multi-input
            encoder, examples on axis 0.
        y: 1-D array of hashable labels, one per example.
        seed: non-negative integer for a reproducible set; `None` draws one.
        pairs_per_class: positive pairs per class (each followed by one
            negative). Defaults to, and must not exceed, the size of the
            smallest class minus one.

    Returns:
        `((x1, x2), pair_labels)`: `x1` and `x2` have the structure of `x` and
        `2 * num_classes * pairs_per_class` rows, class by class, positives at
        even positions; `pair_labels` is float32, 1.0 for a positive pair and
        0.0 for a negative.

    Raises:
        TypeError: for non-array `x` or `y`, or a non-integer seed or
            `pairs_per_class`.
        ValueError: for `len(x) != len(y)`, fewer than two classes, a class
            with a single example (named), or `pairs_per_class` out of range.

    Examples:
        >>> import numpy as np
        >>> x = np.random.rand(30, 4).astype("float32")
        >>> y = np.arange(30) % 3
        >>> (x1, x2), same = make_pairs(x, y, seed=0)
        >>> x1.shape, same[:4].tolist()
        ((54, 4), [1.0, 0.0, 1.0, 0.0])
    """
    x, num_examples = normalize_x(x)
    labels = LabelIndex(y, num_examples)
    labels.require_pairs_within_classes("make_pairs makes positive pairs")
    most = int(labels.counts.min()) - 1
    if pairs_per_class is None:
        pairs_per_class = most
    pairs_per_class = check_positive_int(pairs_per_class, "pairs_per_class")
    if pairs_per_class > most:
        raise ValueError(
            f"`pairs_per_class` must be at most {most}, the size of the smallest "
            f"class minus one; got {pairs_per_class}."
        )
    rng = np.random.default_rng(resolve_seed(seed))
    num_classes = labels.num_classes
    # Shuffle within each class block: sort positions by (class, random key).
    shuffled = labels.order[np.lexsort((rng.random(num_examples), labels.sorted_codes))]
    steps = np.arange(pairs_per_class)
    first = labels.starts[:, None] + steps
    other = (
        np.arange(num_classes)[:, None]
        + rng.integers(1, num_classes, size=(num_classes, pairs_per_class))
    ) % num_classes
    anchors = shuffled[first]
    positives = shuffled[first + 1]
    negatives = shuffled[labels.starts[other] + steps]
    left = np.stack([anchors, anchors], axis=-1).reshape(-1)
    right = np.stack([positives, negatives], axis=-1).reshape(-1)
    pair_labels = np.tile(np.array([1.0, 0.0], dtype=np.float32), len(left) // 2)
    return (gather(x, left), gather(x, right)), pair_labels
