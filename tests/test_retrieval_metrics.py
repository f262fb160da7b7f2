"""retrieval_metrics: hand-computed cases, a brute-force reference, and PML."""

from __future__ import annotations

import sys

import numpy as np
import pytest
from hypothesis import assume, given
from hypothesis import strategies as st
from hypothesis.extra import numpy as hnp

from keras_siamese import map_at_r, recall_at_k, retrieval_metrics
from keras_siamese.retrieval.metrics import KNN_METRICS
from tests.helpers import record_score_blocks


def reference_metrics(
    queries, labels, references=None, reference_labels=None, recall_ks=(1,)
):
    """PML's definitions with a full ranking per query, Euclidean distance."""
    loo = references is None
    if loo:
        references, reference_labels = queries, labels
    queries = np.asarray(queries, dtype=np.float64)
    references = np.asarray(references, dtype=np.float64)
    names = [f"recall_at_{k}" for k in recall_ks]
    names += ["r_precision", "map_at_r", "mean_reciprocal_rank"]
    scores = {name: [] for name in names}
    for i, q in enumerate(queries):
        d = np.sqrt(((references - q) ** 2).sum(axis=1))
        order = [j for j in np.lexsort((np.arange(len(d)), d)) if not (loo and j == i)]
        relevant = [reference_labels[j] == labels[i] for j in order]
        r = sum(relevant)
        if r == 0:
            continue
        for k in recall_ks:
            scores[f"recall_at_{k}"].append(float(any(relevant[:k])))
        scores["r_precision"].append(sum(relevant[:r]) / r)
        found, total = 0, 0.0
        for rank, hit in enumerate(relevant[:r], start=1):
            if hit:
                found += 1
                total += found / rank
        scores["map_at_r"].append(total / r)
        scores["mean_reciprocal_rank"].append(1.0 / (relevant.index(True) + 1))
    return {name: float(np.mean(values)) for name, values in scores.items()}


def clustered(n, dim, classes, spread, seed):
    rng = np.random.default_rng(seed)
    labels = rng.integers(0, classes, n)
    centres = rng.normal(size=(classes, dim)) * 3
    return (centres[labels] + spread * rng.normal(size=(n, dim))).astype(
        "float32"
    ), labels


def test_hand_computed_values():
    # Query 2 (label 1) has R = 2 same-class items at ranks 3 and 4 (after the
    # two label-0 points at distances 2 and 3); query 4 finds label 0 first.
    x = np.array([[0.0], [1.0], [3.0], [50.0], [2.0]])
    labels = np.array([0, 0, 1, 1, 1])
    got = retrieval_metrics(x, labels)
    assert got == pytest.approx(
        {
            "recall_at_1": 4 / 5,
            "r_precision": (1 + 1 + 0.5 + 1 + 0.5) / 5,
            "map_at_r": (1 + 1 + 0.5 + 1 + 0.25) / 5,
            "mean_reciprocal_rank": (1 + 1 + 1 + 1 + 0.5) / 5,
        }
    )
    # Against a separate reference set: query 0 (label "a") has R = 2 at
    # ranks 2 and 3, so AP@R = (0 + 1/2) / 2 and its first hit has rank 2.
    got = retrieval_metrics(
        np.array([[0.0]]),
        np.array(["a"]),
        np.array([[0.5], [1.0], [2.0], [9.0]]),
        np.array(["b", "a", "a", "b"]),
    )
    assert got == pytest.approx(
        {
            "recall_at_1": 0.0,
            "r_precision": 0.5,
            "map_at_r": 0.25,
            "mean_reciprocal_rank": 0.5,
        }
    )


@pytest.mark.parametrize("block_bytes", [2**14, 2**26])
def test_matches_the_brute_force_reference(block_bytes):
    x, labels = clustered(300, 6, 12, 2.0, seed=0)
    expected = reference_metrics(x, labels)
    assert retrieval_metrics(x, labels, block_bytes=block_bytes) == pytest.approx(
        expected
    )
    # Every metric comes from one engine with recall_at_k and map_at_r.
    assert recall_at_k(x, labels, 1) == pytest.approx(expected["recall_at_1"])
    assert map_at_r(x, labels) == pytest.approx(expected["map_at_r"])
    queries, query_labels = x[:50], labels[:50]
    expected = reference_metrics(queries, query_labels, x[50:], labels[50:])
    got = retrieval_metrics(
        queries, query_labels, x[50:], labels[50:], block_bytes=block_bytes
    )
    assert got == pytest.approx(expected)


