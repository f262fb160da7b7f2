"""Exact search and retrieval metrics: throughput and peak memory, beside faiss.

For every gallery size, each configuration runs in a fresh subprocess (so
one configuration's memory does not hide another's) on the same data, a
Gaussian mixture of float32 embeddings regenerated from the seed:

- `keras euclidean`, `keras cosine`: `EmbeddingIndex.search` (exact, blocked,
  on the backend in `KERAS_BACKEND`);
- `faiss IndexFlatL2`, `faiss IndexFlatIP`: faiss' exact flat indexes on the
  same data (unit vectors for inner product), called directly;
- `faiss HNSW`: faiss' `IndexHNSWFlat` called directly, with its recall@k
  against the exact neighbours;
- `keras_siamese faiss-hnsw`: `EmbeddingIndex(engine="faiss-hnsw")`, which
  re-ranks HNSW's candidates with exact distances.

Throughput is queries per second of wall-clock time, median of the timed
repeats after one warm-up search (compilation excluded). Beside each
`keras` search, the same worker times a plain matrix product of the same
shapes in the same backend, `queries @ gallery.T` (in slices of 16,384
gallery rows, so that the product fits in memory), alternating with the
searches; `search / matmul` is the product's time over the search's, the
fraction of the measured matmul rate (2 x queries x gallery x dim FLOPs)
that the search reaches. `package / faiss flat` is the search's throughput
over faiss' exact flat index on the same data in the same run. faiss runs
in its own subprocess, with `--faiss-python` (default: this interpreter)
and `KERAS_BACKEND=numpy`, so that an environment without faiss can be
compared with the faiss of another one (both on the CPU). Peak memory is the
largest growth of the resident set during the searches, warm-up included,
over the resident set before them (sampled every 5 ms; the gallery and the
index, laid out by a first one-query search, are already in memory then), or
the accelerator's peak allocation on a GPU. Then
`retrieval_metrics` on a labelled set shaped like Stanford Online Products'
test set (60,502 x 128, about 11,000 classes of 2 to 9 images), and
`calibrate_threshold` on 10 million pairs. Prints tables and writes
`benchmarks/results/search-<backend>.json`.

    KERAS_BACKEND=jax python benchmarks/bench_search.py
    KERAS_BACKEND=torch python benchmarks/bench_search.py --sizes 10000 --queries 200
    KERAS_BACKEND=torch python benchmarks/bench_search.py --faiss-python .tox/jax/bin/python
"""

from __future__ import annotations

import argparse
import json
import os
import subprocess
import sys
import threading
import time
from collections.abc import Callable

import numpy as np

# Gallery rows per slice of the plain matrix product timed beside a search.
MATMUL_COLUMNS = 16384

ENGINES = (
    "keras euclidean",
    "faiss IndexFlatL2",
    "keras cosine",
    "faiss IndexFlatIP",
    "faiss HNSW",
    "keras_siamese faiss-hnsw",
)


def mixture(count: int, dim: int, seed: int, centres: int = 1000) -> np.ndarray:
    """`count` float32 points around `centres` random centres (unit noise)."""
    rng = np.random.default_rng(seed)
    means = rng.standard_normal((centres, dim), dtype=np.float32) * 2.0
    points = rng.standard_normal((count, dim), dtype=np.float32)
    points += means[rng.integers(0, centres, count)]
    return points


def resident_bytes() -> int:
    with open("/proc/self/statm") as handle:
        return int(handle.read().split()[1]) * os.sysconf("SC_PAGE_SIZE")


class PeakMemory:
    """Largest resident-set growth while the `with` block runs."""

    def __enter__(self) -> PeakMemory:
        self.start = resident_bytes()
        self.peak = self.start
        self._running = True
        self._thread = threading.Thread(target=self._sample, daemon=True)
        self._thread.start()
        return self

    def _sample(self) -> None:
        while self._running:
            self.peak = max(self.peak, resident_bytes())
            time.sleep(0.005)

    def __exit__(self, *exc: object) -> None:
        self._running = False
        self._thread.join()
        self.peak = max(self.peak, resident_bytes())

    @property
    def growth_mib(self) -> float:
        return (self.peak - self.start) / 2**20


def unit(x: np.ndarray) -> np.ndarray:
    return x / np.maximum(np.linalg.norm(x, axis=1, keepdims=True), 1e-6)


