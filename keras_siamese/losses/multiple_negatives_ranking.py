"""Multiple negatives ranking loss of (anchor, positive, *hard negatives) batches."""

from __future__ import annotations

from typing import Any

import keras
import numpy as np
from keras import ops

from keras_siamese._checks import (
    check_bool,
    check_choice,
    check_float,
    check_same_batch,
)
from keras_siamese.distances import as_float, l2_normalize
from keras_siamese.losses import pairs
from keras_siamese.losses.base import FunctionLoss

SIMILARITIES = ("cosine", "dot")

# Keras casts `y_true` to the loss's float dtype: float32 holds every
# integer up to 2**24 exactly, and no further (2**24 + 1 rounds to 2**24).
_EXACT_ID_LIMIT = 2**24


def _check_exact_ids(ids: Any) -> None:
    """Refuse concrete candidate ids that the float32 cast would merge.

    Only NumPy arrays and Python numbers or sequences are read: symbolic
    and traced tensors inside a compiled step have no values to check.

    Raises:
        ValueError: if an id's magnitude exceeds `2**24`.
    """
    if isinstance(ids, (list, tuple, int, float)):
        ids = np.asarray(ids)
    if not isinstance(ids, np.ndarray) or ids.dtype.kind not in "iuf" or not ids.size:
        return
    largest = np.max(np.abs(ids.astype(np.float64)))
    if largest > _EXACT_ID_LIMIT:
        raise ValueError(
            "With `remove_accidental_hits`, the candidate ids in `y_true` must "
            f"be at most 2**24 = {_EXACT_ID_LIMIT} in magnitude: Keras casts "
            "`y_true` to float32, which would merge larger ids that differ by "
            f"little; got {largest:.0f}. Renumber the ids (for example by their "
            "rank, `np.unique(ids, return_inverse=True)[1]`)."
        )


def _columns(y_pred: Any) -> Any:
    """`y_pred` as a float tensor of shape `(batch, 2 + negatives, dim)`."""
    y_pred = as_float(y_pred)
    shape = tuple(y_pred.shape)
    if len(shape) != 3 or (shape[1] is not None and shape[1] < 2):
        raise ValueError(
            "`y_pred` must have shape (batch, 2 + negatives, dim): per row the "
            "anchor, its positive and any hard negatives, stacked on axis 1 as "
            f'SiameseWrapper(merge="stack") gives them; got shape {shape}.'
        )
    return y_pred


def _hit_masks(candidate_ids: Any, y_pred: Any) -> tuple[Any, Any]:
    """The candidates to leave out of the softmax of each anchor and positive.

    `candidate_ids` `(batch, 1 + n)` are the ids of every row's positive
    and hard negatives. Returns boolean `(batch, batch * (1 + n))` (anchors
    against every candidate, positives first) and `(batch, batch)`
    (positives against the anchors): true where a candidate other than the
    row's own positive has the id of that positive.
    """
    if candidate_ids is None:
        raise ValueError(
            "With `remove_accidental_hits`, `y_true` must hold the candidate "
            "ids; got None."
        )
    ids = ops.convert_to_tensor(candidate_ids)
    batch, columns = ops.shape(y_pred)[0], y_pred.shape[1]
    columns = None if columns is None else columns - 1
    if len(ids.shape) == 1:
        ids = ops.expand_dims(ids, 1)
    if len(ids.shape) != 2 or (
        ids.shape[1] is not None and columns is not None and ids.shape[1] != columns
    ):
        raise ValueError(
            "With `remove_accidental_hits`, `y_true` holds the ids of every "
            f"row's positive and hard negatives: shape (batch, 1 + n) = "
            f"(batch, {columns}); got "
            f"{tuple(ids.shape)}."
        )
    check_same_batch(ids, y_pred, "y_true", "y_pred")
    ids = ops.stop_gradient(ids)
    flat = ops.reshape(ops.transpose(ids), (-1,))  # positives, then each column
    own = ops.expand_dims(ids[:, 0], 1)
    rows = ops.arange(batch)
    positions = ops.arange(ops.shape(flat)[0])
    is_own = ops.expand_dims(rows, 1) == ops.expand_dims(positions, 0)
    hits = ops.logical_and(own == ops.expand_dims(flat, 0), ops.logical_not(is_own))
    return hits, hits[:, :batch]


