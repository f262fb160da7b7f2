"""Training throughput of the seed MLP Siamese model, three ways, one run.

The model is the classic Keras `mnist_siamese` recipe: a shared encoder
(Flatten, 3 x Dense(128, relu) with Dropout(0.1) between), the Euclidean
distance of the two embeddings, the contrastive loss with margin 1, RMSprop
(learning rate 1e-3) and batches of 128 pairs. It is trained on the same
MNIST-sized images, with the same number of pairs per epoch, by:

- `a_keras`: hand-written Keras exactly as the recipe: a functional model,
  a `Lambda` distance, a custom loss function and accuracy metric, pair
  arrays built once and passed to `fit`.
- `b_package`: this package as a user writes it: `SiameseWrapper` (default
  settings) with an `EuclideanDistance` merge, `ContrastiveLoss`,
  `PairAccuracy`, and a `PairDataset` that draws new pairs every epoch.
- `b_arrays`: the package's model, loss and metric on `a_keras`'s fixed
  arrays, which separates the cost of the layers from that of the data path.
- `b_fused` / `b_separate` (optional): `b_package` with `fuse_branches=True`
  / `False` instead of the backend-dependent default.
- `b_jit` (optional): `b_package` compiled with `jit_compile=True`, which
  on PyTorch is `torch.compile` and on TensorFlow XLA (the default, "auto",
  uses neither on a CPU); on JAX it is the default.
- `c_native`: a loop in the backend's own framework (a `jax.jit` step, a
  PyTorch eager loop with `torch.optim.RMSprop`, a `tf.function` step) on the
  same arrays, with no Keras in the loop (`_native.py`).
- `d_matmuls`: only the encoder's forward and backward matmuls, in the
  backend's own framework: the ceiling of this model with its kernels.

Variants are timed in interleaved rounds (one epoch of each per round, the
order rotated from round to round) so that they share the machine's
conditions; the tables report medians over rounds, and the ratios are
medians of per-round ratios. Each round also
measures the device's float32 matmul rate, from which the roofline table
gives the fraction of the compute limit each variant reaches: the epoch's
matmul FLOPs (`_native.matmul_flops_per_pair`) divided by the matmul rate,
over the measured epoch time. Before the rounds, the work of one training
step of each Keras model is counted (`step_cost`), which no load disturbs.

Run (the backend is chosen as for Keras):

    KERAS_BACKEND=jax python benchmarks/bench_training.py \
        --data /work/shared/datasets/mnist.npz --pairs 25600 --rounds 5
"""

from __future__ import annotations

import argparse
import collections
from collections.abc import Callable
from typing import Any

import _common as common
import _native as native
import keras
import numpy as np
from keras import ops

from keras_siamese import EuclideanDistance, SiameseWrapper
from keras_siamese.data import PairDataset
from keras_siamese.losses import ContrastiveLoss
from keras_siamese.metrics import PairAccuracy

SEED_PAIRS = 108_400
DROPOUT = 0.1
VARIANTS = ("a_keras", "b_package", "b_arrays", "c_native", "d_matmuls")
# `build_package_model` arguments of the PairDataset-fed package variants.
PACKAGE_VARIANTS = {
    "b_package": {},
    "b_fused": {"fuse_branches": True},
    "b_separate": {"fuse_branches": False},
    "b_jit": {"jit_compile": True},
}


