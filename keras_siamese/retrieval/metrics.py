"""Retrieval metrics of embeddings with class labels, streamed in blocks.

One engine serves `retrieval_metrics`, `recall_at_k` and `map_at_r`: the exact
nearest neighbours of each block of queries (`keras_siamese.retrieval._search`)
turned into a `(block, k)` matrix of "same class as the query" flags.
"""

from __future__ import annotations

import dataclasses
from collections.abc import Iterator, Sequence
from typing import Any

import numpy as np

from keras_siamese import distances
from keras_siamese._checks import check_embeddings, check_labels, check_positive_int
from keras_siamese.retrieval import _labels, _search

#: Metrics computed from the nearest neighbours of every query.
KNN_METRICS = ("precision_at_1", "r_precision", "map_at_r", "mean_reciprocal_rank")
#: Metrics computed from a k-means clustering of the queries.
CLUSTERING_METRICS = ("nmi", "ami")
#: Every name `retrieval_metrics` accepts in `include`.
METRICS = KNN_METRICS + CLUSTERING_METRICS

_SKLEARN_HINT = (
    "The clustering metrics {names} need scikit-learn: "
    '`pip install "keras-siamese[retrieval]"` (or `pip install scikit-learn`), '
    "or leave them out of `include`."
)


@dataclasses.dataclass
class RetrievalSet:
    """Validated queries and references, ready for blocked search.

    Attributes:
        queries: `(n, dim)` float32 query embeddings.
        query_codes: their integer class codes.
        gallery: the references, prepared for search.
        gallery_codes: the references' class codes.
        leave_one_out: the references are the queries; a query never
            retrieves itself.
        relevant: per query, how many references share its class (itself
            excluded).
    """

    queries: np.ndarray
    query_codes: np.ndarray
    gallery: _search.PreparedGallery
    gallery_codes: np.ndarray
    leave_one_out: bool
    relevant: np.ndarray

    @classmethod
    def build(
        cls,
        queries: Any,
        query_labels: Any,
        references: Any | None,
        reference_labels: Any | None,
        distance: str | distances.Distance,
        block_bytes: int,
        names: tuple[str, str, str, str] = (
            "query_embeddings",
            "query_labels",
            "reference_embeddings",
            "reference_labels",
        ),
    ) -> RetrievalSet:
        distance = distances.get(distance, needs=("search",), user="retrieval")
        block_bytes = check_positive_int(block_bytes, "block_bytes")
        query_name, query_labels_name, reference_name, reference_labels_name = names
        if (references is None) != (reference_labels is None):
            raise ValueError(
                f"Give both `{reference_name}` and `{reference_labels_name}`, or "
                "neither (the queries are then their own references, leave-one-out)."
            )
        queries = check_embeddings(queries, query_name)
        query_labels = check_labels(query_labels, len(queries), query_labels_name)
        leave_one_out = references is None
        if leave_one_out:
            references, reference_labels = queries, query_labels
        else:
            references = check_embeddings(
                references, reference_name, dim=queries.shape[1]
            )
            reference_labels = check_labels(
                reference_labels, len(references), reference_labels_name
            )
        query_codes, reference_codes = _labels.encode(query_labels, reference_labels)
        counts = np.bincount(
            reference_codes, minlength=int(query_codes.max(initial=-1)) + 1
        )
        relevant = counts[query_codes] - int(leave_one_out)
        return cls(
            queries=queries,
            query_codes=query_codes,
            gallery=_search.PreparedGallery(references, distance, block_bytes),
            gallery_codes=reference_codes,
            leave_one_out=leave_one_out,
            relevant=relevant,
        )

    def hits(self, depth: int | str) -> Iterator[tuple[slice, np.ndarray]]:
        """Yield `(rows, hits)`: whether each of a block's neighbours is relevant.

        Args:
            depth: neighbours per query, or `"relevant"` for as many as the
                block's query with the most same-class references has (at
                least 1).

        Yields:
            The block's rows and a `(b, k)` boolean matrix, nearest first.
        """
        if depth == "relevant":

            def depth_of(rows: slice) -> int:
                return max(int(self.relevant[rows].max(initial=0)), 1)

        else:
            depth_of = depth
        for rows, _, indices in _search.search_blocks(
            self.gallery, self.queries, depth_of, exclude_self=self.leave_one_out
        ):
            yield rows, self.gallery_codes[indices] == self.query_codes[rows, None]

    def require_relevant(self) -> np.ndarray:
        """The mask of queries with something to find; raises if there is none."""
        answerable = self.relevant > 0
        if not answerable.any():
            raise ValueError(
                "No query has a same-class item among the references, so no "
                "retrieval metric is defined."
            )
        return answerable


