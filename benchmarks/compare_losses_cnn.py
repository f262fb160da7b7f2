"""The strongest losses with a small CNN and augmentation, on unseen classes.

The sibling of `compare_losses.py` (same protocol, same recipes of the
losses) with an encoder that can beat the raw pixels on classes it never
saw. Two class-disjoint protocols (`--protocol`):

- `mnist`: train on the training images of the digits 0-5, evaluate on the
  test images of the unseen digits 6-9;
- `fashion`: Fashion-MNIST, train on the classes 5-9 (sandal, shirt,
  sneaker, bag, ankle boot), evaluate on the test images of the unseen
  classes 0-4 (T-shirt, trouser, pullover, dress, coat).

Every loss gets the same encoder, optimizer, budget, batches and
augmentation. The scores, each the mean and standard deviation over the seeds
(0, 1, 2 by default; a seed sets the initial weights, the batches and their
augmentation):

- precision@1 and MAP@R (`retrieval_metrics`, every unseen test image a
  query against all the others, leave-one-out);
- N-way 1-shot accuracy (`one_shot_accuracy`, N = the number of unseen
  classes, at most 5: 4 on MNIST, 5 on Fashion-MNIST; 1,000 episodes, seed 0);
- seconds per epoch: the median over the epochs after the first.

Each is measured twice: on the **trunk**'s features (the convolutions'
output, cosine distance) and on the **head**'s output that the loss trains
(the loss's own distance). A first row scores the raw pixels (Euclidean
distance, no training), the reference to beat.

**Encoder**: `keras_siamese.demo`'s design, a `TrunkHead`: the trunk is two
3x3 convolutions (16 and 32 filters, ReLU), each followed by a 2x2
max-pool, flattened (1,568 features); the head is `Dense(128, relu)` then a
linear `Dense(--embedding-dim)` (64).

**Augmentation** (`--augment`): `shift` (default) moves each training image
by a random whole number of pixels, up to `--max-shift` (2) in each
direction, filling with 0; `keras` is a Keras pipeline of
`RandomTranslation(0.1)`, `RandomRotation(0.05)` and `RandomZoom(0.1)`;
`none` trains on the images as they are. Both run through
`ClassBalancedDataset(augment=...)`, seeded per batch.

**Optimizer and batches**: Adam at 1e-3 decaying to 0 with a cosine; P x K =
(number of training classes) x 16; the proxies of ArcFace and CosFace
learn 10 times faster and Proxy-Anchor's 100 times (with `he_normal`), as in
`compare_losses.py`.

The default budget is 4 epochs of 100 steps (400 steps). `--full` trains
circle loss on all ten MNIST digits (P x K = 10 x 16, 24 epochs of 100
steps: 2,400 steps, twice the 1,200 of the first tables, the budget that
reaches 99.3%) and reports test recall@1 (every test image against the
other 9,999) on the head and the trunk.

**Levers** (each off by default; the flags' help says more): `--flip`
(left-right mirrors), `--width` and `--blocks` (a wider or deeper trunk),
`--features pooled|pooled-norm` (each block's global average pool
concatenated to the trunk's features), `--margin` (circle) and
`--temperature` (SupCon), `--per-class` (K of P x K), `--trunk-transform`
(centre, standardise or PCA-whiten the trunk's features, fitted on
training-class images only) and `--views 2 --instance-weight W` (a
self-supervised SupCon term on instance labels added to the loss).

Run with

    KERAS_BACKEND=jax python benchmarks/compare_losses_cnn.py --protocol mnist
    KERAS_BACKEND=jax python benchmarks/compare_losses_cnn.py --protocol fashion
    KERAS_BACKEND=jax python benchmarks/compare_losses_cnn.py --full
"""

from __future__ import annotations

import argparse
import statistics
import time
from typing import Any

import keras
import numpy as np
from _common import (
    DATASETS,
    EpochClock,
    RandomShift,
    cnn_encoder,
    header,
    load_mnist,
    mean_std,
    print_table,
    set_threads,
    write_json,
)
from compare_losses import RECIPES

import keras_siamese as ks
from keras_siamese.layers import TrunkHead, trunk_of

