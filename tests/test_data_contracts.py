"""Contracts of the pair, triplet and class-balanced datasets and `make_pairs`.

Every property is checked over random label layouts (balanced, skewed, tiny
classes; integer, sparse integer and string labels) against the labels
themselves: the test looks up the class of every row a batch holds. `x` is
built so that each row names its own index, which lets a test check that a
batch holds exactly the rows that `batch_indices` reports.
"""

from __future__ import annotations

import math

import numpy as np
from hypothesis import given
from hypothesis import strategies as st

from keras_siamese import (
    ClassBalancedDataset,
    PairDataset,
    TripletDataset,
    make_pairs,
)


@st.composite
def class_sizes(draw, smallest=2):
    layout = draw(st.sampled_from(["balanced", "skewed", "tiny", "random"]))
    if layout == "balanced":
        count = draw(st.integers(2, 6))
        return [draw(st.integers(smallest, 12))] * count
    if layout == "skewed":
        return [draw(st.integers(60, 150))] + [smallest] * draw(st.integers(1, 4))
    if layout == "tiny":
        return [smallest] * draw(st.integers(2, 7))
    return draw(st.lists(st.integers(smallest, 30), min_size=2, max_size=7))


@st.composite
def labelled_data(draw, smallest=2):
    """`(x, y)`: labels in random order; row `i` of `x` is `[i, -i]`."""
    sizes = draw(class_sizes(smallest))
    kind = draw(st.sampled_from(["int", "sparse_int", "str"]))
    count = len(sizes)
    if kind == "int":
        names = np.arange(count)
    elif kind == "sparse_int":
        names = np.array(
            draw(
                st.lists(
                    st.integers(-(10**9), 10**9),
                    min_size=count,
                    max_size=count,
                    unique=True,
                )
            )
        )
    else:
        words = st.text(alphabet="abxyz", min_size=1, max_size=4)
        names = np.array(
            draw(st.lists(words, min_size=count, max_size=count, unique=True))
        )
    y = np.repeat(names, sizes)
    shuffle = np.random.default_rng(draw(st.integers(0, 2**32 - 1)))
    y = y[shuffle.permutation(len(y))]
    rows = np.arange(len(y), dtype=np.float32)
    return np.stack([rows, -rows], axis=1), y


seeds = st.integers(0, 2**63 - 1)
batch_sizes = st.sampled_from([1, 2, 7, 32])


def rows_of(batch_x):
    """The row indices a gathered batch holds (row `i` of `x` is `[i, -i]`)."""
    assert np.array_equal(batch_x[:, 1], -batch_x[:, 0])
    return batch_x[:, 0].astype(np.int64)


