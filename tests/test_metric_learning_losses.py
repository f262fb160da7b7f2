"""Supervised contrastive, NT-Xent, multi-similarity and circle losses.

Checked against independent NumPy references (plain loops over anchors and
pairs, in float64, following the papers' formulas and pytorch-metric-
learning's reductions), by hypothesis properties (finite gradients,
invariance to the order of the rows, to the names of the labels and to the
scale of the embeddings), on degenerate batches, and for configuration and
errors. `test_pml_goldens.py` compares with pytorch-metric-learning itself.
"""

from __future__ import annotations

import keras
import numpy as np
import pytest
from hypothesis import given
from hypothesis import strategies as st
from hypothesis.extra import numpy as hnp
from keras import ops

from keras_siamese import (
    CircleLoss,
    MultiSimilarityLoss,
    NTXentLoss,
    SupervisedContrastiveLoss,
    circle_loss,
    multi_similarity_loss,
    ntxent_loss,
    supervised_contrastive_loss,
)
from keras_siamese.distances import Distance
from keras_siamese.miners import (
    MultiSimilarityMiner,
    PairMarginMiner,
    TripletMarginMiner,
)
from tests.helpers import few_examples, to_numpy, value_and_grad

# --- independent references ---------------------------------------------------


def np_cosine(x, refs):
    def unit(rows):
        norms = np.maximum(np.sqrt((rows.astype("float64") ** 2).sum(1)), 1e-6)
        return rows / norms[:, None]

    return unit(x) @ unit(refs).T


def np_similarity(x, refs, distance="cosine_similarity"):
    """Larger-is-more-similar values: a similarity, or a negated distance."""
    x, refs = x.astype("float64"), refs.astype("float64")
    if distance == "cosine_similarity":
        return np_cosine(x, refs)
    if distance == "dot_product_similarity":
        return x @ refs.T
    if distance == "cosine":
        return np_cosine(x, refs) - 1.0
    difference = x[:, None, :] - refs[None, :, :]
    if distance == "manhattan":
        return -np.abs(difference).sum(-1)
    squares = (difference**2).sum(-1)
    return -squares if distance == "squared_euclidean" else -np.sqrt(squares)


def np_pairs(labels, x, refs, reference_labels, distance="cosine_similarity"):
    """Similarities and the lists of positive / negative columns of each row."""
    self_compare = refs is None
    if self_compare:
        refs, reference_labels = x, labels
    s = np_similarity(x, refs, distance)
    positives, negatives = [], []
    for i in range(len(labels)):
        positives.append(
            [
                j
                for j in range(len(reference_labels))
                if reference_labels[j] == labels[i] and not (self_compare and i == j)
            ]
        )
        negatives.append(
            [
                j
                for j in range(len(reference_labels))
                if reference_labels[j] != labels[i]
            ]
        )
    return s, positives, negatives


def restrict(positives, negatives, masks):
    """Only the pairs where the `(positive, negative)` masks of a miner hold."""
    if masks is None:
        return positives, negatives
    positive, negative = masks
    return (
        [[j for j in row if positive[i, j]] for i, row in enumerate(positives)],
        [[j for j in row if negative[i, j]] for i, row in enumerate(negatives)],
    )


def no_pml_pairs(positives, negatives):
    """pytorch-metric-learning's guard: at most one pair of each kind."""
    return sum(map(len, positives)) <= 1 and sum(map(len, negatives)) <= 1


def logsumexp(values):
    values = np.asarray(values, "float64")
    top = values.max()
    return top + np.log(np.exp(values - top).sum())


def mean_nonzero(losses):
    kept = [value for value in losses if value > 0]
    return float(np.mean(kept)) if kept else 0.0


def ref_supcon(
    labels,
    x,
    refs=None,
    reference_labels=None,
    temperature=0.1,
    distance="cosine_similarity",
    masks=None,
):
    s, positives, negatives = np_pairs(labels, x, refs, reference_labels, distance)
    positives, negatives = restrict(positives, negatives, masks)
    if not any(positives) or not any(negatives) or no_pml_pairs(positives, negatives):
        return 0.0
    losses = []
    for i in range(len(labels)):
        if not positives[i]:
            losses.append(0.0)
            continue
        both = positives[i] + negatives[i]
        norm = logsumexp([s[i, a] / temperature for a in both])
        losses.append(-np.mean([s[i, p] / temperature - norm for p in positives[i]]))
    return mean_nonzero(losses)


def ref_ntxent(
    labels,
    x,
    refs=None,
    reference_labels=None,
    temperature=0.07,
    distance="cosine_similarity",
    masks=None,
):
    s, positives, negatives = np_pairs(labels, x, refs, reference_labels, distance)
    positives, negatives = restrict(positives, negatives, masks)
    if not any(positives) or not any(negatives) or no_pml_pairs(positives, negatives):
        return 0.0
    losses = []
    for i in range(len(labels)):
        for p in positives[i]:
            logits = [s[i, p] / temperature] + [
                s[i, n] / temperature for n in negatives[i]
            ]
            losses.append(logsumexp(logits) - s[i, p] / temperature)
    return float(np.mean(losses))


