"""OnlineTripletLoss against brute-force NumPy loops over every triplet."""

import itertools
from unittest import mock

import keras
import numpy as np
import pytest
from hypothesis import given
from hypothesis import strategies as st
from hypothesis.extra import numpy as hnp

from keras_siamese import OnlineTripletLoss, online_triplet_loss
from keras_siamese.losses import mining as miners
from tests.helpers import to_numpy, value_and_grad

MODES = ("batch_hard", "batch_all", "semi_hard")


# --- independent reference -------------------------------------------------


def np_distances(x, metric, refs=None):
    x = x.astype("float64")
    y = x if refs is None else refs.astype("float64")
    d = np.zeros((len(x), len(y)))
    for i, j in itertools.product(range(len(x)), range(len(y))):
        if refs is None and i == j:
            continue
        if metric == "cosine":
            ni = max(np.sqrt((x[i] ** 2).sum()), 1e-6)
            nj = max(np.sqrt((y[j] ** 2).sum()), 1e-6)
            d[i, j] = min(max(1.0 - (x[i] / ni) @ (y[j] / nj), 0.0), 2.0)
        elif metric == "manhattan":
            d[i, j] = np.abs(x[i] - y[j]).sum()
        else:
            s = ((x[i] - y[j]) ** 2).sum()
            d[i, j] = s if metric == "squared_euclidean" else np.sqrt(s)
    return d


def term(difference, margin, soft):
    if soft:
        return np.log1p(np.exp(difference))
    return max(difference + margin, 0.0)


def reference(
    labels,
    x,
    mining,
    margin=1.0,
    metric="euclidean",
    soft=False,
    refs=None,
    reference_labels=None,
):
    """Brute force over every triplet; with `refs`, positives and negatives
    come from the references (an anchor's copy there is a positive)."""
    d = np_distances(x, metric, refs)
    other = labels if refs is None else reference_labels
    losses = []
    for a in range(len(labels)):
        pos = [
            p
            for p in range(len(other))
            if other[p] == labels[a] and (refs is not None or p != a)
        ]
        neg = [q for q in range(len(other)) if other[q] != labels[a]]
        if not pos or not neg:
            continue
        if mining == "batch_hard":
            hardest = max(d[a, p] for p in pos) - min(d[a, q] for q in neg)
            losses.append(term(hardest, margin, soft))
        elif mining == "semi_hard":
            for p in pos:
                farther = [d[a, q] for q in neg if d[a, q] > d[a, p]]
                chosen = min(farther) if farther else max(d[a, q] for q in neg)
                losses.append(term(d[a, p] - chosen, margin, soft))
        else:
            for p in pos:
                for q in neg:
                    value = d[a, p] - d[a, q] + margin
                    if value > 0:
                        losses.append(value)
    return float(np.mean(losses)) if losses else 0.0


# --- data ---------------------------------------------------------------------


# A few fixed shapes: on JAX every new shape recompiles each op, so shapes
# come from small sets while labels and values vary freely.
BATCHES = (1, 5, 10)
DIMS = (1, 3)


@st.composite
def labelled_batches(draw, duplicates=True):
    """Grid embeddings (multiples of 0.5), with duplicates and zero vectors.

    On the grid every squared distance is exact in float32, so exact ties
    (duplicates, equidistant points) are ties in both implementations and the
    tie rules are really tested. Labels have one, few or all-distinct classes.
    """
    batch = draw(st.sampled_from(BATCHES))
    dim = draw(st.sampled_from(DIMS))
    classes = draw(st.sampled_from([1, 2, 3, batch]))
    labels = draw(hnp.arrays("int32", batch, elements=st.integers(0, classes - 1)))
    ints = hnp.arrays("int32", (batch, dim), elements=st.integers(-3, 3))
    x = draw(ints).astype("float32") / 2
    if batch > 2 and duplicates and draw(st.booleans()):
        x[1] = x[0]
        x[-1] = x[0]
    return labels, x


