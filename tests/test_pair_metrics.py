"""pair_metrics: a brute force over thresholds, scikit-learn, sentence-transformers."""

from __future__ import annotations

import numpy as np
import pytest
from hypothesis import given
from hypothesis import strategies as st
from hypothesis.extra import numpy as hnp

from keras_siamese.retrieval import PAIR_METRICS, pair_metrics

# Few distinct values, so that ties are common.
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
    .filter(lambda data: np.unique(data[0]).size > 1)
)


def brute_force(distances, same):
    """Every midpoint between distinct distances tried; first best kept."""
    values = np.unique(distances)
    best = {"accuracy": (-1.0, None), "f1": (-1.0, None)}
    for threshold in (values[1:] + values[:-1]) / 2:
        accepted = distances < threshold
        tp = np.sum(accepted & same)
        accuracy = np.mean(accepted == same)
        f1 = 2 * tp / (accepted.sum() + same.sum())
        for name, value in (("accuracy", accuracy), ("f1", f1)):
            if value > best[name][0]:
                best[name] = (value, threshold)
    threshold = best["f1"][1]
    accepted = distances < threshold
    tp = np.sum(accepted & same)
    fp = np.sum(accepted & ~same)
    fn = np.sum(~accepted & same)
    tn = np.sum(~accepted & ~same)
    denominator = np.sqrt(float((tp + fp) * (tp + fn) * (tn + fp) * (tn + fn)))
    # Average precision: sum over distinct values, nearest first, of the
    # recall gained times the precision there.
    ap, previous_recall = 0.0, 0.0
    for value in values:
        accepted_here = distances <= value
        tp_here = np.sum(accepted_here & same)
        recall = tp_here / same.sum()
        ap += (recall - previous_recall) * tp_here / accepted_here.sum()
        previous_recall = recall
    # ROC AUC: the chance that a same pair is nearer than a different one,
    # ties counting one half.
    near = distances[same][:, None] < distances[~same][None, :]
    tie = distances[same][:, None] == distances[~same][None, :]
    return {
        "accuracy": best["accuracy"][0],
        "accuracy_threshold": best["accuracy"][1],
        "f1": best["f1"][0],
        "f1_threshold": threshold,
        "precision": tp / (tp + fp),
        "recall": tp / same.sum(),
        "average_precision": ap,
        "mcc": 0.0 if denominator == 0 else (tp * tn - fp * fn) / denominator,
        "roc_auc": np.mean(near + 0.5 * tie),
    }


def test_hand_computed_values():
    # Sorted: 0.1 same, 0.35 different, 0.4 same, 0.8 different.
    got = pair_metrics([0.1, 0.4, 0.35, 0.8], [1, 1, 0, 0])
    assert list(got) == list(PAIR_METRICS)
    assert got == pytest.approx(
        {
            "accuracy": 0.75,  # first reached below 0.35
            "accuracy_threshold": 0.225,
            "f1": 0.8,  # P = 2/3, R = 1 below 0.8
            "f1_threshold": 0.6,
            "precision": 2 / 3,
            "recall": 1.0,
            "average_precision": (1 + 2 / 3) / 2,
            "mcc": (2 * 1 - 1 * 0) / np.sqrt(3 * 2 * 1 * 2),
            "roc_auc": 0.75,
        }
    )


@given(data=pair_sets)
def test_equals_a_brute_force_over_thresholds(data):
    distances, same = data
    got = pair_metrics(distances, same)
    assert got == pytest.approx(brute_force(distances, same))
    # Similarities (the negated distances) give the same figures, with the
    # thresholds in their units.
    flipped = pair_metrics(-distances, same, higher_is_similar=True)
    for name in PAIR_METRICS:
        sign = -1 if name.endswith("threshold") else 1
        assert flipped[name] == pytest.approx(sign * got[name])


@given(data=pair_sets)
def test_equals_scikit_learn(data):
    metrics = pytest.importorskip("sklearn.metrics")
    distances, same = data
    got = pair_metrics(distances, same)
    assert got["average_precision"] == pytest.approx(
        metrics.average_precision_score(same, -distances)
    )
    assert got["roc_auc"] == pytest.approx(metrics.roc_auc_score(same, -distances))
    decided = distances < got["f1_threshold"]
    assert got["mcc"] == pytest.approx(metrics.matthews_corrcoef(same, decided))
    assert got["f1"] == pytest.approx(metrics.f1_score(same, decided))
    assert got["precision"] == pytest.approx(metrics.precision_score(same, decided))
    assert got["recall"] == pytest.approx(metrics.recall_score(same, decided))
    assert got["accuracy"] == pytest.approx(
        metrics.accuracy_score(same, distances < got["accuracy_threshold"])
    )


@pytest.mark.parametrize("seed", range(4))
@pytest.mark.parametrize("higher_is_similar", [False, True])
def test_equals_sentence_transformers(seed, higher_is_similar):
    """With distinct scores, the figures are the evaluator's (torch env only)."""
    evaluation = pytest.importorskip("sentence_transformers.evaluation")
    metrics = pytest.importorskip("sklearn.metrics")
    evaluator = evaluation.BinaryClassificationEvaluator
    rng = np.random.default_rng(seed)
    same = rng.random(60) < 0.3
    scores = rng.normal(size=60) + np.where(same, -1.0, 0.0)
    if higher_is_similar:
        scores = -scores
    got = pair_metrics(scores, same, higher_is_similar=higher_is_similar)
    labels = same.astype(int)
    accuracy, accuracy_threshold = evaluator.find_best_acc_and_threshold(
        scores, labels, higher_is_similar
    )
    f1, precision, recall, f1_threshold = evaluator.find_best_f1_and_threshold(
        scores, labels, higher_is_similar
    )
    sign = 1 if higher_is_similar else -1
    decided = scores >= f1_threshold if higher_is_similar else scores <= f1_threshold
    expected = {
        "accuracy": accuracy,
        "accuracy_threshold": accuracy_threshold,
        "f1": f1,
        "f1_threshold": f1_threshold,
        "precision": precision,
        "recall": recall,
        "average_precision": metrics.average_precision_score(labels, sign * scores),
        "mcc": metrics.matthews_corrcoef(labels, decided),
    }
    assert {name: got[name] for name in expected} == pytest.approx(expected)


def test_ties_are_never_split():
    # Three pairs at 0.5, one same: a cut inside them is no threshold.
    got = pair_metrics([0.5, 0.5, 0.5, 1.0], [1, 0, 0, 1])
    assert got["accuracy_threshold"] == 0.75
    assert got["accuracy"] == 0.25


def test_bad_input_is_refused():
    with pytest.raises(ValueError, match="0/1"):
        pair_metrics([0.1, 0.2], [0, 2])
    with pytest.raises(ValueError, match="0/1"):
        pair_metrics([0.1, 0.2], [0, np.nan])
    with pytest.raises(ValueError, match="finite"):
        pair_metrics([0.1, np.nan], [0, 1])
    with pytest.raises(ValueError, match="both same and different"):
        pair_metrics([0.1, 0.2], [1, 1])
    with pytest.raises(ValueError, match="one value per pair"):
        pair_metrics([0.1, 0.2, 0.3], [0, 1])
    with pytest.raises(ValueError, match="two distinct distances"):
        pair_metrics([0.3, 0.3], [0, 1])
    with pytest.raises(TypeError, match="booleans or 0/1"):
        pair_metrics([0.1, 0.2], ["a", "b"])
    with pytest.raises(TypeError, match="higher_is_similar"):
        pair_metrics([0.1, 0.2], [0, 1], higher_is_similar=1)
