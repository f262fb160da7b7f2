"""In-batch triplet mining on a `(B, M)` distance matrix, in `O(B * M)` memory.

Each miner takes the distances from every anchor (a row) to the rows it is
compared with (the batch itself, `M = B`, or references) and the label masks
of those pairs, and returns the scalar loss. None of them builds a
`(B, M, M)` tensor: the hardest positive and negative are row reductions;
the batch-all sums come from binary-searching every positive's threshold in
the anchor's sorted negatives, in `O(B M log M)` time; the semi-hard
negative of a positive is a masked row minimum, computed for one positive
of every anchor at a time (`O(B M)` per positive, as many rounds as the
largest number of positives of an anchor), or, when anchors have many
positives, read off a sort of each row.

Sorting and searching only choose indices; the losses are then read from the
distance matrix through `take_along_axis` or masked reductions, so gradients
reach exactly the chosen distances. Ties are resolved by value, never by
position in a sort, so the result does not depend on whether a backend's
sort is stable.

Every miner averages with `sum / max(count, 1)`: a batch without a valid
triplet gives a loss of 0 and a zero gradient, never `0 / 0`.
"""

from __future__ import annotations

from typing import Any

from keras import ops

from keras_siamese.losses.pairs import label_masks, masked_mean

__all__ = [
    "batch_all",
    "batch_hard",
    "count_below",
    "dense_triplets",
    "label_masks",
    "masked_mean",
    "semi_hard",
    "windowed_triplets",
]

#: How the mined triplets' losses are averaged: over the triplets with a
#: loss above zero (pytorch-metric-learning's `AvgNonZeroReducer`, the
#: default of its `TripletMarginLoss`), or over every mined triplet
#: (its `MeanReducer`).
REDUCERS = ("nonzero_mean", "mean")

# Above this many positives for some anchor, semi-hard mining sorts each row
# instead of scanning the rows once per positive.
SCAN_LIMIT = 64


def hinge_or_softplus(
    difference: Any, margin: float, soft: bool, smooth: bool = False
) -> Any:
    """`max(difference + margin, 0)`; `softplus(difference)` when `soft`;
    `softplus(difference + margin)` when `smooth`."""
    if smooth:
        return ops.softplus(difference + margin)
    if soft:
        return ops.softplus(difference)
    return ops.relu(difference + margin)


def batch_hard(
    distances: Any,
    positive: Any,
    negative: Any,
    margin: float,
    soft: bool,
    smooth: bool = False,
) -> Any:
    """Farthest positive against nearest negative, per anchor (Hermans 2017).

    Averaged over the anchors that have at least one positive and one
    negative.
    """
    # Fill values strictly outside [0, max]: a tie between a real distance
    # and a fill would split the gradient of max/min with a constant.
    ceiling = ops.max(ops.stop_gradient(distances)) + 1.0
    hardest_positive = ops.max(ops.where(positive, distances, -1.0), axis=1)
    hardest_negative = ops.min(ops.where(negative, distances, ceiling), axis=1)
    valid = ops.logical_and(ops.any(positive, axis=1), ops.any(negative, axis=1))
    losses = hinge_or_softplus(
        hardest_positive - hardest_negative, margin, soft, smooth
    )
    return masked_mean(losses, valid)


def _tie_groups(sorted_rows: Any) -> tuple[Any, Any]:
    """Group index of every entry of row-sorted values, and group starts.

    Equal values form one group. Returns `group` `(B, N)` (0-based group of
    each sorted position) and `starts` `(B, N + 1)`: `starts[g]` is the first
    position of group `g`, padded with `N` so `starts[g + 1]` always exists.
    """
    rows, size = ops.shape(sorted_rows)
    first = ops.ones((rows, 1), dtype="bool")
    new_group = ops.concatenate([first, sorted_rows[:, 1:] > sorted_rows[:, :-1]], 1)
    group = ops.cumsum(ops.cast(new_group, "int32"), axis=1) - 1
    positions = ops.broadcast_to(ops.arange(size, dtype="int32"), (rows, size))
    starts = ops.sort(ops.where(new_group, positions, size), axis=1)
    padding = ops.full((rows, 1), size, dtype="int32")
    return group, ops.concatenate([starts, ops.cast(padding, starts.dtype)], 1)


def _count_prefix(mask: Any) -> Any:
    """`(B, N + 1)` number of true entries of each row before each position."""
    counts = ops.cumsum(ops.cast(mask, "int32"), axis=1)
    return ops.concatenate([ops.zeros_like(counts[:, :1]), counts], axis=1)