def ref_multi_similarity(
    labels,
    x,
    refs=None,
    reference_labels=None,
    alpha=2.0,
    beta=50.0,
    base=0.5,
    mining=False,
    epsilon=0.1,
    distance="cosine_similarity",
    masks=None,
):
    s, positives, negatives = np_pairs(labels, x, refs, reference_labels, distance)
    positives, negatives = restrict(positives, negatives, masks)
    if not distance.endswith("similarity"):
        # The paper's terms on a distance d: s - base reads base - d.
        base = -base
    if mining:
        if not any(positives) or not any(negatives):
            positives = negatives = [[] for _ in labels]
        else:
            mined_positives, mined_negatives = [], []
            for i in range(len(labels)):
                hardest_negative = max((s[i, n] for n in negatives[i]), default=-np.inf)
                hardest_positive = min((s[i, p] for p in positives[i]), default=np.inf)
                mined_positives.append(
                    [p for p in positives[i] if s[i, p] - epsilon < hardest_negative]
                )
                mined_negatives.append(
                    [n for n in negatives[i] if s[i, n] + epsilon > hardest_positive]
                )
            positives, negatives = mined_positives, mined_negatives
    if no_pml_pairs(positives, negatives):
        return 0.0
    losses = []
    for i in range(len(labels)):
        pulled = np.log1p(sum(np.exp(-alpha * (s[i, p] - base)) for p in positives[i]))
        pushed = np.log1p(sum(np.exp(beta * (s[i, n] - base)) for n in negatives[i]))
        losses.append(pulled / alpha + pushed / beta)
    return float(np.mean(losses))


def ref_circle(
    labels,
    x,
    refs=None,
    reference_labels=None,
    m=0.4,
    gamma=80.0,
    weights_at=None,
    masks=None,
):
    """Circle loss; `weights_at=(x0, refs0)` fixes alpha_p, alpha_n there.

    The weights are not differentiated (the paper's rule), so finite
    differences of this function need them held at the point of evaluation.
    """
    s, positives, negatives = np_pairs(labels, x, refs, reference_labels)
    w = s if weights_at is None else np_pairs(labels, *weights_at, reference_labels)[0]
    positives, negatives = restrict(positives, negatives, masks)
    if no_pml_pairs(positives, negatives):
        return 0.0
    losses = []
    for i in range(len(labels)):
        if not positives[i] or not negatives[i]:
            losses.append(0.0)
            continue
        pulled = [
            -gamma * max(1 + m - w[i, p], 0) * (s[i, p] - (1 - m)) for p in positives[i]
        ]
        pushed = [gamma * max(w[i, n] + m, 0) * (s[i, n] - m) for n in negatives[i]]
        losses.append(np.logaddexp(0.0, logsumexp(pulled) + logsumexp(pushed)))
    return mean_nonzero(losses)


def _mined(function):
    def mined(*args, **kwargs):
        return function(*args, mining=True, **kwargs)

    return mined


# name -> (package function, reference, loss class, keyword arguments)
LOSSES = {
    "supcon": (supervised_contrastive_loss, ref_supcon, SupervisedContrastiveLoss),
    "ntxent": (ntxent_loss, ref_ntxent, NTXentLoss),
    "multi_similarity": (
        multi_similarity_loss,
        ref_multi_similarity,
        MultiSimilarityLoss,
    ),
    "multi_similarity-mining": (
        _mined(multi_similarity_loss),
        _mined(ref_multi_similarity),
        lambda **kwargs: MultiSimilarityLoss(mining=True, **kwargs),
    ),
    "circle": (circle_loss, ref_circle, CircleLoss),
}
# Arguments away from the defaults, where the softmax of SupCon has no
# terms below float32's resolution (rows whose loss rounds to exactly 0 are
# left out of its mean, so float64 and float32 would count differently).
OPTIONS = {
    "supcon": {"temperature": 0.5},
    "ntxent": {"temperature": 0.5},
    "multi_similarity": {"alpha": 1.0, "beta": 10.0, "base": 0.2},
    "multi_similarity-mining": {"epsilon": 0.3},
    "circle": {"m": 0.25, "gamma": 16.0},
}
NAMES = sorted(LOSSES)


def loss_value(name, labels, x, **kwargs):
    return float(to_numpy(LOSSES[name][0](labels, x, **kwargs)))


# --- data -------------------------------------------------------------------

BATCH, REFERENCES, DIM = 8, 6, 3


@st.composite
def labelled_batches(draw, references=True, grid=True):
    """One, few or all-distinct classes; duplicated rows; optional references.

    Grid rows (multiples of 0.5, zero vectors included) give exact ties
    between similarities; continuous rows give general position.
    """
    classes = draw(st.sampled_from([1, 2, 3, BATCH]))
    labels = draw(hnp.arrays("int32", BATCH, elements=st.integers(0, classes - 1)))
    rng = np.random.default_rng(draw(st.integers(0, 2**32 - 1)))
    on_grid = grid and draw(st.booleans())

    def rows(count):
        if on_grid:
            return (rng.integers(-2, 3, (count, DIM)) / 2).astype("float32")
        return rng.normal(size=(count, DIM)).astype("float32")

    x = rows(BATCH)
    if draw(st.booleans()):
        x[1] = x[0]
    if not (references and draw(st.booleans())):
        return labels, x, None, None
    reference_labels = draw(
        hnp.arrays("int32", REFERENCES, elements=st.integers(0, classes))
    )
    return labels, x, rows(REFERENCES), reference_labels