def some_batches(dataset):
    """A few `(epoch, index)` batches, including the last of an epoch."""
    last = len(dataset) - 1
    return [(0, 0), (0, last), (1, 0), (3, last // 2)]


@given(labelled_data(), seeds, batch_sizes, st.sampled_from([0.0, 0.25, 0.5, 1.0]))
def test_pair_batches_are_correct_by_construction(data, seed, batch_size, fraction):
    x, y = data
    dataset = PairDataset(x, y, batch_size, positive_fraction=fraction, seed=seed)
    assert len(dataset) == math.ceil(len(y) / batch_size)
    for epoch, index in some_batches(dataset):
        dataset.set_epoch(epoch)
        (x1, x2), same = dataset[index]
        (left, right), expected_same = dataset.batch_indices(index)
        assert x1.shape == x2.shape == (batch_size, 2)
        assert same.dtype == np.float32 and same.shape == (batch_size,)
        assert np.array_equal(rows_of(x1), left) and np.array_equal(rows_of(x2), right)
        assert np.array_equal(same, expected_same)
        assert np.array_equal(same, (y[left] == y[right]).astype(np.float32))
        positive = same == 1
        assert np.all(left[positive] != right[positive])
        expected = batch_size * fraction
        assert math.floor(expected) <= positive.sum() <= math.ceil(expected)


@given(labelled_data(), seeds, batch_sizes)
def test_triplet_batches_are_correct_by_construction(data, seed, batch_size):
    x, y = data
    dataset = TripletDataset(x, y, batch_size, seed=seed)
    for epoch, index in some_batches(dataset):
        dataset.set_epoch(epoch)
        (anchors, positives, negatives), zeros = dataset[index]
        (a, p, n), _ = dataset.batch_indices(index)
        assert np.array_equal(zeros, np.zeros(batch_size, np.float32))
        assert zeros.dtype == np.float32
        for gathered, rows in [(anchors, a), (positives, p), (negatives, n)]:
            assert gathered.shape == (batch_size, 2)
            assert np.array_equal(rows_of(gathered), rows)
        assert np.all(y[a] == y[p]) and np.all(a != p)
        assert np.all(y[a] != y[n])


@st.composite
def class_balanced_setups(draw):
    x, y = draw(labelled_data())
    num_classes = len(np.unique(y))
    p = draw(st.integers(1, num_classes))
    k = draw(st.integers(2, 6))
    return x, y, p, k


@given(class_balanced_setups(), seeds)
def test_class_balanced_batches_hold_p_classes_of_k(setup, seed):
    x, y, p, k = setup
    dataset = ClassBalancedDataset(x, y, p, k, seed=seed)
    assert len(dataset) == math.ceil(len(y) / (p * k))
    classes, counts = np.unique(y, return_counts=True)
    size_of = dict(zip(classes.tolist(), counts.tolist()))
    for epoch, index in some_batches(dataset):
        dataset.set_epoch(epoch)
        batch_x, labels = dataset[index]
        rows, expected_labels = dataset.batch_indices(index)
        assert batch_x.shape == (p * k, 2) and labels.shape == (p * k,)
        assert np.array_equal(rows_of(batch_x), rows)
        assert np.array_equal(labels, expected_labels)
        assert labels.dtype == np.int32
        if np.issubdtype(y.dtype, np.integer):
            assert np.array_equal(labels, y[rows])
        else:
            assert np.array_equal(dataset.classes[labels], y[rows])
        blocks = rows.reshape(p, k)
        block_classes = y[blocks[:, 0]]
        assert len(set(block_classes.tolist())) == p
        for block, label in zip(blocks, block_classes.tolist()):
            assert np.all(y[block] == label)
            distinct = len(np.unique(block))
            # Distinct whenever the class allows, all of it when it is small;
            # so every anchor has a positive that is another example.
            assert distinct == min(k, size_of[label])
            assert distinct >= 2


def test_integer_labels_keep_their_values():
    x = np.zeros((8, 1), np.float32)
    for y, dtype in [
        (np.repeat(np.array([3, 250], np.uint8), 4), np.int32),
        (np.repeat(np.array([-(2**40), 2**40]), 4), np.int64),
    ]:
        _, labels = ClassBalancedDataset(x, y, 2, 2, seed=0)[0]
        assert labels.dtype == dtype
        assert sorted(set(labels.tolist())) == sorted(set(y.tolist()))


@given(labelled_data(), seeds)
def test_every_class_is_reachable(data, seed):
    x, y = data
    classes = set(np.unique(y).tolist())
    pair_data = PairDataset(x, y, batch_size=64, steps_per_epoch=60, seed=seed)
    triplet_data = TripletDataset(x, y, batch_size=64, steps_per_epoch=60, seed=seed)
    balanced = ClassBalancedDataset(x, y, 2, 2, steps_per_epoch=200, seed=seed)
    seen = {name: set() for name in ["left", "positive", "negative", "anchor", "pk"]}
    for index in range(60):
        (left, right), same = pair_data.batch_indices(index)
        seen["left"].update(y[left].tolist())
        seen["positive"].update(y[right[same == 1]].tolist())
        seen["negative"].update(y[right[same == 0]].tolist())
        (anchors, _, negatives), _ = triplet_data.batch_indices(index)
        seen["anchor"].update(y[anchors].tolist() + y[negatives].tolist())
    for index in range(200):
        rows, _ = balanced.batch_indices(index)
        seen["pk"].update(y[rows].tolist())
    for name, found in seen.items():
        assert found == classes, name


def test_positive_fraction_is_unbiased_for_small_batches():
    y = np.repeat(np.arange(5), 4)
    x = np.zeros((20, 1), np.float32)
    for fraction in [0.3, 0.5, 0.9]:
        dataset = PairDataset(x, y, 3, fraction, steps_per_epoch=2000, seed=1)
        counts = [dataset.batch_indices(i)[1].sum() for i in range(2000)]
        # Stochastic rounding: each batch has floor or ceil of 3 * fraction,
        # and the mean is 3 * fraction (sd of the mean < 0.5 / sqrt(2000)).
        assert set(counts) <= {math.floor(3 * fraction), math.ceil(3 * fraction)}
        assert abs(np.mean(counts) / 3 - fraction) < 0.02


@st.composite
def multi_input(draw):
    x, y = draw(labelled_data())
    kind = draw(st.sampled_from(["tuple", "dict", "list"]))
    image = np.repeat(x[:, :1], 6, axis=1).reshape(-1, 2, 3).astype(np.uint8)
    if kind == "dict":
        return {"rows": x, "image": image}, y
    if kind == "tuple":
        return (x, image), y
    return [x, image], y


def check_structure(batch, x_rows, template):
    if isinstance(template, dict):
        assert set(batch) == set(template)
        rows, image = batch["rows"], batch["image"]
    else:
        assert isinstance(batch, tuple) and len(batch) == 2
        rows, image = batch
    assert np.array_equal(rows_of(rows), x_rows)
    assert image.dtype == np.uint8
    assert np.array_equal(image, np.repeat(x_rows % 256, 6).reshape(-1, 2, 3))


@given(multi_input(), seeds)
def test_multi_input_x_keeps_its_structure(data, seed):
    x, y = data
    (x1, x2), _ = PairDataset(x, y, 5, seed=seed)[0]
    (left, right), _ = PairDataset(x, y, 5, seed=seed).batch_indices(0)
    check_structure(x1, left, x)
    check_structure(x2, right, x)
    triplet = TripletDataset(x, y, 4, seed=seed)
    inputs, _ = triplet[0]
    for part, rows in zip(inputs, triplet.batch_indices(0)[0]):
        check_structure(part, rows, x)
    balanced = ClassBalancedDataset(x, y, 2, 2, seed=seed)
    batch_x, _ = balanced[0]
    check_structure(batch_x, balanced.batch_indices(0)[0], x)
    for side in make_pairs(x, y, seed=seed)[0]:
        assert type(side) is (dict if isinstance(x, dict) else tuple)


def test_memmap_x_is_read_in_place(tmp_path):
    y = np.repeat(np.arange(4), 25)
    path = tmp_path / "x.dat"
    written = np.memmap(path, dtype=np.float32, mode="w+", shape=(100, 2))
    written[:, 0] = np.arange(100)
    written[:, 1] = -np.arange(100)
    written.flush()
    x = np.memmap(path, dtype=np.float32, mode="r", shape=(100, 2))
    for dataset in [
        PairDataset(x, y, 8, seed=0),
        TripletDataset(x, y, 8, seed=0),
        ClassBalancedDataset(x, y, 2, 4, seed=0),
    ]:
        # The dataset keeps the memmap itself, not a copy in memory.
        assert dataset._x is x
        inputs, _ = dataset[1]
        rows = dataset.batch_indices(1)[0]
        for part, part_rows in zip(
            inputs if isinstance(inputs, tuple) else [inputs],
            rows if isinstance(rows, tuple) else [rows],
        ):
            assert type(part) is np.ndarray
            assert np.array_equal(rows_of(part), part_rows)


@given(labelled_data(), seeds, st.data())
def test_make_pairs_is_balanced_and_alternating(data, seed, choice):
    x, y = data
    classes, counts = np.unique(y, return_counts=True)
    most = counts.min() - 1
    per_class = choice.draw(st.one_of(st.none(), st.integers(1, most)))
    (x1, x2), same = make_pairs(x, y, seed=seed, pairs_per_class=per_class)
    per_class = most if per_class is None else per_class
    left, right = rows_of(x1), rows_of(x2)
    assert len(same) == 2 * len(classes) * per_class and same.dtype == np.float32
    assert np.array_equal(same, np.tile([1.0, 0.0], len(classes) * per_class))
    assert np.array_equal(same, (y[left] == y[right]).astype(np.float32))
    assert np.all(left[0::2] != right[0::2])
    # The negative of each positive shares its left example.
    assert np.array_equal(left[0::2], left[1::2])
    # Each class owns the same number of consecutive pairs, in class order.
    owners = y[left].reshape(len(classes), 2 * per_class)
    assert all(len(set(row.tolist())) == 1 for row in owners)
    assert len(set(owners[:, 0].tolist())) == len(classes)
    # Positive pairs are distinct pairs of examples.
    pairs_found = {tuple(sorted(p)) for p in zip(left[0::2], right[0::2])}
    assert len(pairs_found) == len(classes) * per_class
    again = make_pairs(x, y, seed=seed, pairs_per_class=per_class)
    assert np.array_equal(again[0][0], x1) and np.array_equal(again[0][1], x2)


def test_make_pairs_seeds_give_different_sets():
    y = np.repeat(np.arange(3), 20)
    x = np.stack([np.arange(60.0), -np.arange(60.0)], axis=1).astype(np.float32)
    (a, _), _ = make_pairs(x, y, seed=0)
    (b, _), _ = make_pairs(x, y, seed=1)
    assert not np.array_equal(a, b)
