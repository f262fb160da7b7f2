"""The triplet margin miner: triplets chosen by the gap of their distances."""

from __future__ import annotations

from typing import Any

import keras
from keras import ops

from keras_siamese._checks import check_choice, check_float
from keras_siamese.losses.mining import count_below
from keras_siamese.miners.base import Miner

TRIPLET_TYPES = ("all", "hard", "semihard", "easy")
_FILL = 3.0e38


@keras.saving.register_keras_serializable(package="keras_siamese")
class TripletMarginMiner(Miner):
    """Mines the triplets whose gap `d(a, n) - d(a, p)` is in a range.

    For every valid triplet (anchor `a`, positive `p` of its class, negative
    `n` of another), the gap `g = d(a, n) - d(a, p)` (with a similarity
    `s`, `g = s(a, p) - s(a, n)`) selects it by `type_of_triplets`:

    - `"all"`: `g <= margin`, every triplet that violates the margin;
    - `"hard"`: `g <= margin` and `g <= 0` (the negative is not farther
      than the positive);
    - `"semihard"`: `0 < g <= margin`;
    - `"easy"`: `g > margin`.

    The rule of pytorch-metric-learning's `TripletMarginMiner` (whose
    default measure is the Euclidean distance of L2-normalised embeddings:
    normalise them first for its numbers). Gaps are compared as
    `d(a, n) <= d(a, p) + margin`, which can differ from it by round-off
    exactly on a boundary.

    Calling the miner returns the `(positive, negative)` pair masks of the
    pairs that occur in at least one mined triplet. The triplets themselves
    are `window` applied to the gap: `OnlineTripletLoss(miner=...)` applies
    it without building a `(B, M, M)` tensor; `triplet_mask` builds that
    dense mask, for small batches.

    Args:
        margin: the gap bound, default 0.2; any finite number.
        type_of_triplets: `"all"` (default), `"hard"`, `"semihard"` or
            `"easy"`.
        distance: a distance name or `Distance` (default `"euclidean"`), or
            `"cosine_similarity"`.

    Raises:
        ValueError: for an unknown type or distance, or a margin that is
            not finite.

    Examples:
        >>> import numpy as np
        >>> miner = TripletMarginMiner(margin=1.0, type_of_triplets="semihard")
        >>> embeddings = np.array([[0.0], [0.5], [1.0], [3.0]])
        >>> positive, negative = miner(np.array([0, 0, 1, 1]), embeddings)
        >>> np.asarray(positive).astype(int).tolist()
        [[0, 1, 0, 0], [0, 0, 0, 0], [0, 0, 0, 0], [0, 0, 1, 0]]
        >>> np.asarray(negative).astype(int).tolist()
        [[0, 0, 1, 0], [0, 0, 0, 0], [0, 0, 0, 0], [1, 1, 0, 0]]
    """

    kind = "triplets"

    def __init__(
        self,
        margin: float = 0.2,
        type_of_triplets: str = "all",
        distance: Any = "euclidean",
    ) -> None:
        super().__init__(distance)
        self.margin = check_float(margin, "margin")
        self.type_of_triplets = check_choice(
            type_of_triplets, TRIPLET_TYPES, "type_of_triplets"
        )

    @property
    def window(self) -> tuple[float | None, float | None]:
        """The mined gaps `(low, high)`: `low < gap <= high`, `None` unbounded."""
        margin = self.margin
        return {
            "all": (None, margin),
            "hard": (None, min(margin, 0.0)),
            "semihard": (0.0, margin),
            "easy": (margin, None),
        }[self.type_of_triplets]

    def mine(self, matrix: Any, positive: Any, negative: Any) -> tuple[Any, Any]:
        low, high = self.window
        # Positives: some negative of the anchor inside the window.
        negatives = ops.sort(ops.where(negative, matrix, _FILL), axis=1)
        total = ops.sum(ops.cast(negative, "int32"), axis=1, keepdims=True)
        start = 0 if low is None else count_below(negatives, matrix + low, True)
        stop = total if high is None else count_below(negatives, matrix + high, True)
        kept_positive = ops.logical_and(positive, stop > start)
        # Negatives: some positive p with d(a, p) + low < d(a, n) <=
        # d(a, p) + high. `d + bound` grows with `d`, so the positives'
        # bounds stay sorted and two searches count them.
        count = ops.sum(ops.cast(positive, "int32"), axis=1, keepdims=True)
        if low is None:
            under_low = count
        else:
            lows = ops.sort(ops.where(positive, matrix + low, _FILL), axis=1)
            under_low = count_below(lows, matrix)
        if high is None:
            under_high = 0
        else:
            highs = ops.sort(ops.where(positive, matrix + high, _FILL), axis=1)
            under_high = count_below(highs, matrix)
        kept_negative = ops.logical_and(negative, under_low > under_high)
        return kept_positive, kept_negative

    def mine_triplets(self, matrix: Any, positive: Any, negative: Any) -> Any:
        low, high = self.window
        anchor_positive = ops.expand_dims(matrix, 2)
        anchor_negative = ops.expand_dims(matrix, 1)
        mask = ops.logical_and(
            ops.expand_dims(positive, 2), ops.expand_dims(negative, 1)
        )
        if low is not None:
            mask = ops.logical_and(mask, anchor_negative > anchor_positive + low)
        if high is not None:
            mask = ops.logical_and(mask, anchor_negative <= anchor_positive + high)
        return mask

    def get_config(self) -> dict[str, Any]:
        config = super().get_config()
        config.update(
            {"margin": self.margin, "type_of_triplets": self.type_of_triplets}
        )
        return config
