"""Layers: the shared-weight wrapper, two towers, the pair distances, class proxies, trunk/head."""

from keras_siamese.layers.cosine_proxies import CosineProxies
from keras_siamese.layers.distance_layers import (
    CosineDistance,
    EuclideanDistance,
    ManhattanDistance,
    PairDistance,
)
from keras_siamese.layers.dual_encoder import DualEncoder
from keras_siamese.layers.siamese_wrapper import SiameseWrapper
from keras_siamese.layers.trunk_head import TrunkHead, trunk_of

__all__ = [
    "CosineDistance",
    "CosineProxies",
    "DualEncoder",
    "EuclideanDistance",
    "ManhattanDistance",
    "PairDistance",
    "SiameseWrapper",
    "TrunkHead",
    "trunk_of",
]
