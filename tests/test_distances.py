"""Distance functions and layers against NumPy, and their properties."""

import keras
import numpy as np
import pytest
from hypothesis import assume, given
from hypothesis import strategies as st
from hypothesis.extra import numpy as hnp

from keras_siamese import (
    CosineDistance,
    EuclideanDistance,
    ManhattanDistance,
    cosine_distance,
    distances,
    euclidean_distance,
    manhattan_distance,
    paired_distances,
    pairwise_distances,
)
from tests.helpers import to_numpy, value_and_grad

finite = st.floats(-100, 100, allow_nan=False, width=32)


@st.composite
def pair_batches(draw):
    # A few fixed sizes (not every integer): JAX compiles once per shape, and
    # the edge cases (batch of 1, 1-d embeddings) are still covered.
    batch = draw(st.sampled_from((1, 2, 6)))
    dim = draw(st.sampled_from((1, 3, 8)))
    shape = (batch, dim)
    a = draw(hnp.arrays("float32", shape, elements=finite))
    b = draw(hnp.arrays("float32", shape, elements=finite))
    return a, b


@st.composite
def embedding_batches(draw):
    batch = draw(st.sampled_from((1, 2, 7)))
    dim = draw(st.sampled_from((1, 3, 6)))
    x = draw(hnp.arrays("float32", (batch, dim), elements=finite))
    # Duplicate some rows: zero distances off the diagonal must be safe too.
    if batch > 1 and draw(st.booleans()):
        x[-1] = x[0]
    return x


def np_euclidean(a, b):
    a64, b64 = a.astype("float64"), b.astype("float64")
    return np.sqrt(((a64 - b64) ** 2).sum(-1, keepdims=True))


def np_cosine(a, b):
    a64, b64 = a.astype("float64"), b.astype("float64")
    na = np.maximum(np.linalg.norm(a64, axis=-1, keepdims=True), 1e-6)
    nb = np.maximum(np.linalg.norm(b64, axis=-1, keepdims=True), 1e-6)
    return np.clip(1 - ((a64 / na) * (b64 / nb)).sum(-1, keepdims=True), 0, 2)


def np_manhattan(a, b):
    return np.abs(a.astype("float64") - b.astype("float64")).sum(-1, keepdims=True)


PAIR_FUNCTIONS = {
    "euclidean": (euclidean_distance, np_euclidean),
    "cosine": (cosine_distance, np_cosine),
    "manhattan": (manhattan_distance, np_manhattan),
}


def tolerance(reference):
    return 1e-4 * (1 + np.abs(reference).max())


@pytest.mark.parametrize("name", sorted(PAIR_FUNCTIONS))
@given(batch=pair_batches())
def test_pair_distance_matches_numpy(name, batch):
    a, b = batch
    fn, reference = PAIR_FUNCTIONS[name]
    expected = reference(a, b)
    actual = to_numpy(fn(a, b))
    assert actual.shape == expected.shape
    # Cosine of near-zero vectors is ill-conditioned; compare where norms are sane.
    if name == "cosine":
        keep = (np.linalg.norm(a, axis=1) > 1e-2) & (np.linalg.norm(b, axis=1) > 1e-2)
        actual, expected = actual[keep], expected[keep]
        np.testing.assert_allclose(actual, expected, atol=1e-4)
    else:
        np.testing.assert_allclose(
            actual, expected, rtol=1e-4, atol=tolerance(expected)
        )


@pytest.mark.parametrize("name", sorted(PAIR_FUNCTIONS))
@given(batch=pair_batches())
def test_pair_distance_symmetric_and_non_negative(name, batch):
    a, b = batch
    fn, _ = PAIR_FUNCTIONS[name]
    ab, ba = to_numpy(fn(a, b)), to_numpy(fn(b, a))
    np.testing.assert_allclose(ab, ba, rtol=1e-6, atol=1e-6)
    assert (ab >= 0).all()


@given(x=hnp.arrays("float32", (4, 5), elements=finite))
def test_identical_inputs_give_zero_or_sqrt_epsilon(x):
    np.testing.assert_array_equal(to_numpy(euclidean_distance(x, x)), 0.0)
    np.testing.assert_array_equal(to_numpy(manhattan_distance(x, x)), 0.0)
    eps = 1e-7
    np.testing.assert_allclose(
        to_numpy(euclidean_distance(x, x, epsilon=eps)), np.sqrt(eps), rtol=1e-5
    )
    nonzero = np.linalg.norm(x, axis=1) > 1e-2
    assert (to_numpy(cosine_distance(x, x))[nonzero] < 1e-5).all()


