"""Information-retrieval metrics of queries against a corpus with known answers."""

from __future__ import annotations

from collections.abc import Iterable, Sequence
from typing import Any

import numpy as np

from keras_siamese import distances as _distances
from keras_siamese.retrieval._corpus import corpus_index
from keras_siamese.retrieval._search import DEFAULT_BLOCK_BYTES

#: The families of `ranking_metrics`; each gives one value per `k`, named
#: `<family>_at_<k>`.
RANKING_METRICS = ("accuracy", "precision", "recall", "mrr", "ndcg", "map")

# Neighbour indices held per search call: queries are searched in chunks
# of about this many `(query, neighbour)` entries.
_CHUNK_ENTRIES = 2**20


def _check_ks(k: Any) -> tuple[int, ...]:
    ks = (k,) if isinstance(k, (int, np.integer)) else k
    if not isinstance(ks, Sequence) or isinstance(ks, str) or not ks:
        raise TypeError(
            f"`k` must be a positive integer or a tuple of them; got {k!r}."
        )
    checked = []
    for value in ks:
        if isinstance(value, bool) or not isinstance(value, (int, np.integer)):
            raise TypeError(f"`k` must hold positive integers; got {value!r}.")
        if value < 1:
            raise ValueError(f"`k` must hold positive integers; got {value}.")
        checked.append(int(value))
    return tuple(dict.fromkeys(checked))


def _relevance_keys(
    relevant: Any, queries: int, corpus: int
) -> tuple[np.ndarray, np.ndarray]:
    """Sorted `query * corpus + id` keys of every (query, relevant id) pair,
    and the number of relevant ids of each query."""
    if isinstance(relevant, (str, bytes)) or not isinstance(relevant, Iterable):
        raise TypeError(
            "`relevant` must hold, for each query, a collection of relevant "
            f"corpus row numbers; got {type(relevant).__name__}."
        )
    relevant = list(relevant)
    if len(relevant) != queries:
        raise ValueError(
            f"`relevant` must hold one collection of corpus ids per query "
            f"({queries}); got {len(relevant)}."
        )
    keys, counts = [], np.zeros(queries, dtype=np.int64)
    for row, ids in enumerate(relevant):
        if isinstance(ids, (str, bytes)) or not isinstance(ids, Iterable):
            raise TypeError(
                f"`relevant[{row}]` must be a collection of corpus row numbers; "
                f"got {ids!r}."
            )
        ids = np.asarray(list(ids))
        if ids.size and (ids.dtype.kind not in "iu"):
            raise TypeError(
                f"`relevant[{row}]` must hold integer corpus row numbers; got "
                f"dtype {ids.dtype}."
            )
        ids = np.unique(ids.astype(np.int64))
        if not ids.size:
            raise ValueError(
                f"Query {row} has no relevant corpus id, so its recall, NDCG and "
                "MAP are undefined; leave such queries out."
            )
        if ids[0] < 0 or ids[-1] >= corpus:
            raise ValueError(
                f"`relevant[{row}]` must hold corpus row numbers in [0, {corpus}); "
                f"got {ids[0] if ids[0] < 0 else ids[-1]}."
            )
        counts[row] = ids.size
        keys.append(row * corpus + ids)
    return np.concatenate(keys), counts


