"""Miners: the pairs or triplets of a batch of labelled embeddings a loss
should look at, as dense boolean masks (see `keras_siamese.miners.base`)."""

from __future__ import annotations

from typing import Any

import keras

from keras_siamese.miners.base import (
    SIMILARITIES,
    CosineSimilarity,
    DotProductSimilarity,
    Measure,
    Miner,
    Similarity,
    register_similarity,
)
from keras_siamese.miners.batch_easy_hard import BatchEasyHardMiner
from keras_siamese.miners.multi_similarity import MultiSimilarityMiner
from keras_siamese.miners.pair_margin import PairMarginMiner
from keras_siamese.miners.triplet_margin import TripletMarginMiner

__all__ = [
    "SIMILARITIES",
    "BatchEasyHardMiner",
    "CosineSimilarity",
    "DotProductSimilarity",
    "Measure",
    "Miner",
    "MultiSimilarityMiner",
    "PairMarginMiner",
    "Similarity",
    "TripletMarginMiner",
    "get",
    "register_similarity",
]


def get(miner: Any, argument: str = "miner") -> Miner | None:
    """A `Miner`, from itself, `None`, or its serialized config.

    Raises:
        TypeError: if `miner` is none of these.
    """
    if miner is None or isinstance(miner, Miner):
        return miner
    if isinstance(miner, dict):
        miner = keras.saving.deserialize_keras_object(miner)
        if isinstance(miner, Miner):
            return miner
    raise TypeError(f"`{argument}` must be a Miner or None; got {miner!r}.")
