"""Fraction of triplets whose positive is nearer to the anchor than the negative."""

from __future__ import annotations

from typing import Any

import keras
from keras import ops

from keras_siamese import distances
from keras_siamese._checks import check_triplets
from keras_siamese.distances import as_float
from keras_siamese.metrics._base import AccuracyMean


@keras.saving.register_keras_serializable(package="keras_siamese")
def triplet_accuracy(
    y_true: Any, y_pred: Any, distance: str | distances.Distance = "euclidean"
) -> Any:
    """Per-triplet 1.0 where `d(a, p) < d(a, n)`, else 0.0.

    Args:
        y_true: ignored.
        y_pred: stacked triplets `(batch, 3, dim)`: anchor, positive,
            negative.
        distance: `"euclidean"` (default), `"squared_euclidean"`, `"cosine"`,
            `"manhattan"`, or a `Distance` with a paired form.

    Returns:
        A float `(batch,)` tensor.

    Raises:
        ValueError: if `y_pred` is not `(batch, 3, dim)` or `distance` is
            unknown.

    Examples:
        >>> import numpy as np
        >>> triplets = np.array([[[0.0], [1.0], [2.0]], [[0.0], [2.0], [1.0]]])
        >>> [float(v) for v in triplet_accuracy(None, triplets)]
        [1.0, 0.0]

        Usage with `compile()`, on a model that stacks the embeddings of a
        triplet (the function uses the Euclidean distance; `TripletAccuracy`
        takes another):

        >>> import keras
        >>> from keras_siamese import SiameseWrapper, TripletLoss
        >>> triplet = [keras.Input((4,)) for _ in range(3)]
        >>> stacked = SiameseWrapper(keras.layers.Dense(2), merge="stack")(triplet)
        >>> model = keras.Model(triplet, stacked)
        >>> model.compile(
        ...     optimizer="adam", loss=TripletLoss(), metrics=[triplet_accuracy]
        ... )
    """
    del y_true
    measure = distances.get(distance, needs=("paired",), user="triplet_accuracy")
    y_pred = as_float(y_pred)
    check_triplets(y_pred)
    anchor, positive, negative = y_pred[:, 0], y_pred[:, 1], y_pred[:, 2]
    closer = measure.paired(anchor, positive) < measure.paired(anchor, negative)
    return ops.cast(closer, y_pred.dtype)


@keras.saving.register_keras_serializable(package="keras_siamese")
class TripletAccuracy(AccuracyMean):
    """Fraction of `(batch, 3, dim)` triplets with `d(a, p) < d(a, n)`.

    Ties count as wrong. `y_true` is ignored.

    Args:
        distance: `"euclidean"` (default), `"squared_euclidean"`, `"cosine"`,
            `"manhattan"`, or a `Distance` with a paired form; use the
            distance the loss uses.
        name: name of the metric.
        dtype: dtype of the metric result.

    Raises:
        ValueError: if `distance` is unknown or has no paired form.

    Examples:
        >>> import numpy as np
        >>> metric = TripletAccuracy()
        >>> triplets = np.array([[[0.0], [1.0], [2.0]], [[0.0], [2.0], [1.0]]])
        >>> metric.update_state(np.zeros(2), triplets)
        >>> float(metric.result())
        0.5

        Usage with `compile()`, on a model that stacks the embeddings of a
        triplet:

        >>> import keras
        >>> from keras_siamese import SiameseWrapper, TripletLoss
        >>> triplet = [keras.Input((4,)) for _ in range(3)]
        >>> stacked = SiameseWrapper(keras.layers.Dense(2), merge="stack")(triplet)
        >>> model = keras.Model(triplet, stacked)
        >>> model.compile(
        ...     optimizer="adam",
        ...     loss=TripletLoss(distance="cosine"),
        ...     metrics=[TripletAccuracy(distance="cosine")],
        ... )
    """

    def __init__(
        self,
        distance: str | distances.Distance = "euclidean",
        name: str = "triplet_accuracy",
        dtype: str | None = None,
    ) -> None:
        measure = distances.get(distance, needs=("paired",), user="TripletAccuracy")
        self.distance = measure.name
        super().__init__(fn=triplet_accuracy, name=name, dtype=dtype, distance=measure)
        self._measure = measure

    def get_config(self) -> dict[str, Any]:
        return {
            "distance": distances.serialize(self._measure, "TripletAccuracy"),
            "name": self.name,
            "dtype": self.dtype,
        }
