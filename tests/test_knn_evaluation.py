"""Weighted k-NN classification (`knn_predict`) and the `KNNEvaluation` callback."""

from __future__ import annotations

import keras
import numpy as np
import pytest
from hypothesis import given
from hypothesis import strategies as st

from keras_siamese import (
    KNNEvaluation,
    SimSiam,
    TrunkHead,
    knn_accuracy,
    knn_predict,
)
from tests import lightly_reference
from tests.helpers import record_score_blocks

# A reference decision closer than this to a tie may go either way.
NEAR_TIE = 1e-9


def reference_knn(queries, references, labels, k, temperature):
    """Weighted k-NN from its definition, in float64 NumPy, with tie flags.

    Returns the predicted labels and, per query, whether the decision is
    within round-off of a tie: two references at the k-th place, or two
    classes with (nearly) the largest total.
    """
    q = np.asarray(queries, np.float64)
    r = np.asarray(references, np.float64)
    q = q / np.maximum(np.linalg.norm(q, axis=1, keepdims=True), 1e-12)
    r = r / np.maximum(np.linalg.norm(r, axis=1, keepdims=True), 1e-12)
    similarities = q @ r.T
    classes = np.unique(labels)
    k = min(k, len(r))
    predictions, ambiguous = [], []
    for row in similarities:
        # Most similar first; equal similarities by the lower index.
        order = sorted(range(len(row)), key=lambda j, row=row: (-row[j], j))
        near = k < len(row) and abs(row[order[k - 1]] - row[order[k]]) < NEAR_TIE
        totals = {c: 0.0 for c in classes.tolist()}
        for j in order[:k]:
            totals[labels[j].item()] += np.exp(row[j] / temperature)
        best = max(totals.values())
        winners = [c for c, total in totals.items() if total >= best * (1 - NEAR_TIE)]
        predictions.append(min(winners))
        ambiguous.append(near or len(winners) > 1)
    return np.asarray(predictions), np.asarray(ambiguous, dtype=bool)


coordinates = st.one_of(
    st.integers(-3, 3).map(float),
    st.floats(-10.0, 10.0).filter(lambda v: v == 0.0 or abs(v) > 1e-3),
)


@st.composite
def problems(draw):
    dim = draw(st.integers(1, 4))
    n = draw(st.integers(1, 6))
    m = draw(st.integers(1, 14))
    queries = np.asarray(
        draw(st.lists(coordinates, min_size=n * dim, max_size=n * dim)), np.float32
    ).reshape(n, dim)
    references = np.asarray(
        draw(st.lists(coordinates, min_size=m * dim, max_size=m * dim)), np.float32
    ).reshape(m, dim)
    labels = np.asarray(draw(st.lists(st.integers(0, 3), min_size=m, max_size=m)))
    k = draw(st.integers(1, 16))
    temperature = draw(st.floats(0.05, 2.0))
    return queries, references, labels, k, temperature


@given(problems())
def test_equals_a_numpy_reference(problem):
    queries, references, labels, k, temperature = problem
    expected, ambiguous = reference_knn(queries, references, labels, k, temperature)
    got = knn_predict(queries, references, labels, k=k, temperature=temperature)
    assert got.shape == expected.shape
    np.testing.assert_array_equal(got[~ambiguous], expected[~ambiguous])
    # Any answer to a near-tie is still the label of a reference.
    assert set(got.tolist()) <= set(labels.tolist())


@given(problems())
def test_num_classes_and_block_size_change_no_prediction(problem):
    queries, references, labels, k, temperature = problem
    plain = knn_predict(queries, references, labels, k=k, temperature=temperature)
    np.testing.assert_array_equal(
        knn_predict(
            queries,
            references,
            labels,
            num_classes=4,
            k=k,
            temperature=temperature,
            block_bytes=64,
        ),
        plain,
    )


def gaussian_problem(seed, n=40, m=3000, dim=16, classes=10):
    rng = np.random.default_rng(seed)
    centres = rng.normal(size=(classes, dim))
    labels = rng.integers(0, classes, size=m)
    references = (centres[labels] + 1.5 * rng.normal(size=(m, dim))).astype("float32")
    truth = rng.integers(0, classes, size=n)
    queries = (centres[truth] + 1.5 * rng.normal(size=(n, dim))).astype("float32")
    return queries, references, labels, truth


