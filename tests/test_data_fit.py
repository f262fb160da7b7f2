"""`model.fit` on each dataset with a small Siamese model, on every backend."""

from __future__ import annotations

import keras
import numpy as np
import pytest

from keras_siamese import (
    ClassBalancedDataset,
    ContrastiveLoss,
    EuclideanDistance,
    OnlineTripletLoss,
    PairDataset,
    SiameseWrapper,
    TripletDataset,
    TripletLoss,
    make_pairs,
)

RNG = np.random.default_rng(0)
NAMES = np.array(["ant", "bee", "cat", "dog"])
Y = NAMES[RNG.integers(0, 4, 96)]
CENTRES = RNG.normal(size=(4, 6)).astype(np.float32)
X = (CENTRES[np.searchsorted(NAMES, Y)] + 0.3 * RNG.normal(size=(96, 6))).astype(
    np.float32
)


def encoder():
    return keras.Sequential(
        [
            keras.Input((6,)),
            keras.layers.Dense(8, activation="relu"),
            keras.layers.Dense(4),
        ]
    )


def fit_and_check(model, dataset, **kwargs):
    before = [w.copy() for w in model.get_weights()]
    history = model.fit(dataset, epochs=2, verbose=0, **kwargs)
    losses = history.history["loss"]
    assert len(losses) == 2 and np.all(np.isfinite(losses))
    assert any(not np.allclose(a, b) for a, b in zip(before, model.get_weights()))
    return history


@pytest.mark.parametrize("workers", [1, 2])
def test_fit_on_pairs_with_contrastive_loss(workers):
    a, b = keras.Input((6,)), keras.Input((6,))
    model = keras.Model(
        [a, b], SiameseWrapper(encoder(), merge=EuclideanDistance())([a, b])
    )
    model.compile(optimizer="adam", loss=ContrastiveLoss())
    dataset = PairDataset(
        X, Y, batch_size=16, steps_per_epoch=3, seed=0, workers=workers
    )
    history = fit_and_check(model, dataset, validation_data=make_pairs(X, Y, seed=1))
    assert np.all(np.isfinite(history.history["val_loss"]))


def test_fit_on_triplets_with_triplet_loss():
    inputs = [keras.Input((6,)) for _ in range(3)]
    model = keras.Model(inputs, SiameseWrapper(encoder(), merge="stack")(inputs))
    model.compile(optimizer="adam", loss=TripletLoss(margin=0.5))
    fit_and_check(model, TripletDataset(X, Y, batch_size=16, steps_per_epoch=3, seed=0))


def test_fit_on_class_balanced_batches_with_online_mining():
    # String labels reach the loss as integer codes.
    model = encoder()
    model.compile(optimizer="adam", loss=OnlineTripletLoss(mining="batch_hard"))
    fit_and_check(model, ClassBalancedDataset(X, Y, 3, 4, steps_per_epoch=3, seed=0))


def test_fit_on_pairs_of_multi_input_examples():
    x = {"left_half": X[:, :3], "right_half": X[:, 3:]}
    parts = {name: keras.Input((3,), name=name) for name in x}
    joined = keras.layers.Concatenate()(list(parts.values()))
    two_part_encoder = keras.Model(parts, keras.layers.Dense(4)(joined))
    branches = [{name: keras.Input((3,)) for name in x} for _ in range(2)]
    distance = SiameseWrapper(two_part_encoder, merge=EuclideanDistance())(branches)
    model = keras.Model(branches, distance)
    model.compile(optimizer="adam", loss=ContrastiveLoss())
    fit_and_check(model, PairDataset(x, Y, batch_size=16, steps_per_epoch=3, seed=0))


class RecordingTriplets(TripletDataset):
    """Logs the epoch of each draw beside Keras' epoch at that time.

    `_block` serves every batch of `__getitem__` and, on TensorFlow, every
    block of the `tf.data` pipeline that `fit` uses instead.
    """

    keras_epoch = None

    def __init__(self, *args, **kwargs):
        super().__init__(*args, **kwargs)
        self.log = []

    def _block(self, epoch, block):
        self.log.append((self.keras_epoch, epoch))
        return super()._block(epoch, block)


class SyncEpoch(keras.callbacks.Callback):
    def __init__(self, dataset, set_epoch):
        super().__init__()
        self.dataset = dataset
        self.set_epoch = set_epoch

    def on_epoch_begin(self, epoch, logs=None):
        self.dataset.keras_epoch = epoch
        if self.set_epoch:
            self.dataset.set_epoch(epoch)


def fit_recording(workers, initial_epoch, set_epoch):
    inputs = [keras.Input((6,)) for _ in range(3)]
    model = keras.Model(inputs, SiameseWrapper(encoder(), merge="stack")(inputs))
    model.compile(optimizer="sgd", loss=TripletLoss())
    dataset = RecordingTriplets(
        X, Y, batch_size=8, steps_per_epoch=4, seed=0, workers=workers
    )
    model.fit(
        dataset,
        epochs=initial_epoch + 3,
        initial_epoch=initial_epoch,
        verbose=0,
        callbacks=[SyncEpoch(dataset, set_epoch)],
    )
    # Draws made while building the model happen before any Keras epoch.
    return [(k, e) for k, e in dataset.log if k is not None]


@pytest.mark.parametrize("workers", [1, 2])
@pytest.mark.parametrize("initial_epoch", [0, 2])
def test_set_epoch_from_a_callback_follows_keras_epochs(workers, initial_epoch):
    during_training = fit_recording(workers, initial_epoch, set_epoch=True)
    # Per epoch: one draw per batch of `__getitem__`, or on TensorFlow one per
    # block (the 4 batches of 8 triplets fit in one).
    per_epoch = 1 if keras.backend.backend() == "tensorflow" else 4
    assert len(during_training) == 3 * per_epoch
    assert all(k == e for k, e in during_training)
    assert {k for k, _ in during_training} == set(
        range(initial_epoch, initial_epoch + 3)
    )


@pytest.mark.parametrize("workers", [1, 2])
def test_each_fit_epoch_draws_from_its_own_dataset_epoch(workers):
    during_training = fit_recording(workers, 0, set_epoch=False)
    used = {k: {e for kk, e in during_training if kk == k} for k in range(3)}
    assert all(len(epochs) == 1 for epochs in used.values())
    firsts = [min(used[k]) for k in range(3)]
    assert firsts == sorted(set(firsts))
    assert firsts[1:] == [firsts[0] + 1, firsts[0] + 2]
