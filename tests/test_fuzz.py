"""Hypothesis fuzz of every public constructor and call with hostile arguments.

The contract under test, for every public object:

- each call either works or raises `ValueError` or `TypeError`; for arguments
  the package validates itself (sizes, margins, names, ranks, shapes) the
  message names the offending argument;
- nothing hangs (a per-example alarm turns a hang into a failure) and the
  interpreter does not crash;
- valid, finite input gives a finite result: a hostile value that a
  constructor accepts must not turn into NaN later.

"Valid" inputs are finite values of moderate magnitude (|x| <= 1e3): the
squared Euclidean distance overflows float32 once coordinates approach 1e19,
which is documented in `docs/robustness.md`, not fuzzed here.
"""

from __future__ import annotations

import contextlib
import math
import signal
import threading
from collections.abc import Callable, Iterator
from typing import Any

import keras
import numpy as np
import pytest
from hypothesis import given
from hypothesis import strategies as st

from keras_siamese import (
    ArcFaceLoss,
    CollapseMonitor,
    CosFaceLoss,
    CosineDistance,
    CosineProxies,
    CrossBatchMemory,
    EuclideanDistance,
    ManhattanDistance,
    ProxyAnchorLoss,
    SiameseWrapper,
    cosine_distance,
    euclidean_distance,
    manhattan_distance,
    paired_distances,
    pairwise_distances,
)
from keras_siamese.callbacks import EmbeddingPlot
from keras_siamese.data import (
    ClassBalancedDataset,
    PairDataset,
    TripletDataset,
    make_pairs,
)
from keras_siamese.losses import (
    CircleLoss,
    ContrastiveLoss,
    MultiSimilarityLoss,
    NTXentLoss,
    OnlineTripletLoss,
    SupervisedContrastiveLoss,
    TripletLoss,
)
from keras_siamese.metrics import (
    PairAccuracy,
    TripletAccuracy,
    map_at_r,
    recall_at_k,
    roc_auc,
    verification_accuracy,
)
from tests.helpers import to_numpy

REFUSED = (ValueError, TypeError)
# Generous: the first call of an op may compile it.
HANG_SECONDS = 60

NAN, INF = float("nan"), float("inf")
# Values that are wrong for most arguments; a few are valid for some (0 is a
# valid margin, "cosine" a valid distance), which the contract allows.
HOSTILE = [
    None,
    "",
    "unknown",
    "Euclidean",
    "cosine",
    "batch_hard",
    "stack",
    -1,
    0,
    -0.5,
    0.0,
    1e-30,
    NAN,
    INF,
    -INF,
    True,
    False,
    2.5,
    10**4,
    [],
    {},
    (1,),
    b"x",
    1j,
    np.float32(NAN),
    np.int64(-3),
    np.array([1.0]),
]


@contextlib.contextmanager
def no_hang(seconds: int = HANG_SECONDS) -> Iterator[None]:
    """Fail instead of hanging: raise `TimeoutError` after `seconds`."""
    if threading.current_thread() is not threading.main_thread():
        yield
        return

    def fire(signum: int, frame: Any) -> None:
        raise TimeoutError(f"call did not return within {seconds} s")

    previous = signal.signal(signal.SIGALRM, fire)
    signal.setitimer(signal.ITIMER_REAL, seconds)
    try:
        yield
    finally:
        signal.setitimer(signal.ITIMER_REAL, 0)
        signal.signal(signal.SIGALRM, previous)


def _finite(value: Any) -> bool:
    leaves = keras.tree.flatten(value)
    return all(np.all(np.isfinite(to_numpy(leaf))) for leaf in leaves)


def _names_one_of(error: Exception, names: list[str]) -> bool:
    return any(name in str(error) for name in names)


# --------------------------------------------------------------------------
# Constructors


def _xy(num_classes: int = 4, per_class: int = 5) -> tuple[np.ndarray, np.ndarray]:
    rng = np.random.default_rng(0)
    y = np.repeat(np.arange(num_classes), per_class)
    return rng.normal(size=(len(y), 3)).astype("float32"), y


def _embedding_model() -> keras.Model:
    return keras.Sequential([keras.Input((3,)), keras.layers.Dense(2)])


def _smoke_pair_layer(layer: Any) -> Any:
    a = np.random.default_rng(1).normal(size=(4, 3)).astype("float32")
    return layer([a, a[::-1]])


