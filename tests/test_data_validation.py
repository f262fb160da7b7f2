"""Bad input to the datasets and `make_pairs` fails at construction, clearly."""

from __future__ import annotations

import numpy as np
import pytest

from keras_siamese import ClassBalancedDataset, PairDataset, TripletDataset, make_pairs

X = np.zeros((12, 3), np.float32)
Y = np.repeat(np.arange(3), 4)


def build(kind, x=X, y=Y, **kwargs):
    if kind == "pairs":
        return PairDataset(x, y, **kwargs)
    if kind == "triplets":
        return TripletDataset(x, y, **kwargs)
    if kind == "balanced":
        kwargs.setdefault("classes_per_batch", 2)
        kwargs.setdefault("samples_per_class", 2)
        return ClassBalancedDataset(x, y, **kwargs)
    kwargs.pop("seed", None)
    return make_pairs(x, y, **kwargs)


KINDS = ["pairs", "triplets", "balanced", "make_pairs"]
DATASETS = ["pairs", "triplets", "balanced"]


def test_length_mismatch():
    for kind in KINDS:
        with pytest.raises(ValueError, match=r"len\(x\) = 12 and len\(y\) = 11"):
            build(kind, y=Y[:11])


def test_fewer_than_two_classes():
    for kind in KINDS:
        with pytest.raises(ValueError, match="at least two classes"):
            build(kind, y=np.full(12, "only"))


def test_single_example_class_is_named():
    y = np.array(["a"] * 5 + ["b"] * 5 + ["lonely"] + ["c"])
    for kind in KINDS:
        with pytest.raises(ValueError, match=r"2 class\(es\).*'c', 'lonely'"):
            build(kind, y=y)


def test_single_example_classes_are_fine_without_positives():
    y = np.array([0] * 10 + [1, 2])
    dataset = PairDataset(X, y, 8, positive_fraction=0.0, seed=0)
    (left, right), same = dataset.batch_indices(0)
    assert not same.any() and np.all(y[left] != y[right])


def test_y_must_be_one_dimensional():
    for kind in KINDS:
        with pytest.raises(ValueError, match="1-D"):
            build(kind, y=Y.reshape(12, 1))


@pytest.mark.parametrize(
    ("x", "error", "match"),
    [
        ({"a": X, "b": X[:5]}, ValueError, "same number of examples"),
        ({}, ValueError, "empty"),
        ((), ValueError, "empty"),
        ("pixels", TypeError, "NumPy array"),
        (np.float32(1.0), ValueError, "batch axis"),
        (np.array([object()] * 12), TypeError, "numeric"),
    ],
)
def test_bad_x(x, error, match):
    for kind in KINDS:
        with pytest.raises(error, match=match):
            build(kind, x=x)


@pytest.mark.parametrize("steps", [0, -3])
def test_non_positive_steps(steps):
    for kind in DATASETS:
        with pytest.raises(ValueError, match="steps_per_epoch"):
            build(kind, steps_per_epoch=steps)


@pytest.mark.parametrize(
    ("size", "error"),
    [(0, ValueError), (-1, ValueError), (2.5, TypeError), (True, TypeError)],
)
def test_bad_batch_size(size, error):
    for kind in ["pairs", "triplets"]:
        with pytest.raises(error, match="batch_size"):
            build(kind, batch_size=size)


@pytest.mark.parametrize(
    ("fraction", "error"),
    [
        (-0.1, ValueError),
        (1.5, ValueError),
        (float("nan"), ValueError),
        ("half", TypeError),
    ],
)
def test_bad_positive_fraction(fraction, error):
    with pytest.raises(error, match="positive_fraction"):
        PairDataset(X, Y, positive_fraction=fraction)


@pytest.mark.parametrize(
    ("p", "k", "error", "match"),
    [
        (4, 2, ValueError, r"classes_per_batch.*\(4\).*\(3\)"),
        (0, 2, ValueError, "classes_per_batch"),
        (2, 1, ValueError, "at least 2"),
        (2, 0, ValueError, "samples_per_class"),
        (2.0, 2, TypeError, "classes_per_batch"),
    ],
)
def test_bad_class_balanced_sizes(p, k, error, match):
    with pytest.raises(error, match=match):
        ClassBalancedDataset(X, Y, p, k)


@pytest.mark.parametrize(("seed", "error"), [(-1, ValueError), (1.5, TypeError)])
def test_bad_seed(seed, error):
    for kind in DATASETS:
        with pytest.raises(error, match="seed"):
            build(kind, seed=seed)


def test_unknown_keyword_is_rejected():
    for kind in DATASETS:
        with pytest.raises(TypeError, match="wokers"):
            build(kind, wokers=2)


def test_batch_index_out_of_range():
    for kind in DATASETS:
        dataset = build(kind, steps_per_epoch=3, seed=0)
        for index in [3, -1]:
            with pytest.raises(IndexError, match="out of range"):
                dataset[index]


def test_bad_epoch():
    dataset = PairDataset(X, Y, seed=0)
    with pytest.raises(ValueError, match="non-negative"):
        dataset.set_epoch(-1)
    with pytest.raises(TypeError):
        dataset.set_epoch(1.5)


@pytest.mark.parametrize(
    ("count", "error"), [(4, ValueError), (0, ValueError), (1.0, TypeError)]
)
def test_make_pairs_pairs_per_class_range(count, error):
    with pytest.raises(error, match="pairs_per_class"):
        make_pairs(X, Y, pairs_per_class=count)


def test_unorderable_labels_are_accepted():
    y = np.array([1, "one", 1, "one", (2, 3), (2, 3)], dtype=object)
    y[4], y[5] = (2, 3), (2, 3)
    x = np.arange(6, dtype=np.float32)[:, None]
    dataset = ClassBalancedDataset(x, y, 3, 2, seed=0)
    rows, codes = dataset.batch_indices(0)
    assert sorted(map(str, dataset.classes.tolist())) == ["(2, 3)", "1", "one"]
    assert [dataset.classes[c] for c in codes] == list(y[rows])
