"""Keras callbacks for watching a Siamese network learn and resuming it exactly."""

from keras_siamese.callbacks.collapse import CollapseMonitor, EmbeddingCollapseWarning
from keras_siamese.callbacks.embedding_plot import EmbeddingPlot, pca_project
from keras_siamese.callbacks.epoch_sync import EpochSync
from keras_siamese.callbacks.knn_evaluation import (
    KNNEvaluation,
    knn_accuracy,
    knn_predict,
)
from keras_siamese.callbacks.retrieval_evaluation import RetrievalEvaluation

__all__ = [
    "CollapseMonitor",
    "EmbeddingCollapseWarning",
    "EmbeddingPlot",
    "EpochSync",
    "KNNEvaluation",
    "RetrievalEvaluation",
    "knn_accuracy",
    "knn_predict",
    "pca_project",
]
