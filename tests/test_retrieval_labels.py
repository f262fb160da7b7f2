"""Labels keep their values exactly through the retrieval API, or are refused."""

from __future__ import annotations

import keras
import numpy as np
import pytest
from hypothesis import given
from hypothesis import strategies as st

from keras_siamese import EmbeddingIndex, Verifier, retrieval_metrics
from keras_siamese._checks import check_labels
from keras_siamese.retrieval import _labels

BIG = 2**63  # the first integer int64 cannot hold
UINT64_MAX = 2**64 - 1


def identity_encoder(dim=2):
    return keras.Sequential([keras.Input((dim,)), keras.layers.Identity()])


@pytest.mark.parametrize(
    "labels",
    [
        [BIG, BIG + 1, UINT64_MAX],
        np.array([BIG, BIG + 1, UINT64_MAX], dtype=np.uint64),
        np.array([BIG, BIG + 1, UINT64_MAX], dtype=object),
    ],
    ids=["list", "uint64", "object"],
)
def test_uint64_labels_round_trip_through_add_search_and_save(labels, tmp_path):
    index = EmbeddingIndex()
    index.add(np.array([[0.0, 0.0], [1.0, 0.0], [2.0, 0.0]]), labels)
    assert index.labels.dtype == np.uint64
    assert index.labels.tolist() == [BIG, BIG + 1, UINT64_MAX]
    _, indices = index.search(np.array([[1.9, 0.0]]), k=2)
    assert index.labels_of(indices).tolist() == [[UINT64_MAX, BIG + 1]]
    index.save(tmp_path / "index")
    loaded = EmbeddingIndex.load(tmp_path / "index")
    assert loaded.labels.dtype == np.uint64
    assert loaded.labels.tolist() == [BIG, BIG + 1, UINT64_MAX]


def test_int64_and_uint64_additions_join_exactly():
    index = EmbeddingIndex()
    index.add(np.zeros((2, 2)), np.array([0, BIG - 1], dtype=np.int64))
    index.add(np.ones((1, 2)), np.array([BIG + 1], dtype=np.uint64))
    # NumPy would join them as float64, where BIG - 1 and BIG + 1 are equal.
    assert index.labels.dtype == np.uint64
    assert index.labels.tolist() == [0, BIG - 1, BIG + 1]
    index.add(np.ones((1, 2)), [3])  # int64 again, within uint64
    assert index.labels.tolist() == [0, BIG - 1, BIG + 1, 3]
    signed = EmbeddingIndex()
    signed.add(np.zeros((1, 2)), [-1])
    with pytest.raises(ValueError, match="no integer dtype holds both"):
        signed.add(np.zeros((1, 2)), [BIG])
    assert len(signed) == 1 and signed.labels.tolist() == [-1]


@pytest.mark.parametrize(
    "labels, match",
    [
        ([2**64], "int64 or uint64 range"),
        ([-(2**63) - 1], "int64 or uint64 range"),
        ([BIG, -1], "no integer dtype holds both"),
        ([2**53 + 1, 0.5], "float64 cannot hold exactly"),
    ],
)
def test_integers_that_cannot_be_kept_are_refused(labels, match):
    with pytest.raises(ValueError, match=match):
        check_labels(labels, len(labels))
    index = EmbeddingIndex()
    with pytest.raises(ValueError, match=match):
        index.add(np.zeros((len(labels), 2)), labels)
    assert len(index) == 0


@pytest.mark.parametrize(
    "labels",
    [
        [1, "a"],
        [1, "1"],
        [1.5, "a"],
        np.array([3, "a"], dtype=object),
        [np.int64(3), "a"],
        [b"a", "a"],
    ],
)
def test_mixed_kinds_are_refused_at_add(labels):
    index = EmbeddingIndex()
    with pytest.raises(TypeError, match="mixes labels of different kinds"):
        index.add(np.zeros((len(labels), 2)), labels)
    assert len(index) == 0 and index.labels is None


