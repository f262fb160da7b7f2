"""Triplet loss with triplets mined inside each batch of labelled embeddings."""

from __future__ import annotations

from typing import Any

import keras

from keras_siamese import distances
from keras_siamese._checks import check_bool, check_margin, check_mining
from keras_siamese.distances import pairwise_distances
from keras_siamese.losses import mining as miners
from keras_siamese.losses import pairs
from keras_siamese.losses.base import LabelledEmbeddingLoss

_MINERS = {
    "batch_hard": miners.batch_hard,
    "batch_all": miners.batch_all,
    "semi_hard": miners.semi_hard,
}


def _check_soft(soft: bool, mining_mode: str) -> bool:
    soft = check_bool(soft, "soft")
    if soft and mining_mode == "batch_all":
        raise ValueError(
            '`soft=True` is not supported with mining="batch_all": the soft '
            "margin has no hinge, so every triplet would have to be "
            "materialised. Use batch_hard or semi_hard with soft=True."
        )
    return soft


@keras.saving.register_keras_serializable(package="keras_siamese")
def online_triplet_loss(
    labels: Any,
    embeddings: Any,
    mining: str = "batch_hard",
    margin: float = 1.0,
    distance: str | distances.Distance = "euclidean",
    soft: bool = False,
    references: Any | None = None,
    reference_labels: Any | None = None,
    reference_mask: Any | None = None,
) -> Any:
    """Triplet loss over the triplets mined from one batch of embeddings.

    A triplet is `(a, p, n)` with `a != p` of one class and `n` of another.
    Mining modes:

    - `"batch_hard"` (Hermans et al. 2017): per anchor with at least one
      positive and one negative, its farthest positive against its nearest
      negative; mean over those anchors.
    - `"batch_all"`: every valid triplet; mean over the triplets whose loss is
      above zero.
    - `"semi_hard"` (FaceNet, Schroff et al. 2015): per anchor-positive pair,
      the nearest negative strictly farther from the anchor than the
      positive, or the farthest negative where there is none; mean over
      anchor-positive pairs. With the defaults (`margin=1.0`, plain
      Euclidean distance) this gives the numbers of TensorFlow Addons'
      `TripletSemiHardLoss()`, whose default metric is also the plain L2
      distance, except that anchors without any negative are left out here
      (TensorFlow Addons charges them `margin + d(a, p)`).

    A batch with no valid triplet (a batch of one class, or of all-distinct
    labels) has loss 0 and zero gradients. Memory is `O(B^2)`: no
    `(B, B, B)` tensor is built.

    With `references` (embeddings `(M, dim)` with their `reference_labels`),
    every row of the batch is an anchor and its positives and negatives are
    taken from the references instead of the batch; a reference of the
    anchor's class is a positive even if it equals the anchor (as
    pytorch-metric-learning's `ref_emb`). Memory is then `O(B * M)`.

    Args:
        labels: integer class labels, shape `(batch,)` or `(batch, 1)`.
            Keras losses cast labels to float32, which keeps integers exact
            up to 2**24.
        embeddings: shape `(batch, dim)`.
        mining: `"batch_hard"` (default), `"batch_all"` or `"semi_hard"`.
        margin: the required gap between negative and positive distances.
            Default 1.0 with the plain Euclidean distance, as TensorFlow
            Addons' `TripletHardLoss` and `TripletSemiHardLoss`. FaceNet used
            0.2 with squared distances of unit-norm embeddings; scale the
            margin with the distance. Ignored when `soft=True`.
        distance: `"euclidean"` (default), `"squared_euclidean"`, `"cosine"`,
            `"manhattan"`, or a `Distance` (see `keras_siamese.distances.get`).
        soft: softplus instead of the hinge (Hermans et al.'s soft margin);
            for `batch_hard` and `semi_hard` only.
        references: optional embeddings `(M, dim)` to take positives and
            negatives from instead of the batch.
        reference_labels: labels of `references`, shape `(M,)`; required
            with `references`.
        reference_mask: optional boolean `(batch, M)`: only the
            anchor-reference pairs where it is true count (cross-batch
            memory leaves out empty slots and the batch's own rows with it).

    Returns:
        A scalar, float32 for half-precision embeddings.

    Raises:
        ValueError: for an unknown `mining` or `distance`, a negative margin,
            `soft=True` with `batch_all`, badly shaped inputs, or only one of
            `references` and `reference_labels`.

    Examples:
        >>> import numpy as np
        >>> embeddings = np.array([[0.0], [0.5], [3.0], [3.25]])
        >>> labels = np.array([0, 0, 1, 1])
        >>> float(online_triplet_loss(labels, embeddings, mining="batch_hard"))
        0.0

        Usage with `compile()`, on the embedding model itself, fit on
        `(x, labels)` batches (the function mines batch-hard triplets with
        the default margin; `OnlineTripletLoss` takes other settings):

        >>> import keras
        >>> model = keras.Sequential([keras.Input((4,)), keras.layers.Dense(2)])
        >>> model.compile(optimizer="adam", loss=online_triplet_loss)
    """
    mining_mode = check_mining(mining)
    margin = check_margin(margin)
    distance = distances.get(distance, needs=("pairwise",), user="online_triplet_loss")
    soft = _check_soft(soft, mining_mode)
    labels, embeddings, references, reference_labels, reference_mask = (
        pairs.labelled_inputs(
            labels, embeddings, references, reference_labels, reference_mask
        )
    )
    if pairs.is_empty(embeddings, references):
        # An empty batch has no triplet, so its loss is 0 like any batch
        # without one; the miners' reductions have no identity on empty input.
        return pairs.zero_loss(embeddings, references)
    positive, negative = pairs.label_masks(labels, reference_labels, reference_mask)
    matrix = pairwise_distances(embeddings, distance, references=references)
    return _MINERS[mining_mode](matrix, positive, negative, margin, soft)


