"""calibrate_threshold against brute force over thresholds, and on held-out pairs."""

from __future__ import annotations

import numpy as np
import pytest
from hypothesis import given
from hypothesis import strategies as st
from hypothesis.extra import numpy as hnp

from keras_siamese import Verifier, calibrate_threshold, verification_accuracy
from keras_siamese.retrieval.calibration import TARGETS

pair_sets = (
    st.integers(2, 30)
    .flatmap(
        lambda n: st.tuples(
            hnp.arrays(
                "float64", n, elements=st.sampled_from([0.0, 0.5, 1.0, 1.5, 2.0])
            ),
            hnp.arrays("bool", n),
        )
    )
    .filter(lambda data: 0 < data[1].sum() < data[1].size)
)


def figures(distances, same, threshold):
    accepted = distances < threshold
    tp = int((accepted & same).sum())
    fp = int((accepted & ~same).sum())
    return {
        "accuracy": float(np.mean(accepted == same)),
        "precision": tp / (tp + fp) if tp + fp else 1.0,
        "recall": tp / same.sum(),
        "far": fp / (~same).sum(),
    }


def candidate_thresholds(distances):
    values = np.unique(distances)
    return np.concatenate(
        [[values[0]], (values[1:] + values[:-1]) / 2, [values[-1] + 1]]
    )


def check_figures(result, distances, same):
    expected = figures(distances, same, result.threshold)
    assert result.accuracy == pytest.approx(expected["accuracy"])
    assert result.precision == pytest.approx(expected["precision"])
    assert result.recall == pytest.approx(expected["recall"])
    assert result.far == pytest.approx(expected["far"])
    assert result.frr == pytest.approx(1 - expected["recall"])
    assert result.pairs == distances.size


@given(data=pair_sets)
def test_accuracy_target_is_the_best_threshold(data):
    distances, same = data
    result = calibrate_threshold(distances, same)
    best = max(
        figures(distances, same, t)["accuracy"] for t in candidate_thresholds(distances)
    )
    assert result.accuracy == pytest.approx(best)
    check_figures(result, distances, same)
    assert (result.accuracy, result.threshold) == verification_accuracy(distances, same)


@given(data=pair_sets, value=st.sampled_from([0.5, 0.75, 0.9, 1.0]))
def test_precision_target_is_the_largest_threshold_reaching_it(data, value):
    distances, same = data
    reaching = [
        t
        for t in candidate_thresholds(distances)[1:]
        if figures(distances, same, t)["precision"] >= value
    ]
    if not reaching:
        with pytest.raises(ValueError, match="No threshold reaches precision"):
            calibrate_threshold(distances, same, "precision", value)
        return
    result = calibrate_threshold(distances, same, "precision", value)
    assert result.threshold == pytest.approx(max(reaching))
    assert result.precision >= value
    check_figures(result, distances, same)


@given(data=pair_sets, value=st.sampled_from([0.0, 0.1, 0.5, 1.0]))
def test_far_target_is_the_largest_threshold_within_it(data, value):
    distances, same = data
    within = [
        t
        for t in candidate_thresholds(distances)
        if figures(distances, same, t)["far"] <= value
    ]
    result = calibrate_threshold(distances, same, target="far", value=value)
    assert result.threshold == pytest.approx(max(within))
    check_figures(result, distances, same)
    assert result.as_dict()["target"] == "far"


@given(data=pair_sets, value=st.sampled_from([0.1, 0.5, 0.75, 1.0]))
def test_recall_target_is_the_smallest_threshold_reaching_it(data, value):
    distances, same = data
    reaching = [
        t
        for t in candidate_thresholds(distances)
        if figures(distances, same, t)["recall"] >= value
    ]
    result = calibrate_threshold(distances, same, target="recall", value=value)
    assert result.threshold == pytest.approx(min(reaching))
    assert result.recall >= value
    check_figures(result, distances, same)
    assert result.as_dict()["value"] == value


@given(data=pair_sets)
def test_f1_target_is_the_best_threshold(data):
    sklearn_metrics = pytest.importorskip("sklearn.metrics")
    distances, same = data
    result = calibrate_threshold(distances, same, target="f1")
    scores = [
        sklearn_metrics.f1_score(same, distances < t, zero_division=0.0)
        for t in candidate_thresholds(distances)
    ]
    assert sklearn_metrics.f1_score(same, distances < result.threshold) == (
        pytest.approx(max(scores))
    )
    # The smallest threshold among the best.
    best = [
        t for t, s in zip(candidate_thresholds(distances), scores) if s == max(scores)
    ]
    assert result.threshold == pytest.approx(min(best))
    precision, recall = result.precision, result.recall
    assert 2 * precision * recall / (precision + recall) == pytest.approx(max(scores))
    check_figures(result, distances, same)


