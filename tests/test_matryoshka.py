"""`MatryoshkaLoss`: a loss over leading prefixes of the embeddings."""

from __future__ import annotations

import keras
import numpy as np
import pytest
from hypothesis import given
from hypothesis import strategies as st
from hypothesis.extra import numpy as hnp

from keras_siamese import (
    MatryoshkaLoss,
    OnlineTripletLoss,
    SupervisedContrastiveLoss,
    TripletLoss,
    matryoshka_loss,
)


def unit_prefix(x: np.ndarray, dim: int) -> np.ndarray:
    part = x[..., :dim].astype(np.float64)
    norm = np.sqrt(np.maximum((part**2).sum(-1, keepdims=True), 1e-12))
    return (part / norm).astype(np.float32)


def scalar(value) -> float:
    return float(keras.ops.convert_to_numpy(value))


def embeddings(seed: int, shape=(8, 6)) -> np.ndarray:
    return np.random.default_rng(seed).normal(size=shape).astype("float32")


LABELS = np.array([0, 0, 1, 1, 2, 2, 3, 3])
Y5 = np.zeros(5)  # TripletLoss ignores y_true


@pytest.mark.parametrize("renormalize", [True, False])
def test_weighted_sum_of_the_loss_on_each_prefix(renormalize):
    inner = SupervisedContrastiveLoss(temperature=0.2)
    x = embeddings(0)
    dims, weights = [6, 4, 2], [1.0, 0.5, 2.0]
    expected = sum(
        w * scalar(inner(LABELS, unit_prefix(x, d) if renormalize else x[:, :d]))
        for d, w in zip(dims, weights)
    )
    loss = MatryoshkaLoss(inner, dims, weights, renormalize=renormalize)
    assert scalar(loss(LABELS, x)) == pytest.approx(expected, rel=1e-5)
    assert scalar(
        matryoshka_loss(LABELS, x, inner, dims, weights, renormalize)
    ) == pytest.approx(expected, rel=1e-5)


def test_stacked_triplets_are_cut_on_the_last_axis():
    inner = TripletLoss(margin=0.3)
    x = embeddings(1, (5, 3, 8))
    expected = scalar(inner(Y5, unit_prefix(x, 8))) + scalar(
        inner(Y5, unit_prefix(x, 3))
    )
    assert scalar(MatryoshkaLoss(inner, [8, 3])(Y5, x)) == pytest.approx(
        expected, rel=1e-5
    )


@given(
    x=hnp.arrays(
        np.float32,
        (8, 6),
        elements=st.floats(-4, 4, width=32).filter(lambda v: abs(v) > 0.1),
    ),
    scale=st.floats(0.1, 10.0),
)
def test_renormalised_prefixes_ignore_the_scale(x, scale):
    loss = MatryoshkaLoss(OnlineTripletLoss(mining="batch_all"), [6, 3])
    assert scalar(loss(LABELS, x * np.float32(scale))) == pytest.approx(
        scalar(loss(LABELS, x)), rel=1e-4, abs=1e-5
    )


def test_gradients_are_finite_for_zero_prefixes():
    x = embeddings(2)
    x[:, :2] = 0.0  # the 2-d prefix of every row is the zero vector
    loss = MatryoshkaLoss(SupervisedContrastiveLoss(), [6, 2])
    weights = keras.Variable(x)
    backend = keras.backend.backend()
    if backend == "jax":
        import jax

        grad = jax.grad(lambda w: loss(LABELS, w))(x)
    elif backend == "tensorflow":
        import tensorflow as tf

        with tf.GradientTape() as tape:
            value = loss(LABELS, weights.value)
        grad = tape.gradient(value, weights.value)
    else:
        import torch

        tensor = torch.tensor(x, requires_grad=True)
        loss(LABELS, tensor).backward()
        grad = tensor.grad
    assert np.all(np.isfinite(keras.ops.convert_to_numpy(grad)))


