"""Seed reproduction: the classic Keras `mnist_siamese` contrastive recipe.

The recipe of the Keras example (Hadsell et al. 2006), written with this
package instead of a `Lambda` layer and hand-written loss:

- base network: `Flatten`, three `Dense(128, relu)` with `Dropout(0.1)`
  between them, shared by the two branches (`SiameseWrapper`);
- Euclidean distance `sqrt(max(sum((a - b)**2), 1e-7))` (`EuclideanDistance`
  with `epsilon=1e-7`, the recipe's `K.epsilon()`);
- contrastive loss with margin 1 (`ContrastiveLoss`), RMSprop with its
  defaults, batch 128, 20 epochs;
- pairs as the recipe's `create_pairs`: per class, consecutive examples make
  a positive pair, each followed by a negative with another class
  (`make_pairs`), for both the training and the test split;
- accuracy: a pair is predicted similar when its distance is below 0.5.

The example reports 97.2% test pair accuracy after 20 epochs. Run on each
backend with

    KERAS_BACKEND=jax python benchmarks/mnist_contrastive.py --data mnist.npz

It prints a Markdown table and writes it as JSON under `benchmarks/results/`.
"""

from __future__ import annotations

import argparse
import time

import keras
import numpy as np
from _common import header, load_mnist, print_table, write_json

from keras_siamese import EuclideanDistance, SiameseWrapper
from keras_siamese.data import make_pairs
from keras_siamese.losses import ContrastiveLoss
from keras_siamese.metrics import PairAccuracy

THRESHOLD = 0.5


class EpochTimer(keras.callbacks.Callback):
    """Wall-clock seconds of every epoch, validation included."""

    def __init__(self) -> None:
        super().__init__()
        self.seconds: list[float] = []
        self._start = 0.0

    def on_epoch_begin(self, epoch: int, logs: dict | None = None) -> None:
        self._start = time.perf_counter()

    def on_epoch_end(self, epoch: int, logs: dict | None = None) -> None:
        self.seconds.append(time.perf_counter() - self._start)


def base_network(input_shape: tuple) -> keras.Model:
    return keras.Sequential(
        [
            keras.Input(input_shape),
            keras.layers.Flatten(),
            keras.layers.Dense(128, activation="relu"),
            keras.layers.Dropout(0.1),
            keras.layers.Dense(128, activation="relu"),
            keras.layers.Dropout(0.1),
            keras.layers.Dense(128, activation="relu"),
        ],
        name="base_network",
    )


def pair_accuracy(same: np.ndarray, distances: np.ndarray) -> float:
    """The recipe's `compute_accuracy`: similar iff distance < 0.5."""
    return float(np.mean((distances.ravel() < THRESHOLD) == (same == 1)))


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument(
        "--data", help="mnist.npz in the Keras layout (default: Keras' loader)."
    )
    parser.add_argument("--epochs", type=int, default=20)
    parser.add_argument("--batch-size", type=int, default=128)
    parser.add_argument("--seed", type=int, default=0)
    parser.add_argument("--verbose", type=int, default=2, choices=(0, 1, 2))
    parser.add_argument("--no-json", action="store_true")
    args = parser.parse_args()

    header("MNIST contrastive (Keras mnist_siamese recipe)")
    keras.utils.set_random_seed(args.seed)
    x_train, y_train, x_test, y_test = load_mnist(args.data)
    (train_a, train_b), train_same = make_pairs(x_train, y_train, seed=args.seed)
    (test_a, test_b), test_same = make_pairs(x_test, y_test, seed=args.seed + 1)
    print(f"{len(train_same)} training pairs, {len(test_same)} test pairs")

    input_shape = x_train.shape[1:]
    left, right = keras.Input(input_shape), keras.Input(input_shape)
    siamese = SiameseWrapper(
        base_network(input_shape), merge=EuclideanDistance(epsilon=1e-7)
    )
    model = keras.Model([left, right], siamese([left, right]))
    model.compile(
        loss=ContrastiveLoss(margin=1.0),
        optimizer=keras.optimizers.RMSprop(),
        metrics=[PairAccuracy(threshold=THRESHOLD)],
    )
    timer = EpochTimer()
    model.fit(
        [train_a, train_b],
        train_same,
        batch_size=args.batch_size,
        epochs=args.epochs,
        validation_data=([test_a, test_b], test_same),
        callbacks=[timer],
        verbose=args.verbose,
    )
    train_accuracy = pair_accuracy(
        train_same, model.predict([train_a, train_b], batch_size=1024, verbose=0)
    )
    test_accuracy = pair_accuracy(
        test_same, model.predict([test_a, test_b], batch_size=1024, verbose=0)
    )
    steady = timer.seconds[1:] or timer.seconds
    result = {
        "epochs": args.epochs,
        "batch_size": args.batch_size,
        "train_pair_accuracy": train_accuracy,
        "test_pair_accuracy": test_accuracy,
        "first_epoch_seconds": timer.seconds[0],
        "seconds_per_epoch": float(np.median(steady)),
        "epoch_seconds": timer.seconds,
    }
    print_table(
        [
            "backend",
            "epochs",
            "train pair acc",
            "test pair acc",
            "s/epoch (median)",
            "first epoch s",
        ],
        [
            [
                keras.backend.backend(),
                args.epochs,
                f"{train_accuracy:.2%}",
                f"{test_accuracy:.2%}",
                result["seconds_per_epoch"],
                result["first_epoch_seconds"],
            ]
        ],
    )
    write_json("mnist_contrastive", result, enabled=not args.no_json)


if __name__ == "__main__":
    main()
