"""NT-Xent / InfoNCE loss (SimCLR; multiple negatives ranking) of labelled embeddings."""

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
    reducer: str = "mean",
) -> Any:
    """The loss from a `(B, M)` similarity matrix and its pair masks.

    See `ntxent_loss`. Per positive pair `(i, p)` the loss is
    `softplus(logsumexp_n(s(i, n) / T) - s(i, p) / T)`, so only one
    `logsumexp` per anchor is needed: `O(B * M)` memory.
    """
    logits = similarity / temperature
    negatives = ops.expand_dims(pairs.masked_logsumexp(logits, negative), 1)
    has_negative = ops.any(negative, axis=1, keepdims=True)
    # An anchor without negatives: its positive pairs cost log(1) = 0 and
    # still count in the mean, as in pytorch-metric-learning.
    counted = ops.logical_and(positive, has_negative)
    per_pair = ops.where(counted, ops.softplus(negatives - logits), 0.0)
    loss = pairs.reduce_pairs(per_pair, positive, reducer)
    valid = ops.logical_and(ops.any(positive), ops.any(negative))
    valid = ops.logical_and(valid, pairs.has_pairs(positive, negative))
    return ops.where(valid, loss, 0.0)


def _check_miner(miner: Any) -> Any:
    miner = miner_objects.get(miner)
    if miner is not None and miner.kind == "triplets":
        raise ValueError(
            "NT-Xent takes a pair miner (PairMarginMiner, MultiSimilarityMiner, "
            f"BatchEasyHardMiner); got the triplet miner {type(miner).__name__}. "
            "Its softmax would count a pair once per triplet holding it, as "
            "pytorch-metric-learning does, not once."
        )
    return miner


