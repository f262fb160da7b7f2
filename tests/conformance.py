"""The conformance table: every layer, loss and metric of the package, once.

`tests/test_conformance.py` runs every check on every entry of `CASES`, in
the spirit of Keras' `TestCase.run_layer_test` and keras-hub's
`run_serialization_test`: symbolic and eager output shapes, the JSON config
round trip, `serialize_keras_object` / `deserialize_keras_object`, a `.keras`
file reloaded in safe mode, half-precision dtype policies, and for layers
Keras' own `run_layer_test`.

To add a public layer, loss or metric, add one line to `CASES` (constructor
arguments that differ from the defaults make the config checks stronger).
Layers take `inputs`, the per-example shapes of the tensors they are called
on (a pair of `(4,)` embeddings by default; one shape such as `(4,)` for a
layer called on a single tensor), and `output`, the expected output
shape with `None` for the batch. Losses and metrics take the layout of their
`(y_true, y_pred)`: one of `LAYOUTS`.
"""

from __future__ import annotations

import dataclasses
from collections.abc import Callable
from typing import Any

import keras
import numpy as np

from keras_siamese import (
    BYOL,
    ArcFaceLoss,
    BarlowTwins,
    BarlowTwinsLoss,
    BYOLLoss,
    CircleLoss,
    ClipLoss,
    ContrastiveLoss,
    CosFaceLoss,
    CosineDistance,
    CosineProxies,
    DualEncoder,
    EuclideanDistance,
    LogitScale,
    ManhattanDistance,
    MatryoshkaLoss,
    MultipleNegativesRankingLoss,
    MultiSimilarityLoss,
    NegativeCosineSimilarity,
    NTXentLoss,
    OnlineContrastiveLoss,
    OnlineTripletLoss,
    PairAccuracy,
    ProxyAnchorLoss,
    SiameseWrapper,
    SimCLR,
    SimSiam,
    SupervisedContrastiveLoss,
    TripletAccuracy,
    TripletLoss,
    TrunkHead,
    VICReg,
    VICRegLoss,
)
from keras_siamese.miners import (
    BatchEasyHardMiner,
    MultiSimilarityMiner,
    PairMarginMiner,
    TripletMarginMiner,
)

BATCH = 8
PAIR = ((4,), (4,))


def serialized(obj: Any) -> dict:
    """`obj` as the config a loss stores for it (constructor arguments take it)."""
    return keras.saving.serialize_keras_object(obj)


def mlp() -> keras.Model:
    return keras.Sequential([keras.Input((4,)), keras.layers.Dense(3)])


@dataclasses.dataclass(frozen=True)
class Layout:
    """The `(y_true, y_pred)` of a loss or metric, and a model that outputs it."""

    name: str
    input_shape: tuple
    model: Callable[[], keras.Model]
    y_true: Callable[[np.random.Generator], np.ndarray]
    y_pred: Callable[[np.random.Generator], np.ndarray]
    loss: Callable[[], keras.losses.Loss]


