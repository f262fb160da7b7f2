"""Distance thresholds for verification, chosen on labelled pairs."""

from __future__ import annotations

import dataclasses
from typing import Any

import numpy as np

from keras_siamese._checks import check_choice, check_float, check_pair_distances

#: The criteria `calibrate_threshold` can aim for.
TARGETS = ("accuracy", "f1", "precision", "recall", "far")


@dataclasses.dataclass(frozen=True)
class Calibration:
    """A calibrated threshold and what it achieves on the pairs it came from.

    A pair is accepted as "same" when its distance is strictly below
    `threshold`.

    Attributes:
        threshold: the distance threshold.
        target: the criterion it was chosen for (`"accuracy"`, `"f1"`,
            `"precision"`, `"recall"` or `"far"`).
        value: the precision, recall or false-accept rate aimed for (`None`
            for accuracy and F1).
        accuracy: fraction of pairs decided correctly.
        precision: fraction of accepted pairs that are same pairs (1.0 when
            no pair is accepted).
        recall: fraction of same pairs accepted (true-accept rate).
        far: false-accept rate, the fraction of different pairs accepted.
        frr: false-reject rate, `1 - recall`.
        pairs: number of pairs calibrated on.

    Examples:
        >>> import numpy as np
        >>> from keras_siamese import calibrate_threshold
        >>> result = calibrate_threshold(
        ...     np.array([0.1, 0.2, 0.8, 0.9]), np.array([True, True, False, False])
        ... )
        >>> result.accuracy, result.far, result.pairs
        (1.0, 0.0, 4)
        >>> bool(0.2 < result.threshold <= 0.8)
        True
    """

    threshold: float
    target: str
    value: float | None
    accuracy: float
    precision: float
    recall: float
    far: float
    frr: float
    pairs: int

    def as_dict(self) -> dict[str, Any]:
        """The fields as a plain dict (JSON-serialisable)."""
        return dataclasses.asdict(self)


@dataclasses.dataclass(frozen=True)
class _Cuts:
    """Every way to split sorted distinct distances into accepted/rejected.

    Cut `i` accepts the pairs with the `i` smallest distinct distances.
    """

    values: np.ndarray
    accepted_same: np.ndarray
    accepted_different: np.ndarray
    same: int
    different: int

    @classmethod
    def of(cls, distances: Any, same: Any, user: str) -> _Cuts:
        """The cuts of validated pairs; `user` names the caller in errors.

        Raises:
            ValueError: as `check_pair_distances`, or for pairs all of one
                kind.
        """
        distances, same = check_pair_distances(distances, same, "same")
        values, inverse = np.unique(distances, return_inverse=True)
        at_same = np.bincount(inverse.reshape(-1), weights=same, minlength=values.size)
        at_all = np.bincount(inverse.reshape(-1), minlength=values.size)
        accepted_same = np.concatenate([[0], np.cumsum(at_same)]).astype(np.int64)
        accepted = np.concatenate([[0], np.cumsum(at_all)]).astype(np.int64)
        n_same = int(accepted_same[-1])
        if n_same in (0, distances.size):
            raise ValueError(
                f"{user} needs both same and different pairs; got {n_same} same "
                f"and {distances.size - n_same} different."
            )
        return cls(
            values=values,
            accepted_same=accepted_same,
            accepted_different=accepted - accepted_same,
            same=n_same,
            different=distances.size - n_same,
        )

    def correct(self) -> np.ndarray:
        return self.accepted_same + self.different - self.accepted_different

    def threshold(self, cut: int) -> float:
        """A threshold that accepts exactly the pairs of `cut`: a midpoint."""
        values = self.values
        if cut == 0:
            return float(values[0])
        if cut == values.size:
            return float(values[-1] + 1.0)
        return float((values[cut - 1] + values[cut]) / 2)

    def result(self, cut: int, target: str, value: float | None) -> Calibration:
        accepted_same = int(self.accepted_same[cut])
        accepted_different = int(self.accepted_different[cut])
        accepted = accepted_same + accepted_different
        pairs = self.same + self.different
        recall = accepted_same / self.same
        return Calibration(
            threshold=self.threshold(cut),
            target=target,
            value=value,
            accuracy=float(self.correct()[cut] / pairs),
            precision=accepted_same / accepted if accepted else 1.0,
            recall=recall,
            far=accepted_different / self.different,
            frr=1.0 - recall,
            pairs=pairs,
        )