@keras.saving.register_keras_serializable(package="keras_siamese")
def ntxent_loss(
    labels: Any,
    embeddings: Any,
    temperature: float = 0.07,
    references: Any | None = None,
    reference_labels: Any | None = None,
    reference_mask: Any | None = None,
    distance: Any = "cosine_similarity",
    miner: Any = None,
    reducer: str = "mean",
) -> Any:
    """Normalised temperature-scaled cross entropy (NT-Xent, InfoNCE).

    Embeddings are L2-normalised and compared by cosine similarity
    `s(i, j)` (`1 - cosine distance` in this package's vocabulary). Every
    positive pair `(i, p)` (two rows of one class) is a softmax
    classification of `p` among `p` and all the negatives `N(i)` of `i`:

        loss(i, p) = -log(exp(s(i, p) / T)
                          / (exp(s(i, p) / T) + sum_{n in N(i)} exp(s(i, n) / T)))

    With another `distance`, `s(i, j)` is that similarity, or minus that
    distance (pytorch-metric-learning's `NTXentLoss(distance=...)`). The
    loss is averaged over all positive pairs (by default; see `reducer`), 0
    for a batch without a positive or without a negative pair. For SimCLR, give the two augmented views of
    example `k` the label `k`: each view's positive is then the other view and
    its negatives the other `2N - 2` views. With one positive per anchor this
    is also the multiple-negatives ranking loss with in-batch negatives.
    These are the numbers and the reduction (`MeanReducer`) of
    pytorch-metric-learning's `NTXentLoss()` with its defaults.

    With `references`, every row of the batch is an anchor and its positives
    and negatives are the references (a reference equal to the anchor is a
    positive like any other), as `NTXentLoss()(embeddings, labels,
    ref_emb=references, ref_labels=reference_labels)`.

    Args:
        labels: integer class labels, shape `(batch,)` or `(batch, 1)`.
        embeddings: shape `(batch, dim)`; need not be normalised.
        temperature: `T`, default 0.07 (pytorch-metric-learning's default;
            SimCLR used 0.1 to 0.5).
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
        miner: an optional pair miner (`PairMarginMiner`,
            `MultiSimilarityMiner`, `BatchEasyHardMiner`, or its serialized
            config): only its pairs count, as positives and in the
            denominator. The miner measures with its own distance.
        reducer: how the positive pairs' losses become the batch loss:
            `"mean"` (default), the mean over every positive pair
            (`MeanReducer`); `"nonzero_mean"`, over the pairs whose loss is
            above zero (`AvgNonZeroReducer`); `"per_anchor"`, each anchor's
            mean over its positive pairs, then the mean over every anchor,
            an anchor without positive pairs counting as 0
            (`PerAnchorReducer`).

    Returns:
        A scalar, float32 for half-precision embeddings.

    Raises:
        ValueError: for a temperature that is not positive, an unknown
            distance or reducer, a triplet miner, badly shaped inputs, or
            only one of `references` and `reference_labels`.
        TypeError: if `miner` is not a `Miner`.

    Examples:
        >>> import numpy as np
        >>> views = np.array([[1.0, 0.0], [0.0, 1.0], [1.0, 0.0], [0.0, 1.0]])
        >>> pair_ids = np.array([0, 1, 0, 1])
        >>> round(float(ntxent_loss(pair_ids, views, temperature=1.0)), 4)
        0.5514
        >>> dot = ntxent_loss(pair_ids, views, 1.0, distance="dot_product_similarity")
        >>> round(float(dot), 4)
        0.5514
    """
    temperature = check_float(temperature, "temperature", minimum=0.0, inclusive=False)
    reducer = check_choice(reducer, pairs.REDUCERS, "reducer")
    measure = Measure(distance, "ntxent_loss")
    miner = _check_miner(miner)
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
class NTXentLoss(FunctionLoss):
    """NT-Xent (InfoNCE) loss: `y_true` labels, `y_pred` embeddings.

    The contrastive loss of SimCLR (Chen et al. 2020): give the two views of
    an example the same label. Every positive pair is a softmax over the
    positive and the anchor's negatives at temperature `T`; see
    `ntxent_loss`. Defaults and reduction are those of
    pytorch-metric-learning's `NTXentLoss()`. The loss is a batch-level
    scalar, so `sample_weight` is not supported.

    Args:
        temperature: `T`, default 0.07.
        distance: `"cosine_similarity"` (default), another similarity, or a
            distance (see `ntxent_loss`).
        miner: an optional pair miner (see `ntxent_loss`).
        reducer: `"mean"` (default), `"nonzero_mean"` or `"per_anchor"`
            (see `ntxent_loss`).
        global_batch: under a `tf.distribute` strategy with several replicas,
            compute the loss over the global batch (all-gathered from every
            replica) instead of each replica's slice. A no-op on JAX (whose
            `DataParallel` already sees the global batch) and PyTorch.
        reduction: Keras loss reduction (the loss is already a scalar).
        name: name of the loss.
        dtype: dtype of the computation; defaults to `keras.backend.floatx()`.

    Raises:
        ValueError: for a temperature that is not positive, an unknown
            distance or reducer, or a triplet miner (at construction); for
            badly shaped inputs or a `sample_weight` (at call).
        TypeError: if `miner` is not a `Miner` (at construction).

    Examples:
        >>> import numpy as np
        >>> loss = NTXentLoss(temperature=0.5)
        >>> views = np.array([[1.0, 0.0], [0.0, 1.0], [1.0, 0.0], [0.0, 1.0]])
        >>> round(float(loss(np.array([0, 1, 0, 1]), views)), 4)
        0.2395

        Usage with `compile()`:

        >>> import keras
        >>> model = keras.Sequential([keras.Input((4,)), keras.layers.Dense(2)])
        >>> model.compile(optimizer="adam", loss=NTXentLoss())
    """

    def __init__(
        self,
        temperature: float = 0.07,
        distance: Any = "cosine_similarity",
        miner: Any = None,
        reducer: str = "mean",
        global_batch: bool = False,
        reduction: str = "sum_over_batch_size",
        name: str = "ntxent_loss",
        dtype: str | None = None,
    ) -> None:
        measure = Measure(distance, "NTXentLoss")
        super().__init__(
            ntxent_loss,
            global_batch=global_batch,
            reduction=reduction,
            name=name,
            dtype=dtype,
            temperature=check_float(
                temperature, "temperature", minimum=0.0, inclusive=False
            ),
            distance=measure,
            miner=_check_miner(miner),
            reducer=check_choice(reducer, pairs.REDUCERS, "reducer"),
        )
        self.distance = measure.name
