"""Supervised contrastive loss (Khosla et al., 2020) of labelled embeddings."""

from __future__ import annotations

from typing import Any

import keras
from keras import ops

from keras_siamese import miners as miner_objects
from keras_siamese._checks import check_choice, check_float
from keras_siamese.losses import pairs
from keras_siamese.losses.base import FunctionLoss
from keras_siamese.miners.base import Measure


def from_similarity(
    similarity: Any,
    positive: Any,
    negative: Any,
    temperature: float,
    reducer: str = "nonzero_mean",
) -> Any:
    """The loss from a `(B, M)` similarity matrix and its pair masks.

    Entries in neither mask (the diagonal of a batch against itself) are left
    out of every sum. See `supervised_contrastive_loss`.
    """
    logits = similarity / temperature
    # The shift changes no value (each row's softmax is shift-invariant); it
    # is pytorch-metric-learning's, kept so the two round alike.
    logits = logits - ops.stop_gradient(ops.max(logits, axis=1, keepdims=True))
    log_norm = pairs.masked_logsumexp(logits, ops.logical_or(positive, negative))
    log_prob = logits - ops.expand_dims(log_norm, 1)
    positives = pairs.count(positive, axis=1, dtype=logits.dtype)
    total = ops.sum(ops.where(positive, log_prob, 0.0), axis=1)
    losses = -total / ops.maximum(positives, 1.0)
    loss = pairs.reduce_anchors(losses, reducer)
    valid = ops.logical_and(ops.any(positive), ops.any(negative))
    valid = ops.logical_and(valid, pairs.has_pairs(positive, negative))
    return ops.where(valid, loss, 0.0)


@keras.saving.register_keras_serializable(package="keras_siamese")
def supervised_contrastive_loss(
    labels: Any,
    embeddings: Any,
    temperature: float = 0.1,
    references: Any | None = None,
    reference_labels: Any | None = None,
    reference_mask: Any | None = None,
    distance: Any = "cosine_similarity",
    miner: Any = None,
    reducer: str = "nonzero_mean",
) -> Any:
    """Supervised contrastive loss (SupCon, Khosla et al. 2020) of one batch.

    Embeddings are L2-normalised and compared by cosine similarity
    `s(i, j)`, which is `1 - cosine distance` in this package's vocabulary
    (larger means more similar). For an anchor `i` with positives `P(i)`
    (other rows of its class) and the set `A(i)` of its positives and
    negatives (every row but itself):

        loss(i) = -1/|P(i)| * sum_{p in P(i)} log(
            exp(s(i, p) / T) / sum_{a in A(i)} exp(s(i, a) / T))

    With another `distance`, `s(i, j)` is that similarity, or minus that
    distance (pytorch-metric-learning's `SupConLoss(distance=...)`).

    The batch loss is the mean over the anchors whose loss is above zero
    (an anchor without positives has loss 0 and is not counted; `reducer=
    "mean"` counts every anchor), and 0 for a batch without any positive
    pair or without any negative pair. These are the numbers and the
    reduction of pytorch-metric-learning's `SupConLoss()` with its defaults
    (cosine similarity, `AvgNonZeroReducer`).

    With `references`, every row of the batch is an anchor and its positives
    and negatives are the references (a reference equal to the anchor is a
    positive like any other), as `SupConLoss()(embeddings, labels,
    ref_emb=references, ref_labels=reference_labels)`.

    Memory is `O(B * M)` for `B` anchors and `M` rows compared with.

    Args:
        labels: integer class labels, shape `(batch,)` or `(batch, 1)`.
        embeddings: shape `(batch, dim)`; need not be normalised.
        temperature: `T`, default 0.1 (pytorch-metric-learning's default;
            the paper used 0.1 too).
        references: optional embeddings `(M, dim)` to take positives and
            negatives from instead of the batch.
        reference_labels: labels of `references`, shape `(M,)`; required
            with `references`.
        reference_mask: optional boolean `(batch, M)`: only the
            anchor-reference pairs where it is true count (cross-batch
            memory leaves out empty slots and the batch's own rows with it).
        distance: how rows are compared: `"cosine_similarity"` (default,
            on L2-normalised rows), `"dot_product_similarity"` (the rows as
            they are), another `keras_siamese.miners.Similarity`, or a
            distance name or `Distance` (see `keras_siamese.distances.get`),
            whose negated values are then the similarities, as
            pytorch-metric-learning does with a non-inverted distance.
        miner: an optional `keras_siamese.miners.Miner` (or its serialized
            config): only its pairs count, as positives and in the
            denominator. A pair miner's masks are used as they are; a
            triplet miner's are the pairs of its triplets, as
            pytorch-metric-learning turns triplets into pairs. The miner
            measures with its own distance.
        reducer: how the anchors' losses become the batch loss:
            `"nonzero_mean"` (default), the mean over the anchors whose loss
            is above zero (`AvgNonZeroReducer`); `"mean"`, over every anchor
            (`MeanReducer`); `"per_anchor"`, the same as `"mean"` (the loss
            is already one number per anchor, as `PerAnchorReducer` leaves
            it).

    Returns:
        A scalar, float32 for half-precision embeddings.

    Raises:
        ValueError: for a temperature that is not positive, an unknown
            distance or reducer, badly shaped inputs, or only one of
            `references` and `reference_labels`.
        TypeError: if `miner` is not a `Miner`.

    Examples:
        >>> import numpy as np
        >>> embeddings = np.array([[1.0, 0.0], [1.0, 0.1], [0.0, 1.0], [0.1, 1.0]])
        >>> labels = np.array([0, 0, 1, 1])
        >>> round(float(supervised_contrastive_loss(labels, embeddings)), 4)
        0.0003
        >>> euclidean = supervised_contrastive_loss(
        ...     labels, embeddings, temperature=1.0, distance="euclidean"
        ... )
        >>> round(float(euclidean), 4)
        0.4554
    """
    temperature = check_float(temperature, "temperature", minimum=0.0, inclusive=False)
    reducer = check_choice(reducer, pairs.REDUCERS, "reducer")
    measure = Measure(distance, "supervised_contrastive_loss")
    miner = miner_objects.get(miner)
    labels, embeddings, references, reference_labels, reference_mask = (
        pairs.labelled_inputs(
            labels, embeddings, references, reference_labels, reference_mask
        )
    )
    if pairs.is_empty(embeddings, references):
        return pairs.zero_loss(embeddings, references)
    positive, negative = pairs.label_masks(labels, reference_labels, reference_mask)
    similarity = measure.similarity(embeddings, references)
    if miner is not None:
        positive, negative = miner.mine_for(
            measure, -similarity, embeddings, references, positive, negative
        )
    return from_similarity(similarity, positive, negative, temperature, reducer)


