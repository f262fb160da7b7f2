"""Throughput of the data pipeline: triplets, pairs and P x K batches per second.

Compares, at each batch size, on MNIST-sized float32 data (60000 x 784):

* `seed create_batch`: the seed notebook's triplet generator, re-implemented
  below as the baseline: a Python loop that scans all labels twice per
  triplet with `np.where`.
* `TripletDataset`, `PairDataset`, `ClassBalancedDataset`: one
  `dataset[i]` call per batch, sampling included. The datasets draw the
  indices of a block of consecutive batches at once; the calls go through
  every batch of an epoch in a random order, as `fit(shuffle=True)` (Keras'
  default) asks for them, then on to the next epoch, so every block's draw
  is counted once per epoch.
* `raw np.take`: one `np.take` of as many rows as the batch holds, at indices
  drawn beforehand: the cost of the copy alone, the physical limit.

Usage:
    KERAS_BACKEND=jax python benchmarks/bench_data.py --data ../shared/datasets/mnist.npz

Without `--data` it uses synthetic data of the same shape (a missing file is
an error). Prints a table and writes `benchmarks/results/bench_data.json`.
"""

from __future__ import annotations

import argparse
import json
import os
import platform
import random
import statistics
import time
from pathlib import Path

import _common as common
import numpy as np

from keras_siamese import ClassBalancedDataset, PairDataset, TripletDataset


def load(path: str | None) -> tuple[np.ndarray, np.ndarray, str]:
    x, y = common.load_images(path or "synthetic")
    source = f"MNIST ({path})" if path else "synthetic (60000, 784) float32"
    return x.reshape(len(x), -1), y, source


def seed_create_batch(x_train, y_train, batch_size):
    """The seed notebook's `create_batch`, kept as it was (the baseline).

    One change: the notebook drew anchors from a hard-coded 60,000 rows; here
    from `len(x_train)`, so that the script also runs on other data.
    """
    anchors = np.zeros((batch_size, 784))
    positives = np.zeros((batch_size, 784))
    negatives = np.zeros((batch_size, 784))
    for i in range(0, batch_size):
        index = random.randint(0, len(x_train) - 1)
        anc = x_train[index]
        y = y_train[index]
        indices_pos = np.squeeze(np.where(y_train == y))
        indices_neg = np.squeeze(np.where(y_train != y))
        pos = x_train[indices_pos[random.randint(0, len(indices_pos) - 1)]]
        neg = x_train[indices_neg[random.randint(0, len(indices_neg) - 1)]]
        anchors[i] = anc
        positives[i] = pos
        negatives[i] = neg
    return [anchors, positives, negatives]


def calls_for(fn, seconds: float) -> int:
    """How many calls of `fn` take about `seconds` (at least one)."""
    fn()
    calls, start = 0, time.perf_counter()
    while time.perf_counter() - start < seconds:
        fn()
        calls += 1
    return max(1, calls)


def interleaved(fns: dict, min_time: float, repeats: int) -> dict:
    """Seconds per call of each function, measured in alternating rounds.

    The machine is shared, so its load drifts; alternating the functions
    round by round exposes them to the same load, and the ratios are taken
    within a round before the median over rounds.
    """
    calls = {name: calls_for(fn, min_time / repeats) for name, fn in fns.items()}
    rounds = {name: [] for name in fns}
    for _ in range(repeats):
        for name, fn in fns.items():
            start = time.perf_counter()
            for _ in range(calls[name]):
                fn()
            rounds[name].append((time.perf_counter() - start) / calls[name])
    return rounds


def median_ratio(numerator: list, denominator: list) -> float:
    return statistics.median(n / d for n, d in zip(numerator, denominator))


def raw_take(x: np.ndarray, rows: int, rng: np.random.Generator):
    index_sets = [rng.integers(0, len(x), rows) for _ in range(64)]
    state = {"i": 0}

    def take():
        state["i"] = (state["i"] + 1) % len(index_sets)
        return np.take(x, index_sets[state["i"]], axis=0)

    return take