def _smoke_wrapper(wrapper: SiameseWrapper) -> Any:
    x = np.random.default_rng(1).normal(size=(4, 3)).astype("float32")
    return wrapper([x, x[::-1]])


def _smoke_pair_loss(loss: Any) -> Any:
    return loss(np.array([1.0, 0.0, 1.0, 0.0]), np.array([[0.1], [0.2], [2.0], [3.0]]))


def _smoke_triplet_loss(loss: Any) -> Any:
    triplets = np.random.default_rng(1).normal(size=(4, 3, 2)).astype("float32")
    return loss(np.zeros(4), triplets)


def _smoke_online_loss(loss: Any) -> Any:
    embeddings = np.random.default_rng(1).normal(size=(6, 2)).astype("float32")
    return loss(np.array([0, 0, 1, 1, 2, 2]), embeddings)


def _smoke_metric(pair: bool) -> Callable[[Any], Any]:
    def smoke(metric: Any) -> Any:
        if pair:
            metric.update_state(np.array([1.0, 0.0]), np.array([[0.1], [2.0]]))
        else:
            triplets = np.random.default_rng(1).normal(size=(4, 3, 2))
            metric.update_state(np.zeros(4), triplets.astype("float32"))
        return metric.result()

    return smoke


def _smoke_dataset(dataset: Any) -> Any:
    inputs, targets = dataset[len(dataset) - 1]
    return [*keras.tree.flatten(inputs), targets]


def _smoke_make_pairs(result: Any) -> Any:
    return keras.tree.flatten(result)


def _smoke_proxy_loss(loss: Any) -> Any:
    cosines = np.random.default_rng(1).uniform(-1, 1, size=(6, 3)).astype("float32")
    return loss(np.array([0, 0, 1, 1, 2, 2]), cosines)


def _smoke_proxies(layer: Any) -> Any:
    return layer(np.random.default_rng(1).normal(size=(4, 3)).astype("float32"))


def _smoke_memory(model: Any) -> Any:
    x, y = _xy(per_class=2)
    model(x)
    return model.memory_loss(y, model.encoder(x))


def _smoke_monitor(monitor: Any) -> Any:
    monitor.set_model(_embedding_model())
    return monitor.spread()


# Never written to: the callback only creates files when an epoch ends.
_PLOT_DIR = "embedding_plots_never_written"


# Arguments without a default; every other one is passed or left out at random.
REQUIRED = {"classes_per_batch", "samples_per_class"}