@pytest.mark.parametrize("name", ["euclidean", "manhattan"])
@given(xyz=hnp.arrays("float32", (3, 3, 4), elements=st.floats(-10, 10, width=32)))
def test_triangle_inequality(name, xyz):
    fn, _ = PAIR_FUNCTIONS[name]
    x, y, z = xyz
    xz = to_numpy(fn(x, z))
    xy_yz = to_numpy(fn(x, y)) + to_numpy(fn(y, z))
    assert (xz <= xy_yz + 1e-4 * (1 + xy_yz)).all()


@given(
    batch=pair_batches(),
    shift=st.floats(-10, 10, width=32),
)
def test_euclidean_and_manhattan_translation_invariant(batch, shift):
    a, b = batch
    for fn in (euclidean_distance, manhattan_distance):
        base = to_numpy(fn(a, b))
        moved = to_numpy(fn(a + np.float32(shift), b + np.float32(shift)))
        np.testing.assert_allclose(moved, base, rtol=1e-3, atol=1e-3 * (1 + base.max()))


@given(batch=pair_batches(), scale=st.floats(0.1, 10))
def test_cosine_scale_invariant(batch, scale):
    a, b = batch
    keep = (np.linalg.norm(a, axis=1) > 1e-1) & (np.linalg.norm(b, axis=1) > 1e-1)
    assume(keep.any())
    base = to_numpy(cosine_distance(a, b))[keep]
    scaled = to_numpy(cosine_distance(a * np.float32(scale), b))[keep]
    np.testing.assert_allclose(scaled, base, atol=1e-4)


@pytest.mark.parametrize("name", sorted(PAIR_FUNCTIONS))
@given(x=hnp.arrays("float32", (3, 4), elements=finite))
def test_gradient_finite_on_identical_inputs(name, x):
    fn, _ = PAIR_FUNCTIONS[name]

    def total(a, b):
        return keras.ops.sum(fn(a, b))

    _, grads = value_and_grad(total, x, x.copy())
    for grad in grads:
        assert np.isfinite(grad).all()
    if name == "euclidean":
        for grad in grads:
            np.testing.assert_array_equal(grad, 0.0)


def test_gradient_finite_for_zero_vectors():
    zeros = np.zeros((2, 3), "float32")
    for fn, _ in PAIR_FUNCTIONS.values():
        _, grads = value_and_grad(
            lambda a, b, fn=fn: keras.ops.sum(fn(a, b)), zeros, zeros
        )
        assert all(np.isfinite(g).all() for g in grads)


def test_euclidean_gradient_matches_numpy_away_from_zero():
    rng = np.random.default_rng(0)
    a, b = rng.normal(size=(2, 4, 3)).astype("float32")
    _, (grad_a, grad_b) = value_and_grad(
        lambda a, b: keras.ops.sum(euclidean_distance(a, b)), a, b
    )
    expected = (a - b) / np_euclidean(a, b)
    np.testing.assert_allclose(grad_a, expected, rtol=1e-4, atol=1e-5)
    np.testing.assert_allclose(grad_b, -expected, rtol=1e-4, atol=1e-5)


ALL_DISTANCES = ["euclidean", "squared_euclidean", "cosine", "manhattan"]


@pytest.mark.parametrize("metric", ALL_DISTANCES)
@given(x=embedding_batches())
def test_pairwise_distances_match_numpy(metric, x):
    a, b = x[:, None, :], x[None, :, :]
    if metric == "cosine":
        expected = np_cosine(np.broadcast_to(a, (len(x), *x.shape)), b)[..., 0]
        np.fill_diagonal(expected, 0.0)
    elif metric == "manhattan":
        expected = np_manhattan(a, b)[..., 0]
    else:
        expected = np_euclidean(a, b)[..., 0]
        if metric == "squared_euclidean":
            expected = expected**2
    actual = to_numpy(pairwise_distances(x, metric))
    assert actual.shape == (len(x), len(x))
    np.testing.assert_array_equal(np.diag(actual), 0.0)
    np.testing.assert_allclose(actual, actual.T, atol=1e-5 * (1 + actual.max()))
    assert (actual >= 0).all()
    if metric == "cosine":
        norms = np.linalg.norm(x, axis=1)
        keep = np.outer(norms > 1e-2, norms > 1e-2)
        np.testing.assert_allclose(actual[keep], expected[keep], atol=1e-4)
    elif metric == "manhattan":
        np.testing.assert_allclose(actual, expected, rtol=1e-5, atol=1e-4)
    else:
        # The Gram-matrix form loses absolute precision ~ eps * ||x||^2.
        scale = 1 + (x.astype("float64") ** 2).sum(1).max()
        atol = 1e-5 * scale if metric == "squared_euclidean" else 1e-2 * np.sqrt(scale)
        np.testing.assert_allclose(actual, expected, atol=atol)