def count_below(sorted_rows: Any, thresholds: Any, inclusive: bool = False) -> Any:
    """Per row, how many entries of `sorted_rows` are below each threshold.

    A binary search of every threshold at once: `sorted_rows` `(B, M)` holds
    each row in ascending order, `thresholds` is `(B, K)`; the result
    `(B, K)` counts the entries `< threshold` (`<= threshold` when
    `inclusive`). Ties are decided by comparing
    values, so the count is exact whatever the order of equal entries.
    `bit_length(M)` halvings of `[0, M]`, each one gather.
    """
    size = ops.shape(sorted_rows)[1]
    steps = size.bit_length() if isinstance(size, int) else 32
    low = ops.zeros_like(thresholds, dtype="int32")
    high = ops.full_like(thresholds, size, dtype="int32")
    for _ in range(steps):
        middle = (low + high) // 2
        value = ops.take_along_axis(sorted_rows, ops.minimum(middle, size - 1), axis=1)
        # Once low == high the search is over: middle == high, no change.
        inside = value <= thresholds if inclusive else value < thresholds
        below = ops.logical_and(inside, middle < high)
        low = ops.where(below, middle + 1, low)
        high = ops.where(below, high, middle)
    return low


def _negatives_by_distance(fixed: Any, negative: Any, fill: Any) -> tuple[Any, Any]:
    """Per row, the column order of the negatives by distance, then the rest.

    Returns that order and the row values it sorts, in which every
    non-negative reads `fill` (chosen above every value it is compared with).
    """
    values = ops.where(negative, fixed, fill)
    return ops.argsort(values, axis=1), values


def semi_hard(
    distances: Any,
    positive: Any,
    negative: Any,
    margin: float,
    soft: bool,
    smooth: bool = False,
) -> Any:
    """FaceNet semi-hard mining, as TensorFlow Addons' `TripletSemiHardLoss`.

    For every anchor-positive pair, the negative is the nearest one strictly
    farther from the anchor than the positive; if there is none, the farthest
    negative. Averaged over anchor-positive pairs whose anchor has a negative.

    With at most `SCAN_LIMIT` positives per anchor (P x K batches with
    K <= 65), one masked row minimum per positive; otherwise one argsort of
    the rows and of their negatives. Both give the same values.
    """
    most = ops.max(ops.sum(ops.cast(positive, "int32"), axis=1))
    arguments = distances, positive, negative, margin, (soft, smooth)
    known = _concrete_int(most)
    if known is None:
        return ops.cond(
            most <= SCAN_LIMIT,
            lambda: _semi_hard_by_scanning(*arguments, most),
            lambda: _semi_hard_by_sorting(*arguments),
        )
    # Run eagerly: choose in Python, and loop in Python (an eager JAX
    # `cond` or `while_loop` would compile its branches at every call).
    if known <= SCAN_LIMIT:
        return _semi_hard_by_scanning(*arguments, known)
    return _semi_hard_by_sorting(*arguments)


def _concrete_int(x: Any) -> int | None:
    """`x` as a Python int if it has a value now (eager), else `None`."""
    try:
        return int(ops.convert_to_numpy(x))
    except Exception:  # a traced or symbolic tensor: its value comes later
        return None


def _semi_hard_by_scanning(
    distances: Any,
    positive: Any,
    negative: Any,
    margin: float,
    soft: tuple[bool, bool],
    rounds: Any,
) -> Any:
    """Semi-hard mining, one positive of every anchor per round.

    Round `k` takes every anchor's `k`-th positive (in column order) and its
    nearest negative strictly beyond it: a masked minimum over the row, with
    no sort. The chosen columns are kept in `(B, SCAN_LIMIT)` tables, and the
    losses are read from `distances` through them once the rounds are done,
    so gradients flow through two small gathers.
    """
    fixed = ops.stop_gradient(distances)
    rows = ops.shape(fixed)[0]
    # Non-negatives read `ceiling`, beyond every distance: never "farther".
    ceiling = ops.max(fixed) + 1.0
    negative_values = ops.where(negative, fixed, ceiling)
    farthest = ops.argmax(ops.where(negative, fixed, -1.0), axis=1)
    farthest = ops.expand_dims(ops.cast(farthest, "int32"), 1)
    positives = ops.sum(ops.cast(positive, "int32"), axis=1)
    columns = ops.expand_dims(ops.arange(ops.shape(fixed)[1], dtype="int32"), 0)

    def choose(k: Any, state: tuple) -> tuple:
        previous, positive_columns, negative_columns = state
        after = ops.logical_and(positive, columns > previous)
        column = ops.expand_dims(ops.cast(ops.argmax(after, axis=1), "int32"), 1)
        threshold = ops.take_along_axis(fixed, column, axis=1)
        beyond = ops.where(negative_values > threshold, negative_values, ceiling)
        nearest = ops.expand_dims(ops.cast(ops.argmin(beyond, axis=1), "int32"), 1)
        found = ops.take_along_axis(beyond, nearest, axis=1) < ceiling
        nearest = ops.where(found, nearest, farthest)
        return (
            column,
            ops.slice_update(positive_columns, (0, k), column),
            ops.slice_update(negative_columns, (0, k), nearest),
        )

    table = ops.zeros((rows, SCAN_LIMIT), dtype="int32")
    state = (ops.full((rows, 1), -1, dtype="int32"), table, table)
    if isinstance(rounds, int):
        for k in range(rounds):
            state = choose(k, state)
    else:
        state = ops.fori_loop(0, rounds, choose, state)
    _, positive_columns, negative_columns = state
    positive_distance = ops.take_along_axis(distances, positive_columns, axis=1)
    negative_distance = ops.take_along_axis(distances, negative_columns, axis=1)
    round_index = ops.expand_dims(ops.arange(SCAN_LIMIT, dtype="int32"), 0)
    pairs = ops.logical_and(
        round_index < ops.expand_dims(positives, 1),
        ops.any(negative, axis=1, keepdims=True),
    )
    losses = hinge_or_softplus(positive_distance - negative_distance, margin, *soft)
    return masked_mean(losses, pairs)


