"""NumPy evaluation helpers against brute-force loops (backend-independent)."""

import numpy as np
import pytest
from hypothesis import given
from hypothesis import strategies as st
from hypothesis.extra import numpy as hnp

from keras_siamese import (
    calibrate_threshold,
    map_at_r,
    recall_at_k,
    retrieval_metrics,
    roc_auc,
    verification_accuracy,
)

pair_sets = st.integers(1, 30).flatmap(
    lambda n: st.tuples(
        hnp.arrays("float64", n, elements=st.sampled_from([0.0, 0.5, 1.0, 1.5, 2.0])),
        hnp.arrays("int64", n, elements=st.integers(0, 1)),
    )
)


@given(data=pair_sets)
def test_verification_accuracy_is_the_best_over_all_thresholds(data):
    distances, same = data
    if same.all() or not same.any():
        # Pairs of one kind leave the threshold undetermined.
        with pytest.raises(ValueError, match="both same and different"):
            verification_accuracy(distances, same)
        return
    candidates = np.concatenate([distances, distances + 1e-9, [-1.0, 99.0]])
    best = max(np.mean((distances < t) == (same == 1)) for t in candidates)
    accuracy, threshold = verification_accuracy(distances, same)
    assert accuracy == pytest.approx(best)
    assert np.mean((distances < threshold) == (same == 1)) == pytest.approx(accuracy)


def test_verification_accuracy_threshold_is_between_the_classes():
    accuracy, threshold = verification_accuracy([0.1, 0.4, 0.6, 0.9], [1, 1, 0, 0])
    assert (accuracy, threshold) == (1.0, 0.5)


@given(data=pair_sets)
def test_roc_auc_counts_pairs_with_ties_as_half(data):
    distances, same = data
    similar, dissimilar = distances[same == 1], distances[same == 0]
    if similar.size == 0 or dissimilar.size == 0:
        with pytest.raises(ValueError, match="both"):
            roc_auc(distances, same)
        return
    wins = sum((s < d) + 0.5 * (s == d) for s in similar for d in dissimilar)
    assert roc_auc(distances, same) == pytest.approx(
        wins / (similar.size * dissimilar.size)
    )


def test_roc_auc_agrees_with_scikit_learn():
    metrics = pytest.importorskip("sklearn.metrics")
    rng = np.random.default_rng(0)
    labels = rng.integers(0, 2, 500)
    distances = np.round(rng.normal(size=500) - labels, 1)  # many ties
    assert roc_auc(distances, labels) == pytest.approx(
        metrics.roc_auc_score(labels, -distances)
    )


def np_distances(queries, references, metric):
    out = np.zeros((len(queries), len(references)))
    for i, q in enumerate(queries):
        for j, g in enumerate(references):
            if metric == "cosine":
                q1 = q / max(np.linalg.norm(q), 1e-6)
                out[i, j] = 1.0 - q1 @ (g / max(np.linalg.norm(g), 1e-6))
            elif metric == "manhattan":
                out[i, j] = np.abs(q - g).sum()
            else:
                s = ((q - g) ** 2).sum()
                out[i, j] = s if metric == "squared_euclidean" else np.sqrt(s)
    return out


def ranked(row, exclude):
    """Reference indices by distance, ties by index, leaving `exclude` out."""
    return [j for _, j in sorted((d, j) for j, d in enumerate(row) if j != exclude)]


def reference_recall(queries, labels, k, references, reference_labels, metric):
    loo = references is None
    if loo:
        references, reference_labels = queries, labels
    d = np_distances(queries, references, metric)
    hits = []
    for i, row in enumerate(d):
        order = ranked(row, i if loo else -1)
        relevant = [j for j in order if reference_labels[j] == labels[i]]
        if relevant:
            hits.append(any(reference_labels[j] == labels[i] for j in order[:k]))
    return float(np.mean(hits))


def reference_map(queries, labels, references, reference_labels, metric):
    loo = references is None
    if loo:
        references, reference_labels = queries, labels
    d = np_distances(queries, references, metric)
    scores = []
    for i, row in enumerate(d):
        order = ranked(row, i if loo else -1)
        r = sum(reference_labels[j] == labels[i] for j in order)
        if r == 0:
            continue
        found, total = 0, 0.0
        for rank, j in enumerate(order[:r], start=1):
            if reference_labels[j] == labels[i]:
                found += 1
                total += found / rank
        scores.append(total / r)
    return float(np.mean(scores))


@st.composite
def retrieval_sets(draw, with_references):
    n = draw(st.integers(2, 14))
    dim = draw(st.integers(1, 3))
    x = draw(hnp.arrays("int64", (n, dim), elements=st.integers(-2, 2))).astype(float)
    labels = draw(hnp.arrays("int64", n, elements=st.integers(0, 3)))
    labels[1] = labels[0]  # at least one query has something to find
    if not with_references:
        return x, labels, None, None
    m = draw(st.integers(1, 10))
    g = draw(hnp.arrays("int64", (m, dim), elements=st.integers(-2, 2))).astype(float)
    g_labels = draw(hnp.arrays("int64", m, elements=st.integers(0, 3)))
    g_labels[0] = labels[0]
    return x, labels, g, g_labels