def test_another_kind_than_the_held_labels_is_refused():
    index = EmbeddingIndex()
    index.add(np.zeros((1, 2)), ["1"])
    with pytest.raises(TypeError, match="holds str labels"):
        index.add(np.zeros((1, 2)), [1])
    assert index.labels.tolist() == ["1"] and len(index) == 1


def test_labels_of_one_kind_keep_their_values():
    assert check_labels([1, 2.5], 2).tolist() == [1.0, 2.5]
    assert check_labels([True, 2], 2).dtype == np.int64
    assert check_labels(np.array([b"a", b"b"]), 2).tolist() == ["a", "b"]
    assert check_labels([(1, 2), (3,)], 2).tolist() == [(1, 2), (3,)]
    assert check_labels([-1, BIG - 1], 2).dtype == np.int64
    small = np.array([1, 2], dtype=np.uint64)
    assert check_labels(small, 2).dtype == np.int64


def test_combine_never_merges_distinct_labels():
    joined = _labels.combine(np.array([-1], dtype=np.int64), np.array([BIG], "u8"))
    assert joined.tolist() == [-1, BIG] and joined.dtype == object
    codes = _labels.encode(
        np.array([BIG - 1], dtype=np.int64), np.array([BIG + 1], dtype=np.uint64)
    )
    assert codes[0][0] != codes[1][0]
    codes = _labels.encode(np.array([1]), np.array(["1"]), np.array([1.5]))
    assert len({int(code[0]) for code in codes}) == 3


def test_retrieval_metrics_refuses_labels_it_would_merge():
    x = np.array([[0.0], [1.0], [5.0], [6.0]])
    with pytest.raises(TypeError, match="mixes labels of different kinds"):
        retrieval_metrics(x, [1, "1", 1, "1"])
    with pytest.raises(ValueError, match="float64 cannot hold exactly"):
        retrieval_metrics(x, [2**60, 2**60 + 1, 1.5, 1.5])


def test_retrieval_metrics_keeps_integer_labels_of_two_dtypes_apart():
    queries = np.array([[0.0], [10.0]])
    query_labels = np.array([BIG - 1, 7], dtype=np.int64)
    references = np.array([[0.1], [3.0], [10.1]])
    # Reference 0 is nearest to query 0 but of another class, which float64
    # (NumPy's join of int64 and uint64) would merge with it.
    reference_labels = np.array([BIG + 1, BIG - 1, 7], dtype=np.uint64)
    scores = retrieval_metrics(
        queries, query_labels, references, reference_labels, metrics=["recall_at_1"]
    )
    assert scores == {"recall_at_1": 0.5}


def test_retrieval_metrics_keeps_labels_of_two_kinds_apart():
    queries = np.array([[0.0], [10.0]])
    references = np.array([[0.1], [3.0], [10.1]])
    scores = retrieval_metrics(
        queries,
        np.array([1, 2]),
        references,
        np.array([1.5, 1.0, 2.0]),
        metrics=["recall_at_1"],
    )
    assert scores == {"recall_at_1": 0.5}  # 1.5 is not 1, 1.0 is
    with pytest.raises(ValueError, match="No query has a same-class item"):
        retrieval_metrics(queries, np.array([1, 2]), references, ["1", "2", "2"])


@pytest.mark.parametrize(
    "labels, marker", [([0, -1], -1), (["ann", "unknown"], "unknown")]
)
def test_enrolling_the_unknown_marker_is_refused(labels, marker):
    verifier = Verifier(identity_encoder(), threshold=1.0)
    with pytest.raises(ValueError, match="unknown="):
        verifier.enroll(np.array([[0.0, 0.0], [5.0, 5.0]]), labels)
    assert verifier.index is None
    # With another marker, the label is enrolled and told from a rejection.
    other = "nobody" if isinstance(marker, str) else -2
    verifier = Verifier(identity_encoder(), threshold=1.0, unknown=other)
    verifier.enroll(np.array([[0.0, 0.0], [5.0, 5.0]]), labels)
    found = verifier.identify(np.array([[5.0, 5.1], [9.0, 0.0]]))
    assert found.tolist() == [marker, other]