def test_precision_holds_on_held_out_pairs():
    """Threshold from one half of the pairs, precision measured on the other."""
    rng = np.random.default_rng(0)
    classes, per_class, dim = 50, 40, 8
    labels = np.repeat(np.arange(classes), per_class)
    embeddings = rng.normal(size=(classes, dim))[labels] * 1.5 + rng.normal(
        size=(labels.size, dim)
    )
    first = rng.integers(0, labels.size, 400_000)
    second = rng.integers(0, labels.size, 400_000)
    distances = np.linalg.norm(embeddings[first] - embeddings[second], axis=1)
    same = labels[first] == labels[second]
    half = distances.size // 2
    for target in (0.9, 0.95, 0.99):
        result = calibrate_threshold(distances[:half], same[:half], "precision", target)
        held_out = figures(distances[half:], same[half:], result.threshold)
        assert abs(held_out["precision"] - target) <= 0.01
        far = calibrate_threshold(distances[:half], same[:half], "far", 1 - target)
        assert figures(distances[half:], same[half:], far.threshold)["far"] == (
            pytest.approx(1 - target, abs=0.01)
        )


def test_bad_arguments_raise():
    d, same = [0.1, 0.2, 0.3], [1, 0, 0]
    with pytest.raises(ValueError, match="`target`"):
        calibrate_threshold(d, same, target="tpr")
    with pytest.raises(ValueError, match="needs a `value`"):
        calibrate_threshold(d, same, target="recall")
    with pytest.raises(ValueError, match="`value`"):
        calibrate_threshold(d, same, target="recall", value=0.0)
    with pytest.raises(ValueError, match="needs a `value`"):
        calibrate_threshold(d, same, target="precision")
    with pytest.raises(ValueError, match="must be None"):
        calibrate_threshold(d, same, value=0.9)
    with pytest.raises(ValueError, match="must be None"):
        calibrate_threshold(d, same, target="f1", value=0.9)
    with pytest.raises(ValueError, match="`value`"):
        calibrate_threshold(d, same, target="precision", value=0.0)
    with pytest.raises(ValueError, match="`value`"):
        calibrate_threshold(d, same, target="far", value=1.5)
    with pytest.raises(TypeError, match="`value`"):
        calibrate_threshold(d, same, target="far", value="low")
    with pytest.raises(ValueError, match="both same and different"):
        calibrate_threshold(d, [1, 1, 1])
    with pytest.raises(ValueError, match="finite"):
        calibrate_threshold([0.1, np.nan], [1, 0])
    with pytest.raises(ValueError, match="one value per pair"):
        calibrate_threshold(d, [1, 0])
    with pytest.raises(ValueError, match="empty"):
        calibrate_threshold([], [])
    with pytest.raises(TypeError, match="`same`"):
        calibrate_threshold(d, ["yes", "no", "no"])


@pytest.mark.parametrize(
    "same",
    [
        [0, 1, 2, 0],
        [1, 0, np.nan, 0],
        [3, 3, 5, 5],
        [0.0, 1.0, 0.5, 1.0],
        [-1, 1, 0, 1],
    ],
)
def test_pair_labels_other_than_0_and_1_are_refused(same):
    from keras_siamese import roc_auc

    distances = [0.1, 0.2, 0.3, 0.4]
    for evaluate in (calibrate_threshold, verification_accuracy, roc_auc):
        with pytest.raises(ValueError, match="booleans or 0/1 numbers"):
            evaluate(distances, same)


def test_pair_labels_as_booleans_or_0_1_numbers_agree():
    distances = [0.1, 0.2, 0.3, 0.4]
    chosen = {
        calibrate_threshold(distances, same).threshold
        for same in (
            [1, 1, 0, 0],
            [1.0, 1.0, 0.0, 0.0],
            [True, True, False, False],
            np.array([1, 1, 0, 0], dtype=np.uint8),
        )
    }
    assert len(chosen) == 1


@pytest.mark.parametrize("target", TARGETS)
def test_a_verifier_saves_every_calibration_target(tmp_path, target):
    import keras

    encoder = keras.Sequential([keras.Input((2,)), keras.layers.Identity()])
    verifier = Verifier(encoder)
    x1 = np.array([[0, 0], [0, 0], [0, 0], [0, 0]], "float32")
    x2 = np.array([[0.1, 0], [0.3, 0], [0.5, 0], [0.7, 0]], "float32")
    value = None if target in ("accuracy", "f1") else 0.5
    calibration = verifier.calibrate(x1, x2, [1, 1, 0, 0], target=target, value=value)
    verifier.enroll(x1[:1], [7])
    verifier.save(tmp_path / "verifier")
    loaded = Verifier.load(tmp_path / "verifier")
    assert loaded.calibration == calibration
    assert loaded.calibration.target == target
