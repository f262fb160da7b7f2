"""The self-supervised losses of two views, against NumPy, on every backend.

Every loss equals an independent NumPy reference (float64) on random and
degenerate batches (identical views, two examples, constant and zero
embeddings), its gradient is finite there and equals central finite
differences of the reference, swapping the views leaves it unchanged, and
bad input is refused by name. lightly's own numbers are checked in
`tests/test_ssl_goldens.py`.
"""

from __future__ import annotations

import keras
import numpy as np
import pytest
from hypothesis import given
from hypothesis import strategies as st

from keras_siamese import (
    BarlowTwinsLoss,
    BYOLLoss,
    NegativeCosineSimilarity,
    VICRegLoss,
    _keras_compat,
    barlow_twins_loss,
    byol_loss,
    negative_cosine_similarity,
    vicreg_loss,
)
from keras_siamese.data import ClassBalancedDataset
from tests.helpers import to_numpy, value_and_grad

# --- NumPy references ---------------------------------------------------------


def _halves(y):
    n = len(y) // 2
    return y[:n], y[n:]


def _compared(y):
    """The rows compared: the views, or predictions and the other view's targets."""
    if y.ndim == 2:
        return _halves(y)
    n = len(y) // 2
    return y[:, 0], np.concatenate([y[n:, 1], y[:n, 1]])


def _cosines(y, eps):
    def unit(v):
        return v / np.maximum(np.linalg.norm(v, axis=1, keepdims=True), eps)

    a, b = _compared(y)
    return np.sum(unit(a) * unit(b), axis=1)


def np_negative_cosine(y, eps=1e-8):
    cosines = _cosines(y, eps)
    return -np.mean(cosines) if len(cosines) else 0.0


def np_byol(y, eps=1e-8):
    cosines = _cosines(y, eps)
    return np.mean(2.0 - 2.0 * cosines) if len(cosines) else 0.0


def np_barlow_twins(y, lambda_param=5e-3):
    a, b = _halves(y)

    def standardized(v):
        return (v - v.mean(axis=0)) / np.sqrt(v.var(axis=0) + 1e-5)

    c = standardized(a).T @ standardized(b) / len(a)
    off = c[~np.eye(len(c), dtype=bool)]
    return np.sum((np.diag(c) - 1.0) ** 2) + lambda_param * np.sum(off**2)


def np_vicreg(y, lambda_param=25.0, mu_param=25.0, nu_param=1.0, eps=1e-4):
    a, b = _halves(y)

    def variance(v):
        return np.mean(np.maximum(0.0, 1.0 - np.sqrt(v.var(axis=0, ddof=1) + eps)))

    def covariance(v):
        cov = np.atleast_2d(np.cov(v, rowvar=False))
        return np.sum(cov[~np.eye(len(cov), dtype=bool)] ** 2) / v.shape[1]

    return (
        lambda_param * np.mean((a - b) ** 2)
        + mu_param * (variance(a) + variance(b)) / 2
        + nu_param * (covariance(a) + covariance(b))
    )


# name: (function, class, reference, layouts it takes)
LOSSES = {
    "negative_cosine": (
        negative_cosine_similarity,
        NegativeCosineSimilarity,
        np_negative_cosine,
        ("views", "stacked"),
    ),
    "byol": (byol_loss, BYOLLoss, np_byol, ("views", "stacked")),
    "barlow_twins": (barlow_twins_loss, BarlowTwinsLoss, np_barlow_twins, ("views",)),
    "vicreg": (vicreg_loss, VICRegLoss, np_vicreg, ("views",)),
}
CASES = [(name, layout) for name, entry in LOSSES.items() for layout in entry[3]]
KINDS = ("random", "scaled", "identical", "two", "constant", "zeros")


@st.composite
def _batches(draw, layout):
    """`(kind, y)`: the two views of 5 examples (2 for `two`), of 3 dimensions.

    Two shapes only, so that JAX compiles every operation twice, not once
    per example (the goldens and the comparison with lightly vary them).
    """
    kind = draw(st.sampled_from(KINDS))
    n, dim = (2 if kind == "two" else 5), 3
    rng = np.random.default_rng(draw(st.integers(0, 2**32 - 1)))
    y = rng.normal(size=(2 * n, 2, dim) if layout == "stacked" else (2 * n, dim))
    if kind == "scaled":
        y *= 10.0 ** rng.uniform(-2.0, 1.0)
    elif kind == "identical":
        y[n:] = y[:n]
    elif kind == "constant":
        y[:] = y[0]
    elif kind == "zeros":
        y[:] = 0.0
    return kind, y.astype("float32")


