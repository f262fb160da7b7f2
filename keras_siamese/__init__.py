"""Siamese networks for Keras 3 on TensorFlow, JAX and PyTorch.

Select the backend with the `KERAS_BACKEND` environment variable before the
first import of Keras; this package imports only the selected backend.
"""

from keras_siamese.callbacks import EmbeddingPlot, EpochSync, pca_project
from keras_siamese.data import (
    ClassBalancedDataset,
    PairDataset,
    TripletDataset,
    make_pairs,
)
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
from keras_siamese.losses import (
    CircleLoss,
    ContrastiveLoss,
    MultiSimilarityLoss,
    NTXentLoss,
    OnlineTripletLoss,
    SupervisedContrastiveLoss,
    TripletLoss,
    circle_loss,
    contrastive_loss,
    multi_similarity_loss,
    ntxent_loss,
    online_triplet_loss,
    supervised_contrastive_loss,
    triplet_loss,
)
from keras_siamese.metrics import (
    PairAccuracy,
    TripletAccuracy,
    map_at_r,
    pair_accuracy,
    recall_at_k,
    roc_auc,
    triplet_accuracy,
    verification_accuracy,
)

__version__ = "0.1.0"

__all__ = [
    "CircleLoss",
    "ClassBalancedDataset",
    "ContrastiveLoss",
    "CosineDistance",
    "EmbeddingPlot",
    "EpochSync",
    "EuclideanDistance",
    "ManhattanDistance",
    "MultiSimilarityLoss",
    "NTXentLoss",
    "OnlineTripletLoss",
    "PairAccuracy",
    "PairDataset",
    "SiameseWrapper",
    "SupervisedContrastiveLoss",
    "TripletAccuracy",
    "TripletDataset",
    "TripletLoss",
    "circle_loss",
    "contrastive_loss",
    "cosine_distance",
    "euclidean_distance",
    "make_pairs",
    "manhattan_distance",
    "map_at_r",
    "multi_similarity_loss",
    "ntxent_loss",
    "online_triplet_loss",
    "pair_accuracy",
    "paired_distances",
    "pairwise_distances",
    "pca_project",
    "recall_at_k",
    "roc_auc",
    "supervised_contrastive_loss",
    "triplet_accuracy",
    "triplet_loss",
    "verification_accuracy",
]