def seed_pairs(
    x: np.ndarray, y: np.ndarray, pairs: int, seed: int = 0
) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
    """The recipe's `create_pairs`, as index arithmetic, cut to `pairs` pairs.

    Alternating positive and negative pairs: for class `d` and rank `i`,
    `(d_i, d_{i+1})` is positive and `(d_i, e_i)` negative with `e` a random
    other class; `n` is the smallest class size minus one. The recipe's
    108,400 pairs (for MNIST) are then shuffled and the first `pairs` kept,
    so that a reduced run uses a random subset.
    """
    rng = np.random.default_rng(seed)
    classes = 10
    digit_indices = [np.flatnonzero(y == d) for d in range(classes)]
    n = min(len(indices) for indices in digit_indices) - 1
    left, right, labels = [], [], []
    for d in range(classes):
        other = (d + rng.integers(1, classes, n)) % classes
        rank = np.arange(n)
        positives_left = digit_indices[d][:n]
        positives_right = digit_indices[d][1 : n + 1]
        negatives_right = np.array(
            [digit_indices[e][i] for e, i in zip(other, rank)], dtype=np.int64
        )
        left.append(np.stack([positives_left, positives_left], 1).ravel())
        right.append(np.stack([positives_right, negatives_right], 1).ravel())
        labels.append(np.tile([1.0, 0.0], n))
    left, right = np.concatenate(left), np.concatenate(right)
    labels = np.concatenate(labels).astype(np.float32)
    if pairs > len(labels):
        extra = rng.integers(0, len(labels), pairs - len(labels))
        keep = np.concatenate([rng.permutation(len(labels)), extra])
    else:
        keep = rng.permutation(len(labels))[:pairs]
    return x[left[keep]], x[right[keep]], labels[keep]


def recipe_euclidean_distance(vects: list) -> Any:
    a, b = vects
    sum_square = ops.sum(ops.square(a - b), axis=1, keepdims=True)
    return ops.sqrt(ops.maximum(sum_square, keras.backend.epsilon()))


def recipe_output_shape(shapes: list) -> tuple:
    return (shapes[0][0], 1)


def recipe_contrastive_loss(y_true: Any, y_pred: Any) -> Any:
    margin = 1.0
    square_pred = ops.square(y_pred)
    margin_square = ops.square(ops.maximum(margin - y_pred, 0.0))
    return ops.mean(y_true * square_pred + (1.0 - y_true) * margin_square)


def recipe_accuracy(y_true: Any, y_pred: Any) -> Any:
    return ops.mean(ops.equal(y_true, ops.cast(y_pred < 0.5, y_true.dtype)))


def _encoder_layers() -> list:
    layers = [keras.layers.Flatten()]
    for depth in range(native.DEPTH):
        layers.append(keras.layers.Dense(native.HIDDEN, activation="relu"))
        if depth < native.DEPTH - 1 and DROPOUT > 0:
            layers.append(keras.layers.Dropout(DROPOUT))
    return layers


def _optimizer() -> keras.optimizers.Optimizer:
    return keras.optimizers.RMSprop(
        native.LEARNING_RATE, rho=native.RHO, epsilon=native.EPSILON
    )


def build_recipe_model(input_shape: tuple) -> keras.Model:
    """Variant a: the recipe's functional model, compiled as it does."""
    inputs = keras.Input(input_shape)
    hidden = inputs
    for layer in _encoder_layers():
        hidden = layer(hidden)
    base_network = keras.Model(inputs, hidden)
    input_a = keras.Input(input_shape)
    input_b = keras.Input(input_shape)
    distance = keras.layers.Lambda(
        recipe_euclidean_distance, output_shape=recipe_output_shape
    )([base_network(input_a), base_network(input_b)])
    model = keras.Model([input_a, input_b], distance)
    model.compile(
        loss=recipe_contrastive_loss, optimizer=_optimizer(), metrics=[recipe_accuracy]
    )
    return model


def build_package_model(
    input_shape: tuple, fuse_branches: bool | None = None, jit_compile: Any = "auto"
) -> keras.Model:
    """Variant b: the same model written with this package."""
    encoder = keras.Sequential([keras.Input(input_shape), *_encoder_layers()])
    siamese = SiameseWrapper(
        encoder, merge=EuclideanDistance(), fuse_branches=fuse_branches
    )
    input_a = keras.Input(input_shape)
    input_b = keras.Input(input_shape)
    model = keras.Model([input_a, input_b], siamese([input_a, input_b]))
    model.compile(
        loss=ContrastiveLoss(margin=1.0),
        optimizer=_optimizer(),
        metrics=[PairAccuracy(threshold=0.5)],
        jit_compile=jit_compile,
    )
    return model


