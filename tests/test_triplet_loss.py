"""TripletLoss on explicit triplets against a NumPy loop, and its properties."""

import keras
import numpy as np
import pytest
from hypothesis import given
from hypothesis import strategies as st
from hypothesis.extra import numpy as hnp

from keras_siamese import TripletLoss, triplet_loss
from tests.helpers import to_numpy, value_and_grad

METRICS = ("euclidean", "squared_euclidean", "cosine", "manhattan")


def np_distance(a, b, metric):
    a, b = a.astype("float64"), b.astype("float64")
    if metric == "cosine":
        na = max(np.linalg.norm(a), 1e-6)
        nb = max(np.linalg.norm(b), 1e-6)
        return min(max(1.0 - (a / na) @ (b / nb), 0.0), 2.0)
    if metric == "manhattan":
        return np.abs(a - b).sum()
    squares = ((a - b) ** 2).sum()
    return squares if metric == "squared_euclidean" else np.sqrt(squares)


def reference(triplets, margin, metric, soft):
    losses = []
    for a, p, n in triplets:
        difference = np_distance(a, p, metric) - np_distance(a, n, metric)
        losses.append(
            np.log1p(np.exp(difference)) if soft else max(difference + margin, 0.0)
        )
    return np.array(losses)


@st.composite
def triplet_batches(draw):
    batch = draw(st.sampled_from((1, 4, 9)))
    x = draw(hnp.arrays("float32", (batch, 3, 3), elements=st.floats(-3, 3, width=32)))
    if draw(st.booleans()):
        x[:, 1] = x[:, 0]  # positives identical to anchors
    if draw(st.booleans()):
        x[0] = 0.0  # a triplet of zero vectors
    return x


@pytest.mark.parametrize("metric", METRICS)
@given(x=triplet_batches(), margin=st.sampled_from([0.0, 0.2, 1.0]), soft=st.booleans())
def test_matches_reference(metric, x, margin, soft):
    want = reference(x, margin, metric, soft)
    got = to_numpy(triplet_loss(np.zeros(len(x)), x, margin, metric, soft))
    np.testing.assert_allclose(got, want, rtol=1e-4, atol=1e-4)
    mean = to_numpy(TripletLoss(margin, metric, soft)(np.zeros(len(x)), x))
    np.testing.assert_allclose(mean, want.mean(), rtol=1e-4, atol=1e-4)


@given(x=triplet_batches(), seed=st.integers(0, 2**16))
def test_non_negative_and_permutation_invariant(x, seed):
    loss = TripletLoss()
    value = float(to_numpy(loss(np.zeros(len(x)), x)))
    perm = np.random.default_rng(seed).permutation(len(x))
    assert value >= 0
    np.testing.assert_allclose(
        value, float(to_numpy(loss(np.zeros(len(x)), x[perm]))), rtol=1e-5, atol=1e-6
    )


def test_zero_when_margin_satisfied_and_y_true_ignored():
    x = np.array([[[0.0, 0.0], [0.5, 0.0], [2.0, 0.0]]] * 3, "float32")
    for y_true in (np.zeros(3), np.ones((3, 7)), np.zeros((3, 1))):
        assert float(to_numpy(TripletLoss(margin=1.0)(y_true, x))) == 0.0


@pytest.mark.parametrize("metric", METRICS)
@pytest.mark.parametrize("soft", [False, True])
def test_gradients_finite_for_identical_and_zero_embeddings(metric, soft):
    x = np.zeros((3, 3, 2), "float32")
    x[1] = 1.0
    x[2, 2] = [1.0, -1.0]
    value, (grad,) = value_and_grad(
        lambda t: TripletLoss(distance=metric, soft=soft)(np.zeros(3), t), x
    )
    assert np.isfinite(value) and np.all(np.isfinite(grad))


def test_soft_is_smooth_where_the_hinge_has_a_kink():
    base = np.array([[[0.0], [1.0], [2.0]]], "float32")
    shifts = np.linspace(-0.1, 0.1, 5)
    values = []
    for shift in shifts:
        x = base.copy()
        x[0, 1, 0] += shift
        values.append(float(to_numpy(TripletLoss(soft=True)(np.zeros(1), x))))
    # softplus is convex and smooth: second differences small and positive.
    second = np.diff(values, 2)
    assert np.all(second > 0) and np.all(second < 1e-2)