# name -> (constructor, {argument: strategy of valid values}, smoke test)
CONSTRUCTORS: dict[str, tuple[Callable[..., Any], dict[str, Any], Callable]] = {
    "EuclideanDistance": (
        EuclideanDistance,
        {
            "squared": st.booleans(),
            "epsilon": st.one_of(st.none(), st.floats(1e-12, 1.0)),
        },
        _smoke_pair_layer,
    ),
    "SiameseWrapper": (
        lambda **kwargs: SiameseWrapper(
            kwargs.pop("layer", keras.layers.Dense(2)), **kwargs
        ),
        {
            "layer": st.just(None).map(lambda _: keras.layers.Dense(2)),
            "merge": st.sampled_from(
                [None, "stack", "concat", EuclideanDistance(), CosineDistance()]
            ),
            "fuse_branches": st.booleans(),
        },
        _smoke_wrapper,
    ),
    "ContrastiveLoss": (
        ContrastiveLoss,
        {"margin": st.floats(0.0, 10.0)},
        _smoke_pair_loss,
    ),
    "TripletLoss": (
        TripletLoss,
        {
            "margin": st.floats(0.0, 10.0),
            "distance": st.sampled_from(["euclidean", "squared_euclidean", "cosine"]),
            "soft": st.booleans(),
        },
        _smoke_triplet_loss,
    ),
    "OnlineTripletLoss": (
        OnlineTripletLoss,
        {
            "mining": st.sampled_from(["batch_hard", "semi_hard", "batch_all"]),
            "margin": st.floats(0.0, 10.0),
            "distance": st.sampled_from(["euclidean", "squared_euclidean", "cosine"]),
            "soft": st.just(False),
        },
        _smoke_online_loss,
    ),
    "SupervisedContrastiveLoss": (
        SupervisedContrastiveLoss,
        {"temperature": st.floats(1e-3, 10.0), "global_batch": st.booleans()},
        _smoke_online_loss,
    ),
    "NTXentLoss": (
        NTXentLoss,
        {"temperature": st.floats(1e-3, 10.0)},
        _smoke_online_loss,
    ),
    "MultiSimilarityLoss": (
        MultiSimilarityLoss,
        {
            "alpha": st.floats(1e-2, 100.0),
            "beta": st.floats(1e-2, 100.0),
            "base": st.floats(-1.0, 1.0),
            "mining": st.booleans(),
            "epsilon": st.floats(0.0, 1.0),
        },
        _smoke_online_loss,
    ),
    "CircleLoss": (
        CircleLoss,
        {"m": st.floats(0.0, 1.0), "gamma": st.floats(1e-2, 256.0)},
        _smoke_online_loss,
    ),
    "PairAccuracy": (
        PairAccuracy,
        {"threshold": st.floats(-10.0, 10.0)},
        _smoke_metric(pair=True),
    ),
    "TripletAccuracy": (
        TripletAccuracy,
        {"distance": st.sampled_from(["euclidean", "squared_euclidean", "cosine"])},
        _smoke_metric(pair=False),
    ),
    "PairDataset": (
        lambda **kwargs: PairDataset(*_xy(), **kwargs),
        {
            "batch_size": st.integers(1, 16),
            "positive_fraction": st.floats(0.0, 1.0),
            "steps_per_epoch": st.one_of(st.none(), st.integers(1, 5)),
            "seed": st.one_of(st.none(), st.integers(0, 2**32)),
        },
        _smoke_dataset,
    ),
    "TripletDataset": (
        lambda **kwargs: TripletDataset(*_xy(), **kwargs),
        {
            "batch_size": st.integers(1, 16),
            "steps_per_epoch": st.one_of(st.none(), st.integers(1, 5)),
            "seed": st.one_of(st.none(), st.integers(0, 2**32)),
        },
        _smoke_dataset,
    ),
    "ClassBalancedDataset": (
        lambda **kwargs: ClassBalancedDataset(*_xy(), **kwargs),
        {
            "classes_per_batch": st.integers(1, 4),
            "samples_per_class": st.integers(2, 8),
            "steps_per_epoch": st.one_of(st.none(), st.integers(1, 5)),
            "seed": st.one_of(st.none(), st.integers(0, 2**32)),
        },
        _smoke_dataset,
    ),
    "make_pairs": (
        lambda **kwargs: make_pairs(*_xy(), **kwargs),
        {
            "seed": st.one_of(st.none(), st.integers(0, 2**32)),
            "pairs_per_class": st.one_of(st.none(), st.integers(1, 4)),
        },
        _smoke_make_pairs,
    ),
    "recall_at_k": (
        lambda **kwargs: recall_at_k(*_xy(), **kwargs),
        {
            "k": st.integers(1, 5),
            "distance": st.sampled_from(
                ["euclidean", "squared_euclidean", "cosine", "manhattan"]
            ),
        },
        lambda value: np.asarray(value),
    ),
    "EmbeddingPlot": (
        lambda **kwargs: EmbeddingPlot(
            _embedding_model(), *_xy(), output_dir=_PLOT_DIR, **kwargs
        ),
        {
            "every_n_epochs": st.integers(1, 3),
            "max_points": st.one_of(st.none(), st.integers(1, 30)),
            "seed": st.integers(0, 2**32),
            "batch_size": st.integers(1, 64),
            "dpi": st.integers(10, 100),
        },
        lambda callback: callback.project(),
    ),
    "CosineProxies": (
        lambda **kwargs: CosineProxies(kwargs.pop("num_classes", 3), **kwargs),
        {
            "num_classes": st.integers(1, 8),
            "sub_centers": st.integers(1, 3),
            "initializer": st.sampled_from(["he_normal", "random_normal", None]),
            "lr_multiplier": st.floats(1e-3, 1e3),
        },
        _smoke_proxies,
    ),
    "ArcFaceLoss": (
        ArcFaceLoss,
        {"margin": st.floats(0.0, 180.0), "scale": st.floats(1e-3, 1e3)},
        _smoke_proxy_loss,
    ),
    "CosFaceLoss": (
        CosFaceLoss,
        {"margin": st.floats(0.0, 10.0), "scale": st.floats(1e-3, 1e3)},
        _smoke_proxy_loss,
    ),
    "ProxyAnchorLoss": (
        ProxyAnchorLoss,
        {"margin": st.floats(0.0, 10.0), "alpha": st.floats(1e-3, 1e3)},
        _smoke_proxy_loss,
    ),
    "CrossBatchMemory": (
        lambda **kwargs: CrossBatchMemory(_embedding_model(), **kwargs),
        {
            "memory_size": st.integers(8, 32),
            "loss_kwargs": st.fixed_dictionaries(
                {},
                optional={
                    "mining": st.sampled_from(["batch_hard", "semi_hard", "batch_all"]),
                    "margin": st.floats(0.0, 10.0),
                },
            ),
        },
        _smoke_memory,
    ),
    "CollapseMonitor": (
        lambda **kwargs: CollapseMonitor(_xy()[0], **kwargs),
        {
            "min_ratio": st.floats(1e-3, 1.0),
            "every_n_batches": st.one_of(st.none(), st.integers(1, 5)),
            "distance": st.sampled_from(["euclidean", "cosine", "manhattan"]),
            "stop_training": st.booleans(),
            "batch_size": st.integers(1, 64),
        },
        _smoke_monitor,
    ),
    "map_at_r": (
        lambda **kwargs: map_at_r(*_xy(), **kwargs),
        {
            "distance": st.sampled_from(
                ["euclidean", "squared_euclidean", "cosine", "manhattan"]
            )
        },
        lambda value: np.asarray(value),
    ),
}