def test_trains_saves_and_reloads(tmp_path):
    x = embeddings(3, (32, 5))
    y = np.repeat(np.arange(4), 8)
    model = keras.Sequential([keras.Input((5,)), keras.layers.Dense(8)])
    loss = MatryoshkaLoss(SupervisedContrastiveLoss(), [8, 4, 2], [1.0, 1.0, 0.5])
    model.compile(optimizer=keras.optimizers.Adam(0.01), loss=loss)
    history = model.fit(x, y, batch_size=32, epochs=5, verbose=0, shuffle=False)
    assert history.history["loss"][-1] < history.history["loss"][0]
    path = tmp_path / "m.keras"
    model.save(path)
    reloaded = keras.saving.load_model(path, safe_mode=True)
    assert isinstance(reloaded.loss, MatryoshkaLoss)
    assert reloaded.loss.dims == (8, 4, 2) and reloaded.loss.weights == (1.0, 1.0, 0.5)
    assert isinstance(reloaded.loss.loss, SupervisedContrastiveLoss)
    pred = model.predict(x, verbose=0)
    assert scalar(reloaded.loss(y, pred)) == pytest.approx(
        scalar(loss(y, pred)), rel=1e-6
    )


def test_bad_arguments_are_refused():
    inner = SupervisedContrastiveLoss()
    with pytest.raises(TypeError, match="Keras Loss object"):
        MatryoshkaLoss(lambda y, p: p, [2])
    with pytest.raises(TypeError, match="`dims`"):
        MatryoshkaLoss(inner, 4)
    with pytest.raises(ValueError, match="positive integers"):
        MatryoshkaLoss(inner, [4, 0])
    with pytest.raises(ValueError, match="repeat"):
        MatryoshkaLoss(inner, [4, 4])
    with pytest.raises(ValueError, match="at least one"):
        MatryoshkaLoss(inner, [])
    with pytest.raises(ValueError, match="one weight per size"):
        MatryoshkaLoss(inner, [4, 2], [1.0])
    with pytest.raises(ValueError, match="non-negative"):
        MatryoshkaLoss(inner, [4, 2], [1.0, -1.0])
    with pytest.raises(ValueError, match="all be 0"):
        MatryoshkaLoss(inner, [4, 2], [0.0, 0.0])
    with pytest.raises(ValueError, match="prefix of 8 but the embeddings have 6"):
        MatryoshkaLoss(inner, [8, 2])(LABELS, embeddings(0))


# -- serving a prefix: truncate_dim ---------------------------------------------


def test_index_with_truncate_dim_searches_the_prefix(tmp_path):
    from keras_siamese import EmbeddingIndex

    rng = np.random.default_rng(4)
    gallery = rng.normal(size=(50, 16)).astype("float32")
    queries = rng.normal(size=(6, 16)).astype("float32")
    index = EmbeddingIndex("cosine", truncate_dim=4)
    index.add(gallery, np.arange(50))
    assert index.dim == 4 and index.truncate_dim == 4
    distances, found = index.search(queries, k=3)
    g, q = unit_prefix(gallery, 4).astype(np.float64), unit_prefix(queries, 4)
    reference = 1.0 - q.astype(np.float64) @ g.T
    expected = np.argsort(reference, axis=1, kind="stable")[:, :3]
    np.testing.assert_array_equal(found, expected)
    np.testing.assert_allclose(
        distances, np.take_along_axis(reference, expected, 1), atol=1e-6
    )
    # Queries already cut to the prefix give the same answer.
    np.testing.assert_array_equal(index.search(queries[:, :4], k=3)[1], found)
    index.save(tmp_path / "i")
    loaded = EmbeddingIndex.load(tmp_path / "i")
    assert loaded.truncate_dim == 4
    np.testing.assert_array_equal(loaded.search(queries, k=3)[1], found)
    assert EmbeddingIndex.from_config(index.get_config()).truncate_dim == 4
    with pytest.raises(ValueError, match="fewer than the index's truncate_dim=4"):
        index.search(queries[:, :3], k=1)
    with pytest.raises(ValueError, match="`truncate_dim`"):
        EmbeddingIndex(truncate_dim=0)
    with pytest.raises(TypeError, match="`truncate_dim`"):
        EmbeddingIndex(truncate_dim=2.5)


