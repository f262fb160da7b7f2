"""Layers: the shared-weight wrapper and the pair distances."""

from keras_siamese.layers.distance_layers import (
    CosineDistance,
    EuclideanDistance,
    ManhattanDistance,
)
from keras_siamese.layers.siamese_wrapper import SiameseWrapper

__all__ = ["CosineDistance", "EuclideanDistance", "ManhattanDistance", "SiameseWrapper"]
