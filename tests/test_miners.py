"""Miners and the losses they feed: properties, NumPy references, checks.

On every backend: mined masks are valid pairs (no self-pairs, positives of
the anchor's class only, negatives of other classes only), symmetric where
the rule is; `TripletMarginMiner` and `PairMarginMiner` equal NumPy
references of their rules; the triplet loss over a miner's triplets, computed
without a `(B, M, M)` tensor, equals a NumPy loop over every triplet;
gradients stay finite with a miner (duplicated rows, zero vectors, one
class); miners and losses with miners run compiled, save and reload, and
refuse bad arguments by name.
"""

from __future__ import annotations

import json

import keras
import numpy as np
import pytest
from hypothesis import given
from hypothesis import strategies as st

from keras_siamese import (
    CircleLoss,
    MultiSimilarityLoss,
    NTXentLoss,
    OnlineContrastiveLoss,
    OnlineTripletLoss,
    SupervisedContrastiveLoss,
    online_contrastive_loss,
    online_triplet_loss,
)
from keras_siamese.distances import pairwise_distances
from keras_siamese.miners import SIMILARITIES as BUILT_IN_SIMILARITIES
from keras_siamese.miners import (
    BatchEasyHardMiner,
    CosineSimilarity,
    DotProductSimilarity,
    Measure,
    MultiSimilarityMiner,
    PairMarginMiner,
    Similarity,
    TripletMarginMiner,
    register_similarity,
)
from tests.helpers import few_examples, to_numpy, value_and_grad

DISTANCES = ("euclidean", "squared_euclidean", "cosine", "manhattan")


def _numpy_matrix(x, refs, distance):
    """Smaller-is-more-similar matrix in float64, as the package defines it."""
    other = x if refs is None else refs
    x, other = x.astype(np.float64), other.astype(np.float64)
    difference = x[:, None, :] - other[None, :, :]
    if distance == "euclidean":
        return np.sqrt(np.sum(difference**2, -1))
    if distance == "squared_euclidean":
        return np.sum(difference**2, -1)
    if distance == "manhattan":
        return np.sum(np.abs(difference), -1)
    if distance == "dot_product_similarity":
        return -(x @ other.T)
    unit = x / np.maximum(np.linalg.norm(x, axis=1, keepdims=True), 1e-6)
    unit_other = other / np.maximum(np.linalg.norm(other, axis=1, keepdims=True), 1e-6)
    similarity = unit @ unit_other.T
    return 1.0 - similarity if distance == "cosine" else -similarity


def _numpy_label_masks(labels, reference_labels):
    if reference_labels is None:
        same = labels[:, None] == labels[None, :]
        return same & ~np.eye(len(labels), dtype=bool), ~same
    same = labels[:, None] == reference_labels[None, :]
    return same, ~same


@st.composite
def batches(draw, max_batch=8, dim=3):
    """Labels of few or many classes; rows on a coarse grid, so that equal
    distances and ties occur; maybe references."""
    # Few distinct shapes: every new shape compiles anew on JAX.
    batch = draw(st.sampled_from([4, max_batch]))
    classes = draw(st.sampled_from([1, 2, 3, batch]))
    rng = np.random.default_rng(draw(st.integers(0, 2**32 - 1)))
    labels = rng.integers(0, classes, batch)
    x = (rng.integers(-3, 4, (batch, dim)) / 2.0).astype("float32")
    if draw(st.booleans()):
        x[-1] = x[0]
    if not draw(st.booleans()):
        return labels, x, None, None
    count = draw(st.sampled_from([3, 6]))
    reference_labels = rng.integers(0, classes, count)
    refs = (rng.integers(-3, 4, (count, dim)) / 2.0).astype("float32")
    return labels, x, refs, reference_labels


def _refs(refs, reference_labels):
    if refs is None:
        return {}
    return {"references": refs, "reference_labels": reference_labels}