@st.composite
def generic_batches(draw):
    """Continuous embeddings in general position (no exact ties anywhere).

    Distances that tie in exact arithmetic only tie up to round-off in
    float32, so tie-sensitive choices are tested on the grid instead.
    """
    batch = draw(st.sampled_from(BATCHES))
    classes = draw(st.sampled_from([1, 2, 3, batch]))
    labels = draw(hnp.arrays("int32", batch, elements=st.integers(0, classes - 1)))
    rng = np.random.default_rng(draw(st.integers(0, 2**32 - 1)))
    scale = draw(st.sampled_from([0.1, 1.0, 10.0]))
    return labels, (rng.normal(size=(batch, 3)) * scale).astype("float32")


def loss_value(labels, x, **kwargs):
    return float(to_numpy(online_triplet_loss(labels, x, **kwargs)))


# --- equality with the reference ----------------------------------------------


@pytest.mark.parametrize("mining", MODES)
@pytest.mark.parametrize("metric", ["euclidean", "squared_euclidean", "manhattan"])
@given(data=labelled_batches(), margin=st.sampled_from([0.0, 0.5, 1.0, 1.5]))
def test_matches_brute_force_on_exact_grid(mining, metric, data, margin):
    labels, x = data
    got = loss_value(labels, x, mining=mining, margin=margin, distance=metric)
    want = reference(labels, x, mining, margin, metric)
    np.testing.assert_allclose(got, want, rtol=1e-5, atol=1e-5)


@pytest.mark.parametrize("mining", MODES)
@given(data=generic_batches(), margin=st.sampled_from([0.2, 1.0]))
def test_matches_brute_force_cosine_and_generic_floats(mining, data, margin):
    labels, x = data
    for metric in ("cosine", "euclidean"):
        got = loss_value(labels, x, mining=mining, margin=margin, distance=metric)
        want = reference(labels, x, mining, margin, metric)
        np.testing.assert_allclose(got, want, rtol=1e-4, atol=1e-4)


@pytest.mark.parametrize("mining", ["batch_hard", "semi_hard"])
@given(data=generic_batches())
def test_soft_matches_brute_force(mining, data):
    labels, x = data
    got = loss_value(labels, x, mining=mining, soft=True)
    want = reference(labels, x, mining, soft=True)
    np.testing.assert_allclose(got, want, rtol=1e-4, atol=1e-5)


@pytest.mark.parametrize("mining_mode", MODES)
@given(
    data=labelled_batches(),
    margin=st.sampled_from([0.0, 0.5, 1.0]),
    metric=st.sampled_from(["euclidean", "cosine"]),
)
def test_references_match_brute_force(mining_mode, data, margin, metric):
    labels, x = data
    rng = np.random.default_rng(int(labels.sum()) + len(labels))
    refs = (rng.integers(-3, 4, (6, x.shape[1])) / 2).astype("float32")
    refs[0] = x[0]  # the anchor's own copy among the references
    reference_labels = rng.integers(0, 3, 6).astype("int32")
    reference_labels[0] = labels[0]
    got = loss_value(
        labels,
        x,
        mining=mining_mode,
        margin=margin,
        distance=metric,
        references=refs,
        reference_labels=reference_labels,
    )
    want = reference(
        labels,
        x,
        mining_mode,
        margin,
        metric,
        refs=refs,
        reference_labels=reference_labels,
    )
    np.testing.assert_allclose(got, want, rtol=1e-5, atol=1e-5)


@given(data=labelled_batches(), margin=st.sampled_from([0.0, 1.0]))
def test_semi_hard_sorting_path_matches_brute_force(data, margin):
    # With the scan limited to one positive per anchor, anchors with more
    # take the sorting path: both paths are checked on the same batches.
    labels, x = data
    with mock.patch.object(miners, "SCAN_LIMIT", 1):
        got = loss_value(labels, x, mining="semi_hard", margin=margin)
    want = reference(labels, x, "semi_hard", margin)
    np.testing.assert_allclose(got, want, rtol=1e-5, atol=1e-5)


