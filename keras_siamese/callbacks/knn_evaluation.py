"""`KNNEvaluation`: weighted k-nearest-neighbour accuracy in `fit`'s logs."""

from __future__ import annotations

from typing import Any

import keras
import numpy as np

from keras_siamese import distances
from keras_siamese._checks import (
    check_embeddings,
    check_float,
    check_labels,
    check_positive_int,
)
from keras_siamese.layers import trunk_of
from keras_siamese.retrieval._engines import check_engine_setting
from keras_siamese.retrieval._search import (
    DEFAULT_BLOCK_BYTES,
    PreparedGallery,
    search_blocks,
)


def _required_labels(labels: Any, count: int, argument: str) -> np.ndarray:
    if labels is None:
        raise ValueError(
            f"`{argument}` must be given: k-NN classification needs one class "
            "label per row."
        )
    return check_labels(labels, count, argument)


def _classes(
    labels: np.ndarray, num_classes: int | None
) -> tuple[np.ndarray, np.ndarray]:
    """The classes and the class index of every label.

    With `num_classes`, the classes are `0, ..., num_classes - 1` and the
    labels must be among them; otherwise they are the distinct labels,
    sorted (in order of first appearance for labels that do not sort).
    """
    if num_classes is not None:
        num_classes = check_positive_int(num_classes, "num_classes")
        if labels.dtype.kind not in "iuf" or np.any(labels != np.floor(labels)):
            raise ValueError(
                "With `num_classes`, `reference_labels` must be integer class "
                f"indices; got dtype {labels.dtype}."
            )
        outside = labels[(labels < 0) | (labels >= num_classes)]
        if outside.size:
            raise ValueError(
                f"`reference_labels` must be in [0, {num_classes}) for "
                f"`num_classes={num_classes}`; got {outside[:5].tolist()}."
            )
        return np.arange(num_classes), labels.astype(np.int64)
    try:
        classes, codes = np.unique(labels, return_inverse=True)
    except TypeError:
        first = dict.fromkeys(labels.tolist())
        classes = np.empty(len(first), dtype=object)
        classes[:] = list(first)
        position = {label: code for code, label in enumerate(first)}
        codes = np.asarray([position[label] for label in labels.tolist()])
    return classes, codes.reshape(-1).astype(np.int64)


def _vote(
    similarities: np.ndarray, codes: np.ndarray, num_classes: int, temperature: float
) -> np.ndarray:
    """The class index with the largest sum of `exp(sim / temperature)` per row.

    Each row's weights are divided by `exp(max sim / temperature)` first: the
    same winner, without overflow at small temperatures. Ties go to the
    lower class index.
    """
    rows = codes.shape[0]
    weights = np.exp(
        (similarities - similarities.max(axis=1, keepdims=True)) / temperature
    )
    keys = np.arange(rows, dtype=np.int64)[:, None] * num_classes + codes
    unique, inverse = np.unique(keys.ravel(), return_inverse=True)
    totals = np.bincount(inverse.ravel(), weights=weights.ravel())
    row_of, class_of = unique // num_classes, unique % num_classes
    order = np.lexsort((class_of, -totals, row_of))
    first = np.ones(order.size, dtype=bool)
    first[1:] = row_of[order][1:] != row_of[order][:-1]
    return class_of[order][first]


