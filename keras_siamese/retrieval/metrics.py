"""Retrieval metrics of embeddings with class labels, streamed in blocks.

One engine serves `retrieval_metrics` and its one-metric forms `recall_at_k`
and `map_at_r`: the exact nearest neighbours of each block of queries
(`keras_siamese.retrieval._search`) turned into a `(block, k)` matrix of
"same class as the query" flags.
"""

from __future__ import annotations

import dataclasses
import re
from collections.abc import Callable, Iterator, Sequence
from typing import Any

import numpy as np

from keras_siamese import distances
from keras_siamese._checks import (
    check_bool,
    check_embeddings,
    check_labels,
    check_positive_int,
    truncate_embeddings,
)
from keras_siamese.retrieval import _labels, _search
from keras_siamese.retrieval._engines import check_engine_setting

#: Metrics computed from the nearest neighbours of every query (any
#: `recall_at_<k>`, such as `"recall_at_5"`, is one too).
KNN_METRICS = ("recall_at_1", "r_precision", "map_at_r", "mean_reciprocal_rank")
#: Neighbour metrics computed only when asked for: the mean average
#: precision over the `k` nearest (by default every reference).
RANKED_METRICS = ("mean_average_precision",)
#: Metrics computed from a k-means clustering of the queries.
CLUSTERING_METRICS = ("nmi", "ami")
#: The fixed names `retrieval_metrics` accepts in `metrics`, besides
#: `<family>_at_<k>` for every family of `CUTOFF_FAMILIES` and `k >= 1`.
METRICS = KNN_METRICS + RANKED_METRICS + CLUSTERING_METRICS

_RECALL = re.compile(r"recall_at_([1-9][0-9]*)")
#: The metric families with a cut-off in their name, `<family>_at_<k>`.
CUTOFF_FAMILIES = ("recall", "precision", "mrr", "ndcg", "map")
_CUTOFF = re.compile(r"(recall|precision|mrr|ndcg|map)_at_([1-9][0-9]*)")
_CUTOFF_NAMES = (
    "`recall_at_<k>`, `precision_at_<k>`, `mrr_at_<k>`, `ndcg_at_<k>`, `map_at_<k>`"
)

_SKLEARN_HINT = (
    "The clustering metrics {names} need scikit-learn: "
    '`pip install "keras-siamese[retrieval]"` (or `pip install scikit-learn`), '
    "or leave them out of `metrics`."
)


def recall_depth(name: str) -> int | None:
    """The `k` of a `recall_at_<k>` metric name, else `None`."""
    match = _RECALL.fullmatch(name)
    return None if match is None else int(match.group(1))


def cutoff(name: str) -> tuple[str, int] | None:
    """The family and `k` of a `<family>_at_<k>` metric name, else `None`."""
    match = _CUTOFF.fullmatch(name)
    return None if match is None else (match.group(1), int(match.group(2)))


