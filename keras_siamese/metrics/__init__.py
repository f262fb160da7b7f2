"""Metrics for training (Keras metrics) and for evaluation over a whole set."""

from keras_siamese.metrics.evaluation import (
    map_at_r,
    recall_at_k,
    roc_auc,
    verification_accuracy,
)
from keras_siamese.metrics.pair_accuracy import PairAccuracy, pair_accuracy
from keras_siamese.metrics.triplet_accuracy import TripletAccuracy, triplet_accuracy

__all__ = [
    "PairAccuracy",
    "TripletAccuracy",
    "map_at_r",
    "pair_accuracy",
    "recall_at_k",
    "roc_auc",
    "triplet_accuracy",
    "verification_accuracy",
]