def _semi_hard_by_sorting(
    distances: Any,
    positive: Any,
    negative: Any,
    margin: float,
    soft: tuple[bool, bool],
) -> Any:
    """Semi-hard mining from each row's sorted order (any number of positives).

    Counts, per positive, the negatives not farther than it (sorted row,
    tie groups and prefix counts), then takes the negative of that rank in
    the row's negatives sorted by distance.
    """
    fixed = ops.stop_gradient(distances)
    size = ops.shape(distances)[1]
    order = ops.argsort(fixed, axis=1)
    sorted_fixed = ops.take_along_axis(fixed, order, axis=1)
    group, starts = _tie_groups(sorted_fixed)
    # Everything before the next tie group is <= d(a, p): the negatives in
    # there are not farther than the positive.
    next_group = ops.take_along_axis(starts, group + 1, axis=1)
    sorted_negative = ops.take_along_axis(negative, order, axis=1)
    closer = ops.take_along_axis(_count_prefix(sorted_negative), next_group, axis=1)
    negative_count = ops.sum(ops.cast(negative, closer.dtype), axis=1, keepdims=True)
    # The (closer)-th nearest negative is the nearest one beyond d(a, p).
    by_distance, _ = _negatives_by_distance(fixed, negative, ops.max(fixed) + 1.0)
    rank = ops.minimum(closer, size - 1)
    semi_hard_column = ops.take_along_axis(by_distance, rank, axis=1)
    semi_hard_distance = ops.take_along_axis(distances, semi_hard_column, axis=1)
    farthest = ops.max(ops.where(negative, distances, -1.0), axis=1, keepdims=True)
    negative_distance = ops.where(closer < negative_count, semi_hard_distance, farthest)
    positive_distance = ops.take_along_axis(distances, order, axis=1)
    pairs = ops.logical_and(
        ops.take_along_axis(positive, order, axis=1), negative_count > 0
    )
    losses = hinge_or_softplus(positive_distance - negative_distance, margin, *soft)
    return masked_mean(losses, pairs)


def batch_all(
    distances: Any,
    positive: Any,
    negative: Any,
    margin: float,
    soft: bool,
    smooth: bool = False,
) -> Any:
    """Every valid triplet, averaged over those with a loss above zero.

    For an anchor `a` and positive `p`, the triplets with a positive loss are
    the negatives with `d(a, n) < d(a, p) + margin`; with `c` of them and
    `S` the sum of their distances, their total loss is
    `c * (d(a, p) + margin) - S`. `c` comes from a binary search of the
    threshold in the anchor's sorted negatives and `S` from a prefix sum, so
    no per-triplet tensor is built. The hinge is what makes this possible:
    there is no soft variant.
    """
    if soft or smooth:
        raise ValueError(
            "batch_all sums hinges by binary search: use `dense_triplets` for "
            "a softplus."
        )
    fixed = ops.stop_gradient(distances)
    # Non-negatives read above every threshold d(a, p) + margin: never counted.
    by_distance, values = _negatives_by_distance(
        fixed, negative, ops.max(fixed) + margin + 1.0
    )
    # Non-negatives sort last, so prefix sums up to a count of negatives only
    # ever add negative distances.
    sorted_negatives = ops.take_along_axis(distances, by_distance, axis=1)
    prefix_sums = ops.concatenate(
        [ops.zeros_like(sorted_negatives[:, :1]), ops.cumsum(sorted_negatives, axis=1)],
        axis=1,
    )
    sorted_values = ops.take_along_axis(values, by_distance, axis=1)
    below = count_below(sorted_values, fixed + margin)
    hits = ops.cast(below, distances.dtype)
    totals = hits * (distances + margin) - ops.take_along_axis(
        prefix_sums, below, axis=1
    )
    active = ops.sum(ops.where(positive, hits, ops.zeros_like(hits)))
    total = ops.sum(ops.where(positive, totals, ops.zeros_like(totals)))
    return total / ops.maximum(active, 1.0)