MINERS = {
    "triplet_all": lambda d: TripletMarginMiner(0.5, "all", distance=d),
    "triplet_hard": lambda d: TripletMarginMiner(0.5, "hard", distance=d),
    "triplet_semihard": lambda d: TripletMarginMiner(0.5, "semihard", distance=d),
    "triplet_easy": lambda d: TripletMarginMiner(0.5, "easy", distance=d),
    "pair_margin": lambda d: PairMarginMiner(0.5, 1.5, distance=d),
    "multi_similarity": lambda d: MultiSimilarityMiner(0.1, distance=d),
    "easy_semihard": lambda d: BatchEasyHardMiner(distance=d),
    "hard_all": lambda d: BatchEasyHardMiner("hard", "all", distance=d),
    "semihard_hard": lambda d: BatchEasyHardMiner("semihard", "hard", distance=d),
}
SIMILARITIES = ("cosine_similarity", "dot_product_similarity")
MEASURES = (*DISTANCES, *SIMILARITIES)


@pytest.mark.parametrize("name", sorted(MINERS))
@few_examples()
@given(data=batches(), distance=st.sampled_from(MEASURES))
def test_mined_pairs_are_valid_pairs(name, data, distance):
    labels, x, refs, reference_labels = data
    miner = MINERS[name](distance)
    positive, negative = (
        to_numpy(m) for m in miner(labels, x, **_refs(refs, reference_labels))
    )
    valid_positive, valid_negative = _numpy_label_masks(labels, reference_labels)
    assert positive.dtype == bool and negative.dtype == bool
    assert positive.shape == negative.shape == valid_positive.shape
    # Positives of the anchor's class only and never the anchor itself;
    # negatives of other classes only.
    assert not np.any(positive & ~valid_positive)
    assert not np.any(negative & ~valid_negative)
    triplets = to_numpy(miner.triplet_mask(labels, x, **_refs(refs, reference_labels)))
    assert not np.any(
        triplets & ~(valid_positive[:, :, None] & valid_negative[:, None])
    )
    if miner.kind == "triplets":
        # The masks are exactly the pairs of the mined triplets.
        np.testing.assert_array_equal(positive, triplets.any(axis=2))
        np.testing.assert_array_equal(negative, triplets.any(axis=1))


@given(data=batches(), distance=st.sampled_from(MEASURES))
def test_pair_margin_masks_are_symmetric_and_follow_the_rule(data, distance):
    labels, x, refs, reference_labels = data
    pos_margin, neg_margin = (0.5, 1.5) if distance not in SIMILARITIES else (0.3, 0.1)
    miner = PairMarginMiner(pos_margin, neg_margin, distance=distance)
    positive, negative = (
        to_numpy(m) for m in miner(labels, x, **_refs(refs, reference_labels))
    )
    matrix = _numpy_matrix(x, refs, distance)
    valid_positive, valid_negative = _numpy_label_masks(labels, reference_labels)
    # Away from the margins only: round-off decides there.
    clear = (np.abs(np.abs(matrix) - pos_margin) > 1e-5) & (
        np.abs(np.abs(matrix) - neg_margin) > 1e-5
    )
    if distance in SIMILARITIES:
        want_positive = valid_positive & (-matrix < pos_margin)
        want_negative = valid_negative & (-matrix > neg_margin)
    else:
        want_positive = valid_positive & (matrix > pos_margin)
        want_negative = valid_negative & (matrix < neg_margin)
    np.testing.assert_array_equal(positive[clear], want_positive[clear])
    np.testing.assert_array_equal(negative[clear], want_negative[clear])
    if refs is None:
        np.testing.assert_array_equal(positive, positive.T)
        np.testing.assert_array_equal(negative, negative.T)


def _numpy_triplet_mask(matrix, valid_positive, valid_negative, margin, kind):
    gap = matrix[:, None, :] - matrix[:, :, None]  # [a, p, n] = d(a,n) - d(a,p)
    chosen = {
        "all": gap <= margin,
        "hard": (gap <= margin) & (gap <= 0),
        "semihard": (gap > 0) & (gap <= margin),
        "easy": gap > margin,
    }[kind]
    return chosen & valid_positive[:, :, None] & valid_negative[:, None, :], gap


@pytest.mark.parametrize("kind", ["all", "hard", "semihard", "easy"])
@few_examples()
@given(
    data=batches(),
    distance=st.sampled_from(MEASURES),
    margin=st.sampled_from([-0.3, 0.0, 0.2, 0.7]),
)
def test_triplet_margin_miner_equals_numpy_rule(kind, data, distance, margin):
    labels, x, refs, reference_labels = data
    miner = TripletMarginMiner(margin, kind, distance=distance)
    got = to_numpy(miner.triplet_mask(labels, x, **_refs(refs, reference_labels)))
    matrix = _numpy_matrix(x, refs, distance)
    valid = _numpy_label_masks(labels, reference_labels)
    want, gap = _numpy_triplet_mask(matrix, *valid, margin, kind)
    clear = (np.abs(gap - margin) > 1e-4) & (np.abs(gap) > 1e-4)
    np.testing.assert_array_equal(got[clear], want[clear])