def _finite_differences(reference, y, step=1e-4):
    y = y.astype("float64")
    grad = np.zeros_like(y)
    for index in np.ndindex(y.shape):
        up, down = y.copy(), y.copy()
        up[index] += step
        down[index] -= step
        grad[index] = (reference(up) - reference(down)) / (2 * step)
    return grad


@pytest.mark.parametrize(("name", "layout"), CASES)
@given(data=st.data())
def test_value_equals_the_numpy_reference(name, layout, data):
    function, _, reference, _ = LOSSES[name]
    _, y = data.draw(_batches(layout))
    want = reference(y.astype("float64"))
    got = float(function(None, y))
    np.testing.assert_allclose(got, want, rtol=1e-4, atol=1e-5)


@pytest.mark.parametrize(("name", "layout"), CASES)
@given(data=st.data())
def test_gradient_is_finite_and_equals_finite_differences(name, layout, data):
    function, _, reference, _ = LOSSES[name]
    kind, y = data.draw(_batches(layout))
    value, (grad,) = value_and_grad(lambda t: function(None, t), y)
    assert np.isfinite(value) and np.isfinite(grad).all()
    if kind == "zeros" and name in ("negative_cosine", "byol"):
        # The norm floor of a zero vector is a kink that finite differences
        # straddle; the gradient there is finite, which is what matters.
        return
    if layout == "stacked":
        # No gradient reaches the targets, through the stop-gradient; the
        # predictions get the gradient of the reference with the targets fixed.
        assert not grad[:, 1].any()
        want = _finite_differences(
            lambda p: reference(np.stack([p, y[:, 1].astype("float64")], axis=1)),
            y[:, 0],
        )
        grad = grad[:, 0]
    else:
        want = _finite_differences(reference, y)
    scale = max(float(np.abs(want).max()), 1.0)
    np.testing.assert_allclose(grad, want, rtol=2e-3, atol=2e-3 * scale)


@pytest.mark.parametrize(("name", "layout"), CASES)
@given(data=st.data())
def test_swapping_the_views_keeps_the_loss(name, layout, data):
    function = LOSSES[name][0]
    _, y = data.draw(_batches(layout))
    first, second = _halves(y)
    swapped = np.concatenate([second, first])
    np.testing.assert_allclose(
        float(function(None, swapped)), float(function(None, y)), rtol=1e-5, atol=1e-6
    )


def test_identical_views_are_the_minimum_of_the_cosine_losses():
    views = np.random.default_rng(0).normal(size=(4, 3)).astype("float32")
    both = np.concatenate([views, views])
    stacked = np.stack([both, both], axis=1)
    for y in (both, stacked):
        assert float(negative_cosine_similarity(None, y)) == pytest.approx(-1.0)
        assert float(byol_loss(None, y)) == pytest.approx(0.0, abs=1e-6)


@pytest.mark.parametrize(("name", "layout"), CASES)
def test_float64_embeddings_are_computed(name, layout):
    # Constants of the computation (2 of BYOL, the floors) must not mix a
    # float32 into float64 inputs, which TensorFlow refuses.
    function, _, reference, _ = LOSSES[name]
    rng = np.random.default_rng(5)
    y = rng.normal(size=(8, 2, 3) if layout == "stacked" else (8, 3))
    got = function(None, y)
    assert np.isfinite(to_numpy(got))
    np.testing.assert_allclose(float(got), reference(y), rtol=1e-5, atol=1e-6)


def test_an_empty_batch_costs_zero_with_a_zero_gradient():
    for function in (negative_cosine_similarity, byol_loss):
        for shape in ((0, 3), (0, 2, 3)):
            value, (grad,) = value_and_grad(
                lambda t, f=function: f(None, t), np.zeros(shape, "float32")
            )
            assert float(value) == 0.0 and grad.shape == shape


