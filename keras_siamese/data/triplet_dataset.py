"""`TripletDataset`: random (anchor, positive, negative) triplets every epoch."""

from __future__ import annotations

from typing import Any

import keras
import numpy as np

from keras_siamese._checks import check_positive_int
from keras_siamese.data.base import SampledDataset
from keras_siamese.data.sampling import floor_scaled


@keras.saving.register_keras_serializable(package="keras_siamese")
class TripletDataset(SampledDataset):
    """Batches of random triplets `((anchors, positives, negatives), zeros)`.

    Anchors are drawn uniformly from all of `x`; each positive is a different
    example of the anchor's class (never the anchor itself) and each negative
    is drawn uniformly from the examples of all other classes. The all-zero
    targets let the batches feed `model.fit` with a loss that ignores
    `y_true`, such as `TripletLoss`.

    Batch `i` of epoch `e` is a pure function of `(seed, e, i)`, whatever the
    `workers` and `use_multiprocessing` settings, and each epoch draws new
    triplets; see `SampledDataset` for how epochs are counted.

    Args:
        x: a NumPy array (or `np.memmap`), or a tuple, list or dict of arrays
            for a multi-input encoder, examples on axis 0. Never copied; rows
            keep their dtype. With a `loader`, a sequence of file paths.
        y: 1-D array of hashable labels, one per example. Every class needs
            at least two examples.
        batch_size: triplets per batch.
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
        Batches `((anchors, positives, negatives), zeros)`: three inputs with
        the structure of `x` and `batch_size` rows each, and float32 zeros of
        shape `(batch_size,)`.

    Raises:
        TypeError: for non-array `x` or `y`, non-integer sizes or seed.
        ValueError: for non-positive sizes, `len(x) != len(y)`, fewer than two
            classes, or a class with a single example (named).

    Examples:
        >>> import numpy as np
        >>> x = np.random.rand(100, 8).astype("float32")
        >>> y = np.arange(100) % 5
        >>> triplets = TripletDataset(x, y, batch_size=16, seed=0)
        >>> (anchors, positives, negatives), zeros = triplets[0]
        >>> anchors.shape, zeros.shape
        ((16, 8), (16,))
    """

    _parts = 3

    def __init__(
        self,
        x: Any,
        y: Any,
        batch_size: int = 128,
        steps_per_epoch: int | None = None,
        seed: int | None = None,
        loader: Any = None,
        augment: Any = None,
        views: int = 1,
        **kwargs: Any,
    ) -> None:
        batch_size = check_positive_int(batch_size, "batch_size")
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
        self._labels.require_pairs_within_classes(
            "TripletDataset pairs each anchor with a positive"
        )

    def _sample(
        self, rng: np.random.Generator, num_batches: int
    ) -> tuple[np.ndarray, np.ndarray]:
        labels = self._labels
        size = num_batches * self.batch_size
        u = rng.random((3, size))
        anchors = floor_scaled(u[0], labels.num_examples)
        positives, negatives = labels.partner_positions(anchors, u[1:])
        rows = labels.order[np.stack([anchors, positives, negatives])]
        return rows, np.zeros(size, dtype=np.float32)

    def get_config(self) -> dict:
        return {"batch_size": self.batch_size, **super().get_config()}