def knn_predict(
    embeddings: Any,
    references: Any,
    reference_labels: Any,
    num_classes: int | None = None,
    k: int = 200,
    temperature: float = 0.1,
    block_bytes: int = DEFAULT_BLOCK_BYTES,
) -> np.ndarray:
    """Weighted k-nearest-neighbour class predictions of embeddings.

    The k-NN monitor of self-supervised learning (Wu et al. 2018; lightly's
    `knn_predict`): embeddings and references are L2-normalised, each
    embedding's `k` references of highest cosine similarity `s` each vote
    for their class with weight `exp(s / temperature)`, and the class with
    the largest total wins. The references are searched exactly, in blocks
    of at most `block_bytes` of scores on the backend (as
    `EmbeddingIndex` searches), so 60,000 references or more need no
    `(n, references)` matrix; similarities are then recomputed in float64
    on the host. Ties are broken deterministically on every backend:
    between equally similar references by the lower reference index, and
    between classes of equal total by the class that sorts first. With
    fewer than `k` references, all of them vote. Zero embeddings have
    similarity 0 to everything.

    Args:
        embeddings: `(n, dim)` embeddings to classify.
        references: `(m, dim)` reference embeddings (a memory bank of the
            training set), `m >= 1`.
        reference_labels: their class labels, `(m,)`: integers, strings or
            other hashable labels of one kind.
        num_classes: optionally, the number of classes; the labels must then
            be integers in `[0, num_classes)`. It changes no prediction.
        k: the number of neighbours that vote, default 200.
        temperature: the temperature of the vote weights, default 0.1.
        block_bytes: memory budget of one block of scores on the backend.

    Returns:
        `(n,)` predicted labels, values of `reference_labels`.

    Raises:
        TypeError: for non-numeric embeddings, or non-integer `k`.
        ValueError: if `k < 1`, `temperature <= 0`, there are no references
            or no labels, the labels' length differs from the references',
            the embedding sizes differ, a value is not finite, or a label is
            outside `[0, num_classes)`.

    Examples:
        >>> import numpy as np
        >>> references = np.array([[1.0, 0.0], [0.9, 0.1], [0.0, 1.0]])
        >>> knn_predict(np.array([[2.0, 0.2], [0.1, 3.0]]), references,
        ...             np.array([7, 7, 3]), k=2).tolist()
        [7, 3]
    """
    k = check_positive_int(k, "k")
    temperature = check_float(temperature, "temperature", minimum=0.0, inclusive=False)
    block_bytes = check_engine_setting(block_bytes, "block_bytes")
    references = check_embeddings(references, "references")
    labels = _required_labels(reference_labels, len(references), "reference_labels")
    embeddings = check_embeddings(embeddings, "embeddings", allow_empty=True)
    if embeddings.shape[1] != references.shape[1]:
        raise ValueError(
            "`embeddings` and `references` must have the same embedding size; "
            f"got {embeddings.shape[1]} and {references.shape[1]}."
        )
    classes, codes = _classes(labels, num_classes)
    predicted = np.zeros(len(embeddings), dtype=np.int64)
    gallery = PreparedGallery(references, distances.get("cosine"), block_bytes)
    for rows, cosine_distances, indices in search_blocks(gallery, embeddings, k):
        predicted[rows] = _vote(
            1.0 - cosine_distances, codes[indices], len(classes), temperature
        )
    return classes[predicted]


def knn_accuracy(
    embeddings: Any,
    labels: Any,
    references: Any,
    reference_labels: Any,
    num_classes: int | None = None,
    k: int = 200,
    temperature: float = 0.1,
    block_bytes: int = DEFAULT_BLOCK_BYTES,
) -> float:
    """The fraction of `embeddings` whose `knn_predict` label is their own.

    Args:
        embeddings: `(n, dim)` embeddings, `n >= 1`.
        labels: their true labels, `(n,)`, of the kind of `reference_labels`.
        references: `(m, dim)` reference embeddings, as for `knn_predict`.
        reference_labels: their class labels.
        num_classes: optionally, the number of classes (see `knn_predict`).
        k: the number of neighbours that vote, default 200.
        temperature: the temperature of the vote weights, default 0.1.
        block_bytes: memory budget of one block of scores on the backend.

    Returns:
        The accuracy, a float in `[0, 1]`.

    Raises:
        TypeError: if `labels` and `reference_labels` are of different kinds
            (numbers and strings, say), and as `knn_predict`.
        ValueError: if there are no embeddings, `labels` is missing or its
            length differs from the embeddings', and as `knn_predict`.

    Examples:
        >>> import numpy as np
        >>> references = np.array([[1.0, 0.0], [0.9, 0.1], [0.0, 1.0]])
        >>> knn_accuracy(np.array([[2.0, 0.2], [0.1, 3.0]]), np.array([7, 7]),
        ...              references, np.array([7, 7, 3]), k=2)
        0.5
    """
    embeddings = check_embeddings(embeddings, "embeddings")
    labels = _required_labels(labels, len(embeddings), "labels")
    predicted = knn_predict(
        embeddings,
        references,
        reference_labels,
        num_classes=num_classes,
        k=k,
        temperature=temperature,
        block_bytes=block_bytes,
    )
    numeric = labels.dtype.kind in "iuf", predicted.dtype.kind in "iuf"
    if numeric[0] != numeric[1] or (
        not all(numeric) and labels.dtype.kind != predicted.dtype.kind
    ):
        raise TypeError(
            "`labels` and `reference_labels` must be labels of one kind; got "
            f"dtypes {labels.dtype} and {predicted.dtype}."
        )
    return float(np.mean(predicted == labels))


