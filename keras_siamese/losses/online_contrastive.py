"""Contrastive loss over every pair (or the mined pairs) of labelled embeddings."""

from __future__ import annotations

from typing import Any

import keras
from keras import ops

from keras_siamese import distances
from keras_siamese import miners as miner_objects
from keras_siamese._checks import check_choice, check_float
from keras_siamese.losses import pairs
from keras_siamese.losses.base import FunctionLoss


def _check_arguments(
    pos_margin: Any, neg_margin: Any, miner: Any, reducer: Any
) -> tuple[float, float, Any, str]:
    return (
        check_float(pos_margin, "pos_margin"),
        check_float(neg_margin, "neg_margin"),
        _check_miner(miner_objects.get(miner)),
        check_choice(reducer, pairs.REDUCERS, "reducer"),
    )


def _check_miner(miner: Any) -> Any:
    if miner is not None and miner.kind != "pairs":
        raise ValueError(
            f"OnlineContrastiveLoss takes a pair miner; {type(miner).__name__} "
            "mines triplets, whose pairs repeat across triplets. Use it with "
            "OnlineTripletLoss."
        )
    return miner


@keras.saving.register_keras_serializable(package="keras_siamese")
def online_contrastive_loss(
    labels: Any,
    embeddings: Any,
    pos_margin: float = 0.0,
    neg_margin: float = 1.0,
    distance: str | distances.Distance = "euclidean",
    miner: Any = None,
    reducer: str = "nonzero_mean",
    references: Any | None = None,
    reference_labels: Any | None = None,
    reference_mask: Any | None = None,
) -> Any:
    """Contrastive loss over the pairs of one batch of labelled embeddings.

    Every anchor-positive pair (same class, not the anchor itself) costs
    `max(d - pos_margin, 0)` and every anchor-negative pair
    `max(neg_margin - d, 0)` (linear hinges); with a similarity `s`
    (`distance="cosine_similarity"`) the margins flip:
    `max(pos_margin - s, 0)` and `max(s - neg_margin, 0)` (so pass, say,
    `pos_margin=1, neg_margin=0`). The positive and the negative losses are
    each averaged by `reducer` and the two averages added. A batch with at
    most one positive and one negative pair has loss 0. These are the
    numbers of pytorch-metric-learning's `ContrastiveLoss(pos_margin,
    neg_margin)` (whose default distance is the Euclidean distance of
    L2-normalised embeddings: normalise them first for its numbers).

    Unlike `contrastive_loss`, which takes the distances of given pairs and
    their 0/1 labels, this loss forms the pairs itself from class labels.

    Args:
        labels: integer class labels, shape `(batch,)` or `(batch, 1)`.
        embeddings: shape `(batch, dim)`.
        pos_margin: default 0.
        neg_margin: default 1.
        distance: `"euclidean"` (default), `"squared_euclidean"`,
            `"cosine"`, `"manhattan"`, a `Distance` (see
            `keras_siamese.distances.get`), or `"cosine_similarity"`.
        miner: an optional pair miner (`PairMarginMiner`,
            `MultiSimilarityMiner`, `BatchEasyHardMiner`): only its pairs
            count.
        reducer: `"nonzero_mean"` (default), the mean over the pairs with a
            loss above zero (pytorch-metric-learning's `AvgNonZeroReducer`),
            `"mean"`, over every pair, or `"per_anchor"`, each anchor's mean
            over its pairs (0 for an anchor without any), then the mean over
            every anchor (its `PerAnchorReducer()`; with references it
            needs no more references than anchors there, not here).
        references: optional embeddings `(M, dim)` to take the pairs'
            second members from instead of the batch.
        reference_labels: labels of `references`, shape `(M,)`.
        reference_mask: optional boolean `(batch, M)`: only the pairs where
            it is true count.

    Returns:
        A scalar, float32 for half-precision embeddings.

    Raises:
        ValueError: for a margin that is not finite, an unknown distance or
            reducer, a triplet miner, badly shaped inputs, or only one of
            `references` and `reference_labels`.
        TypeError: if `miner` is not a `Miner`.

    Examples:
        >>> import numpy as np
        >>> embeddings = np.array([[0.0], [0.5], [0.75], [3.0]])
        >>> labels = np.array([0, 0, 1, 1])
        >>> float(online_contrastive_loss(labels, embeddings))
        1.875
        >>> float(online_contrastive_loss(labels, embeddings, reducer="per_anchor"))
        1.625
    """
    pos_margin, neg_margin, miner, reducer = _check_arguments(
        pos_margin, neg_margin, miner, reducer
    )
    measure = miner_objects.Measure(distance, "online_contrastive_loss")
    labels, embeddings, references, reference_labels, reference_mask = (
        pairs.labelled_inputs(
            labels, embeddings, references, reference_labels, reference_mask
        )
    )
    if pairs.is_empty(embeddings, references):
        return pairs.zero_loss(embeddings, references)
    positive, negative = pairs.label_masks(labels, reference_labels, reference_mask)
    matrix = measure.matrix(embeddings, references)
    if miner is not None:
        same = miner.measure == measure
        mined = matrix if same else miner.measure.matrix(embeddings, references)
        positive, negative = miner.mine(ops.stop_gradient(mined), positive, negative)
    pulled = ops.relu(matrix - measure.level(pos_margin))
    pushed = ops.relu(measure.level(neg_margin) - matrix)
    loss = pairs.reduce_pairs(pulled, positive, reducer) + pairs.reduce_pairs(
        pushed, negative, reducer
    )
    return ops.where(pairs.has_pairs(positive, negative), loss, 0.0)


