"""The multi-similarity miner (Wang et al. 2019): the informative pairs."""

from __future__ import annotations

from typing import Any

import keras

from keras_siamese._checks import check_float

# The module, not the function: the loss module imports the miners in turn.
from keras_siamese.losses import multi_similarity as loss_module
from keras_siamese.miners.base import Miner


@keras.saving.register_keras_serializable(package="keras_siamese")
class MultiSimilarityMiner(Miner):
    """Mines the pairs harder than the anchor's hardest pair of the other kind.

    With a similarity `s` (the default, cosine similarity): a positive pair
    is kept if `s(a, p) - epsilon < max_n s(a, n)`, a negative pair if
    `s(a, n) + epsilon > min_p s(a, p)`; with a distance `d` the same with
    the comparisons flipped (`d(a, p) + epsilon > min_n d(a, n)`, ...). An
    anchor without negatives keeps no positive pair, one without positives
    no negative pair, and a batch without any positive or any negative pair
    keeps nothing. The rule of pytorch-metric-learning's
    `MultiSimilarityMiner`; `MultiSimilarityLoss(mining=True)` applies the
    same rule inside the loss.

    Args:
        epsilon: the margin, default 0.1; at least 0.
        distance: `"cosine_similarity"` (default), or a distance name or
            `Distance`.

    Raises:
        ValueError: for a negative `epsilon` or an unknown distance.

    Examples:
        >>> import numpy as np
        >>> miner = MultiSimilarityMiner(epsilon=0.1)
        >>> embeddings = np.array([[1.0, 0.0], [0.6, 0.8], [0.8, 0.6], [0.0, 1.0]])
        >>> positive, negative = miner(np.array([0, 0, 1, 1]), embeddings)
        >>> np.asarray(positive).astype(int).tolist()
        [[0, 1, 0, 0], [1, 0, 0, 0], [0, 0, 0, 1], [0, 0, 1, 0]]
        >>> np.asarray(negative).astype(int).tolist()
        [[0, 0, 1, 0], [0, 0, 1, 1], [1, 1, 0, 0], [0, 1, 0, 0]]
    """

    def __init__(
        self, epsilon: float = 0.1, distance: Any = "cosine_similarity"
    ) -> None:
        super().__init__(distance)
        self.epsilon = check_float(epsilon, "epsilon", minimum=0.0)

    def mine(self, matrix: Any, positive: Any, negative: Any) -> tuple[Any, Any]:
        # `mine_pairs` takes a similarity: larger means more similar.
        return loss_module.mine_pairs(-matrix, positive, negative, self.epsilon)

    def get_config(self) -> dict[str, Any]:
        config = super().get_config()
        config["epsilon"] = self.epsilon
        return config