@dataclasses.dataclass
class RetrievalSet:
    """Validated queries and references, ready for blocked search.

    Attributes:
        queries: `(n, dim)` float32 query embeddings.
        query_codes: their integer class codes.
        references: the references, prepared for search.
        reference_codes: the references' class codes.
        leave_one_out: the references are the queries; a query never
            retrieves itself.
        relevant: per query, how many references share its class (itself
            excluded).
        labels: the queries' labels, as given.
    """

    queries: np.ndarray
    query_codes: np.ndarray
    references: _search.PreparedGallery
    reference_codes: np.ndarray
    leave_one_out: bool
    relevant: np.ndarray
    labels: np.ndarray

    @classmethod
    def build(
        cls,
        embeddings: Any,
        labels: Any,
        references: Any | None,
        reference_labels: Any | None,
        distance: str | distances.Distance,
        block_bytes: int,
    ) -> RetrievalSet:
        distance = distances.get(distance, needs=("search",), user="retrieval")
        block_bytes = check_engine_setting(block_bytes, "block_bytes")
        if (references is None) != (reference_labels is None):
            raise ValueError(
                "Give both `references` and `reference_labels`, or neither (the "
                "embeddings are then their own references, leave-one-out)."
            )
        queries = check_embeddings(embeddings, "embeddings")
        labels = check_labels(labels, len(queries), "labels")
        leave_one_out = references is None
        if leave_one_out:
            references, reference_labels = queries, labels
        else:
            references = check_embeddings(
                references, "references", dim=queries.shape[1]
            )
            reference_labels = check_labels(
                reference_labels, len(references), "reference_labels"
            )
        query_codes, reference_codes = _labels.encode(labels, reference_labels)
        counts = np.bincount(
            reference_codes, minlength=int(query_codes.max(initial=-1)) + 1
        )
        relevant = counts[query_codes] - int(leave_one_out)
        return cls(
            queries=queries,
            query_codes=query_codes,
            references=_search.PreparedGallery(references, distance, block_bytes),
            reference_codes=reference_codes,
            leave_one_out=leave_one_out,
            relevant=relevant,
            labels=labels,
        )

    @property
    def available(self) -> int:
        """References a query can retrieve (itself excluded)."""
        return len(self.references) - int(self.leave_one_out)

    def hits(
        self, depth: int | Callable[[slice], int]
    ) -> Iterator[tuple[slice, np.ndarray]]:
        """Yield `(rows, hits)`: whether each of a block's neighbours is relevant.

        Args:
            depth: neighbours per query, or a function of a block's rows
                giving that number.

        Yields:
            The block's rows and a `(b, k)` boolean matrix, nearest first.
        """
        for rows, _, indices in _search.search_blocks(
            self.references, self.queries, depth, exclude_self=self.leave_one_out
        ):
            yield rows, self.reference_codes[indices] == self.query_codes[rows, None]

    def require_relevant(self) -> np.ndarray:
        """The mask of queries with something to find; raises if there is none."""
        answerable = self.relevant > 0
        if not answerable.any():
            raise ValueError(
                "No query has a same-class item among the references, so no "
                "retrieval metric is defined."
            )
        return answerable


def average_precision_at_r(
    hits: np.ndarray, relevant: np.ndarray, depth: np.ndarray | None = None
) -> np.ndarray:
    """`(1 / R) sum_{i <= depth} P@i [neighbour i is relevant]` of each row.

    AP@R where `depth` is `R` (the default); pytorch-metric-learning's mean
    average precision over the `k` nearest where `depth` is `k`.

    Args:
        hits: `(b, k)` relevance of the neighbours, nearest first,
            `k >= depth`.
        relevant: `(b,)` the number `R >= 1` of relevant references per row.
        depth: `(b,)` how many neighbours count; `relevant` by default.
    """
    depth = relevant if depth is None else depth
    ranks = np.arange(1, hits.shape[1] + 1)
    within = ranks[None, :] <= depth[:, None]
    counted = hits & within
    precision = np.cumsum(counted, axis=1) / ranks
    return (precision * counted).sum(axis=1) / relevant


def r_precision(hits: np.ndarray, relevant: np.ndarray) -> np.ndarray:
    """R-precision of each row: the fraction of its `R` nearest that are relevant."""
    ranks = np.arange(1, hits.shape[1] + 1)
    return (hits & (ranks[None, :] <= relevant[:, None])).sum(axis=1) / relevant


def check_metrics(metrics: Sequence[str]) -> tuple[str, ...]:
    """The metric names, validated, in order and without repeats."""
    if isinstance(metrics, str) or not isinstance(metrics, Sequence):
        raise TypeError(
            f"`metrics` must be a tuple of metric names from {METRICS} or "
            f"{_CUTOFF_NAMES}; got {metrics!r}."
        )
    unknown = [
        name
        for name in metrics
        if not isinstance(name, str) or (name not in METRICS and cutoff(name) is None)
    ]
    if unknown:
        raise ValueError(
            f"`metrics` must name metrics from {METRICS} or {_CUTOFF_NAMES} with "
            f"an integer `k >= 1`; got unknown {unknown}."
        )
    if not metrics:
        raise ValueError(f"`metrics` is empty; name metrics from {METRICS}.")
    return tuple(dict.fromkeys(metrics))


