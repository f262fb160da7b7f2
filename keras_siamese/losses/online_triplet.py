"""Triplet loss with triplets mined inside each batch of labelled embeddings."""

from __future__ import annotations

from typing import Any

import keras
from keras import ops

from keras_siamese import distances
from keras_siamese import miners as miner_objects
from keras_siamese._checks import check_bool, check_choice, check_margin, check_mining
from keras_siamese.losses import mining as miners
from keras_siamese.losses import pairs
from keras_siamese.losses.base import FunctionLoss

_MINERS = {
    "batch_hard": miners.batch_hard,
    "batch_all": miners.batch_all,
    "semi_hard": miners.semi_hard,
}


def _check_soft(soft: bool, mining_mode: str | None) -> bool:
    soft = check_bool(soft, "soft")
    if soft and mining_mode in ("batch_all", None):
        raise ValueError(
            '`soft=True` is not supported with mining="batch_all" or a miner: '
            "the soft margin has no hinge, so every triplet would have to be "
            "materialised. Use batch_hard or semi_hard with soft=True, or "
            "`smooth_loss=True`."
        )
    return soft


def _check_options(
    mining: str | None, miner: Any, soft: bool, smooth_loss: bool, reducer: Any
) -> tuple[str | None, Any, bool, bool, str | None]:
    """Resolve `mining` and check it against `miner`, `soft`, `smooth_loss`
    and `reducer`; returns them checked."""
    miner = miner_objects.get(miner)
    if miner is not None and mining is not None:
        raise ValueError(
            f"Pass either `mining` or a `miner`, not both; got mining={mining!r} "
            f"and miner={miner!r}."
        )
    if miner is None:
        mining = check_mining("batch_hard" if mining is None else mining)
    smooth_loss = check_bool(smooth_loss, "smooth_loss")
    soft = _check_soft(soft, mining)
    if soft and smooth_loss:
        raise ValueError(
            "`soft` (softplus without the margin) and `smooth_loss` (softplus "
            "of the margin violation) are two forms of one option: pass one."
        )
    if reducer == "per_anchor":
        raise ValueError(
            "reducer='per_anchor' averages pair losses per anchor, as "
            "pytorch-metric-learning's PerAnchorReducer, which has no triplet "
            "reduction: use it with OnlineContrastiveLoss."
        )
    if reducer is not None:
        reducer = check_choice(reducer, miners.REDUCERS, "reducer")
        if mining in ("batch_hard", "semi_hard"):
            raise ValueError(
                f"`reducer` applies to a miner's triplets or to "
                f'mining="batch_all"; mining={mining!r} has its own reduction.'
            )
    return mining, miner, soft, smooth_loss, reducer


def _mined_loss(
    matrix: Any,
    positive: Any,
    negative: Any,
    margin: float,
    smooth: bool,
    reducer: str,
    miner: Any,
    measure: Any,
    embeddings: Any,
    references: Any | None,
) -> Any:
    """The loss over the triplets of `miner` (or all of them, without one)."""
    window: tuple[Any, Any] = (None, None)
    if miner is not None:
        same = miner.measure == measure
        miner_matrix = matrix if same else miner.measure.matrix(embeddings, references)
        miner_matrix = ops.stop_gradient(miner_matrix)
        if miner.kind == "triplets" and (smooth or not same):
            triplets = miner.mine_triplets(miner_matrix, positive, negative)
            return miners.dense_triplets(matrix, triplets, margin, smooth, reducer)
        if miner.kind == "triplets":
            window = miner.window
        else:
            positive, negative = miner.mine(miner_matrix, positive, negative)
    if smooth:
        triplets = ops.logical_and(
            ops.expand_dims(positive, 2), ops.expand_dims(negative, 1)
        )
        return miners.dense_triplets(matrix, triplets, margin, True, reducer)
    return miners.windowed_triplets(matrix, positive, negative, margin, window, reducer)


