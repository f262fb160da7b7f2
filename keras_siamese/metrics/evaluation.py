"""NumPy evaluation of a trained model over a whole set, outside the graph.

Verification (pairs): `verification_accuracy` picks the best distance
threshold and `roc_auc` scores the ranking of pair distances. Retrieval
(embeddings with class labels): `recall_at_k` and `map_at_r`, either
leave-one-out within one set or queries against separate references.

Smaller distance always means "more similar". These are one-number forms of
`keras_siamese.calibrate_threshold` and `keras_siamese.retrieval_metrics`,
which they call: one definition of each number, whichever function reports
it.
"""

from __future__ import annotations

from typing import Any

import numpy as np

from keras_siamese._checks import check_pair_distances, check_positive_int
from keras_siamese.distances import Distance
from keras_siamese.retrieval._search import DEFAULT_BLOCK_BYTES
from keras_siamese.retrieval.calibration import calibrate_threshold
from keras_siamese.retrieval.metrics import retrieval_metrics


def verification_accuracy(distances: Any, same: Any) -> tuple[float, float]:
    """Best accuracy of "same iff distance < threshold", and that threshold.

    The accuracy and threshold of
    `keras_siamese.calibrate_threshold(distances, same, target="accuracy")`,
    which also reports precision and error rates and can aim for a precision
    or false-accept rate instead. Every distinct split of the sorted
    distances is tried (`O(n log n)`); the threshold is the midpoint between
    the two distances it separates, so `PairAccuracy(threshold)` reproduces
    the accuracy.

    Args:
        distances: one distance per pair, any shape with `n` elements.
        same: `n` booleans (or 0/1), true for pairs of one class.

    Returns:
        `(accuracy, threshold)`; on equal accuracies, the smallest threshold.

    Raises:
        ValueError: for empty, non-finite or mismatched inputs, `same`
            values other than 0 and 1 (class ids, NaN), or pairs all of one
            kind (any threshold beyond them would be "best").
        TypeError: for `same` values that are not booleans or numbers.

    Examples:
        >>> verification_accuracy([0.1, 0.4, 0.6, 0.9], [1, 1, 0, 0])
        (1.0, 0.5)
    """
    calibration = calibrate_threshold(distances, same, target="accuracy")
    return calibration.accuracy, calibration.threshold


def roc_auc(distances: Any, same: Any) -> float:
    """Area under the ROC curve of pair distances (smaller = more similar).

    The probability that a random same pair is nearer than a random
    different pair, ties counting one half (the Mann-Whitney statistic with
    mid-ranks), so tied distances are neither rewarded nor punished.

    Args:
        distances: one distance per pair.
        same: booleans (or 0/1), true for pairs of one class.

    Returns:
        The AUC in `[0, 1]`.

    Raises:
        ValueError: if only one kind of pair is present, or for empty,
            non-finite or mismatched inputs, or `same` values other than 0
            and 1.
        TypeError: for `same` values that are not booleans or numbers.

    Examples:
        >>> roc_auc([0.1, 0.5, 0.5, 0.9], [1, 1, 0, 0])
        0.875
    """
    distances, same = check_pair_distances(distances, same, "same")
    n_same = int(same.sum())
    n_different = same.size - n_same
    if n_same == 0 or n_different == 0:
        raise ValueError("`same` must contain both same (1) and different (0) pairs.")
    _, inverse, counts = np.unique(distances, return_inverse=True, return_counts=True)
    first_rank = np.concatenate([[0], np.cumsum(counts)[:-1]]) + 1
    mid_ranks = (first_rank + (counts - 1) / 2.0)[inverse]
    # Ranked by increasing distance, a different pair's rank counts the
    # same pairs before it.
    u = mid_ranks[~same].sum() - n_different * (n_different + 1) / 2.0
    return float(u / (n_same * n_different))


def recall_at_k(
    embeddings: Any,
    labels: Any,
    k: int = 1,
    references: Any | None = None,
    reference_labels: Any | None = None,
    distance: str | Distance = "euclidean",
    *,
    block_bytes: int = DEFAULT_BLOCK_BYTES,
) -> float:
    """Fraction of queries with a same-class item among their `k` nearest.

    The `recall_at_<k>` of `keras_siamese.retrieval_metrics`, which it calls.
    Every embedding is a query; without references, against all the other
    embeddings (leave-one-out). Queries with no same-class item to find are
    left out of the mean. Ties at the `k`-th distance are broken by reference
    order.

    Args:
        embeddings: queries, `(n, dim)`.
        labels: their class labels, `(n,)`.
        k: how many neighbours to look at, `>= 1`.
        references: optional `(m, dim)` embeddings to search instead.
        reference_labels: their labels `(m,)`.
        distance: `"euclidean"` (default), `"squared_euclidean"`, `"cosine"`,
            `"manhattan"`, or a `Distance` with the forms search needs.
        block_bytes: memory budget of one block of scores on the device.

    Returns:
        Recall@k in `[0, 1]`.

    Raises:
        TypeError: if `k` is not an integer.
        ValueError: for bad shapes, `k < 1`, an unknown distance, or no query
            that has a same-class item.

    Examples:
        >>> import numpy as np
        >>> x = np.array([[0.0], [0.1], [5.0], [5.2], [0.15]])
        >>> recall_at_k(x, np.array([0, 0, 1, 1, 1]), k=1)
        0.6
    """
    name = f"recall_at_{check_positive_int(k, 'k')}"
    return retrieval_metrics(
        embeddings,
        labels,
        references,
        reference_labels,
        distance,
        metrics=(name,),
        block_bytes=block_bytes,
    )[name]


def map_at_r(
    embeddings: Any,
    labels: Any,
    references: Any | None = None,
    reference_labels: Any | None = None,
    distance: str | Distance = "euclidean",
    *,
    block_bytes: int = DEFAULT_BLOCK_BYTES,
) -> float:
    """Mean average precision at R (Musgrave et al., 2020).

    The `map_at_r` of `keras_siamese.retrieval_metrics`, which it calls. For
    a query with `R` same-class references, look at its `R` nearest:
    `AP@R = (1 / R) * sum_i P@i * [item i is relevant]`. Queries with `R = 0`
    are left out; ties are broken by reference order. Leave-one-out without
    references, as in `recall_at_k`.

    Args:
        embeddings: queries, `(n, dim)`.
        labels: their class labels, `(n,)`.
        references: optional `(m, dim)` embeddings to search instead.
        reference_labels: their labels `(m,)`.
        distance: `"euclidean"` (default), `"squared_euclidean"`, `"cosine"`,
            `"manhattan"`, or a `Distance` with the forms search needs.
        block_bytes: memory budget of one block of scores on the device.

    Returns:
        MAP@R in `[0, 1]`.

    Raises:
        ValueError: for bad shapes, an unknown distance, or no query with a
            same-class item.

    Examples:
        >>> import numpy as np
        >>> x = np.array([[0.0], [0.1], [5.0], [5.2]])
        >>> map_at_r(x, np.array([0, 0, 1, 1]))
        1.0
    """
    return retrieval_metrics(
        embeddings,
        labels,
        references,
        reference_labels,
        distance,
        metrics=("map_at_r",),
        block_bytes=block_bytes,
    )["map_at_r"]