@pytest.mark.parametrize("metric", ALL_DISTANCES)
@given(x=embedding_batches())
def test_pairwise_gradient_finite_with_duplicates(metric, x):
    x = np.concatenate([x, x[:1]])  # guarantees an off-diagonal zero distance
    _, (grad,) = value_and_grad(
        lambda e: keras.ops.sum(pairwise_distances(e, metric)), x
    )
    assert np.isfinite(grad).all()


@pytest.mark.parametrize("distance", ["euclidean", "manhattan"])
def test_gradient_between_identical_rows_is_zero(distance):
    # A zero subgradient (not JAX's 1 for `abs`): nothing pushes two equal
    # embeddings apart in an arbitrary direction.
    x = np.array([[1.0, -2.0, 3.0], [1.0, -2.0, 3.0]], "float32")
    _, (grad,) = value_and_grad(
        lambda e: keras.ops.sum(pairwise_distances(e, distance)), x
    )
    np.testing.assert_array_equal(grad, 0.0)
    _, grads = value_and_grad(
        lambda a, b: keras.ops.sum(paired_distances(a, b, distance)), x, x
    )
    for grad in grads:
        np.testing.assert_array_equal(grad, 0.0)


@pytest.mark.parametrize("distance", ALL_DISTANCES)
def test_paired_distances_agree_with_pairwise_rows(distance):
    rng = np.random.default_rng(1)
    x = rng.normal(size=(5, 3)).astype("float32")
    row = to_numpy(paired_distances(x, np.roll(x, 1, axis=0), distance))
    full = to_numpy(pairwise_distances(x, distance))
    np.testing.assert_allclose(row, full[np.arange(5), np.arange(-1, 4)], atol=1e-4)


@pytest.mark.parametrize("distance", ALL_DISTANCES)
def test_pairwise_against_references_matches_paired(distance):
    rng = np.random.default_rng(4)
    queries = rng.normal(size=(4, 6)).astype("float32")
    references = rng.normal(size=(7, 6)).astype("float32")
    full = to_numpy(pairwise_distances(queries, distance, references=references))
    assert full.shape == (4, 7)
    for i in range(4):
        row = to_numpy(
            paired_distances(
                np.repeat(queries[i : i + 1], 7, axis=0), references, distance
            )
        )
        np.testing.assert_allclose(full[i], row, rtol=1e-4, atol=1e-4)
    same = to_numpy(distances.get(distance).pairwise(queries, queries))
    # Against itself passed as references there is no forced zero diagonal,
    # only round-off.
    assert np.abs(np.diag(same)).max() < 1e-3


def test_manhattan_pairwise_is_built_in_feature_slices(monkeypatch):
    # Slices of one feature at a time give the same distances.
    rng = np.random.default_rng(5)
    x = rng.normal(size=(6, 5)).astype("float32")
    whole = to_numpy(pairwise_distances(x, "manhattan"))
    monkeypatch.setattr(distances, "_MANHATTAN_CHUNK_ELEMENTS", 1)
    np.testing.assert_allclose(
        to_numpy(pairwise_distances(x, "manhattan")), whole, rtol=1e-6
    )


def test_get_resolves_every_name_and_refuses_others():
    for name in ALL_DISTANCES:
        assert distances.get(name).name == name
        assert distances.get(distances.get(name)) is distances.get(name)
    with pytest.raises(ValueError, match="chebyshev"):
        distances.get("chebyshev")
    with pytest.raises(TypeError, match="distance"):
        distances.get(None)


@pytest.mark.parametrize(
    "layer_cls", [EuclideanDistance, CosineDistance, ManhattanDistance]
)
def test_layers_match_functions_and_keep_dims(layer_cls):
    rng = np.random.default_rng(2)
    a, b = rng.normal(size=(2, 6, 4)).astype("float32")
    out = to_numpy(layer_cls()([a, b]))
    assert out.shape == (6, 1)
    fn = {
        EuclideanDistance: euclidean_distance,
        CosineDistance: cosine_distance,
        ManhattanDistance: manhattan_distance,
    }[layer_cls]
    np.testing.assert_allclose(out, to_numpy(fn(a, b)), rtol=1e-6)