def _numpy_triplet_loss(matrix, triplets, margin, smooth, reducer):
    losses = matrix[:, :, None] - matrix[:, None, :] + margin
    losses = np.logaddexp(0.0, losses) if smooth else np.maximum(losses, 0.0)
    if reducer == "nonzero_mean":
        triplets = triplets & (losses > 0)
    count = triplets.sum()
    return losses[triplets].sum() / max(count, 1)


@pytest.mark.parametrize("name", sorted(MINERS))
@few_examples()
@given(
    data=batches(),
    distance=st.sampled_from(MEASURES),
    margin=st.sampled_from([0.05, 0.5, 1.0]),
    reducer=st.sampled_from(["nonzero_mean", "mean"]),
    smooth=st.booleans(),
)
def test_triplet_loss_over_mined_triplets_equals_numpy(
    name, data, distance, margin, reducer, smooth
):
    # The loss over the miner's triplets, summed in O(B M) memory (or over
    # the dense mask for smooth_loss), equals a NumPy sum over every triplet
    # of the miner's dense mask.
    labels, x, refs, reference_labels = data
    miner = MINERS[name](distance)
    refs_kwargs = _refs(refs, reference_labels)
    got = online_triplet_loss(
        labels,
        x,
        miner=miner,
        margin=margin,
        distance=distance,
        smooth_loss=smooth,
        reducer=reducer,
        **refs_kwargs,
    )
    triplets = to_numpy(miner.triplet_mask(labels, x, **refs_kwargs))
    # The package's own matrix (its values are checked against NumPy in
    # `test_distances.py`): grid rows tie exactly, and a tie between
    # `d(a, n)` and `d(a, p) + margin` must fall on the same side here.
    matrix = to_numpy(Measure(distance, "test").matrix(x, refs)).astype(np.float64)
    want = _numpy_triplet_loss(matrix, triplets, margin, smooth, reducer)
    np.testing.assert_allclose(float(got), want, rtol=1e-4, atol=1e-4)


@given(
    data=batches(),
    mining=st.sampled_from(["batch_hard", "semi_hard", "batch_all"]),
    margin=st.sampled_from([0.1, 1.0]),
)
def test_smooth_loss_puts_the_margin_inside_the_softplus(data, mining, margin):
    labels, x, refs, reference_labels = data
    refs_kwargs = _refs(refs, reference_labels)
    smooth = online_triplet_loss(
        labels, x, mining=mining, margin=margin, smooth_loss=True, **refs_kwargs
    )
    if mining == "batch_all":
        matrix = _numpy_matrix(x, refs, "euclidean")
        valid_positive, valid_negative = _numpy_label_masks(labels, reference_labels)
        triplets = valid_positive[:, :, None] & valid_negative[:, None, :]
        want = _numpy_triplet_loss(matrix, triplets, margin, True, "nonzero_mean")
        np.testing.assert_allclose(float(smooth), want, rtol=1e-4, atol=1e-5)
        return
    # batch_hard and semi_hard choose their triplets without the margin, so
    # smooth_loss is soft=True with every difference shifted by the margin:
    # softplus(x + m) >= softplus(x), equal only without any triplet.
    soft = online_triplet_loss(labels, x, mining=mining, soft=True, **refs_kwargs)
    assert float(smooth) >= float(soft) - 1e-6
    if float(soft) > 0:
        assert float(smooth) > float(soft)


