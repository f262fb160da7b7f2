"""Quantized index: memory, build time, queries/s and recall@10 against exact search.

On a Gaussian mixture of float32 embeddings (`--count` x `--dim`, `--clusters`
centres, fixed seed) and `--queries` queries drawn from the same mixture,
each row is one `EmbeddingIndex`:

- `exact`: no quantization, exact search on the backend;
- `int8` / `binary` (`keep_float=None`): the codes alone, the distances
  measured on them (approximate);
- `int8 + rescore` / `binary + rescore`: `k * rescore` candidates by the
  codes, rescored with the exact distance on the float32 rows kept in
  memory (`memory`) or memory-mapped from the saved directory (`disk`).

`memory MiB` is `EmbeddingIndex.memory_bytes`: the float32 rows held in
memory (not those mapped from disk), the codes and the int8 ranges.
`build s` is the wall-clock time of `add` (quantizing included), plus the
save and the load for the `disk` rows, which map their floats from the save.
`queries/s` is the median of `--repeats` searches of all queries after one
warm-up search; `recall@k` is the fraction of the exact `k` nearest found.
The binary rows use the cosine distance (sign bits keep directions); the
int8 rows use `--distance` (euclidean by default) and the exact row both.

    KERAS_BACKEND=jax python benchmarks/bench_quantized.py
    KERAS_BACKEND=jax python benchmarks/bench_quantized.py --count 100000 --queries 200
"""

from __future__ import annotations

import argparse
import statistics
import tempfile
import time

import numpy as np
from _common import header, print_table

from keras_siamese import EmbeddingIndex


def mixture(
    count: int, queries: int, dim: int, clusters: int, seed: int
) -> tuple[np.ndarray, np.ndarray]:
    """Gallery and queries from one Gaussian mixture (float32)."""
    rng = np.random.default_rng(seed)
    centres = rng.normal(size=(clusters, dim)).astype(np.float32)
    spread = np.float32(0.5)

    def draw(n: int) -> np.ndarray:
        out = np.empty((n, dim), dtype=np.float32)
        for start in range(0, n, 2**16):
            stop = min(start + 2**16, n)
            which = rng.integers(0, clusters, stop - start)
            noise = rng.standard_normal((stop - start, dim), dtype=np.float32)
            out[start:stop] = centres[which] + spread * noise
        return out

    return draw(count), draw(queries)


def recall(found: np.ndarray, truth: np.ndarray) -> float:
    hits = [len(set(a.tolist()) & set(b.tolist())) for a, b in zip(found, truth)]
    return float(np.sum(hits) / truth.size)


def measure(
    gallery: np.ndarray,
    queries: np.ndarray,
    k: int,
    repeats: int,
    folder: str,
    **settings,
) -> tuple[EmbeddingIndex, float, float, np.ndarray]:
    """The index, its build seconds, queries/s and the found rows."""
    start = time.perf_counter()
    index = EmbeddingIndex(**settings)
    index.add(gallery)
    if settings.get("keep_float") == "disk":
        index.save(f"{folder}/index")
        index = EmbeddingIndex.load(f"{folder}/index")
    build = time.perf_counter() - start
    index.search(queries[:1], k=k)  # warm-up: lays out the gallery
    times = []
    for _ in range(repeats):
        start = time.perf_counter()
        _, found = index.search(queries, k=k)
        times.append(time.perf_counter() - start)
    return index, build, len(queries) / statistics.median(times), found


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    parser.add_argument("--count", type=int, default=1_000_000)
    parser.add_argument("--dim", type=int, default=128)
    parser.add_argument("--queries", type=int, default=1000)
    parser.add_argument("--clusters", type=int, default=1000)
    parser.add_argument("--k", type=int, default=10)
    parser.add_argument("--rescore", type=int, default=4)
    parser.add_argument("--repeats", type=int, default=1)
    parser.add_argument("--distance", default="euclidean")
    parser.add_argument("--seed", type=int, default=0)
    args = parser.parse_args()

    header("Quantized index")
    gallery, queries = mixture(
        args.count, args.queries, args.dim, args.clusters, args.seed
    )
    print(
        f"{args.count:,} x {args.dim} float32, {args.clusters} clusters, "
        f"{args.queries:,} queries, k={args.k}, rescore={args.rescore}, "
        f"median of {args.repeats}\n"
    )
    distances = [args.distance] + (["cosine"] if args.distance != "cosine" else [])
    rows = []
    truth = {}
    with tempfile.TemporaryDirectory() as folder:
        for distance in distances:
            index, build, speed, found = measure(
                gallery, queries, args.k, args.repeats, folder, distance=distance
            )
            truth[distance] = found
            rows.append(
                ["exact", distance, "-", index.memory_bytes / 2**20, build, speed, 1.0]
            )
        plans = [
            ("int8", args.distance, "int8", None),
            ("int8 + rescore", args.distance, "int8", "memory"),
            ("int8 + rescore", args.distance, "int8", "disk"),
            ("binary", "cosine", "binary", None),
            ("binary + rescore", "cosine", "binary", "memory"),
            ("binary + rescore", "cosine", "binary", "disk"),
        ]
        for name, distance, kind, keep in plans:
            index, build, speed, found = measure(
                gallery,
                queries,
                args.k,
                args.repeats,
                folder,
                distance=distance,
                quantization=kind,
                rescore=args.rescore,
                keep_float=keep,
            )
            rows.append(
                [
                    name,
                    distance,
                    "none" if keep is None else keep,
                    index.memory_bytes / 2**20,
                    build,
                    speed,
                    recall(found, truth[distance]),
                ]
            )
            del index
    print_table(
        [
            "index",
            "distance",
            "float32 rows",
            "memory MiB",
            "build s",
            "queries/s",
            f"recall@{args.k}",
        ],
        rows,
    )


if __name__ == "__main__":
    main()
