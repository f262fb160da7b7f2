"""ranking_metrics: a NumPy reference of the formulas, and sentence-transformers."""

from __future__ import annotations

import importlib

import numpy as np
import pytest
from hypothesis import given
from hypothesis import strategies as st

from keras_siamese import EmbeddingIndex, ranking_metrics
from keras_siamese.retrieval import RANKING_METRICS
from keras_siamese.retrieval import ranking_metrics as exported
from tests.helpers import tied_corpus


def reference(queries, corpus, relevant, ks, distance="euclidean"):
    """Every query ranks the whole corpus in float64; the formulas, one by one."""
    queries = np.asarray(queries, dtype=np.float64)
    corpus = np.asarray(corpus, dtype=np.float64)
    values = {f"{family}_at_{k}": [] for family in RANKING_METRICS for k in ks}
    for q, wanted in zip(queries, relevant):
        if distance == "euclidean":
            d = np.sqrt(((corpus - q) ** 2).sum(axis=1))
        else:  # cosine
            u = corpus / np.linalg.norm(corpus, axis=1, keepdims=True)
            d = 0.5 * ((u - q / np.linalg.norm(q)) ** 2).sum(axis=1)
        order = np.lexsort((np.arange(len(d)), d))
        rel = [int(j in set(wanted)) for j in order]
        r = len(set(wanted))
        for k in ks:
            top = rel[:k]
            values[f"accuracy_at_{k}"].append(float(any(top)))
            values[f"precision_at_{k}"].append(sum(top) / k)
            values[f"recall_at_{k}"].append(sum(top) / r)
            rank = next((i for i, hit in enumerate(top, 1) if hit), None)
            values[f"mrr_at_{k}"].append(0.0 if rank is None else 1 / rank)
            dcg = sum(hit / np.log2(i + 1) for i, hit in enumerate(top, 1))
            idcg = sum(1 / np.log2(i + 1) for i in range(1, min(r, k) + 1))
            values[f"ndcg_at_{k}"].append(dcg / idcg)
            found, total = 0, 0.0
            for i, hit in enumerate(top, 1):
                if hit:
                    found += 1
                    total += found / i
            values[f"map_at_{k}"].append(total / min(r, k))
    return {name: float(np.mean(v)) for name, v in values.items()}


@st.composite
def problems(draw):
    queries, corpus = draw(tied_corpus())
    n, m = len(queries), len(corpus)
    relevant = [
        draw(st.sets(st.integers(0, m - 1), min_size=1, max_size=m)) for _ in range(n)
    ]
    ks = draw(st.lists(st.integers(1, 15), min_size=1, max_size=4, unique=True))
    return queries, corpus, relevant, tuple(ks)


def test_hand_computed_values():
    corpus = np.array([[0.0], [1.0], [2.0], [3.0]])
    # Query 0 ranks rows 0, 1, 2, 3 (relevant: row 1, rank 2); query 1 ranks
    # rows 3, 2, 1, 0 (relevant: rows 2 and 3, ranks 1 and 2).
    got = ranking_metrics([[0.1], [2.9]], corpus, [{1}, [3, 2]], k=(1, 2))
    assert list(got) == [
        f"{family}_at_{k}" for family in RANKING_METRICS for k in (1, 2)
    ]
    assert got == pytest.approx(
        {
            "accuracy_at_1": 0.5,
            "accuracy_at_2": 1.0,
            "precision_at_1": 0.5,
            "precision_at_2": (0.5 + 1.0) / 2,
            "recall_at_1": (0 + 0.5) / 2,
            "recall_at_2": 1.0,
            "mrr_at_1": 0.5,
            "mrr_at_2": (0.5 + 1) / 2,
            "ndcg_at_1": 0.5,
            "ndcg_at_2": (1 / np.log2(3) + 1) / 2,
            "map_at_1": 0.5,
            "map_at_2": (0.5 + 1) / 2,
        }
    )


@given(problem=problems())
def test_equals_the_numpy_reference(problem):
    queries, corpus, relevant, ks = problem
    assert ranking_metrics(queries, corpus, relevant, ks) == pytest.approx(
        reference(queries, corpus, relevant, ks)
    )


