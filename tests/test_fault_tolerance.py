"""Lose no progress: exact resume with BackupAndRestore, and checkpoint reloads.

Resuming is exact because every batch of the package's datasets is a pure
function of `(seed, epoch, index)` and, inside `fit`, the datasets draw the
epoch Keras is in: a resumed run sees the very batches the uninterrupted run
saw, with no callback of the package's. `fit(shuffle=False)` keeps Keras from
reordering the batches of an epoch with the global random state, which a
restart does not restore (the batches are random draws already). The models
here have no dropout, and
`keras.utils.set_random_seed` fixes the initial weights, so on CPU every
backend replays the same arithmetic.
"""

from __future__ import annotations

from typing import Any

import keras
import numpy as np
import pytest

from keras_siamese import (
    CosineDistance,
    EpochSync,
    EuclideanDistance,
    ManhattanDistance,
    SiameseWrapper,
    _keras_compat,
)
from keras_siamese.data import PairDataset
from keras_siamese.losses import ContrastiveLoss, OnlineTripletLoss, TripletLoss
from keras_siamese.metrics import PairAccuracy, TripletAccuracy
from tests.helpers import to_numpy

EPOCHS = 4
INTERRUPT_EPOCH = 2


class Interrupt(Exception):
    """Stands for a crash, a pre-emption or a lost machine."""


class InterruptAt(keras.callbacks.Callback):
    """Raise in the middle of epoch `epoch`, after `batch` training steps."""

    def __init__(self, epoch: int, batch: int = 1) -> None:
        super().__init__()
        self.interrupt_epoch, self.interrupt_batch = epoch, batch
        self.current_epoch = -1

    def on_epoch_begin(self, epoch, logs=None):
        self.current_epoch = epoch

    def on_train_batch_end(self, batch, logs=None):
        if self.current_epoch == self.interrupt_epoch and batch == self.interrupt_batch:
            raise Interrupt(f"interrupted in epoch {self.current_epoch}")


def _pair_data() -> tuple[np.ndarray, np.ndarray]:
    rng = np.random.default_rng(0)
    y = np.repeat(np.arange(5), 12)
    x = rng.normal(size=(5, 6))[y] + 0.5 * rng.normal(size=(len(y), 6))
    return x.astype("float32"), y


def _pair_model() -> keras.Model:
    keras.utils.set_random_seed(0)
    encoder = keras.Sequential(
        [
            keras.Input((6,)),
            keras.layers.Dense(16, activation="relu"),
            keras.layers.Dense(4),
        ]
    )
    inputs = [keras.Input((6,)), keras.Input((6,))]
    model = keras.Model(
        inputs, SiameseWrapper(encoder, merge=EuclideanDistance())(inputs)
    )
    model.compile(
        optimizer=keras.optimizers.Adam(1e-2),
        loss=ContrastiveLoss(),
        metrics=[PairAccuracy()],
    )
    return model


def _dataset() -> PairDataset:
    return PairDataset(*_pair_data(), batch_size=8, steps_per_epoch=4, seed=7)


def _weights(model: keras.Model) -> list[np.ndarray]:
    return [to_numpy(w) for w in model.weights]


@pytest.fixture(scope="module")
def uninterrupted() -> list[np.ndarray]:
    dataset = _dataset()
    model = _pair_model()
    model.fit(
        dataset,
        epochs=EPOCHS,
        shuffle=False,
        verbose=0,
    )
    return _weights(model)


