"""The datasets draw from the distributions they document.

Each test tallies many draws (fixed seeds, so runs are reproducible) and
compares them with the documented distribution, computed here independently,
using a chi-square statistic with a generous bound: a wrong distribution
(say, a positive that may be its anchor, or negatives from a single class)
exceeds it by orders of magnitude.
"""

from __future__ import annotations

import itertools
from collections import Counter

import numpy as np

from keras_siamese import ClassBalancedDataset, PairDataset, TripletDataset


def assert_uniform(counter: Counter, cells: list) -> None:
    """Chi-square test of `counter` against the uniform law on `cells`."""
    assert set(counter) <= set(cells), set(counter) - set(cells)
    observed = np.array([counter[cell] for cell in cells], dtype=float)
    expected = observed.sum() / len(cells)
    statistic = ((observed - expected) ** 2 / expected).sum()
    dof = len(cells) - 1
    # About 6 standard deviations above the mean of the chi-square law.
    assert statistic < dof + 6 * np.sqrt(2 * dof), (statistic, dof)


SIZES = [2, 3, 5, 10]
Y = np.random.default_rng(0).permutation(np.repeat(np.arange(4), SIZES))
X = np.zeros((len(Y), 1), np.float32)
MEMBERS = {c: np.flatnonzero(Y == c).tolist() for c in range(4)}


def check_anchor_positive_negative(anchors, positives, negatives):
    assert_uniform(Counter(anchors.tolist()), list(range(len(Y))))
    for c, members in MEMBERS.items():
        mine = Y[anchors] == c
        ordered_pairs = list(itertools.permutations(members, 2))
        assert_uniform(
            Counter(zip(anchors[mine].tolist(), positives[mine].tolist())),
            ordered_pairs,
        )
        outside = [i for i in range(len(Y)) if Y[i] != c]
        assert_uniform(Counter(negatives[mine].tolist()), outside)


def test_triplets_follow_the_documented_law():
    dataset = TripletDataset(X, Y, batch_size=64, steps_per_epoch=500, seed=3)
    parts = [dataset.batch_indices(i)[0] for i in range(500)]
    anchors, positives, negatives = (np.concatenate(p) for p in zip(*parts))
    check_anchor_positive_negative(anchors, positives, negatives)


def test_pairs_follow_the_documented_law():
    dataset = PairDataset(X, Y, batch_size=64, steps_per_epoch=1000, seed=4)
    batches = [dataset.batch_indices(i) for i in range(1000)]
    left = np.concatenate([b[0][0] for b in batches])
    right = np.concatenate([b[0][1] for b in batches])
    same = np.concatenate([b[1] for b in batches]) == 1
    assert_uniform(Counter(left.tolist()), list(range(len(Y))))
    for c, members in MEMBERS.items():
        mine = Y[left] == c
        positive, negative = mine & same, mine & ~same
        ordered_pairs = list(itertools.permutations(members, 2))
        assert_uniform(
            Counter(zip(left[positive].tolist(), right[positive].tolist())),
            ordered_pairs,
        )
        outside = [i for i in range(len(Y)) if Y[i] != c]
        assert_uniform(Counter(right[negative].tolist()), outside)
    # Positions of the positives within a batch are uniform too.
    positions = np.concatenate([np.flatnonzero(b[1]) for b in batches])
    assert_uniform(Counter(positions.tolist()), list(range(64)))


def test_class_balanced_blocks_are_uniform_subsets():
    # Class sizes exercising every path for K = 3: at least 2K (6, 40), below
    # 2K but at least K (5), and below K (2).
    sizes = [6, 5, 2, 40, 7]
    y = np.random.default_rng(1).permutation(np.repeat(np.arange(5), sizes))
    x = np.zeros((len(y), 1), np.float32)
    dataset = ClassBalancedDataset(x, y, 4, 3, steps_per_epoch=4000, seed=5)
    chosen = Counter()
    subsets = {c: Counter() for c in range(5)}
    for index in range(4000):
        rows, labels = dataset.batch_indices(index)
        for block, label in zip(rows.reshape(4, 3), labels[::3].tolist()):
            chosen[label] += 1
            subsets[label][tuple(sorted(block.tolist()))] += 1
    assert_uniform(chosen, list(range(5)))
    for c, size in enumerate(sizes):
        members = sorted(np.flatnonzero(y == c).tolist())
        if size >= 3:
            cells = list(itertools.combinations(members, 3))
        else:
            # Both examples, plus one of them drawn again.
            a, b = members
            cells = [(a, a, b), (a, b, b)]
        if size == 40:
            # 9880 cells: check the marginal (each example equally often).
            marginal = Counter(i for subset in subsets[c].elements() for i in subset)
            assert_uniform(marginal, members)
        else:
            assert_uniform(subsets[c], cells)


def test_many_classes_are_chosen_uniformly():
    # Far more classes than classes_per_batch: the sampler draws the classes
    # without enumerating them all.
    y = np.repeat(np.arange(300), 2)
    x = np.zeros((600, 1), np.float32)
    dataset = ClassBalancedDataset(x, y, 4, 2, steps_per_epoch=3000, seed=6)
    chosen = Counter()
    for index in range(3000):
        labels = dataset.batch_indices(index)[1]
        assert len(set(labels.tolist())) == 4
        chosen.update(labels[::2].tolist())
    assert_uniform(chosen, list(range(300)))
