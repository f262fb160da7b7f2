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
)
from keras_siamese.data.tf_pipeline import block_pipeline, keras_adapter_bases

# Pairs, triplets or examples drawn at once, per block of consecutive batches:
# enough for the per-call cost of the vectorised draw to vanish, few enough
# that its temporaries (128 KiB arrays) are reused from the heap. Measured on
# MNIST: per batch of 128, blocks of 2**14 draw 1.5-4x faster than blocks of
# 2**16, whose larger temporaries are page-faulted in afresh at every draw.
_BLOCK_ITEMS = 2**14
# Blocks of the current epoch kept at once, in items. `fit(shuffle=True)`
# (Keras' default) asks for the batches of an epoch in random order, so a
# dataset that kept only its last block would redraw a whole block for most
# batches (measured: 289 draws of 2**14 pairs for 400 batches, +0.5 ms per
# step of the seed MLP). Keeping the epoch's blocks costs 20 bytes per pair
# (two int64 rows and a float32 target): 40 MiB at this bound, which covers
# epochs of up to 2**21 items; beyond it the oldest blocks are dropped.
_CACHED_ITEMS = 2**21


class SampledDataset(keras.utils.PyDataset, *keras_adapter_bases()):
    """Base of the datasets that draw fresh random batches every epoch.

    Batch `i` of epoch `e` is a pure function of `(seed, e, i)` (for given
    constructor arguments). The batches of an epoch are drawn in blocks of
    consecutive batches, up to `2**14` pairs, triplets or examples at a time,
    by one vectorised call whose random generator is seeded with
    `np.random.SeedSequence([seed, e, block])`; each batch is then a slice of
    its block's indices and one `np.take` per input. A block is drawn lazily
    by whichever thread or process first needs one of its batches, and kept
    for the rest of the epoch (up to `2**21` items of indices, about 40 MiB
    for pairs), so that the random batch order of `fit(shuffle=True)` draws
    each block once; no random state is shared or mutated between blocks.
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
    sets it explicitly. The `keras_siamese.EpochSync(dataset)` callback calls
    `dataset.set_epoch(epoch)` in `on_epoch_begin(epoch)`, which ties batches
    to Keras' epoch index on every backend, and is race-free: Keras runs
    callbacks before it starts the workers. Custom loops should call
    `set_epoch()` (or `on_epoch_begin()` and `on_epoch_end()`) themselves.
    Use the dataset's own `steps_per_epoch` rather than
    `fit(steps_per_epoch=...)`: with the latter, Keras carries one iterator
    across epochs, so batches are drawn without regard to epoch boundaries.

    On the TensorFlow backend a dataset is also its own Keras data adapter:
    `fit`, `evaluate` and `predict` read it through `as_tf_dataset()`, a
    `tf.data` pipeline that calls Python once per block and gathers the rows
    in TensorFlow, instead of Keras' generator route for a `PyDataset`
    (about 1 ms per batch). The batches are the same; `workers`,
    `use_multiprocessing`, `fit(shuffle=...)` and `fit(class_weight=...)`
    do not apply there (Keras passes neither argument to a data adapter), so
    balance pairs with the dataset's own arguments, such as
    `positive_fraction`.

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
        self._batch_items = examples_per_batch
        self._block_batches = max(1, _BLOCK_ITEMS // examples_per_batch)
        self._max_blocks = max(
            1, _CACHED_ITEMS // (self._block_batches * examples_per_batch)
        )
        # `{(epoch, block): (rows, targets)}`, blocks of one epoch, oldest first.
        self._blocks: dict = {}
        # Row gathers of `as_tf_dataset`, built at its first call.
        self._tf_gathers = None
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

    def batch_indices(self, index: int, epoch: int | None = None) -> tuple:
        """The batch `__getitem__(index)` returns, with row indices for rows.

        Args:
            index: batch index in `[0, len(self))`.
            epoch: the epoch to draw from; defaults to the current one.

        Returns:
            The batch's structure with, in place of every input, the 1-D
            integer array of the rows of `x` that it holds.
        """
        epoch = self._epoch if epoch is None else operator.index(epoch)
        rows, targets = self._rows(batch_index(index, len(self)), epoch)
        return self._structure(list(rows.copy()), targets.copy())

    def __getitem__(self, index: int) -> tuple:
        rows, targets = self._rows(batch_index(index, len(self)), self._epoch)
        # The targets are a view of the cached block: hand out a copy, so
        # that a consumer writing into its batch cannot change later ones.
        return self._structure([gather(self._x, side) for side in rows], targets.copy())

    def _rows(self, index: int, epoch: int) -> tuple[np.ndarray, np.ndarray]:
        """Views of batch `index`'s `(parts, items)` rows and its targets."""
        block, offset = divmod(index, self._block_batches)
        rows, targets = self._block(epoch, block)
        start = offset * self._batch_items
        stop = start + self._batch_items
        return rows[:, start:stop], targets[start:stop]

    def _block(self, epoch: int, block: int) -> tuple[np.ndarray, np.ndarray]:
        """`(rows, targets)` of all batches of block `block` of epoch `epoch`."""
        key = (epoch, block)
        # The cache is never mutated, only replaced by one attribute write:
        # threads that race here draw the same block, and at worst one of
        # their copies is not kept (it is drawn again if needed).
        blocks = self._blocks
        cached = blocks.get(key)
        if cached is None:
            first = block * self._block_batches
            count = min(self._block_batches, len(self) - first)
            # SFC64 seeded through SeedSequence: independent streams per
            # (seed, epoch, block).
            entropy = np.random.SeedSequence([self.seed, epoch, block])
            rng = np.random.Generator(np.random.SFC64(entropy))
            cached = self._sample(rng, count)
            kept = [item for item in blocks.items() if item[0][0] == epoch]
            self._blocks = dict(
                [*kept[max(0, len(kept) + 1 - self._max_blocks) :], (key, cached)]
            )
        return cached

    @property
    def batch_size(self) -> int:
        """Pairs, triplets or examples per batch."""
        return self._batch_items

    def as_tf_dataset(self) -> Any:
        """The batches of the current epoch as a `tf.data.Dataset`.

        Python is called once per block of batches, for the block's row
        indices (the same as `__getitem__`'s), and the rows are gathered by
        TensorFlow. Arrays of `x` that are not `np.memmap`s are copied into
        tensors at the first call, so later in-place changes to them are not
        seen by the pipeline. On the TensorFlow backend `fit`, `evaluate`
        and `predict` use this pipeline by themselves (the dataset acts as
        its own Keras data adapter), so `workers` and `use_multiprocessing`
        have no effect there. Needs TensorFlow installed; with another
        backend the result can be passed to `fit` like any `tf.data` input.

        Each iteration yields the batches of the dataset's epoch when the
        iteration reaches them: call `set_epoch()` (or `on_epoch_end()`)
        between iterations, not during one.

        Returns:
            A `tf.data.Dataset` of `len(self)` elements, each the structure
            of `self[i]` with tensors in place of arrays.

        Example:
        >>> import numpy as np
        >>> from keras_siamese import PairDataset
        >>> x = np.arange(40, dtype="float32")[:, None]
        >>> pairs = PairDataset(x, np.arange(40) % 4, batch_size=4, seed=0)
        >>> (left, right), same = next(iter(pairs.as_tf_dataset()))  # doctest: +SKIP
        >>> bool((left.numpy() == pairs[0][0][0]).all())  # doctest: +SKIP
        True
        """
        return block_pipeline(self)

    # What Keras' TensorFlow trainer asks of a `DataAdapter` beyond the
    # `PyDataset` methods (`num_batches`, `on_epoch_begin`, `on_epoch_end`).

    def get_tf_dataset(self) -> Any:
        return self.as_tf_dataset()

    def _structure(self, parts: list, targets: np.ndarray) -> tuple:
        if self._parts == 1:
            return parts[0], targets
        return tuple(parts), targets

    # Subclasses set `_parts`, the number of inputs per batch, and implement
    # `_sample(rng, num_batches) -> (rows, targets)`: `rows` of shape
    # `(_parts, num_batches * examples_per_batch)`, the row indices of each
    # input, and `targets` of length `num_batches * examples_per_batch`, both
    # batch after batch.
    _parts = 1

    def _sample(
        self, rng: np.random.Generator, num_batches: int
    ) -> tuple[np.ndarray, np.ndarray]:
        raise NotImplementedError

    def __getstate__(self) -> dict:
        # A pickled copy (a `use_multiprocessing` worker started by spawn)
        # draws its blocks itself rather than receiving them.
        state = self.__dict__.copy()
        state["_blocks"] = {}
        state["_tf_gathers"] = None
        return state

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
