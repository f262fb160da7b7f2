"""`RetrievalEvaluation`: retrieval metrics of a validation set in `fit`'s logs."""

from __future__ import annotations

from collections.abc import Sequence
from typing import Any

import keras
import numpy as np

from keras_siamese import distances
from keras_siamese._checks import check_bool, check_labels, check_positive_int
from keras_siamese.retrieval._engines import check_engine_setting
from keras_siamese.retrieval._search import DEFAULT_BLOCK_BYTES
from keras_siamese.retrieval.index import encode
from keras_siamese.retrieval.metrics import check_k, check_metrics, retrieval_metrics


def _count(x: Any) -> int:
    sizes = {int(np.shape(leaf)[0]) for leaf in keras.tree.flatten(x)}
    if len(sizes) != 1:
        raise ValueError(
            f"All arrays in `x` must have the same number of samples; got {sizes}."
        )
    return sizes.pop()


class RetrievalEvaluation(keras.callbacks.Callback):
    """Writes retrieval metrics of a validation set into the epoch's logs.

    At the end of every `every_n_epochs`-th epoch the callback encodes `x`
    with `encoder`, computes `retrieval_metrics` (the queries against each
    other, leave-one-out, or against the encoded `references`) and adds each
    metric to the logs as `prefix + name`, e.g. `val_recall_at_1` and
    `val_map_at_r`. Later callbacks see them, so
    `EarlyStopping(monitor="val_map_at_r", mode="max")` and
    `ModelCheckpoint(monitor="val_map_at_r", mode="max")` work; put this
    callback before them in the list. Epochs that are not evaluated get no
    entry (monitoring callbacks then skip that epoch, with a warning), so
    monitor with `every_n_epochs=1`. `History` records the metrics. A
    `TrunkHead` is evaluated on its trunk's features, as `EmbeddingIndex`
    and `Verifier` search them.

    Args:
        encoder: the model mapping one input to one embedding (the encoder
            being trained, e.g. the layer inside `SiameseWrapper`).
        x: validation inputs: an array, or a structure of arrays.
        labels: their class labels, `(n,)`.
        references: optional reference inputs, encoded like `x`, to search
            instead of `x` itself.
        reference_labels: their labels; given exactly when `references` is.
        metrics: names from `keras_siamese.retrieval.METRICS`, or
            `<family>_at_<k>` (`recall_at_5`, `precision_at_10`,
            `mrr_at_10`, `ndcg_at_10`, `map_at_100`, ...; see
            `retrieval_metrics`).
        distance: `"euclidean"` (default), `"squared_euclidean"`, `"cosine"`,
            `"manhattan"`, or a `Distance` with the forms search needs.
        every_n_epochs: evaluate after epochs `N, 2N, ...` (1-based).
        batch_size: batch size of `predict`.
        prefix: prepended to each metric name in the logs.
        block_bytes: memory budget of one block of scores on the device.
        k: the depth of the ranking metrics, as `retrieval_metrics`' `k`
            (None, an integer, or `"max_bin_count"`).
        avg_of_avgs: average every neighbour metric per class first, as
            `retrieval_metrics`' `avg_of_avgs`.
        query_encoder: the query tower of a two-tower model (`DualEncoder`),
            which then encodes `x` while `encoder` encodes the `references`
            (required with it); `None` (default): `encoder` encodes both.

    Attributes:
        history: `{epoch: {name: value}}` of every evaluated epoch (1-based).

    Raises:
        TypeError: if `encoder` or `query_encoder` has no `predict` method.
        ValueError: for labels of the wrong length, only one of `references`
            and `reference_labels`, a `query_encoder` without `references`,
            an unknown metric or distance, a bad `k`, or `every_n_epochs < 1`.
        TypeError: also for a non-boolean `avg_of_avgs`.

    Examples:
        >>> import keras, numpy as np
        >>> from keras_siamese import OnlineTripletLoss
        >>> rng = np.random.default_rng(0)
        >>> y = np.repeat(np.arange(4), 8)
        >>> x = (y[:, None] + rng.normal(scale=0.1, size=(32, 4))).astype("float32")
        >>> encoder = keras.Sequential([keras.Input((4,)), keras.layers.Dense(3)])
        >>> encoder.compile(optimizer="adam", loss=OnlineTripletLoss())
        >>> callback = RetrievalEvaluation(encoder, x, y)
        >>> history = encoder.fit(x, y, epochs=2, verbose=0, callbacks=[callback])
        >>> sorted(name for name in history.history if name.startswith("val_"))
        ['val_map_at_r', 'val_recall_at_1']
    """

    def __init__(
        self,
        encoder: keras.Model,
        x: Any,
        labels: Any,
        references: Any | None = None,
        reference_labels: Any | None = None,
        metrics: Sequence[str] = ("recall_at_1", "map_at_r"),
        distance: str | distances.Distance = "euclidean",
        every_n_epochs: int = 1,
        batch_size: int = 256,
        prefix: str = "val_",
        block_bytes: int = DEFAULT_BLOCK_BYTES,
        k: int | str | None = None,
        avg_of_avgs: bool = False,
        query_encoder: keras.Model | None = None,
    ) -> None:
        super().__init__()
        for name, model in (("encoder", encoder), ("query_encoder", query_encoder)):
            if (model is not None or name == "encoder") and not callable(
                getattr(model, "predict", None)
            ):
                raise TypeError(
                    f"`{name}` must be a Keras model with a `predict` method; "
                    f"got {type(model).__name__}."
                )
        if (references is None) != (reference_labels is None):
            raise ValueError(
                "Give both `references` and `reference_labels`, or neither."
            )
        if query_encoder is not None and references is None:
            raise ValueError(
                "A `query_encoder` needs `references` (encoded by `encoder`) to "
                "search: the queries are not searched against each other."
            )
        self.encoder = encoder
        self.query_encoder = query_encoder
        self.x = x
        self.labels = check_labels(labels, _count(x), "labels")
        self.references = references
        self.reference_labels = (
            None
            if reference_labels is None
            else check_labels(reference_labels, _count(references), "reference_labels")
        )
        self.metrics = check_metrics(metrics)
        self._measure = distances.get(
            distance, needs=("search",), user="RetrievalEvaluation"
        )
        self.distance = self._measure.name
        self.every_n_epochs = check_positive_int(every_n_epochs, "every_n_epochs")
        self.batch_size = check_positive_int(batch_size, "batch_size")
        self.prefix = str(prefix)
        self.block_bytes = check_engine_setting(block_bytes, "block_bytes")
        self.k = check_k(k)
        self.avg_of_avgs = check_bool(avg_of_avgs, "avg_of_avgs")
        self.history: dict[int, dict[str, float]] = {}

    def evaluate(self) -> dict[str, float]:
        """Encode the validation set with the current weights and score it."""
        queries = self.encoder if self.query_encoder is None else self.query_encoder
        embeddings = encode(queries, self.x, self.batch_size, verbose=0)
        references = None
        if self.references is not None:
            references = encode(
                self.encoder, self.references, self.batch_size, verbose=0
            )
        return retrieval_metrics(
            embeddings,
            self.labels,
            references,
            self.reference_labels,
            distance=self._measure,
            metrics=self.metrics,
            k=self.k,
            avg_of_avgs=self.avg_of_avgs,
            block_bytes=self.block_bytes,
        )

    def on_epoch_end(self, epoch: int, logs: dict | None = None) -> None:
        if (epoch + 1) % self.every_n_epochs:
            return
        results = self.evaluate()
        self.history[epoch + 1] = results
        if logs is not None:
            logs.update({self.prefix + name: value for name, value in results.items()})
