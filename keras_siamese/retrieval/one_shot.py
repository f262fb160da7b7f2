"""N-way K-shot classification accuracy of embeddings (Koch et al., 2015)."""

from __future__ import annotations

from typing import Any

import numpy as np

from keras_siamese import distances
from keras_siamese._checks import check_embeddings, check_labels, check_positive_int
from keras_siamese.retrieval import _labels

# Episodes whose `(episode, way, way, dim)` differences are formed at once.
_EPISODE_ELEMENTS = 2**22


def _distinct_draws(
    rng: np.random.Generator, sizes: np.ndarray, draws: int
) -> np.ndarray:
    """`draws` distinct positions in `[0, size)` for every entry of `sizes`.

    Uniform without replacement, vectorised: the `j`-th draw picks one of the
    `size - j` positions left and is shifted past the positions taken before.
    """
    picks = np.empty((*sizes.shape, draws), dtype=np.int64)
    for j in range(draws):
        position = np.floor(rng.random(sizes.shape) * (sizes - j)).astype(np.int64)
        taken = np.sort(picks[..., :j], axis=-1)
        for t in range(j):
            position += position >= taken[..., t]
        picks[..., j] = position
    return picks


def one_shot_accuracy(
    embeddings: Any,
    labels: Any,
    ways: int = 20,
    shots: int = 1,
    episodes: int = 1000,
    seed: int = 0,
    distance: str | distances.Distance = "euclidean",
) -> float:
    """Accuracy of N-way K-shot classification by nearest support.

    The protocol of Koch et al. (2015), "Siamese Neural Networks for One-shot
    Image Recognition": each episode draws `ways` classes, and from each
    class `shots` support examples and one query, all distinct. Every query
    is assigned the class of its nearest support example (`shots = 1`) or of
    the nearest class mean of the supports (`shots > 1`, as in prototypical
    networks; the mean is taken of the distance's `prototype_rows`: for the
    cosine distance, of the unit-length embeddings). The accuracy is the fraction of the `ways x episodes`
    queries assigned their own class; a distance tie goes to the class drawn
    first. Episodes are drawn from `numpy.random.default_rng(seed)`, so the
    result is the same for a seed on every backend.

    Args:
        embeddings: `(n, dim)` embeddings, typically of classes the encoder
            did not train on.
        labels: `(n,)` their class labels.
        ways: classes per episode, at least 2.
        shots: support examples per class, at least 1.
        episodes: number of episodes.
        seed: seed of the draws.
        distance: `"euclidean"` (default), `"squared_euclidean"`, `"cosine"`,
            `"manhattan"`, or a `Distance` with an exact form.

    Returns:
        The accuracy in `[0, 1]`; `1 / ways` is chance.

    Raises:
        TypeError: for non-integer `ways`, `shots` or `episodes`.
        ValueError: for bad embeddings or labels, `ways < 2`, an unknown
            distance (or one without an exact form), or fewer than `ways`
            classes with `shots + 1` examples.

    Examples:
        >>> import numpy as np
        >>> rng = np.random.default_rng(0)
        >>> labels = np.repeat(np.arange(6), 4)
        >>> x = labels[:, None] * 10.0 + rng.normal(size=(24, 2))
        >>> one_shot_accuracy(x, labels, ways=5, shots=1, episodes=50)
        1.0
    """
    distance = distances.get(distance, needs=("exact",), user="one_shot_accuracy")
    embeddings = check_embeddings(embeddings, "embeddings")
    labels = check_labels(labels, len(embeddings))
    ways = check_positive_int(ways, "ways")
    shots = check_positive_int(shots, "shots")
    episodes = check_positive_int(episodes, "episodes")
    if ways < 2:
        raise ValueError(f"`ways` must be at least 2; got {ways}.")
    (codes,) = _labels.encode(labels)
    order = np.argsort(codes, kind="stable")
    counts = np.bincount(codes)
    starts = np.cumsum(counts) - counts
    eligible = np.flatnonzero(counts >= shots + 1)
    if eligible.size < ways:
        raise ValueError(
            f"A {ways}-way {shots}-shot episode needs {ways} classes with at "
            f"least {shots + 1} examples each ({shots} supports and a query); "
            f"only {eligible.size} classes have that many."
        )
    rng = np.random.default_rng(int(seed))
    # (episode, way): a class, then (episode, way, shot + 1) of its examples.
    classes = np.argsort(rng.random((episodes, eligible.size)), axis=1)[:, :ways]
    classes = eligible[classes]
    positions = _distinct_draws(rng, counts[classes], shots + 1)
    members = order[starts[classes][..., None] + positions]
    points = embeddings[members].astype(np.float64)
    points = distance.prototype_rows(points)
    support = points[:, :, :shots].mean(axis=2)
    queries = points[:, :, shots]
    per_step = max(1, _EPISODE_ELEMENTS // (ways * ways * embeddings.shape[1]))
    correct = 0
    for start in range(0, episodes, per_step):
        part = slice(start, start + per_step)
        # (episode, query way, support way) distances.
        d = distance.exact(queries[part, :, None, :], support[part, None, :, :])
        correct += int((np.argmin(d, axis=2) == np.arange(ways)).sum())
    return correct / (episodes * ways)
