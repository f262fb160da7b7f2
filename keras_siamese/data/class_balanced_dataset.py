"""`ClassBalancedDataset`: P classes times K examples per batch, for online mining."""

from __future__ import annotations

from typing import Any

import keras
import numpy as np

from keras_siamese._checks import check_positive_int
from keras_siamese.data.base import SampledDataset


@keras.saving.register_keras_serializable(package="keras_siamese")
class ClassBalancedDataset(SampledDataset):
    """P x K batches `(x_batch, labels)` for losses that mine within a batch.

    Each batch draws `classes_per_batch` (P) distinct classes uniformly, then
    `samples_per_class` (K) examples of each, so every example in a batch has
    at least one positive and the batch has negatives for every anchor, as
    `OnlineTripletLoss` needs. A class with at least K examples gives K
    distinct ones. A class with fewer than K examples (but at least two) gives
    all of its examples once and fills the rest of its block by drawing from
    them again, like pytorch-metric-learning's `MPerClassSampler`: such a
    block repeats examples, yet each anchor still has a distinct positive.
    Batches hold their P blocks one after the other.

    Batch `i` of epoch `e` is a pure function of `(seed, e, i)`, whatever the
    `workers` and `use_multiprocessing` settings; see `SampledDataset` for
    how epochs are counted.

    Args:
        x: a NumPy array (or `np.memmap`), or a tuple, list or dict of arrays
            for a multi-input encoder, examples on axis 0. Never copied; rows
            keep their dtype. With a `loader`, a sequence of file paths.
        y: 1-D array of hashable labels, one per example. Every class needs
            at least two examples.
        classes_per_batch: P, distinct classes per batch, at most the number
            of classes.
        samples_per_class: K >= 2, examples per class in a batch (K >= 1
            with `views >= 2`).
        steps_per_epoch: batches per epoch; defaults to
            `ceil(len(x) / (P * K))`.
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
        Batches `(x_batch, labels)`: `x_batch` has the structure of `x` with
        `P * K` rows; `labels` has shape `(P * K,)` and holds `y`'s own
        values when `y` is an integer array (as int32 when they fit),
        otherwise int32 codes into `dataset.classes`.

    Raises:
        TypeError: for non-array `x` or `y`, non-integer sizes or seed.
        ValueError: for non-positive sizes, `samples_per_class < 2`,
            `classes_per_batch` above the number of classes,
            `len(x) != len(y)`, fewer than two classes, or a class with a
            single example (named). With `views >= 2` an example's other
            views are its positives, so `samples_per_class = 1` and classes
            of one example are allowed.

    Examples:
        >>> import numpy as np
        >>> x = np.random.rand(100, 8).astype("float32")
        >>> y = np.array(["cat", "dog", "owl", "emu"])[np.arange(100) % 4]
        >>> batches = ClassBalancedDataset(x, y, classes_per_batch=3,
        ...                                samples_per_class=4, seed=0)
        >>> x_batch, codes = batches[0]
        >>> x_batch.shape, codes.shape
        ((12, 8), (12,))
        >>> batches.classes.tolist()
        ['cat', 'dog', 'emu', 'owl']
    """

    def __init__(
        self,
        x: Any,
        y: Any,
        classes_per_batch: int,
        samples_per_class: int,
        steps_per_epoch: int | None = None,
        seed: int | None = None,
        loader: Any = None,
        augment: Any = None,
        views: int = 1,
        **kwargs: Any,
    ) -> None:
        classes_per_batch = check_positive_int(classes_per_batch, "classes_per_batch")
        samples_per_class = check_positive_int(samples_per_class, "samples_per_class")
        # With two or more views, an example's other views are its positives,
        # so a class may be a single example (self-supervised learning).
        multi_view = isinstance(views, int) and views >= 2
        if samples_per_class < 2 and not multi_view:
            raise ValueError(
                "`samples_per_class` must be at least 2, so that every example "
                f"has a positive in its batch (or `views` at least 2); got "
                f"{samples_per_class}."
            )
        super().__init__(
            x,
            y,
            classes_per_batch * samples_per_class,
            steps_per_epoch,
            seed,
            loader=loader,
            augment=augment,
            views=views,
            **kwargs,
        )
        if classes_per_batch > self._labels.num_classes:
            raise ValueError(
                f"`classes_per_batch` ({classes_per_batch}) must not exceed the "
                f"number of classes in `y` ({self._labels.num_classes})."
            )
        if not multi_view:
            self._labels.require_pairs_within_classes(
                "ClassBalancedDataset gives every example a positive in its batch"
            )
        self.classes_per_batch = classes_per_batch
        self.samples_per_class = samples_per_class

    def _sample(
        self, rng: np.random.Generator, num_batches: int
    ) -> tuple[np.ndarray, np.ndarray]:
        rows, codes = self._labels.sample_class_blocks(
            rng, self.classes_per_batch, self.samples_per_class, num_batches
        )
        return rows[None], self._labels.batch_labels(codes)

    def get_config(self) -> dict:
        return {
            "classes_per_batch": self.classes_per_batch,
            "samples_per_class": self.samples_per_class,
            **super().get_config(),
        }
