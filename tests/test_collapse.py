"""CollapseMonitor: warns on a collapsing run, stays silent on a healthy one."""

from __future__ import annotations

import doctest
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
from keras_siamese.callbacks import collapse


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
    assert monitor.spreads[-1][2] < 0.1 * monitor.initial_spread
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


def test_docstring_examples_run():
    failures, attempted = doctest.testmod(collapse, verbose=False)[:2]
    assert failures == 0 and attempted > 0