def _references(refs, reference_labels):
    if refs is None:
        return {}
    return {"references": refs, "reference_labels": reference_labels}


# --- equality with the references -------------------------------------------------


@pytest.mark.parametrize("name", NAMES)
@given(data=labelled_batches(), defaults=st.booleans())
def test_matches_numpy_reference(name, data, defaults):
    labels, x, refs, reference_labels = data
    function, reference, _ = LOSSES[name]
    on_grid = np.all(x * 2 == np.round(x * 2))
    options = {} if defaults and not on_grid else OPTIONS[name]
    got = function(labels, x, **options, **_references(refs, reference_labels))
    want = reference(labels, x, refs, reference_labels, **options)
    np.testing.assert_allclose(float(to_numpy(got)), want, rtol=1e-4, atol=1e-5)


def numeric_gradient(fn, x, step=1e-6):
    grad = np.zeros_like(x, dtype="float64")
    for index in np.ndindex(x.shape):
        up, down = x.astype("float64"), x.astype("float64")
        up[index] += step
        down[index] -= step
        grad[index] = (fn(up) - fn(down)) / (2 * step)
    return grad


@pytest.mark.parametrize("name", NAMES)
@pytest.mark.parametrize("with_references", [False, True], ids=["batch", "references"])
def test_gradient_matches_finite_differences_of_the_reference(name, with_references):
    rng = np.random.default_rng(5)
    labels = np.array([0, 0, 0, 1, 1, 2, 3, 3], "int32")
    x = rng.normal(size=(8, 3)).astype("float32")
    function, reference, _ = LOSSES[name]
    options = dict(OPTIONS[name])
    if with_references:
        reference_labels = np.array([0, 1, 1, 2, 4, 3], "int32")
        refs = rng.normal(size=(6, 3)).astype("float32")
        if name == "circle":
            options["weights_at"] = (x, refs)
        package_options = {k: v for k, v in options.items() if k != "weights_at"}
        _, grads = value_and_grad(
            lambda e, r: function(
                labels,
                e,
                references=r,
                reference_labels=reference_labels,
                **package_options,
            ),
            x,
            refs,
        )
        want = numeric_gradient(
            lambda e: reference(labels, e, refs, reference_labels, **options), x
        )
        want_refs = numeric_gradient(
            lambda r: reference(labels, x, r, reference_labels, **options), refs
        )
        np.testing.assert_allclose(grads[1], want_refs, rtol=1e-3, atol=1e-4)
    else:
        package_options = dict(options)
        if name == "circle":
            options["weights_at"] = (x, None)
        _, grads = value_and_grad(lambda e: function(labels, e, **package_options), x)
        want = numeric_gradient(lambda e: reference(labels, e, **options), x)
    np.testing.assert_allclose(grads[0], want, rtol=1e-3, atol=1e-4)


# --- properties ---------------------------------------------------------------------


@pytest.mark.parametrize("name", NAMES)
@given(
    data=labelled_batches(references=False),
    seed=st.integers(0, 2**16),
    scale=st.sampled_from([0.01, 10.0]),
)
def test_invariant_to_row_order_label_names_and_scale(name, data, seed, scale):
    labels, x, _, _ = data
    function = LOSSES[name][0]
    value, (grad,) = value_and_grad(lambda e: function(labels, e), x)
    assert np.isfinite(value) and np.all(np.isfinite(grad))
    rng = np.random.default_rng(seed)
    order = rng.permutation(BATCH)
    permuted, (permuted_grad,) = value_and_grad(
        lambda e: function(labels[order], e), x[order]
    )
    np.testing.assert_allclose(permuted, value, rtol=1e-5, atol=1e-6)
    # Each row's gradient is exact up to float32 round-off of its own largest
    # component (a row near zero has components of 1e5 beside ones of 1e-4,
    # whose sign the summation order may then flip).
    want = grad[order]
    row_scale = np.maximum(np.abs(want).max(axis=1, keepdims=True), 1.0)
    assert np.all(
        np.abs(permuted_grad - want) <= 1e-4 * np.abs(want) + 1e-5 * row_scale
    )
    renamed = rng.permutation(BATCH)[labels] * 7 + 3
    assert loss_value(name, renamed, x) == pytest.approx(float(value), rel=1e-6)
    # Cosine similarity ignores the norm of the embeddings (zero rows stay 0).
    scaled = loss_value(name, labels, x * np.float32(scale))
    np.testing.assert_allclose(scaled, value, rtol=1e-4, atol=1e-5)


