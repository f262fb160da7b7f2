"""RetrievalEvaluation writes retrieval metrics into fit's logs."""

from __future__ import annotations

import warnings

import keras
import numpy as np
import pytest

from keras_siamese import OnlineTripletLoss, RetrievalEvaluation, retrieval_metrics


@pytest.fixture
def data():
    rng = np.random.default_rng(0)
    y = rng.permutation(np.repeat(np.arange(6), 10))
    x = (rng.normal(size=(6, 5))[y] + 0.8 * rng.normal(size=(60, 5))).astype("float32")
    return x, y


def encoder_for(data):
    keras.utils.set_random_seed(0)
    encoder = keras.Sequential([keras.Input((5,)), keras.layers.Dense(4)])
    encoder.compile(optimizer=keras.optimizers.Adam(0.01), loss=OnlineTripletLoss())
    return encoder


def test_metrics_reach_history_early_stopping_and_checkpoints(data, tmp_path):
    x, y = data
    encoder = encoder_for(data)
    callback = RetrievalEvaluation(encoder, x, y, metrics=("map_at_r", "recall_at_1"))
    stop = keras.callbacks.EarlyStopping(
        monitor="val_map_at_r", mode="max", patience=50
    )
    best = tmp_path / "best.keras"
    checkpoint = keras.callbacks.ModelCheckpoint(
        best, monitor="val_map_at_r", mode="max", save_best_only=True
    )
    with warnings.catch_warnings():
        # A monitored metric missing from the logs would be a warning.
        warnings.filterwarnings("error", message=".*available")
        history = encoder.fit(
            x,
            y,
            epochs=3,
            batch_size=20,
            verbose=0,
            callbacks=[callback, stop, checkpoint],
        )
    assert len(history.history["val_map_at_r"]) == 3
    assert history.history["val_map_at_r"] == [
        callback.history[e]["map_at_r"] for e in (1, 2, 3)
    ]
    assert best.exists()
    # The last values are those of the trained encoder.
    expected = retrieval_metrics(
        encoder.predict(x, verbose=0), y, metrics=("map_at_r", "recall_at_1")
    )
    assert callback.history[3] == pytest.approx(expected)
    assert history.history["val_recall_at_1"][-1] == pytest.approx(
        expected["recall_at_1"]
    )


def test_every_n_epochs_and_a_reference_set(data):
    x, y = data
    encoder = encoder_for(data)
    callback = RetrievalEvaluation(
        encoder,
        x[:20],
        y[:20],
        references=x[20:],
        reference_labels=y[20:],
        metrics=("mean_reciprocal_rank",),
        every_n_epochs=2,
        prefix="test_",
    )
    history = encoder.fit(
        x, y, epochs=4, batch_size=20, verbose=0, callbacks=[callback]
    )
    assert sorted(callback.history) == [2, 4]
    # Keras' History records a metric only on the epochs that have it.
    assert history.history["test_mean_reciprocal_rank"] == [
        callback.history[2]["mean_reciprocal_rank"],
        callback.history[4]["mean_reciprocal_rank"],
    ]
    expected = retrieval_metrics(
        encoder.predict(x[:20], verbose=0),
        y[:20],
        encoder.predict(x[20:], verbose=0),
        y[20:],
        metrics=("mean_reciprocal_rank",),
    )
    assert callback.history[4] == pytest.approx(expected)


def test_bad_arguments_raise(data):
    x, y = data
    encoder = encoder_for(data)
    with pytest.raises(TypeError, match="predict"):
        RetrievalEvaluation(object(), x, y)
    with pytest.raises(ValueError, match="one label per row"):
        RetrievalEvaluation(encoder, x, y[:-1])
    with pytest.raises(ValueError, match="unknown"):
        RetrievalEvaluation(encoder, x, y, metrics=("recall_at_0",))
    with pytest.raises(ValueError, match="`every_n_epochs`"):
        RetrievalEvaluation(encoder, x, y, every_n_epochs=0)
    with pytest.raises(ValueError, match="`block_bytes` must be at most"):
        RetrievalEvaluation(encoder, x, y, block_bytes=2**31)
    with pytest.raises(ValueError, match="both `references` and `reference_labels`"):
        RetrievalEvaluation(encoder, x, y, references=x)
    with pytest.raises(ValueError, match="`reference_labels`"):
        RetrievalEvaluation(encoder, x, y, references=x, reference_labels=y[:-1])
    with pytest.raises(ValueError, match="`k` must be"):
        RetrievalEvaluation(encoder, x, y, k=0)
    with pytest.raises(TypeError, match="avg_of_avgs"):
        RetrievalEvaluation(encoder, x, y, avg_of_avgs=1)


def test_ranking_metrics_k_and_class_averages_reach_the_logs(data):
    x, y = data
    # Unbalanced classes: the class average differs from the mean.
    x, y = x[y != 0][5:], y[y != 0][5:]
    encoder = encoder_for(data)
    names = ("mean_average_precision", "ndcg_at_5", "map_at_3", "precision_at_2")
    callback = RetrievalEvaluation(
        encoder, x, y, metrics=names, k="max_bin_count", avg_of_avgs=True
    )
    history = encoder.fit(x, y, epochs=1, verbose=0, callbacks=[callback])
    expected = retrieval_metrics(
        encoder.predict(x, verbose=0),
        y,
        metrics=names,
        k="max_bin_count",
        avg_of_avgs=True,
    )
    assert {name: history.history["val_" + name][-1] for name in names} == (
        pytest.approx(expected)
    )
    plain = retrieval_metrics(encoder.predict(x, verbose=0), y, metrics=names)
    assert plain["mean_average_precision"] != pytest.approx(
        expected["mean_average_precision"]
    )