LAYOUTS = {
    layout.name: layout
    for layout in [
        Layout(
            "pairs",  # pair labels, 1 = similar; (batch, 1) distances
            (4,),
            lambda: keras.Sequential(
                [keras.Input((4,)), keras.layers.Dense(1, activation="softplus")]
            ),
            lambda rng: (np.arange(BATCH) % 2).astype("float32"),
            lambda rng: rng.uniform(0.0, 2.0, (BATCH, 1)),
            ContrastiveLoss,
        ),
        Layout(
            "triplets",  # ignored y_true; stacked (anchor, positive, negative)
            (3, 4),
            lambda: keras.Sequential([keras.Input((3, 4)), keras.layers.Dense(2)]),
            lambda rng: np.zeros(BATCH, "float32"),
            lambda rng: rng.normal(size=(BATCH, 3, 2)),
            TripletLoss,
        ),
        Layout(
            "labels",  # class labels; (batch, dim) embeddings
            (4,),
            lambda: keras.Sequential([keras.Input((4,)), keras.layers.Dense(3)]),
            lambda rng: np.arange(BATCH) % 4,
            lambda rng: rng.normal(size=(BATCH, 3)),
            OnlineTripletLoss,
        ),
        Layout(
            "proxies",  # class labels; (batch, num_classes) cosines to the proxies
            (4,),
            lambda: keras.Sequential(
                [keras.Input((4,)), keras.layers.Dense(3), CosineProxies(4)]
            ),
            lambda rng: np.arange(BATCH) % 4,
            lambda rng: rng.uniform(-1.0, 1.0, (BATCH, 4)),
            ArcFaceLoss,
        ),
        Layout(
            "ranking",  # ignored y_true; stacked (anchor, positive, 2 hard negatives)
            (4, 4),
            lambda: keras.Sequential([keras.Input((4, 4)), keras.layers.Dense(3)]),
            lambda rng: np.zeros(BATCH, "float32"),
            lambda rng: rng.normal(size=(BATCH, 4, 3)),
            MultipleNegativesRankingLoss,
        ),
        Layout(
            "candidate-ids",  # ids of the positives, some repeated; (anchor, positive)
            (2, 4),
            lambda: keras.Sequential([keras.Input((2, 4)), keras.layers.Dense(3)]),
            lambda rng: np.arange(BATCH) % 5,
            lambda rng: rng.normal(size=(BATCH, 2, 3)),
            lambda: MultipleNegativesRankingLoss(remove_accidental_hits=True),
        ),
        Layout(
            "scaled-pairs",  # ignored y_true; (batch, 2, dim) after LogitScale
            (2, 4),
            lambda: keras.Sequential(
                [keras.Input((2, 4)), keras.layers.Dense(3), LogitScale()]
            ),
            lambda rng: np.zeros(BATCH, "float32"),
            lambda rng: rng.normal(size=(BATCH, 2, 3)),
            ClipLoss,
        ),
        Layout(
            "views",  # ignored y_true; (2N, dim), view 0 of N examples, then view 1
            (4,),
            lambda: keras.Sequential([keras.Input((4,)), keras.layers.Dense(3)]),
            lambda rng: np.zeros(BATCH, "float32"),
            lambda rng: rng.normal(size=(BATCH, 3)),
            BarlowTwinsLoss,
        ),
        Layout(
            "views-stacked",  # ignored y_true; (2N, 2, dim): prediction, target
            (4,),
            lambda: keras.Sequential(
                [keras.Input((4,)), keras.layers.Dense(6), keras.layers.Reshape((2, 3))]
            ),
            lambda rng: np.zeros(BATCH, "float32"),
            lambda rng: rng.normal(size=(BATCH, 2, 3)),
            NegativeCosineSimilarity,
        ),
    ]
}


@dataclasses.dataclass(frozen=True)
class Case:
    name: str
    kind: str  # "layer", "loss" or "metric"
    cls: type
    kwargs: dict | Callable[[], dict] = dataclasses.field(default_factory=dict)
    inputs: tuple = PAIR  # layers
    output: Any = None  # layers: expected output shape(s), batch None
    layout: str | None = None  # losses and metrics: a key of LAYOUTS

    def init_kwargs(self) -> dict:
        """Fresh constructor arguments (new encoder objects every call)."""
        return self.kwargs() if callable(self.kwargs) else dict(self.kwargs)

    def build(self) -> Any:
        return self.cls(**self.init_kwargs())

    def __str__(self) -> str:
        return self.name


def layer(name: str, cls: type, kwargs: Any, output: Any, inputs: tuple = PAIR) -> Case:
    return Case(name, "layer", cls, kwargs, inputs=inputs, output=output)


def loss(name: str, cls: type, kwargs: dict, layout: str) -> Case:
    return Case(name, "loss", cls, kwargs, layout=layout)


def metric(name: str, cls: type, kwargs: dict, layout: str) -> Case:
    return Case(name, "metric", cls, kwargs, layout=layout)