def average_precision_at_r(hits: np.ndarray, relevant: np.ndarray) -> np.ndarray:
    """AP@R of each row: `(1 / R) sum_{i <= R} P@i [neighbour i is relevant]`.

    Args:
        hits: `(b, k)` relevance of the neighbours, nearest first, `k >= R`.
        relevant: `(b,)` the number `R >= 1` of relevant references per row.
    """
    ranks = np.arange(1, hits.shape[1] + 1)
    within = ranks[None, :] <= relevant[:, None]
    counted = hits & within
    precision = np.cumsum(counted, axis=1) / ranks
    return (precision * counted).sum(axis=1) / relevant


def r_precision(hits: np.ndarray, relevant: np.ndarray) -> np.ndarray:
    """R-precision of each row: the fraction of its `R` nearest that are relevant."""
    ranks = np.arange(1, hits.shape[1] + 1)
    return (hits & (ranks[None, :] <= relevant[:, None])).sum(axis=1) / relevant


def _check_include(include: Sequence[str]) -> tuple[str, ...]:
    if isinstance(include, str) or not isinstance(include, Sequence):
        raise TypeError(
            f"`include` must be a tuple of metric names from {METRICS}; got "
            f"{include!r}."
        )
    unknown = [name for name in include if name not in METRICS]
    if unknown:
        raise ValueError(
            f"`include` must name metrics from {METRICS}; got unknown {unknown}."
        )
    if not include:
        raise ValueError(f"`include` is empty; name metrics from {METRICS}.")
    return tuple(dict.fromkeys(include))


def _clustering(
    queries: np.ndarray, codes: np.ndarray, include: tuple[str, ...], seed: int
) -> dict[str, float]:
    names = [name for name in include if name in CLUSTERING_METRICS]
    try:
        from sklearn.cluster import KMeans
        from sklearn.metrics import (
            adjusted_mutual_info_score,
            normalized_mutual_info_score,
        )
    except ImportError as error:
        raise ImportError(_SKLEARN_HINT.format(names=names)) from error
    clusters = len(np.unique(codes))
    assigned = (
        KMeans(n_clusters=clusters, n_init=1, max_iter=20, random_state=seed)
        .fit(queries)
        .labels_
    )
    scores = {
        "nmi": lambda: normalized_mutual_info_score(codes, assigned),
        "ami": lambda: adjusted_mutual_info_score(codes, assigned),
    }
    return {name: float(scores[name]()) for name in names}


