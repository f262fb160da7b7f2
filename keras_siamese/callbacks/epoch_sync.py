"""`EpochSync`: tie the package's datasets to Keras' epoch index."""

from __future__ import annotations

from typing import Any

import keras

from keras_siamese.data.base import SampledDataset


class EpochSync(keras.callbacks.Callback):
    """Make datasets draw the batches of the epoch Keras is training.

    The datasets count their own epochs. That count runs one ahead of Keras'
    on the JAX and PyTorch backends (building a model opens and closes an
    epoch), and restarts at 0 in a process that resumes training. With this
    callback, batch `i` of Keras epoch `e` is always the dataset's batch
    `(seed, e, i)`, so a run resumed with `keras.callbacks.BackupAndRestore`
    or `fit(initial_epoch=...)` sees the very batches an uninterrupted run
    saw (pass `shuffle=False` to `fit` too: Keras' shuffling of the batch
    order uses the global random state, which a restart does not restore).
    Keras calls `on_epoch_begin` before it starts the epoch's workers, so it
    also holds with `workers` and `use_multiprocessing`.

    Args:
        *datasets: the `PairDataset`, `TripletDataset` or
            `ClassBalancedDataset` objects to keep in step.

    Raises:
        TypeError: if a dataset is not one of this package's datasets.
        ValueError: if no dataset is given.

    Example:
    >>> import numpy as np
    >>> from keras_siamese import EpochSync, PairDataset
    >>> pairs = PairDataset(np.zeros((20, 3)), np.arange(20) % 2, batch_size=4)
    >>> sync = EpochSync(pairs)
    >>> sync.on_epoch_begin(5)
    >>> pairs.epoch
    5
    """

    def __init__(self, *datasets: SampledDataset) -> None:
        super().__init__()
        if not datasets:
            raise ValueError("`EpochSync` needs at least one dataset.")
        for dataset in datasets:
            if not isinstance(dataset, SampledDataset):
                raise TypeError(
                    "`EpochSync` takes keras_siamese datasets (PairDataset, "
                    "TripletDataset, ClassBalancedDataset); got "
                    f"{type(dataset).__name__}."
                )
        self.datasets = datasets

    def on_epoch_begin(self, epoch: int, logs: dict[str, Any] | None = None) -> None:
        for dataset in self.datasets:
            dataset.set_epoch(epoch)
