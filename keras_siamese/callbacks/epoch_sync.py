"""`EpochSync`: tie the package's datasets to Keras' epoch index."""

from __future__ import annotations

from typing import Any

import keras

from keras_siamese.data.base import SampledDataset


class EpochSync(keras.callbacks.Callback):
    """Make datasets draw the batches of the epoch Keras is training.

    Inside `Model.fit` the package's datasets already follow Keras' epoch
    index by themselves, so `fit(..., callbacks=[BackupAndRestore(...)])`
    resumes exactly without this callback. `EpochSync` calls
    `dataset.set_epoch(epoch)` at the start of every epoch, which pins the
    datasets to the index where they cannot see it: a training loop of your
    own that calls callbacks, or a Keras whose `fit` the package does not
    recognise (the datasets then count their own epochs). Unlike the
    datasets' own tracking, it also lets a dataset go back to an epoch it has
    already served. Keras calls `on_epoch_begin` before it starts the
    epoch's workers, so it also holds with `workers` and
    `use_multiprocessing`. The guide "Datasets: epochs, blocks and workers"
    has the details.

    Args:
        *datasets: the `PairDataset`, `TripletDataset` or
            `ClassBalancedDataset` objects to keep in step.

    Raises:
        TypeError: if a dataset is not one of this package's datasets.
        ValueError: if no dataset is given.

    Examples:
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