# name: (file under DATASETS, training classes, evaluation classes)
PROTOCOLS = {
    "mnist": ("mnist.npz", (0, 1, 2, 3, 4, 5), (6, 7, 8, 9)),
    "fashion": ("fashion_mnist.npz", (5, 6, 7, 8, 9), (0, 1, 2, 3, 4)),
}
# The losses of labels and embeddings; contrastive (pairs) and the
# cross-batch memory are left to compare_losses.py.
CHOICES = [
    name for name, recipe in RECIPES.items() if recipe[0] in ("labelled", "proxy")
]
DEFAULT_LOSSES = ["supcon", "multi_similarity", "circle", "arcface"]
LEARNING_RATE = 1e-3
METRICS = ("recall_at_1", "map_at_r", "one_shot")
TRUNK_DISTANCE = "cosine"


class RandomFlip:
    """Mirror every image left-right with probability 1/2, after `inner`.

    A callable `augment(images, seed=...)` like `RandomShift`: the flips are
    drawn from `numpy.random.default_rng((seed, 1))`, so they depend on the
    batch's seed alone and not on `inner`'s draws.
    """

    def __init__(self, inner: Any = None) -> None:
        self.inner = inner

    def __call__(self, images: np.ndarray, seed: int) -> np.ndarray:
        if self.inner is not None:
            images = self.inner(images, seed=seed)
        flip = np.random.default_rng((seed, 1)).random(len(images)) < 0.5
        out = np.array(images, copy=True)
        out[flip] = out[flip][:, :, ::-1]
        return out


def augmentation(args: argparse.Namespace) -> Any:
    if args.augment == "none":
        chosen = None
    elif args.augment == "shift":
        chosen = RandomShift(args.max_shift)
    else:
        chosen = keras.Sequential(
            [
                keras.layers.RandomTranslation(0.1, 0.1, fill_mode="constant"),
                keras.layers.RandomRotation(0.05, fill_mode="constant"),
                keras.layers.RandomZoom(0.1, fill_mode="constant"),
            ]
        )
    return RandomFlip(chosen) if args.flip else chosen


def build_encoder(args: argparse.Namespace) -> TrunkHead:
    """The benchmark's `TrunkHead`: `cnn_encoder`'s, or its variant of the flags.

    `--width` multiplies the filters (16, 32, then 64 for a third block with
    `--blocks 3`); `--features pooled` concatenates each block's globally
    average-pooled ReLU maps with the flattened last one, `pooled-norm`
    scales each of those parts to unit length first.
    """
    if args.width == 1 and args.blocks == 2 and args.features == "flatten":
        return cnn_encoder(args.embedding_dim)
    inputs = keras.Input((28, 28, 1))
    hidden, parts = inputs, []
    for filters in (16, 32, 64)[: args.blocks]:
        hidden = keras.layers.Conv2D(
            filters * args.width, 3, padding="same", activation="relu"
        )(hidden)
        parts.append(keras.layers.GlobalAveragePooling2D()(hidden))
        hidden = keras.layers.MaxPooling2D(2)(hidden)
    parts.append(keras.layers.Flatten()(hidden))
    if args.features == "flatten":
        features = parts[-1]
    else:
        if args.features == "pooled-norm":
            parts = [keras.layers.UnitNormalization()(part) for part in parts]
        features = keras.layers.Concatenate()(parts)
    trunk = keras.Model(inputs, features, name="trunk")
    head = keras.Sequential(
        [
            keras.Input(tuple(features.shape[1:])),
            keras.layers.Dense(128, activation="relu"),
            keras.layers.Dense(args.embedding_dim),
        ],
        name="head",
    )
    return TrunkHead(trunk, head, name="encoder")


def loss_of(name: str, args: argparse.Namespace) -> Any:
    """The recipe's loss, with `--margin` (circle) or `--temperature` (SupCon)."""
    if name == "circle" and args.margin is not None:
        return ks.CircleLoss(m=args.margin)
    if name == "supcon" and args.temperature is not None:
        return ks.SupervisedContrastiveLoss(temperature=args.temperature)
    return RECIPES[name][1]()