@pytest.mark.parametrize("classes", [2, 3], ids=["sorted", "scanned"])
def test_semi_hard_with_many_positives_per_anchor(classes):
    # 140 rows: 2 classes give 69 positives per anchor (beyond SCAN_LIMIT,
    # the sorting path), 3 classes at most 46 (the scanning path).
    rng = np.random.default_rng(7)
    labels = np.arange(140) % classes
    x = (rng.integers(-4, 5, (140, 2)) / 2).astype("float32")
    most = np.bincount(labels).max() - 1
    assert (most > miners.SCAN_LIMIT) == (classes == 2)
    value, (grad,) = value_and_grad(
        lambda e: online_triplet_loss(labels, e, mining="semi_hard"), x
    )
    np.testing.assert_allclose(value, reference(labels, x, "semi_hard"), rtol=1e-5)
    assert np.all(np.isfinite(grad))


def test_semi_hard_matches_tensorflow_addons_worked_example():
    # Computed by hand with TensorFlow Addons' rule: for (a=1, p=0), d = 0.5
    # and the negative at exactly 0.5 is not "farther", so 0.75 is chosen.
    x = np.array([[0.0], [0.5], [1.0], [1.25]], dtype="float32")
    labels = np.array([0, 0, 1, 1])
    assert loss_value(labels, x, mining="semi_hard") == pytest.approx(0.625)


def test_semi_hard_falls_back_to_the_farthest_negative():
    x = np.array([[0.0], [3.0], [1.0], [2.0]], dtype="float32")
    labels = np.array([0, 0, 1, 1])
    # a=0,p=1: d=3, no negative beyond -> farthest (2): 3 - 2 + 1 = 2.
    # a=1,p=0: d=3, negatives at 2, 1 -> farthest 2: 2. a=2,p=3: d=1, negatives
    # at 1, 2 -> 2: 0. a=3,p=2: d=1, negatives at 2, 1 -> 2: 0.
    assert loss_value(labels, x, mining="semi_hard") == pytest.approx(1.0)


# --- properties -----------------------------------------------------------------


@pytest.mark.parametrize("mining", MODES)
@given(data=labelled_batches(), seed=st.integers(0, 2**16))
def test_non_negative_and_permutation_invariant(mining, data, seed):
    labels, x = data
    value = loss_value(labels, x, mining=mining)
    perm = np.random.default_rng(seed).permutation(len(labels))
    permuted = loss_value(labels[perm], x[perm], mining=mining)
    assert value >= 0
    np.testing.assert_allclose(value, permuted, rtol=1e-5, atol=1e-6)


@pytest.mark.parametrize("mining", MODES)
@given(
    labels=st.permutations(np.repeat(np.arange(4), 3)),
    spread=st.floats(0.0, 0.4),
    seed=st.integers(0, 2**16),
)
def test_zero_when_every_margin_is_satisfied(mining, labels, spread, seed):
    labels = np.asarray(labels, "int32")
    rng = np.random.default_rng(seed)
    # Classes 10 apart, each within a ball of radius `spread` < margin / 2.
    jitter = rng.uniform(-1, 1, size=(len(labels), 2))
    jitter *= spread / np.maximum(np.linalg.norm(jitter, axis=1, keepdims=True), 1)
    x = np.stack([labels * 10.0, np.zeros(len(labels))], 1) + jitter
    assert loss_value(labels, x.astype("float32"), mining=mining, margin=1.0) == 0.0


@pytest.mark.parametrize("mining", MODES)
@pytest.mark.parametrize(
    "labels",
    [np.zeros(5, "int32"), np.arange(5, dtype="int32"), np.array([7], "int32")],
    ids=["one-class", "all-distinct", "batch-of-one"],
)
def test_no_valid_triplet_gives_zero_loss_and_zero_gradient(mining, labels):
    x = np.random.default_rng(0).normal(size=(len(labels), 3)).astype("float32")
    value, (grad,) = value_and_grad(
        lambda e: online_triplet_loss(labels, e, mining=mining), x
    )
    assert float(value) == 0.0
    np.testing.assert_array_equal(grad, np.zeros_like(x))