@pytest.mark.parametrize("name", NAMES)
@given(data=labelled_batches())
def test_finite_with_references(name, data):
    labels, x, refs, reference_labels = data
    if refs is None:
        refs, reference_labels = x[::-1].copy(), labels[::-1].copy()
    value, grads = value_and_grad(
        lambda e, r: LOSSES[name][0](
            labels, e, references=r, reference_labels=reference_labels
        ),
        x,
        refs,
    )
    assert np.isfinite(value) and value >= 0
    assert all(np.all(np.isfinite(grad)) for grad in grads)


# --- degenerate batches ----------------------------------------------------------------

DEGENERATE = {
    "one-class": np.zeros(6, "int32"),
    "all-distinct": np.arange(6, dtype="int32"),
    "batch-of-one": np.array([3], "int32"),
}
# Losses that are 0 without positive pairs or without negative pairs. The
# multi-similarity loss (without mining) still charges the pairs it has.
ZERO_WITHOUT_BOTH = ["supcon", "ntxent", "multi_similarity-mining", "circle"]


@pytest.mark.parametrize("name", ZERO_WITHOUT_BOTH)
@pytest.mark.parametrize("case", sorted(DEGENERATE))
def test_no_positive_or_no_negative_pair_gives_zero_and_zero_gradient(name, case):
    labels = DEGENERATE[case]
    x = np.random.default_rng(0).normal(size=(len(labels), 3)).astype("float32")
    value, (grad,) = value_and_grad(lambda e: LOSSES[name][0](labels, e), x)
    assert float(value) == 0.0
    np.testing.assert_array_equal(grad, np.zeros_like(x))


@pytest.mark.parametrize("case", sorted(DEGENERATE))
def test_multi_similarity_charges_the_pairs_a_degenerate_batch_has(case):
    labels = DEGENERATE[case]
    x = np.random.default_rng(0).normal(size=(len(labels), 3)).astype("float32")
    value, (grad,) = value_and_grad(lambda e: multi_similarity_loss(labels, e), x)
    want = ref_multi_similarity(labels, x)
    np.testing.assert_allclose(float(value), want, rtol=1e-5)
    assert (want > 0) == (case != "batch-of-one")
    assert np.all(np.isfinite(grad))


@pytest.mark.parametrize("name", NAMES)
def test_a_singleton_class_matches_the_reference(name):
    # The singleton is an anchor without positives: 0 in SupCon and circle
    # (left out of their means), only its negatives in multi-similarity.
    labels = np.array([0, 0, 1, 1, 2], "int32")
    x = np.random.default_rng(1).normal(size=(5, 3)).astype("float32")
    options = OPTIONS[name]
    got = loss_value(name, labels, x, **options)
    want = LOSSES[name][1](labels, x, **options)
    np.testing.assert_allclose(got, want, rtol=1e-5, atol=1e-6)


@pytest.mark.parametrize("name", NAMES)
def test_finite_with_duplicates_zero_vectors_and_opposite_rows(name):
    labels = np.array([0, 0, 1, 1, 2, 2], "int32")
    x = np.zeros((6, 3), "float32")
    x[2:4] = 1.0
    x[4] = -1.0
    for embeddings in (x, np.zeros_like(x), np.ones_like(x)):
        value, (grad,) = value_and_grad(
            lambda e: LOSSES[name][0](labels, e), embeddings
        )
        assert np.isfinite(value)
        assert np.all(np.isfinite(grad))


@pytest.mark.parametrize("name", NAMES)
def test_references_equal_to_the_batch_count_each_anchor_as_its_own_positive(name):
    labels = np.array([0, 0, 1, 1, 2], "int32")
    x = np.random.default_rng(2).normal(size=(5, 3)).astype("float32")
    function, reference, _ = LOSSES[name]
    got = float(to_numpy(function(labels, x, references=x, reference_labels=labels)))
    want = reference(labels, x, x, labels)
    np.testing.assert_allclose(got, want, rtol=1e-5, atol=1e-6)
    if name != "multi_similarity-mining":  # the miner may drop the self pairs
        assert got != pytest.approx(loss_value(name, labels, x))


@pytest.mark.parametrize("name", NAMES)
def test_empty_batch_or_references_give_zero(name):
    function = LOSSES[name][0]
    empty = np.zeros((0, 3), "float32")
    x = np.ones((2, 3), "float32")
    assert float(to_numpy(function(np.zeros(0, "int32"), empty))) == 0.0
    value = function(
        np.zeros(2, "int32"),
        x,
        references=empty,
        reference_labels=np.zeros(0, "int32"),
    )
    assert float(to_numpy(value)) == 0.0


@pytest.mark.parametrize("name", NAMES)
@pytest.mark.parametrize("dtype", ["float16", "bfloat16"])
def test_half_precision_inputs_compute_in_float32(name, dtype):
    rng = np.random.default_rng(3)
    labels = np.repeat(np.arange(4), 3)
    half = keras.ops.cast(rng.normal(size=(12, 6)), dtype)
    as_float32 = to_numpy(keras.ops.cast(half, "float32"))
    got = to_numpy(LOSSES[name][0](labels, half))
    assert got.dtype == np.float32
    np.testing.assert_allclose(got, loss_value(name, labels, as_float32), rtol=1e-6)


