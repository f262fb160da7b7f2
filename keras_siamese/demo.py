"""The end-to-end demo behind `python -m keras_siamese`: data, model, training, report.

The pieces are plain functions so that they can be reused and tested on
their own: `load_data` gives flat float32 features in `[0, 1]` with integer
labels, `stratified_split` splits class by class, `build_encoder` makes the
shared embedding network, `build_training` pairs a loss with the matching
model and dataset, and `evaluate` measures the embeddings on held-out data.
"""

from __future__ import annotations

import argparse
import os
import time

import keras
import numpy as np

from keras_siamese.callbacks import EmbeddingPlot
from keras_siamese.data import (
    ClassBalancedDataset,
    PairDataset,
    TripletDataset,
    make_pairs,
)
from keras_siamese.layers import EuclideanDistance, SiameseWrapper
from keras_siamese.losses import ContrastiveLoss, OnlineTripletLoss, TripletLoss
from keras_siamese.metrics import recall_at_k, roc_auc, verification_accuracy

_DEMO_HINT = 'install the demo extras: pip install "keras-siamese[demo]"'
_KERAS_KEYS = ("x_train", "y_train", "x_test", "y_test")


def _flat_unit_range(x: np.ndarray) -> np.ndarray:
    """Flatten to `(n, features)` float32 and scale non-negative data to [0, 1]."""
    x = np.asarray(x).reshape(len(x), -1).astype("float32")
    peak = float(x.max()) if x.size else 0.0
    if x.size and float(x.min()) >= 0 and peak > 1:
        x /= peak
    return x


def stratified_split(
    x: np.ndarray, y: np.ndarray, test_fraction: float = 0.25, seed: int = 0
) -> tuple[np.ndarray, np.ndarray, np.ndarray, np.ndarray]:
    """Split `(x, y)` into train and test sets with the same class proportions.

    Each class is shuffled and `round(test_fraction * count)` of its examples
    (at least one, and at least one left for training) go to the test set.

    Args:
        x: features, examples on axis 0.
        y: 1-D labels.
        test_fraction: fraction of every class held out, in (0, 1).
        seed: seed of the shuffle.

    Returns:
        `(x_train, y_train, x_test, y_test)`, each set in shuffled order.

    Raises:
        ValueError: if `test_fraction` is not in (0, 1), `x` and `y` differ in
            length, or a class has fewer than two examples.

    Examples:
        >>> import numpy as np
        >>> y = np.repeat([0, 1], [8, 4])
        >>> _, y_train, _, y_test = stratified_split(np.zeros((12, 2)), y, 0.25)
        >>> np.bincount(y_train).tolist(), np.bincount(y_test).tolist()
        ([6, 3], [2, 1])
    """
    if not 0 < test_fraction < 1:
        raise ValueError(f"`test_fraction` must be in (0, 1), got {test_fraction}.")
    y = np.asarray(y)
    if len(x) != len(y):
        raise ValueError(
            f"`x` and `y` must have the same length; got {len(x)} and {len(y)}."
        )
    rng = np.random.default_rng(seed)
    train, test = [], []
    for label in np.unique(y):
        members = rng.permutation(np.flatnonzero(y == label))
        if len(members) < 2:
            raise ValueError(
                f"Class {label!r} has {len(members)} example; a stratified split "
                "needs at least two per class."
            )
        held_out = min(max(1, round(test_fraction * len(members))), len(members) - 1)
        test.append(members[:held_out])
        train.append(members[held_out:])
    train_rows = rng.permutation(np.concatenate(train))
    test_rows = rng.permutation(np.concatenate(test))
    return x[train_rows], y[train_rows], x[test_rows], y[test_rows]