LOSSES_WITH_MINERS = {
    "triplet-semihard": lambda: OnlineTripletLoss(
        miner=TripletMarginMiner(0.2, "semihard"), margin=0.1
    ),
    "triplet-cosine-miner": lambda: OnlineTripletLoss(
        miner=TripletMarginMiner(0.2, "all", distance="cosine_similarity"),
        margin=0.1,
    ),
    "triplet-ms-smooth": lambda: OnlineTripletLoss(
        miner=MultiSimilarityMiner(), smooth_loss=True, margin=0.1
    ),
    "triplet-easy-hard": lambda: OnlineTripletLoss(
        miner=BatchEasyHardMiner(), margin=0.2, distance="cosine"
    ),
    "contrastive-pair-margin": lambda: OnlineContrastiveLoss(
        miner=PairMarginMiner(0.2, 1.5)
    ),
    "contrastive-cosine": lambda: OnlineContrastiveLoss(
        pos_margin=1.0, neg_margin=0.0, distance="cosine_similarity"
    ),
    "contrastive-ms-manhattan": lambda: OnlineContrastiveLoss(
        miner=MultiSimilarityMiner(), distance="manhattan", reducer="mean"
    ),
}


@pytest.mark.parametrize("name", sorted(LOSSES_WITH_MINERS))
@few_examples()
@given(data=batches(), zero_row=st.booleans())
def test_gradients_with_a_miner_are_finite(name, data, zero_row):
    # Grid rows repeat (zero distances, ties) and may hold a zero vector.
    labels, x, _, _ = data
    if zero_row:
        x[0] = 0.0
    loss = LOSSES_WITH_MINERS[name]()
    value, (grad,) = value_and_grad(lambda e: loss(labels, e), x)
    assert np.isfinite(value).all()
    assert np.isfinite(grad).all()


@pytest.mark.parametrize("name", sorted(LOSSES_WITH_MINERS))
def test_loss_with_a_miner_saves_reloads_and_fits_compiled(name, tmp_path):
    loss = LOSSES_WITH_MINERS[name]()
    config = json.loads(json.dumps(keras.saving.serialize_keras_object(loss)))
    revived = keras.saving.deserialize_keras_object(config)
    assert type(revived.miner) is type(loss.miner)
    assert revived.get_config() == loss.get_config()
    rng = np.random.default_rng(0)
    x = rng.normal(size=(32, 4)).astype("float32")
    y = np.arange(32) % 4
    model = keras.Sequential([keras.Input((4,)), keras.layers.Dense(3)])
    jit = keras.backend.backend() != "torch"
    model.compile(optimizer="sgd", loss=revived, jit_compile=jit)
    history = model.fit(x, y, batch_size=16, epochs=1, verbose=0)
    assert np.isfinite(history.history["loss"]).all()
    path = tmp_path / "model.keras"
    model.save(path)
    restored = keras.saving.load_model(path, safe_mode=True)
    assert restored.loss.get_config() == revived.get_config()
    np.testing.assert_allclose(
        restored.evaluate(x, y, batch_size=32, verbose=0),
        model.evaluate(x, y, batch_size=32, verbose=0),
        rtol=1e-5,
    )


@pytest.mark.parametrize("name", sorted(MINERS))
def test_miner_config_round_trips(name):
    miner = MINERS[name]("cosine_similarity")
    serialized = json.loads(json.dumps(keras.saving.serialize_keras_object(miner)))
    assert serialized["registered_name"] == f"keras_siamese>{type(miner).__name__}"
    revived = keras.saving.deserialize_keras_object(serialized)
    assert type(revived) is type(miner)
    assert revived.get_config() == miner.get_config()


def test_contrastive_loss_flips_the_margins_for_a_similarity():
    # With a similarity s, a positive pair costs max(pos_margin - s, 0) and a
    # negative pair max(s - neg_margin, 0): here cosines 0.6 and 0.8.
    x = np.array([[1.0, 0.0], [0.6, 0.8], [0.8, 0.6]], "float32")
    labels = np.array([0, 0, 1])
    got = online_contrastive_loss(
        labels, x, pos_margin=1.0, neg_margin=0.5, distance="cosine_similarity"
    )
    # positives: (0,1),(1,0) at 0.6 -> 0.4 each; negatives: (0,2) at 0.8 ->
    # 0.3, (1,2) at 0.96 -> 0.46, each both ways.
    np.testing.assert_allclose(float(got), 0.4 + (0.3 + 0.46) / 2, rtol=1e-5)