def test_a_gallery_holding_the_marker_is_refused_by_identify():
    gallery = EmbeddingIndex()
    gallery.add(np.array([[0.0, 0.0]]), [-1])
    verifier = Verifier(identity_encoder(), threshold=1.0)
    with pytest.raises(ValueError, match="unknown="):
        verifier.identify(np.array([[0.0, 0.0]]), index=gallery)
    verifier.enroll(np.array([[1.0, 1.0]]), [3])
    verifier.unknown = 3  # changed after enrolling
    with pytest.raises(ValueError, match="label 3"):
        verifier.identify(np.array([[0.0, 0.0]]))


def test_identify_returns_uint64_labels_exactly():
    verifier = Verifier(identity_encoder(), threshold=1.0)
    verifier.enroll(np.array([[0.0, 0.0], [5.0, 5.0]]), [BIG + 1, UINT64_MAX])
    found = verifier.identify(np.array([[5.0, 5.1], [0.0, 0.1], [9.0, 0.0]]))
    # -1 is no uint64: the answer holds both as they are.
    assert found.tolist() == [UINT64_MAX, BIG + 1, -1]
    verifier.unknown = 0
    found = verifier.identify(np.array([[5.0, 5.1], [9.0, 0.0]]))
    assert found.dtype == np.uint64 and found.tolist() == [UINT64_MAX, 0]


@given(st.lists(st.integers(-(2**63), UINT64_MAX), min_size=1, max_size=12))
def test_integer_labels_round_trip_or_are_refused(values):
    try:
        result = check_labels(values, len(values))
    except ValueError:
        assert min(values) < 0 and max(values) >= BIG  # no dtype holds both
        return
    assert result.dtype in (np.int64, np.uint64)
    assert result.tolist() == values


@given(
    st.lists(
        st.one_of(
            st.integers(-(2**70), 2**70),
            st.floats(allow_nan=False, allow_infinity=False),
            st.text(max_size=3),
        ),
        min_size=1,
        max_size=8,
    )
)
def test_any_label_list_is_kept_exactly_or_refused(values):
    try:
        result = check_labels(values, len(values))
    except (TypeError, ValueError):
        return
    kept = result.tolist()
    assert len(kept) == len(values)
    for before, after in zip(values, kept):
        assert after == before and isinstance(after, str) == isinstance(before, str)


@given(
    st.lists(st.integers(0, 3), min_size=1, max_size=8),
    st.lists(st.integers(0, 3), min_size=1, max_size=8),
)
def test_codes_of_int64_and_uint64_labels_are_equal_exactly_where_labels_are(a, b):
    # Around 2**63, where float64 (NumPy's join of the two) merges neighbours.
    signed = np.array([BIG - 1 - v for v in a], dtype=np.int64)
    unsigned = np.array([BIG + v for v in b], dtype=np.uint64)
    codes = np.concatenate(_labels.encode(signed, unsigned))
    values = [int(v) for v in signed] + [int(v) for v in unsigned]
    for i, x in enumerate(values):
        for j, y in enumerate(values):
            assert (codes[i] == codes[j]) == (x == y)


def test_uint64_labels_round_trip_through_a_saved_verifier(tmp_path):
    verifier = Verifier(identity_encoder(), threshold=1.0, unknown=0)
    verifier.enroll(np.array([[0.0, 0.0], [5.0, 5.0]]), [BIG + 1, UINT64_MAX])
    verifier.save(tmp_path / "verifier")
    loaded = Verifier.load(tmp_path / "verifier")
    found = loaded.identify(np.array([[5.0, 5.1], [0.0, 0.1], [9.0, 0.0]]))
    assert found.dtype == np.uint64
    assert found.tolist() == [UINT64_MAX, BIG + 1, 0]