@pytest.mark.parametrize("name", sorted(LOSSES))
def test_the_class_equals_the_function_and_ignores_y_true(name):
    function, cls, _, _ = LOSSES[name]
    kwargs = {
        "negative_cosine": {"eps": 5.0},  # above the norms: it counts
        "byol": {"eps": 5.0},
        "barlow_twins": {"lambda_param": 0.1},
        "vicreg": {"lambda_param": 5.0, "mu_param": 2.0, "nu_param": 3.0, "eps": 0.1},
    }[name]
    y = np.random.default_rng(1).normal(size=(8, 3)).astype("float32")
    loss = cls(**kwargs)
    want = float(function(None, y, **kwargs))
    assert want != pytest.approx(float(function(None, y)))  # the arguments count
    assert float(loss(None, y)) == pytest.approx(want, rel=1e-6)
    assert float(loss(np.arange(8), y)) == pytest.approx(want, rel=1e-6)


@pytest.mark.parametrize("name", sorted(LOSSES))
def test_bad_input_is_refused_by_name(name):
    function, cls, _, layouts = LOSSES[name]
    y = np.zeros((8, 3), "float32")
    with pytest.raises(ValueError, match="even number of rows; got 7"):
        function(None, y[:7])
    with pytest.raises(ValueError, match=r"shape \(2 \* batch"):
        function(None, np.zeros((8, 3, 3), "float32"))
    with pytest.raises(ValueError, match="sample_weight"):
        cls()(None, y, sample_weight=np.ones(8))
    if "stacked" in layouts:
        with pytest.raises(ValueError, match="got 5"):
            function(None, np.zeros((5, 2, 3), "float32"))
    else:
        with pytest.raises(ValueError, match="at least 2 examples per view"):
            function(None, y[:2])
    parameters = [key for key in ("eps", "lambda_param", "mu_param", "nu_param")]
    for key in parameters:
        if key not in cls().get_config():
            continue
        bad = 0.0 if key == "eps" else -1.0
        with pytest.raises(ValueError, match=key):
            cls(**{key: bad})
        with pytest.raises(ValueError, match=key):
            function(None, y, **{key: bad})
        with pytest.raises(TypeError, match=key):
            cls(**{key: "1"})


def test_placeholder_batch_sizes_are_not_checked_in_keras_symbolic_scope():
    # Keras traces an unknown batch size as an odd placeholder size on
    # PyTorch (83): inside its symbolic scope the size is not refused.
    assert _keras_compat.in_symbolic_scope() is False
    with keras.SymbolicScope():
        assert _keras_compat.in_symbolic_scope() is True
        float(negative_cosine_similarity(None, np.ones((7, 3), "float32")))
    with pytest.raises(ValueError, match="even"):
        negative_cosine_similarity(None, np.ones((7, 3), "float32"))


def test_without_keras_symbolic_state_the_batch_size_is_still_checked(monkeypatch):
    monkeypatch.setattr(_keras_compat, "_GLOBAL_STATE_MODULE", "no.such.module")
    with keras.SymbolicScope():
        assert _keras_compat.in_symbolic_scope() is False
        with pytest.raises(ValueError, match="even"):
            negative_cosine_similarity(None, np.ones((7, 3), "float32"))


# --- training -----------------------------------------------------------------


def _noise(images, seed):
    return images + np.random.default_rng(seed).normal(0.0, 0.1, images.shape)


def _model(stacked):
    inputs = keras.Input((6,))
    z = keras.layers.Dense(4)(keras.layers.Dense(8, activation="relu")(inputs))
    if not stacked:
        return keras.Model(inputs, z)
    p = keras.layers.Dense(4)(keras.layers.Dense(8, activation="relu")(z))
    return keras.Model(inputs, keras.ops.stack([p, z], axis=1))


@pytest.mark.slow
@pytest.mark.parametrize(
    "cls", [NegativeCosineSimilarity, BYOLLoss, BarlowTwinsLoss, VICRegLoss]
)
def test_trains_on_a_two_view_dataset(cls):
    keras.utils.set_random_seed(0)
    rng = np.random.default_rng(0)
    x = rng.normal(size=(64, 6)).astype("float32")
    data = ClassBalancedDataset(
        x,
        np.arange(64),
        classes_per_batch=16,
        samples_per_class=1,
        augment=_noise,
        views=2,
        seed=0,
    )
    model = _model(stacked=cls in (NegativeCosineSimilarity, BYOLLoss))
    model.compile(optimizer=keras.optimizers.Adam(1e-2), loss=cls())
    history = model.fit(data, epochs=8, verbose=0).history["loss"]
    assert np.isfinite(history).all()
    assert history[-1] < history[0]
    predicted = to_numpy(model(x[:4]))
    assert np.isfinite(predicted).all()