@pytest.mark.parametrize("mining", MODES)
@pytest.mark.parametrize(
    "metric", ["euclidean", "squared_euclidean", "cosine", "manhattan"]
)
def test_gradients_finite_with_identical_and_zero_embeddings(mining, metric):
    labels = np.array([0, 0, 1, 1, 2, 2], "int32")
    x = np.zeros((6, 3), "float32")
    x[2:4] = 1.0  # a whole class identical, others at the origin
    for embeddings in (x, np.zeros_like(x), np.ones_like(x)):
        value, (grad,) = value_and_grad(
            lambda e: online_triplet_loss(labels, e, mining=mining, distance=metric),
            embeddings,
        )
        assert np.isfinite(value)
        assert np.all(np.isfinite(grad))


def numeric_gradient(fn, x, step=1e-5):
    grad = np.zeros_like(x, dtype="float64")
    for index in np.ndindex(x.shape):
        up, down = x.astype("float64"), x.astype("float64")
        up[index] += step
        down[index] -= step
        grad[index] = (fn(up) - fn(down)) / (2 * step)
    return grad


@pytest.mark.parametrize("mining", MODES)
@pytest.mark.parametrize("soft", [False, True])
def test_gradient_matches_finite_differences_of_the_reference(mining, soft):
    if mining == "batch_all" and soft:
        pytest.skip("batch_all has no soft variant")
    rng = np.random.default_rng(3)
    labels = np.array([0, 0, 0, 1, 1, 2, 2, 2], "int32")
    x = rng.normal(size=(8, 3)).astype("float32")
    _, (grad,) = value_and_grad(
        lambda e: online_triplet_loss(labels, e, mining=mining, soft=soft), x
    )
    want = numeric_gradient(lambda e: reference(labels, e, mining, soft=soft), x)
    np.testing.assert_allclose(grad, want, rtol=1e-3, atol=1e-4)


@pytest.mark.parametrize("mining", ["batch_hard", "semi_hard"])
def test_soft_variant_is_smooth_and_positive(mining):
    labels = np.array([0, 0, 1, 1], "int32")
    base = np.array([[0.0], [0.5], [3.0], [3.5]], "float32")
    values = []
    for shift in np.linspace(-0.2, 0.2, 9):
        x = base.copy()
        x[1] += shift
        values.append(loss_value(labels, x, mining=mining, soft=True))
    values = np.array(values)
    assert np.all(values > 0)
    # Second differences of a smooth function on a fine grid stay tiny.
    assert np.max(np.abs(np.diff(values, 2))) < 1e-2


@pytest.mark.parametrize("mining", MODES)
@pytest.mark.parametrize("policy", ["mixed_float16", "mixed_bfloat16"])
def test_mixed_precision_close_to_float32(mining, policy):
    rng = np.random.default_rng(1)
    labels = rng.integers(0, 4, size=32).astype("int32")
    x = rng.normal(size=(32, 8)).astype("float32")
    keras.config.set_dtype_policy(policy)
    half = keras.ops.cast(x, keras.config.dtype_policy().compute_dtype)
    value = to_numpy(OnlineTripletLoss(mining=mining)(labels, half))
    direct = to_numpy(online_triplet_loss(labels, half, mining=mining))
    keras.config.set_dtype_policy("float32")
    want = loss_value(labels, x, mining=mining)
    assert value.dtype == np.float32 and direct.dtype == np.float32
    tolerance = 2e-2 if policy == "mixed_bfloat16" else 2e-3
    np.testing.assert_allclose(value, want, rtol=tolerance, atol=tolerance)
    np.testing.assert_allclose(direct, value, rtol=1e-6)