def test_reciprocal_rank_beyond_the_r_nearest_is_counted():
    # Query 0's only same-class item is the farthest of 40: rank 39.
    x = np.arange(40, dtype="float32")[:, None]
    labels = np.arange(40)
    labels[39] = 0
    got = retrieval_metrics(x[:1], labels[:1], x[1:], labels[1:], block_bytes=256)
    assert got["mean_reciprocal_rank"] == pytest.approx(1 / 39)
    assert got["recall_at_1"] == got["map_at_r"] == 0.0


def test_lone_queries_are_left_out_and_nothing_to_find_raises():
    x = np.array([[0.0], [0.1], [7.0]])
    got = retrieval_metrics(x, [0, 0, 1])  # class 1 has a single member
    assert got == {name: 1.0 for name in KNN_METRICS}
    with pytest.raises(ValueError, match="same-class"):
        retrieval_metrics(x, [0, 1, 2])


def test_metrics_selects_and_orders_the_metrics():
    x, labels = clustered(40, 3, 4, 0.1, seed=1)
    got = retrieval_metrics(x, labels, metrics=["map_at_r", "recall_at_1"])
    assert list(got) == ["map_at_r", "recall_at_1"]
    for name in ("recall", "recall_at_0", "recall_at_01", "recall_at_k", 5):
        with pytest.raises(ValueError, match=r"recall_at_<k>.*unknown"):
            retrieval_metrics(x, labels, metrics=(name,))
    with pytest.raises(TypeError, match="tuple of metric names"):
        retrieval_metrics(x, labels, metrics="nmi")
    with pytest.raises(ValueError, match="`distance`"):
        retrieval_metrics(x, labels, distance="hamming")
    with pytest.raises(ValueError, match="one label per row"):
        retrieval_metrics(x, labels[:-1])
    with pytest.raises(ValueError, match="finite"):
        retrieval_metrics(np.full((3, 2), np.nan), [0, 0, 1])
    with pytest.raises(ValueError, match="embedding size 3"):
        retrieval_metrics(x, labels, x[:, :2], labels)
    with pytest.raises(ValueError, match="both `references` and `reference_labels`"):
        retrieval_metrics(x, labels, references=x)
    # A block budget past 1 GiB is refused at once, never allocated.
    with pytest.raises(ValueError, match="`block_bytes` must be at most"):
        retrieval_metrics(x, labels, block_bytes=2**40)
    with pytest.raises(ValueError, match="`block_bytes`"):
        retrieval_metrics(x, labels, block_bytes=0)


@pytest.mark.parametrize("separate_references", [False, True])
@pytest.mark.parametrize("block_bytes", [2**12, 2**26])
def test_recall_at_any_k_matches_the_brute_force_reference(
    separate_references, block_bytes
):
    x, labels = clustered(300, 6, 12, 2.5, seed=7)
    args = (x[:80], labels[:80], x[80:], labels[80:]) if separate_references else ()
    args = args or (x, labels)
    expected = reference_metrics(*args, recall_ks=(1, 2, 4, 25))
    assert 0.0 < expected["recall_at_1"] < expected["recall_at_4"] < 1.0
    names = ("recall_at_4", "recall_at_1", "recall_at_25", "recall_at_2")
    got = retrieval_metrics(*args, metrics=names, block_bytes=block_bytes)
    assert list(got) == list(names)
    assert got == pytest.approx({name: expected[name] for name in names})
    # Beside the ranked metrics, a k deeper than any query's R still counts
    # the k nearest.
    got = retrieval_metrics(
        *args, metrics=("map_at_r", "recall_at_25"), block_bytes=block_bytes
    )
    assert got == pytest.approx(
        {name: expected[name] for name in ("map_at_r", "recall_at_25")}
    )


