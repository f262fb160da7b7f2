"""Multi-similarity loss and pair mining (Wang et al., 2019) of labelled embeddings."""

from __future__ import annotations

from typing import Any

import keras
from keras import ops

from keras_siamese import miners as miner_objects
from keras_siamese._checks import check_bool, check_choice, check_float
from keras_siamese.losses import pairs
from keras_siamese.losses.base import FunctionLoss
from keras_siamese.miners.base import Measure


def _check_arguments(
    alpha: Any,
    beta: Any,
    base: Any,
    mining: Any,
    epsilon: Any,
    miner: Any = None,
    reducer: Any = "mean",
) -> tuple[float, float, float, bool, float, Any, str]:
    mining = check_bool(mining, "mining")
    miner = miner_objects.get(miner)
    if mining and miner is not None:
        raise ValueError(
            "Pass either `mining=True` (the multi-similarity miner inside the "
            f"loss) or a `miner`, not both; got miner={miner!r}."
        )
    return (
        check_float(alpha, "alpha", minimum=0.0, inclusive=False),
        check_float(beta, "beta", minimum=0.0, inclusive=False),
        check_float(base, "base"),
        mining,
        check_float(epsilon, "epsilon", minimum=0.0),
        miner,
        check_choice(reducer, pairs.REDUCERS, "reducer"),
    )


def mine_pairs(
    similarity: Any, positive: Any, negative: Any, epsilon: float
) -> tuple[Any, Any]:
    """The multi-similarity miner: the informative pairs of every anchor.

    A positive pair is kept if `s(i, p) - epsilon < max_n s(i, n)` (it is
    less similar than the hardest negative, up to `epsilon`); a negative pair
    if `s(i, n) + epsilon > min_p s(i, p)`. An anchor without negatives keeps
    no positive pair and one without positives no negative pair; a batch
    without any positive or any negative pair keeps nothing. The rule of
    pytorch-metric-learning's `MultiSimilarityMiner(epsilon)`.

    Returns:
        The kept positive and negative `(B, M)` masks.
    """
    fixed = ops.stop_gradient(similarity)
    hardest_negative = ops.max(
        ops.where(negative, fixed, pairs._LOWEST), axis=1, keepdims=True
    )
    hardest_positive = ops.min(
        ops.where(positive, fixed, pairs._HIGHEST), axis=1, keepdims=True
    )
    anywhere = ops.logical_and(ops.any(positive), ops.any(negative))
    kept_positive = ops.logical_and(positive, fixed - epsilon < hardest_negative)
    kept_negative = ops.logical_and(negative, fixed + epsilon > hardest_positive)
    return (
        ops.logical_and(kept_positive, anywhere),
        ops.logical_and(kept_negative, anywhere),
    )


def from_similarity(
    similarity: Any,
    positive: Any,
    negative: Any,
    alpha: float,
    beta: float,
    base: float,
    mining: bool = False,
    epsilon: float = 0.1,
    reducer: str = "mean",
) -> Any:
    """The loss from a `(B, M)` similarity matrix and its pair masks.

    See `multi_similarity_loss`.
    """
    if mining:
        positive, negative = mine_pairs(similarity, positive, negative, epsilon)
    pulled = pairs.masked_logsumexp(alpha * (base - similarity), positive, add_one=True)
    pushed = pairs.masked_logsumexp(beta * (similarity - base), negative, add_one=True)
    loss = pairs.reduce_anchors(pulled / alpha + pushed / beta, reducer)
    return ops.where(pairs.has_pairs(positive, negative), loss, 0.0)


