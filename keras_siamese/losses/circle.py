"""Circle loss (Sun et al., 2020) of labelled embeddings, pair-based form."""

from __future__ import annotations

from typing import Any

import keras
from keras import ops

from keras_siamese import miners as miner_objects
from keras_siamese._checks import check_choice, check_float
from keras_siamese.losses import pairs
from keras_siamese.losses.base import FunctionLoss
from keras_siamese.miners.base import CosineSimilarity, Measure


def _check_arguments(m: Any, gamma: Any, reducer: Any) -> tuple[float, float, str]:
    return (
        check_float(m, "m", minimum=0.0),
        check_float(gamma, "gamma", minimum=0.0, inclusive=False),
        check_choice(reducer, pairs.REDUCERS, "reducer"),
    )


def _check_distance(distance: Any, user: str) -> Measure:
    measure = Measure(distance, user)
    if not isinstance(measure.identifier, CosineSimilarity):
        raise ValueError(
            f"{user} takes only distance='cosine_similarity' (its optima "
            "1 + m and -m are cosine similarities, as pytorch-metric-learning's "
            f"CircleLoss requires a CosineSimilarity); got {measure.name!r}."
        )
    return measure


def from_similarity(
    similarity: Any,
    positive: Any,
    negative: Any,
    m: float,
    gamma: float,
    reducer: str = "nonzero_mean",
) -> Any:
    """The loss from a `(B, M)` similarity matrix and its pair masks.

    See `circle_loss`.
    """
    fixed = ops.stop_gradient(similarity)
    # The weights alpha_p, alpha_n are computed from the similarities but
    # not differentiated, as in the paper.
    positive_logits = -gamma * ops.relu(1.0 + m - fixed) * (similarity - (1.0 - m))
    negative_logits = gamma * ops.relu(fixed + m) * (similarity - m)
    total = pairs.masked_logsumexp(positive_logits, positive) + pairs.masked_logsumexp(
        negative_logits, negative
    )
    both = ops.logical_and(ops.any(positive, axis=1), ops.any(negative, axis=1))
    losses = ops.where(both, ops.softplus(total), 0.0)
    loss = pairs.reduce_anchors(losses, reducer)
    return ops.where(pairs.has_pairs(positive, negative), loss, 0.0)


@keras.saving.register_keras_serializable(package="keras_siamese")
def circle_loss(
    labels: Any,
    embeddings: Any,
    m: float = 0.4,
    gamma: float = 80.0,
    references: Any | None = None,
    reference_labels: Any | None = None,
    reference_mask: Any | None = None,
    distance: Any = "cosine_similarity",
    miner: Any = None,
    reducer: str = "nonzero_mean",
) -> Any:
    """Circle loss (Sun et al. 2020), pair-based form, of one batch.

    Embeddings are L2-normalised and compared by cosine similarity
    `s(i, j)` (`1 - cosine distance` in this package's vocabulary; larger
    means more similar). Each similarity is weighted by how far it is from
    its optimum, `alpha_p = max(1 + m - s_p, 0)` and
    `alpha_n = max(s_n + m, 0)` (not differentiated), and for an anchor `i`
    with positives `P(i)` and negatives `N(i)`:

        loss(i) = softplus(logsumexp_{p in P(i)} -gamma * alpha_p * (s_p - (1 - m))
                         + logsumexp_{n in N(i)}  gamma * alpha_n * (s_n - m))

    An anchor without positives or without negatives has loss 0; the batch
    loss is the mean over the anchors whose loss is above zero. These are the
    numbers and the reduction (`AvgNonZeroReducer`) of
    pytorch-metric-learning's `CircleLoss()`.

    With `references`, every row of the batch is an anchor and its positives
    and negatives are the references (a reference equal to the anchor is a
    positive like any other), as pytorch-metric-learning's `ref_emb` and
    `ref_labels`.

    Args:
        labels: integer class labels, shape `(batch,)` or `(batch, 1)`.
        embeddings: shape `(batch, dim)`; need not be normalised.
        m: the relaxation margin, default 0.4 (the paper's value for
            fine-grained retrieval; 0.25 for face recognition and re-id).
        gamma: the scale, default 80 (the paper: 80 for fine-grained
            retrieval, 128 to 256 for faces and re-id).
        references: optional embeddings `(M, dim)` to take positives and
            negatives from instead of the batch.
        reference_labels: labels of `references`, shape `(M,)`; required
            with `references`.
        reference_mask: optional boolean `(batch, M)`: only the
            anchor-reference pairs where it is true count (cross-batch
            memory leaves out empty slots and the batch's own rows with it).
        distance: `"cosine_similarity"` (or a `CosineSimilarity`), the only
            measure: the loss's optima are cosine similarities.
        miner: an optional `keras_siamese.miners.Miner` (or its serialized
            config): only its pairs count. A pair miner's masks are used as
            they are; a triplet miner's are the pairs of its triplets, as
            pytorch-metric-learning turns triplets into pairs. The miner
            measures with its own distance.
        reducer: how the anchors' losses become the batch loss:
            `"nonzero_mean"` (default), over the anchors whose loss is above
            zero (`AvgNonZeroReducer`); `"mean"`, over every anchor
            (`MeanReducer`); `"per_anchor"`, the same as `"mean"` (one loss
            per anchor already, as `PerAnchorReducer` leaves it).

    Returns:
        A scalar, float32 for half-precision embeddings.

    Raises:
        ValueError: for a negative `m`, a `gamma` that is not positive, any
            other `distance`, an unknown reducer, badly shaped inputs, or
            only one of `references` and `reference_labels`.
        TypeError: if `miner` is not a `Miner`.

    Examples:
        >>> import numpy as np
        >>> embeddings = np.array([[1.0, 0.0], [0.8, 0.6], [0.0, 1.0], [0.6, 0.8]])
        >>> labels = np.array([0, 0, 1, 1])
        >>> round(float(circle_loss(labels, embeddings, gamma=1.0)), 4)
        1.2127
    """
    m, gamma, reducer = _check_arguments(m, gamma, reducer)
    measure = _check_distance(distance, "circle_loss")
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
    return from_similarity(similarity, positive, negative, m, gamma, reducer)


