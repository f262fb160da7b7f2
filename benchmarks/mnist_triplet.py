"""Seed reproduction: the triplet-loss MNIST notebook, two ways.

The notebook trains `Dense(64, relu) -> Dense(64, sigmoid)` on flattened
MNIST with Adam, batches of 1024 random triplets (58 per epoch, 10 epochs)
and the loss `max(mean((a - p)**2) - mean((a - n)**2) + 0.2, 0)`, averaging
the squared difference over the 64 embedding dimensions. This package's
losses use the summed squared distance, which is 64 times larger, so the
same objective is `TripletLoss(margin=0.2 * 64, distance="squared_euclidean")`
(64 times the notebook's loss; Adam's updates do not change when the loss is
scaled by a constant). Two recipes are trained from the same initial weights:

- `triplets`: `TripletDataset` (random triplets, drawn fresh every epoch
  with vectorised sampling instead of the notebook's per-example Python
  loop) and `TripletLoss` on a three-branch `SiameseWrapper` model;
- `batch_hard`: `ClassBalancedDataset` batches of 10 classes x 4 examples
  (1,500 per epoch: every training image is an anchor about once) and
  `OnlineTripletLoss(mining="batch_hard", margin=0.2, distance="euclidean")`
  on the embedding model itself. The notebook's margin, but on the plain
  Euclidean distance and with small P x K batches, as Hermans et al. (2017)
  train (P x K = 18 x 4, Euclidean). With this sigmoid embedding model,
  batch-hard mining collapsed every embedding to one point (the loss sticks
  at the margin, recall@1 at chance) in every trial on the squared distance
  with margin 12.8, and on the Euclidean distance with 8 or more examples per
  class; a collapsed model has zero gradient, so it never recovers;
- `semi_hard` (not run by default, `--recipes semi_hard`): batches of
  10 classes x 102 examples with `OnlineTripletLoss(mining="semi_hard")` and
  the notebook's objective; FaceNet's semi-hard negatives avoid the collapse
  at that batch size, at a higher cost per step.

Both are evaluated on the MNIST test split: recall@1 (is the nearest other
test image of the same digit?) and pair accuracy on balanced test pairs
(`make_pairs`, squared Euclidean distances) at the threshold with the best
accuracy on 20,000 balanced training pairs. Run on each backend with

    KERAS_BACKEND=jax python benchmarks/mnist_triplet.py --data mnist.npz
"""

from __future__ import annotations

import argparse
import time

import keras
import numpy as np
from _common import header, load_mnist, print_table, write_json

from keras_siamese import SiameseWrapper
from keras_siamese.data import ClassBalancedDataset, TripletDataset, make_pairs
from keras_siamese.losses import OnlineTripletLoss, TripletLoss
from keras_siamese.metrics import recall_at_k, verification_accuracy

EMBEDDING_DIM = 64
ALPHA = 0.2
BATCH_SIZE = 1024
STEPS_PER_EPOCH = 60000 // BATCH_SIZE


def load_flat_mnist(path: str | None) -> tuple:
    """Flattened MNIST in [0, 1] (the notebook's preprocessing)."""
    x_train, y_train, x_test, y_test = load_mnist(path)
    return (
        x_train.reshape(len(x_train), -1),
        y_train,
        x_test.reshape(len(x_test), -1),
        y_test,
    )


def embedding_model() -> keras.Model:
    return keras.Sequential(
        [
            keras.Input((784,)),
            keras.layers.Dense(64, activation="relu"),
            keras.layers.Dense(EMBEDDING_DIM, activation="sigmoid"),
        ],
        name="embedding_model",
    )


def seed_loss_objective(**kwargs: object) -> dict:
    """Margin and distance equal to the notebook's loss, up to a factor 64."""
    return {"margin": ALPHA * EMBEDDING_DIM, "distance": "squared_euclidean", **kwargs}


def train_triplets(x: np.ndarray, y: np.ndarray, seed: int) -> tuple:
    encoder = embedding_model()
    inputs = [keras.Input((784,)) for _ in range(3)]
    model = keras.Model(inputs, SiameseWrapper(encoder, merge="stack")(inputs))
    model.compile(optimizer="adam", loss=TripletLoss(**seed_loss_objective()))
    data = TripletDataset(
        x, y, batch_size=BATCH_SIZE, steps_per_epoch=STEPS_PER_EPOCH, seed=seed
    )
    return encoder, model, data


