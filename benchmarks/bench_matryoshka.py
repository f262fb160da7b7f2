"""Matryoshka embeddings: retrieval quality against the kept dimension.

One encoder is trained twice with the same batches and budget: with
`SupervisedContrastiveLoss` alone, and with the same loss wrapped in
`MatryoshkaLoss` over the prefixes `--dims` (weights 1). Each trained
encoder then embeds the test images, and every prefix of those embeddings
(`EmbeddingIndex(truncate_dim=d)` serves the same prefix) is scored by
recall@1 and MAP@R with the cosine distance, every test image a query
against all the others (leave-one-out). A raw-pixel row is the reference.

Encoder: flattened 28 x 28 images, `Dense(256, relu)`, `Dense(DIM)` (no
activation); Adam at 1e-3; batches of 256 shuffled training images; SupCon
temperature 0.1. Mean and standard deviation over `--seeds`.

    KERAS_BACKEND=jax python benchmarks/bench_matryoshka.py --data ../shared/datasets/mnist.npz
    KERAS_BACKEND=jax python benchmarks/bench_matryoshka.py --data fashion_mnist.npz --seeds 0 1 2
"""

from __future__ import annotations

import argparse
import statistics
import time

import keras
import numpy as np
from _common import header, load_mnist, print_table, set_threads, write_json
from compare_losses_cnn import leave_one_out

from keras_siamese import MatryoshkaLoss, SupervisedContrastiveLoss


def encoder(dim: int, seed: int) -> keras.Model:
    init = keras.initializers.GlorotUniform
    return keras.Sequential(
        [
            keras.Input((28, 28)),
            keras.layers.Flatten(),
            keras.layers.Dense(256, "relu", kernel_initializer=init(seed)),
            keras.layers.Dense(dim, kernel_initializer=init(seed + 1)),
        ]
    )


def train(
    x: np.ndarray, y: np.ndarray, dims: list[int], matryoshka: bool, args, seed: int
) -> tuple[keras.Model, float]:
    keras.utils.set_random_seed(seed)
    model = encoder(max(dims), seed)
    loss = SupervisedContrastiveLoss(temperature=0.1)
    if matryoshka:
        loss = MatryoshkaLoss(loss, dims)
    model.compile(optimizer=keras.optimizers.Adam(1e-3), loss=loss)
    order = np.random.default_rng(seed).permutation(len(x))[: args.train_size]
    start = time.perf_counter()
    model.fit(
        x[order],
        y[order],
        batch_size=args.batch_size,
        epochs=args.epochs,
        shuffle=True,
        verbose=0,
    )
    return model, time.perf_counter() - start


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    parser.add_argument("--data", required=True, help="an mnist.npz-layout file")
    parser.add_argument("--dims", type=int, nargs="+", default=[128, 64, 32, 16, 8, 4])
    parser.add_argument("--seeds", type=int, nargs="+", default=[0])
    parser.add_argument("--epochs", type=int, default=3)
    parser.add_argument("--batch-size", type=int, default=256)
    parser.add_argument("--train-size", type=int, default=60000)
    parser.add_argument("--test-size", type=int, default=10000)
    parser.add_argument("--threads", type=int, default=None)
    parser.add_argument("--no-json", action="store_true")
    args = parser.parse_args()
    set_threads(args.threads)
    dims = sorted(set(args.dims), reverse=True)
    x_train, y_train, x_test, y_test = load_mnist(args.data)
    x_test, y_test = x_test[: args.test_size], y_test[: args.test_size]
    header("Matryoshka embeddings: recall@1 and MAP@R by kept dimension")
    print(
        f"train {min(args.train_size, len(x_train)):,} images, {args.epochs} epochs of "
        f"batch {args.batch_size}; test {len(x_test):,} images, leave-one-out, "
        f"cosine; seeds {args.seeds}\n"
    )
    raw = leave_one_out(x_test.reshape(len(x_test), -1), y_test, "cosine")
    scores: dict[tuple[str, int], list[dict]] = {}
    seconds: dict[str, list[float]] = {"SupCon": [], "Matryoshka SupCon": []}
    for seed in args.seeds:
        for name, matryoshka in (("SupCon", False), ("Matryoshka SupCon", True)):
            model, took = train(x_train, y_train, dims, matryoshka, args, seed)
            seconds[name].append(took)
            embeddings = model.predict(x_test, batch_size=1024, verbose=0)
            for dim in dims:
                scores.setdefault((name, dim), []).append(
                    leave_one_out(embeddings[:, :dim], y_test, "cosine")
                )

    def cell(results: list[dict], key: str) -> str:
        values = [100 * r[key] for r in results]
        if len(values) == 1:
            return f"{values[0]:.2f}"
        return f"{statistics.mean(values):.2f} ± {statistics.stdev(values):.2f}"

    rows = [
        [
            "raw pixels (784)",
            "",
            f"{100 * raw['recall_at_1']:.2f}",
            f"{100 * raw['map_at_r']:.2f}",
        ]
    ]
    for name in seconds:
        for dim in dims:
            results = scores[(name, dim)]
            rows.append(
                [name, dim, cell(results, "recall_at_1"), cell(results, "map_at_r")]
            )
    print_table(["encoder", "kept dim", "recall@1 %", "MAP@R %"], rows)
    print_table(
        ["training", "seconds (median over seeds)"],
        [
            [name, f"{statistics.median(values):.1f}"]
            for name, values in seconds.items()
        ],
    )
    write_json(
        "matryoshka",
        {
            "args": vars(args),
            "raw": raw,
            "scores": {f"{name}@{dim}": value for (name, dim), value in scores.items()},
            "seconds": seconds,
        },
        enabled=not args.no_json,
    )


if __name__ == "__main__":
    main()