@keras.saving.register_keras_serializable(package="keras_siamese")
class SupervisedContrastiveLoss(FunctionLoss):
    """Supervised contrastive loss: `y_true` labels, `y_pred` embeddings.

    Khosla et al. 2020: pulls every positive of an anchor closer than all its
    negatives under a softmax over cosine similarities at temperature `T`;
    see `supervised_contrastive_loss` for the formula. Defaults and
    reduction are those of pytorch-metric-learning's `SupConLoss()`, so a
    batch gives the same number there and here. The loss is a batch-level
    scalar, so `sample_weight` is not supported.

    Args:
        temperature: `T`, default 0.1.
        distance: `"cosine_similarity"` (default), another similarity, or a
            distance (see `supervised_contrastive_loss`).
        miner: an optional `keras_siamese.miners.Miner` (see `supervised_contrastive_loss`).
        reducer: `"nonzero_mean"` (default), `"mean"` or `"per_anchor"`
            (see `supervised_contrastive_loss`).
        global_batch: under a `tf.distribute` strategy with several replicas,
            compute the loss over the global batch (all-gathered from every
            replica) instead of each replica's slice. A no-op on JAX (whose
            `DataParallel` already sees the global batch) and PyTorch.
        reduction: Keras loss reduction (the loss is already a scalar).
        name: name of the loss.
        dtype: dtype of the computation; defaults to `keras.backend.floatx()`.

    Raises:
        ValueError: for a temperature that is not positive, an unknown
            distance or reducer (at construction); for badly shaped inputs or
            a `sample_weight` (at call).
        TypeError: if `miner` is not a `Miner` (at construction).

    Examples:
        >>> import numpy as np
        >>> loss = SupervisedContrastiveLoss(temperature=1.0)
        >>> embeddings = np.array([[1.0, 0.0], [1.0, 0.0], [0.0, 1.0], [0.0, 1.0]])
        >>> round(float(loss(np.array([0, 0, 1, 1]), embeddings)), 4)
        0.5514

        Usage with `compile()`:

        >>> import keras
        >>> model = keras.Sequential([keras.Input((4,)), keras.layers.Dense(2)])
        >>> model.compile(optimizer="adam", loss=SupervisedContrastiveLoss())
    """

    def __init__(
        self,
        temperature: float = 0.1,
        distance: Any = "cosine_similarity",
        miner: Any = None,
        reducer: str = "nonzero_mean",
        global_batch: bool = False,
        reduction: str = "sum_over_batch_size",
        name: str = "supervised_contrastive_loss",
        dtype: str | None = None,
    ) -> None:
        measure = Measure(distance, "SupervisedContrastiveLoss")
        super().__init__(
            supervised_contrastive_loss,
            global_batch=global_batch,
            reduction=reduction,
            name=name,
            dtype=dtype,
            temperature=check_float(
                temperature, "temperature", minimum=0.0, inclusive=False
            ),
            distance=measure,
            miner=miner_objects.get(miner),
            reducer=check_choice(reducer, pairs.REDUCERS, "reducer"),
        )
        self.distance = measure.name