def test_blocked_search_of_many_references_equals_the_reference(monkeypatch):
    queries, references, labels, _ = gaussian_problem(0)
    expected, ambiguous = reference_knn(queries, references, labels, 200, 0.1)
    assert not ambiguous.any()
    blocks = record_score_blocks(monkeypatch)
    budget = 64 * 1024
    got = knn_predict(queries, references, labels, block_bytes=budget)
    np.testing.assert_array_equal(got, expected)
    # The references were scored in several bounded blocks, never whole.
    assert len(blocks.shapes) > 1
    assert max(rows * cols for rows, cols in blocks.shapes) * 4 <= budget
    assert max(blocks.alive) == 0


def test_exact_ties_go_to_the_lower_index_then_the_class_that_sorts_first():
    references = np.array([[1, 0], [1, 0], [2, 0], [0, 1]], "float32")
    labels = np.array([5, 2, 9, 0])
    query = np.array([[3.0, 0.0]])
    # Three references tie at similarity 1: the first one votes alone.
    assert knn_predict(query, references, labels, k=1).tolist() == [5]
    # The first two vote with equal weights: the smaller class wins.
    assert knn_predict(query, references, labels, k=2).tolist() == [2]
    # A zero embedding is equally (0) similar to every reference.
    zero = np.zeros((1, 2))
    assert knn_predict(zero, references, labels, k=1).tolist() == [5]
    assert knn_predict(zero, references, labels, k=4).tolist() == [0]
    # The same with string labels: "b" sorts before "c".
    named = np.array(["c", "b", "d", "a"])
    assert knn_predict(query, references, named, k=2).tolist() == ["b"]


def test_k_beyond_the_references_lets_all_of_them_vote():
    queries, references, labels, _ = gaussian_problem(1, n=10, m=30)
    everyone = knn_predict(queries, references, labels, k=30, temperature=0.5)
    np.testing.assert_array_equal(
        knn_predict(queries, references, labels, k=1000, temperature=0.5), everyone
    )
    expected, ambiguous = reference_knn(queries, references, labels, 1000, 0.5)
    np.testing.assert_array_equal(everyone[~ambiguous], expected[~ambiguous])
    # A single reference decides everything.
    assert knn_predict(queries, references[:1], labels[:1]).tolist() == (
        [labels[0]] * 10
    )


def test_a_tiny_temperature_is_the_nearest_neighbour_without_overflow():
    queries, references, labels, _ = gaussian_problem(2, n=50, m=400)
    nearest, ambiguous = reference_knn(queries, references, labels, 1, 1.0)
    got = knn_predict(queries, references, labels, k=50, temperature=1e-5)
    np.testing.assert_array_equal(got[~ambiguous], nearest[~ambiguous])
    # The larger temperature lets more neighbours outvote the nearest.
    assert not np.array_equal(knn_predict(queries, references, labels, k=50), nearest)


def test_accuracy_is_the_fraction_predicted_right():
    queries, references, labels, truth = gaussian_problem(3, n=60, m=500)
    predicted = knn_predict(queries, references, labels, k=20)
    accuracy = knn_accuracy(queries, truth, references, labels, k=20)
    assert accuracy == pytest.approx(np.mean(predicted == truth))
    assert 0.3 < accuracy < 1.0  # informative, so the equality above can fail
    assert knn_accuracy(queries, predicted, references, labels, k=20) == 1.0


def test_bad_inputs_are_refused_by_name():
    q, r, y = np.ones((2, 3)), np.ones((4, 3)), np.arange(4)
    with pytest.raises(ValueError, match="`k`"):
        knn_predict(q, r, y, k=0)
    with pytest.raises(TypeError, match="`k`"):
        knn_predict(q, r, y, k=2.5)
    for temperature in (0.0, -0.1, float("nan"), float("inf")):
        with pytest.raises(ValueError, match="`temperature`"):
            knn_predict(q, r, y, temperature=temperature)
    with pytest.raises(ValueError, match=r"`reference_labels`.*4 rows but 3"):
        knn_predict(q, r, y[:3])
    with pytest.raises(ValueError, match="`reference_labels` must be given"):
        knn_predict(q, r, None)
    with pytest.raises(ValueError, match="same embedding size"):
        knn_predict(np.ones((2, 2)), r, y)
    with pytest.raises(ValueError, match="`references` has no rows"):
        knn_predict(q, np.ones((0, 3)), [])
    with pytest.raises(ValueError, match="finite"):
        knn_predict(np.array([[np.nan, 0.0, 0.0]]), r, y)
    with pytest.raises(ValueError, match=r"\[0, 3\)"):
        knn_predict(q, r, y, num_classes=3)
    with pytest.raises(ValueError, match="integer class indices"):
        knn_predict(q, r, np.array(list("abcd")), num_classes=4)
    with pytest.raises(ValueError, match=r"`labels`.*2 rows but 3"):
        knn_accuracy(q, [0, 1, 2], r, y)
    with pytest.raises(ValueError, match="`labels` must be given"):
        knn_accuracy(q, None, r, y)
    with pytest.raises(TypeError, match="one kind"):
        knn_accuracy(q, ["a", "b"], r, y)