@pytest.mark.parametrize(
    "make, error, words",
    [
        (
            lambda: TripletMarginMiner(type_of_triplets="semi_hard"),
            ValueError,
            "type_of_triplets",
        ),
        (lambda: TripletMarginMiner(margin=float("nan")), ValueError, "margin"),
        (lambda: PairMarginMiner(distance="nope"), ValueError, "cosine_similarity"),
        (lambda: MultiSimilarityMiner(epsilon=-0.1), ValueError, "epsilon"),
        (lambda: BatchEasyHardMiner("semihard", "semihard"), ValueError, "semihard"),
        (lambda: BatchEasyHardMiner("all", "semihard"), ValueError, "semihard"),
        (lambda: BatchEasyHardMiner("medium"), ValueError, "pos_strategy"),
        (
            lambda: BatchEasyHardMiner(allowed_pos_range=(1.0, 0.0)),
            ValueError,
            "allowed_pos_range",
        ),
        (
            lambda: BatchEasyHardMiner(allowed_neg_range=0.5),
            TypeError,
            "allowed_neg_range",
        ),
        (
            lambda: OnlineTripletLoss(mining="batch_all", miner=PairMarginMiner()),
            ValueError,
            "either",
        ),
        (
            lambda: OnlineTripletLoss(miner=PairMarginMiner(), soft=True),
            ValueError,
            "soft",
        ),
        (
            lambda: OnlineTripletLoss(soft=True, smooth_loss=True),
            ValueError,
            "smooth_loss",
        ),
        (
            lambda: OnlineTripletLoss(mining="semi_hard", reducer="mean"),
            ValueError,
            "reducer",
        ),
        (
            lambda: OnlineTripletLoss(miner=PairMarginMiner(), reducer="sum"),
            ValueError,
            "reducer",
        ),
        (lambda: OnlineTripletLoss(miner="semihard"), TypeError, "miner"),
        (
            lambda: OnlineContrastiveLoss(miner=TripletMarginMiner()),
            ValueError,
            "pair miner",
        ),
        (
            lambda: OnlineContrastiveLoss(pos_margin=float("inf")),
            ValueError,
            "pos_margin",
        ),
        (lambda: SupervisedContrastiveLoss(reducer="sum"), ValueError, "reducer"),
        (lambda: NTXentLoss(reducer="median"), ValueError, "reducer"),
        (lambda: MultiSimilarityLoss(reducer=None), ValueError, "reducer"),
        (lambda: CircleLoss(reducer="per_pair"), ValueError, "reducer"),
    ],
)
def test_bad_arguments_are_refused_by_name(make, error, words):
    with pytest.raises(error, match=words):
        make()


@pytest.mark.parametrize("name", sorted(MINERS))
def test_miners_of_an_empty_batch_return_empty_masks(name):
    miner = MINERS[name]("euclidean")
    x, labels = np.zeros((0, 3), "float32"), np.zeros((0,), "int64")
    positive, negative = miner(labels, x)
    assert tuple(positive.shape) == tuple(negative.shape) == (0, 0)
    assert tuple(miner.triplet_mask(labels, x).shape) == (0, 0, 0)


def test_empty_batch_and_batch_without_triplets_give_zero():
    x = np.zeros((0, 3), "float32")
    labels = np.zeros((0,), "int64")
    miner = TripletMarginMiner()
    assert float(online_triplet_loss(labels, x, miner=miner)) == 0.0
    assert float(online_contrastive_loss(labels, x)) == 0.0
    one_class = np.random.default_rng(0).normal(size=(4, 3)).astype("float32")
    value, (grad,) = value_and_grad(
        lambda e: online_triplet_loss(np.zeros(4, "int64"), e, miner=miner), one_class
    )
    assert float(value) == 0.0 and not grad.any()


class _NegativeSquares(Similarity):
    """A similarity defined outside the package: minus the squared distance."""

    name = "test_negative_squares"

    def pairwise_form(self, x, y):
        return -pairwise_distances(
            x, "squared_euclidean", references=None if y is None else y
        )


@given(data=batches())
def test_a_similarity_object_is_asked_whether_larger_is_nearer(data):
    # A new similarity needs only its class: the miner flips its margins
    # because the object says it is inverted, and mines exactly what the
    # squared distance mines with the margins negated.
    labels, x, refs, reference_labels = data
    refs_kwargs = _refs(refs, reference_labels)
    assert Measure(_NegativeSquares(), "test").inverted
    assert not Measure("squared_euclidean", "test").inverted
    assert Measure("cosine_similarity", "test").identifier == CosineSimilarity()
    by_similarity = PairMarginMiner(-0.5, -1.5, distance=_NegativeSquares())
    by_distance = PairMarginMiner(0.5, 1.5, distance="squared_euclidean")
    for got, want in zip(
        by_similarity(labels, x, **refs_kwargs), by_distance(labels, x, **refs_kwargs)
    ):
        np.testing.assert_array_equal(to_numpy(got), to_numpy(want))


