"""The one exact re-ranking step every engine's candidates go through."""

from __future__ import annotations

import numpy as np

from keras_siamese.distances import Distance
from keras_siamese.retrieval._search import exact_distances


def rerank(
    queries: np.ndarray,
    gallery: np.ndarray,
    candidates: np.ndarray,
    k: int,
    distance: Distance,
    exclude: np.ndarray | None = None,
) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
    """The `k` nearest of each query's candidates, by exact distance.

    Every candidate is measured with the distance's exact form in float64
    (`exact_distances`); the nearest come first, equal distances in the
    order of their row numbers, whichever engine proposed them and in
    whatever order.

    Args:
        queries: float32 `(n, dim)`.
        gallery: float32 `(m, dim)`.
        candidates: `(n, c)` integer row numbers; `-1`, rows of `m` or
            beyond, repeats and each query's `exclude` row are ignored.
        k: neighbours per query.
        distance: the distance.
        exclude: optionally, one row per query to leave out (`-1`: none).

    Returns:
        `(distances, indices, short)`: float64 and int64 `(n, k)` arrays,
        and the queries (an int64 array of their positions) that had fewer
        than `k` usable candidates, whose missing places hold `inf` and `-1`.
    """
    count = len(gallery)
    rows = np.sort(candidates.astype(np.int64, copy=False), axis=1)
    unusable = (rows < 0) | (rows >= count)
    unusable[:, 1:] |= rows[:, 1:] == rows[:, :-1]
    if exclude is not None:
        unusable |= rows == exclude[:, None]
    rows = np.where(unusable, -1, rows)
    distances = exact_distances(queries, gallery, np.maximum(rows, 0), distance)
    distances[unusable] = np.inf
    if rows.shape[1] < k:  # room for the places no candidate fills
        missing = k - rows.shape[1]
        rows = np.pad(rows, ((0, 0), (0, missing)), constant_values=-1)
        distances = np.pad(distances, ((0, 0), (0, missing)), constant_values=np.inf)
    # Unusable places sort last: after every distance, by a row past the end.
    order = np.lexsort((np.where(rows < 0, count, rows), distances), axis=-1)[:, :k]
    short = np.flatnonzero(np.count_nonzero(rows >= 0, axis=1) < k)
    return (
        np.take_along_axis(distances, order, axis=1),
        np.take_along_axis(rows, order, axis=1),
        short,
    )