def ranking_metrics(
    queries: Any,
    corpus: Any,
    relevant: Sequence[Iterable[int]],
    k: int | Sequence[int] = (1, 3, 5, 10, 100),
    *,
    distance: str | _distances.Distance | None = None,
    block_bytes: int = DEFAULT_BLOCK_BYTES,
) -> dict[str, float]:
    """NDCG@k, MAP@k, MRR@k, recall@k, precision@k and accuracy@k of a search.

    Each query ranks the corpus by distance (nearest first, ties by the
    lower row number) with `EmbeddingIndex.search`, in chunks of queries, so
    memory stays bounded whatever the corpus size. With `rel_i` 1 where the
    `i`-th nearest corpus row is relevant to the query and `R` the number of
    its relevant rows, each figure is the mean over the queries of (the
    definitions of sentence-transformers' `InformationRetrievalEvaluator`,
    binary relevance):

    - `accuracy_at_<k>`: 1 if a relevant row is among the `k` nearest;
    - `precision_at_<k>`: `sum_{i <= k} rel_i / k`;
    - `recall_at_<k>`: `sum_{i <= k} rel_i / R`;
    - `mrr_at_<k>`: `1 / i` of the first relevant row if `i <= k`, else 0;
    - `ndcg_at_<k>`: `DCG / IDCG`, `DCG = sum_{i <= k} rel_i / log2(i + 1)`
      and `IDCG` the DCG of `min(R, k)` relevant rows first;
    - `map_at_<k>`: `sum_{i <= k} rel_i P@i / min(R, k)`.

    A `k` larger than the corpus ranks the whole corpus (precision still
    divides by `k`).

    Args:
        queries: `(n, dim)` query embeddings.
        corpus: `(m, dim)` corpus embeddings, or an `EmbeddingIndex` holding
            them (searched with its own distance and engine).
        relevant: for each query, a collection (set, list, array) of the
            row numbers of its relevant corpus rows; at least one each.
        k: the cut-offs, an integer or a tuple of them.
        distance: for corpus embeddings, `"euclidean"` (the default),
            `"squared_euclidean"`, `"cosine"`, `"manhattan"` or a
            `Distance`; must be left out (or equal the index's) for an
            `EmbeddingIndex`.
        block_bytes: for corpus embeddings, the memory budget of one block
            of scores of the exact search.

    Returns:
        A dict from `<family>_at_<k>` (families in the order of
        `RANKING_METRICS`, then `k` in the order given) to a float.

    Raises:
        TypeError: for a non-integer `k`, `relevant` not a collection of
            collections of integers, or non-numeric embeddings.
        ValueError: for `k < 1`, a query without relevant rows, a row number
            outside the corpus, `relevant` of another length than the
            queries, an empty corpus, bad embedding shapes or values, or a
            `distance` that differs from the index's.

    Examples:
        >>> import numpy as np
        >>> corpus = np.array([[0.0], [1.0], [2.0], [3.0]])
        >>> queries = np.array([[0.1], [2.9]])
        >>> scores = ranking_metrics(queries, corpus, [{1}, {2, 3}], k=(1, 2))
        >>> scores["accuracy_at_1"], scores["recall_at_2"], scores["mrr_at_2"]
        (0.5, 1.0, 0.75)
        >>> round(scores["ndcg_at_2"], 4), scores["map_at_2"]
        (0.8155, 0.75)
    """
    ks = _check_ks(k)
    index, queries = corpus_index(
        queries, corpus, distance, block_bytes, "ranking_metrics"
    )
    size = len(index)
    keys, counts = _relevance_keys(relevant, len(queries), size)
    depth = min(max(ks), size)
    ranks = np.arange(1, depth + 1)
    discount = 1.0 / np.log2(ranks + 1.0)
    # IDCG of j relevant rows first, for j = 0 .. depth.
    ideal = np.concatenate([[0.0], np.cumsum(discount)])
    sums = {f"{family}_at_{cut}": 0.0 for family in RANKING_METRICS for cut in ks}
    step = max(1, _CHUNK_ENTRIES // depth)
    for start in range(0, len(queries), step):
        stop = min(start + step, len(queries))
        _, indices = index.search(queries[start:stop], depth)
        wanted = np.arange(start, stop, dtype=np.int64)[:, None] * size + indices
        place = np.minimum(np.searchsorted(keys, wanted), keys.size - 1)
        hits = keys[place] == wanted
        found = np.cumsum(hits, axis=1)
        total = counts[start:stop]
        first = np.where(hits.any(axis=1), np.argmax(hits, axis=1) + 1, depth + 1)
        gains = np.cumsum(hits * discount, axis=1)
        precisions = np.cumsum(hits * found / ranks, axis=1)
        for cut in ks:
            seen = min(cut, depth)
            within = found[:, seen - 1]
            sums[f"accuracy_at_{cut}"] += float(np.sum(within > 0))
            sums[f"precision_at_{cut}"] += float(np.sum(within / cut))
            sums[f"recall_at_{cut}"] += float(np.sum(within / total))
            sums[f"mrr_at_{cut}"] += float(
                np.sum(np.where(first <= seen, 1.0 / first, 0.0))
            )
            best = ideal[np.minimum(total, cut).clip(max=depth)]
            sums[f"ndcg_at_{cut}"] += float(np.sum(gains[:, seen - 1] / best))
            sums[f"map_at_{cut}"] += float(
                np.sum(precisions[:, seen - 1] / np.minimum(total, cut))
            )
    return {name: value / len(queries) for name, value in sums.items()}