def _interrupted_then_resumed(backup_dir, sync: bool) -> list[np.ndarray]:
    dataset = _dataset()
    model = _pair_model()
    callbacks = [keras.callbacks.BackupAndRestore(str(backup_dir))]
    if sync:
        callbacks.append(EpochSync(dataset))
    with pytest.raises(Interrupt):
        model.fit(
            dataset,
            epochs=EPOCHS,
            shuffle=False,
            verbose=0,
            callbacks=[*callbacks, InterruptAt(INTERRUPT_EPOCH)],
        )
    # A new process would rebuild everything from code: a fresh model (whose
    # initial weights do not matter) and a fresh dataset with the same seed.
    dataset = _dataset()
    model = _pair_model()
    callbacks = [keras.callbacks.BackupAndRestore(str(backup_dir))]
    if sync:
        callbacks.append(EpochSync(dataset))
    history = model.fit(
        dataset, epochs=EPOCHS, shuffle=False, verbose=0, callbacks=callbacks
    )
    # Only the epochs after the last completed one were run again.
    assert len(history.history["loss"]) == EPOCHS - INTERRUPT_EPOCH
    return _weights(model)


@pytest.mark.slow
@pytest.mark.parametrize("sync", [False, True], ids=["alone", "with-EpochSync"])
def test_backup_and_restore_resumes_to_the_same_weights(uninterrupted, tmp_path, sync):
    resumed = _interrupted_then_resumed(tmp_path / "backup", sync=sync)
    assert len(resumed) == len(uninterrupted)
    for got, expected in zip(resumed, uninterrupted):
        np.testing.assert_allclose(got, expected, rtol=1e-6, atol=1e-6)


@pytest.mark.slow
def test_resume_without_the_link_to_fit_replays_the_wrong_batches(
    uninterrupted, tmp_path, monkeypatch
):
    # Control: where the datasets cannot see Keras' epoch (the fallback of
    # `_keras_compat.fit_epoch`), a fresh dataset restarts at epoch 0 while
    # Keras resumes at epoch 2, so the resumed run trains on other batches
    # and ends elsewhere; `EpochSync` is what mends that.
    monkeypatch.setattr(_keras_compat, "fit_epoch", lambda: None)
    resumed = _interrupted_then_resumed(tmp_path / "backup", sync=False)
    assert any(
        not np.allclose(got, expected, rtol=1e-6, atol=1e-6)
        for got, expected in zip(resumed, uninterrupted)
    )
    synced = _interrupted_then_resumed(tmp_path / "backup-synced", sync=True)
    for got, expected in zip(synced, uninterrupted):
        np.testing.assert_allclose(got, expected, rtol=1e-6, atol=1e-6)


# --------------------------------------------------------------------------
# A model that uses every public layer, loss and metric, saved by
# ModelCheckpoint and reloaded in safe mode.


def _encoder(name: str) -> keras.Model:
    return keras.Sequential(
        [
            keras.Input((6,)),
            keras.layers.Dense(8, activation="tanh"),
            keras.layers.Dense(4),
        ],
        name=name,
    )


def everything_model() -> keras.Model:
    """Three inputs (anchor, positive, negative) and one output per loss.

    Each wrapper has its own encoder (an encoder shared by several wrappers
    is tested by `test_encoder_shared_by_two_wrappers_reloads`).
    """
    anchor, positive, negative = (keras.Input((6,), name=n) for n in "apn")
    pair = [anchor, positive]

    def wrapper(name: str, merge: Any, **kwargs: Any) -> SiameseWrapper:
        return SiameseWrapper(_encoder(f"{name}_encoder"), merge, name=name, **kwargs)

    outputs = {
        "euclidean": wrapper("euclidean", EuclideanDistance())(pair),
        "cosine": wrapper("cosine", CosineDistance())(pair),
        "manhattan": wrapper("manhattan", ManhattanDistance(), fuse_branches=True)(
            pair
        ),
        "triplets": wrapper("triplets", "stack")([anchor, positive, negative]),
        "head": keras.layers.Dense(1, activation="sigmoid", name="head")(
            wrapper("concat", "concat")(pair)
        ),
        "labelled": _encoder("labelled")(anchor),
    }
    model = keras.Model([anchor, positive, negative], outputs)
    model.compile(
        optimizer=keras.optimizers.Adam(1e-2),
        loss={
            "euclidean": ContrastiveLoss(margin=1.0),
            "cosine": ContrastiveLoss(margin=0.5),
            "manhattan": ContrastiveLoss(margin=2.0),
            "triplets": TripletLoss(margin=0.5, distance="squared_euclidean"),
            "head": "binary_crossentropy",
            "labelled": OnlineTripletLoss("batch_all", distance="cosine", margin=0.2),
        },
        metrics={
            "euclidean": [PairAccuracy(threshold=0.5)],
            "cosine": [PairAccuracy(threshold=0.25, name="cosine_accuracy")],
            "triplets": [TripletAccuracy(distance="cosine")],
        },
    )
    return model


