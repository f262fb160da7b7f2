"""Pair masks, masked reductions and input checks shared by labelled losses.

A labelled loss takes integer class labels `(B,)` and embeddings `(B, dim)`.
Every row of the batch is an anchor; the rows it is compared with are either
the batch itself (an anchor is then never its own positive) or `references`
`(M, dim)` with their own `reference_labels` (every reference with the
anchor's label is then a positive, even an exact copy of the anchor, as
pytorch-metric-learning does with `ref_emb`). Everything here works on
`(B, M)` matrices, so memory stays `O(B * M)`.

Masked reductions fill the entries outside a mask with a finite value chosen
by `where`, never with `-inf` (whose gradient would be `0 * inf = NaN`): a row
whose mask is empty reduces to exactly 0, with a zero gradient.
"""

from __future__ import annotations

from typing import Any

from keras import ops

from keras_siamese._checks import as_vector, check_same_batch
from keras_siamese.distances import as_float, l2_normalize

# Stand-ins for -inf and +inf in masked maxima and minima: finite, so that
# nothing downstream multiplies an infinity by zero.
_LOWEST = -3.0e38
_HIGHEST = 3.0e38


def label_masks(
    labels: Any, reference_labels: Any | None = None, reference_mask: Any | None = None
) -> tuple[Any, Any]:
    """Boolean `(B, M)` masks of anchor-positive and anchor-negative pairs.

    Without `reference_labels`, the batch against itself (`M = B`) with the
    diagonal left out of the positives; with them, every reference of the
    anchor's class is a positive. A `reference_mask` `(B, M)` (checked by
    `labelled_inputs`) removes the pairs where it is false from both masks.
    """
    if reference_labels is None:
        same = ops.expand_dims(labels, 1) == ops.expand_dims(labels, 0)
        indices = ops.arange(ops.shape(labels)[0])
        diagonal = ops.expand_dims(indices, 1) == ops.expand_dims(indices, 0)
        return ops.logical_and(same, ops.logical_not(diagonal)), ops.logical_not(same)
    same = ops.expand_dims(labels, 1) == ops.expand_dims(reference_labels, 0)
    if reference_mask is None:
        return same, ops.logical_not(same)
    return (
        ops.logical_and(same, reference_mask),
        ops.logical_and(ops.logical_not(same), reference_mask),
    )


def count(
    mask: Any, axis: Any = None, keepdims: bool = False, dtype: str = "float32"
) -> Any:
    """Number of true entries of `mask`, as a float of `dtype`."""
    return ops.sum(ops.cast(mask, dtype), axis=axis, keepdims=keepdims)


def masked_mean(values: Any, mask: Any) -> Any:
    """Mean of `values` where `mask` holds; 0 (not NaN) where it never does."""
    total = ops.sum(ops.where(mask, values, ops.zeros_like(values)))
    return total / ops.maximum(count(mask, dtype=values.dtype), 1.0)


def mean_of_positive(values: Any) -> Any:
    """Mean of the entries above zero, 0 if there is none.

    pytorch-metric-learning's `AvgNonZeroReducer`: entries that are exactly
    zero (anchors without a positive, for instance) do not count.
    """
    return masked_mean(values, values > 0)


#: How a loss's terms become the batch loss, as pytorch-metric-learning's
#: reducers: `"mean"` over every term (`MeanReducer`), `"nonzero_mean"` over
#: the terms above zero (`AvgNonZeroReducer`), `"per_anchor"` each anchor's
#: mean over its own pairs, then the mean over every anchor
#: (`PerAnchorReducer`; for a loss with one term per anchor, the mean).
REDUCERS = ("nonzero_mean", "mean", "per_anchor")


def reduce_anchors(losses: Any, reducer: str) -> Any:
    """The batch loss from one loss per anchor, shape `(B,)`, by `reducer`.

    PML's `PerAnchorReducer` passes such losses to its inner `MeanReducer`,
    so `"per_anchor"` is the mean here too.
    """
    if reducer == "nonzero_mean":
        return mean_of_positive(losses)
    return ops.mean(losses)


def reduce_pairs(losses: Any, mask: Any, reducer: str) -> Any:
    """The batch loss from one loss per pair `(B, M)` where `mask` holds.

    An anchor without pairs counts as 0 in the `"per_anchor"` mean, as
    pytorch-metric-learning's `PerAnchorReducer` counts it.
    """
    if reducer == "per_anchor":
        totals = ops.sum(ops.where(mask, losses, 0.0), axis=1)
        counts = count(mask, axis=1, dtype=losses.dtype)
        return ops.mean(totals / ops.maximum(counts, 1.0))
    if reducer == "nonzero_mean":
        mask = ops.logical_and(mask, losses > 0)
    return masked_mean(losses, mask)