@pytest.mark.parametrize("policy", ["mixed_float16", "mixed_bfloat16"])
def test_mixed_precision_close_to_float32(policy):
    x = np.random.default_rng(0).normal(size=(16, 3, 8)).astype("float32")
    want = float(to_numpy(TripletLoss()(np.zeros(16), x)))
    keras.config.set_dtype_policy(policy)
    half = keras.ops.cast(x, keras.config.dtype_policy().compute_dtype)
    value = to_numpy(TripletLoss()(np.zeros(16), half))
    per = to_numpy(triplet_loss(np.zeros(16), half))
    assert value.dtype == np.float32 and per.dtype == np.float32
    np.testing.assert_allclose(value, want, rtol=2e-2, atol=2e-2)


@pytest.mark.parametrize(
    ("kwargs", "error", "match"),
    [
        ({"distance": "l1"}, ValueError, "distance"),
        ({"margin": -0.5}, ValueError, "margin"),
        ({"soft": "yes"}, TypeError, "soft"),
    ],
)
def test_bad_arguments_raise(kwargs, error, match):
    with pytest.raises(error, match=match):
        TripletLoss(**kwargs)


@pytest.mark.parametrize("shape", [(4, 3), (4, 2, 3), (4, 3, 2, 1)])
def test_wrong_ranks_raise(shape):
    with pytest.raises(ValueError, match=r"\(batch, 3, dim\)"):
        TripletLoss()(np.zeros(4), np.zeros(shape, "float32"))


@pytest.mark.parametrize(
    "reduction", ["sum_over_batch_size", "sum", "mean", "mean_with_sample_weight"]
)
def test_an_empty_batch_has_loss_zero(reduction):
    loss = TripletLoss(reduction=reduction)(np.zeros(0), np.zeros((0, 3, 2)))
    assert tuple(loss.shape) == () and float(to_numpy(loss)) == 0.0


@pytest.mark.parametrize("reduction", [None, "none"])
def test_an_empty_batch_unreduced_is_an_empty_vector(reduction):
    # As Keras' own losses: no triplets, no per-triplet losses.
    loss = TripletLoss(reduction=reduction)(np.zeros(0), np.zeros((0, 3, 2)))
    assert tuple(loss.shape) == (0,)
    assert tuple(triplet_loss(np.zeros(0), np.zeros((0, 3, 2))).shape) == (0,)


@pytest.mark.parametrize("metric", METRICS)
def test_float64_triplets_give_float64_losses(metric):
    if keras.backend.backend() == "jax":
        import jax

        if not jax.config.jax_enable_x64:
            pytest.skip("JAX computes in float32 unless jax_enable_x64 is set")
    x = np.random.default_rng(3).normal(size=(4, 3, 5))
    per_triplet = triplet_loss(np.zeros(4), x, margin=0.5, distance=metric)
    assert keras.backend.standardize_dtype(per_triplet.dtype) == "float64"
    np.testing.assert_allclose(
        to_numpy(per_triplet), reference(x, 0.5, metric, False), rtol=1e-12
    )
    for reduction in (None, "sum"):
        loss = TripletLoss(
            margin=0.5, distance=metric, reduction=reduction, dtype="float64"
        )
        value = loss(np.zeros(4), x)
        assert keras.backend.standardize_dtype(value.dtype) == "float64"


@pytest.mark.parametrize("metric", METRICS)
def test_float64_distances_keep_float64_precision(metric):
    # Keras' `maximum` turns float64 into float32 on PyTorch; the distances
    # the triplet losses use must not.
    if keras.backend.backend() == "jax":
        import jax

        if not jax.config.jax_enable_x64:
            pytest.skip("JAX computes in float32 unless jax_enable_x64 is set")
    from keras_siamese import distances

    rng = np.random.default_rng(5)
    a, b = rng.normal(size=(4, 6)), rng.normal(size=(3, 6))
    measure = distances.get(metric)
    paired = to_numpy(measure.paired(a[:3], b))
    expected = [np_distance(x, y, metric) for x, y in zip(a[:3], b)]
    np.testing.assert_allclose(paired, expected, rtol=1e-13)
    pairwise = to_numpy(measure.pairwise(a, b))
    expected = [[np_distance(x, y, metric) for y in b] for x in a]
    np.testing.assert_allclose(pairwise, expected, rtol=1e-12, atol=1e-14)