@pytest.mark.parametrize("name", NAMES)
def test_float64_inputs_compute_like_the_backends_matmul(name):
    rng = np.random.default_rng(6)
    labels = np.repeat(np.arange(4), 3)
    x = rng.normal(size=(12, 6))
    got = to_numpy(LOSSES[name][0](labels, x))
    # The backend's own matmul decides: JAX (without its 64-bit mode) and
    # Keras' PyTorch matmul give float32, TensorFlow float64.
    native = to_numpy(keras.ops.matmul(x, x.T)).dtype
    assert got.dtype == native
    tolerance = 1e-9 if native == np.float64 else 1e-5
    np.testing.assert_allclose(got, LOSSES[name][1](labels, x), rtol=tolerance)


@pytest.mark.slow
@pytest.mark.parametrize("name", NAMES)
def test_a_large_batch_runs_in_quadratic_memory(name):
    # A (B, B, B) float32 tensor at B = 4096 would need 256 GiB.
    rng = np.random.default_rng(0)
    labels = rng.integers(0, 512, size=4096).astype("int32")
    x = rng.normal(size=(4096, 16)).astype("float32")
    assert np.isfinite(loss_value(name, labels, x))


# --- classes, configuration and errors ----------------------------------------------


@pytest.mark.parametrize("name", NAMES)
def test_class_equals_function_and_refuses_sample_weight(name):
    function, _, loss_class = LOSSES[name]
    labels = np.array([0, 0, 1, 1, 2], "int32")
    x = np.random.default_rng(4).normal(size=(5, 3)).astype("float32")
    got = to_numpy(loss_class()(labels, x))
    np.testing.assert_allclose(got, to_numpy(function(labels, x)), rtol=1e-6)
    with pytest.raises(ValueError, match="sample_weight"):
        loss_class()(labels, x, np.ones(5))


CONFIGS = {
    SupervisedContrastiveLoss: {"temperature": 0.3, "global_batch": True},
    NTXentLoss: {"temperature": 0.2},
    MultiSimilarityLoss: {
        "alpha": 1.5,
        "beta": 20.0,
        "base": 0.3,
        "mining": True,
        "epsilon": 0.2,
    },
    CircleLoss: {"m": 0.25, "gamma": 128.0, "global_batch": True},
}


@pytest.mark.parametrize("loss_class", list(CONFIGS), ids=lambda c: c.__name__)
def test_config_round_trip(loss_class):
    loss = loss_class(**CONFIGS[loss_class])
    config = loss.get_config()
    for key, value in CONFIGS[loss_class].items():
        assert config[key] == value
    assert "dtype" in config and "global_batch" in config
    assert loss_class.from_config(config).get_config() == config
    restored = keras.saving.deserialize_keras_object(
        keras.saving.serialize_keras_object(loss)
    )
    assert isinstance(restored, loss_class)
    assert restored.get_config() == config


class _PairedOnly(Distance):
    name = "test_paired_only"

    def paired_form(self, a, b, keepdims):
        return ops.sum(ops.abs(a - b), axis=-1, keepdims=keepdims)


@pytest.mark.parametrize(
    ("loss_class", "function", "kwargs", "error", "match"),
    [
        (
            SupervisedContrastiveLoss,
            supervised_contrastive_loss,
            {"temperature": 0.0},
            ValueError,
            "temperature",
        ),
        (
            SupervisedContrastiveLoss,
            supervised_contrastive_loss,
            {"temperature": "1"},
            TypeError,
            "temperature",
        ),
        (NTXentLoss, ntxent_loss, {"temperature": -1.0}, ValueError, "temperature"),
        (
            MultiSimilarityLoss,
            multi_similarity_loss,
            {"alpha": 0.0},
            ValueError,
            "alpha",
        ),
        (
            MultiSimilarityLoss,
            multi_similarity_loss,
            {"beta": float("nan")},
            ValueError,
            "beta",
        ),
        (
            MultiSimilarityLoss,
            multi_similarity_loss,
            {"base": float("inf")},
            ValueError,
            "base",
        ),
        (
            MultiSimilarityLoss,
            multi_similarity_loss,
            {"mining": 1},
            TypeError,
            "mining",
        ),
        (
            MultiSimilarityLoss,
            multi_similarity_loss,
            {"epsilon": -0.1},
            ValueError,
            "epsilon",
        ),
        (CircleLoss, circle_loss, {"m": -0.1}, ValueError, "m"),
        (CircleLoss, circle_loss, {"gamma": 0}, ValueError, "gamma"),
        (CircleLoss, circle_loss, {"distance": "euclidean"}, ValueError, "cosine"),
        (
            CircleLoss,
            circle_loss,
            {"distance": "dot_product_similarity"},
            ValueError,
            "cosine_similarity",
        ),
        (
            SupervisedContrastiveLoss,
            supervised_contrastive_loss,
            {"distance": "nope"},
            ValueError,
            "dot_product_similarity",
        ),
        (NTXentLoss, ntxent_loss, {"distance": 3}, TypeError, "distance"),
        (
            MultiSimilarityLoss,
            multi_similarity_loss,
            {"distance": _PairedOnly()},
            ValueError,
            "pairwise_form",
        ),
    ],
)
def test_bad_arguments_raise(loss_class, function, kwargs, error, match):
    # A Distance without an all-pairs form, or a measure the loss cannot
    # take, is refused at construction and at call, never run.
    with pytest.raises(error, match=match):
        loss_class(**kwargs)
    with pytest.raises(error, match=match):
        function(np.zeros(2), np.zeros((2, 2), "float32"), **kwargs)


