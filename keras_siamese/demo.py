"""The end-to-end demo behind `python -m keras_siamese`: data, model, training, report.

The pieces are plain functions so that they can be reused and tested on
their own: `load_data` gives flat float32 features in `[0, 1]` with integer
labels, `stratified_split` splits class by class, `held_out_classes` picks
the classes kept out of training, `shifted_copies` augments small image
sets, `build_encoder` makes the shared embedding network (a `TrunkHead`: a
CNN trunk whose features every measurement uses, and a head that the loss
trains), `build_training` pairs a loss with the matching model and dataset,
`evaluate` measures the embeddings on held-out examples of the training
classes, and `evaluate_unseen` measures them on the held-out classes:
one-shot accuracy, and open-set identification with a calibrated `Verifier`.

By default the demo trains on digits 0-4 only (`--unseen-classes 5`): pair
accuracy, ROC AUC and recall@1 are measured on test examples of those five
classes, and digits 5-9, which the encoder never saw, are the new classes of
the retrieval workflow. `--unseen-classes 0` trains on every class as
releases before 0.2 did.
"""

from __future__ import annotations

import argparse
import os
import time
import warnings

import keras
import numpy as np

from keras_siamese.callbacks import (
    CollapseMonitor,
    EmbeddingCollapseWarning,
    EmbeddingPlot,
)
from keras_siamese.data import (
    ClassBalancedDataset,
    PairDataset,
    TripletDataset,
    make_pairs,
)
from keras_siamese.layers import EuclideanDistance, SiameseWrapper, TrunkHead, trunk_of
from keras_siamese.losses import (
    CircleLoss,
    ContrastiveLoss,
    MultiSimilarityLoss,
    NTXentLoss,
    OnlineTripletLoss,
    SupervisedContrastiveLoss,
    TripletLoss,
)
from keras_siamese.metrics import recall_at_k, roc_auc, verification_accuracy
from keras_siamese.retrieval import (
    Calibration,
    EmbeddingIndex,
    Verifier,
    calibrate_threshold,
    one_shot_accuracy,
)

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


#: Small training sets of images are augmented with `shifted_copies`.
_AUGMENT_UP_TO = 10_000


def _image_side(input_dim: int) -> int | None:
    side = round(input_dim**0.5)
    return side if side * side == input_dim and side >= 2 else None