def test_a_tampered_truncate_dim_is_refused(tmp_path):
    import json

    from keras_siamese import EmbeddingIndex

    index = EmbeddingIndex(truncate_dim=3)
    index.add(np.ones((4, 5)), [1, 2, 3, 4])
    index.save(tmp_path / "i")
    record = json.loads((tmp_path / "i" / "index.json").read_text())
    record["truncate_dim"] = 2
    (tmp_path / "i" / "index.json").write_text(json.dumps(record))
    with pytest.raises(ValueError, match="dim 3 differs from truncate_dim 2"):
        EmbeddingIndex.load(tmp_path / "i")


def test_verifier_with_truncate_dim(tmp_path):
    from keras_siamese import Verifier

    encoder = keras.Sequential([keras.Input((6,)), keras.layers.Identity()])
    rng = np.random.default_rng(5)
    gallery = rng.normal(size=(12, 6)).astype("float32")
    queries = gallery + rng.normal(scale=0.01, size=(12, 6)).astype("float32")
    queries[:, 2:] = rng.normal(size=(12, 4))  # only the 2-d prefix matches
    verifier = Verifier(encoder, threshold=0.5, truncate_dim=2)
    verifier.enroll(gallery, np.arange(12))
    assert verifier.index.truncate_dim == 2
    np.testing.assert_array_equal(verifier.identify(queries), np.arange(12))
    np.testing.assert_allclose(
        verifier.pair_distances(queries, gallery),
        np.linalg.norm(queries[:, :2] - gallery[:, :2], axis=1),
        rtol=1e-5,
    )
    verifier.save(tmp_path / "v")
    loaded = Verifier.load(tmp_path / "v")
    assert loaded.truncate_dim == 2 and loaded.index.truncate_dim == 2
    np.testing.assert_array_equal(loaded.identify(queries), np.arange(12))
    with pytest.raises(ValueError, match="fewer than truncate_dim=8"):
        Verifier(encoder, threshold=0.5, truncate_dim=8).embed(gallery)


def test_retrieval_metrics_scores_the_prefix():
    from keras_siamese import retrieval_metrics

    rng = np.random.default_rng(6)
    x = rng.normal(size=(40, 9)).astype("float32")
    y = np.arange(40) % 5
    references = rng.normal(size=(25, 9)).astype("float32")
    reference_labels = np.arange(25) % 5
    for ref, ref_labels in ((None, None), (references, reference_labels)):
        cut = None if ref is None else ref[:, :3]
        expected = retrieval_metrics(x[:, :3], y, cut, ref_labels, distance="cosine")
        found = retrieval_metrics(
            x, y, ref, ref_labels, distance="cosine", truncate_dim=3
        )
        assert found == expected
    with pytest.raises(ValueError, match="fewer than truncate_dim=10"):
        retrieval_metrics(x, y, truncate_dim=10)
    with pytest.raises(ValueError, match="`truncate_dim`"):
        retrieval_metrics(x, y, truncate_dim=0)


def test_ranking_metrics_through_a_truncating_index():
    from keras_siamese import EmbeddingIndex, ranking_metrics

    rng = np.random.default_rng(7)
    corpus = rng.normal(size=(30, 8)).astype("float32")
    queries = rng.normal(size=(12, 8)).astype("float32")
    relevant = [[i, (i + 7) % 30] for i in range(12)]
    index = EmbeddingIndex("cosine", truncate_dim=3)
    index.add(corpus)
    expected = ranking_metrics(
        queries[:, :3], corpus[:, :3], relevant, k=(1, 5), distance="cosine"
    )
    assert ranking_metrics(queries, index, relevant, k=(1, 5)) == expected
