"""Ranking with mined hard negatives: instance retrieval on Fashion-MNIST.

**Task** (instance retrieval, no labels): each of `--gallery` test images
gives two augmented views; the first is a query, the second a corpus row,
and a query's only relevant row is the other view of its own image. The
other 1,999 rows (by default) are negatives, a tenth of them of the
query's class and many of those near-duplicates in pixels, so the task
is to tell *this* garment from similar ones, not its class. Scored with
`ranking_metrics` (cosine distance): NDCG@10, MRR@10, recall@1, recall@10
and MAP@100 (with one relevant row, MAP@100 is MRR@100). One more column,
**class@1**, is `accuracy_at_1` of the same search with every row of the
query's class relevant: how often the top answer is at least the right
kind of garment.

**Training** (training images, no labels): a query and its positive are
two augmented views of one image (fresh views each epoch);
`MultipleNegativesRankingLoss` (scale 20, cosine) with in-batch negatives
for `--epochs` epochs. Then, from that checkpoint, `--mined-epochs` more
epochs three ways, with the same views and the same number of steps:

- **MNRL in-batch**: as before;
- **MNRL + random negatives**: a third column holding the view of another
  image drawn at random, the control: as many candidates per step as with
  mining, none of them chosen;
- **MNRL + mined**: before each epoch, the current encoder embeds both
  views; `mine_hard_negatives` with an `EmbeddingIndex` of the positives'
  embeddings gives each query its nearest positive of *another* image,
  whose view becomes the row's third column. Same-class images are not
  left out: in this task they are negatives, and the hardest ones. A row's
  hard negative can be another row's positive in the same batch, so the
  loss removes accidental hits by image id (`y_true` = the ids of the
  positive and the negative);
- **MNRL + mined, symmetric**: the same with `symmetric=True`.

A step with a third column embeds 3 images per row instead of 2 and
scores each query against twice as many candidates.

Reference rows: the raw pixels (cosine on the 784 values) and the
untrained encoder.

**Encoder**: `cnn_encoder` of `_common.py` (two 3x3 convolutions of 16 and
32 filters, each with a 2x2 max-pool, `Dense(128, relu)`, a linear
`Dense(--embedding-dim)`); the metrics score its output, the loss's space.
**Augmentation**: `ViewAugment` of `_common.py` (random resized crop of
40-100% of the area, horizontal flip, brightness and contrast jitter).
**Optimizer**: Adam at `--lr`, a fresh one for each phase.

    KERAS_BACKEND=tensorflow python benchmarks/ranking_demo.py --data fashion_mnist.npz
    KERAS_BACKEND=tensorflow python benchmarks/ranking_demo.py --seeds 0 1 2
"""

from __future__ import annotations

import argparse
import statistics
import time

import keras
import numpy as np
from _common import (
    DATASETS,
    ViewAugment,
    cnn_encoder,
    header,
    load_mnist,
    print_table,
    set_threads,
    write_json,
)

from keras_siamese import (
    EmbeddingIndex,
    MultipleNegativesRankingLoss,
    SiameseWrapper,
    mine_hard_negatives,
    ranking_metrics,
)

DEFAULT_DATA = DATASETS / "fashion_mnist.npz"
KS = (1, 10, 100)
COLUMNS = (
    ("NDCG@10", "ndcg_at_10"),
    ("MRR@10", "mrr_at_10"),
    ("recall@1", "recall_at_1"),
    ("recall@10", "recall_at_10"),
    ("MAP@100", "map_at_100"),
    ("class@1", "class_at_1"),
)
ROWS = (
    "raw pixels",
    "untrained encoder",
    "MNRL in-batch",
    "MNRL + random negatives",
    "MNRL + mined",
    "MNRL + mined, symmetric",
)


def views(images: np.ndarray, seed: int) -> tuple[np.ndarray, np.ndarray]:
    """Two independent augmented views of every image."""
    augment = ViewAugment()
    return augment(images, seed=2 * seed), augment(images, seed=2 * seed + 1)


def score(
    queries: np.ndarray, corpus: np.ndarray, labels: np.ndarray
) -> dict[str, float]:
    """Instance metrics (relevant: the other view) and class@1."""
    index = EmbeddingIndex("cosine")
    index.add(corpus)
    scores = ranking_metrics(queries, index, [[i] for i in range(len(queries))], KS)
    same_class = [np.flatnonzero(labels == label) for label in labels]
    scores["class_at_1"] = ranking_metrics(queries, index, same_class, 1)[
        "accuracy_at_1"
    ]
    return scores


def embed(encoder: keras.Model, images: np.ndarray) -> np.ndarray:
    return encoder.predict(images, batch_size=512, verbose=0)


def stacked(encoder: keras.Model, columns: int) -> keras.Model:
    inputs = [keras.Input((28, 28, 1)) for _ in range(columns)]
    return keras.Model(inputs, SiameseWrapper(encoder, merge="stack")(inputs))