def test_clustering_metrics():
    pytest.importorskip("sklearn")
    x, labels = clustered(200, 8, 5, 0.05, seed=2)
    got = retrieval_metrics(x, labels, metrics=("nmi", "ami"))
    assert got == pytest.approx({"nmi": 1.0, "ami": 1.0})
    noise = np.random.default_rng(3).normal(size=(200, 8))
    got = retrieval_metrics(noise, labels, metrics=("nmi", "ami"))
    assert got["ami"] == pytest.approx(0.0, abs=0.05)


def test_clustering_without_scikit_learn_says_how_to_install(monkeypatch):
    monkeypatch.setitem(sys.modules, "sklearn", None)
    x, labels = clustered(20, 2, 2, 0.1, seed=4)
    with pytest.raises(ImportError, match=r"keras-siamese\[retrieval\]"):
        retrieval_metrics(x, labels, metrics=("recall_at_1", "nmi"))
    assert set(retrieval_metrics(x, labels)) == set(KNN_METRICS)  # no sklearn needed


def test_large_leave_one_out_holds_one_block_at_a_time(monkeypatch):
    blocks = record_score_blocks(monkeypatch)
    x, labels = clustered(2000, 16, 40, 1.0, seed=5)
    block_bytes = 2**18
    small = retrieval_metrics(x, labels, block_bytes=block_bytes)
    assert max(rows * columns for rows, columns in blocks.shapes) <= block_bytes // 4
    assert max(blocks.alive) == 0
    monkeypatch.undo()
    assert small == pytest.approx(retrieval_metrics(x, labels))


@pytest.mark.parametrize("leave_one_out", [True, False])
def test_ranks_beyond_r_hold_one_block_at_a_time(monkeypatch, leave_one_out):
    """Queries whose first relevant item is past R are ranked in a second pass."""
    from keras_siamese.retrieval import _search

    blocks = record_score_blocks(monkeypatch)
    ranked = []
    original = _search.first_relevant_ranks
    monkeypatch.setattr(
        _search,
        "first_relevant_ranks",
        lambda *args: ranked.append(len(args[2])) or original(*args),
    )
    rng = np.random.default_rng(6)
    x, labels = rng.normal(size=(600, 8)), rng.integers(0, 100, 600)
    others = (rng.normal(size=(500, 8)), rng.integers(0, 100, 500))
    references = None if leave_one_out else others
    found = retrieval_metrics(
        x,
        labels,
        *(references or ()),
        metrics=("mean_reciprocal_rank",),
        block_bytes=2**14,
    )
    assert ranked and ranked[0] > 0
    assert max(blocks.alive) == 0
    monkeypatch.undo()
    expected = reference_metrics(x, labels, *(references or ()))
    assert found["mean_reciprocal_rank"] == pytest.approx(
        expected["mean_reciprocal_rank"]
    )


@pytest.mark.parametrize("distance", ["euclidean", "cosine"])
@pytest.mark.parametrize("separate_references", [False, True])
def test_equals_pytorch_metric_learning(distance, separate_references):
    """The definitions are PML's `AccuracyCalculator`'s (torch environment only)."""
    pytest.importorskip("torch")
    pml = pytest.importorskip("pytorch_metric_learning")
    from pytorch_metric_learning.distances import CosineSimilarity, LpDistance
    from pytorch_metric_learning.utils.accuracy_calculator import AccuracyCalculator
    from pytorch_metric_learning.utils.inference import CustomKNN
    from sklearn.cluster import KMeans

    del pml
    x, labels = clustered(400, 8, 10, 2.5, seed=6)

    def kmeans(query, clusters):
        fitted = KMeans(n_clusters=clusters, n_init=1, max_iter=20, random_state=0)
        return fitted.fit(query.cpu().numpy()).labels_

    euclidean = LpDistance(normalize_embeddings=False)  # PML normalises by default
    knn = CustomKNN(euclidean if distance == "euclidean" else CosineSimilarity())
    calculator = AccuracyCalculator(
        include=(
            "precision_at_1",
            "r_precision",
            "mean_average_precision_at_r",
            "mean_reciprocal_rank",
            "NMI",
            "AMI",
        ),
        device=__import__("torch").device("cpu"),
        knn_func=knn,
        kmeans_func=kmeans,
    )
    if separate_references:
        args = (x[:100], labels[:100], x[100:], labels[100:])
    else:
        args = (x, labels)
    expected = calculator.get_accuracy(*args)
    got = retrieval_metrics(
        *args,
        distance=distance,
        metrics=(
            "recall_at_1",
            "r_precision",
            "map_at_r",
            "mean_reciprocal_rank",
            "nmi",
            "ami",
        ),
    )
    assert got["recall_at_1"] == pytest.approx(expected["precision_at_1"])
    assert got["r_precision"] == pytest.approx(expected["r_precision"])
    assert got["map_at_r"] == pytest.approx(expected["mean_average_precision_at_r"])
    assert got["mean_reciprocal_rank"] == pytest.approx(
        expected["mean_reciprocal_rank"]
    )
    assert got["nmi"] == pytest.approx(expected["NMI"])
    assert got["ami"] == pytest.approx(expected["AMI"])


