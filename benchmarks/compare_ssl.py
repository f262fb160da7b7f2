"""Self-supervised models on Fashion-MNIST, scored by weighted k-NN accuracy.

SimSiam, BYOL, Barlow Twins, VICReg and SimCLR each train the same small
CNN without labels, with plain `model.fit` on a `ClassBalancedDataset` of
two augmented views per example (every training image its own class, one
per batch). A supervised SupCon run with the same encoder, budget, batch
size and augmentation (two views per image, 8 classes x 32 images a batch)
is the ceiling, and the raw pixels the floor.

**Score**: weighted k-NN accuracy (Wu et al., 2018, as lightly's
`knn_predict`: k = 200, temperature 0.1, cosine similarity) of the
encoder's embeddings of the Fashion-MNIST test images against those of the
training subset, with its labels; the mean ± std over the seeds (a seed
sets the initial weights, the batches and their augmentation). Also:

- **norm. std**: `CollapseMonitor.normalized_std` of the test embeddings,
  the mean over dimensions of the std of the L2-normalised embeddings:
  about `1 / sqrt(dim)` (0.088 for 128 dimensions) when they spread over
  the sphere, 0 when they collapse to one direction;
- **s/epoch**: seconds per epoch, the median over the epochs after the
  first (which compiles) and over the seeds.

**Encoder**: the small CNN of `compare_losses_cnn.py` (`cnn_encoder` of
`_common.py`: two 3x3 convolutions of 16 and 32 filters, each with a 2x2
max-pool, then `Dense(128, relu)` and a linear `Dense(--embedding-dim)`),
`--width` times as many filters. The k-NN scores its output, what the
heads of every method read.

**Heads**: each method's own layout at CPU sizes (`HEADS`): hidden layers of
512 units; projections of 512 (SimSiam, Barlow Twins, VICReg) or 128 (BYOL,
SimCLR).

**Augmentation**: `ViewAugment` of `_common.py`, applied per view with a seed
per batch by the dataset: a random resized crop (40-100% of the area,
aspect ratio 3/4-4/3) back to 28 x 28, a horizontal flip (p = 0.5) and,
with p = 0.8, brightness (+-0.2) and contrast (x0.6-1.4) jitter.

**Optimizer**: Adam at `--lr` (1e-3; `--method-lr METHOD=LR` gives a
method its own) decaying to 0 with a cosine over the run; batches of
`--batch-size` (256) images, so 512 views a step. BYOL's target momentum
rises from `--start-momentum` to 1 on a cosine over the run; the default
0.99 is the model's own, a lower one suits short runs.

Run with

    KERAS_BACKEND=jax python benchmarks/compare_ssl.py --data fashion_mnist.npz
    KERAS_BACKEND=tensorflow python benchmarks/compare_ssl.py --seeds 0
    KERAS_BACKEND=torch python benchmarks/compare_ssl.py --seeds 0
"""

from __future__ import annotations

import argparse
import math
import time
from typing import Any

import keras
import numpy as np
from _common import (
    DATASETS,
    EpochClock,
    ViewAugment,
    cnn_encoder,
    header,
    load_mnist,
    mean_std,
    normalized_std,
    print_table,
    set_threads,
    write_json,
)

import keras_siamese as ks
from keras_siamese import knn_accuracy

DEFAULT_DATA = DATASETS / "fashion_mnist.npz"
K = 200
TEMPERATURE = 0.1
SUPCON_CLASSES = 8


def _byol(
    encoder: Any,
    steps: int,
    start_momentum: float = 0.99,
    projection_layers: int = 2,
    projection_output_norm: str | None = None,
) -> keras.Model:
    return ks.BYOL(
        encoder,
        momentum_steps=steps,
        projection_hidden_dim=512,
        projection_dim=128,
        prediction_hidden_dim=512,
        start_momentum=start_momentum,
        projection_layers=projection_layers,
        projection_output_norm=projection_output_norm,
    )


# name: (the model of an encoder and the run's total steps, its head sizes)
HEADS = {
    "simsiam": (
        lambda encoder, steps: ks.SimSiam(
            encoder,
            projection_hidden_dim=512,
            projection_dim=512,
            prediction_hidden_dim=128,
        ),
        "proj 512-512-512, pred 128-512",
    ),
    "byol": (_byol, "proj 512-128, pred 512-128"),
    "barlow_twins": (
        lambda encoder, steps: ks.BarlowTwins(
            encoder, projection_hidden_dim=512, projection_dim=512
        ),
        "proj 512-512-512",
    ),
    "vicreg": (
        lambda encoder, steps: ks.VICReg(
            encoder, projection_hidden_dim=512, projection_dim=512
        ),
        "proj 512-512-512",
    ),
    "simclr": (
        lambda encoder, steps: ks.SimCLR(
            encoder, projection_hidden_dim=512, projection_dim=128
        ),
        "proj 512-128, T 0.5",
    ),
    "supcon": (None, f"labels, {SUPCON_CLASSES} classes a batch, T 0.1"),
}
METHODS = list(HEADS)