def cycling(dataset, rng: np.random.Generator):
    """Batches as `fit(shuffle=True)` asks for them: each epoch in a new random
    order, a new epoch (new draws) after the last batch."""
    state = {"order": rng.permutation(len(dataset)), "i": 0}

    def get():
        if state["i"] == len(dataset):
            dataset.set_epoch(dataset.epoch + 1)
            state["order"], state["i"] = rng.permutation(len(dataset)), 0
        index = state["order"][state["i"]]
        state["i"] += 1
        return dataset[int(index)]

    return get


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--data", default=None, help="path to mnist.npz")
    parser.add_argument("--batch-sizes", type=int, nargs="+", default=[128, 1024])
    parser.add_argument(
        "--min-time", type=float, default=2.0, help="seconds per function and case"
    )
    parser.add_argument("--repeats", type=int, default=7, help="alternating rounds")
    parser.add_argument(
        "--out", default=str(Path(__file__).parent / "results" / "bench_data.json")
    )
    args = parser.parse_args()

    x, y, source = load(args.data)
    random.seed(0)
    rng = np.random.default_rng(0)
    rows = []
    for batch in args.batch_sizes:
        per_class = max(2, batch // 8)
        cases = [
            (
                "triplets",
                TripletDataset(x, y, batch_size=batch, seed=0),
                3 * batch,
                batch,
            ),
            ("pairs", PairDataset(x, y, batch_size=batch, seed=0), 2 * batch, batch),
            (
                "P x K",
                ClassBalancedDataset(x, y, 8, per_class, seed=0),
                8 * per_class,
                8 * per_class,
            ),
        ]
        for name, dataset, gathered_rows, items in cases:
            fns = {
                "ours": cycling(dataset, rng),
                "take": raw_take(x, gathered_rows, rng),
            }
            if name == "triplets":
                fns["seed"] = lambda b=batch: seed_create_batch(x, y, b)
            rounds = interleaved(fns, args.min_time, args.repeats)
            ours = statistics.median(rounds["ours"])
            take = statistics.median(rounds["take"])
            row = {
                "batch": name,
                "batch_size": items,
                "rows_gathered": gathered_rows,
                "ours_items_per_s": items / ours,
                "raw_take_items_per_s": items / take,
                "vs_raw_take": median_ratio(rounds["take"], rounds["ours"]),
                "ms_per_batch": ours * 1e3,
            }
            if "seed" in rounds:
                row["seed_items_per_s"] = batch / statistics.median(rounds["seed"])
                row["vs_seed"] = median_ratio(rounds["seed"], rounds["ours"])
            rows.append(row)

    header = (
        f"{'batch':<9}{'size':>6}{'ours /s':>14}{'raw take /s':>14}{'ours/take':>11}"
        f"{'seed /s':>11}{'ours/seed':>11}{'ms/batch':>10}"
    )
    print(
        f"data: {source}; machine: {platform.processor() or platform.machine()}, "
        f"{os.cpu_count()} CPUs; medians over {args.repeats} alternating rounds"
    )
    print(header)
    print("-" * len(header))
    for row in rows:
        seed = f"{row['seed_items_per_s']:>11,.0f}" if "vs_seed" in row else f"{'':>11}"
        ratio = f"{row['vs_seed']:>10,.0f}x" if "vs_seed" in row else f"{'':>11}"
        print(
            f"{row['batch']:<9}{row['batch_size']:>6}{row['ours_items_per_s']:>14,.0f}"
            f"{row['raw_take_items_per_s']:>14,.0f}{row['vs_raw_take']:>10.2f}x"
            f"{seed}{ratio}{row['ms_per_batch']:>10.3f}"
        )
    print(
        "items: triplets, pairs or P x K examples; seed = the notebook's create_batch"
    )

    out = Path(args.out)
    out.parent.mkdir(parents=True, exist_ok=True)
    out.write_text(
        json.dumps(
            {
                "data": source,
                "machine": {
                    "processor": platform.processor() or platform.machine(),
                    "cpus": os.cpu_count(),
                    "python": platform.python_version(),
                    "numpy": np.__version__,
                },
                "repeats": args.repeats,
                "rows": rows,
            },
            indent=2,
        )
    )
    print(f"wrote {out}")


if __name__ == "__main__":
    main()