def reference_ranked(
    queries,
    labels,
    references=None,
    reference_labels=None,
    k=None,
    average="mean",
    distance="euclidean",
):
    """PML's `k`, averages and mean average precision, from a full ranking.

    `average` is "mean", "avg_of_avgs" or "per_class".
    """
    loo = references is None
    if loo:
        references, reference_labels = queries, labels
    queries = np.asarray(queries, dtype=np.float64)
    references = np.asarray(references, dtype=np.float64)
    reference_labels = np.asarray(reference_labels)
    counts = [int(np.sum(reference_labels == label)) - int(loo) for label in labels]
    available = len(references) - int(loo)
    depth = {None: available, "max_bin_count": max(counts)}.get(k, k)
    names = (
        "recall_at_1",
        "r_precision",
        "map_at_r",
        "mean_average_precision",
        "mean_reciprocal_rank",
    )
    cuts = {f"{family}_at_{k}": (family, k) for family in CUTOFF for k in (2, 5)}
    rows = {name: [] for name in (*names, *cuts)}
    classes = []
    for i, q in enumerate(queries):
        if counts[i] == 0:
            continue
        if distance == "euclidean":
            d = np.sqrt(((references - q) ** 2).sum(axis=1))
        else:
            u = references / np.linalg.norm(references, axis=1, keepdims=True)
            d = 0.5 * ((u - q / np.linalg.norm(q)) ** 2).sum(axis=1)
        order = [j for j in np.lexsort((np.arange(len(d)), d)) if not (loo and j == i)]
        rel = [bool(reference_labels[j] == labels[i]) for j in order]
        r = counts[i]
        cap = min(r, depth)

        def precision_sum(upto, rel=rel):
            found, total = 0, 0.0
            for rank, hit in enumerate(rel[:upto], start=1):
                if hit:
                    found += 1
                    total += found / rank
            return total

        rows["recall_at_1"].append(float(rel[0]))
        rows["r_precision"].append(sum(rel[:cap]) / cap)
        rows["map_at_r"].append(precision_sum(cap) / r)
        rows["mean_average_precision"].append(precision_sum(depth) / r)
        first = rel.index(True) + 1
        rows["mean_reciprocal_rank"].append(1 / first if first <= depth else 0.0)
        for name, (family, k) in cuts.items():
            top = rel[:k]
            rows[name].append(
                {
                    "recall": float(any(top)),
                    "precision": sum(top) / k,
                    "mrr": 1 / first if first <= k else 0.0,
                    "ndcg": sum(hit / np.log2(i + 1) for i, hit in enumerate(top, 1))
                    / sum(1 / np.log2(i + 1) for i in range(1, min(r, k) + 1)),
                    "map": precision_sum(k) / min(r, k),
                }[family]
            )
        classes.append(labels[i])
    classes = np.asarray(classes)
    result = {}
    for name, values in rows.items():
        values = np.asarray(values)
        per_class = {
            label.item(): float(values[classes == label].mean())
            for label in np.unique(classes)
        }
        if average == "mean":
            result[name] = float(values.mean())
        elif average == "avg_of_avgs":
            result[name] = float(np.mean(list(per_class.values())))
        else:
            result[name] = per_class
    return result


