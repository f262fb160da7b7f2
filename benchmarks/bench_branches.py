"""Sequential branches against one batched call of the shared encoder.

`SiameseWrapper(encoder, fuse_branches=False)` calls the encoder once per
branch; `fuse_branches=True` concatenates the branches along the batch axis,
calls the encoder once and splits the result. The math is the same; the
second runs fewer, larger kernels (and, in eager PyTorch, half the Python
layer calls). This script times a full training step (forward, backward,
RMSprop update, via `fit`) of a pair model, both ways, for three encoders:

- `mlp`: Flatten and 3 x Dense(128, relu), the seed recipe's encoder,
- `cnn`: two 3x3 convolutions (16 and 32 filters) with max pooling, global
  average pooling and Dense(128),
- `lstm`: an LSTM(64) over the 28 rows of a 28x28 image, then Dense(64).

Both models of an encoder start from the same weights and train on the same
arrays; the two are timed in interleaved rounds, and the speed-up is the
median of the per-round ratios. These measurements set the wrapper's default
(`fuse_branches=None`: fused on PyTorch, separate on JAX and TensorFlow);
`benchmarks/README.md` has the tables.

Run (the backend is chosen as for Keras):

    KERAS_BACKEND=jax python benchmarks/bench_branches.py --rounds 5
"""

from __future__ import annotations

import argparse

import _common as common
import keras
import numpy as np

from keras_siamese import EuclideanDistance, SiameseWrapper
from keras_siamese.losses import ContrastiveLoss

ENCODERS = ("mlp", "cnn", "lstm")
# Steps per timed epoch: enough work per round to dwarf fit's per-epoch cost.
DEFAULT_STEPS = {"mlp": 60, "cnn": 4, "lstm": 10}


def build_encoder(kind: str) -> tuple[keras.Model, tuple]:
    """The shared encoder of `kind` and its input shape (one example)."""
    layers = keras.layers
    if kind == "mlp":
        shape = (28, 28)
        body = [layers.Flatten()] + [
            layers.Dense(128, activation="relu") for _ in range(3)
        ]
    elif kind == "cnn":
        shape = (28, 28, 1)
        body = [
            layers.Conv2D(16, 3, activation="relu"),
            layers.MaxPooling2D(),
            layers.Conv2D(32, 3, activation="relu"),
            layers.MaxPooling2D(),
            layers.GlobalAveragePooling2D(),
            layers.Dense(128),
        ]
    elif kind == "lstm":
        shape = (28, 28)
        body = [layers.LSTM(64), layers.Dense(64)]
    else:
        raise ValueError(f"unknown encoder {kind!r}; expected one of {ENCODERS}.")
    return keras.Sequential([keras.Input(shape), *body]), shape


def build_pair_model(kind: str, fuse_branches: bool, seed: int = 0) -> keras.Model:
    keras.utils.set_random_seed(seed)
    encoder, shape = build_encoder(kind)
    siamese = SiameseWrapper(
        encoder, merge=EuclideanDistance(), fuse_branches=fuse_branches
    )
    input_a, input_b = keras.Input(shape), keras.Input(shape)
    model = keras.Model([input_a, input_b], siamese([input_a, input_b]))
    model.compile(loss=ContrastiveLoss(), optimizer=keras.optimizers.RMSprop(1e-3))
    return model


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    common.add_common_args(parser)
    parser.add_argument("--batch-size", type=int, default=128, help="pairs per step")
    parser.add_argument(
        "--rounds", type=int, default=5, help="interleaved timing rounds"
    )
    parser.add_argument(
        "--encoders",
        default=",".join(ENCODERS),
        help=f"comma-separated subset of {', '.join(ENCODERS)}",
    )
    parser.add_argument(
        "--steps",
        type=int,
        default=None,
        help="training steps per timed epoch (default: "
        + ", ".join(f"{k} {v}" for k, v in DEFAULT_STEPS.items())
        + ")",
    )
    args = parser.parse_args()
    common.set_threads(args.threads)
    common.header("Branch execution: sequential vs fused (SiameseWrapper)")
    x, _ = common.load_images(args.data)
    batch = args.batch_size
    rng = np.random.default_rng(0)

    rows, results = [], {}
    for kind in args.encoders.split(","):
        steps = args.steps or DEFAULT_STEPS[kind]
        count = steps * batch
        left = x[rng.integers(0, len(x), count)]
        right = x[rng.integers(0, len(x), count)]
        if kind == "cnn":
            left, right = left[..., None], right[..., None]
        labels = rng.integers(0, 2, count).astype(np.float32)
        data = {"x": [left, right], "y": labels, "batch_size": batch}
        models = {
            "sequential": build_pair_model(kind, fuse_branches=False),
            "fused": build_pair_model(kind, fuse_branches=True),
        }
        wall = {name: [] for name in models}
        cpu = {name: [] for name in models}
        for model in models.values():
            common.fit_epoch(model, **data)
        for _ in range(args.rounds):
            for name, model in models.items():
                seconds, cpu_seconds = common.fit_epoch(model, **data)
                wall[name].append(seconds / steps)
                cpu[name].append(cpu_seconds / steps)
        speedup = common.median(
            [s / f for s, f in zip(wall["sequential"], wall["fused"])]
        )
        cpu_speedup = common.median(
            [s / f for s, f in zip(cpu["sequential"], cpu["fused"])]
        )
        results[kind] = {
            "steps_per_round": steps,
            "step_seconds": wall,
            "step_cpu_seconds": cpu,
            "fused_speedup": speedup,
            "fused_cpu_speedup": cpu_speedup,
        }
        rows.append(
            [
                kind,
                1e3 * common.median(wall["sequential"]),
                1e3 * common.median(wall["fused"]),
                speedup,
                cpu_speedup,
            ]
        )
        print(f"{kind}: done", flush=True)
    print()
    table = common.print_table(
        [
            "encoder",
            "sequential ms/step",
            "fused ms/step",
            "fused speed-up (wall)",
            "fused speed-up (CPU time)",
        ],
        rows,
    )
    common.write_json(
        "branches",
        {
            "batch_size": batch,
            "rounds": args.rounds,
            "threads": args.threads,
            "data": args.data,
            "encoders": results,
            "tables": {"branches": table},
        },
        enabled=not args.no_json,
    )


if __name__ == "__main__":
    main()