@keras.saving.register_keras_serializable(package="keras_siamese")
class CircleLoss(FunctionLoss):
    """Circle loss: `y_true` labels, `y_pred` embeddings.

    Sun et al. 2020, pair-based form: a soft version of "every positive more
    similar than every negative", where each similarity is weighted by its
    distance from the optimum (`1 + m` for positives, `-m` for negatives);
    see `circle_loss` for the formula. Defaults and reduction are those of
    pytorch-metric-learning's `CircleLoss()`. The loss is a batch-level
    scalar, so `sample_weight` is not supported.

    Args:
        m: the relaxation margin, default 0.4.
        gamma: the scale, default 80.
        distance: `"cosine_similarity"`, the only measure (see
            `circle_loss`).
        miner: an optional `keras_siamese.miners.Miner` (see `circle_loss`).
        reducer: `"nonzero_mean"` (default), `"mean"` or `"per_anchor"`
            (see `circle_loss`).
        global_batch: under a `tf.distribute` strategy with several replicas,
            compute the loss over the global batch (all-gathered from every
            replica) instead of each replica's slice. A no-op on JAX (whose
            `DataParallel` already sees the global batch) and PyTorch.
        reduction: Keras loss reduction (the loss is already a scalar).
        name: name of the loss.
        dtype: dtype of the computation; defaults to `keras.backend.floatx()`.

    Raises:
        ValueError: for a negative `m`, a `gamma` that is not positive or
            another distance than `"cosine_similarity"`, or an unknown
            reducer (at construction);
            for badly shaped inputs or a `sample_weight` (at call).
        TypeError: if `miner` is not a `Miner` (at construction).

    Examples:
        >>> import numpy as np
        >>> loss = CircleLoss(m=0.25, gamma=1.0)
        >>> embeddings = np.array([[1.0, 0.0], [0.8, 0.6], [0.0, 1.0], [0.6, 0.8]])
        >>> round(float(loss(np.array([0, 0, 1, 1]), embeddings)), 4)
        1.3528

        With a triplet miner, over the pairs of its triplets:

        >>> from keras_siamese.miners import TripletMarginMiner
        >>> mined = CircleLoss(m=0.25, gamma=1.0, miner=TripletMarginMiner(0.5))
        >>> round(float(mined(np.array([0, 0, 1, 1]), embeddings)), 4)
        1.1858

        Usage with `compile()`:

        >>> import keras
        >>> model = keras.Sequential([keras.Input((4,)), keras.layers.Dense(2)])
        >>> model.compile(optimizer="adam", loss=CircleLoss())
    """

    def __init__(
        self,
        m: float = 0.4,
        gamma: float = 80.0,
        distance: Any = "cosine_similarity",
        miner: Any = None,
        reducer: str = "nonzero_mean",
        global_batch: bool = False,
        reduction: str = "sum_over_batch_size",
        name: str = "circle_loss",
        dtype: str | None = None,
    ) -> None:
        m, gamma, reducer = _check_arguments(m, gamma, reducer)
        measure = _check_distance(distance, "CircleLoss")
        super().__init__(
            circle_loss,
            global_batch=global_batch,
            reduction=reduction,
            name=name,
            dtype=dtype,
            m=m,
            gamma=gamma,
            distance=measure,
            miner=miner_objects.get(miner),
            reducer=reducer,
        )
        self.distance = measure.name