def test_euclidean_layer_options():
    a = np.array([[0.0, 3.0], [1.0, 1.0]], "float32")
    b = np.array([[4.0, 0.0], [1.0, 1.0]], "float32")
    np.testing.assert_allclose(
        to_numpy(EuclideanDistance(squared=True)([a, b])), [[25.0], [0.0]]
    )
    np.testing.assert_allclose(
        to_numpy(EuclideanDistance(epsilon=1e-4)([a, b])), [[5.0], [1e-2]], rtol=1e-5
    )


@pytest.mark.parametrize(
    "layer_cls", [EuclideanDistance, CosineDistance, ManhattanDistance]
)
@pytest.mark.parametrize("policy", ["mixed_float16", "mixed_bfloat16"])
def test_layers_compute_in_float32_under_mixed_precision(layer_cls, policy):
    rng = np.random.default_rng(3)
    a, b = (rng.normal(size=(2, 8, 16)) * 300).astype("float32")
    expected = to_numpy(layer_cls()([a, b]))
    keras.config.set_dtype_policy(policy)
    half = "float16" if policy == "mixed_float16" else "bfloat16"
    layer = layer_cls()
    out = layer([keras.ops.cast(a, half), keras.ops.cast(b, half)])
    # Computed in float32, returned in the policy's compute dtype.
    assert keras.backend.standardize_dtype(out.dtype) == half
    out = to_numpy(out).astype("float32")
    # Squares of these values overflow float16 (max 65504): float32 math is needed.
    assert np.isfinite(out).all()
    np.testing.assert_allclose(out, expected, rtol=2e-2, atol=2e-2)


@pytest.mark.parametrize(
    "layer_cls", [EuclideanDistance, CosineDistance, ManhattanDistance]
)
def test_layers_reject_bad_inputs(layer_cls):
    x = np.zeros((2, 3), "float32")
    with pytest.raises(TypeError, match=r"list or tuple of two tensors"):
        layer_cls()(x)
    with pytest.raises(ValueError, match=r"exactly two tensors"):
        layer_cls()([x, x, x])
    with pytest.raises(ValueError, match=r"same shape"):
        layer_cls()([x, np.zeros((2, 4), "float32")])


def test_bad_arguments_are_named():
    with pytest.raises(ValueError, match="epsilon"):
        EuclideanDistance(epsilon=0.0)
    with pytest.raises(ValueError, match="epsilon"):
        EuclideanDistance(epsilon=float("nan"))
    with pytest.raises(TypeError, match="epsilon"):
        EuclideanDistance(epsilon="small")
    with pytest.raises(ValueError, match=r"distance.*chebyshev"):
        pairwise_distances(np.zeros((2, 2)), "chebyshev")
    with pytest.raises(ValueError, match="2-D"):
        pairwise_distances(np.zeros((2, 2, 2)))
    with pytest.raises(ValueError, match="2-D"):
        pairwise_distances(np.zeros((2, 2)), references=np.zeros(2))
    with pytest.raises(ValueError, match="same embedding size"):
        pairwise_distances(np.zeros((2, 2)), references=np.zeros((3, 4)))
    with pytest.raises(TypeError, match="distance"):
        paired_distances(np.zeros((2, 2)), np.zeros((2, 2)), distance=None)


@pytest.mark.parametrize("name", ["euclidean", "squared_euclidean", "cosine"])
def test_a_nan_embedding_gives_nan_distances_not_zero(name):
    # The floors that keep gradients finite must not turn a NaN into a
    # distance (0 would read as a perfect match).
    x = np.array([[np.nan, 1.0], [0.0, 1.0]], dtype="float32")
    y = np.array([[0.0, 1.0], [3.0, 4.0]], dtype="float32")
    pairwise = to_numpy(pairwise_distances(x, name, references=y))
    assert np.isnan(pairwise[0]).all()
    assert np.isfinite(pairwise[1]).all()
    paired = to_numpy(paired_distances(x, y, name))
    assert np.isnan(paired[0]).all() and np.isfinite(paired[1]).all()


def test_euclidean_epsilon_floor_keeps_nan():
    a = np.array([[np.nan, 0.0]], dtype="float32")
    b = np.zeros((1, 2), dtype="float32")
    assert np.isnan(to_numpy(euclidean_distance(a, b, epsilon=1e-9))).all()
