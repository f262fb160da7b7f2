"""The pair margin miner: positive pairs too far, negative pairs too close."""

from __future__ import annotations

from typing import Any

import keras
from keras import ops

from keras_siamese._checks import check_float
from keras_siamese.miners.base import Miner


@keras.saving.register_keras_serializable(package="keras_siamese")
class PairMarginMiner(Miner):
    """Mines the positive pairs farther than `pos_margin` and the negative
    pairs closer than `neg_margin`.

    With a distance `d`: positive pairs with `d > pos_margin`, negative pairs
    with `d < neg_margin`. With a similarity `s` (`"cosine_similarity"`) the
    comparisons flip, as in pytorch-metric-learning's `PairMarginMiner`:
    positive pairs with `s < pos_margin`, negative pairs with
    `s > neg_margin`. Both masks are symmetric without references (the
    measures are).

    Args:
        pos_margin: default 0.2.
        neg_margin: default 0.8.
        distance: a distance name or `Distance` (default `"euclidean"`;
            pytorch-metric-learning's default is the Euclidean distance of
            L2-normalised embeddings), or `"cosine_similarity"`.

    Raises:
        ValueError: for an unknown distance or a margin that is not finite.

    Examples:
        >>> import numpy as np
        >>> miner = PairMarginMiner(pos_margin=0.2, neg_margin=0.8)
        >>> embeddings = np.array([[0.0], [0.5], [1.0], [1.1]])
        >>> positive, negative = miner(np.array([0, 0, 1, 1]), embeddings)
        >>> np.asarray(positive).astype(int).tolist()
        [[0, 1, 0, 0], [1, 0, 0, 0], [0, 0, 0, 0], [0, 0, 0, 0]]
        >>> np.asarray(negative).astype(int).tolist()
        [[0, 0, 0, 0], [0, 0, 1, 1], [0, 1, 0, 0], [0, 1, 0, 0]]
    """

    def __init__(
        self,
        pos_margin: float = 0.2,
        neg_margin: float = 0.8,
        distance: Any = "euclidean",
    ) -> None:
        super().__init__(distance)
        self.pos_margin = check_float(pos_margin, "pos_margin")
        self.neg_margin = check_float(neg_margin, "neg_margin")

    def mine(self, matrix: Any, positive: Any, negative: Any) -> tuple[Any, Any]:
        level = self.measure.level
        return (
            ops.logical_and(positive, matrix > level(self.pos_margin)),
            ops.logical_and(negative, matrix < level(self.neg_margin)),
        )

    def get_config(self) -> dict[str, Any]:
        config = super().get_config()
        config.update({"pos_margin": self.pos_margin, "neg_margin": self.neg_margin})
        return config