def test_a_similarity_is_saved_by_name_once_registered():
    loss = OnlineContrastiveLoss(distance=_NegativeSquares())
    with pytest.raises(ValueError, match="register_similarity"):
        loss.get_config()
    register_similarity(_NegativeSquares())
    config = loss.get_config()
    assert config["distance"] == "test_negative_squares"
    assert OnlineContrastiveLoss.from_config(config).get_config() == config
    with pytest.raises(ValueError, match="cannot be replaced"):
        register_similarity(_Renamed())
    with pytest.raises(TypeError, match="Similarity"):
        register_similarity("cosine_similarity")


class _Renamed(Similarity):
    name = "cosine_similarity"


def test_built_in_similarities_are_the_measure_objects():
    assert isinstance(
        Measure("dot_product_similarity", "test").identifier, DotProductSimilarity
    )
    assert Measure(CosineSimilarity(), "test") == Measure("cosine_similarity", "t")
    assert Measure("cosine", "test") != Measure("cosine_similarity", "test")
    assert SIMILARITIES == BUILT_IN_SIMILARITIES


def _numpy_contrastive(matrix, positive, negative, pos_margin, neg_margin, reducer):
    """The contrastive loss from a smaller-is-nearer float64 matrix (margins
    already in its units), with each reducer written out."""
    pulled = np.maximum(matrix - pos_margin, 0.0)
    pushed = np.maximum(neg_margin - matrix, 0.0)

    def reduce(losses, mask):
        if reducer == "per_anchor":
            rows = [
                losses[i][mask[i]].mean() if mask[i].any() else 0.0
                for i in range(len(mask))
            ]
            return float(np.mean(rows))
        if reducer == "nonzero_mean":
            mask = mask & (losses > 0)
        return float(losses[mask].sum() / max(mask.sum(), 1))

    if positive.sum() <= 1 and negative.sum() <= 1:
        return 0.0
    return reduce(pulled, positive) + reduce(pushed, negative)


@few_examples()
@given(
    data=batches(),
    distance=st.sampled_from(MEASURES),
    reducer=st.sampled_from(["nonzero_mean", "mean", "per_anchor"]),
    mined=st.booleans(),
)
def test_contrastive_reducers_equal_numpy(data, distance, reducer, mined):
    labels, x, refs, reference_labels = data
    refs_kwargs = _refs(refs, reference_labels)
    pos_margin, neg_margin = (0.5, 1.5) if distance not in SIMILARITIES else (0.8, 0.2)
    miner = PairMarginMiner(0.2, 2.0) if mined else None
    got = online_contrastive_loss(
        labels,
        x,
        pos_margin=pos_margin,
        neg_margin=neg_margin,
        distance=distance,
        miner=miner,
        reducer=reducer,
        **refs_kwargs,
    )
    measure = Measure(distance, "test")
    matrix = to_numpy(measure.matrix(x, refs)).astype(np.float64)
    if miner is None:
        positive, negative = _numpy_label_masks(labels, reference_labels)
    else:
        positive, negative = (to_numpy(m) for m in miner(labels, x, **refs_kwargs))
    want = _numpy_contrastive(
        matrix,
        positive,
        negative,
        measure.level(pos_margin),
        measure.level(neg_margin),
        reducer,
    )
    np.testing.assert_allclose(float(got), want, rtol=1e-5, atol=1e-5)


def test_per_anchor_is_refused_by_the_triplet_loss_by_name():
    with pytest.raises(ValueError, match="per_anchor"):
        OnlineTripletLoss(miner=PairMarginMiner(), reducer="per_anchor")
    with pytest.raises(ValueError, match="per_anchor"):
        online_triplet_loss(
            np.zeros(2), np.zeros((2, 2), "float32"), reducer="per_anchor"
        )
    assert OnlineContrastiveLoss(reducer="per_anchor").get_config()["reducer"] == (
        "per_anchor"
    )