RANKED_NAMES = (
    "recall_at_1",
    "r_precision",
    "map_at_r",
    "mean_average_precision",
    "mean_reciprocal_rank",
)
CUTOFF = ("recall", "precision", "mrr", "ndcg", "map")
CUTOFF_NAMES = tuple(f"{family}_at_{k}" for family in CUTOFF for k in (2, 5))


@st.composite
def labelled_sets(draw):
    n = draw(st.integers(2, 12))
    dim = draw(st.integers(1, 2))
    # Small integer coordinates: many tied distances.
    coordinates = st.integers(-2, 2).map(float)
    x = draw(hnp.arrays("float32", (n, dim), elements=coordinates))
    labels = draw(hnp.arrays("int64", n, elements=st.integers(0, 3)))
    split = draw(st.one_of(st.none(), st.integers(1, n - 1)))
    if split is None:
        args = (x, labels)
        available = n - 1
        counts = [np.sum(labels == label) - 1 for label in labels]
    else:
        args = (x[:split], labels[:split], x[split:], labels[split:])
        available = n - split
        counts = [np.sum(labels[split:] == label) for label in labels[:split]]
    assume(max(counts) > 0)
    k = draw(st.one_of(st.none(), st.just("max_bin_count"), st.integers(1, available)))
    average = draw(st.sampled_from(["mean", "avg_of_avgs", "per_class"]))
    return args, k, average


@given(problem=labelled_sets())
def test_k_and_class_averages_match_the_numpy_reference(problem):
    args, k, average = problem
    names = RANKED_NAMES + CUTOFF_NAMES
    got = retrieval_metrics(
        *args,
        metrics=names,
        k=k,
        avg_of_avgs=average == "avg_of_avgs",
        return_per_class=average == "per_class",
        block_bytes=2**10,
    )
    expected = reference_ranked(*args, k=k, average=average)
    assert list(got) == list(names)
    for name in names:
        if average == "per_class":
            assert list(got[name]) == list(expected[name])
            assert got[name] == pytest.approx(expected[name])
        else:
            assert got[name] == pytest.approx(expected[name])


def test_k_truncates_the_ranked_metrics_by_hand():
    # Query 0 ranks labels 1, 0, 0 (R = 2): with k = 2 its AP@R counts
    # rank 2 only (1/2 / R); MRR sees its first hit at rank 2.
    x = np.array([[0.0], [0.5], [1.0], [2.0]])
    labels = np.array([0, 1, 0, 0])
    got = retrieval_metrics(
        x[:1],
        labels[:1],
        x[1:],
        labels[1:],
        metrics=RANKED_NAMES,
        k=1,
    )
    assert got == pytest.approx(
        {
            "recall_at_1": 0.0,
            "r_precision": 0.0,
            "map_at_r": 0.0,
            "mean_average_precision": 0.0,
            "mean_reciprocal_rank": 0.0,
        }
    )
    got = retrieval_metrics(
        x[:1], labels[:1], x[1:], labels[1:], metrics=RANKED_NAMES, k=2
    )
    assert got == pytest.approx(
        {
            "recall_at_1": 0.0,
            "r_precision": 0.5,
            "map_at_r": 0.25,
            "mean_average_precision": 0.25,
            "mean_reciprocal_rank": 0.5,
        }
    )
    got = retrieval_metrics(x[:1], labels[:1], x[1:], labels[1:], metrics=RANKED_NAMES)
    assert got["mean_average_precision"] == pytest.approx((1 / 2 + 2 / 3) / 2)


def test_mrr_past_a_small_k_is_zero():
    # The only same-class reference is the farthest of 40, rank 39.
    x = np.arange(40, dtype="float32")[:, None]
    labels = np.arange(40)
    labels[39] = 0
    args = (x[:1], labels[:1], x[1:], labels[1:])
    names = ("mean_reciprocal_rank",)
    assert retrieval_metrics(*args, metrics=names, k=38, block_bytes=256) == {
        "mean_reciprocal_rank": 0.0
    }
    got = retrieval_metrics(*args, metrics=names, k=39, block_bytes=256)
    assert got["mean_reciprocal_rank"] == pytest.approx(1 / 39)