@pytest.mark.parametrize("name", NAMES)
def test_wrong_shapes_and_half_given_references_raise(name):
    function = LOSSES[name][0]
    labels, x = np.zeros(2), np.zeros((2, 3), "float32")
    with pytest.raises(ValueError, match="embeddings"):
        function(labels, np.zeros((2, 3, 1), "float32"))
    with pytest.raises(ValueError, match="labels"):
        function(np.zeros((2, 2)), x)
    with pytest.raises(ValueError, match="batch size"):
        function(np.zeros(3), x)
    with pytest.raises(ValueError, match="reference_labels"):
        function(labels, x, references=x)
    with pytest.raises(ValueError, match="references"):
        function(labels, x, reference_labels=labels)
    with pytest.raises(ValueError, match="embedding size"):
        function(labels, x, references=np.zeros((2, 4)), reference_labels=labels)
    with pytest.raises(ValueError, match="batch size"):
        function(labels, x, references=x, reference_labels=np.zeros(3))
    with pytest.raises(TypeError, match="global_batch"):
        LOSSES[name][2](global_batch="yes")


@pytest.mark.parametrize("name", NAMES)
def test_compiles_with_an_unknown_or_static_batch_size(backend, name):
    labels = np.array([0, 0, 1, 1, 2], "int32")
    x = np.random.default_rng(0).normal(size=(5, 3)).astype("float32")
    function = LOSSES[name][0]
    want = loss_value(name, labels, x)
    if backend == "tensorflow":
        import tensorflow as tf

        compiled = tf.function(
            lambda y, e: function(y, e),
            input_signature=[
                tf.TensorSpec([None], tf.int32),
                tf.TensorSpec([None, 3], tf.float32),
            ],
        )
    elif backend == "jax":
        import jax

        compiled = jax.jit(lambda y, e: function(y, e))
    else:
        pytest.skip("PyTorch runs eagerly")
    assert float(to_numpy(compiled(labels, x))) == pytest.approx(want, rel=1e-6)


@pytest.mark.parametrize("name", NAMES)
def test_fits_a_model(name):
    rng = np.random.default_rng(0)
    labels = np.repeat(np.arange(4), 4)
    x = (rng.normal(size=(4, 6))[labels] + 0.3 * rng.normal(size=(16, 6))).astype(
        "float32"
    )
    model = keras.Sequential([keras.Input((6,)), keras.layers.Dense(4)])
    model.compile(optimizer=keras.optimizers.SGD(0.01), loss=LOSSES[name][2]())
    history = model.fit(x, labels, batch_size=16, epochs=2, shuffle=False, verbose=0)
    assert np.all(np.isfinite(history.history["loss"]))


# Configs exactly as the package wrote them before these losses were built
# on `FunctionLoss`: each must load, compute as the constructor does, and be
# written back unchanged.
SAVED_CONFIGS = [
    {
        "name": "online_contrastive_loss",
        "reduction": "sum_over_batch_size",
        "global_batch": True,
        "dtype": "float32",
        "pos_margin": 0.1,
        "neg_margin": 0.7,
        "distance": "cosine_similarity",
        "miner": {
            "module": "keras_siamese.miners.pair_margin",
            "class_name": "PairMarginMiner",
            "config": {"distance": "euclidean", "pos_margin": 0.2, "neg_margin": 0.8},
            "registered_name": "keras_siamese>PairMarginMiner",
        },
        "reducer": "mean",
    },
    {
        "name": "t",
        "reduction": "sum_over_batch_size",
        "global_batch": False,
        "dtype": "float32",
        "mining": None,
        "margin": 0.3,
        "distance": "squared_euclidean",
        "soft": False,
        "miner": {
            "module": "keras_siamese.miners.triplet_margin",
            "class_name": "TripletMarginMiner",
            "config": {
                "distance": "euclidean",
                "margin": 0.1,
                "type_of_triplets": "semihard",
            },
            "registered_name": "keras_siamese>TripletMarginMiner",
        },
        "smooth_loss": True,
        "reducer": "mean",
    },
    {
        "name": "online_triplet_loss",
        "reduction": "sum_over_batch_size",
        "global_batch": False,
        "dtype": "float32",
        "mining": "semi_hard",
        "margin": 1.0,
        "distance": "euclidean",
        "soft": True,
        "miner": None,
        "smooth_loss": False,
        "reducer": None,
    },
    {
        "name": "multi_similarity_loss",
        "reduction": "sum_over_batch_size",
        "global_batch": False,
        "dtype": "float32",
        "alpha": 1.5,
        "beta": 40.0,
        "base": 0.4,
        "mining": True,
        "epsilon": 0.2,
    },
    {
        "name": "circle_loss",
        "reduction": "sum_over_batch_size",
        "global_batch": False,
        "dtype": "float32",
        "m": 0.25,
        "gamma": 64.0,
    },
    {
        "name": "supervised_contrastive_loss",
        "reduction": "sum_over_batch_size",
        "global_batch": False,
        "dtype": "float32",
        "temperature": 0.3,
    },
    {
        "name": "ntxent_loss",
        "reduction": "sum_over_batch_size",
        "global_batch": False,
        "dtype": "float32",
        "temperature": 0.2,
    },
]
# Arguments added since, written back with their defaults.
NEW_DEFAULTS = {
    "multi_similarity_loss": {
        "distance": "cosine_similarity",
        "miner": None,
        "reducer": "mean",
    },
    "circle_loss": {
        "distance": "cosine_similarity",
        "miner": None,
        "reducer": "nonzero_mean",
    },
    "supervised_contrastive_loss": {
        "distance": "cosine_similarity",
        "miner": None,
        "reducer": "nonzero_mean",
    },
    "ntxent_loss": {"distance": "cosine_similarity", "miner": None, "reducer": "mean"},
}


