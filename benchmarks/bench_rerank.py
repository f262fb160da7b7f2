"""MAP@R with large classes: where the re-ranking distances take their time.

`retrieval_metrics(..., metrics=("map_at_r",))` ranks the `R` nearest
neighbours of every query, so with large classes it measures `R` candidates
per query again in float64 (`keras_siamese.retrieval._search.exact_distances`).
This script times, on `classes` equal classes of Gaussian embeddings:

- `map_at_r`: the whole `retrieval_metrics` call (leave-one-out);
- `exact_distances`: the float64 re-ranking of the same candidates, as the
  search does it (one product of prepared rows where the distance has a
  `GramForm`), and `from differences`: the same pairs each measured from its
  coordinate differences (`exact_form`), as every pair was before;
- `numpy brute force`: a float32 NumPy matrix product of the queries with
  themselves and an `argsort`, for scale (no exact re-ranking).

Wall-clock seconds, the best of `--repeats` after one warm-up call.

    KERAS_BACKEND=jax python benchmarks/bench_rerank.py
    KERAS_BACKEND=torch python benchmarks/bench_rerank.py --count 400 --dim 64
"""

from __future__ import annotations

import argparse
import time
from collections.abc import Callable

import numpy as np


def best_time(run: Callable[[], object], repeats: int) -> float:
    run()
    times = []
    for _ in range(repeats):
        start = time.perf_counter()
        run()
        times.append(time.perf_counter() - start)
    return min(times)


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    parser.add_argument("--count", type=int, default=2000)
    parser.add_argument("--dim", type=int, default=1568)
    parser.add_argument("--classes", type=int, default=5)
    parser.add_argument("--repeats", type=int, default=2)
    parser.add_argument("--distances", nargs="+", default=["cosine", "euclidean"])
    args = parser.parse_args()

    rng = np.random.default_rng(0)
    labels = np.arange(args.count) % args.classes
    centres = rng.normal(size=(args.classes, args.dim))
    x = (0.3 * centres[labels] + rng.normal(size=(args.count, args.dim))).astype(
        "float32"
    )
    depth = args.count // args.classes - 1
    print(
        f"{args.count} x {args.dim}, {args.classes} classes (R = {depth}), "
        f"best of {args.repeats}"
    )
    print(f"{'distance':<10} {'step':<28} {'seconds':>9}")
    for name in args.distances:
        for step, seconds in measure(name, x, labels, depth, args.repeats).items():
            print(f"{name:<10} {step:<28} {seconds:>9.3f}")


def measure(
    name: str, x: np.ndarray, labels: np.ndarray, depth: int, repeats: int
) -> dict[str, float]:
    """The seconds of each step for one distance."""
    from keras_siamese import distances, retrieval_metrics
    from keras_siamese.retrieval import _search

    distance = distances.get(name)
    count = len(x)
    rows = {}
    rows["map_at_r"] = best_time(
        lambda: retrieval_metrics(x, labels, distance=name, metrics=("map_at_r",)),
        repeats,
    )
    # As many distinct candidate rows per query as the search measures (its
    # R nearest and a few more), drawn at random.
    rng = np.random.default_rng(1)
    candidates = np.argsort(rng.random((count, count)), axis=1)[
        :, : _search.over_fetch(depth, count - 1)
    ]
    out = np.empty(candidates.shape)
    rows["exact_distances"] = best_time(
        lambda: _search.exact_distances(x, x, candidates, distance), repeats
    )
    rows["  from differences"] = best_time(
        lambda: _search._direct(x, x, candidates, distance, out, 0, count), repeats
    )

    def brute_force() -> np.ndarray:
        if name == "cosine":
            y = x / np.linalg.norm(x, axis=1, keepdims=True)
            scores = -(y @ y.T)
        else:  # ||g||^2 - 2 q.g orders like the Euclidean distance
            scores = np.sum(np.square(x), axis=1) - 2.0 * (x @ x.T)
        np.fill_diagonal(scores, np.inf)
        return np.argsort(scores, axis=1)[:, :depth]

    rows["numpy brute force"] = best_time(brute_force, repeats)
    return rows


if __name__ == "__main__":
    main()