@keras.saving.register_keras_serializable(package="keras_siamese")
class OnlineTripletLoss(LabelledEmbeddingLoss):
    """Triplet loss with in-batch mining: `y_true` labels, `y_pred` embeddings.

    Fit an embedding model directly on `(x, class_label)` batches; triplets
    are mined in each batch (see `online_triplet_loss` for the three modes).
    The loss is a batch-level scalar, so `sample_weight` is not supported.
    Batches need several examples per class for there to be triplets.

    Args:
        mining: `"batch_hard"` (default), `"batch_all"` or `"semi_hard"`.
        margin: default 1.0 with the plain Euclidean distance (TensorFlow
            Addons' defaults, so migrating users get the same numbers).
            Ignored when `soft=True`.
        distance: `"euclidean"` (default), `"squared_euclidean"`, `"cosine"`,
            `"manhattan"`, or a `Distance` (see `keras_siamese.distances.get`).
        soft: softplus instead of the hinge (not with `batch_all`).
        global_batch: under a `tf.distribute` strategy with several replicas
            (such as `MirroredStrategy`), mine over the global batch
            (all-gathered from every replica) instead of each replica's
            slice, as one device would; gradients reach each replica's own
            rows. A no-op on JAX (whose `DataParallel` already mines over the
            global batch) and PyTorch.
        reduction: Keras loss reduction (the loss is already a scalar).
        name: name of the loss.
        dtype: dtype of the computation; defaults to `keras.backend.floatx()`.

    Raises:
        ValueError: for an unknown mode or distance, a negative margin, or
            `soft=True` with `batch_all` (at construction); for badly shaped
            inputs or a `sample_weight` (at call).

    Examples:
        >>> import numpy as np
        >>> loss = OnlineTripletLoss(mining="semi_hard", margin=1.0)
        >>> embeddings = np.array([[0.0], [0.5], [1.0], [1.25]])
        >>> float(loss(np.array([0, 0, 1, 1]), embeddings))
        0.625

        Usage with `compile()`, on the embedding model itself, fit on
        `(x, labels)` batches with several examples per class (such as
        `ClassBalancedDataset`'s):

        >>> import keras
        >>> model = keras.Sequential([keras.Input((4,)), keras.layers.Dense(2)])
        >>> model.compile(optimizer="adam", loss=OnlineTripletLoss(mining="semi_hard"))
    """

    def __init__(
        self,
        mining: str = "batch_hard",
        margin: float = 1.0,
        distance: str | distances.Distance = "euclidean",
        soft: bool = False,
        global_batch: bool = False,
        reduction: str = "sum_over_batch_size",
        name: str = "online_triplet_loss",
        dtype: str | None = None,
    ) -> None:
        super().__init__(
            global_batch=global_batch, reduction=reduction, name=name, dtype=dtype
        )
        self.mining = check_mining(mining)
        self.margin = check_margin(margin)
        self._measure = distances.get(
            distance, needs=("pairwise",), user="OnlineTripletLoss"
        )
        self.distance = self._measure.name
        self.soft = _check_soft(soft, self.mining)

    def compute(self, labels: Any, embeddings: Any) -> Any:
        return online_triplet_loss(
            labels,
            embeddings,
            mining=self.mining,
            margin=self.margin,
            distance=self._measure,
            soft=self.soft,
        )

    def get_config(self) -> dict[str, Any]:
        config = super().get_config()
        config.update(
            {
                "mining": self.mining,
                "margin": self.margin,
                "distance": distances.serialize(self._measure, "OnlineTripletLoss"),
                "soft": self.soft,
            }
        )
        return config