def test_index_corpus_cosine_and_small_chunks(monkeypatch):
    module = importlib.import_module("keras_siamese.retrieval.ranking_metrics")
    rng = np.random.default_rng(0)
    corpus = rng.normal(size=(300, 5)).astype("float32")
    queries = rng.normal(size=(40, 5)).astype("float32")
    relevant = [rng.choice(300, rng.integers(1, 30), replace=False) for _ in range(40)]
    expected = reference(queries, corpus, relevant, (1, 10, 50), "cosine")
    index = EmbeddingIndex("cosine", block_bytes=2**12)
    index.add(corpus)
    # Queries searched a few at a time give the same figures.
    monkeypatch.setattr(module, "_CHUNK_ENTRIES", 64)
    got = exported(queries, index, relevant, k=(1, 10, 50))
    assert got == pytest.approx(expected)
    got = ranking_metrics(queries, corpus, relevant, (1, 10, 50), distance="cosine")
    assert got == pytest.approx(expected)


@pytest.mark.parametrize("seed", range(3))
def test_equals_sentence_transformers(seed):
    """The definitions are those of `compute_metrics` (torch env only)."""
    evaluation = pytest.importorskip("sentence_transformers.evaluation")
    rng = np.random.default_rng(seed)
    corpus = rng.normal(size=(120, 4)).astype("float32")
    queries = rng.normal(size=(25, 4)).astype("float32")
    relevant = [
        set(rng.choice(120, rng.integers(1, 12), replace=False).tolist())
        for _ in range(25)
    ]
    ks = [1, 3, 5, 10, 100]
    got = ranking_metrics(queries, corpus, relevant, k=ks)
    evaluator = evaluation.InformationRetrievalEvaluator(
        queries={f"q{i}": f"query {i}" for i in range(25)},
        corpus={j: f"document {j}" for j in range(120)},
        relevant_docs={f"q{i}": ids for i, ids in enumerate(relevant)},
        mrr_at_k=ks,
        ndcg_at_k=ks,
        accuracy_at_k=ks,
        precision_recall_at_k=ks,
        map_at_k=ks,
    )
    # Its ranked lists: the 100 most similar (negated distance) documents.
    d = np.sqrt(((queries[:, None, :] - corpus[None]) ** 2).sum(-1, dtype=np.float64))
    results = [
        [{"corpus_id": int(j), "score": -float(row[j])} for j in np.argsort(row)[:100]]
        for row in d
    ]
    expected = evaluator.compute_metrics(results)
    names = {
        "accuracy@k": "accuracy",
        "precision@k": "precision",
        "recall@k": "recall",
        "mrr@k": "mrr",
        "ndcg@k": "ndcg",
        "map@k": "map",
    }
    for key, family in names.items():
        for k in ks:
            assert got[f"{family}_at_{k}"] == pytest.approx(float(expected[key][k]))


def test_bad_input_is_refused():
    corpus = np.eye(3, dtype="float32")
    with pytest.raises(ValueError, match="no relevant corpus id"):
        ranking_metrics(corpus[:2], corpus, [{0}, set()])
    with pytest.raises(ValueError, match=r"in \[0, 3\); got 3"):
        ranking_metrics(corpus[:1], corpus, [{3}])
    with pytest.raises(ValueError, match=r"in \[0, 3\); got -1"):
        ranking_metrics(corpus[:1], corpus, [[-1, 0]])
    with pytest.raises(ValueError, match="one collection of corpus ids per query"):
        ranking_metrics(corpus[:2], corpus, [{0}])
    with pytest.raises(TypeError, match="integer corpus row numbers"):
        ranking_metrics(corpus[:1], corpus, [["a"]])
    with pytest.raises(TypeError, match=r"relevant\[0\]"):
        ranking_metrics(corpus[:1], corpus, [0])
    with pytest.raises(ValueError, match="positive integers"):
        ranking_metrics(corpus[:1], corpus, [{0}], k=(1, 0))
    with pytest.raises(TypeError, match="`k`"):
        ranking_metrics(corpus[:1], corpus, [{0}], k=1.5)
    with pytest.raises(ValueError, match="embedding size 3"):
        ranking_metrics(np.ones((1, 2)), corpus, [{0}])
    with pytest.raises(ValueError, match="finite"):
        ranking_metrics(np.full((1, 3), np.nan), corpus, [{0}])
    index = EmbeddingIndex("cosine")
    with pytest.raises(ValueError, match="empty"):
        ranking_metrics(corpus[:1], index, [{0}])
    index.add(corpus)
    with pytest.raises(ValueError, match="differs from the index's"):
        ranking_metrics(corpus[:1], index, [{0}], distance="euclidean")
