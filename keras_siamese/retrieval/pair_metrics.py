"""Verification quality of labelled pairs: best-threshold and ranking figures."""

from __future__ import annotations

from typing import Any

import numpy as np

from keras_siamese._checks import check_bool
from keras_siamese.retrieval.calibration import _Cuts

#: The keys of `pair_metrics`' result, in order.
PAIR_METRICS = (
    "accuracy",
    "accuracy_threshold",
    "f1",
    "f1_threshold",
    "precision",
    "recall",
    "average_precision",
    "mcc",
    "roc_auc",
)


def _matthews(tp: int, fp: int, fn: int, tn: int) -> float:
    """Matthews correlation of a confusion matrix; 0 where a margin is empty."""
    denominator = float(tp + fp) * (tp + fn) * (tn + fp) * (tn + fn)
    if denominator == 0.0:
        return 0.0
    return float((tp * tn - fp * fn) / np.sqrt(denominator))


def pair_metrics(
    distances: Any, same: Any, *, higher_is_similar: bool = False
) -> dict[str, float]:
    """Accuracy, F1, average precision, MCC and ROC AUC of labelled pairs.

    `distances` holds one score per pair, smaller for more similar pairs
    (a distance); with `higher_is_similar=True` they are similarities
    (larger for more similar pairs) and the thresholds are returned in the
    same units. A pair is predicted "same" when its distance is below the
    threshold (its similarity above it).

    The thresholds are those of sentence-transformers'
    `BinaryClassificationEvaluator`: the candidates are the midpoints
    between consecutive sorted scores, and the best is the first (smallest
    distance, largest similarity) to reach the highest value. Scores that
    tie are never split: the candidates are the midpoints between
    consecutive *distinct* scores, so every threshold reported achieves the
    value reported with it (where all scores differ, the figures are
    sentence-transformers' exactly).

    - `accuracy`, `accuracy_threshold`: the best fraction of pairs decided
      correctly, and its threshold;
    - `f1`, `f1_threshold`: the best F1 score of the same pairs, and its
      threshold; `precision` and `recall` are those at `f1_threshold`;
    - `average_precision`: the area under the precision-recall curve with
      the same pairs as positives, as scikit-learn's
      `average_precision_score` (`sum_n (R_n - R_{n-1}) P_n` over the
      distinct scores);
    - `mcc`: the Matthews correlation of the decisions at `f1_threshold`
      (0 where a row or column of the confusion matrix is empty, as
      scikit-learn's `matthews_corrcoef`);
    - `roc_auc`: the area under the ROC curve (tied scores count one half),
      as scikit-learn's `roc_auc_score`.

    Args:
        distances: one score per pair, `n` finite numbers.
        same: `n` booleans (or 0/1), true for same-class pairs.
        higher_is_similar: the scores are similarities, not distances.

    Returns:
        A dict with the keys of `PAIR_METRICS`, Python floats.

    Raises:
        TypeError: if `same` is not boolean or numeric, or
            `higher_is_similar` is not a boolean.
        ValueError: for empty, non-finite or mismatched inputs, `same`
            values other than 0 and 1 (class ids, NaN), pairs all of one
            kind, or scores all equal (no threshold separates anything).

    Examples:
        >>> scores = pair_metrics([0.1, 0.4, 0.35, 0.8], [1, 1, 0, 0])
        >>> {name: round(value, 4) for name, value in scores.items()}  # doctest: +NORMALIZE_WHITESPACE
        {'accuracy': 0.75, 'accuracy_threshold': 0.225, 'f1': 0.8,
         'f1_threshold': 0.6, 'precision': 0.6667, 'recall': 1.0,
         'average_precision': 0.8333, 'mcc': 0.5774, 'roc_auc': 0.75}
        >>> scores = pair_metrics([0.9, 0.6, 0.65, 0.2], [1, 1, 0, 0], higher_is_similar=True)
        >>> round(scores["accuracy_threshold"], 4)
        0.775
    """
    higher_is_similar = check_bool(higher_is_similar, "higher_is_similar")
    sign = -1.0 if higher_is_similar else 1.0
    if higher_is_similar:
        # Similarities as distances; the thresholds are turned back below.
        distances = -np.asarray(distances, dtype=np.float64)
    cuts = _Cuts.of(distances, same, "pair_metrics")
    if cuts.values.size < 2:
        raise ValueError(
            "pair_metrics needs at least two distinct distances; all "
            f"{cuts.same + cuts.different} pairs are at {sign * cuts.values[0]:g}."
        )
    pairs = cuts.same + cuts.different
    tp = cuts.accepted_same
    accepted = tp + cuts.accepted_different
    # The thresholds lie between two distinct values: cuts 1 .. values - 1.
    inner = slice(1, cuts.values.size)
    best_accuracy = int(np.argmax(cuts.correct()[inner])) + 1
    f1 = 2.0 * tp / (accepted + cuts.same)
    best_f1 = int(np.argmax(f1[inner])) + 1
    positives = tp[best_f1]
    false_positives = int(cuts.accepted_different[best_f1])
    # Each distinct value adds its same pairs to the recall at its precision.
    gained = np.diff(tp)
    average_precision = float(np.sum(gained / cuts.same * tp[1:] / accepted[1:]))
    tpr = tp / cuts.same
    fpr = cuts.accepted_different / cuts.different
    roc_auc = float(np.sum(np.diff(fpr) * (tpr[1:] + tpr[:-1]) / 2.0))
    return {
        "accuracy": float(cuts.correct()[best_accuracy] / pairs),
        "accuracy_threshold": sign * cuts.threshold(best_accuracy),
        "f1": float(f1[best_f1]),
        "f1_threshold": sign * cuts.threshold(best_f1),
        "precision": float(positives / accepted[best_f1]),
        "recall": float(positives / cuts.same),
        "average_precision": average_precision,
        "mcc": _matthews(
            int(positives),
            false_positives,
            cuts.same - int(positives),
            cuts.different - false_positives,
        ),
        "roc_auc": roc_auc,
    }