@keras.saving.register_keras_serializable(package="keras_siamese")
def multiple_negatives_ranking_loss(
    y_true: Any,
    y_pred: Any,
    scale: float = 20.0,
    similarity: str = "cosine",
    symmetric: bool = False,
    remove_accidental_hits: bool = False,
) -> Any:
    """Multiple negatives ranking loss (InfoNCE with in-batch negatives).

    `y_pred` holds per row an anchor `a_i`, its positive `p_i` and `n >= 0`
    hard negatives `h_ik`: shape `(batch, 2 + n, dim)`. Every anchor is a
    softmax classification of its positive among all the candidates of the
    batch, the positives of the other rows and every hard negative:

        loss_i = -log(exp(s * sim(a_i, p_i))
                      / sum_{c in candidates} exp(s * sim(a_i, c)))

    averaged over the anchors, where `s` is `scale` and `sim` the cosine
    similarity or the dot product. With `symmetric`, each positive is also a
    softmax classification of its anchor among all the anchors of the batch
    (hard negatives take no part in that direction), and the loss is the
    mean of the two directions. These are the values of sentence-transformers'
    `MultipleNegativesRankingLoss` (`compute_loss_from_embeddings` on the
    columns `[a, p, h_1, ..., h_n]`) and, with `symmetric`, of its
    `MultipleNegativesSymmetricRankingLoss`.

    With `remove_accidental_hits`, `y_true` holds the id of every
    candidate, shape `(batch, 1 + n)` (the positive's and the hard
    negatives'; `(batch,)` without hard negatives): a candidate that has the
    id of a row's positive but is not that positive (the same document
    twice in a batch) is left out of that row's softmax instead of being
    pushed away, as keras-rs' `RemoveAccidentalHits` does. Otherwise
    `y_true` is ignored and may be `None`. Ids are compared in the dtype
    they arrive in: integer ids exactly, float32 ids (what
    `MultipleNegativesRankingLoss` passes on, as Keras casts `y_true`)
    exactly only up to `2**24`.

    Args:
        y_true: ignored, or the candidate ids with `remove_accidental_hits`.
        y_pred: `(batch, 2 + n, dim)`; the anchor, the positive, then the
            hard negatives of every row.
        scale: `s`, the inverse of a temperature; default 20.0.
        similarity: `"cosine"` (rows L2-normalised first) or `"dot"`.
        symmetric: also rank each anchor among the anchors for its positive.
        remove_accidental_hits: read candidate ids from `y_true` and leave
            out the duplicates of each row's positive.

    Returns:
        A scalar, float32 for half-precision embeddings; 0 for an empty
        batch.

    Raises:
        ValueError: for a scale that is not positive, an unknown
            similarity, or badly shaped `y_pred` or ids.

    Examples:
        >>> import numpy as np
        >>> anchors = np.array([[1.0, 0.0], [0.0, 1.0]])
        >>> positives = np.array([[1.0, 0.1], [0.1, 1.0]])
        >>> y_pred = np.stack([anchors, positives], axis=1)
        >>> round(float(multiple_negatives_ranking_loss(None, y_pred, scale=1.0)), 4)
        0.3424
    """
    scale = check_float(scale, "scale", minimum=0.0, inclusive=False)
    similarity = check_choice(similarity, SIMILARITIES, "similarity")
    symmetric = check_bool(symmetric, "symmetric")
    remove_accidental_hits = check_bool(
        remove_accidental_hits, "remove_accidental_hits"
    )
    y_pred = _columns(y_pred)
    batch, dim = ops.shape(y_pred)[0], ops.shape(y_pred)[2]
    if isinstance(batch, int) and batch == 0:
        return ops.sum(y_pred) * 0.0
    anchors = y_pred[:, 0]
    # Candidates column by column, as sentence-transformers concatenates
    # them: the positives first, so positive i is candidate i.
    candidates = ops.reshape(ops.transpose(y_pred[:, 1:], (1, 0, 2)), (-1, dim))
    if similarity == "cosine":
        anchors, candidates = l2_normalize(anchors), l2_normalize(candidates)
    logits = scale * ops.matmul(anchors, ops.transpose(candidates))
    positive_logits = ops.diagonal(logits[:, :batch])
    if remove_accidental_hits:
        hits, backward_hits = _hit_masks(y_true, y_pred)
    else:
        hits = ops.zeros_like(logits, dtype="bool")
        backward_hits = hits[:, :batch]
    count = ops.cast(ops.maximum(batch, 1), logits.dtype)
    forward = ops.sum(
        pairs.masked_logsumexp(logits, ops.logical_not(hits)) - positive_logits
    )
    if not symmetric:
        return forward / count
    # Positive j against every anchor i: column j of the anchor-positive block.
    backward_logits = ops.transpose(logits[:, :batch])
    backward = ops.sum(
        pairs.masked_logsumexp(backward_logits, ops.logical_not(backward_hits))
        - positive_logits
    )
    return (forward + backward) / (2.0 * count)