def masked_logsumexp(x: Any, mask: Any, axis: int = 1, add_one: bool = False) -> Any:
    """`log(sum(exp(x)))` over the entries where `mask` holds, along `axis`.

    With `add_one`, `log(1 + sum(exp(x)))` (a zero logit joins every row).
    A row whose mask is empty gives exactly 0 with a zero gradient, with or
    without `add_one`, as pytorch-metric-learning's `logsumexp`.
    """
    fixed = ops.stop_gradient(x)
    peak = ops.max(ops.where(mask, fixed, _LOWEST), axis=axis, keepdims=True)
    if add_one:
        peak = ops.maximum(peak, 0.0)
    present = ops.any(mask, axis=axis, keepdims=True)
    peak = ops.where(present, peak, 0.0)
    # Outside the mask the exponent is 0, so exp never overflows there and
    # the masked-out entries' zero gradient is not multiplied by infinity.
    shifted = ops.where(mask, x - peak, 0.0)
    total = ops.sum(ops.where(mask, ops.exp(shifted), 0.0), axis=axis, keepdims=True)
    if add_one:
        total = total + ops.exp(-peak)
    total = ops.where(present, total, 1.0)
    result = ops.where(present, peak + ops.log(total), 0.0)
    return ops.squeeze(result, axis=axis)


def has_pairs(positive: Any, negative: Any) -> Any:
    """Whether pytorch-metric-learning would compute a pair loss at all.

    Its pair losses return 0 when every list of pair indices holds at most
    one pair: at most one positive and at most one negative pair in all.
    Without references this only happens when there is no pair at all.
    """
    return ops.logical_or(count(positive) > 1.0, count(negative) > 1.0)


def cosine_similarity(embeddings: Any, references: Any | None = None) -> Any:
    """`(B, M)` cosine similarities of the L2-normalised rows (`1 - cosine distance`).

    A zero vector has similarity 0 with everything, itself included.
    """
    normalized = l2_normalize(embeddings)
    other = normalized if references is None else l2_normalize(references)
    return ops.matmul(normalized, ops.transpose(other))


def labelled_inputs(
    labels: Any,
    embeddings: Any,
    references: Any | None = None,
    reference_labels: Any | None = None,
    reference_mask: Any | None = None,
) -> tuple[Any, Any, Any | None, Any | None, Any | None]:
    """Check and convert the inputs of a labelled loss.

    Returns `labels` `(B,)`, `embeddings` `(B, dim)` in their compute dtype
    (float32 for half precision), `references` / `reference_labels` in the
    same form, or `None`, and `reference_mask` as a boolean `(B, M)` tensor,
    or `None`.

    Raises:
        ValueError: for badly shaped inputs, batch sizes that differ, only
            one of `references` and `reference_labels`, or a `reference_mask`
            without references or not of shape `(B, M)`.
    """
    if reference_mask is not None and references is None:
        raise ValueError(
            "`reference_mask` selects anchor-reference pairs, so it needs "
            "`references` and `reference_labels`."
        )
    embeddings = as_float(embeddings)
    if len(embeddings.shape) != 2:
        raise ValueError(
            "`embeddings` (y_pred) must have shape (batch, dim); got "
            f"{tuple(embeddings.shape)}."
        )
    labels = as_vector(ops.convert_to_tensor(labels), "labels")
    check_same_batch(labels, embeddings, "labels", "embeddings")
    if (references is None) != (reference_labels is None):
        raise ValueError(
            "`references` and `reference_labels` go together: pass both or neither."
        )
    if references is None:
        return labels, embeddings, None, None, None
    references = as_float(references)
    if len(references.shape) != 2:
        raise ValueError(
            "`references` must have shape (references, dim); got "
            f"{tuple(references.shape)}."
        )
    dims = embeddings.shape[1], references.shape[1]
    if None not in dims and dims[0] != dims[1]:
        raise ValueError(
            "`embeddings` and `references` must have the same embedding size; "
            f"got {tuple(embeddings.shape)} and {tuple(references.shape)}."
        )
    reference_labels = as_vector(
        ops.convert_to_tensor(reference_labels), "reference_labels"
    )
    check_same_batch(reference_labels, references, "reference_labels", "references")
    if embeddings.dtype != references.dtype:
        embeddings = ops.cast(embeddings, "float32")
        references = ops.cast(references, "float32")
    if labels.dtype != reference_labels.dtype:
        labels = ops.cast(labels, "float32")
        reference_labels = ops.cast(reference_labels, "float32")
    if reference_mask is not None:
        reference_mask = ops.cast(ops.convert_to_tensor(reference_mask), "bool")
        expected = (embeddings.shape[0], references.shape[0])
        if len(reference_mask.shape) != 2 or not all(
            None in (got, want) or got == want
            for got, want in zip(reference_mask.shape, expected)
        ):
            raise ValueError(
                "`reference_mask` must have shape (batch, references) = "
                f"{expected}; got {tuple(reference_mask.shape)}."
            )
    return labels, embeddings, references, reference_labels, reference_mask


def is_empty(embeddings: Any, references: Any | None) -> bool:
    """Whether the batch, or the references, are known to have no rows."""
    sizes = [embeddings.shape[0]]
    if references is not None:
        sizes.append(references.shape[0])
    return 0 in sizes


def zero_loss(embeddings: Any, references: Any | None = None) -> Any:
    """A scalar 0 connected to the inputs, so their gradient is a zero tensor."""
    zero = ops.sum(embeddings) * 0.0
    if references is not None:
        zero = zero + ops.cast(ops.sum(references) * 0.0, zero.dtype)
    return zero