@pytest.mark.parametrize("name", sorted(CONSTRUCTORS))
@given(data=st.data())
def test_constructors_accept_or_refuse_by_name(name, data):
    build, valid, smoke = CONSTRUCTORS[name]
    hostile = data.draw(
        st.lists(st.sampled_from(sorted(valid)), min_size=1, unique=True),
        label="hostile arguments",
    )
    kwargs = {}
    for argument, strategy in valid.items():
        if argument in hostile:
            kwargs[argument] = data.draw(st.sampled_from(HOSTILE), label=argument)
        elif argument in REQUIRED or data.draw(st.booleans(), label=f"pass {argument}"):
            kwargs[argument] = data.draw(strategy, label=argument)
    with no_hang():
        try:
            built = build(**kwargs)
        except REFUSED as error:
            assert _names_one_of(error, hostile), (
                f"{name}({kwargs}) raised {error!r}, which names none of {hostile}"
            )
            return
        # Accepted: the value must be a sensible one after all.
        result = smoke(built)
    assert _finite(result), f"{name}({kwargs}) was accepted but gives {result}"


# --------------------------------------------------------------------------
# Call inputs

VALID, NONFINITE, EMPTY, WRONG_RANK, MISMATCH, WRONG_TYPE = (
    "valid",
    "nonfinite",
    "empty",
    "wrong_rank",
    "mismatch",
    "wrong_type",
)
KINDS = [VALID, NONFINITE, EMPTY, WRONG_RANK, MISMATCH, WRONG_TYPE]
WRONG_TYPES = [None, "embeddings", ["a", "b"], {"x": 1}, object()]
# Few distinct shapes: eager JAX compiles every op once per shape, and the
# values, not the shapes, are what the fuzzing is about.
BATCH_SIZES = st.sampled_from([1, 2, 6])
DIM = 3


@st.composite
def _floats(draw: Any, shape: tuple[int, ...], nonfinite: bool = False) -> np.ndarray:
    size = math.prod(shape)
    values = draw(
        st.lists(st.floats(-1e3, 1e3, width=32), min_size=size, max_size=size).map(
            lambda v: np.asarray(v, "float32").reshape(shape)
        )
    )
    if nonfinite and size:
        flat = values.reshape(-1)
        index = draw(st.integers(0, size - 1))
        flat[index] = draw(st.sampled_from([NAN, INF, -INF]))
    return values


@st.composite
def pair_inputs(draw: Any, kind: str) -> tuple[list, list[str]]:
    """`[a, b]` embeddings for the pair distances, and the argument names."""
    batch = 0 if kind == EMPTY else draw(BATCH_SIZES)
    dim = DIM
    a = draw(_floats((batch, dim), nonfinite=kind == NONFINITE))
    b = draw(_floats((batch, dim)))
    if kind == WRONG_RANK:
        a, b = np.float32(1.0), np.float32(2.0)
    elif kind == MISMATCH:
        b = draw(_floats((batch, dim + 1)))
    elif kind == WRONG_TYPE:
        a = draw(st.sampled_from(WRONG_TYPES))
    return [a, b], ["`a`", "`b`", "inputs", "[a, b]"]