def train_batch_hard(x: np.ndarray, y: np.ndarray, seed: int) -> tuple:
    encoder = embedding_model()
    encoder.compile(
        optimizer="adam",
        loss=OnlineTripletLoss(mining="batch_hard", margin=ALPHA, distance="euclidean"),
    )
    data = ClassBalancedDataset(
        x,
        y,
        classes_per_batch=10,
        samples_per_class=4,
        steps_per_epoch=len(x) // 40,
        seed=seed,
    )
    return encoder, encoder, data


def train_semi_hard(x: np.ndarray, y: np.ndarray, seed: int) -> tuple:
    encoder = embedding_model()
    encoder.compile(
        optimizer="adam",
        loss=OnlineTripletLoss(**seed_loss_objective(mining="semi_hard")),
    )
    data = ClassBalancedDataset(
        x,
        y,
        classes_per_batch=10,
        samples_per_class=BATCH_SIZE // 10,
        steps_per_epoch=STEPS_PER_EPOCH,
        seed=seed,
    )
    return encoder, encoder, data


RECIPES = {
    "triplets": train_triplets,
    "batch_hard": train_batch_hard,
    "semi_hard": train_semi_hard,
}
DEFAULT_RECIPES = ["triplets", "batch_hard"]


def pair_distances(
    encoder: keras.Model, x: np.ndarray, y: np.ndarray, seed: int
) -> tuple[np.ndarray, np.ndarray]:
    # 1000 positives and 1000 negatives per class: plenty for a threshold.
    per_class = min(1000, int(np.bincount(y).min()) - 1)
    (left, right), same = make_pairs(x, y, seed=seed, pairs_per_class=per_class)
    a = encoder.predict(left, batch_size=4096, verbose=0)
    b = encoder.predict(right, batch_size=4096, verbose=0)
    return np.sum((a - b) ** 2, axis=1), same


def evaluate(encoder: keras.Model, data: tuple, seed: int) -> dict:
    x_train, y_train, x_test, y_test = data
    train_distances, train_same = pair_distances(encoder, x_train, y_train, seed)
    _, threshold = verification_accuracy(train_distances, train_same)
    test_distances, test_same = pair_distances(encoder, x_test, y_test, seed + 1)
    test_accuracy = float(np.mean((test_distances < threshold) == (test_same == 1)))
    embeddings = encoder.predict(x_test, batch_size=4096, verbose=0)
    return {
        "test_recall_at_1": float(recall_at_k(embeddings, y_test, k=1)),
        "test_pair_accuracy": test_accuracy,
        "threshold": float(threshold),
    }


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument(
        "--data", help="mnist.npz in the Keras layout (default: Keras' loader)."
    )
    parser.add_argument("--epochs", type=int, default=10)
    parser.add_argument("--seed", type=int, default=0)
    parser.add_argument(
        "--recipes", nargs="+", choices=sorted(RECIPES), default=DEFAULT_RECIPES
    )
    parser.add_argument("--verbose", type=int, default=2, choices=(0, 1, 2))
    parser.add_argument("--no-json", action="store_true")
    args = parser.parse_args()

    header("MNIST triplet (seed notebook)")
    data = load_flat_mnist(args.data)
    x_train, y_train = data[0], data[1]
    rows, results = [], {}
    for name in args.recipes:
        keras.utils.set_random_seed(args.seed)
        encoder, model, dataset = RECIPES[name](x_train, y_train, args.seed)
        print(f"\n### {name}", flush=True)
        start = time.perf_counter()
        model.fit(dataset, epochs=args.epochs, verbose=args.verbose)
        seconds = time.perf_counter() - start
        metrics = evaluate(encoder, data, args.seed)
        metrics["seconds_per_epoch"] = seconds / args.epochs
        metrics["epochs"] = args.epochs
        results[name] = metrics
        rows.append(
            [
                keras.backend.backend(),
                name,
                args.epochs,
                f"{metrics['test_recall_at_1']:.2%}",
                f"{metrics['test_pair_accuracy']:.2%}",
                metrics["seconds_per_epoch"],
            ]
        )
    print_table(
        ["backend", "recipe", "epochs", "test recall@1", "test pair acc", "s/epoch"],
        rows,
    )
    write_json("mnist_triplet", results, enabled=not args.no_json)


if __name__ == "__main__":
    main()