def keras_runner(
    model: keras.Model, data: Callable[[], dict]
) -> Callable[[], tuple[float, float]]:
    """One timed epoch of `model.fit` on `data()` (fit's keyword arguments)."""
    return lambda: common.fit_epoch(model, **data())


# TensorFlow graph operations that move or name values but compute nothing.
TF_BOOKKEEPING_OPS = {"Const", "Identity", "IdentityN", "NoOp", "Placeholder"}


def step_cost(model: keras.Model, batch: Any) -> dict[str, int]:
    """The work of one training step of `model` on `batch`, counted, not timed.

    JAX: FLOPs and bytes accessed of the compiled step, from XLA's cost
    analysis. TensorFlow: operations in the step's graph (all, and those that
    compute). PyTorch (eager): ATen operations dispatched and Python function
    calls made. Unlike a timing, these counts do not depend on the machine's
    load, so they show whether two models do the same work.
    """
    data = keras.tree.map_structure(ops.convert_to_tensor, batch)
    name = common.backend()
    if name == "jax":
        import jax

        state = tuple(
            [v.value for v in variables]
            for variables in (
                model.trainable_variables,
                model.non_trainable_variables,
                model.optimizer.variables,
                model.metrics_variables,
            )
        )
        analysis = jax.jit(model.train_step).lower(state, data).compile()
        analysis = analysis.cost_analysis()
        if isinstance(analysis, list):  # older JAX: one dict per computation
            analysis = analysis[0]
        return {
            "XLA FLOPs": int(analysis["flops"]),
            "XLA bytes accessed": int(analysis["bytes accessed"]),
        }
    if name == "tensorflow":
        import tensorflow as tf

        graph = tf.function(model.train_step).get_concrete_function(data).graph
        kinds = collections.Counter(op.type for op in graph.get_operations())
        computing = sum(
            n for kind, n in kinds.items() if kind not in TF_BOOKKEEPING_OPS
        )
        return {"graph ops": sum(kinds.values()), "computing ops": computing}
    import cProfile
    import pstats

    from torch.utils._python_dispatch import TorchDispatchMode

    class CountOps(TorchDispatchMode):
        count = 0

        def __torch_dispatch__(self, func, types, args=(), kwargs=None):
            CountOps.count += 1
            return func(*args, **(kwargs or {}))

    profile = cProfile.Profile()
    with CountOps():
        profile.enable()
        model.train_step(data)
        profile.disable()
    return {
        "ATen ops": CountOps.count,
        "Python calls": pstats.Stats(profile).total_calls,
    }