def _saved_config_class(config):
    from keras_siamese import OnlineContrastiveLoss, OnlineTripletLoss

    if "pos_margin" in config:
        return OnlineContrastiveLoss
    if "soft" in config:
        return OnlineTripletLoss
    if "temperature" in config:
        return {
            "supervised_contrastive_loss": SupervisedContrastiveLoss,
            "ntxent_loss": NTXentLoss,
        }[config["name"]]
    return MultiSimilarityLoss if "alpha" in config else CircleLoss


@pytest.mark.parametrize("config", SAVED_CONFIGS, ids=lambda c: c["name"])
def test_configs_saved_before_load_and_are_written_back_unchanged(config):
    loss_class = _saved_config_class(config)
    serialized = {
        "module": loss_class.__module__,
        "class_name": loss_class.__name__,
        "config": config,
        "registered_name": f"keras_siamese>{loss_class.__name__}",
    }
    loaded = keras.saving.deserialize_keras_object(serialized)
    assert type(loaded) is loss_class
    written = {**config, **NEW_DEFAULTS.get(config["name"], {})}
    assert loaded.get_config() == written
    assert list(loaded.get_config()) == list(written)
    # The arguments read back as attributes, with their saved values (the
    # distance by its name, the miner as an object).
    for key in ("margin", "alpha", "m", "temperature", "reducer", "distance"):
        if key in config:
            assert getattr(loaded, key) == config[key]
    if config.get("miner") is not None:
        assert type(loaded.miner).__name__ == config["miner"]["class_name"]
    rng = np.random.default_rng(0)
    labels = np.array([0, 0, 1, 1, 2, 2, 0, 1])
    x = rng.normal(size=(8, 3)).astype("float32")
    arguments = {
        k: v for k, v in config.items() if k not in ("name", "reduction", "dtype")
    }
    if arguments.get("miner") is not None:
        arguments["miner"] = keras.saving.deserialize_keras_object(arguments["miner"])
    rebuilt = loss_class(**arguments)
    np.testing.assert_allclose(
        float(loaded(labels, x)), float(rebuilt(labels, x)), rtol=1e-6
    )


# --- distances other than the cosine similarity ---------------------------------

DISTANCE_LOSSES = ["supcon", "ntxent", "multi_similarity", "multi_similarity-mining"]
MEASURES = (
    "euclidean",
    "squared_euclidean",
    "manhattan",
    "cosine",
    "dot_product_similarity",
)


@pytest.mark.parametrize("name", DISTANCE_LOSSES)
@few_examples()
@given(
    data=labelled_batches(grid=False),
    distance=st.sampled_from(MEASURES),
    as_class=st.booleans(),
)
def test_a_distance_matches_numpy_reference(name, data, distance, as_class):
    # pytorch-metric-learning's rule: a similarity is used as it is, a
    # distance d as the similarity -d (and base as -base for the
    # multi-similarity loss). Rows are scaled down and T = 1 so that no
    # softmax term is below float32's resolution.
    labels, x, refs, reference_labels = data
    x = x * 0.5
    refs = None if refs is None else refs * 0.5
    function, reference, loss_class = LOSSES[name]
    options = dict(OPTIONS[name], distance=distance)
    if name in ("supcon", "ntxent"):
        options["temperature"] = 1.0
    want = reference(labels, x, refs, reference_labels, **options)
    if as_class and refs is None:
        got = loss_class(**options)(labels, x)
    else:
        got = function(labels, x, **options, **_references(refs, reference_labels))
    np.testing.assert_allclose(float(to_numpy(got)), want, rtol=1e-4, atol=1e-5)


