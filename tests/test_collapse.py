"""CollapseMonitor: warns on a collapsing run, stays silent on a healthy one."""

from __future__ import annotations

import warnings

import keras
import numpy as np
import pytest

from keras_siamese import (
    CollapseMonitor,
    CosFaceLoss,
    CosineProxies,
    EmbeddingCollapseWarning,
    OnlineTripletLoss,
)
from keras_siamese.data import ClassBalancedDataset
from keras_siamese.metrics import recall_at_k


def _blobs(n=64, dim=6, classes=4, seed=0):
    rng = np.random.default_rng(seed)
    y = np.repeat(np.arange(classes), n // classes)
    x = rng.normal(size=(classes, dim))[y] * 2 + 0.5 * rng.normal(size=(n, dim))
    return x.astype("float32"), y


def _encoder(regularizer=None):
    return keras.Sequential(
        [
            keras.Input((6,)),
            keras.layers.Dense(8, activation="tanh", kernel_regularizer=regularizer),
            keras.layers.Dense(4, kernel_regularizer=regularizer),
        ]
    )


def _collapse_warnings(caught):
    return [w for w in caught if issubclass(w.category, EmbeddingCollapseWarning)]


def test_warns_by_name_when_the_weights_are_driven_to_zero():
    # A heavy weight decay pulls every kernel to 0: all inputs map to the
    # biases, one point, whatever the loss does.
    keras.utils.set_random_seed(0)
    x, y = _blobs()
    model = _encoder(keras.regularizers.L2(2.0))
    model.compile(optimizer=keras.optimizers.SGD(0.1), loss=OnlineTripletLoss())
    monitor = CollapseMonitor(x, every_n_batches=2, stop_training=True)
    with pytest.warns(EmbeddingCollapseWarning, match="Embedding collapse"):
        history = model.fit(
            x, y, batch_size=16, epochs=20, verbose=0, callbacks=[monitor]
        )
    assert monitor.collapsed_at is not None
    epoch, _ = monitor.collapsed_at
    assert len(history.history["loss"]) == epoch + 1 < 20  # stopped early
    assert monitor.spreads[-1][2] < 0.05 * monitor.initial_spread
    assert monitor.spreads[0] == (0, -1, monitor.initial_spread)


def test_silent_on_a_healthy_run():
    keras.utils.set_random_seed(0)
    x, y = _blobs()
    model = _encoder()
    model.compile(
        optimizer=keras.optimizers.Adam(1e-2),
        loss=OnlineTripletLoss(mining="batch_all", margin=1.0),
    )
    monitor = CollapseMonitor(x)
    with warnings.catch_warnings(record=True) as caught:
        warnings.simplefilter("always")
        model.fit(x, y, batch_size=16, epochs=5, verbose=0, callbacks=[monitor])
    assert not _collapse_warnings(caught)
    assert monitor.collapsed_at is None
    assert [entry[:2] for entry in monitor.spreads] == [(0, -1)] + [
        (epoch, None) for epoch in range(5)
    ]
    assert monitor.spreads[-1][2] > monitor.initial_spread  # the margin pushes apart


def test_monitors_the_encoder_of_a_proxy_model():
    keras.utils.set_random_seed(0)
    x, y = _blobs()
    encoder = _encoder()
    model = keras.Sequential([encoder, CosineProxies(4)])
    model.compile(optimizer=keras.optimizers.Adam(1e-2), loss=CosFaceLoss())
    monitor = CollapseMonitor(x, encoder=encoder, every_n_batches=3)
    with warnings.catch_warnings(record=True) as caught:
        warnings.simplefilter("always")
        model.fit(x, y, batch_size=16, epochs=2, verbose=0, callbacks=[monitor])
    assert not _collapse_warnings(caught)
    # 8 batches: checks after the 3rd and the 6th, numbered within their epoch.
    assert [entry[:2] for entry in monitor.spreads] == [(0, -1), (0, 2), (1, 1)]
    want = np.linalg.norm(
        encoder.predict(x, verbose=0)[:, None] - encoder.predict(x, verbose=0)[None],
        axis=-1,
    ).sum() / (len(x) * (len(x) - 1))
    assert monitor.spread() == pytest.approx(want, rel=1e-4)


def test_embeddings_that_start_as_one_point_warn_at_once():
    model = keras.Sequential(
        [keras.Input((6,)), keras.layers.Dense(4, kernel_initializer="zeros")]
    )
    model.compile(optimizer="sgd", loss=OnlineTripletLoss())
    x, y = _blobs()
    monitor = CollapseMonitor(x)
    with pytest.warns(EmbeddingCollapseWarning, match="start of training"):
        model.fit(x, y, batch_size=16, epochs=1, verbose=0, callbacks=[monitor])
    assert monitor.collapsed_at == (0, -1)


@pytest.mark.parametrize(
    ("kwargs", "error", "match"),
    [
        ({"x": np.zeros((1, 6))}, ValueError, "two samples"),
        ({"min_ratio": 0.0}, ValueError, "min_ratio"),
        ({"min_ratio": 1.5}, ValueError, "min_ratio"),
        ({"every_n_batches": 0}, ValueError, "every_n_batches"),
        ({"distance": "chebyshev"}, ValueError, "distance"),
        ({"encoder": "model"}, TypeError, "encoder"),
        ({"stop_training": "yes"}, TypeError, "stop_training"),
    ],
)
def test_bad_arguments_raise(kwargs, error, match):
    kwargs = {"x": np.zeros((4, 6)), **kwargs}
    with pytest.raises(error, match=match):
        CollapseMonitor(**kwargs)


def _ambiguous_digits(seed=0):
    """A small stand-in for MNIST on which batch-hard mining collapses.

    Ten classes of binary 256-pixel "images", five styles per class, pixel
    noise, and 40% of the images drawn from a random class's styles (their
    label unchanged): ambiguous examples make the hardest positive of almost
    every anchor farther than its hardest negative, the situation in which
    batch-hard mining collapses on MNIST with 8 or more images per class.
    """
    rng = np.random.default_rng(seed)
    prototypes = rng.uniform(size=(10, 256)) < 0.2
    styles = np.logical_xor(prototypes[:, None], rng.uniform(size=(10, 5, 256)) < 0.15)
    y = np.repeat(np.arange(10), 100)
    looks = np.where(rng.uniform(size=len(y)) < 0.4, rng.integers(0, 10, len(y)), y)
    x = styles[looks, rng.integers(0, 5, len(y))] + 0.5 * rng.normal(size=(len(y), 256))
    return np.clip(x, 0.0, 1.0).astype("float32"), y


def _notebook_run(mining, per_class, steps, x, y):
    """The triplet notebook's 64-64 MLP, margin 0.2, Adam, 10 x K batches."""
    keras.utils.set_random_seed(0)
    model = keras.Sequential(
        [
            keras.Input((256,)),
            keras.layers.Dense(64, activation="relu"),
            keras.layers.Dense(64, activation="sigmoid"),
        ]
    )
    model.compile(optimizer="adam", loss=OnlineTripletLoss(mining=mining, margin=0.2))
    data = ClassBalancedDataset(
        x,
        y,
        classes_per_batch=10,
        samples_per_class=per_class,
        steps_per_epoch=steps,
        seed=0,
    )
    monitor = CollapseMonitor(x[::5], every_n_batches=10, stop_training=True)
    with warnings.catch_warnings(record=True) as caught:
        warnings.simplefilter("always")
        model.fit(data, epochs=1, verbose=0, callbacks=[monitor])
    recall = float(recall_at_k(model.predict(x, verbose=0), y, k=1))
    return monitor, _collapse_warnings(caught), recall


@pytest.mark.slow
def test_batch_hard_collapses_on_the_stand_in_data():
    """The control: the data are hard enough to collapse batch-hard mining."""
    x, y = _ambiguous_digits()
    monitor, caught, recall = _notebook_run("batch_hard", 16, 250, x, y)
    assert monitor.collapsed_at is not None and len(caught) == 1
    assert recall < 0.2  # chance is 0.1


@pytest.mark.slow
@pytest.mark.parametrize("per_class", [8, 16])
def test_batch_all_recipe_does_not_collapse(per_class):
    x, y = _ambiguous_digits()
    monitor, caught, recall = _notebook_run("batch_all", per_class, 100, x, y)
    assert monitor.collapsed_at is None and not caught
    assert (
        min(spread for _, _, spread in monitor.spreads) > 0.5 * monitor.initial_spread
    )
    assert recall > 0.3  # chance is 0.1; 0.1 when collapsed


# --- the standard deviation of the L2-normalised embeddings (lightly's check) --


def _numpy_normalized_std(embeddings):
    """lightly's `std_of_l2_normalized`, in NumPy."""
    norms = np.linalg.norm(embeddings, axis=1, keepdims=True)
    unit = embeddings / np.maximum(norms, 1e-12)
    return np.mean(np.std(unit, axis=0, ddof=1))


def _fixed_encoder(kernel):
    """A linear encoder `x @ kernel` (no bias)."""
    model = keras.Sequential(
        [keras.Input((kernel.shape[0],)), keras.layers.Dense(kernel.shape[1])]
    )
    model.set_weights([kernel.astype("float32"), np.zeros(kernel.shape[1], "float32")])
    return model


def test_normalized_std_equals_the_reference_and_one_over_sqrt_dim_when_healthy():
    x, _ = _blobs(n=400)
    rng = np.random.default_rng(1)
    encoder = _fixed_encoder(rng.normal(size=(6, 16)))
    monitor = CollapseMonitor(x, encoder=encoder, batch_size=64)
    monitor.set_model(encoder)
    embeddings = encoder.predict(x, verbose=0)
    assert monitor.normalized_std() == pytest.approx(
        _numpy_normalized_std(embeddings.astype("float64")), rel=1e-5
    )
    # Isotropic Gaussian embeddings: about 1 / sqrt(dim).
    gaussian = CollapseMonitor(
        rng.normal(size=(2000, 16)), encoder=_fixed_encoder(np.eye(16))
    )
    gaussian.set_model(gaussian.encoder)
    assert gaussian.normalized_std() == pytest.approx(16**-0.5, rel=0.05)


def test_normalized_std_equals_lightly_live():
    if keras.backend.backend() != "torch":
        pytest.skip("lightly runs on the torch backend only")
    from tests import lightly_reference

    if lightly_reference.root() is None:
        pytest.skip("lightly is not installed")
    import torch

    std_of_l2_normalized = lightly_reference.std_of_l2_normalized()
    rng = np.random.default_rng(2)
    x = rng.normal(size=(50, 6)).astype("float32")
    x[3] = 0.0  # a zero embedding
    encoder = _fixed_encoder(np.eye(6))
    monitor = CollapseMonitor(x, encoder=encoder)
    monitor.set_model(encoder)
    want = float(std_of_l2_normalized(torch.tensor(x)))
    assert monitor.normalized_std() == pytest.approx(want, rel=1e-5)


def test_a_collapse_to_one_direction_warns_by_its_std_though_the_spread_holds():
    # Every embedding is a positive multiple of one vector: their distances
    # vary with the multiple, but their directions are all the same.
    x, _ = _blobs()
    model = keras.Sequential(
        [
            keras.Input((6,)),
            keras.layers.Dense(1, activation="softplus"),
            keras.layers.Dense(4, use_bias=False),
        ]
    )
    model.compile(optimizer="sgd", loss="mse")
    silent = CollapseMonitor(x)
    with warnings.catch_warnings(record=True) as caught:
        warnings.simplefilter("always")
        model.fit(x, np.zeros((64, 4)), epochs=1, verbose=0, callbacks=[silent])
    assert not _collapse_warnings(caught) and silent.collapsed_at is None
    assert silent.initial_spread > 0.0
    assert [entry[:2] for entry in silent.stds] == [(0, -1), (0, None)]
    assert silent.stds[0][2] < 1e-6

    monitor = CollapseMonitor(x, min_std_ratio=0.1, stop_training=True)
    with pytest.warns(EmbeddingCollapseWarning, match="standard deviation"):
        model.fit(x, np.zeros((64, 4)), epochs=3, verbose=0, callbacks=[monitor])
    assert monitor.collapsed_at == (0, -1)


def test_healthy_embeddings_pass_the_std_check_and_a_later_collapse_warns():
    x, _ = _blobs()
    encoder = _fixed_encoder(np.random.default_rng(3).normal(size=(6, 8)))
    monitor = CollapseMonitor(x, encoder=encoder, min_std_ratio=0.3)
    monitor.set_model(encoder)
    with warnings.catch_warnings(record=True) as caught:
        warnings.simplefilter("always")
        monitor.on_train_begin()
        monitor.on_epoch_end(0)
    assert not _collapse_warnings(caught)
    assert 0.3 < monitor.stds[0][2] * np.sqrt(8) < 1.5
    # Every column of the kernel made one vector: one direction, whose
    # spread is still the same order as before.
    kernel = np.outer(np.abs(np.random.default_rng(4).normal(size=6)), np.ones(8))
    encoder.set_weights([kernel.astype("float32"), np.zeros(8, "float32")])
    x[:] = np.abs(x)
    with pytest.warns(EmbeddingCollapseWarning, match=r"1/sqrt\(dim\)"):
        monitor.on_epoch_end(1)
    assert monitor.collapsed_at == (1, None)
    assert monitor.stds[-1][:2] == (1, None)


@pytest.mark.parametrize("ratio", [0.0, 1.5, -0.1])
def test_min_std_ratio_out_of_range_is_refused(ratio):
    with pytest.raises(ValueError, match="min_std_ratio"):
        CollapseMonitor(np.zeros((4, 6)), min_std_ratio=ratio)