# --- lightly's knn_predict, live ----------------------------------------------


def lightly_knn():
    pytest.importorskip("torch")
    try:
        return lightly_reference.load("utils/benchmarking/knn.py").knn_predict
    except ModuleNotFoundError:
        pytest.skip("lightly is installed in the torch environment only")


@pytest.mark.parametrize(
    ("seed", "k", "temperature"), [(0, 200, 0.1), (1, 7, 0.1), (2, 50, 0.5)]
)
def test_equals_lightlys_knn_predict(seed, k, temperature):
    theirs = lightly_knn()
    import torch
    import torch.nn.functional as F

    queries, references, labels, _ = gaussian_problem(seed, n=100, m=600)
    predicted = theirs(
        F.normalize(torch.from_numpy(queries), dim=1),
        F.normalize(torch.from_numpy(references), dim=1).T,
        torch.from_numpy(labels),
        num_classes=10,
        knn_k=k,
        knn_t=temperature,
    )[:, 0].numpy()
    ours = knn_predict(
        queries, references, labels, num_classes=10, k=k, temperature=temperature
    )
    np.testing.assert_array_equal(ours, predicted)
    # Different neighbours per query, so a wrong selection would show.
    assert len(set(predicted.tolist())) > 3


# --- the callback ---------------------------------------------------------------


@pytest.fixture
def data():
    rng = np.random.default_rng(0)
    y = rng.permutation(np.repeat(np.arange(4), 20))
    x = (rng.normal(size=(4, 5))[y] + 0.8 * rng.normal(size=(80, 5))).astype("float32")
    return x[:40], y[:40], x[40:], y[40:]


def dense_model():
    keras.utils.set_random_seed(0)
    model = keras.Sequential([keras.Input((5,)), keras.layers.Dense(3)])
    model.compile(optimizer=keras.optimizers.SGD(0.05), loss="mse")
    return model


def test_accuracy_reaches_the_logs_history_and_checkpoints(data, tmp_path):
    x, y, refs, ref_y = data
    model = dense_model()
    knn = KNNEvaluation(x, y, refs, ref_y, k=10)
    seen = []
    spy = keras.callbacks.LambdaCallback(
        on_epoch_end=lambda epoch, logs: seen.append(logs["val_knn_accuracy"])
    )
    checkpoint = keras.callbacks.ModelCheckpoint(
        tmp_path / "best.keras",
        monitor="val_knn_accuracy",
        mode="max",
        save_best_only=True,
    )
    history = model.fit(
        refs,
        refs[:, :3],
        epochs=3,
        verbose=0,
        callbacks=[knn, spy, checkpoint],
    )
    assert history.history["val_knn_accuracy"] == seen == list(knn.history.values())
    assert sorted(knn.history) == [1, 2, 3]
    assert (tmp_path / "best.keras").exists()
    # The last value is the accuracy of the trained model's embeddings.
    expected = knn_accuracy(
        model.predict(x, verbose=0), y, model.predict(refs, verbose=0), ref_y, k=10
    )
    assert seen[-1] == pytest.approx(expected)
    assert 0.0 < expected <= 1.0


def test_every_n_epochs_and_the_name_are_honoured(data):
    x, y, refs, ref_y = data
    model = dense_model()
    knn = KNNEvaluation(
        x, y, refs, ref_y, k=5, every_n_epochs=2, name="knn", temperature=0.5
    )
    history = model.fit(refs, refs[:, :3], epochs=5, verbose=0, callbacks=[knn])
    assert sorted(knn.history) == [2, 4]
    assert len(history.history["knn"]) == 2
    assert "val_knn_accuracy" not in history.history