def search_worker(engine: str, size: int, args: argparse.Namespace) -> dict:
    """Build one engine on the gallery and time its searches."""
    gallery = mixture(size, args.dim, args.seed)
    queries = mixture(args.queries, args.dim, args.seed + 1)
    result: dict = {}
    if engine.startswith("keras"):
        from keras_siamese import EmbeddingIndex
    else:
        import faiss
    build = time.perf_counter()
    if engine.startswith("keras"):
        distance = engine.split()[-1]
        if engine == "keras_siamese faiss-hnsw":
            index = EmbeddingIndex(
                "euclidean",
                engine="faiss-hnsw",
                hnsw_neighbors=args.hnsw_m,
                ef_search=args.ef_search,
                ef_construction=args.ef_construction,
            )
        else:
            index = EmbeddingIndex(distance, block_bytes=args.block_mib * 2**20)
        index.add(gallery)
        index.search(queries[:1], k=1)  # lays the gallery out (or builds the graph)
        run = lambda: index.search(queries, k=args.k)[1]  # noqa: E731
    else:
        if engine == "faiss IndexFlatIP":
            index = faiss.IndexFlatIP(args.dim)
            index.add(unit(gallery))
            normed = np.ascontiguousarray(unit(queries), dtype=np.float32)
            run = lambda: index.search(normed, args.k)[1]  # noqa: E731
        elif engine == "faiss IndexFlatL2":
            index = faiss.IndexFlatL2(args.dim)
            index.add(gallery)
            run = lambda: index.search(queries, args.k)[1]  # noqa: E731
        else:
            index = faiss.IndexHNSWFlat(args.dim, args.hnsw_m)
            index.hnsw.efConstruction = args.ef_construction
            index.add(gallery)
            index.hnsw.efSearch = args.ef_search
            run = lambda: index.search(queries, args.k)[1]  # noqa: E731
    result["build_s"] = time.perf_counter() - build
    import _common as common

    product = plain_matmul(queries, gallery) if engine.startswith("keras ") else None
    times, product_times = [], []
    with PeakMemory() as memory:
        found = run()  # warm-up (compilation, caches): untimed, but measured
        common.sync()
        for _ in range(args.repeats):
            start = time.perf_counter()
            found = run()
            common.sync()
            times.append(time.perf_counter() - start)
            if product is not None:
                product_times.append(product())
    device_peak = common.accelerator_peak_bytes()
    result["queries_per_s"] = args.queries / common.median(times)
    if product_times:
        flops = 2.0 * args.queries * size * args.dim
        result["matmul_gflops"] = flops / common.median(product_times) / 1e9
        result["search_gflops"] = flops / common.median(times) / 1e9
        result["search_over_matmul"] = result["search_gflops"] / result["matmul_gflops"]
    result["peak_mib"] = (
        memory.growth_mib if device_peak is None else device_peak / 2**20
    )
    if "HNSW" in engine or "hnsw" in engine:
        import faiss

        exact = faiss.IndexFlatL2(args.dim)
        exact.add(gallery)
        truth = exact.search(queries, args.k)[1]
        hits = [len(set(a) & set(b)) for a, b in zip(truth, found)]
        result["recall_at_k"] = float(np.sum(hits) / truth.size)
    return result


def plain_matmul(queries: np.ndarray, gallery: np.ndarray) -> Callable[[], float]:
    """A function timing `queries @ gallery.T` in the backend, in seconds.

    The product of the same shapes as the search's, computed in slices of
    `MATMUL_COLUMNS` gallery rows (the whole product of a large gallery
    would not fit in memory); after one warm-up call.
    """
    import _common as common
    from keras import ops

    left = ops.convert_to_tensor(queries)
    slices = [
        ops.convert_to_tensor(
            np.ascontiguousarray(gallery[start : start + MATMUL_COLUMNS].T)
        )
        for start in range(0, len(gallery), MATMUL_COLUMNS)
    ]

    def timed() -> float:
        start = time.perf_counter()
        for right in slices:
            common.sync(ops.matmul(left, right))
        return time.perf_counter() - start

    timed()
    return timed


