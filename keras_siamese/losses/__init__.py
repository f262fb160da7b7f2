"""Losses: contrastive, explicit triplet, and triplet with in-batch mining."""

from keras_siamese.losses.contrastive import ContrastiveLoss, contrastive_loss
from keras_siamese.losses.online_triplet import OnlineTripletLoss, online_triplet_loss
from keras_siamese.losses.triplet import TripletLoss, triplet_loss

__all__ = [
    "ContrastiveLoss",
    "OnlineTripletLoss",
    "TripletLoss",
    "contrastive_loss",
    "online_triplet_loss",
    "triplet_loss",
]
