"""The batch easy-hard miner: one chosen positive and negative per anchor."""

from __future__ import annotations

from typing import Any

import keras
from keras import ops

from keras_siamese._checks import check_choice, check_float
from keras_siamese.miners.base import Miner, masked_extreme, one_hot_rows

STRATEGIES = ("easy", "semihard", "hard", "all")


def _check_range(value: Any, argument: str) -> tuple[float, float] | None:
    if value is None:
        return None
    if isinstance(value, (str, bytes)) or not hasattr(value, "__len__"):
        raise TypeError(
            f"`{argument}` must be None or a (low, high) pair; got {value!r}."
        )
    if len(value) != 2:
        raise ValueError(f"`{argument}` must be a (low, high) pair; got {value!r}.")
    low, high = (check_float(v, argument) for v in value)
    if low > high:
        raise ValueError(f"`{argument}` must have low <= high; got {value!r}.")
    return low, high


@keras.saving.register_keras_serializable(package="keras_siamese")
class BatchEasyHardMiner(Miner):
    """Mines, per anchor, one positive and one negative by a strategy each.

    Strategies for the positive (`pos_strategy`) and the negative
    (`neg_strategy`):

    - `"easy"`: the most similar positive; the least similar negative;
    - `"hard"`: the least similar positive; the most similar negative;
    - `"semihard"`: the least similar positive still more similar than the
      chosen negative; the most similar negative still less similar than the
      chosen positive (not both `"semihard"`, nor with `"all"`);
    - `"all"`: every positive (or negative) pair of the anchor.

    An anchor is kept only if both of its chosen pairs exist (unless one
    strategy is `"all"`). `allowed_pos_range` / `allowed_neg_range` restrict
    the chosen pairs to values (distances, or similarities) within
    `[low, high]` (not applied to `"all"`). The defaults and rules of
    pytorch-metric-learning's `BatchEasyHardMiner`: easy positives
    (Xuan et al. 2020) with semi-hard negatives. Equal values are broken by
    the lowest column.

    The mined pairs of an anchor form its triplets (every mined positive
    with every mined negative) when a triplet loss consumes the masks.

    Args:
        pos_strategy: default `"easy"`.
        neg_strategy: default `"semihard"`.
        allowed_pos_range: `None` (default) or `(low, high)`.
        allowed_neg_range: `None` (default) or `(low, high)`.
        distance: a distance name or `Distance` (default `"euclidean"`;
            pytorch-metric-learning's default is the Euclidean distance of
            L2-normalised embeddings), or `"cosine_similarity"`.

    Raises:
        ValueError: for an unknown strategy or one of the excluded
            combinations, a range that is not `(low <= high)`, or an unknown
            distance.

    Examples:
        >>> import numpy as np
        >>> miner = BatchEasyHardMiner()
        >>> embeddings = np.array([[0.0], [0.5], [2.0], [1.0], [3.0]])
        >>> positive, negative = miner(np.array([0, 0, 0, 1, 1]), embeddings)
        >>> np.asarray(positive).astype(int).tolist()[0]
        [0, 1, 0, 0, 0]
        >>> np.asarray(negative).astype(int).tolist()[0]
        [0, 0, 0, 1, 0]
    """

    def __init__(
        self,
        pos_strategy: str = "easy",
        neg_strategy: str = "semihard",
        allowed_pos_range: Any = None,
        allowed_neg_range: Any = None,
        distance: Any = "euclidean",
    ) -> None:
        super().__init__(distance)
        self.pos_strategy = check_choice(pos_strategy, STRATEGIES, "pos_strategy")
        self.neg_strategy = check_choice(neg_strategy, STRATEGIES, "neg_strategy")
        strategies = {self.pos_strategy, self.neg_strategy}
        if self.pos_strategy == self.neg_strategy == "semihard":
            raise ValueError(
                "`pos_strategy` and `neg_strategy` cannot both be 'semihard': "
                "each is defined by the other's choice."
            )
        if strategies == {"semihard", "all"}:
            raise ValueError("'semihard' cannot be combined with 'all'.")
        self.allowed_pos_range = _check_range(allowed_pos_range, "allowed_pos_range")
        self.allowed_neg_range = _check_range(allowed_neg_range, "allowed_neg_range")

    def _allowed(self, matrix: Any, mask: Any, bounds: Any) -> Any:
        if bounds is None:
            return mask
        values = -matrix if self.measure.inverted else matrix
        inside = ops.logical_and(values >= bounds[0], values <= bounds[1])
        return ops.logical_and(mask, inside)

    def mine(self, matrix: Any, positive: Any, negative: Any) -> tuple[Any, Any]:
        positive_pool = self._allowed(matrix, positive, self.allowed_pos_range)
        negative_pool = self._allowed(matrix, negative, self.allowed_neg_range)

        def choose_positive(limit: Any = None) -> tuple[Any, Any]:
            pool = positive_pool
            if limit is not None:
                pool = ops.logical_and(pool, matrix < limit)
            return masked_extreme(matrix, pool, self.pos_strategy != "easy")

        def choose_negative(limit: Any = None) -> tuple[Any, Any]:
            pool = negative_pool
            if limit is not None:
                pool = ops.logical_and(pool, matrix > limit)
            return masked_extreme(matrix, pool, self.neg_strategy == "easy")

        def value(column: Any) -> Any:
            return ops.take_along_axis(matrix, column, axis=1)

        chosen_positive = chosen_negative = None
        if self.pos_strategy == "semihard":
            chosen_negative = choose_negative()
            chosen_positive = choose_positive(value(chosen_negative[0]))
        elif self.neg_strategy == "semihard":
            chosen_positive = choose_positive()
            chosen_negative = choose_negative(value(chosen_positive[0]))
        else:
            if self.pos_strategy != "all":
                chosen_positive = choose_positive()
            if self.neg_strategy != "all":
                chosen_negative = choose_negative()
        size = ops.shape(matrix)[1]
        if chosen_positive is None and chosen_negative is None:
            return positive, negative
        if chosen_positive is None:
            return positive, one_hot_rows(*chosen_negative, size)
        if chosen_negative is None:
            return one_hot_rows(*chosen_positive, size), negative
        keep = ops.logical_and(chosen_positive[1], chosen_negative[1])
        return (
            one_hot_rows(chosen_positive[0], keep, size),
            one_hot_rows(chosen_negative[0], keep, size),
        )

    def get_config(self) -> dict[str, Any]:
        config = super().get_config()
        config.update(
            {
                "pos_strategy": self.pos_strategy,
                "neg_strategy": self.neg_strategy,
                "allowed_pos_range": None
                if self.allowed_pos_range is None
                else list(self.allowed_pos_range),
                "allowed_neg_range": None
                if self.allowed_neg_range is None
                else list(self.allowed_neg_range),
            }
        )
        return config
