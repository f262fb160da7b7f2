"""Every loss of the package on class-disjoint MNIST, with the same budget.

The protocol of Musgrave et al., "A Metric Learning Reality Check" (2020):
every loss trains the same encoder with the same optimizer, the same number
of steps and the same batches, on the training images of digits 0-5 only, and
is evaluated on the test images of the digits it never saw, 6-9:

- recall@1 and MAP@R (`retrieval_metrics`, every unseen test image a query
  against all the others, leave-one-out);
- 4-way 1-shot accuracy (`one_shot_accuracy`, 1,000 episodes, seed 0);
- seconds per epoch: the median over the epochs after the first (the first
  includes compilation).

Each is the mean and standard deviation over the seeds (0, 1, 2 by default;
a seed sets the initial weights and the batches). A first row scores the raw
pixels (Euclidean distance, no training) as the reference any loss must beat.

**Encoder**: the triplet notebook's model, `Dense(64, relu)` then
`Dense(64, sigmoid)` on flattened 28 x 28 images in [0, 1], exactly as the
notebook builds it: the last layer keeps its sigmoid, and no layer
L2-normalises the embeddings (the losses on cosine similarities normalise
inside the loss, the others work on the raw sigmoid outputs).

**Optimizer**: Adam at 1e-3 for every loss. The proxy losses' class proxies
(`CosineProxies`) get the learning-rate multiplier their recipe documents
(docs/guides/losses.md): 10 for ArcFace and CosFace, 100 for Proxy-Anchor
(the Proxy-Anchor paper's), with Proxy-Anchor's `he_normal` initialisation.

**Batches**: `ClassBalancedDataset`, P x K = 6 digits x 16 images (96 images
per step). Contrastive is the one loss of pairs: it trains a two-branch
`SiameseWrapper` on `PairDataset` batches of 48 random pairs, half positive,
so that each step also runs the encoder on 96 images. Every loss takes its
package defaults (triplet margin 1.0 on the Euclidean distance, SupCon
temperature 0.1, ...); cross-batch memory keeps the last 1,024 embeddings.

**Distance at evaluation**: the one the loss trains on: Euclidean for the
contrastive and triplet losses, cosine for the losses of cosine similarities
(SupCon, multi-similarity, circle, the proxy losses).

`--full` trains the chosen recipe(s) (default: circle) on all ten digits
instead, with P x K = 10 x 16 and 40 epochs of 200 steps, and reports test
recall@1: every test image against the other 9,999 (leave-one-out), and also
against the 60,000 training images as the reference set. Its recipe departs from
the comparison's in three ways, each switchable: the encoder's last layer has
no activation (`--head linear`; the same 64-64 MLP otherwise), the training
set holds every image and its four copies shifted by one pixel (`--shifts`),
and Adam's learning rate decays to 0 with a cosine (`--cosine-decay`).

Run with

    KERAS_BACKEND=jax python benchmarks/compare_losses.py
    KERAS_BACKEND=jax python benchmarks/compare_losses.py --full --seeds 0 1 2
"""

from __future__ import annotations

import argparse
import statistics
from typing import Any

import keras
import numpy as np
from _common import (
    DATASETS,
    EpochClock,
    header,
    load_mnist,
    print_table,
    set_threads,
    write_json,
)

import keras_siamese as ks

DEFAULT_MNIST = DATASETS / "mnist.npz"
SEEN = (0, 1, 2, 3, 4, 5)
UNSEEN = (6, 7, 8, 9)
LEARNING_RATE = 1e-3
MEMORY_SIZE = 1024
METRIC_KEYS = ("recall_at_1", "map_at_r", "one_shot_4way")

