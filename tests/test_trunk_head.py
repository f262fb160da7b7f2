"""`TrunkHead`: training sees the head, retrieval and the callbacks the trunk."""

import warnings

import keras
import numpy as np
import pytest

from keras_siamese import (
    CollapseMonitor,
    EmbeddingCollapseWarning,
    EmbeddingIndex,
    OnlineTripletLoss,
    RetrievalEvaluation,
    SiameseWrapper,
    TrunkHead,
    Verifier,
    pca_project,
    retrieval_metrics,
    trunk_of,
)
from keras_siamese.retrieval.index import encode


def _model(seed=0):
    keras.utils.set_random_seed(seed)
    trunk = keras.Sequential(
        [keras.Input((6,)), keras.layers.Dense(5, activation="tanh")], name="trunk"
    )
    head = keras.Sequential([keras.Input((5,)), keras.layers.Dense(3)], name="head")
    return TrunkHead(trunk, head, name="encoder")


def _data(n=24, seed=0):
    rng = np.random.default_rng(seed)
    return rng.normal(size=(n, 6)).astype("float32"), np.arange(n) % 4


def _numpy_forward(model, x):
    """The trunk and head computed from their weights with NumPy alone."""
    kernel, bias = model.trunk.get_weights()
    features = np.tanh(x @ kernel + bias)
    head_kernel, head_bias = model.head.get_weights()
    return features, features @ head_kernel + head_bias


def test_call_is_head_of_trunk_and_trunk_of_gives_the_trunk():
    model = _model()
    x, _ = _data()
    features, outputs = _numpy_forward(model, x)
    np.testing.assert_allclose(model.predict(x, verbose=0), outputs, atol=1e-5)
    assert trunk_of(model) is model.trunk
    np.testing.assert_allclose(
        trunk_of(model).predict(x, verbose=0), features, atol=1e-5
    )
    plain = keras.Sequential([keras.Input((6,)), keras.layers.Dense(2)])
    assert trunk_of(plain) is plain


@pytest.mark.parametrize("argument", ["trunk", "head"])
def test_rejects_a_non_layer(argument):
    parts = {"trunk": keras.layers.Dense(2), "head": keras.layers.Dense(2)}
    parts[argument] = lambda x: x
    with pytest.raises(TypeError, match=f"`{argument}`"):
        TrunkHead(**parts)


def test_unbuilt_parts_are_built_on_first_call():
    model = TrunkHead(keras.layers.Dense(5), keras.layers.Dense(2))
    assert not model.built
    out = model(np.ones((3, 4), "float32"))
    assert tuple(out.shape) == (3, 2)
    assert model.trunk.kernel.shape == (4, 5) and model.head.kernel.shape == (5, 2)


def test_saves_and_reloads_in_safe_mode(tmp_path):
    model = _model()
    x, _ = _data()
    path = tmp_path / "model.keras"
    model.save(path)
    loaded = keras.saving.load_model(path, safe_mode=True)
    assert isinstance(loaded, TrunkHead)
    np.testing.assert_allclose(
        loaded.predict(x, verbose=0), model.predict(x, verbose=0), atol=1e-6
    )
    np.testing.assert_allclose(
        loaded.trunk.predict(x, verbose=0), model.trunk.predict(x, verbose=0), atol=1e-6
    )
    assert [w.shape for w in loaded.head.weights] == [(5, 3), (3,)]


def test_trains_trunk_and_head_and_reloads_compiled(tmp_path):
    model = _model()
    x, y = _data()
    before = [w.copy() for w in model.get_weights()]
    model.compile(optimizer=keras.optimizers.SGD(0.1), loss=OnlineTripletLoss())
    model.fit(x, y, batch_size=24, epochs=2, verbose=0)
    after = model.get_weights()
    assert len(after) == 4
    # Both kernels learn (the head's bias cannot: distances ignore a shift).
    assert not np.allclose(after[0], before[0])
    assert not np.allclose(after[2], before[2])
    model.save(tmp_path / "trained.keras")
    loaded = keras.saving.load_model(tmp_path / "trained.keras")
    np.testing.assert_allclose(
        loaded.predict(x, verbose=0), model.predict(x, verbose=0), atol=1e-6
    )