def load_data(
    dataset: str = "digits", path: str | None = None, seed: int = 0
) -> tuple[np.ndarray, np.ndarray, np.ndarray, np.ndarray]:
    """Load a labelled data set as flat float32 features in [0, 1].

    Args:
        dataset: `"digits"`, scikit-learn's bundled 8x8 handwritten digits
            (1797 images, no download), split 75/25 by class-stratified
            sampling; or `"mnist"`, `keras.datasets.mnist` with its own split
            (downloaded once and cached by Keras).
        path: a `.npz` file with the Keras layout (`x_train`, `y_train`,
            `x_test`, `y_test`); when given, `dataset` is ignored.
        seed: seed of the digits split.

    Returns:
        `(x_train, y_train, x_test, y_test)` with `x` of shape
        `(n, features)` and integer labels.

    Raises:
        ValueError: for an unknown `dataset` or a `.npz` without the Keras keys.
        ImportError: for `"digits"` without scikit-learn installed.
    """
    if path is not None:
        with np.load(path) as archive:
            missing = [key for key in _KERAS_KEYS if key not in archive]
            if missing:
                raise ValueError(
                    f"{path} lacks {missing}; expected the Keras layout "
                    f"{list(_KERAS_KEYS)}."
                )
            x_train, y_train, x_test, y_test = (archive[key] for key in _KERAS_KEYS)
    elif dataset == "mnist":
        (x_train, y_train), (x_test, y_test) = keras.datasets.mnist.load_data()
    elif dataset == "digits":
        try:
            from sklearn.datasets import load_digits
        except ImportError as error:
            raise ImportError(
                f"The digits data set comes with scikit-learn; {_DEMO_HINT}."
            ) from error
        digits = load_digits()
        x_train, y_train, x_test, y_test = stratified_split(
            digits.images, digits.target, test_fraction=0.25, seed=seed
        )
    else:
        raise ValueError(f"`dataset` must be 'digits' or 'mnist', got {dataset!r}.")
    return (
        _flat_unit_range(x_train),
        np.asarray(y_train).reshape(-1).astype("int64"),
        _flat_unit_range(x_test),
        np.asarray(y_test).reshape(-1).astype("int64"),
    )


def build_encoder(input_dim: int, embedding_dim: int = 32) -> keras.Model:
    """The shared embedding network of the demo: a small MLP.

    Args:
        input_dim: number of input features.
        embedding_dim: size of the embedding.

    Returns:
        A `keras.Sequential` mapping `(batch, input_dim)` to
        `(batch, embedding_dim)`.
    """
    return keras.Sequential(
        [
            keras.Input((input_dim,)),
            keras.layers.Dense(128, activation="relu"),
            keras.layers.Dropout(0.1),
            keras.layers.Dense(128, activation="relu"),
            keras.layers.Dense(embedding_dim),
        ],
        name="encoder",
    )