@keras.saving.register_keras_serializable(package="keras_siamese")
def multi_similarity_loss(
    labels: Any,
    embeddings: Any,
    alpha: float = 2.0,
    beta: float = 50.0,
    base: float = 0.5,
    mining: bool = False,
    epsilon: float = 0.1,
    references: Any | None = None,
    reference_labels: Any | None = None,
    reference_mask: Any | None = None,
    distance: Any = "cosine_similarity",
    miner: Any = None,
    reducer: str = "mean",
) -> Any:
    """Multi-similarity loss (Wang et al. 2019) of one batch.

    Embeddings are L2-normalised and compared by cosine similarity
    `s(i, j)` (`1 - cosine distance` in this package's vocabulary; larger
    means more similar). For every anchor `i`, with positives `P(i)` and
    negatives `N(i)`:

        loss(i) = 1/alpha * log(1 + sum_{p in P(i)} exp(-alpha * (s(i, p) - base)))
                + 1/beta  * log(1 + sum_{n in N(i)} exp( beta * (s(i, n) - base)))

    (with a distance `d` instead of a similarity, `s - base` reads
    `base - d`, as pytorch-metric-learning's `MultiSimilarityLoss(distance=
    ...)`), and the batch loss is the mean over **all** anchors: an anchor without
    positives still pays for its negatives (and one without negatives for
    its positives); `reducer="nonzero_mean"` averages over the anchors whose
    loss is above zero instead. A batch without any pair has loss 0. These
    are the numbers and the reduction (`MeanReducer`) of
    pytorch-metric-learning's `MultiSimilarityLoss()`.

    With `mining=True`, the pairs are first chosen by the paper's pair
    mining, pytorch-metric-learning's `MultiSimilarityMiner(epsilon)`: a
    positive pair is kept if it is less similar than the anchor's most
    similar negative plus `epsilon`, a negative pair if it is more similar
    than the anchor's least similar positive minus `epsilon`; the loss above
    runs over the kept pairs (still averaged over all anchors), and is 0 if
    the batch has no positive or no negative pair.

    With `references`, every row of the batch is an anchor and its positives
    and negatives are the references (a reference equal to the anchor is a
    positive like any other), as pytorch-metric-learning's `ref_emb` and
    `ref_labels`.

    Args:
        labels: integer class labels, shape `(batch,)` or `(batch, 1)`.
        embeddings: shape `(batch, dim)`; need not be normalised.
        alpha: weight of the positive pairs, default 2.
        beta: weight of the negative pairs, default 50.
        base: the similarity `lambda` the pairs are measured from, default 0.5.
        mining: choose the informative pairs first (see above).
        epsilon: the miner's margin, default 0.1; used when `mining=True`.
        references: optional embeddings `(M, dim)` to take positives and
            negatives from instead of the batch.
        reference_labels: labels of `references`, shape `(M,)`; required
            with `references`.
        reference_mask: optional boolean `(batch, M)`: only the
            anchor-reference pairs where it is true count (cross-batch
            memory leaves out empty slots and the batch's own rows with it).
        distance: `"cosine_similarity"` (default, on L2-normalised rows),
            `"dot_product_similarity"`, another
            `keras_siamese.miners.Similarity`, or a distance name or
            `Distance`; `base` is in its units. `mining=True` mines with it
            too.
        miner: an optional `keras_siamese.miners.Miner` (or its serialized
            config), not with `mining=True`: only its pairs count. A pair
            miner's masks are used as they are; a triplet miner's are the
            pairs of its triplets, as pytorch-metric-learning turns triplets
            into pairs. The miner measures with its own distance.
        reducer: how the anchors' losses become the batch loss: `"mean"`
            (default), over every anchor (`MeanReducer`); `"nonzero_mean"`,
            over the anchors whose loss is above zero (`AvgNonZeroReducer`);
            `"per_anchor"`, the same as `"mean"` (one loss per anchor
            already, as `PerAnchorReducer` leaves it).

    Returns:
        A scalar, float32 for half-precision embeddings.

    Raises:
        TypeError: if `mining` is not a bool.
        ValueError: for `alpha` or `beta` not positive, a negative
            `epsilon`, an unknown distance or reducer, both `mining=True`
            and a `miner`, badly shaped inputs, or only one of `references`
            and `reference_labels`.
        TypeError: if `miner` is not a `Miner`.

    Examples:
        >>> import numpy as np
        >>> embeddings = np.array([[1.0, 0.0], [1.0, 0.0], [0.0, 1.0], [0.0, 1.0]])
        >>> labels = np.array([0, 0, 1, 1])
        >>> round(float(multi_similarity_loss(labels, embeddings)), 4)
        0.1566
        >>> by_distance = multi_similarity_loss(
        ...     labels, embeddings, base=1.0, distance="euclidean"
        ... )
        >>> round(float(by_distance), 4)
        0.0635
    """
    alpha, beta, base, mining, epsilon, miner, reducer = _check_arguments(
        alpha, beta, base, mining, epsilon, miner, reducer
    )
    measure = Measure(distance, "multi_similarity_loss")
    labels, embeddings, references, reference_labels, reference_mask = (
        pairs.labelled_inputs(
            labels, embeddings, references, reference_labels, reference_mask
        )
    )
    if pairs.is_empty(embeddings, references):
        return pairs.zero_loss(embeddings, references)
    positive, negative = pairs.label_masks(labels, reference_labels, reference_mask)
    # A distance d enters as the similarity -d, so its base as -base.
    similarity = measure.similarity(embeddings, references)
    base = base if measure.inverted else -base
    if miner is not None:
        positive, negative = miner.mine_for(
            measure, -similarity, embeddings, references, positive, negative
        )
    return from_similarity(
        similarity, positive, negative, alpha, beta, base, mining, epsilon, reducer
    )