def test_bad_k_and_averaging_options_are_refused():
    x, labels = clustered(20, 2, 2, 0.1, seed=4)
    for k in (0, -1, 2.0, "max", True):
        with pytest.raises(ValueError, match="`k` must be an integer >= 1"):
            retrieval_metrics(x, labels, k=k)
    with pytest.raises(ValueError, match="at most the number of references"):
        retrieval_metrics(x, labels, k=20)
    assert retrieval_metrics(x, labels, k=19)  # every other embedding
    with pytest.raises(ValueError, match="exclude each other"):
        retrieval_metrics(x, labels, avg_of_avgs=True, return_per_class=True)
    with pytest.raises(TypeError, match="avg_of_avgs"):
        retrieval_metrics(x, labels, avg_of_avgs=1)
    with pytest.raises(TypeError, match="return_per_class"):
        retrieval_metrics(x, labels, return_per_class="yes")


@pytest.mark.parametrize("k", [None, 7, "max_bin_count"])
@pytest.mark.parametrize("average", ["mean", "avg_of_avgs", "per_class"])
@pytest.mark.parametrize("separate_references", [False, True])
def test_k_and_averages_equal_pytorch_metric_learning(k, average, separate_references):
    """PML's `k`, `avg_of_avgs`, `return_per_class` (torch environment only)."""
    torch = pytest.importorskip("torch")
    pytest.importorskip("pytorch_metric_learning")
    from pytorch_metric_learning.distances import LpDistance
    from pytorch_metric_learning.utils.accuracy_calculator import AccuracyCalculator
    from pytorch_metric_learning.utils.inference import CustomKNN

    # Unbalanced classes, so the class averages differ from the mean.
    rng = np.random.default_rng(8)
    labels = rng.choice(6, 300, p=[0.4, 0.25, 0.15, 0.1, 0.06, 0.04])
    x = (labels[:, None] * 0.7 + rng.normal(size=(300, 5))).astype("float32")
    calculator = AccuracyCalculator(
        include=(
            "precision_at_1",
            "r_precision",
            "mean_average_precision_at_r",
            "mean_average_precision",
            "mean_reciprocal_rank",
        ),
        avg_of_avgs=average == "avg_of_avgs",
        return_per_class=average == "per_class",
        k=k,
        device=torch.device("cpu"),
        knn_func=CustomKNN(LpDistance(normalize_embeddings=False)),
    )
    if separate_references:
        args = (x[:100], labels[:100], x[100:], labels[100:])
    else:
        args = (x, labels)
    expected = calculator.get_accuracy(*args)
    got = retrieval_metrics(
        *args,
        metrics=RANKED_NAMES,
        k=k,
        avg_of_avgs=average == "avg_of_avgs",
        return_per_class=average == "per_class",
    )
    pml_names = {
        "recall_at_1": "precision_at_1",
        "r_precision": "r_precision",
        "map_at_r": "mean_average_precision_at_r",
        "mean_average_precision": "mean_average_precision",
        "mean_reciprocal_rank": "mean_reciprocal_rank",
    }
    for name, pml_name in pml_names.items():
        value = got[name]
        if average == "per_class":
            value = list(value.values())
        assert value == pytest.approx(expected[pml_name]), name


def test_cutoff_metrics_are_ranking_metrics_with_the_class_as_relevant():
    from keras_siamese import ranking_metrics

    x, labels = clustered(260, 6, 8, 2.5, seed=9)
    queries, references = x[:60], x[60:]
    query_labels, reference_labels = labels[:60], labels[60:]
    keep = np.isin(query_labels, reference_labels)
    relevant = [np.flatnonzero(reference_labels == label) for label in query_labels]
    ks = (1, 4, 30)
    expected = ranking_metrics(
        queries[keep], references, [r for r, k in zip(relevant, keep) if k], k=ks
    )
    names = [
        f"{family}_at_{k}" for family in ("precision", "mrr", "ndcg", "map") for k in ks
    ]
    got = retrieval_metrics(
        queries, query_labels, references, reference_labels, metrics=names
    )
    assert got == pytest.approx({name: expected[name] for name in names})
    # Recall@k here is sentence-transformers' accuracy@k.
    got = retrieval_metrics(
        queries, query_labels, references, reference_labels, metrics=("recall_at_4",)
    )
    assert got["recall_at_4"] == pytest.approx(expected["accuracy_at_4"])
