"""PairAccuracy and TripletAccuracy against NumPy.

Configs and saving with the losses: tests/test_conformance.py.
"""

import numpy as np
import pytest
from hypothesis import given
from hypothesis import strategies as st
from hypothesis.extra import numpy as hnp

from keras_siamese import PairAccuracy, TripletAccuracy


def np_distance(a, b, metric):
    a, b = a.astype("float64"), b.astype("float64")
    if metric == "cosine":
        unit_a = a / max(np.linalg.norm(a), 1e-6)
        return 1.0 - unit_a @ (b / max(np.linalg.norm(b), 1e-6))
    if metric == "manhattan":
        return np.abs(a - b).sum()
    squares = ((a - b) ** 2).sum()
    return squares if metric == "squared_euclidean" else np.sqrt(squares)


@given(
    labels=hnp.arrays("int32", 9, elements=st.integers(0, 1)),
    distances=hnp.arrays("float32", 9, elements=st.floats(0, 1, width=32)),
    threshold=st.sampled_from([0.0, 0.25, 0.5, 1.0]),
    column=st.booleans(),
)
def test_pair_accuracy_matches_numpy(labels, distances, threshold, column):
    want = np.mean([(d < threshold) == (y == 1) for y, d in zip(labels, distances)])
    metric = PairAccuracy(threshold=threshold)
    metric.update_state(labels, distances[:, None] if column else distances)
    np.testing.assert_allclose(float(metric.result()), want, rtol=1e-6)


def test_pair_accuracy_of_batch_by_one_distances_is_not_broadcast():
    # The seed recipe's accuracy reported 0.5 here under Keras 3.
    labels = np.array([1, 1, 0, 0])
    distances = np.array([[0.1], [0.2], [0.9], [0.8]], "float32")
    metric = PairAccuracy()
    metric.update_state(labels, distances)
    assert float(metric.result()) == 1.0


def test_pair_accuracy_accumulates_over_batches_and_resets():
    metric = PairAccuracy()
    metric.update_state(np.array([1, 0]), np.array([0.1, 0.1]))
    metric.update_state(np.array([1, 1]), np.array([0.1, 0.1]))
    assert float(metric.result()) == pytest.approx(0.75)
    metric.reset_state()
    assert float(metric.result()) == 0.0


@given(
    x=hnp.arrays("float32", (7, 3, 2), elements=st.floats(-2, 2, width=32)),
    distance=st.sampled_from(["euclidean", "squared_euclidean", "cosine", "manhattan"]),
)
def test_triplet_accuracy_matches_numpy(x, distance):
    want = np.mean(
        [np_distance(a, p, distance) < np_distance(a, n, distance) for a, p, n in x]
    )
    metric = TripletAccuracy(distance=distance)
    metric.update_state(np.zeros(7), x)
    # Round-off can flip near-ties; at most one of the 7 may differ.
    assert abs(float(metric.result()) - want) <= 1 / 7 + 1e-6


def test_triplet_accuracy_ties_count_as_wrong():
    x = np.array([[[0.0], [1.0], [-1.0]], [[0.0], [1.0], [3.0]]], "float32")
    metric = TripletAccuracy()
    metric.update_state(np.zeros(2), x)
    assert float(metric.result()) == 0.5


def test_bad_metric_arguments_raise():
    with pytest.raises(ValueError, match="threshold"):
        PairAccuracy(threshold=float("nan"))
    with pytest.raises(TypeError, match="threshold"):
        PairAccuracy(threshold="0.5")
    with pytest.raises(ValueError, match="distance"):
        TripletAccuracy(distance="chebyshev")
    with pytest.raises(ValueError, match="y_pred"):
        PairAccuracy().update_state(np.zeros(2), np.zeros((2, 2), "float32"))
    with pytest.raises(ValueError, match=r"\(batch, 3, dim\)"):
        TripletAccuracy().update_state(np.zeros(2), np.zeros((2, 2), "float32"))