def test_a_self_supervised_model_is_evaluated_on_its_encoder(data):
    x, y, refs, ref_y = data
    keras.utils.set_random_seed(0)
    encoder = keras.Sequential([keras.Input((5,)), keras.layers.Dense(4)])
    model = SimSiam(
        encoder, projection_hidden_dim=8, projection_dim=4, prediction_hidden_dim=3
    )
    model.compile(optimizer=keras.optimizers.SGD(0.01))
    knn = KNNEvaluation(x, y, refs, ref_y, k=10)
    views = np.concatenate([refs, refs + 0.01])
    history = model.fit(
        views,
        np.zeros(len(views)),
        batch_size=80,
        epochs=2,
        verbose=0,
        callbacks=[knn],
    )
    assert knn._encoder() is encoder
    expected = knn_accuracy(
        encoder.predict(x, verbose=0), y, encoder.predict(refs, verbose=0), ref_y, k=10
    )
    assert history.history["val_knn_accuracy"][-1] == pytest.approx(expected)


def test_a_given_encoder_and_a_trunk_head_trunk_are_used(data):
    x, y, refs, ref_y = data
    trunk = keras.Sequential([keras.Input((5,)), keras.layers.Dense(4)])
    head = keras.Sequential([keras.Input((4,)), keras.layers.Dense(1)])
    model = TrunkHead(trunk, head)
    knn = KNNEvaluation(x, y, refs, ref_y, encoder=model, k=3)
    knn.set_model(dense_model())
    assert knn._encoder() is trunk
    assert knn.evaluate() == pytest.approx(
        knn_accuracy(trunk.predict(x, verbose=0), y, trunk(refs), ref_y, k=3)
    )


def test_a_query_encoder_encodes_the_queries_and_encoder_the_references(data):
    x, y, refs, ref_y = data
    keras.utils.set_random_seed(0)
    references_tower = keras.Sequential([keras.Input((5,)), keras.layers.Dense(4)])
    # The query tower is the reference tower negated: every cosine flips
    # sign, so its k-NN accuracy differs from that of one tower for both.
    query_tower = keras.Sequential([keras.Input((5,)), keras.layers.Dense(4)])
    kernel, bias = references_tower.layers[0].get_weights()
    query_tower.layers[0].set_weights([-kernel, -bias])
    knn = KNNEvaluation(
        x, y, refs, ref_y, references_tower, k=10, query_encoder=query_tower
    )
    knn.set_model(dense_model())
    two_towers = knn_accuracy(
        query_tower.predict(x, verbose=0),
        y,
        references_tower.predict(refs, verbose=0),
        ref_y,
        k=10,
    )
    one_tower = KNNEvaluation(x, y, refs, ref_y, references_tower, k=10)
    one_tower.set_model(dense_model())
    assert knn.evaluate() == pytest.approx(two_towers)
    assert one_tower.evaluate() != pytest.approx(two_towers)


def test_callback_arguments_are_checked(data):
    x, y, refs, ref_y = data
    with pytest.raises(ValueError, match="`labels` must be given"):
        KNNEvaluation(x, None, refs, ref_y)
    with pytest.raises(ValueError, match=r"`reference_labels`.*40 rows but 39"):
        KNNEvaluation(x, y, refs, ref_y[:-1])
    with pytest.raises(ValueError, match="`k`"):
        KNNEvaluation(x, y, refs, ref_y, k=0)
    with pytest.raises(ValueError, match="`temperature`"):
        KNNEvaluation(x, y, refs, ref_y, temperature=0.0)
    with pytest.raises(ValueError, match="`every_n_epochs`"):
        KNNEvaluation(x, y, refs, ref_y, every_n_epochs=0)
    with pytest.raises(ValueError, match="`references` holds no"):
        KNNEvaluation(x, y, refs[:0], ref_y[:0])
    with pytest.raises(ValueError, match="`name`"):
        KNNEvaluation(x, y, refs, ref_y, name="")
    with pytest.raises(TypeError, match="`encoder`"):
        KNNEvaluation(x, y, refs, ref_y, encoder=lambda t: t)
    tower = keras.Sequential([keras.Input((5,)), keras.layers.Dense(3)])
    with pytest.raises(TypeError, match="`query_encoder` must be a Keras layer"):
        KNNEvaluation(x, y, refs, ref_y, tower, query_encoder=lambda t: t)
    with pytest.raises(ValueError, match="`query_encoder` needs `encoder`"):
        KNNEvaluation(x, y, refs, ref_y, query_encoder=tower)
    with pytest.raises(TypeError, match="`references` must be an array"):
        KNNEvaluation(x, y, keras.utils.PyDataset(), ref_y)
    with pytest.raises(ValueError, match="`x` must hold arrays with one number"):
        KNNEvaluation((x, x[:-1]), y, refs, ref_y)