def _count(x: Any, argument: str) -> int:
    leaves = keras.tree.flatten(x)
    for leaf in leaves:
        if not np.ndim(leaf):
            raise TypeError(
                f"`{argument}` must be an array, or a structure of arrays, with "
                f"one row per sample; got {type(leaf).__name__}."
            )
    sizes = {int(np.shape(leaf)[0]) for leaf in leaves}
    if len(sizes) != 1:
        raise ValueError(
            f"`{argument}` must hold arrays with one number of samples; got "
            f"{sorted(sizes) if sizes else 'no arrays'}."
        )
    return sizes.pop()


class KNNEvaluation(keras.callbacks.Callback):
    """Writes the weighted k-NN accuracy of a validation set into the logs.

    The standard monitor of self-supervised training (as lightly's
    `KNNClassifier`): at the end of every `every_n_epochs`-th epoch the
    callback embeds the labelled `references` (typically the training set)
    and the labelled validation inputs `x` with the encoder, classifies
    every validation embedding with `knn_predict` against the references,
    and adds the accuracy to the logs as `name` (`val_knn_accuracy` by
    default). Later callbacks see it, so
    `EarlyStopping(monitor="val_knn_accuracy", mode="max")` and
    `ModelCheckpoint(..., monitor="val_knn_accuracy", mode="max")` work; put
    this callback before them in the list. `History` records it. Epochs
    that are not evaluated get no entry.

    The encoder is `encoder` if given; otherwise that of the trained model:
    `model.encoder` for the self-supervised models (`SimSiam`, `BYOL`,
    `BarlowTwins`, `VICReg`, `SimCLR`), the model itself for any other. A
    `TrunkHead` is evaluated on its trunk's features, as
    `RetrievalEvaluation` does. The encoder runs in inference mode. For a
    two-tower model (`DualEncoder`), `query_encoder` encodes `x` while
    `encoder` (then required) encodes the `references`.

    Unlike `RetrievalEvaluation(encoder, x, labels, ...)`, whose first
    argument is the encoder, the arguments here begin with the data
    (`x, labels, references, reference_labels`) and `encoder` comes after
    them, optional; pass the encoders by keyword to read the same in both.

    Args:
        x: validation inputs: an array, or a structure of arrays.
        labels: their class labels, `(n,)`.
        references: reference inputs, encoded like `x`.
        reference_labels: their class labels.
        encoder: optionally, the model or layer mapping one input to one
            embedding; by default found from the trained model (see above).
        k: the number of neighbours that vote, default 200.
        temperature: the temperature of the vote weights, default 0.1.
        every_n_epochs: evaluate after epochs `N, 2N, ...` (1-based).
        batch_size: rows embedded per encoder call.
        name: the key of the accuracy in the logs.
        block_bytes: memory budget of one block of scores on the device.
        query_encoder: the query tower of a two-tower model, which then
            encodes `x` while `encoder` encodes the `references`; `None`
            (default): one encoder encodes both.

    Attributes:
        history: `{epoch: accuracy}` of every evaluated epoch (1-based).

    Raises:
        TypeError: if `encoder` or `query_encoder` is given and is not a
            Keras layer, `x` or
            `references` is not an array or a structure of arrays (a
            dataset, say), or an argument has the wrong type.
        ValueError: if labels are missing or their length differs from
            their inputs', there are no references or no validation inputs,
            `k < 1`, `temperature <= 0`, `every_n_epochs < 1`, `name` is
            empty, or `query_encoder` is given without `encoder`.

    Examples:
        >>> import keras, numpy as np
        >>> rng = np.random.default_rng(0)
        >>> y = np.repeat(np.arange(4), 8)
        >>> x = (y[:, None] + rng.normal(scale=0.1, size=(32, 4))).astype("float32")
        >>> model = keras.Sequential([keras.Input((4,)), keras.layers.Dense(3)])
        >>> model.compile(optimizer="sgd", loss="mse")
        >>> knn = KNNEvaluation(x[::2], y[::2], x[1::2], y[1::2], k=5)
        >>> history = model.fit(x, x[:, :3], epochs=2, verbose=0, callbacks=[knn])
        >>> len(history.history["val_knn_accuracy"])
        2
    """

    def __init__(
        self,
        x: Any,
        labels: Any,
        references: Any,
        reference_labels: Any,
        encoder: keras.layers.Layer | None = None,
        k: int = 200,
        temperature: float = 0.1,
        every_n_epochs: int = 1,
        batch_size: int = 256,
        name: str = "val_knn_accuracy",
        block_bytes: int = DEFAULT_BLOCK_BYTES,
        query_encoder: keras.layers.Layer | None = None,
    ) -> None:
        super().__init__()
        for argument, layer in (("encoder", encoder), ("query_encoder", query_encoder)):
            if layer is not None and not isinstance(layer, keras.layers.Layer):
                raise TypeError(
                    f"`{argument}` must be a Keras layer or model; got "
                    f"{type(layer).__name__}."
                )
        if query_encoder is not None and encoder is None:
            raise ValueError(
                "A `query_encoder` needs `encoder`, the tower that encodes the "
                "`references`; the trained model is not taken for it."
            )
        count = _count(x, "x")
        if count < 1:
            raise ValueError("`x` holds no validation inputs.")
        reference_count = _count(references, "references")
        if reference_count < 1:
            raise ValueError("`references` holds no reference inputs.")
        self.x = x
        self.labels = _required_labels(labels, count, "labels")
        self.references = references
        self.reference_labels = _required_labels(
            reference_labels, reference_count, "reference_labels"
        )
        self.encoder = encoder
        self.query_encoder = query_encoder
        self.k = check_positive_int(k, "k")
        self.temperature = check_float(
            temperature, "temperature", minimum=0.0, inclusive=False
        )
        self.every_n_epochs = check_positive_int(every_n_epochs, "every_n_epochs")
        self.batch_size = check_positive_int(batch_size, "batch_size")
        if not isinstance(name, str) or not name:
            raise ValueError(f"`name` must be a non-empty string; got {name!r}.")
        self.name = name
        self.block_bytes = check_engine_setting(block_bytes, "block_bytes")
        self.history: dict[int, float] = {}

    def _encoder(self) -> keras.layers.Layer:
        # Reading `self.model` first puts the trained weights back on JAX.
        model = self.model
        if self.encoder is not None:
            return trunk_of(self.encoder)
        from keras_siamese.models._base import SelfSupervisedModel

        if isinstance(model, SelfSupervisedModel):
            return trunk_of(model.encoder)
        return trunk_of(model)

    def _embed(self, encoder: keras.layers.Layer, x: Any) -> np.ndarray:
        count = _count(x, "x")
        parts = []
        for start in range(0, count, self.batch_size):
            batch = keras.tree.map_structure(
                lambda a, start=start: np.asarray(a)[start : start + self.batch_size],
                x,
            )
            if callable(getattr(encoder, "predict_on_batch", None)):
                output = encoder.predict_on_batch(batch)
            else:
                output = encoder(batch, training=False)
            leaves = keras.tree.flatten(output)
            if len(leaves) != 1:
                raise TypeError(
                    "The encoder must return one embedding array; it returned "
                    f"{len(leaves)}."
                )
            part = np.asarray(keras.ops.convert_to_numpy(leaves[0]), "float32")
            parts.append(part.reshape(part.shape[0], -1))
        return np.concatenate(parts)

    def evaluate(self) -> float:
        """Embed both sets with the current weights and return the accuracy."""
        encoder = self._encoder()
        queries = (
            encoder if self.query_encoder is None else trunk_of(self.query_encoder)
        )
        return knn_accuracy(
            check_embeddings(self._embed(queries, self.x), "the encoder's embeddings"),
            self.labels,
            check_embeddings(
                self._embed(encoder, self.references), "the encoder's embeddings"
            ),
            self.reference_labels,
            k=self.k,
            temperature=self.temperature,
            block_bytes=self.block_bytes,
        )

    def on_epoch_end(self, epoch: int, logs: dict | None = None) -> None:
        if (epoch + 1) % self.every_n_epochs:
            return
        accuracy = self.evaluate()
        self.history[epoch + 1] = accuracy
        if logs is not None:
            logs[self.name] = accuracy
