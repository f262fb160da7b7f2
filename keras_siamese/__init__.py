"""Siamese networks for Keras 3 on TensorFlow, JAX and PyTorch.

Select the backend with the `KERAS_BACKEND` environment variable before the
first import of Keras; this package imports only the selected backend.
"""

from keras_siamese.callbacks import (
    EmbeddingPlot,
    EpochSync,
    RetrievalEvaluation,
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
    EuclideanDistance,
    ManhattanDistance,
    SiameseWrapper,
)
from keras_siamese.losses import (
    ContrastiveLoss,
    OnlineTripletLoss,
    TripletLoss,
    contrastive_loss,
    online_triplet_loss,
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
from keras_siamese.retrieval import (
    Calibration,
    EmbeddingIndex,
    Verifier,
    calibrate_threshold,
    one_shot_accuracy,
    retrieval_metrics,
)

__version__ = "0.1.0"

__all__ = [
    "Calibration",
    "ClassBalancedDataset",
    "ContrastiveLoss",
    "CosineDistance",
    "EmbeddingIndex",
    "EmbeddingPlot",
    "EpochSync",
    "EuclideanDistance",
    "ManhattanDistance",
    "OnlineTripletLoss",
    "PairAccuracy",
    "PairDataset",
    "RetrievalEvaluation",
    "SiameseWrapper",
    "TripletAccuracy",
    "TripletDataset",
    "TripletLoss",
    "Verifier",
    "calibrate_threshold",
    "contrastive_loss",
    "cosine_distance",
    "euclidean_distance",
    "make_pairs",
    "manhattan_distance",
    "map_at_r",
    "one_shot_accuracy",
    "online_triplet_loss",
    "pair_accuracy",
    "paired_distances",
    "pairwise_distances",
    "pca_project",
    "recall_at_k",
    "retrieval_metrics",
    "roc_auc",
    "triplet_accuracy",
    "triplet_loss",
    "verification_accuracy",
]