def _clustering(
    queries: np.ndarray, codes: np.ndarray, metrics: tuple[str, ...], seed: int
) -> dict[str, float]:
    names = [name for name in metrics if name in CLUSTERING_METRICS]
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


def check_k(k: Any) -> int | str | None:
    """pytorch-metric-learning's `k`: a positive integer, None or "max_bin_count"."""
    if k is None or (isinstance(k, str) and k == "max_bin_count"):
        return k
    if isinstance(k, bool) or not isinstance(k, (int, np.integer)) or k < 1:
        raise ValueError(
            f'`k` must be an integer >= 1, None or "max_bin_count"; got {k!r}.'
        )
    return int(k)


def retrieval_metrics(
    embeddings: Any,
    labels: Any,
    references: Any | None = None,
    reference_labels: Any | None = None,
    distance: str | distances.Distance = "euclidean",
    metrics: Sequence[str] = KNN_METRICS,
    *,
    k: int | str | None = None,
    avg_of_avgs: bool = False,
    return_per_class: bool = False,
    block_bytes: int = _search.DEFAULT_BLOCK_BYTES,
    seed: int = 0,
    truncate_dim: int | None = None,
) -> dict[str, Any]:
    """Retrieval and clustering quality of labelled embeddings, in bounded memory.

    Every embedding is a query. The definitions are those of
    pytorch-metric-learning's `AccuracyCalculator`, with its `k`,
    `avg_of_avgs` and `return_per_class`. Each query ranks the references by
    distance, ties by the lower reference index. Without references, the
    embeddings are their own references and a query is never its own
    neighbour. `R` is the number of references of the query's class;
    queries with `R = 0` are left out of the neighbour metrics. The ranking
    metrics look at the `K` nearest references only: `K` is every reference
    with `k=None` (the default), `k` itself for an integer, and the largest
    `R` of any query with `k="max_bin_count"`:

    - `recall_at_<k>`, e.g. `recall_at_1` or `recall_at_5`: the fraction of
      queries with a reference of their class among their `k` nearest
      (Recall@k of Song et al., 2016; its `k` is its own, whatever `K`).
      `recall_at_1` is pytorch-metric-learning's `precision_at_1`: with one
      neighbour, precision and recall are the same number;
    - `precision_at_<k>`, `mrr_at_<k>`, `ndcg_at_<k>`, `map_at_<k>`: the
      figures of `ranking_metrics` (sentence-transformers'
      `InformationRetrievalEvaluator`) with the references of the query's
      class as its relevant ones: the fraction of the `k` nearest that are
      relevant; `1 / rank` of the first relevant within the `k` nearest,
      else 0; the binary-relevance DCG of the `k` nearest over that of
      `min(R, k)` relevant ones; and `sum_{i <= k} P@i [item i is relevant]
      / min(R, k)`. Each `k` is its own, whatever `K`
      (sentence-transformers' `accuracy@k` is `recall_at_<k>`);
    - `r_precision`: the mean fraction of relevant items among a query's
      `min(R, K)` nearest;
    - `map_at_r`: the mean of `AP@R = (1 / R) sum_{i <= min(R, K)} P@i
      [item i is relevant]` (Musgrave et al., 2020);
    - `mean_average_precision`: the mean of `(1 / R) sum_{i <= K} P@i [item
      i is relevant]`, the average precision of the whole ranking with the
      default `k=None`; not computed unless asked for, as it reads the `K`
      nearest of every query;
    - `mean_reciprocal_rank`: the mean of `1 / rank` of a query's nearest
      relevant reference (0 where it is not among the `K` nearest);
    - `nmi`, `ami`: normalised and adjusted mutual information between the
      labels and a k-means clustering of the embeddings into as many
      clusters as there are classes (scikit-learn's `KMeans`, one
      initialisation, 20 iterations, as pytorch-metric-learning's default
      faiss k-means; on the embeddings as they are, whatever `distance`).

    With `avg_of_avgs`, a neighbour metric is the mean over classes of its
    mean over the class's queries (each class weighs the same); with
    `return_per_class`, it is a dict from each query class (with `R > 0`)
    to that class's mean, classes in sorted order where labels sort.

    Queries are processed in blocks against tiles of the references on the
    Keras backend's device (`block_bytes` bounds one block's score matrix),
    so no `(queries, references)` matrix is ever formed. The cost of the
    neighbour metrics grows with the depth they read: `r_precision` and
    `map_at_r` look at the `min(R, K)` nearest neighbours of every query,
    `<family>_at_<k>` at the `k` nearest, `mean_average_precision` at the `K`
    nearest. Clustering costs `O(n x classes x dim)` per k-means iteration,
    which is why `nmi` and `ami` are opt-in.

    Args:
        embeddings: `(n, dim)` query embeddings.
        labels: `(n,)` their class labels (integers, strings, ...), each
            compared by its exact value: `1` and `"1"`, or two int64 and
            uint64 ids, are never merged.
        references: optional `(m, dim)` embeddings to search instead of
            `embeddings` themselves.
        reference_labels: their `(m,)` labels; given exactly when
            `references` is.
        distance: `"euclidean"` (default), `"squared_euclidean"`, `"cosine"`,
            `"manhattan"`, or a `Distance` with the forms search needs.
        metrics: the metrics to compute, from `METRICS` or
            `<family>_at_<k>` with a family of `CUTOFF_FAMILIES`; by default
            the four neighbour metrics of `KNN_METRICS`.
        k: the depth `K` of the ranking metrics: `None` (every reference),
            an integer `>= 1` (at most the references a query can retrieve),
            or `"max_bin_count"` (the largest `R`; then `r_precision` and
            `map_at_r` are exact, where a smaller `k` truncates them).
        avg_of_avgs: average the neighbour metrics per class first.
        return_per_class: give the neighbour metrics per class.
        block_bytes: memory budget of one block of scores on the device.
        seed: random state of the k-means clustering.
        truncate_dim: score only the first `truncate_dim` dimensions of the
            embeddings and references (Matryoshka embeddings, as
            `EmbeddingIndex(truncate_dim=...)` serves them); `None`
            (default): all of them.

    Returns:
        A dict from each name in `metrics` to its value in `[0, 1]` (AMI can
        be slightly negative), or with `return_per_class` to a dict from
        class label to value for the neighbour metrics.

    Raises:
        ImportError: if `nmi` or `ami` is requested without scikit-learn.
        TypeError: for non-numeric embeddings, unhashable labels, an array
            of labels that mixes kinds (`[1, "1"]`, which NumPy would turn
            into one string label), `metrics` given as one string, or
            non-boolean `avg_of_avgs` or `return_per_class`.
        ValueError: for an unknown metric or distance, bad shapes, NaN or
            infinite embeddings, labels of the wrong length, only one of
            `references` and `reference_labels`, integer labels outside the
            int64 and uint64 ranges (or mixed with floats that cannot hold
            them exactly), a `truncate_dim` below 1 or above the embedding
            size, a bad `k` (or one above the references a query
            can retrieve), both `avg_of_avgs` and `return_per_class`, or
            (for the neighbour metrics) no query with a same-class
            reference.

    Examples:
        >>> import numpy as np
        >>> x = np.array([[0.0], [1.0], [3.0], [50.0], [2.0]])
        >>> labels = np.array([0, 0, 1, 1, 1])
        >>> scores = retrieval_metrics(x, labels)
        >>> for name, value in scores.items():
        ...     print(name, round(value, 4))
        recall_at_1 0.8
        r_precision 0.8
        map_at_r 0.75
        mean_reciprocal_rank 0.9
        >>> retrieval_metrics(x, labels, metrics=("recall_at_2",))
        {'recall_at_2': 1.0}
        >>> retrieval_metrics(x, labels, metrics=("map_at_r", "mean_average_precision"))
        {'map_at_r': 0.75, 'mean_average_precision': 0.85}
        >>> retrieval_metrics(x, labels, metrics=("map_at_r",), k=1)
        {'map_at_r': 0.6}
        >>> retrieval_metrics(x, labels, metrics=("recall_at_1",), return_per_class=True)
        {'recall_at_1': {0: 1.0, 1: 0.6666666666666666}}
    """
    metrics = check_metrics(metrics)
    k = check_k(k)
    avg_of_avgs = check_bool(avg_of_avgs, "avg_of_avgs")
    return_per_class = check_bool(return_per_class, "return_per_class")
    if avg_of_avgs and return_per_class:
        raise ValueError(
            "`avg_of_avgs` and `return_per_class` exclude each other: one "
            "averages the per-class values that the other returns."
        )
    seed = int(seed)
    clustering = [name for name in metrics if name in CLUSTERING_METRICS]
    if clustering:
        try:
            import sklearn  # noqa: F401
        except ImportError as error:
            raise ImportError(_SKLEARN_HINT.format(names=clustering)) from error
    if truncate_dim is not None:
        truncate_dim = check_positive_int(truncate_dim, "truncate_dim")
        embeddings = _truncated(embeddings, truncate_dim, "embeddings")
        if references is not None:
            references = _truncated(references, truncate_dim, "references")
    problem = RetrievalSet.build(
        embeddings, labels, references, reference_labels, distance, block_bytes
    )
    results: dict[str, Any] = {}
    knn = [name for name in metrics if name not in CLUSTERING_METRICS]
    if knn:
        answerable = problem.require_relevant()
        values = _neighbour_metrics(problem, knn, _depth(problem, k), answerable)
        codes = problem.query_codes[answerable]
        for name, per_query in values.items():
            if avg_of_avgs or return_per_class:
                results[name] = _per_class(
                    per_query, codes, problem.labels[answerable], return_per_class
                )
            else:
                results[name] = float(per_query.mean())
    if clustering:
        results.update(_clustering(problem.queries, problem.query_codes, metrics, seed))
    return {name: results[name] for name in metrics}