@pytest.mark.parametrize("with_references", [False, True])
@pytest.mark.parametrize("metric", ["euclidean", "squared_euclidean", "manhattan"])
@given(data=st.data())
def test_retrieval_matches_brute_force_with_ties(with_references, metric, data):
    # Integer grids make exact ties common; ties are broken by reference order.
    x, labels, g, g_labels = data.draw(retrieval_sets(with_references))
    k = data.draw(st.integers(1, 4))
    tiny_blocks = data.draw(st.sampled_from([8, 1 << 20]))
    got = recall_at_k(x, labels, k, g, g_labels, metric, block_bytes=tiny_blocks)
    assert got == pytest.approx(reference_recall(x, labels, k, g, g_labels, metric))
    got = map_at_r(x, labels, g, g_labels, metric, block_bytes=tiny_blocks)
    assert got == pytest.approx(reference_map(x, labels, g, g_labels, metric))


def test_cosine_retrieval_matches_brute_force():
    rng = np.random.default_rng(0)
    x, labels = rng.normal(size=(40, 5)), rng.integers(0, 4, 40)
    for k in (1, 5):
        assert recall_at_k(x, labels, k, distance="cosine") == pytest.approx(
            reference_recall(x, labels, k, None, None, "cosine")
        )
    assert map_at_r(x, labels, distance="cosine") == pytest.approx(
        reference_map(x, labels, None, None, "cosine")
    )


def test_perfect_clusters_score_one_and_map_penalises_late_hits():
    x = np.array([[0.0], [0.1], [5.0], [5.1]])
    labels = np.array([0, 0, 1, 1])
    assert recall_at_k(x, labels, 1) == 1.0
    assert map_at_r(x, labels) == 1.0
    # Query 0 has R = 2 relevant items at ranks 1 and 3: AP@R = (1 / 2) * 1.
    x = np.array([[0.0], [1.0], [2.0], [4.0]])
    labels = np.array([0, 0, 1, 0])
    assert map_at_r(x[:1], labels[:1], x[1:], labels[1:]) == pytest.approx(0.5)


def test_large_set_is_evaluated_in_blocks():
    rng = np.random.default_rng(0)
    x, labels = rng.normal(size=(3000, 8)), rng.integers(0, 50, 3000)
    small = recall_at_k(x, labels, 5, block_bytes=1 << 20)
    assert small == recall_at_k(x, labels, 5)
    assert map_at_r(x, labels, block_bytes=1 << 20) == pytest.approx(
        map_at_r(x, labels)
    )


@pytest.mark.parametrize("with_references", [False, True])
@given(data=st.data())
def test_one_number_forms_equal_the_functions_they_wrap(with_references, data):
    # Random embeddings and pairs: each wrapper returns exactly the number
    # its underlying function reports, so the two can never disagree.
    x, labels, g, g_labels = data.draw(retrieval_sets(with_references))
    x = x + data.draw(hnp.arrays("float64", x.shape, elements=st.floats(-0.4, 0.4)))
    k = data.draw(st.integers(1, 5))
    distance = data.draw(st.sampled_from(["euclidean", "cosine", "manhattan"]))
    scores = retrieval_metrics(
        x, labels, g, g_labels, distance, metrics=(f"recall_at_{k}", "map_at_r")
    )
    assert recall_at_k(x, labels, k, g, g_labels, distance) == scores[f"recall_at_{k}"]
    assert map_at_r(x, labels, g, g_labels, distance) == scores["map_at_r"]
    distances, same = data.draw(pair_sets)
    if same.all() or not same.any():
        return
    calibration = calibrate_threshold(distances, same, target="accuracy")
    assert verification_accuracy(distances, same) == (
        calibration.accuracy,
        calibration.threshold,
    )


def test_bad_inputs_raise():
    with pytest.raises(ValueError, match="one value per pair"):
        verification_accuracy([0.1, 0.2], [1])
    with pytest.raises(ValueError, match="finite"):
        roc_auc([np.nan, 0.1], [0, 1])
    with pytest.raises(TypeError, match="booleans or 0/1 numbers"):
        verification_accuracy([0.1, 0.2], ["same", "different"])
    x, labels = np.zeros((3, 2)), np.array([0, 1, 2])
    with pytest.raises(ValueError, match="same-class"):
        recall_at_k(x, labels)
    with pytest.raises(ValueError, match="`k`"):
        recall_at_k(x, labels, k=0)
    with pytest.raises(ValueError, match="distance"):
        map_at_r(x, labels, distance="chebyshev")
    with pytest.raises(ValueError, match="`reference_labels`"):
        map_at_r(x, labels, references=x)
    with pytest.raises(TypeError, match="`k`"):
        recall_at_k(x, labels, k=1.5)