@keras.saving.register_keras_serializable(package="keras_siamese")
def online_triplet_loss(
    labels: Any,
    embeddings: Any,
    mining: str | None = None,
    margin: float = 1.0,
    distance: str | distances.Distance = "euclidean",
    soft: bool = False,
    references: Any | None = None,
    reference_labels: Any | None = None,
    reference_mask: Any | None = None,
    miner: Any = None,
    smooth_loss: bool = False,
    reducer: str | None = None,
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

    With a `miner` (see `keras_siamese.miners`) instead of `mining`, the
    loss runs over the miner's triplets, as pytorch-metric-learning's
    `TripletMarginLoss` over the output of a miner: for a pair miner, every
    mined positive of an anchor with every mined negative of that anchor;
    for `TripletMarginMiner`, the triplets whose gap is in its window. The
    losses `max(d(a, p) - d(a, n) + margin, 0)` are averaged by `reducer`
    (`"nonzero_mean"`, the default: over the triplets with a loss above
    zero, pytorch-metric-learning's `AvgNonZeroReducer`; `"mean"`: over
    every mined triplet). Memory stays `O(B * M)`, except that the loss
    builds the `(B, M, M)` triplets when a `TripletMarginMiner` measures
    with another distance than the loss, or with `smooth_loss=True` (no
    hinge to search for). pytorch-metric-learning's `TripletMarginLoss()`
    is this loss with `mining="batch_all"`, `margin=0.05` on L2-normalised
    embeddings.

    Args:
        labels: integer class labels, shape `(batch,)` or `(batch, 1)`.
            Keras losses cast labels to float32, which keeps integers exact
            up to 2**24.
        embeddings: shape `(batch, dim)`.
        mining: `"batch_hard"` (the default without a miner), `"batch_all"`
            or `"semi_hard"`; not with a `miner`.
        margin: the required gap between negative and positive distances.
            Default 1.0 with the plain Euclidean distance, as TensorFlow
            Addons' `TripletHardLoss` and `TripletSemiHardLoss`. FaceNet used
            0.2 with squared distances of unit-norm embeddings; scale the
            margin with the distance. Ignored when `soft=True`.
        distance: `"euclidean"` (default), `"squared_euclidean"`, `"cosine"`,
            `"manhattan"`, a `Distance` (see `keras_siamese.distances.get`),
            or `"cosine_similarity"` (the margin is then a gap of
            similarities, which equals the gap of cosine distances).
        soft: softplus instead of the hinge, without the margin (Hermans et
            al.'s soft margin): `softplus(d(a, p) - d(a, n))`; for
            `batch_hard` and `semi_hard` only.
        references: optional embeddings `(M, dim)` to take positives and
            negatives from instead of the batch.
        reference_labels: labels of `references`, shape `(M,)`; required
            with `references`.
        reference_mask: optional boolean `(batch, M)`: only the
            anchor-reference pairs where it is true count (cross-batch
            memory leaves out empty slots and the batch's own rows with it).
        miner: a `keras_siamese.miners.Miner` choosing the triplets.
        smooth_loss: `softplus(d(a, p) - d(a, n) + margin)` instead of the
            hinge, the margin inside the softplus (pytorch-metric-learning's
            `smooth_loss=True`); any mining mode or miner. Not with `soft`.
        reducer: `"nonzero_mean"` (default) or `"mean"`, with a miner or
            `mining="batch_all"` only (the other modes have their own).

    Returns:
        A scalar, float32 for half-precision embeddings.

    Raises:
        ValueError: for an unknown `mining`, `distance` or `reducer`, a
            negative margin, `soft=True` with `batch_all` or a miner, both
            `soft` and `smooth_loss`, both `mining` and `miner`, a
            `reducer` with `batch_hard` or `semi_hard`, badly shaped inputs,
            or only one of `references` and `reference_labels`.
        TypeError: if `miner` is not a `Miner`.

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
    mining_mode, miner, soft, smooth_loss, reducer = _check_options(
        mining, miner, soft, smooth_loss, reducer
    )
    margin = check_margin(margin)
    measure = miner_objects.Measure(distance, "online_triplet_loss")
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
    matrix = measure.matrix(embeddings, references)
    # batch_all with its own reduction and the hinge keeps its own miner;
    # the other batch_all forms and miners go through `_mined_loss`.
    plain_batch_all = not smooth_loss and reducer in (None, "nonzero_mean")
    if miner is not None or (mining_mode == "batch_all" and not plain_batch_all):
        return _mined_loss(
            matrix,
            positive,
            negative,
            margin,
            smooth_loss,
            reducer or "nonzero_mean",
            miner,
            measure,
            embeddings,
            references,
        )
    return _MINERS[mining_mode](matrix, positive, negative, margin, soft, smooth_loss)


@keras.saving.register_keras_serializable(package="keras_siamese")
class OnlineTripletLoss(FunctionLoss):
    """Triplet loss with in-batch mining: `y_true` labels, `y_pred` embeddings.

    Fit an embedding model directly on `(x, class_label)` batches; triplets
    are mined in each batch (see `online_triplet_loss` for the three modes).
    The loss is a batch-level scalar, so `sample_weight` is not supported.
    Batches need several examples per class for there to be triplets.

    With a `miner` (see `keras_siamese.miners`), the loss runs over the
    miner's triplets and averages them by `reducer`, as
    pytorch-metric-learning's `TripletMarginLoss` fed by a miner.

    Args:
        mining: `"batch_hard"` (the default without a miner), `"batch_all"`
            or `"semi_hard"`; not with a `miner`.
        margin: default 1.0 with the plain Euclidean distance (TensorFlow
            Addons' defaults, so migrating users get the same numbers).
            Ignored when `soft=True`.
        distance: `"euclidean"` (default), `"squared_euclidean"`, `"cosine"`,
            `"manhattan"`, a `Distance` (see `keras_siamese.distances.get`),
            or `"cosine_similarity"`.
        soft: softplus instead of the hinge, without the margin (not with
            `batch_all` or a miner).
        miner: a `keras_siamese.miners.Miner` (or its serialized config).
        smooth_loss: `softplus(d(a, p) - d(a, n) + margin)` instead of the
            hinge (pytorch-metric-learning's `smooth_loss=True`).
        reducer: `"nonzero_mean"` (default) or `"mean"`; with a miner or
            `mining="batch_all"` only.
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
        ValueError: for an unknown mode, distance or reducer, a negative
            margin, or options that do not go together (see
            `online_triplet_loss`) (at construction); for badly shaped
            inputs or a `sample_weight` (at call).
        TypeError: if `miner` is not a `Miner` (at construction).

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

        With a miner, pytorch-metric-learning's `TripletMarginMiner` and
        `TripletMarginLoss` pipeline:

        >>> from keras_siamese.miners import TripletMarginMiner
        >>> miner = TripletMarginMiner(margin=0.2, type_of_triplets="semihard")
        >>> loss = OnlineTripletLoss(miner=miner, margin=0.1)
        >>> embeddings = np.array([[0.0], [0.5], [0.55], [1.25]])
        >>> round(float(loss(np.array([0, 0, 1, 1]), embeddings)), 4)
        0.05
    """

    def __init__(
        self,
        mining: str | None = None,
        margin: float = 1.0,
        distance: str | distances.Distance = "euclidean",
        soft: bool = False,
        miner: Any = None,
        smooth_loss: bool = False,
        reducer: str | None = None,
        global_batch: bool = False,
        reduction: str = "sum_over_batch_size",
        name: str = "online_triplet_loss",
        dtype: str | None = None,
    ) -> None:
        mining, miner, soft, smooth_loss, reducer = _check_options(
            mining, miner, soft, smooth_loss, reducer
        )
        measure = miner_objects.Measure(distance, "OnlineTripletLoss")
        super().__init__(
            online_triplet_loss,
            global_batch=global_batch,
            reduction=reduction,
            name=name,
            dtype=dtype,
            mining=mining,
            margin=check_margin(margin),
            distance=measure,
            soft=soft,
            miner=miner,
            smooth_loss=smooth_loss,
            reducer=reducer,
        )
        # The name, as before; the function gets the measure itself.
        self.distance = measure.name