def _truncated(x: Any, keep: int, name: str) -> np.ndarray:
    """The first `keep` columns of checked `(n, dim)` embeddings."""
    x = check_embeddings(x, name, allow_empty=True)
    return truncate_embeddings(
        x, keep, f"`{name}` have {{dim}} dimensions, fewer than truncate_dim={{keep}}."
    )


def _depth(problem: RetrievalSet, k: int | str | None) -> int:
    """The depth `K` of the ranking metrics (pytorch-metric-learning's `k`)."""
    if k is None:
        return problem.available
    if k == "max_bin_count":
        return int(problem.relevant.max(initial=0))
    if k > problem.available:
        raise ValueError(
            f"`k` must be at most the number of references a query can retrieve "
            f"({problem.available}); got {k}."
        )
    return int(k)


def _per_class(
    values: np.ndarray, codes: np.ndarray, labels: np.ndarray, as_dict: bool
) -> float | dict[Any, float]:
    """The mean of `values` per class: their mean, or a dict by class label."""
    _, first, inverse = np.unique(codes, return_index=True, return_inverse=True)
    means = np.bincount(inverse, weights=values) / np.bincount(inverse)
    if not as_dict:
        return float(means.mean())
    keys = [
        label.item() if isinstance(label, np.generic) else label
        for label in labels[first]
    ]
    return dict(zip(keys, means.tolist()))