def calibrate_threshold(
    distances: Any,
    same: Any,
    target: str = "accuracy",
    value: float | None = None,
) -> Calibration:
    """Choose the distance threshold of "same iff distance < threshold".

    From the distances of labelled pairs (`same` true for pairs of one class),
    every distinct cut of the sorted distances is scored at once (one sort,
    `O(n log n)`), and the threshold returned is the midpoint between the two
    distances the chosen cut separates:

    - `target="accuracy"`: the cut with the most pairs decided correctly (the
      smallest threshold on ties);
    - `target="f1"`: the cut with the highest F1 score of the same pairs
      (`2 * precision * recall / (precision + recall)`; the smallest
      threshold on ties), for sets where same pairs are rare and accuracy
      would favour rejecting everything;
    - `target="precision"`: the largest threshold whose precision (accepted
      pairs that are same pairs) is at least `value`;
    - `target="recall"`: the smallest threshold whose recall (same pairs
      accepted, the true-accept rate) is at least `value`: for a system
      that must accept most genuine users, rejecting as many others as that
      allows;
    - `target="far"`: the largest threshold whose false-accept rate
      (different pairs accepted) is at most `value`.

    Args:
        distances: one distance per pair, `n` finite numbers.
        same: `n` booleans (or 0/1), true for same-class pairs.
        target: `"accuracy"`, `"f1"`, `"precision"`, `"recall"` or `"far"`.
        value: the precision or recall in `(0, 1]`, or the false-accept
            rate in `[0, 1]`, to reach; must be `None` for `"accuracy"` and
            `"f1"`.

    Returns:
        A `Calibration` with the threshold and its accuracy, precision,
        recall, false-accept and false-reject rates on these pairs.

    Raises:
        TypeError: if `same` is not boolean or numeric, or `value` is not a
            number.
        ValueError: for an unknown target, a missing or out-of-range `value`,
            empty, non-finite or mismatched inputs, `same` values other than
            0 and 1 (class ids, NaN), pairs all of one kind, or a precision
            no threshold reaches.

    Examples:
        >>> result = calibrate_threshold([0.1, 0.3, 0.5, 0.7], [1, 1, 0, 0])
        >>> result.threshold, result.accuracy
        (0.4, 1.0)
        >>> result = calibrate_threshold(
        ...     [0.1, 0.2, 0.3, 0.4, 0.5], [1, 0, 1, 1, 0], target="far", value=0.0
        ... )
        >>> round(result.threshold, 2), result.recall
        (0.15, 0.3333333333333333)
        >>> result = calibrate_threshold(
        ...     [0.1, 0.2, 0.3, 0.4, 0.5], [1, 0, 1, 1, 0], target="recall", value=0.6
        ... )
        >>> round(result.threshold, 2), round(result.recall, 2), result.far
        (0.35, 0.67, 0.5)
    """
    target = check_choice(target, TARGETS, "target")
    if target in ("accuracy", "f1"):
        if value is not None:
            raise ValueError(
                f'`value` must be None for target="{target}"; it is the target '
                'precision, recall or false-accept rate of target="precision", '
                '"recall" or "far".'
            )
    elif value is None:
        raise ValueError(f'target="{target}" needs a `value` to reach.')
    elif target in ("precision", "recall"):
        value = check_float(value, "value", minimum=0.0, inclusive=False, maximum=1.0)
    else:
        value = check_float(value, "value", minimum=0.0, maximum=1.0)
    cuts = _Cuts.of(distances, same, "Calibration")
    if target == "accuracy":
        cut = int(np.argmax(cuts.correct()))
    elif target == "f1":
        # 2 TP / (2 TP + FP + FN), with TP + FP accepted and TP + FN = same.
        accepted = cuts.accepted_same + cuts.accepted_different
        cut = int(np.argmax(2 * cuts.accepted_same / (accepted + cuts.same)))
    elif target == "far":
        # The false-accept rate only grows with the threshold.
        allowed = cuts.accepted_different <= value * cuts.different
        cut = int(np.flatnonzero(allowed)[-1])
    elif target == "recall":
        # So does the recall; the last cut accepts every pair, so one reaches.
        cut = int(np.flatnonzero(cuts.accepted_same >= value * cuts.same)[0])
    else:
        accepted = cuts.accepted_same + cuts.accepted_different
        reached = cuts.accepted_same[1:] >= value * accepted[1:]
        if not reached.any():
            best = float(np.max(cuts.accepted_same[1:] / accepted[1:]))
            raise ValueError(
                f"No threshold reaches precision >= {value:g} on these pairs; the "
                f"highest precision of any threshold is {best:.4g}."
            )
        cut = int(np.flatnonzero(reached)[-1]) + 1
    return cuts.result(cut, target, value)