def main() -> None:
    global DROPOUT
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    common.add_common_args(parser)
    parser.add_argument(
        "--pairs",
        type=int,
        default=SEED_PAIRS,
        help="pairs per epoch, rounded down to whole batches (default: the "
        "recipe's 108,400 on MNIST).",
    )
    parser.add_argument("--batch-size", type=int, default=128)
    parser.add_argument(
        "--rounds",
        type=int,
        default=5,
        help="interleaved rounds; each times one epoch of every variant.",
    )
    parser.add_argument(
        "--variants",
        default=",".join(VARIANTS),
        help=f"comma-separated, from {', '.join(VARIANTS)}, b_fused, b_separate, b_jit "
        f"(default: {', '.join(VARIANTS)}).",
    )
    parser.add_argument(
        "--dropout",
        type=float,
        default=DROPOUT,
        help=f"dropout rate between the Dense layers (default: the recipe's "
        f"{DROPOUT}); 0 removes the dropout layers, to measure their cost.",
    )
    args = parser.parse_args()
    DROPOUT = args.dropout
    common.set_threads(args.threads)
    variants = args.variants.split(",")
    batch = args.batch_size
    steps = max(1, args.pairs // batch)
    pairs = steps * batch

    common.header("Training throughput: seed MLP Siamese")
    x, y = common.load_images(args.data)
    x1, x2, labels = seed_pairs(x, y, pairs)
    input_shape = x.shape[1:]
    features = int(np.prod(input_shape))
    print(
        f"{pairs:,} pairs per epoch ({steps} batches of {batch}), data: "
        f"{args.data}, {args.rounds} rounds, dropout: {DROPOUT}, "
        f"threads: {args.threads or 'default'}\n",
        flush=True,
    )

    # Constructed once, like the arrays: each fit epoch draws new pairs.
    pair_dataset = PairDataset(x, y, batch_size=batch, steps_per_epoch=steps, seed=0)
    arrays = {"x": [x1, x2], "y": labels, "batch_size": batch, "shuffle": True}
    runners: dict[str, Callable[[], tuple[float, float]]] = {}
    # The Keras models whose step work is counted, each with one batch.
    counted: dict[str, tuple[keras.Model, Any]] = {}
    for name in variants:
        if name == "a_keras":
            model = build_recipe_model(input_shape)
            runners[name] = keras_runner(model, lambda: arrays)
            counted[name] = (model, ([x1[:batch], x2[:batch]], labels[:batch]))
        elif name in PACKAGE_VARIANTS:
            model = build_package_model(input_shape, **PACKAGE_VARIANTS[name])
            runners[name] = keras_runner(model, lambda: {"x": pair_dataset})
            if name != "b_jit":  # counted as the eager step it compiles
                counted[name] = (model, pair_dataset[0])
        elif name == "b_arrays":
            model = build_package_model(input_shape)
            runners[name] = keras_runner(model, lambda: arrays)
        elif name == "c_native":
            runners[name] = native.training_loop(x1, x2, labels, batch, DROPOUT)
        elif name == "d_matmuls":
            runners[name] = native.matmul_loop(x1, x2, batch)
        else:
            parser.error(f"unknown variant {name!r}")

    # Warm-up: compilation, first-call and allocator costs stay out of the rounds.
    for run in runners.values():
        run()

    costs = {name: step_cost(*counted[name]) for name in counted}
    cost_table = ""
    if costs:
        print("Work of one training step (counted, not timed):\n")
        columns = list(next(iter(costs.values())))
        cost_table = common.print_table(
            ["variant", *columns],
            [
                [name, *(f"{cost[c]:,}" for c in columns)]
                for name, cost in costs.items()
            ],
        )

    wall: dict[str, list[float]] = {name: [] for name in runners}
    cpu: dict[str, list[float]] = {name: [] for name in runners}
    rates: list[float] = []
    cpu_rates: list[float] = []
    for round_index in range(args.rounds):
        rate, cpu_rate = common.matmul_flops()
        rates.append(rate)
        cpu_rates.append(cpu_rate)
        # Each round starts with another variant, so that none always runs
        # right after the matmul measurement or right before another one.
        names = list(runners)
        shift = round_index % len(names)
        for name in names[shift:] + names[:shift]:
            seconds, cpu_seconds = runners[name]()
            wall[name].append(seconds)
            cpu[name].append(cpu_seconds)
        summary = ", ".join(f"{n} {t[-1]:.2f}s" for n, t in wall.items())
        print(f"round {round_index + 1}/{args.rounds}: {summary}", flush=True)
    print()

    rows = []
    for name in runners:
        seconds = common.median(wall[name])
        rows.append(
            [
                name,
                pairs / seconds,
                seconds,
                seconds * SEED_PAIRS / pairs,
                common.median(cpu[name]),
                f"{min(wall[name]):.3g}-{max(wall[name]):.3g}",
            ]
        )
    throughput = common.print_table(
        [
            "variant",
            "pairs/s",
            "s/epoch",
            "s per recipe epoch (108,400 pairs)",
            "CPU s/epoch",
            "range s/epoch",
        ],
        rows,
    )

    def per_round_ratio(times: dict, numerator: str, denominator: str) -> float:
        return common.median(
            [d / n for n, d in zip(times[numerator], times[denominator])]
        )

    pairs_compared = [
        (n, d)
        for n, d in [
            ("b_package", "a_keras"),
            ("b_fused", "a_keras"),
            ("b_separate", "a_keras"),
            ("b_arrays", "a_keras"),
            ("b_package", "b_arrays"),
            ("b_jit", "b_package"),
            ("b_jit", "c_native"),
            ("b_package", "c_native"),
            ("b_fused", "c_native"),
            ("a_keras", "c_native"),
            ("b_package", "d_matmuls"),
            ("c_native", "d_matmuls"),
        ]
        if n in runners and d in runners
    ]
    ratios = {
        f"{n}/{d}": {
            "wall": per_round_ratio(wall, n, d),
            "cpu": per_round_ratio(cpu, n, d),
        }
        for n, d in pairs_compared
    }
    ratio_table = common.print_table(
        ["speed ratio (> 1: first is faster)", "wall clock", "CPU time"],
        [[k, v["wall"], v["cpu"]] for k, v in ratios.items()],
    )

    pair_flops = native.matmul_flops_per_pair(features)
    epoch_flops = pair_flops * pairs
    rate = common.median(rates)
    fractions = {
        name: common.median([epoch_flops / r / t for r, t in zip(rates, wall[name])])
        for name in runners
    }
    cpu_fractions = {
        name: common.median([epoch_flops / r / t for r, t in zip(cpu_rates, cpu[name])])
        for name in runners
    }
    print(
        f"Roofline: {epoch_flops / 1e9:.1f} GFLOP per epoch "
        f"({pair_flops / 1e6:.3f} MFLOP of matmuls per pair: forward, weight "
        "gradients, and input gradients of all but the first layer); float32 "
        f"matmul rate {rate / 1e9:.0f} GFLOP/s "
        f"(per round: {', '.join(f'{r / 1e9:.0f}' for r in rates)}), so at best "
        f"{epoch_flops / rate:.2f} s per epoch, "
        f"{epoch_flops / rate * SEED_PAIRS / pairs:.2f} s per recipe epoch. "
        f"Per CPU-second the matmul does {common.median(cpu_rates) / 1e9:.0f} "
        "GFLOP; the CPU-time fraction compares each variant's FLOPs per "
        "CPU-second with that, which other jobs on the machine disturb less.\n",
        flush=True,
    )
    roofline = common.print_table(
        [
            "variant",
            "GFLOP/s reached",
            "fraction of the matmul roofline (wall)",
            "fraction (CPU time)",
        ],
        [
            [
                name,
                epoch_flops / 1e9 / common.median(wall[name]),
                fractions[name],
                cpu_fractions[name],
            ]
            for name in runners
        ],
    )
    common.write_json(
        "training",
        {
            "pairs_per_epoch": pairs,
            "batch_size": batch,
            "data": args.data,
            "rounds": args.rounds,
            "dropout": DROPOUT,
            "threads": args.threads,
            "epoch_seconds": wall,
            "epoch_cpu_seconds": cpu,
            "matmul_flops_per_round": rates,
            "matmul_flops_per_cpu_second_per_round": cpu_rates,
            "epoch_flops": epoch_flops,
            "ratios": ratios,
            "step_cost": costs,
            "roofline_fraction": fractions,
            "roofline_fraction_cpu_time": cpu_fractions,
            "tables": {
                "step_cost": cost_table,
                "throughput": throughput,
                "ratios": ratio_table,
                "roofline": roofline,
            },
        },
        enabled=not args.no_json,
    )


if __name__ == "__main__":
    main()