def _at_cutoff(family: str, hits: np.ndarray, relevant: np.ndarray, k: int) -> Any:
    """Per row, a `<family>_at_<k>` metric of the `k` (or fewer) nearest.

    Args:
        family: one of `CUTOFF_FAMILIES`.
        hits: `(b, <= k)` relevance of the nearest, nearest first.
        relevant: `(b,)` the number `R >= 1` of relevant references.
        k: the cut-off.
    """
    if family == "recall":
        return hits.any(axis=1)
    if family == "precision":
        return hits.sum(axis=1) / k
    ranks = np.arange(1, hits.shape[1] + 1)
    if family == "mrr":
        first = np.argmax(hits, axis=1) + 1
        return np.where(hits.any(axis=1), 1.0 / first, 0.0)
    if family == "ndcg":
        discount = 1.0 / np.log2(np.arange(1, k + 1) + 1.0)
        ideal = np.concatenate([[0.0], np.cumsum(discount)])
        gains = (hits * discount[: hits.shape[1]]).sum(axis=1)
        return gains / ideal[np.minimum(relevant, k)]
    precision = np.cumsum(hits, axis=1) / ranks
    return (precision * hits).sum(axis=1) / np.minimum(relevant, k)


def _neighbour_metrics(
    problem: RetrievalSet, names: list[str], depth: int, answerable: np.ndarray
) -> dict[str, np.ndarray]:
    """Each neighbour metric's value for every query with a same-class reference.

    Args:
        problem: the queries and references.
        names: the neighbour metrics to compute.
        depth: the depth `K` of the ranking metrics.
        answerable: the mask of the queries with `R > 0`.

    Returns:
        Per name, a float64 array of one value per answerable query.
    """
    cutoffs = {name: found for name in names if (found := cutoff(name)) is not None}
    deepest = max((k for _, k in cutoffs.values()), default=1)
    # Only the ranked metrics need the min(R, K) nearest (or the K nearest);
    # recall@k alone stops at k.
    by_relevant = any(
        name in ("r_precision", "map_at_r", "mean_reciprocal_rank") for name in names
    )
    whole = "mean_average_precision" in names

    def depth_of(rows: slice) -> int:
        wanted = deepest
        if by_relevant:
            wanted = max(wanted, min(int(problem.relevant[rows].max(initial=0)), depth))
        if whole:
            wanted = max(wanted, depth)
        return wanted

    count = len(problem.queries)
    values = {name: np.zeros(count) for name in names}
    missing_rows: list[np.ndarray] = []
    # A query whose nearest hold nothing relevant has its first hit after
    # them, whatever the round-off of the counting pass.
    missing_floor: list[np.ndarray] = []
    for rows, hits in problem.hits(depth_of):
        keep = answerable[rows]
        hits, relevant = hits[keep], problem.relevant[rows][keep]
        if not hits.shape[0]:
            continue
        place = np.arange(rows.start, rows.stop)[keep]
        for name, (family, k) in cutoffs.items():
            values[name][place] = _at_cutoff(family, hits[:, :k], relevant, k)
        capped = np.minimum(relevant, depth)
        if "r_precision" in values:
            values["r_precision"][place] = r_precision(hits, capped)
        if "map_at_r" in values:
            values["map_at_r"][place] = average_precision_at_r(hits, relevant, capped)
        if whole:
            values["mean_average_precision"][place] = average_precision_at_r(
                hits, relevant, np.full(len(relevant), depth)
            )
        if "mean_reciprocal_rank" in values:
            found = hits[:, :depth].any(axis=1)
            first = np.argmax(hits, axis=1) + 1
            values["mean_reciprocal_rank"][place[found]] = 1.0 / first[found]
            if hits.shape[1] < depth:  # the first hit may lie deeper
                missing_rows.append(place[~found])
                missing_floor.append(np.full(int((~found).sum()), hits.shape[1] + 1))
    if missing_rows and (missing := np.concatenate(missing_rows)).size:
        ranks = _search.first_relevant_ranks(
            problem.references,
            problem.queries[missing],
            missing,
            problem.query_codes[missing],
            problem.reference_codes,
            problem.leave_one_out,
        )
        ranks = np.maximum(ranks, np.concatenate(missing_floor))
        values["mean_reciprocal_rank"][missing] = np.where(
            ranks <= depth, 1.0 / ranks, 0.0
        )
    return {name: value[answerable] for name, value in values.items()}