@st.composite
def pair_loss_inputs(draw: Any, kind: str) -> tuple[list, list[str]]:
    """`(y_true, y_pred)` for pair losses and metrics: labels and distances."""
    batch = 0 if kind == EMPTY else draw(BATCH_SIZES)
    labels = np.asarray(
        draw(st.lists(st.sampled_from([0.0, 1.0]), min_size=batch, max_size=batch)),
        "float32",
    )
    distances = np.abs(draw(_floats((batch, 1), nonfinite=kind == NONFINITE)))
    if kind == WRONG_RANK:
        distances = distances.reshape(batch, 1, 1)
    elif kind == MISMATCH:
        labels = np.concatenate([labels, [1.0]]).astype("float32")
    elif kind == WRONG_TYPE:
        labels = draw(st.sampled_from(WRONG_TYPES))
    return [labels, distances], ["y_true", "y_pred"]


@st.composite
def triplet_loss_inputs(draw: Any, kind: str) -> tuple[list, list[str]]:
    """`(y_true, y_pred)` with `y_pred` stacked triplets `(batch, 3, dim)`."""
    batch = 0 if kind == EMPTY else draw(BATCH_SIZES)
    dim = DIM
    triplets = draw(_floats((batch, 3, dim), nonfinite=kind == NONFINITE))
    if kind == WRONG_RANK:
        triplets = triplets.reshape(batch, 3 * dim)
    elif kind == MISMATCH:
        triplets = draw(_floats((batch, 2, dim)))
    elif kind == WRONG_TYPE:
        triplets = draw(st.sampled_from(WRONG_TYPES))
    return [np.zeros(batch, "float32"), triplets], ["y_pred"]


@st.composite
def online_inputs(draw: Any, kind: str) -> tuple[list, list[str]]:
    """`(labels, embeddings)` for in-batch mining."""
    batch = 0 if kind == EMPTY else draw(BATCH_SIZES)
    dim = DIM
    labels = np.asarray(
        draw(st.lists(st.integers(0, 3), min_size=batch, max_size=batch)), "int32"
    )
    embeddings = draw(_floats((batch, dim), nonfinite=kind == NONFINITE))
    if kind == WRONG_RANK:
        embeddings = embeddings.reshape(batch, dim, 1)
    elif kind == MISMATCH:
        labels = np.concatenate([labels, [0]]).astype("int32")
    elif kind == WRONG_TYPE:
        embeddings = draw(st.sampled_from(WRONG_TYPES))
    return [labels, embeddings], ["labels", "embeddings", "y_true", "y_pred"]


@st.composite
def embedding_inputs(draw: Any, kind: str) -> tuple[list, list[str]]:
    """`(embeddings,)` for `pairwise_distances`."""
    batch = 0 if kind == EMPTY else draw(BATCH_SIZES)
    dim = DIM
    embeddings = draw(_floats((batch, dim), nonfinite=kind == NONFINITE))
    if kind in (WRONG_RANK, MISMATCH):
        embeddings = embeddings.reshape(-1)
    elif kind == WRONG_TYPE:
        embeddings = draw(st.sampled_from(WRONG_TYPES))
    return [embeddings], ["embeddings"]


def _call_layer(layer_class: type) -> Callable[..., Any]:
    def call(a: Any, b: Any) -> Any:
        return layer_class()([a, b])

    return call


def _call_wrapper(fuse: bool) -> Callable[..., Any]:
    def call(a: Any, b: Any) -> Any:
        dim = np.shape(a)[-1] if np.ndim(a) else 1
        encoder = keras.Sequential([keras.Input((dim,)), keras.layers.Dense(2)])
        return SiameseWrapper(encoder, merge="stack", fuse_branches=fuse)([a, b])

    return call


def _call_metric(metric_class: type) -> Callable[..., Any]:
    def call(y_true: Any, y_pred: Any) -> Any:
        metric = metric_class()
        metric.update_state(y_true, y_pred)
        return metric.result()

    return call