# One line per public layer, loss and metric (and per distinct configuration).
# fmt: off
CASES = [
    layer("euclidean", EuclideanDistance, {}, (None, 1)),
    layer("euclidean-options", EuclideanDistance, {"squared": True, "epsilon": 1e-6, "name": "d"}, (None, 1)),
    layer("cosine", CosineDistance, {"name": "cos"}, (None, 1)),
    layer("manhattan", ManhattanDistance, {}, (None, 1)),
    layer("wrapper-tuple", SiameseWrapper, lambda: {"layer": mlp(), "fuse_branches": True, "name": "twins"}, ((None, 3), (None, 3))),
    layer("wrapper-stack", SiameseWrapper, lambda: {"layer": mlp(), "merge": "stack"}, (None, 2, 3)),
    layer("wrapper-concat", SiameseWrapper, lambda: {"layer": mlp(), "merge": "concat"}, (None, 6)),
    layer("wrapper-distance", SiameseWrapper, lambda: {"layer": mlp(), "merge": ManhattanDistance()}, (None, 1)),
    layer("dual-tuple", DualEncoder, lambda: {"query_encoder": mlp(), "candidate_encoder": mlp(), "fuse_candidates": False, "name": "towers"}, ((None, 3), (None, 3))),
    layer("dual-stack", DualEncoder, lambda: {"query_encoder": mlp(), "candidate_encoder": mlp(), "merge": "stack"}, (None, 3, 3), inputs=((4,), (4,), (4,))),
    layer("dual-distance", DualEncoder, lambda: {"query_encoder": mlp(), "candidate_encoder": mlp(), "merge": CosineDistance()}, (None, 1)),
    layer("trunk-head", TrunkHead, lambda: {"trunk": mlp(), "head": keras.Sequential([keras.Input((3,)), keras.layers.Dense(2)]), "name": "th"}, (None, 2), inputs=(4,)),
    layer("logit-scale", LogitScale, {"initial": 10.0, "maximum": 50.0, "name": "s"}, (None, 2, 3), inputs=(2, 3)),
    layer("cosine-proxies", CosineProxies, {"num_classes": 5, "sub_centers": 3, "lr_multiplier": 10.0}, (None, 5), inputs=(4,)),
    layer("simsiam", SimSiam, lambda: {"encoder": mlp(), "projection_hidden_dim": 8, "projection_dim": 5, "prediction_hidden_dim": 4, "name": "ss"}, (None, 2, 5), inputs=(4,)),
    layer("byol", BYOL, lambda: {"encoder": mlp(), "momentum_steps": 10, "projection_hidden_dim": 8, "projection_dim": 5, "prediction_hidden_dim": 6, "start_momentum": 0.9}, (None, 2, 5), inputs=(4,)),
    layer("barlow-twins-model", BarlowTwins, lambda: {"encoder": mlp(), "projection_hidden_dim": 8, "projection_dim": 5}, (None, 5), inputs=(4,)),
    layer("vicreg-model", VICReg, lambda: {"encoder": mlp(), "projection_hidden_dim": 8, "projection_dim": 5, "projection_layers": 2}, (None, 5), inputs=(4,)),
    layer("simclr-model", SimCLR, lambda: {"encoder": mlp(), "projection_hidden_dim": 8, "projection_dim": 5, "projection_layers": 3, "batch_norm": False}, (None, 5), inputs=(4,)),
    loss("contrastive", ContrastiveLoss, {"margin": 2.5, "reduction": "sum", "name": "c"}, "pairs"),
    loss("contrastive-similar-0", ContrastiveLoss, {"margin": 1.5, "similar_label": 0}, "pairs"),
    loss("triplet", TripletLoss, {"margin": 0.2, "distance": "squared_euclidean", "soft": True}, "triplets"),
    loss("online-semi-hard", OnlineTripletLoss, {"mining": "semi_hard", "margin": 0.3, "distance": "cosine", "soft": True}, "labels"),
    loss("online-batch-all", OnlineTripletLoss, {"mining": "batch_all", "distance": "manhattan"}, "labels"),
    loss("matryoshka", MatryoshkaLoss, lambda: {"loss": SupervisedContrastiveLoss(temperature=0.2), "dims": [3, 2], "weights": [1.0, 0.5]}, "labels"),
    loss("online-triplet-miner", OnlineTripletLoss, lambda: {"miner": serialized(TripletMarginMiner(0.1, "semihard")), "margin": 0.05}, "labels"),
    loss("online-pair-miner-smooth", OnlineTripletLoss, lambda: {"miner": serialized(MultiSimilarityMiner(0.2)), "margin": 0.1, "smooth_loss": True, "reducer": "mean"}, "labels"),
    loss("online-contrastive", OnlineContrastiveLoss, {"pos_margin": 0.9, "neg_margin": 0.2, "distance": "cosine_similarity", "reducer": "mean"}, "labels"),
    loss("online-contrastive-miner", OnlineContrastiveLoss, lambda: {"miner": serialized(BatchEasyHardMiner("hard", "hard", allowed_neg_range=(0.0, 5.0))), "neg_margin": 2.0}, "labels"),
    loss("online-contrastive-pair-margin", OnlineContrastiveLoss, lambda: {"miner": serialized(PairMarginMiner(0.1, 1.5, distance="manhattan")), "distance": "squared_euclidean"}, "labels"),
    loss("supervised-contrastive", SupervisedContrastiveLoss, {"temperature": 0.2, "reducer": "mean"}, "labels"),
    loss("ntxent", NTXentLoss, {"temperature": 0.1, "reducer": "per_anchor"}, "labels"),
    loss("multi-similarity", MultiSimilarityLoss, {"alpha": 1.5, "mining": True, "reducer": "nonzero_mean"}, "labels"),
    loss("circle", CircleLoss, {"m": 0.3, "gamma": 32.0, "reducer": "mean"}, "labels"),
    loss("multiple-negatives-ranking", MultipleNegativesRankingLoss, {"scale": 10.0, "similarity": "dot"}, "ranking"),
    loss("multiple-negatives-symmetric", MultipleNegativesRankingLoss, {"symmetric": True, "global_batch": True}, "ranking"),
    loss("multiple-negatives-hits", MultipleNegativesRankingLoss, {"remove_accidental_hits": True, "name": "mnrl"}, "candidate-ids"),
    loss("clip", ClipLoss, {"name": "c"}, "scaled-pairs"),
    loss("arcface", ArcFaceLoss, {"margin": 20.0, "scale": 30.0}, "proxies"),
    loss("cosface", CosFaceLoss, {"margin": 0.3}, "proxies"),
    loss("proxy-anchor", ProxyAnchorLoss, {"margin": 0.2, "alpha": 16.0}, "proxies"),
    loss("negative-cosine", NegativeCosineSimilarity, {"eps": 1e-6}, "views"),
    loss("negative-cosine-stacked", NegativeCosineSimilarity, {"name": "simsiam"}, "views-stacked"),
    loss("byol", BYOLLoss, {"eps": 1e-6, "name": "b"}, "views-stacked"),
    loss("barlow-twins", BarlowTwinsLoss, {"lambda_param": 1e-2}, "views"),
    loss("vicreg", VICRegLoss, {"lambda_param": 20.0, "mu_param": 10.0, "nu_param": 2.0, "eps": 1e-3}, "views"),
    metric("pair-accuracy", PairAccuracy, {"threshold": 0.3, "name": "pa"}, "pairs"),
    metric("pair-accuracy-similar-0", PairAccuracy, {"similar_label": 0}, "pairs"),
    metric("triplet-accuracy", TripletAccuracy, {"distance": "cosine"}, "triplets"),
]
# fmt: on

LAYERS = [case for case in CASES if case.kind == "layer"]
LOSSES_AND_METRICS = [case for case in CASES if case.kind != "layer"]
