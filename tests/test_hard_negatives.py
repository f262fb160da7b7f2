"""mine_hard_negatives: a NumPy reference, properties and bad input."""

from __future__ import annotations

import importlib

import keras
import numpy as np
import pytest
from hypothesis import given
from hypothesis import strategies as st

from keras_siamese import EmbeddingIndex, mine_hard_negatives
from keras_siamese.retrieval import mine_hard_negatives as exported
from tests.helpers import tied_corpus


def reference(queries, corpus, positives, k, distance="euclidean"):
    """Each query ranks the whole corpus in float64 (ties: lower row first)
    and keeps the first `k` rows that are not its positives."""
    queries = np.asarray(queries, dtype=np.float64)
    corpus = np.asarray(corpus, dtype=np.float64)
    out = []
    for q, wanted in zip(queries, positives):
        if distance == "euclidean":
            d = np.sqrt(((corpus - q) ** 2).sum(axis=1))
        else:  # cosine
            u = corpus / np.linalg.norm(corpus, axis=1, keepdims=True)
            d = 0.5 * ((u - q / np.linalg.norm(q)) ** 2).sum(axis=1)
        order = np.lexsort((np.arange(len(d)), d))
        wanted = set(
            np.atleast_1d(list(wanted) if isinstance(wanted, set) else wanted).tolist()
        )
        out.append([int(j) for j in order if int(j) not in wanted][:k])
    return np.array(out, dtype=np.int64).reshape(len(queries), k)


@st.composite
def problems(draw):
    queries, corpus = draw(tied_corpus(min_rows=2))
    n, m = len(queries), len(corpus)
    positives = [
        draw(st.sets(st.integers(0, m - 1), min_size=0, max_size=m - 1))
        for _ in range(n)
    ]
    most = max(len(p) for p in positives)
    k = draw(st.integers(1, m - most))
    return queries, corpus, positives, k


def test_hand_computed_negatives():
    corpus = np.array([[0.0], [1.0], [2.0], [3.0]])
    # Query 0.9 ranks rows 1, 0, 2, 3 and row 1 is its positive; query 2.8
    # ranks rows 3, 2, 1, 0 and row 3 is its positive.
    got = mine_hard_negatives([[0.9], [2.8]], corpus, [1, 3], k=2)
    assert got.dtype == np.int64
    np.testing.assert_array_equal(got, [[0, 2], [2, 1]])
    # Several positives a query, and none.
    got = mine_hard_negatives([[0.9], [2.8]], corpus, [{0, 1}, []], k=2)
    np.testing.assert_array_equal(got, [[2, 3], [3, 2]])


@given(problem=problems())
def test_equals_the_numpy_reference(problem):
    queries, corpus, positives, k = problem
    got = mine_hard_negatives(queries, corpus, positives, k=k)
    np.testing.assert_array_equal(got, reference(queries, corpus, positives, k))


@given(problem=problems())
def test_negatives_are_the_nearest_non_positives(problem):
    """No positive is returned, none twice, nearest first, and every other
    non-positive row is at least as far as the last one returned."""
    queries, corpus, positives, k = problem
    got = mine_hard_negatives(queries, corpus, positives, k=k)
    assert got.shape == (len(queries), k)
    d = np.sqrt(((queries[:, None, :].astype(np.float64) - corpus[None]) ** 2).sum(-1))
    for row, wanted in enumerate(positives):
        assert not set(got[row].tolist()) & set(wanted)
        assert len(set(got[row].tolist())) == k
        mined = d[row, got[row]]
        assert np.all(np.diff(mined) >= 0)
        others = np.setdiff1d(np.arange(len(corpus)), [*wanted, *got[row].tolist()])
        assert np.all(d[row, others] >= mined[-1])


def test_index_corpus_cosine_array_positives_and_small_chunks(monkeypatch):
    module = importlib.import_module("keras_siamese.retrieval.hard_negatives")
    rng = np.random.default_rng(0)
    corpus = rng.normal(size=(300, 5)).astype("float32")
    queries = rng.normal(size=(40, 5)).astype("float32")
    # Each query's positive is the corpus row nearest it, the row a
    # mining step must never return.
    positives = reference(queries, corpus, [[]] * 40, 1, "cosine")[:, 0]
    expected = reference(queries, corpus, positives, 7, "cosine")
    index = EmbeddingIndex("cosine", block_bytes=2**12)
    index.add(corpus)
    # Queries searched a few at a time give the same rows.
    monkeypatch.setattr(module, "_CHUNK_ENTRIES", 16)
    np.testing.assert_array_equal(exported(queries, index, positives, k=7), expected)
    # An (n, p) array of positives, and backend tensors.
    np.testing.assert_array_equal(
        mine_hard_negatives(
            keras.ops.convert_to_tensor(queries),
            corpus,
            keras.ops.convert_to_tensor(positives[:, None]),
            k=7,
            distance="cosine",
        ),
        expected,
    )


def test_bad_input_is_refused():
    corpus = np.eye(3, dtype="float32")
    with pytest.raises(ValueError, match="leaves fewer than k=2 negatives"):
        mine_hard_negatives(corpus[:2], corpus, [{0}, {1, 2}], k=2)
    with pytest.raises(ValueError, match=r"in \[0, 3\); got 3"):
        mine_hard_negatives(corpus[:1], corpus, [{3}])
    with pytest.raises(ValueError, match=r"in \[0, 3\); got -1"):
        mine_hard_negatives(corpus[:1], corpus, np.array([-1]))
    with pytest.raises(ValueError, match="one entry per query"):
        mine_hard_negatives(corpus[:2], corpus, [0])
    with pytest.raises(ValueError, match=r"shape \(queries,\)"):
        mine_hard_negatives(corpus[:1], corpus, np.zeros((1, 1, 1), "int64"))
    with pytest.raises(TypeError, match="integer corpus row numbers"):
        mine_hard_negatives(corpus[:1], corpus, np.array([0.0]))
    with pytest.raises(TypeError, match="integer corpus row numbers"):
        mine_hard_negatives(corpus[:1], corpus, [[0.5]])
    with pytest.raises(TypeError, match=r"positives\[0\]"):
        mine_hard_negatives(corpus[:1], corpus, ["a"])
    with pytest.raises(TypeError, match="`positives`"):
        mine_hard_negatives(corpus[:1], corpus, 0)
    with pytest.raises(ValueError, match="positive integer"):
        mine_hard_negatives(corpus[:1], corpus, [0], k=0)
    with pytest.raises(TypeError, match="`k`"):
        mine_hard_negatives(corpus[:1], corpus, [0], k=1.5)
    with pytest.raises(ValueError, match="embedding size 3"):
        mine_hard_negatives(np.ones((1, 2)), corpus, [0])
    with pytest.raises(ValueError, match="finite"):
        mine_hard_negatives(np.full((1, 3), np.nan), corpus, [0])
    index = EmbeddingIndex("cosine")
    with pytest.raises(ValueError, match="empty"):
        mine_hard_negatives(corpus[:1], index, [0])
    index.add(corpus)
    with pytest.raises(ValueError, match="differs from the index's"):
        mine_hard_negatives(corpus[:1], index, [0], distance="euclidean")