def with_instance_term(loss: Any, weight: float, views: int) -> Any:
    """`loss` plus `weight` times SupCon on instance labels (a SimCLR term).

    The batches hold `views` augmented views of each example, row
    `v * batch_size + k` being view `v` of example `k`; the added term makes
    an example's views its only positives, so that the embedding also tells
    apart the images of one class, which the class labels do not ask for.
    """
    instance = ks.SupervisedContrastiveLoss()

    def combined(y_true: Any, y_pred: Any) -> Any:
        rows = keras.ops.shape(y_pred)[0]
        ids = keras.ops.arange(rows) % (rows // views)
        return loss(y_true, y_pred) + weight * instance(ids, y_pred)

    return combined


def fit_transform(features: np.ndarray, kind: str, dim: int) -> Any:
    """A map of trunk features fitted on `features` (the training classes').

    `center` subtracts their mean, `standardize` also divides by each
    feature's standard deviation (features that never vary are only
    centred), `pca` projects the centred features on their `dim` leading
    principal axes, each scaled to unit variance (whitening). `none` is the
    identity.
    """
    if kind == "none":
        return lambda z: z
    x = np.asarray(features, np.float64)
    mean = x.mean(axis=0)
    if kind == "center":
        return lambda z: np.asarray(z, np.float64) - mean
    if kind == "standardize":
        std = x.std(axis=0)
        std = np.where(std > 1e-8 * max(float(std.max()), 1e-30), std, 1.0)
        return lambda z: (np.asarray(z, np.float64) - mean) / std
    if kind != "pca":
        raise ValueError(f"unknown trunk transform {kind!r}")
    centred = x - mean
    values, vectors = np.linalg.eigh(centred.T @ centred / len(x))
    top = np.argsort(values)[::-1][:dim]
    projection = vectors[:, top] / np.sqrt(np.maximum(values[top], 1e-12))
    return lambda z: (np.asarray(z, np.float64) - mean) @ projection


def select(x: np.ndarray, y: np.ndarray, classes: tuple[int, ...]) -> tuple:
    keep = np.isin(y, classes)
    return x[keep].reshape(int(keep.sum()), 28, 28, 1), y[keep]


def train(
    name: str, x: np.ndarray, y: np.ndarray, args: argparse.Namespace, seed: int
) -> tuple[TrunkHead, dict]:
    """Fit one loss on `(x, y)`; return the encoder and the run's timings."""
    kind, spec, _, _ = RECIPES[name]
    keras.utils.set_random_seed(seed)
    encoder = build_encoder(args)
    steps = args.epochs * args.steps_per_epoch
    schedule = keras.optimizers.schedules.CosineDecay(LEARNING_RATE, steps)
    optimizer = keras.optimizers.Adam(schedule)
    if kind == "labelled":
        model, loss = encoder, loss_of(name, args)
        if args.instance_weight:
            loss = with_instance_term(loss, args.instance_weight, args.views)
    else:
        make_loss, multiplier, initializer = spec
        proxies = ks.CosineProxies(
            int(y.max()) + 1, initializer=initializer, lr_multiplier=multiplier
        )
        model, loss = keras.Sequential([encoder, proxies]), make_loss()
    model.compile(optimizer=optimizer, loss=loss)
    data = ks.ClassBalancedDataset(
        x,
        y,
        classes_per_batch=args.classes_per_batch,
        samples_per_class=args.per_class,
        steps_per_epoch=args.steps_per_epoch,
        seed=seed,
        augment=augmentation(args),
        views=args.views,
    )
    clock = EpochClock()
    start = time.perf_counter()
    history = model.fit(data, epochs=args.epochs, verbose=0, callbacks=[clock])
    later = clock.times[1:] or clock.times
    return encoder, {
        "seconds_per_epoch": float(statistics.median(later)),
        "train_seconds": time.perf_counter() - start,
        "final_loss": float(history.history["loss"][-1]),
    }


def leave_one_out(
    embeddings: np.ndarray, y: np.ndarray, distance: str, block: int = 512
) -> dict:
    """recall@1 and MAP@R of every row against all the others, in NumPy.

    The same numbers as `ks.retrieval_metrics(embeddings, y, distance=...)`
    (tests/test_benchmarks.py checks it), computed with one matrix product
    and a sort per block of queries, which is far quicker on thousands of
    1,568-dimensional trunk features.
    """
    x = np.asarray(embeddings, np.float64)
    if distance == "cosine":
        x = x / np.maximum(np.linalg.norm(x, axis=1, keepdims=True), 1e-12)
    elif distance != "euclidean":
        raise ValueError(
            f"`distance` must be 'cosine' or 'euclidean'; got {distance!r}."
        )
    norms = np.sum(x * x, axis=1)
    _, codes, counts = np.unique(y, return_inverse=True, return_counts=True)
    relevant = counts[codes] - 1
    width = int(relevant.max())
    ranks = np.arange(1, width + 1)
    hits, average = [], []
    for start in range(0, len(x), block):
        rows = slice(start, start + block)
        # Squared Euclidean distance; for unit rows it orders as cosine does.
        d = norms[rows, None] + norms[None, :] - 2.0 * x[rows] @ x.T
        d[np.arange(d.shape[0]), np.arange(start, start + d.shape[0])] = np.inf
        order = np.argsort(d, axis=1, kind="stable")[:, :width]
        match = codes[order] == codes[rows, None]
        hits.append(match[:, 0])
        within = ranks[None, :] <= relevant[rows, None]
        precision = np.cumsum(match, axis=1) / ranks[None, :]
        average.append(np.sum(precision * match * within, axis=1) / relevant[rows])
    return {
        "recall_at_1": float(np.mean(np.concatenate(hits))),
        "map_at_r": float(np.mean(np.concatenate(average))),
    }


def scores(embeddings: np.ndarray, y: np.ndarray, distance: str, episodes: int) -> dict:
    """recall@1 and MAP@R (leave-one-out) and N-way 1-shot accuracy of `embeddings`."""
    if not np.all(np.isfinite(embeddings)):
        return dict.fromkeys(METRICS, np.nan)
    metrics = leave_one_out(embeddings, y, distance)
    ways = min(5, len(np.unique(y)))
    one_shot = ks.one_shot_accuracy(
        embeddings, y, ways=ways, shots=1, episodes=episodes, seed=0, distance=distance
    )
    return {
        "recall_at_1": float(metrics["recall_at_1"]),
        "map_at_r": float(metrics["map_at_r"]),
        "one_shot": float(one_shot),
    }


def evaluate(
    encoder: TrunkHead,
    x: np.ndarray,
    y: np.ndarray,
    distance: str,
    args: argparse.Namespace,
    x_fit: np.ndarray | None = None,
) -> dict:
    """Scores of the trunk's features and of the head's output on `(x, y)`.

    The trunk's features go through `--trunk-transform` first, fitted on the
    trunk's features of `x_fit` (images of the training classes only).
    """
    episodes = args.episodes
    trunk = trunk_of(encoder)
    features = trunk.predict(x, batch_size=1024, verbose=0)
    outputs = encoder.head.predict(features, batch_size=1024, verbose=0)
    if args.trunk_transform != "none":
        fitted = trunk.predict(x_fit, batch_size=1024, verbose=0)
        features = fit_transform(fitted, args.trunk_transform, args.pca_dim)(features)
    return {
        "trunk": scores(features, y, TRUNK_DISTANCE, episodes),
        "head": scores(outputs, y, distance, episodes),
    }


def settings(args: argparse.Namespace) -> dict:
    return {
        "classes_per_batch": args.classes_per_batch,
        "samples_per_class": args.per_class,
        "epochs": args.epochs,
        "steps_per_epoch": args.steps_per_epoch,
        "embedding_dim": args.embedding_dim,
        "augment": args.augment,
        "max_shift": args.max_shift,
        "flip": args.flip,
        "width": args.width,
        "blocks": args.blocks,
        "features": args.features,
        "margin": args.margin,
        "temperature": args.temperature,
        "views": args.views,
        "instance_weight": args.instance_weight,
        "trunk_transform": args.trunk_transform,
        "pca_dim": args.pca_dim,
        "seeds": args.seeds,
        "one_shot_episodes": args.episodes,
    }


def compare(data: tuple, args: argparse.Namespace) -> dict:
    _, seen, unseen = PROTOCOLS[args.protocol]
    x_train, y_train, x_test, y_test = data
    x_seen, y_seen = select(x_train, y_train, seen)
    x_unseen, y_unseen = select(x_test, y_test, unseen)
    # The training images the trunk's transform is fitted on (at most
    # 10,000, a fixed draw): the unseen classes play no part in it.
    pick = np.random.default_rng(0).permutation(len(x_seen))[:10_000]
    x_fit = x_seen[np.sort(pick)]
    ways = min(5, len(unseen))
    print(
        f"{args.protocol}: train on {len(x_seen)} images of classes {seen}; "
        f"evaluate on {len(x_unseen)} test images of the unseen classes "
        f"{unseen}; P x K = {args.classes_per_batch} x {args.per_class}, "
        f"{args.epochs} epochs x {args.steps_per_epoch} steps, augment "
        f"{args.augment}, seeds {args.seeds}\n",
        flush=True,
    )
    pixels = scores(
        x_unseen.reshape(len(x_unseen), -1), y_unseen, "euclidean", args.episodes
    )
    raw = [f"{100 * pixels[key]:.1f}" for key in METRICS]
    rows = [
        [keras.backend.backend(), "(raw pixels, no training)", *raw, "-", "-", "-", "-"]
    ]
    # The encoder as initialised: how much of the score the architecture
    # gives before any loss has trained it.
    untrained = []
    for seed in args.seeds:
        keras.utils.set_random_seed(seed)
        encoder = build_encoder(args)
        untrained.append(evaluate(encoder, x_unseen, y_unseen, "cosine", args, x_fit))
    rows.append(
        [
            keras.backend.backend(),
            "(untrained CNN)",
            *(
                mean_std([run[part][key] for run in untrained])
                for part in ("trunk", "head")
                for key in METRICS
            ),
            "-",
        ]
    )
    print(f"untrained CNN: {untrained}", flush=True)
    results = {}
    for name in args.losses:
        distance = RECIPES[name][2]
        runs = []
        for seed in args.seeds:
            encoder, record = train(name, x_seen, y_seen, args, seed)
            record.update(evaluate(encoder, x_unseen, y_unseen, distance, args, x_fit))
            record["seed"] = seed
            runs.append(record)
            print(f"{name} seed {seed}: {record}", flush=True)
        results[name] = {"head_distance": distance, "runs": runs}
        rows.append(
            [
                keras.backend.backend(),
                name,
                *(
                    mean_std([run[part][key] for run in runs])
                    for part in ("trunk", "head")
                    for key in METRICS
                ),
                float(np.median([run["seconds_per_epoch"] for run in runs])),
            ]
        )
    print_table(
        [
            "backend",
            "loss",
            "trunk recall@1 (%)",
            "trunk MAP@R (%)",
            f"trunk {ways}-way 1-shot (%)",
            "head recall@1 (%)",
            "head MAP@R (%)",
            f"head {ways}-way 1-shot (%)",
            "s/epoch",
        ],
        rows,
    )
    return {
        "protocol": {
            "name": args.protocol,
            "train_classes": list(seen),
            "eval_classes": list(unseen),
            "one_shot_ways": ways,
            "trunk_distance": TRUNK_DISTANCE,
            **settings(args),
        },
        "raw_pixels": pixels,
        "untrained": untrained,
        "losses": results,
    }


def full(data: tuple, args: argparse.Namespace) -> dict:
    x_train, y_train, x_test, y_test = data
    digits = tuple(range(10))
    x_all, y_all = select(x_train, y_train, digits)
    x_eval, y_eval = select(x_test, y_test, digits)
    print(
        f"all ten digits: {len(x_all)} training images, {len(x_eval)} test images; "
        f"P x K = {args.classes_per_batch} x {args.per_class}, {args.epochs} epochs "
        f"x {args.steps_per_epoch} steps, augment {args.augment}\n",
        flush=True,
    )
    rows, results = [], {}
    for name in args.losses:
        distance = RECIPES[name][2]
        for seed in args.seeds:
            encoder, record = train(name, x_all, y_all, args, seed)
            features = trunk_of(encoder).predict(x_eval, batch_size=1024, verbose=0)
            outputs = encoder.head.predict(features, batch_size=1024, verbose=0)
            for part, embeddings, part_distance in (
                ("head", outputs, distance),
                ("trunk", features, TRUNK_DISTANCE),
            ):
                metrics = ks.retrieval_metrics(
                    embeddings,
                    y_eval,
                    distance=part_distance,
                    metrics=("recall_at_1", "map_at_r"),
                )
                record[part] = {
                    "test_recall_at_1": float(metrics["recall_at_1"]),
                    "test_map_at_r": float(metrics["map_at_r"]),
                }
            record["seed"] = seed
            results.setdefault(name, []).append(record)
            print(f"{name} seed {seed}: {record}", flush=True)
            rows.append(
                [
                    keras.backend.backend(),
                    name,
                    seed,
                    args.epochs * args.steps_per_epoch,
                    f"{100 * record['head']['test_recall_at_1']:.2f}",
                    f"{100 * record['head']['test_map_at_r']:.1f}",
                    f"{100 * record['trunk']['test_recall_at_1']:.2f}",
                    record["seconds_per_epoch"],
                ]
            )
    print_table(
        [
            "backend",
            "loss",
            "seed",
            "steps",
            "head test recall@1 (%)",
            "head test MAP@R (%)",
            "trunk test recall@1 (%)",
            "s/epoch",
        ],
        rows,
    )
    return {"protocol": {"name": "mnist-all", **settings(args)}, "losses": results}


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--protocol", choices=list(PROTOCOLS), default="mnist")
    parser.add_argument(
        "--data",
        default=None,
        help="the protocol's .npz in the Keras layout (default: the file named "
        "in PROTOCOLS under ../shared/datasets/ next to the repository).",
    )
    parser.add_argument("--losses", nargs="+", choices=CHOICES, default=None)
    parser.add_argument(
        "--epochs", type=int, default=None, help="default 4 (24 with --full)"
    )
    parser.add_argument("--steps-per-epoch", type=int, default=100)
    parser.add_argument("--per-class", type=int, default=16)
    parser.add_argument("--embedding-dim", type=int, default=64)
    parser.add_argument(
        "--augment", choices=("shift", "keras", "none"), default="shift"
    )
    parser.add_argument("--max-shift", type=int, default=2)
    parser.add_argument(
        "--flip",
        action="store_true",
        help="also mirror each training image left-right with probability 1/2.",
    )
    parser.add_argument(
        "--width", type=int, default=1, help="multiply the trunk's filters (1)."
    )
    parser.add_argument(
        "--blocks",
        type=int,
        choices=(2, 3),
        default=2,
        help="convolution blocks of the trunk (2; a third has 64 filters).",
    )
    parser.add_argument(
        "--features",
        choices=("flatten", "pooled", "pooled-norm"),
        default="flatten",
        help="the trunk's features: the flattened last block (default), or "
        "with each block's global average pool concatenated (pooled), each "
        "part L2-normalised first (pooled-norm).",
    )
    parser.add_argument(
        "--margin", type=float, default=None, help="circle loss's m (0.4)."
    )
    parser.add_argument(
        "--temperature", type=float, default=None, help="SupCon's temperature (0.1)."
    )
    parser.add_argument(
        "--trunk-transform",
        choices=("none", "center", "standardize", "pca"),
        default="none",
        help="map the trunk's features before scoring, fitted on 10,000 "
        "training images of the training classes: centre, standardise, or "
        "PCA-whiten to --pca-dim dimensions (protocols only).",
    )
    parser.add_argument("--pca-dim", type=int, default=128)
    parser.add_argument(
        "--views",
        type=int,
        default=1,
        help="augmented views of each example in a batch (1; 2 doubles the batch).",
    )
    parser.add_argument(
        "--instance-weight",
        type=float,
        default=0.0,
        help="with --views 2, add this times SupCon on instance labels (each "
        "example's views its only positives) to the loss (0: off; labelled "
        "losses only).",
    )
    parser.add_argument("--seeds", type=int, nargs="+", default=None)
    parser.add_argument("--episodes", type=int, default=1000)
    parser.add_argument(
        "--full",
        action="store_true",
        help="train on all ten MNIST digits and report test recall@1 instead.",
    )
    parser.add_argument("--threads", type=int, default=None)
    parser.add_argument(
        "--smoke", action="store_true", help="tiny sizes, for the test suite."
    )
    parser.add_argument("--no-json", action="store_true")
    args = parser.parse_args()
    set_threads(args.threads)
    if args.full:
        args.protocol = "mnist"
        args.losses = args.losses or ["circle"]
        args.seeds = args.seeds or [0]
        args.epochs = args.epochs or 24
        args.classes_per_batch = 10
    else:
        args.losses = args.losses or DEFAULT_LOSSES
        args.seeds = args.seeds or [0, 1, 2]
        args.epochs = args.epochs or 4
        args.classes_per_batch = len(PROTOCOLS[args.protocol][1])
    if args.smoke:
        args.epochs, args.steps_per_epoch, args.per_class = 2, 2, 4
        args.episodes = 20
    filename = PROTOCOLS[args.protocol][0]
    data = load_mnist(args.data or str(DATASETS / filename))

    if args.full:
        header("MNIST, all ten digits: a CNN's test recall@1")
        write_json(
            "compare_losses_cnn_full", full(data, args), enabled=not args.no_json
        )
    else:
        header(f"{args.protocol}, class-disjoint: a CNN with augmentation, every loss")
        payload = compare(data, args)
        write_json(
            f"compare_losses_cnn_{args.protocol}", payload, enabled=not args.no_json
        )


if __name__ == "__main__":
    main()
