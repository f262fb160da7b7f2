"""one_shot_accuracy: separated clusters, chance, exact expectations, errors."""

from __future__ import annotations

import itertools

import numpy as np
import pytest

from keras_siamese import one_shot_accuracy


def test_separated_clusters_score_one():
    rng = np.random.default_rng(0)
    labels = np.repeat(np.arange(25), 6)
    x = rng.normal(size=(25, 16))[labels] * 10 + rng.normal(size=(150, 16))
    for shots, distance in [(1, "euclidean"), (3, "cosine"), (5, "manhattan")]:
        assert (
            one_shot_accuracy(
                x, labels, ways=20, shots=shots, episodes=200, distance=distance
            )
            == 1.0
        )


def test_random_embeddings_score_chance():
    rng = np.random.default_rng(1)
    x, labels = rng.normal(size=(3000, 8)), rng.integers(0, 30, 3000)
    for ways in (5, 20):
        accuracy = one_shot_accuracy(x, labels, ways=ways, episodes=1000)
        assert accuracy == pytest.approx(1 / ways, abs=0.02)


def expected_two_way(a, b, shots):
    """Exact accuracy over every equally likely draw of a 2-way episode."""
    scores = []
    for draw_a in itertools.permutations(a, shots + 1):
        for draw_b in itertools.permutations(b, shots + 1):
            centre_a, centre_b = np.mean(draw_a[:shots]), np.mean(draw_b[:shots])
            # A tie goes to the class drawn first, which is either with p = 1/2.
            for query, own, other in (
                (draw_a[-1], centre_a, centre_b),
                (draw_b[-1], centre_b, centre_a),
            ):
                gap = abs(query - other) - abs(query - own)
                scores.append(1.0 if gap > 0 else 0.5 if gap == 0 else 0.0)
    return float(np.mean(scores))


@pytest.mark.parametrize("shots", [1, 2])
def test_two_way_episodes_average_to_the_exact_expectation(shots):
    a, b = [0.0, 1.0, 2.2], [2.5, 3.0, 6.0]
    x = np.array(a + b)[:, None]
    labels = np.array([0, 0, 0, 1, 1, 1])
    got = one_shot_accuracy(x, labels, ways=2, shots=shots, episodes=20000, seed=3)
    assert got == pytest.approx(expected_two_way(a, b, shots), abs=0.01)


def test_the_same_seed_gives_the_same_episodes():
    rng = np.random.default_rng(2)
    x, labels = rng.normal(size=(200, 4)), np.repeat(np.array(list("abcdefghij")), 20)
    first = one_shot_accuracy(x, labels, ways=5, episodes=300, seed=7)
    assert one_shot_accuracy(x, labels, ways=5, episodes=300, seed=7) == first
    others = {
        one_shot_accuracy(x, labels, ways=5, episodes=300, seed=s) for s in range(4)
    }
    assert len(others) > 1


def test_bad_arguments_raise():
    x, labels = np.zeros((12, 2)), np.repeat(np.arange(4), 3)
    with pytest.raises(ValueError, match="5 classes with at least 2 examples"):
        one_shot_accuracy(x, labels, ways=5)
    with pytest.raises(ValueError, match="only 0 classes"):
        one_shot_accuracy(x, labels, ways=2, shots=3)
    with pytest.raises(ValueError, match="`ways` must be at least 2"):
        one_shot_accuracy(x, labels, ways=1)
    with pytest.raises(TypeError, match="`episodes`"):
        one_shot_accuracy(x, labels, ways=2, episodes=1.5)
    with pytest.raises(ValueError, match="`distance`"):
        one_shot_accuracy(x, labels, ways=2, distance="jaccard")
    with pytest.raises(ValueError, match="one label per row"):
        one_shot_accuracy(x, labels[:5], ways=2)