def retrieval_metrics(
    query_embeddings: Any,
    query_labels: Any,
    reference_embeddings: Any | None = None,
    reference_labels: Any | None = None,
    distance: str | distances.Distance = "euclidean",
    include: Sequence[str] = KNN_METRICS,
    *,
    block_bytes: int = _search.DEFAULT_BLOCK_BYTES,
    seed: int = 0,
) -> dict[str, float]:
    """Retrieval and clustering quality of labelled embeddings, in bounded memory.

    The definitions are those of pytorch-metric-learning's
    `AccuracyCalculator` (with its default `k=None`: the whole reference
    set is ranked). Each query ranks the references by distance, ties by the
    lower reference index. Without references, the queries are their own
    references and a query is never its own neighbour. `R` is the number of
    references of the query's class; queries with `R = 0` are left out of
    the neighbour metrics:

    - `precision_at_1`: the fraction of queries whose nearest reference has
      their class;
    - `r_precision`: the mean fraction of relevant items among a query's `R`
      nearest;
    - `map_at_r`: the mean of `AP@R = (1 / R) sum_{i <= R} P@i [item i is
      relevant]` (Musgrave et al., 2020);
    - `mean_reciprocal_rank`: the mean of `1 / rank` of a query's nearest
      relevant reference;
    - `nmi`, `ami`: normalised and adjusted mutual information between the
      query labels and a k-means clustering of the query embeddings into as
      many clusters as there are query classes (scikit-learn's `KMeans`,
      one initialisation, 20 iterations, as pytorch-metric-learning's default
      faiss k-means; on the embeddings as they are, whatever `distance`).

    Queries are processed in blocks against tiles of the references on the
    Keras backend's device (`block_bytes` bounds one block's score matrix),
    so no `(queries, references)` matrix is ever formed. The cost of the
    neighbour metrics grows with `R`: `r_precision` and `map_at_r` look at the
    `R` nearest neighbours of every query. Clustering costs `O(n x classes x
    dim)` per k-means iteration, which is why `nmi` and `ami` are opt-in.

    Args:
        query_embeddings: `(n, dim)` embeddings.
        query_labels: `(n,)` class labels (integers, strings, ...), each
            compared by its exact value: `1` and `"1"`, or two int64 and
            uint64 ids, are never merged.
        reference_embeddings: optional `(m, dim)` references to search.
        reference_labels: their `(m,)` labels.
        distance: `"euclidean"` (default), `"squared_euclidean"`, `"cosine"`,
            `"manhattan"`, or a `Distance` with the forms search needs.
        include: the metrics to compute, from `METRICS`; by default the four
            neighbour metrics.
        block_bytes: memory budget of one block of scores on the device.
        seed: random state of the k-means clustering.

    Returns:
        A dict from each name in `include` to its value in `[0, 1]` (AMI can
        be slightly negative).

    Raises:
        ImportError: if `nmi` or `ami` is requested without scikit-learn.
        TypeError: for non-numeric embeddings, unhashable labels, or an
            array of labels that mixes kinds (`[1, "1"]`, which NumPy would
            turn into one string label).
        ValueError: for an unknown metric or distance, bad shapes, NaN or
            infinite embeddings, labels of the wrong length, integer labels
            outside the int64 and uint64 ranges (or mixed with floats that
            cannot hold them exactly), or (for the neighbour metrics) no
            query with a same-class reference.

    Examples:
        >>> import numpy as np
        >>> x = np.array([[0.0], [1.0], [3.0], [50.0], [2.0]])
        >>> labels = np.array([0, 0, 1, 1, 1])
        >>> scores = retrieval_metrics(x, labels)
        >>> for name, value in scores.items():
        ...     print(name, round(value, 4))
        precision_at_1 0.8
        r_precision 0.8
        map_at_r 0.75
        mean_reciprocal_rank 0.9
    """
    include = _check_include(include)
    seed = int(seed)
    if any(name in CLUSTERING_METRICS for name in include):
        try:
            import sklearn  # noqa: F401
        except ImportError as error:
            names = [name for name in include if name in CLUSTERING_METRICS]
            raise ImportError(_SKLEARN_HINT.format(names=names)) from error
    problem = RetrievalSet.build(
        query_embeddings,
        query_labels,
        reference_embeddings,
        reference_labels,
        distance,
        block_bytes,
    )
    results: dict[str, float] = {}
    knn = [name for name in include if name in KNN_METRICS]
    if knn:
        results.update(_neighbour_metrics(problem, knn))
    if len(knn) < len(include):
        results.update(_clustering(problem.queries, problem.query_codes, include, seed))
    return {name: results[name] for name in include}


def _neighbour_metrics(problem: RetrievalSet, names: list[str]) -> dict[str, float]:
    answerable = problem.require_relevant()
    deep = any(name != "precision_at_1" for name in names)
    sums = dict.fromkeys(names, 0.0)
    missing_rows: list[np.ndarray] = []
    # A query whose k nearest hold nothing relevant has its first hit at
    # rank k + 1 or later, whatever the round-off of the counting pass.
    missing_floor: list[np.ndarray] = []
    for rows, hits in problem.hits("relevant" if deep else 1):
        keep = answerable[rows]
        hits, relevant = hits[keep], problem.relevant[rows][keep]
        if not hits.shape[0]:
            continue
        if "precision_at_1" in sums:
            sums["precision_at_1"] += float(hits[:, 0].sum())
        if "r_precision" in sums:
            sums["r_precision"] += float(r_precision(hits, relevant).sum())
        if "map_at_r" in sums:
            sums["map_at_r"] += float(average_precision_at_r(hits, relevant).sum())
        if "mean_reciprocal_rank" in sums:
            found = hits.any(axis=1)
            first = np.argmax(hits, axis=1) + 1
            sums["mean_reciprocal_rank"] += float((1.0 / first[found]).sum())
            missing_rows.append(np.arange(rows.start, rows.stop)[keep][~found])
            missing_floor.append(np.full(int((~found).sum()), hits.shape[1] + 1))
    if missing_rows and (missing := np.concatenate(missing_rows)).size:
        ranks = _search.first_relevant_ranks(
            problem.gallery,
            problem.queries[missing],
            missing,
            problem.query_codes[missing],
            problem.gallery_codes,
            problem.leave_one_out,
        )
        ranks = np.maximum(ranks, np.concatenate(missing_floor))
        sums["mean_reciprocal_rank"] += float((1.0 / ranks).sum())
    count = int(answerable.sum())
    return {name: value / count for name, value in sums.items()}