def test_inside_siamese_wrapper_reloads(tmp_path):
    encoder = _model()
    left, right = keras.Input((6,)), keras.Input((6,))
    stacked = SiameseWrapper(encoder, merge="stack")([left, right])
    pair_model = keras.Model([left, right], stacked)
    x, _ = _data()
    pair_model.save(tmp_path / "pairs.keras")
    loaded = keras.saving.load_model(tmp_path / "pairs.keras", safe_mode=True)
    inner = next(
        layer for layer in loaded.layers if isinstance(layer, SiameseWrapper)
    ).layer
    assert isinstance(inner, TrunkHead)
    np.testing.assert_allclose(
        inner.trunk.predict(x, verbose=0),
        encoder.trunk.predict(x, verbose=0),
        atol=1e-6,
    )


def test_index_and_verifier_embed_with_the_trunk(tmp_path):
    model = _model()
    x, y = _data()
    features = model.trunk.predict(x, verbose=0)
    index = EmbeddingIndex.from_encoder(model, x, y, verbose=0)
    assert index.embeddings.shape == (24, 5)
    np.testing.assert_allclose(index.embeddings, features, atol=1e-6)
    np.testing.assert_allclose(encode(model, x, 8, verbose=0), features, atol=1e-6)

    verifier = Verifier(model, threshold=0.5)
    np.testing.assert_allclose(verifier.embed(x), features, atol=1e-6)
    verifier.enroll(x, y)
    verifier.save(tmp_path / "verifier")
    loaded = Verifier.load(tmp_path / "verifier")
    assert isinstance(loaded.encoder, TrunkHead)
    np.testing.assert_allclose(loaded.embed(x), features, atol=1e-6)
    np.testing.assert_array_equal(loaded.identify(x), verifier.identify(x))


def test_retrieval_evaluation_scores_the_trunk():
    model = _model()
    x, y = _data()
    callback = RetrievalEvaluation(model, x, y, metrics=("recall_at_1", "map_at_r"))
    expected = retrieval_metrics(
        model.trunk.predict(x, verbose=0), y, metrics=("recall_at_1", "map_at_r")
    )
    assert callback.evaluate() == pytest.approx(expected)
    head_scores = retrieval_metrics(
        model.predict(x, verbose=0), y, metrics=("recall_at_1", "map_at_r")
    )
    # The data make the two differ, so the comparison above can fail.
    assert head_scores != pytest.approx(expected)


def test_embedding_plot_projects_the_trunk(tmp_path):
    pytest.importorskip("matplotlib")
    from keras_siamese import EmbeddingPlot

    model = _model()
    x, y = _data()
    plot = EmbeddingPlot(model, x, y, output_dir=tmp_path)
    projection, variance = plot.project()
    want, want_variance = pca_project(model.trunk.predict(x, verbose=0))
    np.testing.assert_allclose(np.abs(projection), np.abs(want), atol=1e-4)
    np.testing.assert_allclose(variance, want_variance, atol=1e-5)


def test_collapse_monitor_watches_the_head():
    """A head that maps everything to one point collapses; the trunk does not."""
    model = _model()
    x, _ = _data()
    monitor = CollapseMonitor(x, encoder=model)
    monitor.set_model(model)
    monitor.on_train_begin()
    kernel, bias = model.head.get_weights()
    model.head.set_weights([np.zeros_like(kernel), bias])
    with warnings.catch_warnings(record=True) as caught:
        warnings.simplefilter("always")
        monitor.on_epoch_end(0)
    assert [w.category for w in caught].count(EmbeddingCollapseWarning) == 1
    assert monitor.collapsed_at == (0, None)
    assert np.ptp(model.trunk.predict(x, verbose=0), axis=0).max() > 0.1


def test_config_round_trip():
    model = _model()
    config = model.get_config()
    assert config["name"] == "encoder"
    clone = TrunkHead.from_config(config)
    assert isinstance(clone.trunk, keras.Sequential)
    assert clone.trunk.name == "trunk" and clone.head.name == "head"
    assert keras.saving.get_registered_name(TrunkHead) == "keras_siamese>TrunkHead"
