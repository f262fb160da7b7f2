"""NumPy evaluation of a trained model over a whole set, outside the graph.

Verification (pairs): `verification_accuracy` picks the best distance
threshold and `roc_auc` scores the ranking of pair distances. Retrieval
(embeddings with class labels): `recall_at_k` and `map_at_r`, either
leave-one-out within one set or queries against a separate gallery.

Smaller distance always means "more similar". Distances between queries and
the gallery are computed in row chunks of about `chunk_bytes`, so a
10,000 x 10,000 evaluation never holds the full matrix.
"""

from __future__ import annotations

from collections.abc import Iterator

import numpy as np

from keras_siamese._checks import check_positive_int, renamed_argument
from keras_siamese.distances import check_distance

_CHUNK_BYTES = 64 * 2**20


def _pairs(distances: np.ndarray, labels: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
    distances = np.asarray(distances, dtype="float64").reshape(-1)
    labels = np.asarray(labels).reshape(-1)
    if distances.shape != labels.shape:
        raise ValueError(
            "`distances` and `labels` must hold one value per pair; got "
            f"{distances.size} distances and {labels.size} labels."
        )
    if distances.size == 0:
        raise ValueError("`distances` is empty.")
    if not np.all(np.isfinite(distances)):
        raise ValueError("`distances` must be finite.")
    return distances, labels > 0.5


def verification_accuracy(
    distances: np.ndarray, labels: np.ndarray
) -> tuple[float, float]:
    """Best accuracy of "similar iff distance < threshold", and that threshold.

    Every distinct split of the sorted distances is tried (`O(n log n)`); the
    returned threshold is the midpoint between the two distances it
    separates, so `PairAccuracy(threshold)` reproduces the accuracy.

    Args:
        distances: one distance per pair, any shape with `n` elements.
        labels: 1 for similar pairs, 0 for dissimilar, `n` elements.

    Returns:
        `(accuracy, threshold)`; on equal accuracies, the smallest threshold.

    Raises:
        ValueError: for empty, non-finite or mismatched inputs.

    Examples:
        >>> verification_accuracy([0.1, 0.4, 0.6, 0.9], [1, 1, 0, 0])
        (1.0, 0.5)
    """
    distances, similar = _pairs(distances, labels)
    values, inverse = np.unique(distances, return_inverse=True)
    similar_at = np.bincount(inverse, weights=similar, minlength=values.size)
    dissimilar_at = np.bincount(inverse, weights=~similar, minlength=values.size)
    # correct[0]: nothing predicted similar; correct[i + 1]: values[: i + 1].
    correct = (
        np.concatenate([[0.0], np.cumsum(similar_at)])
        + dissimilar_at.sum()
        - np.concatenate([[0.0], np.cumsum(dissimilar_at)])
    )
    best = int(np.argmax(correct))
    if best == 0:
        threshold = values[0]
    elif best == values.size:
        threshold = values[-1] + 1.0
    else:
        threshold = (values[best - 1] + values[best]) / 2
    return float(correct[best] / distances.size), float(threshold)


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
            non-finite or mismatched inputs.

    Examples:
        >>> roc_auc([0.1, 0.5, 0.5, 0.9], [1, 1, 0, 0])
        0.875
    """
    distances, similar = _pairs(distances, labels)
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


def _retrieval_sets(
    embeddings: np.ndarray,
    labels: np.ndarray,
    gallery_embeddings: np.ndarray | None,
    gallery_labels: np.ndarray | None,
) -> tuple[np.ndarray, np.ndarray, np.ndarray, np.ndarray, bool]:
    queries = np.asarray(embeddings, dtype="float64")
    query_labels = np.asarray(labels).reshape(-1)
    if queries.ndim != 2 or queries.shape[0] != query_labels.size:
        raise ValueError(
            "`embeddings` must be (n, dim) with one label each; got "
            f"{queries.shape} and {query_labels.size} labels."
        )
    if (gallery_embeddings is None) != (gallery_labels is None):
        raise ValueError(
            "Give both `gallery_embeddings` and `gallery_labels`, or neither."
        )
    if gallery_embeddings is None:
        return queries, query_labels, queries, query_labels, True
    gallery = np.asarray(gallery_embeddings, dtype="float64")
    gallery_labels = np.asarray(gallery_labels).reshape(-1)
    if gallery.ndim != 2 or gallery.shape != (gallery_labels.size, queries.shape[1]):
        raise ValueError(
            "`gallery_embeddings` must be (m, dim) with the queries' dim and one "
            f"label each; got {gallery.shape} and {gallery_labels.size} labels."
        )
    return queries, query_labels, gallery, gallery_labels, False


def _distance_chunks(
    queries: np.ndarray,
    gallery: np.ndarray,
    distance: str,
    leave_one_out: bool,
    chunk_bytes: int,
) -> Iterator[tuple[slice, np.ndarray]]:
    """Yield `(rows, distances)` for row blocks of the query-gallery matrix."""
    if distance == "cosine":

        def unit(x: np.ndarray) -> np.ndarray:
            norms = np.sqrt((x**2).sum(1, keepdims=True))
            return x / np.maximum(norms, 1e-6)

        queries, gallery = unit(queries), unit(gallery)
    gallery_squares = (gallery**2).sum(1)
    # The Manhattan distance needs every (query, item, feature) difference.
    row_bytes = 8 * max(gallery.shape[0], 1)
    if distance == "manhattan":
        row_bytes *= max(gallery.shape[1], 1)
    rows = max(1, chunk_bytes // row_bytes)
    for start in range(0, queries.shape[0], rows):
        block = slice(start, min(start + rows, queries.shape[0]))
        q = queries[block]
        if distance == "manhattan":
            distances = np.abs(q[:, None, :] - gallery[None, :, :]).sum(-1)
        elif distance == "cosine":
            distances = np.clip(1.0 - q @ gallery.T, 0.0, 2.0)
        else:
            distances = (q**2).sum(1, keepdims=True) - 2 * (q @ gallery.T)
            distances = np.maximum(distances + gallery_squares, 0.0)
            if distance == "euclidean":
                distances = np.sqrt(distances)
        if leave_one_out:
            local = np.arange(block.stop - block.start)
            distances[local, local + block.start] = np.inf
        yield block, distances


def _retrieval_blocks(
    embeddings: np.ndarray,
    labels: np.ndarray,
    gallery_embeddings: np.ndarray | None,
    gallery_labels: np.ndarray | None,
    distance: str,
    chunk_bytes: int,
) -> Iterator[tuple[np.ndarray, np.ndarray, int]]:
    """Blocks of query rows: `(distances, relevant, candidates)`.

    `relevant[i, j]` says gallery item `j` shares query `i`'s class (never the
    query itself under leave-one-out); `candidates` is how many gallery items
    a query can retrieve.
    """
    distance = check_distance(distance)
    queries, query_labels, gallery, reference, leave_one_out = _retrieval_sets(
        embeddings, labels, gallery_embeddings, gallery_labels
    )
    for block, distances in _distance_chunks(
        queries, gallery, distance, leave_one_out, chunk_bytes
    ):
        relevant = reference[None, :] == query_labels[block, None]
        if leave_one_out:
            local = np.arange(block.stop - block.start)
            relevant[local, local + block.start] = False
        yield distances, relevant, gallery.shape[0] - int(leave_one_out)


def recall_at_k(
    embeddings: np.ndarray,
    labels: np.ndarray,
    k: int = 1,
    gallery_embeddings: np.ndarray | None = None,
    gallery_labels: np.ndarray | None = None,
    distance: str = "euclidean",
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
        distance: `"euclidean"` (default), `"squared_euclidean"`, `"cosine"`
            or `"manhattan"`.
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
    hits, counted = 0, 0
    for distances, relevant, candidates in _retrieval_blocks(
        embeddings, labels, gallery_embeddings, gallery_labels, distance, chunk_bytes
    ):
        depth = min(k, candidates)
        if depth < 1:
            continue
        kth = np.partition(distances, depth - 1, axis=1)[:, depth - 1 : depth]
        nearer = distances < kth
        tied = distances == kth
        room = depth - nearer.sum(1, keepdims=True)
        chosen = nearer | (tied & (np.cumsum(tied, axis=1) <= room))
        has_relevant = relevant.any(1)
        hits += int((chosen & relevant).any(1)[has_relevant].sum())
        counted += int(has_relevant.sum())
    if counted == 0:
        raise ValueError("No query has a same-class item in the gallery.")
    return hits / counted


def map_at_r(
    embeddings: np.ndarray,
    labels: np.ndarray,
    gallery_embeddings: np.ndarray | None = None,
    gallery_labels: np.ndarray | None = None,
    distance: str = "euclidean",
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
        distance: `"euclidean"` (default), `"squared_euclidean"`, `"cosine"`
            or `"manhattan"`.
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
    total, counted = 0.0, 0
    for distances, relevant, _ in _retrieval_blocks(
        embeddings, labels, gallery_embeddings, gallery_labels, distance, chunk_bytes
    ):
        r = relevant.sum(1)
        depth = int(r.max()) if r.size else 0
        if depth == 0:
            continue
        order = np.argsort(distances, axis=1, kind="stable")[:, :depth]
        retrieved = np.take_along_axis(relevant, order, axis=1)
        ranks = np.arange(1, depth + 1)
        within = ranks[None, :] <= r[:, None]
        precision = np.cumsum(retrieved, axis=1) / ranks
        kept = r > 0
        ap = (precision * retrieved * within).sum(1)[kept] / r[kept]
        total += float(ap.sum())
        counted += int(kept.sum())
    if counted == 0:
        raise ValueError("No query has a same-class item in the gallery.")
    return total / counted
