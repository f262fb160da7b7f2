"""Losses: contrastive, explicit triplet, triplet with in-batch mining, proxies."""

from keras_siamese.losses.contrastive import ContrastiveLoss, contrastive_loss
from keras_siamese.losses.margin_softmax import (
    ArcFaceLoss,
    CosFaceLoss,
    arcface_loss,
    cosface_loss,
)
from keras_siamese.losses.memory import CrossBatchMemory
from keras_siamese.losses.online_triplet import OnlineTripletLoss, online_triplet_loss
from keras_siamese.losses.proxy_anchor import ProxyAnchorLoss, proxy_anchor_loss
from keras_siamese.losses.triplet import TripletLoss, triplet_loss

__all__ = [
    "ArcFaceLoss",
    "ContrastiveLoss",
    "CosFaceLoss",
    "CrossBatchMemory",
    "OnlineTripletLoss",
    "ProxyAnchorLoss",
    "TripletLoss",
    "arcface_loss",
    "contrastive_loss",
    "cosface_loss",
    "online_triplet_loss",
    "proxy_anchor_loss",
    "triplet_loss",
]