def heads(method: str, args: argparse.Namespace) -> str:
    """The table's text of a method's heads and of its own settings."""
    text = HEADS[method][1]
    if method == "byol":
        text += f", m {args.start_momentum:g} -> 1"
        if args.byol_projector != "paper":
            text += ", proj 3 layers + BN"
    if method in args.method_lr:
        text += f", lr {args.method_lr[method]:g}"
    return text


def views_dataset(
    x: np.ndarray, y: np.ndarray, method: str, args: argparse.Namespace, seed: int
) -> ks.ClassBalancedDataset:
    """Batches of two augmented views of `--batch-size` images.

    Without labels every image is its own class; SupCon gets
    `SUPCON_CLASSES` classes of `batch_size / SUPCON_CLASSES` images.
    """
    if method == "supcon":
        labels, classes, per_class = (
            y,
            SUPCON_CLASSES,
            args.batch_size // SUPCON_CLASSES,
        )
    else:
        labels, classes, per_class = np.arange(len(x)), args.batch_size, 1
    return ks.ClassBalancedDataset(
        x,
        labels,
        classes_per_batch=classes,
        samples_per_class=per_class,
        steps_per_epoch=args.steps,
        seed=seed,
        augment=ViewAugment(),
        views=2,
    )


def learning_rate(method: str, args: argparse.Namespace) -> float:
    """The peak learning rate of `method`: its `--method-lr`, else `--lr`."""
    return args.method_lr.get(method, args.lr)


def method_lr(text: str) -> tuple[str, float]:
    """Parse a `METHOD=LR` argument of `--method-lr`."""
    method, _, value = text.partition("=")
    if method not in METHODS:
        raise argparse.ArgumentTypeError(
            f"unknown method {method!r}; expected one of {METHODS}"
        )
    try:
        return method, float(value)
    except ValueError:
        raise argparse.ArgumentTypeError(
            f"expected METHOD=LR with a number LR; got {text!r}"
        ) from None


def train(
    method: str, x: np.ndarray, y: np.ndarray, args: argparse.Namespace, seed: int
) -> tuple[keras.Model, dict]:
    """Fit one method; return its encoder and the run's timings."""
    keras.utils.set_random_seed(seed)
    encoder = cnn_encoder(args.embedding_dim, args.width)
    total = args.epochs * args.steps
    schedule = keras.optimizers.schedules.CosineDecay(
        learning_rate(method, args), total
    )
    optimizer = keras.optimizers.Adam(schedule)
    make = HEADS[method][0]
    if make is None:
        model = encoder
        model.compile(optimizer=optimizer, loss=ks.SupervisedContrastiveLoss())
    else:
        options = {}
        if method == "byol":
            options = {"start_momentum": args.start_momentum}
            if args.byol_projector == "batch-normalised":
                options.update(projection_layers=3, projection_output_norm="affine")
        model = make(encoder, total, **options)
        model.compile(optimizer=optimizer)
    data = views_dataset(x, y, method, args, seed)
    clock = EpochClock()
    start = time.perf_counter()
    history = model.fit(data, epochs=args.epochs, verbose=0, callbacks=[clock])
    later = clock.times[1:] or clock.times
    settings = {"peak_lr": float(schedule.initial_learning_rate)}
    if method == "byol":
        settings["start_momentum"] = model.start_momentum
        settings["projection_layers"] = model.projection_layers
        settings["projection_output_norm"] = model.projection_output_norm
    return encoder, {
        **settings,
        "seconds_per_epoch": float(np.median(later)),
        "epoch_seconds": clock.times,
        "train_seconds": time.perf_counter() - start,
        "final_loss": float(history.history["loss"][-1]),
    }


def evaluate(
    encoder: keras.Model,
    train_images: np.ndarray,
    train_labels: np.ndarray,
    test_images: np.ndarray,
    test_labels: np.ndarray,
) -> dict:
    references = encoder.predict(train_images, batch_size=1024, verbose=0)
    queries = encoder.predict(test_images, batch_size=1024, verbose=0)
    if not (np.all(np.isfinite(references)) and np.all(np.isfinite(queries))):
        return {"knn_accuracy": float("nan"), "normalized_std": float("nan")}
    return {
        "knn_accuracy": knn_accuracy(
            queries, test_labels, references, train_labels, k=K, temperature=TEMPERATURE
        ),
        "normalized_std": normalized_std(queries),
    }


def subset(
    x: np.ndarray, y: np.ndarray, size: int | None, seed: int
) -> tuple[np.ndarray, np.ndarray]:
    """`size` images (all when `None`), the same number of each class."""
    if size is None or size >= len(x):
        keep = np.arange(len(x))
    else:
        rng = np.random.default_rng(seed)
        classes = np.unique(y)
        per_class = size // len(classes)
        keep = np.sort(
            np.concatenate(
                [
                    rng.choice(np.flatnonzero(y == c), per_class, replace=False)
                    for c in classes
                ]
            )
        )
    return x[keep].reshape(len(keep), 28, 28, 1), y[keep]