def windowed_triplets(
    distances: Any,
    positive: Any,
    negative: Any,
    margin: float,
    window: tuple[float | None, float | None] = (None, None),
    reducer: str = "nonzero_mean",
) -> Any:
    """Hinge triplet loss over the triplets inside a window, in `O(B M)` memory.

    The triplets are every `(a, p, n)` with `positive[a, p]`,
    `negative[a, n]` and a gap `d(a, n) - d(a, p)` inside `window = (low,
    high)`, `low` excluded and `high` included (`None` for no bound):
    compared as `d(a, p) + low < d(a, n) <= d(a, p) + high`. With no bounds
    these are all the triplets of the masks, as `batch_all`. Each costs
    `max(d(a, p) - d(a, n) + margin, 0)`; the triplets with a loss above
    zero are those with `d(a, n) < d(a, p) + margin`.

    As in `batch_all`, counts come from binary searches of the thresholds
    in each anchor's sorted negatives and sums from prefix sums, so no
    `(B, M, M)` tensor is built.

    Args:
        distances: `(B, M)`, smaller means more similar.
        positive, negative: boolean `(B, M)` masks.
        margin: the loss margin.
        window: the gap bounds `(low, high)`.
        reducer: `"nonzero_mean"`, the mean over the triplets with a loss
            above zero, or `"mean"`, over every triplet in the window.

    Returns:
        The scalar loss; 0 when there is no triplet to average.
    """
    low, high = window
    fixed = ops.stop_gradient(distances)
    by_distance, values = _negatives_by_distance(fixed, negative, _FILL)
    sorted_values = ops.take_along_axis(values, by_distance, axis=1)
    sorted_distances = ops.take_along_axis(distances, by_distance, axis=1)
    # Non-negatives sort last and are never inside a count, so the prefix
    # sums that are read only ever add negatives.
    prefix_sums = ops.concatenate(
        [ops.zeros_like(sorted_distances[:, :1]), ops.cumsum(sorted_distances, 1)],
        axis=1,
    )
    negatives = ops.sum(ops.cast(negative, "int32"), axis=1, keepdims=True)
    negatives = ops.broadcast_to(negatives, ops.shape(fixed))
    if low is None:
        start = ops.zeros_like(negatives)
    else:
        start = count_below(sorted_values, fixed + low, inclusive=True)
    if high is None:
        stop = negatives
    else:
        stop = count_below(sorted_values, fixed + high, inclusive=True)
    # The triplets with a loss above zero end at d(a, n) < d(a, p) + margin.
    loss_stop = ops.minimum(count_below(sorted_values, fixed + margin), stop)
    hits = ops.maximum(loss_stop - start, 0)
    end = ops.maximum(loss_stop, start)
    sums = ops.take_along_axis(prefix_sums, end, axis=1) - ops.take_along_axis(
        prefix_sums, start, axis=1
    )
    counted = ops.cast(hits, distances.dtype)
    totals = counted * (distances + margin) - sums
    zeros = ops.zeros_like(totals)
    total = ops.sum(ops.where(positive, totals, zeros))
    if reducer == "nonzero_mean":
        divisor = ops.sum(ops.where(positive, counted, zeros))
    else:
        selected = ops.cast(ops.maximum(stop - start, 0), distances.dtype)
        divisor = ops.sum(ops.where(positive, selected, zeros))
    return total / ops.maximum(divisor, 1.0)


# Above every distance and every threshold `d + bound` compared with it.
_FILL = 3.0e38


def dense_triplets(
    distances: Any,
    triplets: Any,
    margin: float,
    smooth: bool = False,
    reducer: str = "nonzero_mean",
) -> Any:
    """Triplet loss over a dense `(B, M, M)` mask of triplets.

    `max(d(a, p) - d(a, n) + margin, 0)`, or its softplus when `smooth`,
    averaged as `reducer` says (see `windowed_triplets`). `O(B M^2)`
    memory: for the cases without a hinge (`smooth`) or whose triplets
    were chosen on another measure than the loss's.
    """
    difference = ops.expand_dims(distances, 2) - ops.expand_dims(distances, 1)
    losses = hinge_or_softplus(difference, margin, False, smooth)
    if reducer == "nonzero_mean":
        triplets = ops.logical_and(triplets, losses > 0)
    return masked_mean(losses, triplets)