@pytest.mark.parametrize("name", DISTANCE_LOSSES)
@pytest.mark.parametrize("distance", ["euclidean", "dot_product_similarity"])
def test_a_distance_gradient_matches_finite_differences(name, distance):
    rng = np.random.default_rng(3)
    labels = np.array([0, 0, 1, 1, 2, 2, 0, 3])
    x = (rng.normal(size=(8, 3)) * 0.5).astype("float32")
    function, reference, _ = LOSSES[name]
    options = dict(OPTIONS[name], distance=distance)
    if name in ("supcon", "ntxent"):
        options["temperature"] = 1.0
    _, (grad,) = value_and_grad(lambda e: function(labels, e, **options), x)
    want = numeric_gradient(lambda e: reference(labels, e, **options), x)
    np.testing.assert_allclose(grad, want, rtol=2e-3, atol=2e-4)


def test_the_default_distance_is_the_cosine_similarity():
    rng = np.random.default_rng(0)
    labels = np.array([0, 0, 1, 1, 2, 0])
    x = rng.normal(size=(6, 4)).astype("float32")
    for name in NAMES:
        function = LOSSES[name][0]
        default = float(to_numpy(function(labels, x)))
        named = float(to_numpy(function(labels, x, distance="cosine_similarity")))
        assert default == named
        assert LOSSES[name][2]().get_config()["distance"] == "cosine_similarity"


# --- miners feeding the pair losses -----------------------------------------------

PAIR_LOSS_MINERS = {
    # a pair miner's masks are the pairs; a triplet miner's, the pairs of
    # its triplets (pytorch-metric-learning's conversion to pairs)
    "pair_margin": lambda: PairMarginMiner(0.7, 0.3, distance="cosine_similarity"),
    "triplet_semihard": lambda: TripletMarginMiner(0.5, "semihard"),
}


@pytest.mark.parametrize("name", ["supcon", "ntxent", "multi_similarity", "circle"])
@pytest.mark.parametrize("miner_name", sorted(PAIR_LOSS_MINERS))
@few_examples()
@given(data=labelled_batches(grid=False))
def test_a_miner_restricts_the_pairs_as_the_numpy_reference(name, miner_name, data):
    labels, x, refs, reference_labels = data
    if name == "ntxent" and miner_name.startswith("triplet"):
        with pytest.raises(ValueError, match="pair miner"):
            LOSSES[name][0](labels, x, miner=PAIR_LOSS_MINERS[miner_name]())
        return
    function, reference, _ = LOSSES[name]
    miner = PAIR_LOSS_MINERS[miner_name]()
    refs_kwargs = _references(refs, reference_labels)
    masks = tuple(to_numpy(mask) for mask in miner(labels, x, **refs_kwargs))
    got = function(labels, x, miner=miner, **OPTIONS[name], **refs_kwargs)
    want = reference(labels, x, refs, reference_labels, masks=masks, **OPTIONS[name])
    np.testing.assert_allclose(float(to_numpy(got)), want, rtol=1e-4, atol=1e-5)


@given(data=labelled_batches(), epsilon=st.sampled_from([0.0, 0.1, 0.3]))
def test_the_multi_similarity_miner_equals_mining_inside_the_loss(data, epsilon):
    labels, x, refs, reference_labels = data
    refs_kwargs = _references(refs, reference_labels)
    inside = multi_similarity_loss(
        labels, x, mining=True, epsilon=epsilon, **refs_kwargs
    )
    fed = multi_similarity_loss(
        labels, x, miner=MultiSimilarityMiner(epsilon), **refs_kwargs
    )
    assert float(to_numpy(inside)) == float(to_numpy(fed))


@pytest.mark.parametrize(
    "loss_class",
    [SupervisedContrastiveLoss, NTXentLoss, MultiSimilarityLoss, CircleLoss],
)
def test_a_miner_is_saved_and_reloaded_and_checked(loss_class):
    if loss_class is NTXentLoss:
        miner = PairMarginMiner(0.3, 0.9)
        with pytest.raises(ValueError, match="pair miner"):
            loss_class(miner=TripletMarginMiner(0.3, "hard"))
    else:
        miner = TripletMarginMiner(0.3, "hard")
    loss = loss_class(miner=miner)
    config = loss.get_config()
    assert config["miner"]["class_name"] == type(miner).__name__
    restored = keras.saving.deserialize_keras_object(
        keras.saving.serialize_keras_object(loss)
    )
    assert restored.get_config() == config
    assert restored.miner.get_config() == miner.get_config()
    with pytest.raises(TypeError, match="miner"):
        loss_class(miner="semihard")
    with pytest.raises(TypeError, match="miner"):
        function = next(f for f, _, c in LOSSES.values() if c is loss_class)
        function(np.zeros(2), np.zeros((2, 2), "float32"), miner=3)
    if loss_class is MultiSimilarityLoss:
        with pytest.raises(ValueError, match="either"):
            MultiSimilarityLoss(mining=True, miner=MultiSimilarityMiner())