def compare(data: tuple, args: argparse.Namespace) -> dict:
    x_train, y_train, x_test, y_test = data
    x_train, y_train = subset(x_train, y_train, args.train_size, 0)
    x_test, y_test = subset(x_test, y_test, args.test_size, 1)
    name = args.backend_note or keras.backend.backend()
    print(
        f"train on {len(x_train)} images without labels ({args.epochs} epochs x "
        f"{args.steps} steps of {args.batch_size} images x 2 views); k-NN "
        f"(k={K}, T={TEMPERATURE}) of {len(x_test)} test images against the "
        f"{len(x_train)}; seeds {args.seeds}\n",
        flush=True,
    )
    pixels = knn_accuracy(
        x_test.reshape(len(x_test), -1),
        y_test,
        x_train.reshape(len(x_train), -1),
        y_train,
        k=K,
        temperature=TEMPERATURE,
    )
    rows = [[name, "(raw pixels)", f"{100 * pixels:.1f}", "-", "-", "-"]]
    results = {}
    for method in args.methods:
        runs = []
        for seed in args.seeds:
            encoder, record = train(method, x_train, y_train, args, seed)
            record.update(evaluate(encoder, x_train, y_train, x_test, y_test))
            record["seed"] = seed
            runs.append(record)
            print(f"{method} seed {seed}: {record}", flush=True)
        results[method] = runs
        rows.append(
            [
                name,
                method,
                mean_std([run["knn_accuracy"] for run in runs]),
                float(np.mean([run["normalized_std"] for run in runs])),
                float(np.median([run["seconds_per_epoch"] for run in runs])),
                heads(method, args),
            ]
        )
    print_table(
        [
            "backend",
            "method",
            "k-NN accuracy (%)",
            f"norm. std (1/sqrt(d) = {1 / math.sqrt(args.embedding_dim):.3f})",
            "s/epoch",
            "heads",
        ],
        rows,
    )
    return {
        "settings": {
            "train_size": len(x_train),
            "test_size": len(x_test),
            "epochs": args.epochs,
            "steps_per_epoch": args.steps,
            "batch_size": args.batch_size,
            "embedding_dim": args.embedding_dim,
            "width": args.width,
            "lr": args.lr,
            "method_lr": args.method_lr,
            "start_momentum": args.start_momentum,
            "seeds": args.seeds,
            "k": K,
            "temperature": TEMPERATURE,
            "backend_note": args.backend_note,
        },
        "raw_pixels": pixels,
        "methods": results,
    }


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument(
        "--data",
        default=str(DEFAULT_DATA),
        help="Fashion-MNIST .npz in the Keras layout (default: "
        "fashion_mnist.npz of the shared data folder beside the repository).",
    )
    parser.add_argument("--methods", nargs="+", choices=METHODS, default=METHODS)
    parser.add_argument("--seeds", type=int, nargs="+", default=[0, 1, 2])
    parser.add_argument("--epochs", type=int, default=4)
    parser.add_argument(
        "--steps",
        type=int,
        default=None,
        help="steps per epoch (default: one pass over the training subset).",
    )
    parser.add_argument("--train-size", type=int, default=10000)
    parser.add_argument(
        "--test-size", type=int, default=None, help="default: all test images."
    )
    parser.add_argument("--batch-size", type=int, default=256)
    parser.add_argument("--embedding-dim", type=int, default=128)
    parser.add_argument("--width", type=int, default=1)
    parser.add_argument("--lr", type=float, default=1e-3)
    parser.add_argument(
        "--method-lr",
        type=method_lr,
        nargs="+",
        default=[],
        metavar="METHOD=LR",
        help="a peak learning rate of its own for a method, e.g. byol=3e-3.",
    )
    parser.add_argument(
        "--start-momentum",
        type=float,
        default=0.99,
        help="BYOL's momentum of the target update at step 0 (default: the "
        "model's own default, 0.99), rising to 1 on a cosine.",
    )
    parser.add_argument(
        "--byol-projector",
        choices=["paper", "batch-normalised"],
        default="paper",
        help="BYOL's projection head: the paper's (512-128, a plain last "
        "layer) or three layers with batch norm on the projection "
        "(`projection_layers=3, projection_output_norm='affine'`).",
    )
    parser.add_argument(
        "--backend-note",
        default=None,
        help="the backend column's text (default: the backend's name).",
    )
    parser.add_argument("--threads", type=int, default=None)
    parser.add_argument(
        "--quick",
        action="store_true",
        help="tiny sizes (a smoke test): 400 training and 200 test images, "
        "2 epochs of 2 steps of 16 images, k-NN still k=200.",
    )
    parser.add_argument("--no-json", action="store_true")
    args = parser.parse_args()
    args.method_lr = dict(args.method_lr)
    set_threads(args.threads)
    if args.quick:
        args.train_size, args.test_size = 400, 200
        args.epochs, args.steps, args.batch_size = 2, 2, 16
    if args.steps is None:
        args.steps = math.ceil(args.train_size / args.batch_size)
    data = load_mnist(args.data)
    header("Fashion-MNIST: self-supervised models, weighted k-NN accuracy")
    write_json("compare_ssl", compare(data, args), enabled=not args.no_json)


if __name__ == "__main__":
    main()
