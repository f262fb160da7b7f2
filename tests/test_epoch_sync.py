"""EpochSync keeps the datasets on Keras' epoch index."""

import keras
import numpy as np
import pytest

from keras_siamese import (
    ClassBalancedDataset,
    EpochSync,
    EuclideanDistance,
    PairDataset,
    SiameseWrapper,
)


def _data():
    rng = np.random.default_rng(0)
    return rng.normal(size=(40, 3)).astype("float32"), np.arange(40) % 4


class RecordEpochs(keras.callbacks.Callback):
    def __init__(self, dataset):
        super().__init__()
        self.dataset = dataset
        self.seen = []

    def on_train_batch_begin(self, batch, logs=None):
        if batch == 0:
            self.seen.append(self.dataset.epoch)


def test_fit_draws_the_batches_of_keras_epoch_index():
    x, y = _data()
    pairs = PairDataset(x, y, batch_size=8, steps_per_epoch=2, seed=1)
    encoder = keras.Sequential([keras.Input((3,)), keras.layers.Dense(2)])
    inputs = [keras.Input((3,)), keras.Input((3,))]
    model = keras.Model(
        inputs, SiameseWrapper(encoder, merge=EuclideanDistance())(inputs)
    )
    model.compile(optimizer="sgd", loss="mse")
    record = RecordEpochs(pairs)
    model.fit(
        pairs,
        epochs=5,
        initial_epoch=2,
        shuffle=False,
        verbose=0,
        callbacks=[EpochSync(pairs), record],
    )
    assert record.seen == [2, 3, 4]


def test_sets_every_dataset_and_refuses_other_objects():
    x, y = _data()
    pairs = PairDataset(x, y, batch_size=8, seed=0)
    balanced = ClassBalancedDataset(x, y, classes_per_batch=2, samples_per_class=2)
    EpochSync(pairs, balanced).on_epoch_begin(7)
    assert pairs.epoch == balanced.epoch == 7
    with pytest.raises(TypeError, match="EpochSync"):
        EpochSync(pairs, [x, y])
    with pytest.raises(ValueError, match="at least one dataset"):
        EpochSync()
