"""`PairDataset`: random positive and negative pairs, drawn anew every epoch."""

from __future__ import annotations

import math
from typing import Any

import keras
import numpy as np

from keras_siamese._checks import check_float, check_positive_int
from keras_siamese.data.base import SampledDataset
from keras_siamese.data.sampling import (
    floor_scaled,
)


@keras.saving.register_keras_serializable(package="keras_siamese")
class PairDataset(SampledDataset):
    """Batches of random pairs `((x1, x2), pair_labels)` for a pair loss.

    Each pair's left example is drawn uniformly from all of `x`. A positive
    pair's right example is a different example of the same class (never the
    left example itself); a negative pair's right example is drawn uniformly
    from the examples of all other classes. Every batch holds
    `batch_size * positive_fraction` positives, rounded up or down at random so
    that the fraction is exact on average, at random places in the batch.

    Batch `i` of epoch `e` is a pure function of `(seed, e, i)`, whatever the
    `workers` and `use_multiprocessing` settings, and each epoch draws new
    pairs; see `SampledDataset` for how epochs are counted.

    Args:
        x: a NumPy array (or `np.memmap`), or a tuple, list or dict of arrays
            for a multi-input encoder, examples on axis 0. Never copied; rows
            keep their dtype. With a `loader`, a sequence of file paths.
        y: 1-D array of hashable labels, one per example.
        batch_size: pairs per batch.
        positive_fraction: expected fraction of positive pairs, in [0, 1].
        steps_per_epoch: batches per epoch; defaults to
            `ceil(len(x) / batch_size)`.
        seed: non-negative integer, or `None` to draw one (see `.seed`).
        loader: a callable reading one file; with it `x` is a sequence of
            file paths, and only the files of each batch are read. See
            `SampledDataset` and `from_directory()`.
        augment: a Keras image preprocessing pipeline or a callable
            `augment(images, seed=seed)`, applied to every input of a batch
            with its own seed derived from `(seed, epoch, index)`. See
            `SampledDataset`.
        views: with `augment`, independently augmented views of every
            example, stacked on the batch axis (targets repeated).
        **kwargs: `class_names`, and `workers`, `use_multiprocessing`,
            `max_queue_size`, passed to `keras.utils.PyDataset`.

    Returns:
        Batches `((x1, x2), pair_labels)`: `x1` and `x2` have the structure of
        `x` with `batch_size` rows each; `pair_labels` is float32
        `(batch_size,)`, 1.0 where the two sides share a class, else 0.0.

    Raises:
        TypeError: for non-array `x` or `y`, non-integer sizes or seed.
        ValueError: for non-positive sizes, `positive_fraction` outside
            [0, 1], `len(x) != len(y)`, fewer than two classes, or, when
            `positive_fraction > 0`, a class with a single example (named).

    Examples:
        >>> import numpy as np
        >>> x = np.random.rand(100, 8).astype("float32")
        >>> y = np.arange(100) % 5
        >>> pairs = PairDataset(x, y, batch_size=16, seed=0)
        >>> (x1, x2), same = pairs[0]
        >>> x1.shape, x2.shape, same.shape, same.dtype
        ((16, 8), (16, 8), (16,), dtype('float32'))
    """

    _parts = 2

    def __init__(
        self,
        x: Any,
        y: Any,
        batch_size: int = 128,
        positive_fraction: float = 0.5,
        steps_per_epoch: int | None = None,
        seed: int | None = None,
        loader: Any = None,
        augment: Any = None,
        views: int = 1,
        **kwargs: Any,
    ) -> None:
        batch_size = check_positive_int(batch_size, "batch_size")
        positive_fraction = check_float(
            positive_fraction, "positive_fraction", minimum=0.0, maximum=1.0
        )
        super().__init__(
            x,
            y,
            batch_size,
            steps_per_epoch,
            seed,
            loader=loader,
            augment=augment,
            views=views,
            **kwargs,
        )
        if positive_fraction > 0:
            self._labels.require_pairs_within_classes(
                "PairDataset draws positive pairs (`positive_fraction > 0`)"
            )
        self.positive_fraction = positive_fraction

    def _sample(
        self, rng: np.random.Generator, num_batches: int
    ) -> tuple[np.ndarray, np.ndarray]:
        labels = self._labels
        size = self.batch_size
        expected = size * self.positive_fraction
        u = rng.random((3, num_batches * size))
        # Stochastic rounding keeps the fraction unbiased for any batch size.
        num_positive = math.floor(expected) + (rng.random(num_batches) < expected % 1)
        # Each batch's positives sit at the first `num_positive` places of a
        # random permutation of the batch.
        places = rng.permuted(np.tile(np.arange(size), (num_batches, 1)), axis=1)
        positive = (places < num_positive[:, None]).reshape(-1)
        left = floor_scaled(u[0], labels.num_examples)
        right = np.where(positive, *labels.partner_positions(left, u[1:]))
        return labels.order[np.stack([left, right])], positive.astype(np.float32)

    def get_config(self) -> dict:
        return {
            "batch_size": self.batch_size,
            "positive_fraction": self.positive_fraction,
            **super().get_config(),
        }