def sop_like(count: int, dim: int, seed: int) -> tuple[np.ndarray, np.ndarray]:
    """Labelled embeddings shaped like SOP's test set: classes of 2 to 9.

    SOP's test set has 60,502 images of 11,316 products (5.3 per class);
    these classes hold 5.5 on average, with class means and noise such that
    the neighbour metrics are neither 0 nor 1.
    """
    rng = np.random.default_rng(seed)
    sizes = rng.integers(2, 10, count // 2)
    labels = np.repeat(np.arange(len(sizes)), sizes)[:count]
    if np.sum(labels == labels[-1]) == 1:  # no class of one
        labels[-1] = labels[-2]
    means = rng.standard_normal((len(sizes), dim), dtype=np.float32)
    x = means[labels] + 1.2 * rng.standard_normal((count, dim), dtype=np.float32)
    return x, labels


def metrics_worker(size: int, args: argparse.Namespace) -> dict:
    from keras_siamese import retrieval_metrics

    x, labels = sop_like(size, args.dim, args.seed)
    retrieval_metrics(x[:100], labels[:100])  # starts the backend
    with PeakMemory() as memory:
        start = time.perf_counter()
        scores = retrieval_metrics(x, labels, block_bytes=args.block_mib * 2**20)
        seconds = time.perf_counter() - start
    return {
        "seconds": seconds,
        "peak_mib": memory.growth_mib,
        "classes": int(labels.max() + 1),
        **scores,
    }


def calibration_worker(pairs: int, args: argparse.Namespace) -> dict:
    from keras_siamese import calibrate_threshold

    rng = np.random.default_rng(args.seed)
    same = rng.random(pairs) < 0.1
    distances = np.where(same, rng.normal(0.6, 0.2, pairs), rng.normal(1.4, 0.3, pairs))
    start = time.perf_counter()
    result = calibrate_threshold(distances, same, target="precision", value=0.95)
    return {"seconds": time.perf_counter() - start, "threshold": result.threshold}


def run_worker(kind: str, name: str, size: int, args: argparse.Namespace) -> dict:
    python, env = sys.executable, None
    if name.startswith("faiss "):
        # faiss alone: no Keras backend, possibly another environment's faiss.
        python, env = args.faiss_python, {**os.environ, "KERAS_BACKEND": "numpy"}
    command = [python, __file__, "--worker", kind, name, str(size)]
    for option in ("dim", "queries", "k", "repeats", "seed", "block_mib"):
        command += [f"--{option.replace('_', '-')}", str(getattr(args, option))]
    command += ["--hnsw-m", str(args.hnsw_m), "--ef-search", str(args.ef_search)]
    command += ["--ef-construction", str(args.ef_construction)]
    if args.threads is not None:
        command += ["--threads", str(args.threads)]
    done = subprocess.run(command, capture_output=True, text=True, check=False, env=env)
    if done.returncode != 0:
        tail = (done.stderr or done.stdout).strip().splitlines()[-1:]
        return {"error": f"exit {done.returncode}: {' '.join(tail)}"}
    return json.loads(done.stdout.strip().splitlines()[-1])


def installed_faiss(python: str) -> str | None:
    """faiss' version in the interpreter `python`, or `None` without faiss."""
    done = subprocess.run(
        [python, "-c", "import faiss; print(faiss.__version__)"],
        capture_output=True,
        text=True,
        check=False,
        env={**os.environ, "KERAS_BACKEND": "numpy"},
    )
    return done.stdout.strip() or None if done.returncode == 0 else None


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    parser.add_argument(
        "--sizes", type=int, nargs="+", default=[10_000, 100_000, 1_000_000]
    )
    parser.add_argument("--dim", type=int, default=128)
    parser.add_argument("--queries", type=int, default=1000)
    parser.add_argument("--k", type=int, default=10)
    parser.add_argument("--repeats", type=int, default=3)
    parser.add_argument("--seed", type=int, default=0)
    parser.add_argument(
        "--block-mib", type=int, default=64, help="EmbeddingIndex block_bytes in MiB."
    )
    parser.add_argument("--hnsw-m", type=int, default=32)
    parser.add_argument("--ef-search", type=int, default=64)
    parser.add_argument("--ef-construction", type=int, default=40)
    parser.add_argument(
        "--hnsw-max",
        type=int,
        default=100_000,
        help="largest gallery to build an HNSW graph for (building is slow).",
    )
    parser.add_argument("--engines", nargs="+", choices=ENGINES, default=list(ENGINES))
    parser.add_argument(
        "--metrics-sizes",
        type=int,
        nargs="*",
        default=[60_502],
        help="SOP-like label sets for retrieval_metrics (none: skip).",
    )
    parser.add_argument("--calibration-pairs", type=int, default=10_000_000)
    parser.add_argument(
        "--threads",
        type=int,
        default=None,
        help="CPU threads of the backend and of faiss (default: all cores).",
    )
    parser.add_argument(
        "--faiss-python",
        default=sys.executable,
        help="Python interpreter that runs the faiss engines (one with faiss "
        "installed; default: this one).",
    )
    parser.add_argument("--no-json", action="store_true")
    parser.add_argument("--worker", nargs=3, metavar=("KIND", "NAME", "SIZE"))
    args = parser.parse_args()
    if args.worker:
        kind, name, size = args.worker
        if args.threads is not None:
            import _common as common

            common.set_threads(args.threads)
            if "faiss" in name or "HNSW" in name:
                import faiss

                faiss.omp_set_num_threads(args.threads)
        if kind == "search":
            result = search_worker(name, int(size), args)
        elif kind == "metrics":
            result = metrics_worker(int(size), args)
        else:
            result = calibration_worker(int(size), args)
        print(json.dumps(result))
        return

    import _common as common

    common.header("Exact search and retrieval metrics")
    faiss_version = installed_faiss(args.faiss_python)
    # faiss' own indexes may run in another interpreter; the package's faiss
    # engine needs faiss beside the package.
    here = faiss_version if args.faiss_python == sys.executable else None
    if args.faiss_python != sys.executable:
        here = installed_faiss(sys.executable)
    engines = [
        e
        for e in args.engines
        if (faiss_version if e.startswith("faiss ") else here) or "faiss" not in e
    ]
    print(
        f"{args.queries} queries, k={args.k}, dim={args.dim}, float32 Gaussian "
        f"mixture; faiss {faiss_version or 'not installed'} "
        f"({os.cpu_count()} CPUs); EmbeddingIndex block {args.block_mib} MiB; "
        f"HNSW M={args.hnsw_m}, efConstruction={args.ef_construction}, "
        f"efSearch={args.ef_search}\n"
    )
    rows, table, failed = [], [], 0
    for size in args.sizes:
        measured = {}
        for engine in engines:
            if "HNSW" in engine or "hnsw" in engine:
                if size > args.hnsw_max:
                    continue
            result = run_worker("search", engine, size, args)
            measured[engine] = result
            rows.append({"engine": engine, "gallery": size, **result})
            if "error" in result:
                failed += 1
                table.append([f"{size:,}", engine, result["error"], *[""] * 6])
                continue
            partner = {
                "keras euclidean": "faiss IndexFlatL2",
                "keras cosine": "faiss IndexFlatIP",
            }
            ratio = ""
            for ours, theirs in partner.items():
                if (
                    engine == theirs
                    and ours in measured
                    and "error" not in measured[ours]
                ):
                    ratio = (
                        f"{ours}: "
                        f"{measured[ours]['queries_per_s'] / result['queries_per_s']:.2f}x"
                    )
            table.append(
                [
                    f"{size:,}",
                    engine,
                    float(result["queries_per_s"]),
                    float(result["peak_mib"]),
                    float(result["build_s"]),
                    ""
                    if "recall_at_k" not in result
                    else f"{result['recall_at_k']:.3f}",
                    ratio,
                    ""
                    if "matmul_gflops" not in result
                    else f"{result['matmul_gflops']:.1f}",
                    ""
                    if "search_over_matmul" not in result
                    else f"{result['search_over_matmul']:.2f}",
                ]
            )
            print(f"  {size:,} {engine}: {result}", flush=True)
    print()
    common.print_table(
        [
            "gallery",
            "engine",
            "queries/s",
            "peak MiB",
            "build s",
            f"recall@{args.k}",
            "package / faiss flat",
            "matmul GFLOP/s",
            "search / matmul",
        ],
        table,
    )
    metrics_rows = []
    for size in args.metrics_sizes:
        result = run_worker("metrics", "sop", size, args)
        rows.append({"benchmark": "retrieval_metrics", "size": size, **result})
        if "error" in result:
            failed += 1
            metrics_rows.append([f"{size:,}", result["error"], "", "", ""])
            continue
        metrics_rows.append(
            [
                f"{size:,} x {args.dim} ({result['classes']:,} classes)",
                float(result["seconds"]),
                float(result["peak_mib"]),
                f"{result['recall_at_1']:.4f}",
                f"{result['map_at_r']:.4f}",
            ]
        )
    if metrics_rows:
        common.print_table(
            [
                "retrieval_metrics, leave-one-out",
                "seconds",
                "peak MiB",
                "recall@1",
                "MAP@R",
            ],
            metrics_rows,
        )
    if args.calibration_pairs:
        result = run_worker("calibration", "pairs", args.calibration_pairs, args)
        rows.append({"benchmark": "calibrate_threshold", **result})
        if "error" in result:
            failed += 1
        else:
            common.print_table(
                ["calibrate_threshold", "seconds"],
                [[f"{args.calibration_pairs:,} pairs", float(result["seconds"])]],
            )
    common.write_json(
        "search",
        {"faiss": faiss_version, "args": vars(args), "rows": rows},
        enabled=not args.no_json,
    )
    if failed:
        raise SystemExit(f"{failed} configuration(s) failed; see the tables.")


if __name__ == "__main__":
    main()
