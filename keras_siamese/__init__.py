"""Siamese networks for Keras 3 on TensorFlow, JAX and PyTorch.

Select the backend with the `KERAS_BACKEND` environment variable before the
first import of Keras; this package imports only the selected backend.
"""

from keras_siamese.callbacks import (
    CollapseMonitor,
    EmbeddingCollapseWarning,
    EmbeddingPlot,
    EpochSync,
    pca_project,
)
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
    CosineProxies,
    EuclideanDistance,
    ManhattanDistance,
    SiameseWrapper,
)
from keras_siamese.losses import (
    ArcFaceLoss,
    CircleLoss,
    ContrastiveLoss,
    CosFaceLoss,
    CrossBatchMemory,
    MultiSimilarityLoss,
    NTXentLoss,
    OnlineTripletLoss,
    ProxyAnchorLoss,
    SupervisedContrastiveLoss,
    TripletLoss,
    arcface_loss,
    circle_loss,
    contrastive_loss,
    cosface_loss,
    multi_similarity_loss,
    ntxent_loss,
    online_triplet_loss,
    proxy_anchor_loss,
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
    "ArcFaceLoss",
    "CircleLoss",
    "ClassBalancedDataset",
    "CollapseMonitor",
    "ContrastiveLoss",
    "CosFaceLoss",
    "CosineDistance",
    "CosineProxies",
    "CrossBatchMemory",
    "EmbeddingCollapseWarning",
    "EmbeddingPlot",
    "EpochSync",
    "EuclideanDistance",
    "ManhattanDistance",
    "MultiSimilarityLoss",
    "NTXentLoss",
    "OnlineTripletLoss",
    "PairAccuracy",
    "PairDataset",
    "ProxyAnchorLoss",
    "SiameseWrapper",
    "SupervisedContrastiveLoss",
    "TripletAccuracy",
    "TripletDataset",
    "TripletLoss",
    "arcface_loss",
    "circle_loss",
    "contrastive_loss",
    "cosface_loss",
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
    "proxy_anchor_loss",
    "recall_at_k",
    "roc_auc",
    "supervised_contrastive_loss",
    "triplet_accuracy",
    "triplet_loss",
    "verification_accuracy",
]