@keras.saving.register_keras_serializable(package="keras_siamese")
class MultiSimilarityLoss(FunctionLoss):
    """Multi-similarity loss: `y_true` labels, `y_pred` embeddings.

    Wang et al. 2019: weighs every positive and negative pair of an anchor by
    how hard it is relative to the others, with soft maxima over cosine
    similarities; optionally mines the informative pairs first
    (`mining=True`). See `multi_similarity_loss` for the formula. Defaults
    and reduction are those of pytorch-metric-learning's
    `MultiSimilarityLoss()` (and, with `mining=True`, of its
    `MultiSimilarityMiner()` feeding it). The loss is a batch-level scalar,
    so `sample_weight` is not supported.

    Args:
        alpha: weight of the positive pairs, default 2.
        beta: weight of the negative pairs, default 50.
        base: the similarity the pairs are measured from, default 0.5.
        mining: mine the informative pairs first, default False.
        epsilon: the miner's margin, default 0.1.
        distance: `"cosine_similarity"` (default), another similarity, or a
            distance (see `multi_similarity_loss`).
        miner: an optional `keras_siamese.miners.Miner` (see
            `multi_similarity_loss`); not with `mining=True`.
        reducer: `"mean"` (default), `"nonzero_mean"` or `"per_anchor"`
            (see `multi_similarity_loss`).
        global_batch: under a `tf.distribute` strategy with several replicas,
            compute the loss over the global batch (all-gathered from every
            replica) instead of each replica's slice. A no-op on JAX (whose
            `DataParallel` already sees the global batch) and PyTorch.
        reduction: Keras loss reduction (the loss is already a scalar).
        name: name of the loss.
        dtype: dtype of the computation; defaults to `keras.backend.floatx()`.

    Raises:
        TypeError: if `mining` is not a bool (at construction).
        ValueError: for `alpha` or `beta` not positive, a negative
            `epsilon`, an unknown distance or reducer, or both `mining=True`
            and a `miner` (at construction); for badly shaped inputs or a
            `sample_weight` (at call).

    Examples:
        >>> import numpy as np
        >>> loss = MultiSimilarityLoss(mining=True)
        >>> embeddings = np.array([[1.0, 0.0], [0.6, 0.8], [0.8, 0.6], [0.0, 1.0]])
        >>> round(float(loss(np.array([0, 0, 1, 1]), embeddings)), 4)
        0.6791

        Usage with `compile()`:

        >>> import keras
        >>> model = keras.Sequential([keras.Input((4,)), keras.layers.Dense(2)])
        >>> model.compile(optimizer="adam", loss=MultiSimilarityLoss())
    """

    def __init__(
        self,
        alpha: float = 2.0,
        beta: float = 50.0,
        base: float = 0.5,
        mining: bool = False,
        epsilon: float = 0.1,
        distance: Any = "cosine_similarity",
        miner: Any = None,
        reducer: str = "mean",
        global_batch: bool = False,
        reduction: str = "sum_over_batch_size",
        name: str = "multi_similarity_loss",
        dtype: str | None = None,
    ) -> None:
        alpha, beta, base, mining, epsilon, miner, reducer = _check_arguments(
            alpha, beta, base, mining, epsilon, miner, reducer
        )
        measure = Measure(distance, "MultiSimilarityLoss")
        super().__init__(
            multi_similarity_loss,
            global_batch=global_batch,
            reduction=reduction,
            name=name,
            dtype=dtype,
            alpha=alpha,
            beta=beta,
            base=base,
            mining=mining,
            epsilon=epsilon,
            distance=measure,
            miner=miner,
            reducer=reducer,
        )
        self.distance = measure.name