@keras.saving.register_keras_serializable(package="keras_siamese")
class MultipleNegativesRankingLoss(FunctionLoss):
    """Multiple negatives ranking loss: `(anchor, positive, *negatives)` rows.

    The loss of retrieval models trained on (query, relevant document) pairs
    with in-batch negatives (InfoNCE; sentence-transformers' most used
    loss): each anchor must score its own positive above every other
    candidate of the batch, the other rows' positives and every hard
    negative; see `multiple_negatives_ranking_loss`. `y_pred` is
    `(batch, 2 + n, dim)`, the `merge="stack"` output of a `SiameseWrapper`
    on `2 + n` inputs; `y_true` is ignored unless `remove_accidental_hits`,
    where it holds the candidates' ids `(batch, 1 + n)`. The loss is a
    batch-level scalar, so `sample_weight` is not supported.

    Keras casts `y_true` to float32 (the loss's dtype), which holds integers
    exactly only up to `2**24` = 16,777,216: larger ids that differ by a
    little would become equal and be taken for accidental hits. Ids given
    as NumPy arrays or Python numbers are checked when the loss is called
    and refused above `2**24`; inside `fit` the ids are tensors with no
    values to check, so renumber larger ids (by their rank, say) before
    training.

    Args:
        scale: the similarity's multiplier (inverse temperature), default 20.0.
        similarity: `"cosine"` or `"dot"`.
        symmetric: add the positive-to-anchor direction (sentence-transformers'
            `MultipleNegativesSymmetricRankingLoss`).
        remove_accidental_hits: leave out of each softmax the candidates that
            share the id of the row's positive.
        global_batch: under a `tf.distribute` strategy with several replicas,
            compute the loss over the global batch (all-gathered from every
            replica), so that every replica's rows are negatives of every
            other's. A no-op on JAX (whose `DataParallel` already sees the
            global batch) and PyTorch.
        reduction: Keras loss reduction (the loss is already a scalar).
        name: name of the loss.
        dtype: dtype of the computation; defaults to `keras.backend.floatx()`.

    Raises:
        ValueError: for a scale that is not positive or an unknown
            similarity (at construction); for badly shaped inputs, a
            `sample_weight`, or (with `remove_accidental_hits`) NumPy ids
            beyond `2**24` in magnitude (at call).
        TypeError: for `symmetric`, `remove_accidental_hits` or
            `global_batch` that are not booleans.

    Examples:
        >>> import numpy as np
        >>> loss = MultipleNegativesRankingLoss(scale=1.0, symmetric=True)
        >>> anchors = np.array([[1.0, 0.0], [0.0, 1.0]])
        >>> positives = np.array([[1.0, 0.1], [0.1, 1.0]])
        >>> round(float(loss(None, np.stack([anchors, positives], axis=1))), 4)
        0.3424

        Usage with `compile()`, on (query, positive, hard negative) inputs:

        >>> import keras
        >>> from keras_siamese import SiameseWrapper
        >>> encoder = keras.Sequential([keras.Input((4,)), keras.layers.Dense(3)])
        >>> inputs = [keras.Input((4,)) for _ in range(3)]
        >>> model = keras.Model(
        ...     inputs, SiameseWrapper(encoder, merge="stack")(inputs))
        >>> model.compile(optimizer="adam", loss=MultipleNegativesRankingLoss())
    """

    def __init__(
        self,
        scale: float = 20.0,
        similarity: str = "cosine",
        symmetric: bool = False,
        remove_accidental_hits: bool = False,
        global_batch: bool = False,
        reduction: str = "sum_over_batch_size",
        name: str = "multiple_negatives_ranking_loss",
        dtype: str | None = None,
    ) -> None:
        super().__init__(
            multiple_negatives_ranking_loss,
            global_batch=global_batch,
            reduction=reduction,
            name=name,
            dtype=dtype,
            scale=check_float(scale, "scale", minimum=0.0, inclusive=False),
            similarity=check_choice(similarity, SIMILARITIES, "similarity"),
            symmetric=check_bool(symmetric, "symmetric"),
            remove_accidental_hits=check_bool(
                remove_accidental_hits, "remove_accidental_hits"
            ),
        )

    def __call__(self, y_true: Any, y_pred: Any, sample_weight: Any = None) -> Any:
        if self.remove_accidental_hits:
            _check_exact_ids(y_true)
        return super().__call__(y_true, y_pred, sample_weight)

    @property
    def y_true_holds(self) -> str | None:
        return "the candidate ids" if self.remove_accidental_hits else None