def train_epochs(
    encoder: keras.Model,
    images: np.ndarray,
    epochs: range,
    args: argparse.Namespace,
    negatives: str | None,
    symmetric: bool,
) -> float:
    """Train `encoder` for the given epochs (their numbers seed the views).

    `negatives`: `None` (in-batch only), `"mined"` or `"random"` (a view of
    another image drawn uniformly, the control of the mined column).
    """
    model = stacked(encoder, 2 if negatives is None else 3)
    model.compile(
        optimizer=keras.optimizers.Adam(args.lr),
        loss=MultipleNegativesRankingLoss(
            scale=args.scale, symmetric=symmetric, remove_accidental_hits=True
        ),
    )
    ids = np.arange(len(images))
    seconds = 0.0
    for epoch in epochs:
        query_views, positive_views = views(images, seed=1000 * args.seed + epoch)
        start = time.perf_counter()
        if negatives == "random":
            rng = np.random.default_rng(1000 * args.seed + epoch)
            hard = (ids + rng.integers(1, len(ids), len(ids))) % len(ids)
        elif negatives == "mined":
            index = EmbeddingIndex("cosine")
            index.add(embed(encoder, positive_views))
            hard = mine_hard_negatives(
                embed(encoder, query_views), index, positives=ids, k=1
            )[:, 0]
        if negatives is None:
            x, y = [query_views, positive_views], ids
        else:
            x = [query_views, positive_views, positive_views[hard]]
            y = np.stack([ids, hard], axis=1)
        model.fit(x, y, batch_size=args.batch_size, epochs=1, shuffle=True, verbose=0)
        seconds += time.perf_counter() - start
    return seconds


def run_seed(
    args: argparse.Namespace,
    train_images: np.ndarray,
    test_views: tuple[np.ndarray, np.ndarray],
    test_labels: np.ndarray,
) -> dict[str, dict]:
    keras.utils.set_random_seed(args.seed)
    encoder = cnn_encoder(args.embedding_dim)
    results = {
        "untrained encoder": score(
            embed(encoder, test_views[0]), embed(encoder, test_views[1]), test_labels
        )
    }
    warm = train_epochs(
        encoder, train_images, range(args.epochs), args, None, symmetric=False
    )
    checkpoint = encoder.get_weights()
    later = range(args.epochs, args.epochs + args.mined_epochs)
    for name, negatives, symmetric in (
        ("MNRL in-batch", None, False),
        ("MNRL + random negatives", "random", False),
        ("MNRL + mined", "mined", False),
        ("MNRL + mined, symmetric", "mined", True),
    ):
        if symmetric and not args.symmetric:
            continue
        keras.utils.set_random_seed(args.seed + 1)
        encoder.set_weights(checkpoint)
        seconds = train_epochs(encoder, train_images, later, args, negatives, symmetric)
        results[name] = score(
            embed(encoder, test_views[0]), embed(encoder, test_views[1]), test_labels
        )
        results[name]["seconds"] = warm + seconds
        print(f"seed {args.seed}: {name} trained ({warm + seconds:.0f} s)", flush=True)
    return results


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    parser.add_argument(
        "--data", default=str(DEFAULT_DATA), help="a Fashion-MNIST npz (Keras layout)"
    )
    parser.add_argument("--seeds", type=int, nargs="+", default=[0])
    parser.add_argument("--train-size", type=int, default=10000)
    parser.add_argument("--gallery", type=int, default=2000)
    parser.add_argument(
        "--epochs", type=int, default=4, help="in-batch epochs before mining"
    )
    parser.add_argument(
        "--mined-epochs", type=int, default=2, help="epochs of the compared phase"
    )
    parser.add_argument("--batch-size", type=int, default=128)
    parser.add_argument("--embedding-dim", type=int, default=64)
    parser.add_argument("--lr", type=float, default=1e-3)
    parser.add_argument("--scale", type=float, default=20.0)
    parser.add_argument(
        "--no-symmetric",
        dest="symmetric",
        action="store_false",
        help="leave out the symmetric row",
    )
    parser.add_argument("--threads", type=int, default=None)
    parser.add_argument("--no-json", action="store_true")
    args = parser.parse_args()
    set_threads(args.threads)
    x_train, _, x_test, y_test = load_mnist(args.data)
    train_images = x_train[: args.train_size].reshape(-1, 28, 28, 1)
    gallery = x_test[: args.gallery].reshape(-1, 28, 28, 1)
    labels = y_test[: args.gallery]
    test_views = views(gallery, seed=10**6)
    header("Ranking with mined hard negatives: instance retrieval")
    print(
        f"train {len(train_images):,} images: {args.epochs} in-batch epochs, then "
        f"{args.mined_epochs} compared epochs; batch {args.batch_size} rows; "
        f"gallery {len(gallery):,} test images x 2 views; cosine; seeds "
        f"{args.seeds}\n",
        flush=True,
    )
    flat = [v.reshape(len(v), -1) for v in test_views]
    raw = score(flat[0], flat[1], labels)
    runs = []
    for seed in args.seeds:
        args.seed = seed
        runs.append(run_seed(args, train_images, test_views, labels))

    def cell(values: list[float]) -> str:
        values = [100 * v for v in values]
        if len(values) == 1:
            return f"{values[0]:.1f}"
        return f"{statistics.mean(values):.1f} ± {statistics.stdev(values):.1f}"

    rows = [["raw pixels", *(f"{100 * raw[key]:.1f}" for _, key in COLUMNS), "-"]]
    for name in ROWS[1:]:
        if name not in runs[0]:
            continue
        results = [run[name] for run in runs]
        seconds = [r["seconds"] for r in results if "seconds" in r]
        rows.append(
            [
                name,
                *(cell([r[key] for r in results]) for _, key in COLUMNS),
                f"{statistics.median(seconds):.0f}" if seconds else "-",
            ]
        )
    print_table(["encoder", *(f"{title} %" for title, _ in COLUMNS), "train s"], rows)
    del args.seed
    write_json(
        "ranking_demo",
        {"args": vars(args), "raw": raw, "runs": runs},
        enabled=not args.no_json,
    )


if __name__ == "__main__":
    main()
