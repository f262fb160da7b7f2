"""From a trained encoder to answers: search, thresholds, one-shot, evaluation.

- `EmbeddingIndex`: a gallery of embeddings with labels, exact (or faiss)
  nearest-neighbour search, saved without pickle.
- `calibrate_threshold`: the distance threshold for a target accuracy, F1, recall,
  precision or false-accept rate.
- `engines`: how an index finds candidates (the `Engine` protocol, the exact
  and faiss engines, `engines.register` to add one).
- `Verifier`: an encoder with a threshold and a gallery, for verification
  and open-set identification, saved and loaded as one directory.
- `one_shot_accuracy`: the N-way K-shot protocol of Koch et al. (2015).
- `retrieval_metrics`: recall@k, R-precision, MAP@R, MRR, NMI and AMI as
  pytorch-metric-learning defines them, in bounded memory.
- `pair_metrics`: accuracy, F1, average precision, MCC and ROC AUC of
  labelled pairs.
- `ranking_metrics`: NDCG@k, MAP@k, MRR@k, recall@k, precision@k and
  accuracy@k of queries with known relevant corpus rows.
- `mine_hard_negatives`: each query's nearest corpus rows that are not its
  positives, the hard negatives of a ranking loss.
"""

from keras_siamese.retrieval.calibration import (
    TARGETS,
    Calibration,
    calibrate_threshold,
)
from keras_siamese.retrieval.hard_negatives import mine_hard_negatives
from keras_siamese.retrieval.index import ENGINES, EmbeddingIndex
from keras_siamese.retrieval.metrics import (
    CLUSTERING_METRICS,
    KNN_METRICS,
    METRICS,
    retrieval_metrics,
)
from keras_siamese.retrieval.one_shot import one_shot_accuracy
from keras_siamese.retrieval.pair_metrics import PAIR_METRICS, pair_metrics
from keras_siamese.retrieval.ranking_metrics import RANKING_METRICS, ranking_metrics
from keras_siamese.retrieval.verifier import Verifier

__all__ = [
    "CLUSTERING_METRICS",
    "ENGINES",
    "KNN_METRICS",
    "METRICS",
    "PAIR_METRICS",
    "RANKING_METRICS",
    "TARGETS",
    "Calibration",
    "EmbeddingIndex",
    "Verifier",
    "calibrate_threshold",
    "mine_hard_negatives",
    "one_shot_accuracy",
    "pair_metrics",
    "ranking_metrics",
    "retrieval_metrics",
]
