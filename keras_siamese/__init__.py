"""Siamese networks for Keras 3 on TensorFlow, JAX and PyTorch.

Select the backend with the `KERAS_BACKEND` environment variable before the
first import of Keras; this package imports only the selected backend.
"""

from keras_siamese.distances import (
    cosine_distance,
    euclidean_distance,
    manhattan_distance,
    paired_distances,
    pairwise_distances,
)
from keras_siamese.layers import (
    CosineDistance,
    EuclideanDistance,
    ManhattanDistance,
    SiameseWrapper,
)

__version__ = "0.1.0"

__all__ = [
    "CosineDistance",
    "EuclideanDistance",
    "ManhattanDistance",
    "SiameseWrapper",
    "cosine_distance",
    "euclidean_distance",
    "manhattan_distance",
    "paired_distances",
    "pairwise_distances",
]
