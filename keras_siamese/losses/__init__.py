"""Losses: contrastive, explicit triplet, triplet with in-batch mining,
metric-learning losses of labelled embeddings (supervised contrastive, NT-Xent,
multi-similarity, circle), proxy losses, cross-batch memory, the
self-supervised losses of two views (negative cosine similarity, BYOL, Barlow
Twins, VICReg), the ranking losses of (anchor, positive, *negatives) rows
(multiple negatives ranking, CLIP), and the Matryoshka wrapper over embedding
prefixes."""

from keras_siamese.losses.barlow_twins import BarlowTwinsLoss, barlow_twins_loss
from keras_siamese.losses.byol import BYOLLoss, byol_loss
from keras_siamese.losses.circle import CircleLoss, circle_loss
from keras_siamese.losses.clip import ClipLoss, LogitScale, clip_loss
from keras_siamese.losses.contrastive import ContrastiveLoss, contrastive_loss
from keras_siamese.losses.margin_softmax import (
    ArcFaceLoss,
    CosFaceLoss,
    arcface_loss,
    cosface_loss,
)
from keras_siamese.losses.matryoshka import MatryoshkaLoss, matryoshka_loss
from keras_siamese.losses.memory import CrossBatchMemory
from keras_siamese.losses.multi_similarity import (
    MultiSimilarityLoss,
    multi_similarity_loss,
)
from keras_siamese.losses.multiple_negatives_ranking import (
    MultipleNegativesRankingLoss,
    multiple_negatives_ranking_loss,
)
from keras_siamese.losses.negative_cosine import (
    NegativeCosineSimilarity,
    negative_cosine_similarity,
)
from keras_siamese.losses.ntxent import NTXentLoss, ntxent_loss
from keras_siamese.losses.online_contrastive import (
    OnlineContrastiveLoss,
    online_contrastive_loss,
)
from keras_siamese.losses.online_triplet import OnlineTripletLoss, online_triplet_loss
from keras_siamese.losses.proxy_anchor import ProxyAnchorLoss, proxy_anchor_loss
from keras_siamese.losses.supervised_contrastive import (
    SupervisedContrastiveLoss,
    supervised_contrastive_loss,
)
from keras_siamese.losses.triplet import TripletLoss, triplet_loss
from keras_siamese.losses.vicreg import VICRegLoss, vicreg_loss

__all__ = [
    "ArcFaceLoss",
    "BYOLLoss",
    "BarlowTwinsLoss",
    "CircleLoss",
    "ClipLoss",
    "ContrastiveLoss",
    "CosFaceLoss",
    "CrossBatchMemory",
    "LogitScale",
    "MatryoshkaLoss",
    "MultiSimilarityLoss",
    "MultipleNegativesRankingLoss",
    "NTXentLoss",
    "NegativeCosineSimilarity",
    "OnlineContrastiveLoss",
    "OnlineTripletLoss",
    "ProxyAnchorLoss",
    "SupervisedContrastiveLoss",
    "TripletLoss",
    "VICRegLoss",
    "arcface_loss",
    "barlow_twins_loss",
    "byol_loss",
    "circle_loss",
    "clip_loss",
    "contrastive_loss",
    "cosface_loss",
    "matryoshka_loss",
    "multi_similarity_loss",
    "multiple_negatives_ranking_loss",
    "negative_cosine_similarity",
    "ntxent_loss",
    "online_contrastive_loss",
    "online_triplet_loss",
    "proxy_anchor_loss",
    "supervised_contrastive_loss",
    "triplet_loss",
    "vicreg_loss",
]