def test_labels_of_shape_batch_by_one_and_float_are_accepted():
    labels = np.array([0, 0, 1, 1])
    x = np.array([[0.0], [0.5], [1.0], [1.25]], "float32")
    want = loss_value(labels, x)
    assert loss_value(labels[:, None].astype("float32"), x) == pytest.approx(want)


@pytest.mark.slow
def test_a_large_batch_runs_without_cubic_memory():
    # A (B, B, B) float32 tensor at B = 1024 would need 4 GiB.
    rng = np.random.default_rng(0)
    labels = rng.integers(0, 32, size=1024).astype("int32")
    x = rng.normal(size=(1024, 16)).astype("float32")
    for mining in MODES:
        assert np.isfinite(loss_value(labels, x, mining=mining))


# --- configuration and errors ----------------------------------------------------


@pytest.mark.parametrize(
    ("kwargs", "error", "match"),
    [
        ({"mining": "hardest"}, ValueError, "mining"),
        ({"distance": "chebyshev"}, ValueError, "distance"),
        ({"margin": -0.1}, ValueError, "margin"),
        ({"margin": float("nan")}, ValueError, "margin"),
        ({"margin": "1"}, TypeError, "margin"),
        ({"mining": "batch_all", "soft": True}, ValueError, "soft"),
        ({"soft": 1}, TypeError, "soft"),
    ],
)
def test_bad_arguments_raise(kwargs, error, match):
    with pytest.raises(error, match=match):
        OnlineTripletLoss(**kwargs)
    with pytest.raises(error, match=match):
        online_triplet_loss(np.zeros(2), np.zeros((2, 2), "float32"), **kwargs)


def test_wrong_shapes_raise():
    with pytest.raises(ValueError, match="embeddings"):
        online_triplet_loss(np.zeros(2), np.zeros((2, 3, 1), "float32"))
    with pytest.raises(ValueError, match="labels"):
        online_triplet_loss(np.zeros((2, 2)), np.zeros((2, 3), "float32"))
    with pytest.raises(ValueError, match="batch size"):
        online_triplet_loss(np.zeros(3), np.zeros((2, 3), "float32"))
    with pytest.raises(ValueError, match="sample_weight"):
        OnlineTripletLoss()(np.zeros(2), np.zeros((2, 3), "float32"), np.ones(2))


def compile_loss(backend, mining):
    """`online_triplet_loss` as a `tf.function` of unknown batch size, or jitted."""
    if backend == "tensorflow":
        import tensorflow as tf

        return tf.function(
            lambda y, e: online_triplet_loss(y, e, mining=mining),
            input_signature=[
                tf.TensorSpec([None], tf.int32),
                tf.TensorSpec([None, 3], tf.float32),
            ],
        )
    if backend == "jax":
        import jax

        return jax.jit(lambda y, e: online_triplet_loss(y, e, mining=mining))
    pytest.skip("PyTorch runs eagerly")


@pytest.mark.parametrize("mining", MODES)
def test_compiles_with_an_unknown_or_static_batch_size(backend, mining):
    labels = np.array([0, 0, 1, 1, 2], "int32")
    x = np.random.default_rng(0).normal(size=(5, 3)).astype("float32")
    want = loss_value(labels, x, mining=mining)
    compiled = compile_loss(backend, mining)
    assert float(to_numpy(compiled(labels, x))) == pytest.approx(want, rel=1e-6)


def test_compiled_semi_hard_takes_either_path(backend):
    # The compiled function holds both semi-hard paths and picks one per
    # batch: with a limit of 1, one positive per anchor scans, two sort.
    x = np.random.default_rng(1).normal(size=(7, 3)).astype("float32")
    with mock.patch.object(miners, "SCAN_LIMIT", 1):
        compiled = compile_loss(backend, "semi_hard")
        for labels in ([0, 0, 1, 1, 2, 3, 4], [0, 0, 1, 1, 1, 2, 3]):
            labels = np.array(labels, "int32")
            want = reference(labels, x, "semi_hard")
            got = float(to_numpy(compiled(labels, x)))
            assert got == pytest.approx(want, rel=1e-5)