# name -> (function of the inputs, input strategy factory)
CALLS: dict[str, tuple[Callable[..., Any], Callable[[str], Any]]] = {
    "EuclideanDistance": (_call_layer(EuclideanDistance), pair_inputs),
    "CosineDistance": (_call_layer(CosineDistance), pair_inputs),
    "ManhattanDistance": (_call_layer(ManhattanDistance), pair_inputs),
    "euclidean_distance": (euclidean_distance, pair_inputs),
    "cosine_distance": (cosine_distance, pair_inputs),
    "manhattan_distance": (manhattan_distance, pair_inputs),
    "paired_distances": (paired_distances, pair_inputs),
    "SiameseWrapper": (_call_wrapper(fuse=False), pair_inputs),
    "SiameseWrapper-fused": (_call_wrapper(fuse=True), pair_inputs),
    "pairwise_distances": (pairwise_distances, embedding_inputs),
    "ContrastiveLoss": (ContrastiveLoss(), pair_loss_inputs),
    "PairAccuracy": (_call_metric(PairAccuracy), pair_loss_inputs),
    "TripletLoss": (TripletLoss(), triplet_loss_inputs),
    "TripletAccuracy": (_call_metric(TripletAccuracy), triplet_loss_inputs),
    "OnlineTripletLoss-batch_hard": (OnlineTripletLoss("batch_hard"), online_inputs),
    "OnlineTripletLoss-batch_all": (OnlineTripletLoss("batch_all"), online_inputs),
    "OnlineTripletLoss-semi_hard": (OnlineTripletLoss("semi_hard"), online_inputs),
    "SupervisedContrastiveLoss": (SupervisedContrastiveLoss(), online_inputs),
    "NTXentLoss": (NTXentLoss(), online_inputs),
    "MultiSimilarityLoss": (MultiSimilarityLoss(mining=True), online_inputs),
    "CircleLoss": (CircleLoss(), online_inputs),
}


@pytest.mark.parametrize("name", sorted(CALLS))
@given(data=st.data())
def test_calls_work_or_refuse_by_name(name, data):
    function, strategy = CALLS[name]
    kind = data.draw(st.sampled_from(KINDS), label="kind")
    inputs, argument_names = data.draw(strategy(kind), label="inputs")
    with no_hang():
        try:
            result = function(*inputs)
        except REFUSED as error:
            assert kind not in (VALID,), f"valid input refused: {error!r}"
            if kind in (WRONG_RANK, MISMATCH, EMPTY):
                assert _names_one_of(error, argument_names), (
                    f"{kind} input raised {error!r}, naming none of {argument_names}"
                )
            return
        result = keras.tree.map_structure(to_numpy, result)
    assert kind not in (WRONG_RANK, MISMATCH, WRONG_TYPE), (
        f"{kind} input was accepted and gave {result}"
    )
    if kind in (VALID, EMPTY):
        assert _finite(result), f"{kind} input gave a non-finite result {result}"


# --------------------------------------------------------------------------
# NumPy evaluation functions and dataset indexing

EVALUATIONS: dict[str, Callable[..., Any]] = {
    "verification_accuracy": verification_accuracy,
    "roc_auc": roc_auc,
}


@pytest.mark.parametrize("name", sorted(EVALUATIONS))
@given(
    kind=st.sampled_from([VALID, NONFINITE, EMPTY, MISMATCH, WRONG_TYPE]),
    data=st.data(),
)
def test_evaluation_functions_work_or_refuse(name, kind, data):
    size = 0 if kind == EMPTY else data.draw(st.integers(2, 8))
    distances = np.abs(data.draw(_floats((size,), nonfinite=kind == NONFINITE)))
    # Both classes present, so a valid input has a defined answer.
    labels = np.arange(size) % 2
    if kind == MISMATCH:
        labels = np.arange(size + 1) % 2
    elif kind == WRONG_TYPE:
        distances = data.draw(st.sampled_from(WRONG_TYPES))
    with no_hang():
        try:
            result = EVALUATIONS[name](distances, labels)
        except REFUSED as error:
            assert kind != VALID, f"valid input refused: {error!r}"
            return
    assert kind in (VALID, NONFINITE), f"{kind} input accepted: {result}"
    if kind == VALID:
        assert _finite(np.asarray(result, dtype=float))


@pytest.mark.parametrize("dataset_class", [PairDataset, TripletDataset])
@given(index=st.sampled_from([-1, 3, 10**9, 1.5, "0", None, np.int64(1), True]))
def test_dataset_index_is_checked(dataset_class, index):
    x, y = _xy()
    dataset = dataset_class(x, y, batch_size=4, steps_per_epoch=3, seed=0)
    with no_hang():
        try:
            inputs, _ = dataset[index]
        except (IndexError, TypeError):
            return
    assert 0 <= int(index) < len(dataset)
    assert _finite(keras.tree.flatten(inputs))