# name: (kind, loss, evaluation distance, note)
#   kind "pairs": ContrastiveLoss on PairDataset pairs;
#   kind "labelled": a loss of labels and embeddings on the encoder;
#   kind "proxy": a loss of labels and cosines on encoder + CosineProxies,
#       with (lr_multiplier, initializer) of the proxies;
#   kind "xbm": CrossBatchMemory(encoder, loss_fn, loss_kwargs).
RECIPES: dict[str, tuple[str, Any, str, str]] = {
    "contrastive": ("pairs", None, "euclidean", "pairs, margin 1"),
    "triplet_batch_hard": (
        "labelled",
        lambda: ks.OnlineTripletLoss(mining="batch_hard"),
        "euclidean",
        "margin 1",
    ),
    "triplet_batch_all": (
        "labelled",
        lambda: ks.OnlineTripletLoss(mining="batch_all"),
        "euclidean",
        "margin 1",
    ),
    "triplet_semi_hard": (
        "labelled",
        lambda: ks.OnlineTripletLoss(mining="semi_hard"),
        "euclidean",
        "margin 1",
    ),
    "supcon": (
        "labelled",
        lambda: ks.SupervisedContrastiveLoss(),
        "cosine",
        "T = 0.1",
    ),
    "multi_similarity": (
        "labelled",
        lambda: ks.MultiSimilarityLoss(),
        "cosine",
        "2, 50, 0.5",
    ),
    "circle": ("labelled", lambda: ks.CircleLoss(), "cosine", "m 0.4, gamma 80"),
    "arcface": (
        "proxy",
        (lambda: ks.ArcFaceLoss(), 10.0, None),
        "cosine",
        "proxies lr x10",
    ),
    "cosface": (
        "proxy",
        (lambda: ks.CosFaceLoss(), 10.0, None),
        "cosine",
        "proxies lr x10",
    ),
    "proxy_anchor": (
        "proxy",
        (lambda: ks.ProxyAnchorLoss(), 100.0, "he_normal"),
        "cosine",
        "proxies lr x100",
    ),
    "xbm_triplet_batch_hard": (
        "xbm",
        (ks.online_triplet_loss, {"mining": "batch_hard"}),
        "euclidean",
        "memory 1024, margin 1",
    ),
    "xbm_multi_similarity": (
        "xbm",
        (ks.multi_similarity_loss, {}),
        "cosine",
        "memory 1024",
    ),
}


def encoder(head: str = "sigmoid") -> keras.Model:
    """The triplet notebook's embedding model; `head` is its last activation."""
    return keras.Sequential(
        [
            keras.Input((784,)),
            keras.layers.Dense(64, activation="relu"),
            keras.layers.Dense(64, activation=None if head == "linear" else head),
        ],
        name="encoder",
    )


