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
  same arrays, with no Keras in the loop.

Variants are timed in interleaved rounds (one epoch of each per round, the
order rotated from round to round) so that they share the machine's
conditions; the tables report medians over rounds, and the ratios are
medians of per-round ratios. Each round also
measures the device's float32 matmul rate, from which the roofline table
gives the fraction of the compute limit each variant reaches: the epoch's
FLOPs (3 x the forward matmul FLOPs, for forward and backward) divided by
the matmul rate, over the measured epoch time.

Run (the backend is chosen as for Keras):

    KERAS_BACKEND=jax python benchmarks/bench_training.py \
        --data /work/shared/datasets/mnist.npz --pairs 25600 --rounds 5
"""

from __future__ import annotations

import argparse
import itertools
import time
from collections.abc import Callable
from typing import Any

import _common as common
import keras
import numpy as np
from keras import ops

from keras_siamese import EuclideanDistance, SiameseWrapper
from keras_siamese.data import PairDataset
from keras_siamese.losses import ContrastiveLoss
from keras_siamese.metrics import PairAccuracy

SEED_PAIRS = 108_400
HIDDEN = 128
DEPTH = 3
DROPOUT = 0.1
LEARNING_RATE = 1e-3
RHO = 0.9
EPSILON = 1e-7
VARIANTS = ("a_keras", "b_package", "b_arrays", "c_native")
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
    for depth in range(DEPTH):
        layers.append(keras.layers.Dense(HIDDEN, activation="relu"))
        if depth < DEPTH - 1 and DROPOUT > 0:
            layers.append(keras.layers.Dropout(DROPOUT))
    return layers


def _optimizer() -> keras.optimizers.Optimizer:
    return keras.optimizers.RMSprop(LEARNING_RATE, rho=RHO, epsilon=EPSILON)


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


def timed(epoch: Callable[[], Any]) -> Callable[[], tuple[float, float]]:
    """Wall and CPU seconds of `epoch()`, which returns what to wait for."""

    def run() -> tuple[float, float]:
        start = (time.perf_counter(), time.process_time())
        common.sync(epoch())
        return time.perf_counter() - start[0], time.process_time() - start[1]

    return run


def glorot(rng: np.random.Generator, fan_in: int, fan_out: int) -> np.ndarray:
    limit = np.sqrt(6.0 / (fan_in + fan_out))
    return rng.uniform(-limit, limit, (fan_in, fan_out)).astype(np.float32)


def initial_weights(features: int) -> list[tuple[np.ndarray, np.ndarray]]:
    rng = np.random.default_rng(0)
    sizes = [features] + [HIDDEN] * DEPTH
    return [
        (glorot(rng, fan_in, fan_out), np.zeros(fan_out, np.float32))
        for fan_in, fan_out in itertools.pairwise(sizes)
    ]


def native_jax(x1: np.ndarray, x2: np.ndarray, labels: np.ndarray, batch: int):
    """Variant c on JAX: a `jax.jit` train step, RMSprop written out."""
    import jax
    import jax.numpy as jnp

    pairs = len(labels)
    left = jnp.asarray(x1.reshape(pairs, -1))
    right = jnp.asarray(x2.reshape(pairs, -1))
    targets = jnp.asarray(labels)
    params = [tuple(map(jnp.asarray, p)) for p in initial_weights(left.shape[1])]
    velocities = jax.tree.map(jnp.zeros_like, params)

    def encode(params, h, key):
        for depth, (kernel, bias) in enumerate(params):
            h = jax.nn.relu(h @ kernel + bias)
            if depth < DEPTH - 1 and DROPOUT > 0:
                key, sub = jax.random.split(key)
                keep = jax.random.bernoulli(sub, 1.0 - DROPOUT, h.shape)
                h = jnp.where(keep, h / (1.0 - DROPOUT), 0.0)
        return h

    def loss_fn(params, a, b, y, key):
        key_a, key_b = jax.random.split(key)
        squares = jnp.sum(
            jnp.square(encode(params, a, key_a) - encode(params, b, key_b)), axis=1
        )
        d = jnp.sqrt(jnp.maximum(squares, EPSILON))
        return jnp.mean(y * d**2 + (1.0 - y) * jnp.maximum(1.0 - d, 0.0) ** 2)

    @jax.jit
    def step(params, velocities, rows, key):
        loss, grads = jax.value_and_grad(loss_fn)(
            params, left[rows], right[rows], targets[rows], key
        )
        velocities = jax.tree.map(
            lambda v, g: RHO * v + (1.0 - RHO) * g * g, velocities, grads
        )
        params = jax.tree.map(
            lambda p, g, v: p - LEARNING_RATE * g / (jnp.sqrt(v) + EPSILON),
            params,
            grads,
            velocities,
        )
        return params, velocities, loss

    state = {"params": params, "velocities": velocities}
    key = jax.random.PRNGKey(0)
    order = np.random.default_rng(1)

    def epoch() -> Any:
        nonlocal key
        permutation = order.permutation(pairs)
        p, v = state["params"], state["velocities"]
        for s in range(pairs // batch):
            key, sub = jax.random.split(key)
            p, v, _ = step(p, v, permutation[s * batch : (s + 1) * batch], sub)
        state["params"], state["velocities"] = p, v
        return p

    return timed(epoch)


def native_torch(x1: np.ndarray, x2: np.ndarray, labels: np.ndarray, batch: int):
    """Variant c on PyTorch: an eager loop with `torch.optim.RMSprop`."""
    import torch

    device = "cuda" if torch.cuda.is_available() else "cpu"
    pairs = len(labels)
    left = torch.from_numpy(x1.reshape(pairs, -1)).to(device)
    right = torch.from_numpy(x2.reshape(pairs, -1)).to(device)
    targets = torch.from_numpy(labels).to(device)
    layers: list = []
    for depth, (kernel, bias) in enumerate(initial_weights(left.shape[1])):
        linear = torch.nn.Linear(*kernel.shape)
        with torch.no_grad():
            linear.weight.copy_(torch.from_numpy(kernel.T))
            linear.bias.copy_(torch.from_numpy(bias))
        layers += [linear, torch.nn.ReLU()]
        if depth < DEPTH - 1 and DROPOUT > 0:
            layers.append(torch.nn.Dropout(DROPOUT))
    encoder = torch.nn.Sequential(*layers).to(device).train()
    optimizer = torch.optim.RMSprop(
        encoder.parameters(), lr=LEARNING_RATE, alpha=RHO, eps=EPSILON
    )
    order = torch.Generator().manual_seed(1)

    def epoch() -> None:
        permutation = torch.randperm(pairs, generator=order).to(device)
        for s in range(pairs // batch):
            rows = permutation[s * batch : (s + 1) * batch]
            y = targets[rows]
            squares = torch.sum(
                torch.square(encoder(left[rows]) - encoder(right[rows])), dim=1
            )
            d = torch.sqrt(torch.clamp(squares, min=EPSILON))
            loss = torch.mean(y * d**2 + (1.0 - y) * torch.clamp(1.0 - d, min=0.0) ** 2)
            optimizer.zero_grad(set_to_none=True)
            loss.backward()
            optimizer.step()

    return timed(epoch)


def native_tensorflow(x1: np.ndarray, x2: np.ndarray, labels: np.ndarray, batch: int):
    """Variant c on TensorFlow: a `tf.function` step, RMSprop written out.

    XLA is used where Keras' `jit_compile="auto"` would use it (not on CPU).
    """
    import tensorflow as tf

    pairs = len(labels)
    left = tf.constant(x1.reshape(pairs, -1))
    right = tf.constant(x2.reshape(pairs, -1))
    targets = tf.constant(labels)
    params = [
        (tf.Variable(kernel), tf.Variable(bias))
        for kernel, bias in initial_weights(left.shape[1])
    ]
    flat = [v for pair in params for v in pair]
    velocities = [tf.Variable(tf.zeros_like(v)) for v in flat]

    def encode(h):
        for depth, (kernel, bias) in enumerate(params):
            h = tf.nn.relu(tf.matmul(h, kernel) + bias)
            if depth < DEPTH - 1 and DROPOUT > 0:
                h = tf.nn.dropout(h, rate=DROPOUT)
        return h

    @tf.function(jit_compile=bool(common.accelerator()))
    def step(rows):
        y = tf.gather(targets, rows)
        with tf.GradientTape() as tape:
            squares = tf.reduce_sum(
                tf.square(
                    encode(tf.gather(left, rows)) - encode(tf.gather(right, rows))
                ),
                axis=1,
            )
            d = tf.sqrt(tf.maximum(squares, EPSILON))
            loss = tf.reduce_mean(
                y * d**2 + (1.0 - y) * tf.square(tf.maximum(1.0 - d, 0.0))
            )
        grads = tape.gradient(loss, flat)
        for variable, velocity, grad in zip(flat, velocities, grads):
            velocity.assign(RHO * velocity + (1.0 - RHO) * tf.square(grad))
            variable.assign_sub(LEARNING_RATE * grad / (tf.sqrt(velocity) + EPSILON))
        return loss

    order = np.random.default_rng(1)

    def epoch() -> None:
        permutation = tf.constant(order.permutation(pairs))
        for s in range(pairs // batch):
            loss = step(permutation[s * batch : (s + 1) * batch])
        # Reading the last loss waits for every queued step.
        loss.numpy()

    return timed(epoch)


NATIVE = {"jax": native_jax, "torch": native_torch, "tensorflow": native_tensorflow}


def forward_flops_per_pair(features: int) -> int:
    """Matmul FLOPs of one pair's forward pass (two encoder calls)."""
    sizes = [features] + [HIDDEN] * DEPTH
    macs = sum(a * b for a, b in itertools.pairwise(sizes))
    return 2 * 2 * macs


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
        f"{args.data}, {args.rounds} rounds, dropout: {DROPOUT}, threads: {args.threads or 'default'}\n",
        flush=True,
    )

    # Constructed once, like the arrays: each fit epoch draws new pairs.
    pair_dataset = PairDataset(x, y, batch_size=batch, steps_per_epoch=steps, seed=0)
    arrays = {"x": [x1, x2], "y": labels, "batch_size": batch, "shuffle": True}
    runners: dict[str, Callable[[], tuple[float, float]]] = {}
    for name in variants:
        if name == "a_keras":
            model = build_recipe_model(input_shape)
            runners[name] = keras_runner(model, lambda: arrays)
        elif name in PACKAGE_VARIANTS:
            model = build_package_model(input_shape, **PACKAGE_VARIANTS[name])
            runners[name] = keras_runner(model, lambda: {"x": pair_dataset})
        elif name == "b_arrays":
            model = build_package_model(input_shape)
            runners[name] = keras_runner(model, lambda: arrays)
        elif name == "c_native":
            runners[name] = NATIVE[common.backend()](x1, x2, labels, batch)
        else:
            parser.error(f"unknown variant {name!r}")

    # Warm-up: compilation, first-call and allocator costs stay out of the rounds.
    for run in runners.values():
        run()

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

    epoch_flops = 3 * forward_flops_per_pair(features) * pairs
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
        f"({3 * forward_flops_per_pair(features) / 1e6:.2f} MFLOP per pair, 3x "
        f"the forward matmuls); float32 matmul rate {rate / 1e9:.0f} GFLOP/s "
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
            "roofline_fraction": fractions,
            "roofline_fraction_cpu_time": cpu_fractions,
            "tables": {
                "throughput": throughput,
                "ratios": ratio_table,
                "roofline": roofline,
            },
        },
        enabled=not args.no_json,
    )


if __name__ == "__main__":
    main()