def shifted_copies(x: np.ndarray, y: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
    """Square images and their copies shifted by one pixel up, down, left, right.

    The augmentation of the demo: the shifted copies (vacated pixels 0)
    teach the encoder that a small shift keeps the class. Precomputed once,
    they cost nothing per training step, unlike a `RandomTranslation` layer
    (an interpolating resampler, which on the JAX and PyTorch CPU backends
    took 5 times as long per step as the rest of the network).

    Args:
        x: flat images `(n, side * side)`.
        y: their labels.

    Returns:
        `(x_augmented, y_augmented)`: the `n` originals, then the four shifted
        copies of each, `5 * n` rows.

    Raises:
        ValueError: if the rows of `x` are not square images.

    Examples:
        >>> x = np.arange(4, dtype="float32").reshape(1, 4)
        >>> x_aug, y_aug = shifted_copies(x, np.array([7]))
        >>> x_aug.reshape(5, 2, 2)[1].tolist(), y_aug.tolist()
        ([[2.0, 3.0], [0.0, 0.0]], [7, 7, 7, 7, 7])
    """
    side = _image_side(x.shape[1])
    if side is None:
        raise ValueError(
            f"`x` must hold flat square images; {x.shape[1]} features is not "
            "side * side."
        )
    images = x.reshape(len(x), side, side)
    copies = [images]
    for axis in (1, 2):
        for step in (-1, 1):
            moved = np.roll(images, step, axis=axis)
            vacated = 0 if step == 1 else -1
            if axis == 1:
                moved[:, vacated, :] = 0
            else:
                moved[:, :, vacated] = 0
            copies.append(moved)
    x_aug = np.concatenate(copies).reshape(len(copies) * len(x), side * side)
    return x_aug, np.tile(np.asarray(y), len(copies))


def build_encoder(input_dim: int, embedding_dim: int = 32) -> TrunkHead:
    """The shared embedding network of the demo: a small CNN trunk and a head.

    Square inputs (`input_dim` = side * side, e.g. the 8x8 digits or 28x28
    MNIST) are reshaped to one-channel images: the trunk is two 3x3
    convolutions (16 and 32 filters; a 2x2 max-pool after the first when the
    side is above 8) and a 2x2 max-pool, flattened. Other inputs get a
    two-layer MLP trunk. The head, two dense layers, gives the
    `embedding_dim`-sized output that the loss trains; the retrieval side
    (`EmbeddingIndex`, `Verifier`, `evaluate`, `evaluate_unseen`, the plot)
    uses the trunk's features, which transfer better to the classes held out
    of training.

    Args:
        input_dim: number of input features.
        embedding_dim: size of the head's output.

    Returns:
        A `TrunkHead` mapping `(batch, input_dim)` to `(batch, embedding_dim)`;
        its `trunk` maps to the retrieval features.
    """
    inputs = keras.Input((input_dim,))
    side = _image_side(input_dim)
    if side is None:
        hidden = keras.layers.Dense(128, activation="relu")(inputs)
        features = keras.layers.Dense(128, activation="relu")(hidden)
    else:
        hidden = keras.layers.Reshape((side, side, 1))(inputs)
        hidden = keras.layers.Conv2D(16, 3, padding="same", activation="relu")(hidden)
        if side > 8:
            hidden = keras.layers.MaxPooling2D(2)(hidden)
        hidden = keras.layers.Conv2D(32, 3, padding="same", activation="relu")(hidden)
        if min(hidden.shape[1:3]) >= 2:
            hidden = keras.layers.MaxPooling2D(2)(hidden)
        features = keras.layers.Flatten()(hidden)
    trunk = keras.Model(inputs, features, name="trunk")
    head = keras.Sequential(
        [
            keras.Input(tuple(features.shape[1:])),
            keras.layers.Dense(128, activation="relu"),
            keras.layers.Dense(embedding_dim),
        ],
        name="head",
    )
    return TrunkHead(trunk, head, name="encoder")


#: The losses on class-balanced batches of labelled examples, by demo name.
_BATCH_LOSSES = {
    "batch-hard": lambda: OnlineTripletLoss(mining="batch_hard", soft=True),
    "semi-hard": lambda: OnlineTripletLoss(mining="semi_hard", margin=1.0),
    "supcon": SupervisedContrastiveLoss,
    "multi-similarity": MultiSimilarityLoss,
    "circle": CircleLoss,
    "ntxent": NTXentLoss,
}


def build_training(
    loss: str,
    encoder: keras.Model,
    x: np.ndarray,
    y: np.ndarray,
    batch_size: int = 128,
    seed: int = 0,
    steps_per_epoch: int | None = None,
) -> tuple[keras.Model, keras.utils.PyDataset]:
    """The model to fit and the dataset to fit it on, for one of the recipes.

    Args:
        loss: `"contrastive"` (a pair model, `EuclideanDistance` on top of the
            shared encoder, `ContrastiveLoss(margin=1)` on `PairDataset`
            pairs), `"triplet"` (a triplet model, `TripletLoss` on
            `TripletDataset` triplets), or a loss trained on the encoder
            itself with `ClassBalancedDataset` batches: `"batch-hard"`
            (`OnlineTripletLoss` with the soft margin, which does not
            collapse), `"semi-hard"` (`OnlineTripletLoss`, margin 1),
            `"supcon"` (`SupervisedContrastiveLoss`), `"multi-similarity"`
            (`MultiSimilarityLoss`), `"circle"` (`CircleLoss`) or `"ntxent"`
            (`NTXentLoss`, the examples of a class as views of each other).
        encoder: the shared embedding network.
        x: training features.
        y: training labels.
        batch_size: pairs, triplets, or examples per batch.
        seed: seed of the dataset.
        steps_per_epoch: batches per epoch; by default the dataset's own.

    Returns:
        `(model, dataset)`, the model compiled with Adam and the loss.

    Raises:
        ValueError: for an unknown `loss`.
    """
    input_shape = tuple(trunk_of(encoder).input_shape[1:])
    if loss == "contrastive":
        left, right = keras.Input(input_shape), keras.Input(input_shape)
        distance = SiameseWrapper(encoder, merge=EuclideanDistance())([left, right])
        model = keras.Model([left, right], distance, name="siamese_pairs")
        dataset = PairDataset(
            x, y, batch_size=batch_size, steps_per_epoch=steps_per_epoch, seed=seed
        )
        objective = ContrastiveLoss(margin=1.0)
    elif loss == "triplet":
        inputs = [keras.Input(input_shape) for _ in range(3)]
        stacked = SiameseWrapper(encoder, merge="stack")(inputs)
        model = keras.Model(inputs, stacked, name="siamese_triplets")
        dataset = TripletDataset(
            x, y, batch_size=batch_size, steps_per_epoch=steps_per_epoch, seed=seed
        )
        objective = TripletLoss(margin=1.0)
    elif loss in _BATCH_LOSSES:
        num_classes = len(np.unique(y))
        classes_per_batch = min(num_classes, max(2, batch_size // 8))
        samples_per_class = max(2, batch_size // classes_per_batch)
        model = encoder
        dataset = ClassBalancedDataset(
            x,
            y,
            classes_per_batch=classes_per_batch,
            samples_per_class=samples_per_class,
            steps_per_epoch=steps_per_epoch,
            seed=seed,
        )
        objective = _BATCH_LOSSES[loss]()
    else:
        raise ValueError(
            f"`loss` must be one of {['contrastive', 'triplet', *_BATCH_LOSSES]}; "
            f"got {loss!r}."
        )
    model.compile(optimizer=keras.optimizers.Adam(1e-3), loss=objective)
    return model, dataset


def _pair_distances(
    encoder: keras.Model, x: np.ndarray, y: np.ndarray, seed: int
) -> tuple[np.ndarray, np.ndarray]:
    (left, right), same = make_pairs(x, y, seed=seed)
    a = trunk_of(encoder).predict(left, batch_size=1024, verbose=0)
    b = trunk_of(encoder).predict(right, batch_size=1024, verbose=0)
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
    test example has the same class. A `TrunkHead` is measured on its
    trunk's features.

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
    embeddings = trunk_of(encoder).predict(x_test, batch_size=1024, verbose=0)
    return {
        "threshold": float(threshold),
        "train_pair_accuracy": float(train_accuracy),
        "test_pair_accuracy": test_accuracy,
        "test_roc_auc": float(roc_auc(test_distances, test_same)),
        "test_recall_at_1": float(recall_at_k(embeddings, y_test, k=1)),
    }


def held_out_classes(y: np.ndarray, count: int) -> np.ndarray:
    """The `count` largest labels of `y`, kept out of training.

    Args:
        y: all labels of the data set.
        count: how many classes to hold out; 0 for none.

    Returns:
        The held-out labels, in increasing order.

    Raises:
        ValueError: unless at least two classes are left for training, and
            `count` is 0 or at least 2.

    Examples:
        >>> held_out_classes(np.arange(10), 5).tolist()
        [5, 6, 7, 8, 9]
    """
    classes = np.unique(y)
    if count == 1 or count < 0:
        raise ValueError(f"Hold out 0 or at least 2 classes; got {count}.")
    if len(classes) - count < 2:
        raise ValueError(
            f"Holding out {count} of {len(classes)} classes leaves fewer than two "
            "to train on."
        )
    return classes[len(classes) - count :]


def calibrate_open_set(
    verifier: Verifier,
    x_train: np.ndarray,
    y_train: np.ndarray,
    x_test: np.ndarray,
    y_test: np.ndarray,
    far: float = 0.01,
) -> Calibration:
    """Calibrate the verifier's threshold for open-set identification.

    A rehearsal on the training classes: the training examples of the first
    half of them are enrolled, and every test example is identified by its
    nearest enrolled example. The threshold is the largest that accepts at
    most `far` of the queries whose class is not enrolled
    (`calibrate_threshold`, target `"far"`); a pair threshold would be too
    loose, since a query's nearest neighbour in a large gallery is nearer
    than a typical pair. Classes never trained on lie less tightly around
    their examples than the training classes, so the most accurate
    threshold of the rehearsal rejects too many of their genuine queries:
    the largest threshold that still turns strangers away keeps them.

    Args:
        verifier: the verifier to calibrate (its gallery is left as it is).
        x_train: training examples.
        y_train: their labels.
        x_test: test examples of the same classes.
        y_test: their labels.
        far: the fraction of the rehearsal's strangers the threshold may
            accept.

    Returns:
        The `Calibration`, also stored in the verifier.
    """
    classes = np.unique(y_train)
    enrolled = classes[: max(1, len(classes) // 2)]
    members = np.isin(y_train, enrolled)
    index = EmbeddingIndex.from_encoder(
        verifier.encoder,
        x_train[members],
        y_train[members],
        batch_size=1024,
        verbose=0,
        distance=verifier.distance,
    )
    distances, _ = index.search(verifier.embed(x_test), k=1)
    calibration = calibrate_threshold(
        distances[:, 0], np.isin(y_test, enrolled), target="far", value=far
    )
    verifier.calibration = calibration
    verifier.threshold = calibration.threshold
    return calibration


def evaluate_unseen(
    encoder: keras.Model,
    verifier: Verifier,
    x_enroll: np.ndarray,
    y_enroll: np.ndarray,
    x_query: np.ndarray,
    y_query: np.ndarray,
    seed: int = 0,
) -> dict[str, float]:
    """One-shot accuracy and open-set identification on classes never trained on.

    One-shot: `one_shot_accuracy` over the embeddings of all the examples
    given, with `min(5, classes)` ways, one shot and 1000 episodes. Open
    set: the first `classes - classes // 2` classes are enrolled (their
    `x_enroll` examples form the verifier's gallery); every `x_query` example
    is then identified with the verifier's calibrated threshold, and should
    get its label if its class is enrolled, or "unknown" (-1) if not. A
    `TrunkHead` is measured on its trunk's features.

    Args:
        encoder: the trained embedding network.
        verifier: a `Verifier` of `encoder` with a calibrated threshold; the
            enrolled examples are added to its gallery.
        x_enroll: examples of the unseen classes to enrol.
        y_enroll: their labels.
        x_query: other examples of the unseen classes, to identify.
        y_query: their labels.
        seed: seed of the one-shot episodes.

    Returns:
        A dict with `one_shot_accuracy` (and `one_shot_accuracy_raw_inputs`,
        the same episodes on the inputs themselves), `one_shot_ways`,
        `enrolled_classes`,
        `identification_rate` (enrolled-class queries labelled correctly) and
        `rejection_rate` (other queries labelled unknown).
    """
    classes = np.unique(np.concatenate([y_enroll, y_query]))
    ways = min(5, len(classes))
    embeddings = trunk_of(encoder).predict(
        np.concatenate([x_enroll, x_query]), batch_size=1024, verbose=0
    )
    one_shot = one_shot_accuracy(
        embeddings,
        np.concatenate([y_enroll, y_query]),
        ways=ways,
        shots=1,
        episodes=1000,
        seed=seed,
    )
    # The same episodes on the raw inputs: what the encoder adds (or loses)
    # on classes it never saw.
    pixels = one_shot_accuracy(
        np.concatenate([x_enroll, x_query]).reshape(len(embeddings), -1),
        np.concatenate([y_enroll, y_query]),
        ways=ways,
        shots=1,
        episodes=1000,
        seed=seed,
    )
    enrolled = classes[: len(classes) - len(classes) // 2]
    members = np.isin(y_enroll, enrolled)
    verifier.enroll(x_enroll[members], y_enroll[members])
    predicted = verifier.identify(x_query)
    known = np.isin(y_query, enrolled)
    return {
        "one_shot_accuracy": float(one_shot),
        "one_shot_accuracy_raw_inputs": float(pixels),
        "one_shot_ways": ways,
        "enrolled_classes": len(enrolled),
        "identification_rate": float(np.mean(predicted[known] == y_query[known])),
        "rejection_rate": float(np.mean(predicted[~known] == -1)),
    }


def _collapse_report(monitor: CollapseMonitor) -> str:
    """One line on whether the trained embeddings collapsed, for the output."""
    initial = monitor.initial_spread or 0.0
    final = monitor.spreads[-1][2]
    if monitor.collapsed_at is None:
        return (
            f"Collapse check: no collapse (spread of the head's embeddings of "
            f"{len(monitor.x)} training examples {initial:.4g} -> {final:.4g})."
        )
    epoch, batch = monitor.collapsed_at
    where = "the start" if batch == -1 else f"epoch {epoch + 1}"
    ratio = final / initial if initial else 0.0
    return (
        f"WARNING: embedding collapse at {where}: the spread of the head's "
        f"embeddings fell to {ratio:.1%} of its start ({initial:.4g} -> "
        f"{final:.4g}); the encoder maps every input to nearly the same point "
        "and the results below are those of a collapsed encoder. Try another "
        "--loss (e.g. supcon or contrastive)."
    )


def run(args: argparse.Namespace) -> dict[str, float]:
    """Train and evaluate the demo model described by parsed arguments.

    The encoder is `build_encoder`'s `TrunkHead`: the loss trains its head's
    output, and every measurement uses its trunk's features. A
    `CollapseMonitor` watches the head's embeddings of training examples
    during training; the output says whether they collapsed.

    Args:
        args: the namespace from `keras_siamese.__main__.build_parser()`.

    Returns:
        The metrics of `evaluate`, plus `seconds` spent training,
        `cpu_seconds` (process CPU time of the training), `collapsed`
        (1.0 if the embeddings collapsed, else 0.0) and, when classes are
        held out, those of `evaluate_unseen` prefixed `unseen_`.
    """
    keras.utils.set_random_seed(args.seed)
    x_train, y_train, x_test, y_test = load_data(args.dataset, args.data, args.seed)
    unseen = held_out_classes(np.concatenate([y_train, y_test]), args.unseen_classes)
    train_new, test_new = np.isin(y_train, unseen), np.isin(y_test, unseen)
    x_enroll, y_enroll = x_train[train_new], y_train[train_new]
    x_query, y_query = x_test[test_new], y_test[test_new]
    x_train, y_train = x_train[~train_new], y_train[~train_new]
    x_test, y_test = x_test[~test_new], y_test[~test_new]
    if args.max_train is not None:
        x_train, y_train = x_train[: args.max_train], y_train[: args.max_train]
    source = args.data or args.dataset
    seen = np.unique(y_train).tolist()
    print(
        f"keras-siamese demo: {source}, {len(x_train)} train / {len(x_test)} test "
        f"examples of classes {seen}, loss={args.loss}, "
        f"backend={keras.backend.backend()}"
    )
    if len(unseen):
        print(
            f"Held out of training: classes {unseen.tolist()} ({len(x_enroll)} + "
            f"{len(x_query)} examples)"
        )
    os.makedirs(args.output, exist_ok=True)
    encoder = build_encoder(x_train.shape[1], args.embedding_dim)
    x_fit, y_fit = x_train, y_train
    if _image_side(x_train.shape[1]) and len(x_train) <= _AUGMENT_UP_TO:
        x_fit, y_fit = shifted_copies(x_train, y_train)
        print(
            f"Training on {len(x_fit)} images: the {len(x_train)} and their "
            "copies shifted by one pixel."
        )
    model, dataset = build_training(
        args.loss,
        encoder,
        x_fit,
        y_fit,
        args.batch_size,
        args.seed,
        steps_per_epoch=args.steps_per_epoch,
    )
    rng = np.random.default_rng(args.seed)
    probe = x_train[rng.permutation(len(x_train))[:256]]
    monitor = CollapseMonitor(probe, encoder=encoder)
    callbacks: list[keras.callbacks.Callback] = [monitor]
    try:
        # The test examples of the training classes and of the held-out ones.
        plot = EmbeddingPlot(
            encoder,
            np.concatenate([x_test, x_query]),
            np.concatenate([y_test, y_query]),
            every_n_epochs=max(1, args.epochs // 4),
            output_dir=os.path.join(args.output, "embedding_plots"),
            final_grid=True,
            max_points=2000,
            seed=args.seed,
            unseen_classes=unseen,
        )
        callbacks.append(plot)
    except ImportError as error:
        plot = None
        print(f"Not plotting embeddings: {error}")

    start, cpu_start = time.perf_counter(), time.process_time()
    with warnings.catch_warnings():
        # Reported by `_collapse_report`, in the output, after training.
        warnings.simplefilter("ignore", EmbeddingCollapseWarning)
        model.fit(
            dataset, epochs=args.epochs, verbose=args.verbose, callbacks=callbacks
        )
    seconds = time.perf_counter() - start
    cpu_seconds = time.process_time() - cpu_start

    metrics = evaluate(encoder, x_train, y_train, x_test, y_test, seed=args.seed)
    metrics["seconds"] = seconds
    metrics["cpu_seconds"] = cpu_seconds
    metrics["collapsed"] = float(monitor.collapsed_at is not None)
    model_path = os.path.join(args.output, "model.keras")
    model.save(model_path)
    written = [model_path]

    # The retrieval workflow: a threshold calibrated on the training classes,
    # then one-shot and open-set identification on the classes never trained on.
    verifier = Verifier(encoder, distance="euclidean")
    calibrate_open_set(verifier, x_train, y_train, x_test, y_test)
    if len(unseen):
        unseen_metrics = evaluate_unseen(
            encoder, verifier, x_enroll, y_enroll, x_query, y_query, seed=args.seed
        )
        metrics.update(
            {f"unseen_{key}": value for key, value in unseen_metrics.items()}
        )
    else:
        verifier.enroll(x_train, y_train)
    index_path = os.path.join(args.output, "index")
    verifier.save(index_path)
    written.append(index_path)
    if plot is not None:
        written.append(plot.save_plot(os.path.join(args.output, "embeddings.png")))

    steps = args.epochs * len(dataset)
    print(
        f"\nTrained {args.epochs} epochs ({steps} batches) in {seconds:.1f} s "
        f"({cpu_seconds:.1f} s CPU time)."
    )
    print(_collapse_report(monitor))
    print(
        "Measured on the trunk's features (the loss trains the head's "
        f"{args.embedding_dim}-d output):"
    )
    print(
        f"Test pair accuracy: {metrics['test_pair_accuracy']:.4f} "
        f"(distance threshold {metrics['threshold']:.4f}, learned on training pairs)"
    )
    print(f"Test ROC AUC:       {metrics['test_roc_auc']:.4f}")
    print(f"Test recall@1:      {metrics['test_recall_at_1']:.4f}")
    if len(unseen):
        ways = metrics["unseen_one_shot_ways"]
        enrolled = metrics["unseen_enrolled_classes"]
        trained = metrics["unseen_one_shot_accuracy"]
        raw = metrics["unseen_one_shot_accuracy_raw_inputs"]
        verdict = "better than" if trained > raw else "NOT better than"
        print(
            f"Unseen classes {unseen.tolist()}: one-shot {ways}-way accuracy "
            f"{trained:.4f} (1000 episodes; chance {1 / ways:.4f}, raw inputs "
            f"{raw:.4f}: {verdict} the raw inputs)"
        )
        print(
            f"Open-set identification (threshold {verifier.threshold:.4f}, "
            f"calibrated on the training classes; {enrolled} unseen classes "
            "enrolled): "
            f"{metrics['unseen_identification_rate']:.4f} of their test examples "
            f"identified, {metrics['unseen_rejection_rate']:.4f} of the other "
            f"{len(unseen) - enrolled} classes' rejected as unknown"
        )
    for path in written:
        print(f"Wrote {path}")
    return metrics
