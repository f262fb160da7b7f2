"""The datasets follow Keras' epoch index inside `fit`; `EpochSync` forces it."""

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
    """The dataset's epoch when each training epoch draws its first batch."""

    def __init__(self, dataset):
        super().__init__()
        self.dataset = dataset
        self.seen = []

    def on_train_batch_begin(self, batch, logs=None):
        if batch == 0:
            self.seen.append(self.dataset.epoch)


class RecordBatches(PairDataset):
    """Remembers `(epoch, index)` of every batch it hands out."""

    def __init__(self, *args, **kwargs):
        super().__init__(*args, **kwargs)
        self.served = []

    def __getitem__(self, index):
        self.served.append((self.epoch, int(index)))
        return super().__getitem__(index)


def _model():
    encoder = keras.Sequential([keras.Input((3,)), keras.layers.Dense(2)])
    inputs = [keras.Input((3,)), keras.Input((3,))]
    model = keras.Model(
        inputs, SiameseWrapper(encoder, merge=EuclideanDistance())(inputs)
    )
    model.compile(optimizer="sgd", loss="mse")
    return model


@pytest.mark.parametrize("sync", [False, True], ids=["alone", "with-EpochSync"])
def test_fit_draws_the_batches_of_keras_epoch_index(sync):
    x, y = _data()
    pairs = PairDataset(x, y, batch_size=8, steps_per_epoch=2, seed=1)
    record = RecordEpochs(pairs)
    callbacks = [EpochSync(pairs), record] if sync else [record]
    _model().fit(
        pairs, epochs=5, initial_epoch=2, shuffle=False, verbose=0, callbacks=callbacks
    )
    assert record.seen == [2, 3, 4]
    assert pairs.epoch == 5


def test_epoch_e_of_fit_is_batch_indices_of_epoch_e(backend):
    x, y = _data()
    if backend == "tensorflow":
        # TensorFlow reads the dataset's own tf.data pipeline, not
        # `__getitem__`; the pipeline's batches equal `__getitem__`'s
        # (tests/test_tf_pipeline.py), and RecordEpochs sees the epochs.
        pairs = PairDataset(x, y, batch_size=8, steps_per_epoch=3, seed=1)
        record = RecordEpochs(pairs)
        _model().fit(pairs, epochs=3, shuffle=False, verbose=0, callbacks=[record])
        assert record.seen == [0, 1, 2]
        return
    pairs = RecordBatches(x, y, batch_size=8, steps_per_epoch=3, seed=1)
    _model().fit(pairs, epochs=3, shuffle=False, verbose=0)
    # The JAX and PyTorch trainers build the model on one batch of the first
    # epoch first: that batch is epoch 0's too.
    training = pairs.served[-9:]
    assert training == [(e, i) for e in range(3) for i in range(3)]


def test_a_second_fit_goes_on_with_new_batches():
    x, y = _data()
    pairs = PairDataset(x, y, batch_size=8, steps_per_epoch=2, seed=1)
    record = RecordEpochs(pairs)
    model = _model()
    model.fit(pairs, epochs=2, verbose=0, callbacks=[record])
    model.fit(pairs, epochs=1, verbose=0, callbacks=[record])
    assert record.seen == [0, 1, 2]


def test_validation_data_follows_keras_epoch_index():
    x, y = _data()
    train = PairDataset(x, y, batch_size=8, steps_per_epoch=2, seed=1)
    validation = PairDataset(x, y, batch_size=8, steps_per_epoch=2, seed=2)
    seen = []

    class RecordValidation(keras.callbacks.Callback):
        def on_test_batch_begin(self, batch, logs=None):
            if batch == 0:
                seen.append(validation.epoch)

    _model().fit(
        train,
        validation_data=validation,
        validation_freq=2,
        epochs=4,
        verbose=0,
        callbacks=[RecordValidation()],
    )
    assert seen == [1, 3]


def test_outside_fit_a_dataset_counts_its_own_epochs():
    x, y = _data()
    pairs = PairDataset(x, y, batch_size=8, steps_per_epoch=2, seed=1)
    model = _model()
    model.evaluate(pairs, verbose=0)
    model.evaluate(pairs, verbose=0)
    assert pairs.epoch == 2


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