def with_shifts(x: np.ndarray, y: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
    """The images and their four copies shifted by one pixel (5x the set)."""
    images = x.reshape(len(x), 28, 28)
    shifted = [images] + [
        np.roll(images, step, axis=axis) for step in (-1, 1) for axis in (1, 2)
    ]
    return np.concatenate(shifted).reshape(5 * len(x), -1), np.tile(y, 5)


def select(x: np.ndarray, y: np.ndarray, digits: tuple[int, ...]) -> tuple:
    keep = np.isin(y, digits)
    return x[keep].reshape(int(keep.sum()), -1), y[keep]


def build(
    name: str, x: np.ndarray, y: np.ndarray, args: argparse.Namespace, seed: int
) -> tuple[keras.Model, keras.Model, Any]:
    """`(encoder, model to fit, training data)` of one recipe and seed."""
    kind, spec, _, _ = RECIPES[name]
    keras.utils.set_random_seed(seed)
    embedder = encoder(args.head)
    learning_rate = LEARNING_RATE
    if args.cosine_decay:
        steps = args.epochs * args.steps_per_epoch
        learning_rate = keras.optimizers.schedules.CosineDecay(LEARNING_RATE, steps)
    optimizer = keras.optimizers.Adam(learning_rate)
    batch = args.classes_per_batch * args.per_class
    if kind == "pairs":
        inputs = [keras.Input((784,)), keras.Input((784,))]
        merged = ks.SiameseWrapper(embedder, merge=ks.EuclideanDistance())(inputs)
        model = keras.Model(inputs, merged)
        model.compile(optimizer=optimizer, loss=ks.ContrastiveLoss())
        data = ks.PairDataset(
            x, y, batch_size=batch // 2, steps_per_epoch=args.steps_per_epoch, seed=seed
        )
        return embedder, model, data
    if kind == "labelled":
        embedder.compile(optimizer=optimizer, loss=spec())
        model = embedder
    elif kind == "proxy":
        loss, multiplier, initializer = spec
        head = ks.CosineProxies(
            int(y.max()) + 1, initializer=initializer, lr_multiplier=multiplier
        )
        model = keras.Sequential([embedder, head])
        model.compile(optimizer=optimizer, loss=loss())
    else:
        loss_fn, loss_kwargs = spec
        model = ks.CrossBatchMemory(
            embedder, loss_fn=loss_fn, memory_size=MEMORY_SIZE, loss_kwargs=loss_kwargs
        )
        model.compile(optimizer=optimizer)
    data = ks.ClassBalancedDataset(
        x,
        y,
        classes_per_batch=args.classes_per_batch,
        samples_per_class=args.per_class,
        steps_per_epoch=args.steps_per_epoch,
        seed=seed,
    )
    return embedder, model, data


def train(
    name: str, x: np.ndarray, y: np.ndarray, args: argparse.Namespace, seed: int
) -> tuple[keras.Model, dict]:
    """Fit one recipe; return its encoder and the run's timings and last loss."""
    embedder, model, data = build(name, x, y, args, seed)
    clock = EpochClock()
    history = model.fit(data, epochs=args.epochs, verbose=0, callbacks=[clock])
    later = clock.times[1:] or clock.times
    return embedder, {
        "seconds_per_epoch": float(statistics.median(later)),
        "first_epoch_seconds": clock.times[0],
        "final_loss": float(history.history["loss"][-1]),
    }


def evaluate_unseen(
    embedder: keras.Model | None,
    x: np.ndarray,
    y: np.ndarray,
    distance: str,
    episodes: int,
) -> dict:
    """Scores on the unseen digits; `embedder=None` scores the raw pixels."""
    if embedder is None:
        embeddings = x
    else:
        embeddings = embedder.predict(x, batch_size=4096, verbose=0)
    if not np.all(np.isfinite(embeddings)):
        return dict.fromkeys(METRIC_KEYS, np.nan)
    metrics = ks.retrieval_metrics(
        embeddings, y, distance=distance, metrics=("recall_at_1", "map_at_r")
    )
    one_shot = ks.one_shot_accuracy(
        embeddings, y, ways=4, shots=1, episodes=episodes, seed=0, distance=distance
    )
    return {
        "recall_at_1": float(metrics["recall_at_1"]),
        "map_at_r": float(metrics["map_at_r"]),
        "one_shot_4way": float(one_shot),
    }


def mean_std(values: list[float]) -> str:
    """`mean ± std` in percent (population std over the seeds)."""
    return f"{100 * np.mean(values):.1f} ± {100 * np.std(values):.1f}"


def compare(data: tuple, args: argparse.Namespace) -> dict:
    x_train, y_train, x_test, y_test = data
    x_seen, y_seen = select(x_train, y_train, SEEN)
    x_unseen, y_unseen = select(x_test, y_test, UNSEEN)
    print(
        f"train: {len(x_seen)} images of digits 0-5; evaluate: {len(x_unseen)} "
        f"test images of digits 6-9; P x K = {args.classes_per_batch} x "
        f"{args.per_class}, {args.epochs} epochs x {args.steps_per_epoch} steps, "
        f"seeds {args.seeds}\n",
        flush=True,
    )
    pixels = evaluate_unseen(None, x_unseen, y_unseen, "euclidean", args.episodes)
    rows = [
        [
            keras.backend.backend(),
            "(raw pixels, no training)",
            "euclidean",
            *(f"{100 * pixels[key]:.1f}" for key in METRIC_KEYS),
            "-",
            "reference",
        ]
    ]
    results = {}
    for name in args.losses:
        distance, note = RECIPES[name][2], RECIPES[name][3]
        runs = []
        for seed in args.seeds:
            embedder, record = train(name, x_seen, y_seen, args, seed)
            record.update(
                evaluate_unseen(embedder, x_unseen, y_unseen, distance, args.episodes)
            )
            record["seed"] = seed
            runs.append(record)
            print(f"{name} seed {seed}: {record}", flush=True)
        results[name] = {"distance": distance, "note": note, "runs": runs}
        rows.append(
            [
                keras.backend.backend(),
                name,
                distance,
                mean_std([r["recall_at_1"] for r in runs]),
                mean_std([r["map_at_r"] for r in runs]),
                mean_std([r["one_shot_4way"] for r in runs]),
                float(np.median([r["seconds_per_epoch"] for r in runs])),
                note,
            ]
        )
    print_table(
        [
            "backend",
            "loss",
            "eval distance",
            "recall@1 (%)",
            "MAP@R (%)",
            "4-way 1-shot (%)",
            "s/epoch",
            "settings",
        ],
        rows,
    )
    return {
        "protocol": {
            "train_digits": list(SEEN),
            "eval_digits": list(UNSEEN),
            "classes_per_batch": args.classes_per_batch,
            "samples_per_class": args.per_class,
            "epochs": args.epochs,
            "steps_per_epoch": args.steps_per_epoch,
            "seeds": args.seeds,
            "one_shot_episodes": args.episodes,
            "head": args.head,
            "cosine_decay": args.cosine_decay,
        },
        "raw_pixels": pixels,
        "losses": results,
    }


def full(data: tuple, args: argparse.Namespace) -> dict:
    x_train, y_train, x_test, y_test = data
    digits = tuple(range(10))
    x_all, y_all = select(x_train, y_train, digits)
    x_eval, y_eval = select(x_test, y_test, digits)
    x_fit, y_fit = with_shifts(x_all, y_all) if args.shifts else (x_all, y_all)
    print(
        f"all ten digits: {len(x_all)} training images, {len(x_eval)} test images; "
        f"P x K = {args.classes_per_batch} x {args.per_class}, {args.epochs} epochs "
        f"x {args.steps_per_epoch} steps; last layer {args.head}, one-pixel shifts "
        f"{'on' if args.shifts else 'off'}, cosine decay "
        f"{'on' if args.cosine_decay else 'off'}\n",
        flush=True,
    )
    rows, results = [], {}
    for name in args.losses:
        distance = RECIPES[name][2]
        for seed in args.seeds:
            embedder, record = train(name, x_fit, y_fit, args, seed)
            test = embedder.predict(x_eval, batch_size=4096, verbose=0)
            references = embedder.predict(x_all, batch_size=4096, verbose=0)
            metrics = ks.retrieval_metrics(
                test, y_eval, distance=distance, metrics=("recall_at_1", "map_at_r")
            )
            against_train = ks.retrieval_metrics(
                test,
                y_eval,
                references,
                y_all,
                distance=distance,
                metrics=("recall_at_1",),
            )
            record.update(
                {
                    "seed": seed,
                    "test_recall_at_1": float(metrics["recall_at_1"]),
                    "test_map_at_r": float(metrics["map_at_r"]),
                    "test_vs_train_recall_at_1": float(against_train["recall_at_1"]),
                }
            )
            results.setdefault(name, []).append(record)
            print(f"{name} seed {seed}: {record}", flush=True)
            rows.append(
                [
                    keras.backend.backend(),
                    name,
                    seed,
                    args.epochs * args.steps_per_epoch,
                    f"{100 * record['test_recall_at_1']:.2f}",
                    f"{100 * record['test_vs_train_recall_at_1']:.2f}",
                    f"{100 * record['test_map_at_r']:.1f}",
                    record["seconds_per_epoch"],
                ]
            )
    print_table(
        [
            "backend",
            "loss",
            "seed",
            "steps",
            "test recall@1 (%)",
            "vs train references (%)",
            "test MAP@R (%)",
            "s/epoch",
        ],
        rows,
    )
    return {
        "protocol": {
            "classes_per_batch": args.classes_per_batch,
            "samples_per_class": args.per_class,
            "epochs": args.epochs,
            "steps_per_epoch": args.steps_per_epoch,
            "head": args.head,
            "shifts": args.shifts,
            "cosine_decay": args.cosine_decay,
        },
        "losses": results,
    }


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument(
        "--data",
        "--mnist",
        default=str(DEFAULT_MNIST) if DEFAULT_MNIST.exists() else None,
        help="mnist.npz in the Keras layout (default: ../shared/datasets/"
        "mnist.npz next to the repository if present, else Keras' loader).",
    )
    parser.add_argument("--losses", nargs="+", choices=list(RECIPES), default=None)
    parser.add_argument(
        "--epochs", type=int, default=None, help="default 5 (40 with --full)"
    )
    parser.add_argument("--steps-per-epoch", type=int, default=200)
    parser.add_argument("--classes-per-batch", type=int, default=None)
    parser.add_argument("--per-class", type=int, default=16)
    parser.add_argument("--seeds", type=int, nargs="+", default=None)
    parser.add_argument("--episodes", type=int, default=1000)
    parser.add_argument(
        "--full",
        action="store_true",
        help="train on all ten digits and report test recall@1 instead.",
    )
    parser.add_argument(
        "--head",
        choices=("sigmoid", "linear"),
        default=None,
        help="activation of the encoder's last layer: the notebook's sigmoid "
        "(default) or none (default with --full).",
    )
    parser.add_argument(
        "--cosine-decay",
        action=argparse.BooleanOptionalAction,
        default=None,
        help="decay Adam's learning rate to 0 over the run (default: only "
        "with --full).",
    )
    parser.add_argument(
        "--shifts",
        action=argparse.BooleanOptionalAction,
        default=None,
        help="with --full, train on the images and their copies shifted by "
        "one pixel up, down, left and right (default: on).",
    )
    parser.add_argument("--threads", type=int, default=None)
    parser.add_argument(
        "--smoke", action="store_true", help="tiny sizes, for the test suite."
    )
    parser.add_argument("--no-json", action="store_true")
    args = parser.parse_args()
    set_threads(args.threads)
    if args.full:
        args.losses = args.losses or ["circle"]
        args.seeds = args.seeds or [0]
        args.epochs = args.epochs or 40
        args.classes_per_batch = args.classes_per_batch or 10
        args.head = args.head or "linear"
        args.shifts = True if args.shifts is None else args.shifts
        args.cosine_decay = True if args.cosine_decay is None else args.cosine_decay
    else:
        args.losses = args.losses or list(RECIPES)
        args.seeds = args.seeds or [0, 1, 2]
        args.epochs = args.epochs or 5
        args.classes_per_batch = args.classes_per_batch or len(SEEN)
        args.head = args.head or "sigmoid"
        args.cosine_decay = bool(args.cosine_decay)
        if args.shifts:
            parser.error("--shifts is a part of the --full recipe only")
    if args.smoke:
        args.epochs, args.steps_per_epoch, args.per_class = 2, 2, 4
        args.episodes = 20

    if args.full:
        header("MNIST, all ten digits: test recall@1 of the best recipe")
        payload = full(load_mnist(args.data), args)
        write_json("compare_losses_full", payload, enabled=not args.no_json)
    else:
        header("MNIST, class-disjoint: every loss with the same budget")
        payload = compare(load_mnist(args.data), args)
        write_json("compare_losses", payload, enabled=not args.no_json)


if __name__ == "__main__":
    main()