@keras.saving.register_keras_serializable(package="keras_siamese")
class OnlineContrastiveLoss(FunctionLoss):
    """Contrastive loss of in-batch pairs: `y_true` labels, `y_pred` embeddings.

    The labelled form of the contrastive loss with a positive and a negative
    margin (see `online_contrastive_loss`), optionally over the pairs of a
    miner: pytorch-metric-learning's `ContrastiveLoss` (with a miner, fed by
    it). `ContrastiveLoss` keeps its meaning: a distance per given pair and
    0/1 pair labels. The loss is a batch-level scalar, so `sample_weight`
    is not supported.

    Args:
        pos_margin: default 0.
        neg_margin: default 1.
        distance: `"euclidean"` (default), another distance name or
            `Distance`, or `"cosine_similarity"` (margins then flip).
        miner: an optional pair miner (or its serialized config).
        reducer: `"nonzero_mean"` (default), `"mean"` or `"per_anchor"`
            (see `online_contrastive_loss`).
        global_batch: under a `tf.distribute` strategy with several replicas,
            compute the loss over the global batch (all-gathered from every
            replica). A no-op on JAX and PyTorch.
        reduction: Keras loss reduction (the loss is already a scalar).
        name: name of the loss.
        dtype: dtype of the computation; defaults to `keras.backend.floatx()`.

    Raises:
        ValueError: for a margin that is not finite, an unknown distance or
            reducer, or a triplet miner (at construction); for badly shaped
            inputs or a `sample_weight` (at call).
        TypeError: if `miner` is not a `Miner` (at construction).

    Examples:
        >>> import numpy as np
        >>> from keras_siamese.miners import PairMarginMiner
        >>> loss = OnlineContrastiveLoss(miner=PairMarginMiner(0.2, 0.8))
        >>> embeddings = np.array([[0.0], [0.5], [0.75], [3.0]])
        >>> float(loss(np.array([0, 0, 1, 1]), embeddings))
        1.875

        Usage with `compile()`:

        >>> import keras
        >>> model = keras.Sequential([keras.Input((4,)), keras.layers.Dense(2)])
        >>> model.compile(optimizer="adam", loss=OnlineContrastiveLoss())
    """

    def __init__(
        self,
        pos_margin: float = 0.0,
        neg_margin: float = 1.0,
        distance: str | distances.Distance = "euclidean",
        miner: Any = None,
        reducer: str = "nonzero_mean",
        global_batch: bool = False,
        reduction: str = "sum_over_batch_size",
        name: str = "online_contrastive_loss",
        dtype: str | None = None,
    ) -> None:
        pos_margin, neg_margin, miner, reducer = _check_arguments(
            pos_margin, neg_margin, miner, reducer
        )
        measure = miner_objects.Measure(distance, "OnlineContrastiveLoss")
        super().__init__(
            online_contrastive_loss,
            global_batch=global_batch,
            reduction=reduction,
            name=name,
            dtype=dtype,
            pos_margin=pos_margin,
            neg_margin=neg_margin,
            distance=measure,
            miner=miner,
            reducer=reducer,
        )
        # The name, as before; the function gets the measure itself.
        self.distance = measure.name