def build_training(
    loss: str,
    encoder: keras.Model,
    x: np.ndarray,
    y: np.ndarray,
    batch_size: int = 128,
    seed: int = 0,
) -> tuple[keras.Model, keras.utils.PyDataset]:
    """The model to fit and the dataset to fit it on, for one of the recipes.

    Args:
        loss: `"contrastive"` (a pair model, `EuclideanDistance` on top of the
            shared encoder, `ContrastiveLoss(margin=1)` on `PairDataset`
            pairs), `"triplet"` (a triplet model, `TripletLoss` on
            `TripletDataset` triplets), `"batch-hard"` or `"semi-hard"` (the
            encoder itself, `OnlineTripletLoss` on `ClassBalancedDataset`
            batches).
        encoder: the shared embedding network.
        x: training features.
        y: training labels.
        batch_size: pairs, triplets, or examples per batch.
        seed: seed of the dataset.

    Returns:
        `(model, dataset)`, the model compiled with Adam and the loss.

    Raises:
        ValueError: for an unknown `loss`.
    """
    input_shape = tuple(encoder.input_shape[1:])
    if loss == "contrastive":
        left, right = keras.Input(input_shape), keras.Input(input_shape)
        distance = SiameseWrapper(encoder, merge=EuclideanDistance())([left, right])
        model = keras.Model([left, right], distance, name="siamese_pairs")
        dataset = PairDataset(x, y, batch_size=batch_size, seed=seed)
        objective = ContrastiveLoss(margin=1.0)
    elif loss == "triplet":
        inputs = [keras.Input(input_shape) for _ in range(3)]
        stacked = SiameseWrapper(encoder, merge="stack")(inputs)
        model = keras.Model(inputs, stacked, name="siamese_triplets")
        dataset = TripletDataset(x, y, batch_size=batch_size, seed=seed)
        objective = TripletLoss(margin=1.0)
    elif loss in ("batch-hard", "semi-hard"):
        num_classes = len(np.unique(y))
        classes_per_batch = min(num_classes, max(2, batch_size // 8))
        samples_per_class = max(2, batch_size // classes_per_batch)
        model = encoder
        dataset = ClassBalancedDataset(
            x,
            y,
            classes_per_batch=classes_per_batch,
            samples_per_class=samples_per_class,
            seed=seed,
        )
        objective = OnlineTripletLoss(mining=loss.replace("-", "_"), margin=1.0)
    else:
        raise ValueError(
            "`loss` must be 'contrastive', 'triplet', 'batch-hard' or 'semi-hard'; "
            f"got {loss!r}."
        )
    model.compile(optimizer=keras.optimizers.Adam(1e-3), loss=objective)
    return model, dataset


def _pair_distances(
    encoder: keras.Model, x: np.ndarray, y: np.ndarray, seed: int
) -> tuple[np.ndarray, np.ndarray]:
    (left, right), same = make_pairs(x, y, seed=seed)
    a = encoder.predict(left, batch_size=1024, verbose=0)
    b = encoder.predict(right, batch_size=1024, verbose=0)
    return np.linalg.norm(a - b, axis=1), same


def evaluate(
    encoder: keras.Model,
    x_train: np.ndarray,
    y_train: np.ndarray,
    x_test: np.ndarray,
    y_test: np.ndarray,
    seed: int = 0,
) -> dict[str, float]:
    """Measure the embeddings: pair accuracy, ROC AUC and recall@1 on the test set.

    The distance threshold is learned on balanced training pairs (the one
    with the best training accuracy) and then applied, unchanged, to
    balanced test pairs from `make_pairs`. ROC AUC ranks the test pairs by
    distance; recall@1 asks, for each test example, whether its nearest other
    test example has the same class.

    Args:
        encoder: the trained embedding network.
        x_train: training features, for the threshold.
        y_train: training labels.
        x_test: test features.
        y_test: test labels.
        seed: seed of the pairs.

    Returns:
        A dict with `threshold`, `train_pair_accuracy`, `test_pair_accuracy`,
        `test_roc_auc` and `test_recall_at_1`.
    """
    train_distances, train_same = _pair_distances(encoder, x_train, y_train, seed)
    train_accuracy, threshold = verification_accuracy(train_distances, train_same)
    test_distances, test_same = _pair_distances(encoder, x_test, y_test, seed + 1)
    test_accuracy = float(np.mean((test_distances < threshold) == (test_same == 1)))
    embeddings = encoder.predict(x_test, batch_size=1024, verbose=0)
    return {
        "threshold": float(threshold),
        "train_pair_accuracy": float(train_accuracy),
        "test_pair_accuracy": test_accuracy,
        "test_roc_auc": float(roc_auc(test_distances, test_same)),
        "test_recall_at_1": float(recall_at_k(embeddings, y_test, k=1)),
    }


def run(args: argparse.Namespace) -> dict[str, float]:
    """Train and evaluate the demo model described by parsed arguments.

    Args:
        args: the namespace from `keras_siamese.__main__.build_parser()`.

    Returns:
        The metrics of `evaluate`, plus `seconds` spent training.
    """
    keras.utils.set_random_seed(args.seed)
    x_train, y_train, x_test, y_test = load_data(args.dataset, args.data, args.seed)
    if args.max_train is not None:
        x_train, y_train = x_train[: args.max_train], y_train[: args.max_train]
    source = args.data or args.dataset
    print(
        f"keras-siamese demo: {source}, {len(x_train)} train / {len(x_test)} test "
        f"examples, loss={args.loss}, backend={keras.backend.backend()}"
    )
    os.makedirs(args.output, exist_ok=True)
    encoder = build_encoder(x_train.shape[1], args.embedding_dim)
    model, dataset = build_training(
        args.loss, encoder, x_train, y_train, args.batch_size, args.seed
    )
    try:
        plot = EmbeddingPlot(
            encoder,
            x_test,
            y_test,
            every_n_epochs=max(1, args.epochs // 4),
            output_dir=os.path.join(args.output, "embedding_plots"),
            final_grid=True,
            max_points=2000,
            seed=args.seed,
        )
    except ImportError as error:
        plot = None
        print(f"Not plotting embeddings: {error}")

    start = time.perf_counter()
    callbacks = [] if plot is None else [plot]
    model.fit(dataset, epochs=args.epochs, verbose=args.verbose, callbacks=callbacks)
    seconds = time.perf_counter() - start

    metrics = evaluate(encoder, x_train, y_train, x_test, y_test, seed=args.seed)
    metrics["seconds"] = seconds
    model_path = os.path.join(args.output, "model.keras")
    model.save(model_path)
    written = [model_path]
    if plot is not None:
        written.append(plot.save_plot(os.path.join(args.output, "embeddings.png")))

    print(f"\nTrained {args.epochs} epochs in {seconds:.1f} s.")
    print(
        f"Test pair accuracy: {metrics['test_pair_accuracy']:.4f} "
        f"(distance threshold {metrics['threshold']:.4f}, learned on training pairs)"
    )
    print(f"Test ROC AUC:       {metrics['test_roc_auc']:.4f}")
    print(f"Test recall@1:      {metrics['test_recall_at_1']:.4f}")
    for path in written:
        print(f"Wrote {path}")
    return metrics
