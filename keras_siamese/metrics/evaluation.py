"""NumPy evaluation of a trained model over a whole set, outside the graph.

Verification (pairs): `verification_accuracy` picks the best distance
threshold and `roc_auc` scores the ranking of pair distances. Retrieval
(embeddings with class labels): `recall_at_k` and `map_at_r`, either
leave-one-out within one set or queries against a separate gallery.

Smaller distance always means "more similar". The retrieval metrics share
their engine with `keras_siamese.retrieval.retrieval_metrics`: exact nearest
neighbours computed on the Keras backend in blocks of about `chunk_bytes`, so
a 10,000 x 10,000 evaluation never holds the full matrix.
"""

from __future__ import annotations

from typing import Any

import numpy as np

from keras_siamese._checks import (
    check_pair_distances,
    check_positive_int,
    renamed_argument,
)
from keras_siamese.distances import Distance
from keras_siamese.retrieval._search import DEFAULT_BLOCK_BYTES as _CHUNK_BYTES
from keras_siamese.retrieval.calibration import best_accuracy_cut
from keras_siamese.retrieval.metrics import RetrievalSet, average_precision_at_r

_NAMES = ("embeddings", "labels", "gallery_embeddings", "gallery_labels")


def verification_accuracy(
    distances: np.ndarray, labels: np.ndarray
) -> tuple[float, float]:
    """Best accuracy of "similar iff distance < threshold", and that threshold.

    Every distinct split of the sorted distances is tried (`O(n log n)`); the
    returned threshold is the midpoint between the two distances it
    separates, so `PairAccuracy(threshold)` reproduces the accuracy. This is
    `keras_siamese.calibrate_threshold(target="accuracy")`, which also reports
    precision and error rates and can aim for a precision or false-accept
    rate instead.

    Args:
        distances: one distance per pair, any shape with `n` elements.
        labels: 1 for similar pairs, 0 for dissimilar, `n` elements.

    Returns:
        `(accuracy, threshold)`; on equal accuracies, the smallest threshold.

    Raises:
        ValueError: for empty, non-finite or mismatched inputs, or labels
            other than 0 and 1 (class ids, NaN).
        TypeError: for labels that are not booleans or numbers.

    Examples:
        >>> verification_accuracy([0.1, 0.4, 0.6, 0.9], [1, 1, 0, 0])
        (1.0, 0.5)
    """
    distances, similar = check_pair_distances(distances, labels)
    return best_accuracy_cut(distances, similar)


def roc_auc(distances: np.ndarray, labels: np.ndarray) -> float:
    """Area under the ROC curve of pair distances (smaller = more similar).

    The probability that a random similar pair is nearer than a random
    dissimilar pair, ties counting one half (the Mann-Whitney statistic with
    mid-ranks), so tied distances are neither rewarded nor punished.

    Args:
        distances: one distance per pair.
        labels: 1 for similar pairs, 0 for dissimilar.

    Returns:
        The AUC in `[0, 1]`.

    Raises:
        ValueError: if only one kind of pair is present, or for empty,
            non-finite or mismatched inputs, or labels other than 0 and 1.
        TypeError: for labels that are not booleans or numbers.

    Examples:
        >>> roc_auc([0.1, 0.5, 0.5, 0.9], [1, 1, 0, 0])
        0.875
    """
    distances, similar = check_pair_distances(distances, labels)
    n_similar = int(similar.sum())
    n_dissimilar = similar.size - n_similar
    if n_similar == 0 or n_dissimilar == 0:
        raise ValueError("`labels` must contain both similar (1) and dissimilar (0).")
    _, inverse, counts = np.unique(distances, return_inverse=True, return_counts=True)
    first_rank = np.concatenate([[0], np.cumsum(counts)[:-1]]) + 1
    mid_ranks = (first_rank + (counts - 1) / 2.0)[inverse]
    # Ranked by increasing distance, a dissimilar pair's rank counts the
    # similar pairs before it.
    u = mid_ranks[~similar].sum() - n_dissimilar * (n_dissimilar + 1) / 2.0
    return float(u / (n_similar * n_dissimilar))


def recall_at_k(
    embeddings: Any,
    labels: Any,
    k: int = 1,
    gallery_embeddings: Any | None = None,
    gallery_labels: Any | None = None,
    distance: str | Distance = "euclidean",
    chunk_bytes: int = _CHUNK_BYTES,
    *,
    metric: str | None = None,
) -> float:
    """Fraction of queries with a same-class item among their `k` nearest.

    Without a gallery, every embedding is a query against all the others
    (leave-one-out). Queries with no same-class item to find are left out of
    the mean. Ties at the `k`-th distance are broken by gallery order.

    Args:
        embeddings: queries, `(n, dim)`.
        labels: their class labels, `(n,)`.
        k: how many neighbours to look at, `>= 1`.
        gallery_embeddings: optional gallery `(m, dim)` to search instead.
        gallery_labels: its labels `(m,)`.
        distance: `"euclidean"` (default), `"squared_euclidean"`, `"cosine"`,
            `"manhattan"`, or a `Distance` with the forms search needs.
        chunk_bytes: memory for one block of query rows' distances.
        metric: deprecated name of `distance` (0.1.0).

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
    k = check_positive_int(k, "k")
    distance = renamed_argument(
        distance, metric, "distance", "metric", "euclidean", "recall_at_k"
    )
    problem = RetrievalSet.build(
        embeddings,
        labels,
        gallery_embeddings,
        gallery_labels,
        distance,
        chunk_bytes,
        _NAMES,
    )
    answerable = problem.require_relevant()
    hits = 0
    for rows, found in problem.hits(k):
        hits += int(found[answerable[rows]].any(axis=1).sum())
    return hits / int(answerable.sum())


def map_at_r(
    embeddings: Any,
    labels: Any,
    gallery_embeddings: Any | None = None,
    gallery_labels: Any | None = None,
    distance: str | Distance = "euclidean",
    chunk_bytes: int = _CHUNK_BYTES,
    *,
    metric: str | None = None,
) -> float:
    """Mean average precision at R (Musgrave et al., 2020).

    For a query with `R` same-class items in the gallery, look at its `R`
    nearest: `AP@R = (1 / R) * sum_i P@i * [item i is relevant]`. Queries with
    `R = 0` are left out; ties are broken by gallery order. Leave-one-out
    without a gallery, as in `recall_at_k`.

    Args:
        embeddings: queries, `(n, dim)`.
        labels: their class labels, `(n,)`.
        gallery_embeddings: optional gallery `(m, dim)`.
        gallery_labels: its labels `(m,)`.
        distance: `"euclidean"` (default), `"squared_euclidean"`, `"cosine"`,
            `"manhattan"`, or a `Distance` with the forms search needs.
        chunk_bytes: memory for one block of query rows' distances.
        metric: deprecated name of `distance` (0.1.0).

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
    distance = renamed_argument(
        distance, metric, "distance", "metric", "euclidean", "map_at_r"
    )
    problem = RetrievalSet.build(
        embeddings,
        labels,
        gallery_embeddings,
        gallery_labels,
        distance,
        chunk_bytes,
        _NAMES,
    )
    answerable = problem.require_relevant()
    total = 0.0
    for rows, found in problem.hits("relevant"):
        keep = answerable[rows]
        total += float(
            average_precision_at_r(found[keep], problem.relevant[rows][keep]).sum()
        )
    return total / int(answerable.sum())
