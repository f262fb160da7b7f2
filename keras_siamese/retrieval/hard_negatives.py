"""Hard negatives of queries: their nearest corpus rows that are not positives."""

from __future__ import annotations

from collections.abc import Iterable
from typing import Any

import keras
import numpy as np

from keras_siamese import distances as _distances
from keras_siamese._checks import check_positive_int
from keras_siamese.retrieval._corpus import corpus_index
from keras_siamese.retrieval._search import DEFAULT_BLOCK_BYTES

# Neighbour indices held per search call: queries are searched in chunks
# of about this many `(query, neighbour)` entries.
_CHUNK_ENTRIES = 2**20


def _positive_sets(positives: Any, queries: int, corpus: int) -> list[np.ndarray]:
    """Each query's positive corpus rows, as sorted unique int64 arrays."""
    if hasattr(positives, "numpy") and not isinstance(positives, np.ndarray):
        positives = keras.ops.convert_to_numpy(positives)
    if isinstance(positives, np.ndarray):
        if positives.dtype.kind not in "iu" or positives.dtype == bool:
            raise TypeError(
                "`positives` must hold integer corpus row numbers; got dtype "
                f"{positives.dtype}."
            )
        if positives.ndim not in (1, 2):
            raise ValueError(
                "`positives` must be an array of shape (queries,) or "
                f"(queries, p), or one collection per query; got shape "
                f"{positives.shape}."
            )
        positives = positives.reshape(len(positives), -1)
    elif isinstance(positives, (str, bytes)) or not isinstance(positives, Iterable):
        raise TypeError(
            "`positives` must hold, for each query, its positive corpus row "
            f"numbers; got {type(positives).__name__}."
        )
    positives = list(positives)
    if len(positives) != queries:
        raise ValueError(
            f"`positives` must hold one entry per query ({queries}); got "
            f"{len(positives)}."
        )
    sets = []
    for row, ids in enumerate(positives):
        if isinstance(ids, (int, np.integer)) and not isinstance(ids, bool):
            ids = [ids]
        if isinstance(ids, (str, bytes)) or not isinstance(ids, Iterable):
            raise TypeError(
                f"`positives[{row}]` must be a row number or a collection of "
                f"them; got {ids!r}."
            )
        ids = np.asarray(list(ids))
        if ids.size and (ids.dtype.kind not in "iu" or ids.dtype == bool):
            raise TypeError(
                f"`positives[{row}]` must hold integer corpus row numbers; got "
                f"dtype {ids.dtype}."
            )
        ids = np.unique(ids.astype(np.int64))
        if ids.size and (ids[0] < 0 or ids[-1] >= corpus):
            raise ValueError(
                f"`positives[{row}]` must hold corpus row numbers in "
                f"[0, {corpus}); got {ids[0] if ids[0] < 0 else ids[-1]}."
            )
        sets.append(ids)
    return sets


def mine_hard_negatives(
    queries: Any,
    corpus: Any,
    positives: Any,
    k: int = 1,
    *,
    distance: str | _distances.Distance | None = None,
    block_bytes: int = DEFAULT_BLOCK_BYTES,
) -> np.ndarray:
    """The `k` nearest corpus rows of each query that are not its positives.

    The hard negatives of a ranking loss (`MultipleNegativesRankingLoss`
    takes them as extra columns): for each query, the corpus rows the
    current embeddings rank highest without being answers, nearest first,
    ties broken by the lower row number, as `EmbeddingIndex.search` ranks
    them; its positives are left out, as sentence-transformers'
    `mine_hard_negatives` leaves out each query's positive. Rows that are
    relevant without being listed (a second photo of the same product)
    are not known here: list them among the positives to leave them out
    too. Queries are searched in chunks, so memory stays bounded whatever
    the corpus size.

    Args:
        queries: `(n, dim)` query embeddings.
        corpus: `(m, dim)` corpus embeddings, or an `EmbeddingIndex` holding
            them (searched with its own distance and engine).
        positives: for each query, the corpus rows to leave out: an integer
            array `(n,)` (one row each) or `(n, p)`, or a sequence of `n`
            row numbers or collections of them (possibly empty).
        k: hard negatives per query; every query needs at least `k` corpus
            rows that are not its positives.
        distance: for corpus embeddings, `"euclidean"` (the default),
            `"squared_euclidean"`, `"cosine"`, `"manhattan"` or a
            `Distance`; must be left out (or equal the index's) for an
            `EmbeddingIndex`.
        block_bytes: for corpus embeddings, the memory budget of one block
            of scores of the exact search.

    Returns:
        An int64 array `(n, k)` of corpus row numbers, nearest first.

    Raises:
        TypeError: for a non-integer `k`, non-numeric embeddings, or
            positives that are not integer row numbers.
        ValueError: for `k < 1`, an empty corpus, a query with fewer than
            `k` corpus rows besides its positives, a positive outside the
            corpus, `positives` of another length than the queries, bad
            embedding shapes or values, or a `distance` that differs from
            the index's.

    Examples:
        >>> import numpy as np
        >>> corpus = np.array([[0.0], [1.0], [2.0], [3.0]])
        >>> queries = np.array([[0.9], [2.8]])
        >>> mine_hard_negatives(queries, corpus, positives=[1, 3], k=2).tolist()
        [[0, 2], [2, 1]]
    """
    k = check_positive_int(k, "k")
    index, queries = corpus_index(
        queries, corpus, distance, block_bytes, "mine_hard_negatives"
    )
    size = len(index)
    sets = _positive_sets(positives, len(queries), size)
    counts = np.array([len(ids) for ids in sets], dtype=np.int64)
    if len(counts) and size - counts.max() < k:
        row = int(np.argmax(counts))
        raise ValueError(
            f"Query {row} has {counts[row]} positives among the {size} corpus "
            f"rows, which leaves fewer than k={k} negatives."
        )
    negatives = np.zeros((len(queries), k), dtype=np.int64)
    start = 0
    while start < len(queries):
        # The `k + p` nearest rows hold the `k` nearest non-positives of a
        # query with `p` positives: search each chunk as deep as its largest
        # positive set needs.
        stop = min(len(queries), start + max(1, _CHUNK_ENTRIES // (k + 1)))
        depth = min(size, k + int(counts[start:stop].max(initial=0)))
        while (stop - start) * depth > _CHUNK_ENTRIES and stop - start > 1:
            stop = start + max(1, (stop - start) // 2)
            depth = min(size, k + int(counts[start:stop].max(initial=0)))
        _, found = index.search(queries[start:stop], depth)
        for offset, row in enumerate(range(start, stop)):
            candidates = found[offset]
            keep = ~np.isin(candidates, sets[row], assume_unique=True)
            negatives[row] = candidates[keep][:k]
        start = stop
    return negatives
