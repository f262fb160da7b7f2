"""`SampledDataset`: the seed, epoch and batching logic the datasets share."""

from __future__ import annotations

import operator
from typing import Any

import keras
import numpy as np

from keras_siamese.data.sampling import (
    LabelIndex,
    batch_index,
    check_positive_int,
    default_length,
    gather,
    normalize_x,
    resolve_seed,
    split,
)


class SampledDataset(keras.utils.PyDataset):
    """Base of the datasets that draw fresh random batches every epoch.

    Batch `i` of epoch `e` is a pure function of `(seed, e, i)`: its random
    generator is seeded with `np.random.SeedSequence([seed, e, i])` inside
    `__getitem__`, and no random state is shared or mutated between batches.
    So batches do not depend on which worker thread or process builds them,
    nor on the order in which they are requested.

    The epoch counter lives in the dataset and counts closed epochs: Keras
    calls `on_epoch_begin()` and `on_epoch_end()` around every pass of `fit`,
    `evaluate` and `predict`, and each `on_epoch_end()` that closes an epoch
    opened by `on_epoch_begin()` advances the counter by one (a stray
    `on_epoch_end()`, such as the one `fit` makes before training, does not).
    Keras stops its workers before it calls `on_epoch_end()` and starts them
    again, with a new thread or process pool, at the next epoch; a
    `use_multiprocessing=True` pool therefore receives (by fork or by
    pickling) the dataset with the counter already advanced. The counter, and
    so every batch, is the same for every `workers` and
    `use_multiprocessing` setting.

    The counter need not equal Keras' epoch index: on the JAX and PyTorch
    backends, the first `fit` of a model opens and closes one epoch to build
    it, so training starts at dataset epoch 1; a dataset passed as
    `validation_data` counts its own epochs, so validation draws new batches
    after every epoch (use `make_pairs` for a fixed validation set); a
    process resuming training (`fit(initial_epoch=...)`,
    `keras.callbacks.BackupAndRestore`) starts again from 0. `set_epoch()`
    sets it explicitly. Calling `dataset.set_epoch(epoch)` from a callback's
    `on_epoch_begin(epoch)` ties batches to Keras' epoch index on every
    backend, and is race-free: Keras runs callbacks before it starts the
    workers. Custom loops should call `set_epoch()` (or `on_epoch_begin()`
    and `on_epoch_end()`) themselves. Use the dataset's own
    `steps_per_epoch` rather than `fit(steps_per_epoch=...)`: with the
    latter, Keras carries one iterator across epochs, so batches are drawn
    without regard to epoch boundaries.

    Args:
        x: a NumPy array (or `np.memmap`), or a tuple, list or dict of arrays
            for a multi-input encoder, with the examples on axis 0. It is
            never copied: each batch gathers only its own rows.
        y: 1-D array of hashable labels (integers, strings, ...), one per
            example.
        examples_per_batch: examples drawn per batch, which sets the default
            number of batches per epoch.
        steps_per_epoch: batches per epoch. Defaults to
            `ceil(len(x) / examples_per_batch)`, one pass over the data in
            expectation.
        seed: non-negative integer. `None` draws one at construction; it is
            then available as `dataset.seed`.
        **kwargs: `workers`, `use_multiprocessing`, `max_queue_size`, passed
            to `keras.utils.PyDataset`.

    Raises:
        TypeError: for an `x` or `y` that is not array-like, a non-integer
            size or seed, or an unknown keyword argument.
        ValueError: for non-positive sizes, a negative seed, `len(x) !=
            len(y)`, or fewer than two classes.

    Example:
    >>> import numpy as np
    >>> from keras_siamese import TripletDataset
    >>> x = np.arange(40, dtype="float32")[:, None]  # row i holds i
    >>> triplets = TripletDataset(x, np.arange(40) % 4, batch_size=4, seed=0)
    >>> (anchors, positives, negatives), _ = triplets.batch_indices(0, epoch=3)
    >>> triplets.set_epoch(3)
    >>> (batch_anchors, _, _), _ = triplets[0]
    >>> bool((batch_anchors[:, 0] == anchors).all())
    True
    """

    def __init__(
        self,
        x: Any,
        y: Any,
        examples_per_batch: int,
        steps_per_epoch: int | None = None,
        seed: int | None = None,
        **kwargs: Any,
    ) -> None:
        super().__init__(**kwargs)
        self._x, num_examples = normalize_x(x)
        self._labels = LabelIndex(y, num_examples)
        if steps_per_epoch is not None:
            steps_per_epoch = check_positive_int(steps_per_epoch, "steps_per_epoch")
        self.steps_per_epoch = steps_per_epoch
        self.seed = resolve_seed(seed)
        self._length = steps_per_epoch or default_length(
            num_examples, examples_per_batch
        )
        self._epoch = 0
        self._epoch_open = False

    @property
    def classes(self) -> np.ndarray:
        """The distinct labels of `y`; integer codes index into this array."""
        return self._labels.classes

    @property
    def num_examples(self) -> int:
        return self._labels.num_examples

    @property
    def epoch(self) -> int:
        """The epoch whose batches `__getitem__` returns now."""
        return self._epoch

    def set_epoch(self, epoch: int) -> None:
        """Make `__getitem__` return the batches of epoch `epoch`.

        Args:
            epoch: a non-negative integer.

        Raises:
            TypeError: if `epoch` is not an integer.
            ValueError: if `epoch` is negative.
        """
        epoch = operator.index(epoch)
        if epoch < 0:
            raise ValueError(f"`epoch` must be non-negative; got {epoch}.")
        self._epoch = epoch

    def on_epoch_begin(self) -> None:
        self._epoch_open = True

    def on_epoch_end(self) -> None:
        if self._epoch_open:
            self._epoch += 1
        self._epoch_open = False

    def __len__(self) -> int:
        return self._length

    def rng(self, index: int, epoch: int | None = None) -> np.random.Generator:
        """The random generator of batch `index` of `epoch` (default: now)."""
        epoch = self._epoch if epoch is None else operator.index(epoch)
        # SFC64 seeded through SeedSequence: independent streams per
        # (seed, epoch, index), and cheaper to set up than `default_rng`.
        entropy = np.random.SeedSequence([self.seed, epoch, index])
        return np.random.Generator(np.random.SFC64(entropy))

    def batch_indices(self, index: int, epoch: int | None = None) -> tuple:
        """The batch `__getitem__(index)` returns, with row indices for rows.

        Args:
            index: batch index in `[0, len(self))`.
            epoch: the epoch to draw from; defaults to the current one.

        Returns:
            The batch's structure with, in place of every input, the 1-D
            integer array of the rows of `x` that it holds.
        """
        index = batch_index(index, len(self))
        rows, targets = self._sample(self.rng(index, epoch))
        return self._structure(rows, targets)

    def __getitem__(self, index: int) -> tuple:
        index = batch_index(index, len(self))
        rows, targets = self._sample(self.rng(index))
        # One gather for all inputs of the batch, split into views after.
        return self._structure(gather(self._x, rows), targets)

    def _structure(self, rows: Any, targets: np.ndarray) -> tuple:
        if self._parts == 1:
            return rows, targets
        return tuple(split(rows, self._parts)), targets

    # Subclasses set `_parts`, the number of inputs per batch, and implement
    # `_sample(rng) -> (rows, targets)`, with `rows` the concatenated row
    # indices of all inputs.
    _parts = 1

    def _sample(self, rng: np.random.Generator) -> tuple[np.ndarray, np.ndarray]:
        raise NotImplementedError

    def get_config(self) -> dict:
        """Every constructor argument except the data `x` and `y`.

        `type(dataset)(x, y, **dataset.get_config())` rebuilds a dataset that
        yields exactly the same batches (the seed is included).
        """
        return {
            "steps_per_epoch": self.steps_per_epoch,
            "seed": self.seed,
            "workers": self.workers,
            "use_multiprocessing": self.use_multiprocessing,
            "max_queue_size": self.max_queue_size,
        }