def everything_data(n: int = 24, seed: int = 0) -> tuple[list, dict]:
    rng = np.random.default_rng(seed)
    classes = np.repeat(np.arange(n // 4), 4)
    centers = rng.normal(size=(n // 4, 6))
    anchor = centers[classes] + 0.3 * rng.normal(size=(n, 6))
    positive = centers[classes] + 0.3 * rng.normal(size=(n, 6))
    negative = centers[(classes + 1) % (n // 4)] + 0.3 * rng.normal(size=(n, 6))
    same = np.ones(n, "float32")
    targets = {
        "euclidean": same,
        "cosine": same,
        "manhattan": same,
        "triplets": np.zeros(n, "float32"),
        "head": same,
        "labelled": classes,
    }
    inputs = [a.astype("float32") for a in (anchor, positive, negative)]
    return inputs, targets


@pytest.mark.slow
def test_model_checkpoint_reloads_every_public_layer_loss_and_metric(tmp_path):
    keras.utils.set_random_seed(0)
    model = everything_model()
    inputs, targets = everything_data()
    path = tmp_path / "checkpoint.keras"
    model.fit(
        inputs,
        targets,
        batch_size=12,
        epochs=2,
        shuffle=False,
        verbose=0,
        callbacks=[keras.callbacks.ModelCheckpoint(str(path))],
    )
    restored = keras.saving.load_model(path)  # safe_mode=True, no custom_objects
    expected = model.predict(inputs, verbose=0)
    got = restored.predict(inputs, verbose=0)
    assert sorted(got) == sorted(expected)
    for name in expected:
        np.testing.assert_allclose(got[name], expected[name], rtol=1e-5, atol=1e-6)
    # The compiled losses and metrics came back, with their arguments.
    assert isinstance(restored.loss["labelled"], OnlineTripletLoss)
    assert restored.get_compile_config() == model.get_compile_config()
    for name, loss in restored.loss.items():
        if isinstance(loss, str):
            continue
        np.testing.assert_allclose(
            to_numpy(loss(targets[name], got[name])),
            to_numpy(model.loss[name](targets[name], expected[name])),
            rtol=1e-5,
        )


@pytest.mark.parametrize("second_use", ["wrapper", "direct_call"])
def test_encoder_shared_by_two_wrappers_reloads(tmp_path, second_use):
    encoder = _encoder("shared")
    inputs = [keras.Input((6,)), keras.Input((6,))]
    outputs = [SiameseWrapper(encoder, merge=EuclideanDistance())(inputs)]
    if second_use == "wrapper":
        outputs.append(SiameseWrapper(encoder, merge=CosineDistance())(inputs))
    else:
        outputs.append(encoder(inputs[1]))
    model = keras.Model(inputs, outputs)
    model.save(tmp_path / "shared.keras")
    restored = keras.saving.load_model(tmp_path / "shared.keras")
    assert len(restored.weights) == len(model.weights)
    pairs = [np.random.default_rng(i).normal(size=(5, 6)) for i in range(2)]
    for got, expected in zip(
        restored.predict(pairs, verbose=0), model.predict(pairs, verbose=0)
    ):
        np.testing.assert_allclose(got, expected, rtol=1e-5, atol=1e-6)
    wrapped = [
        layer.layer for layer in restored.layers if isinstance(layer, SiameseWrapper)
    ]
    direct = [layer for layer in restored.layers if layer.name == "shared"]
    shared = wrapped + direct
    assert len(shared) == 2 and shared[0] is shared[1]
