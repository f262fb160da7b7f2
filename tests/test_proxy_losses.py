"""Proxy losses: CosineProxies with ArcFace, CosFace, sub-center ArcFace, Proxy-Anchor.

Checked three ways: against golden values and gradients computed by PyTorch
Metric Learning (`tests/fixtures/make_proxy_goldens.py`), on every backend;
live against PyTorch Metric Learning where it is installed (the torch
environment); and against plain NumPy loops written here.
"""

from __future__ import annotations

import json
import math
from pathlib import Path

import keras
import numpy as np
import pytest
from hypothesis import given
from hypothesis import strategies as st

from keras_siamese import (
    ArcFaceLoss,
    CosFaceLoss,
    CosineProxies,
    ProxyAnchorLoss,
    arcface_loss,
    cosface_loss,
    proxy_anchor_loss,
)
from tests.helpers import to_numpy, value_and_grad

FIXTURE = Path(__file__).resolve().parent / "fixtures" / "proxy_goldens.npz"
GOLDENS = np.load(FIXTURE)
CASES = json.loads(str(GOLDENS["cases"]))
LOSS_CLASSES = {
    "arcface": ArcFaceLoss,
    "cosface": CosFaceLoss,
    "proxy_anchor": ProxyAnchorLoss,
}


# --- independent NumPy reference ---------------------------------------------


def np_cosines(x, proxies, sub_centers=1):
    x = np.asarray(x, "float64")
    proxies = np.asarray(proxies, "float64")
    xn = x / np.maximum(np.linalg.norm(x, axis=1, keepdims=True), 1e-6)
    pn = proxies / np.maximum(np.linalg.norm(proxies, axis=1, keepdims=True), 1e-6)
    cos = xn @ pn.T
    return cos.reshape(len(x), -1, sub_centers).max(axis=2)


def np_log_softmax_target(logits, target):
    top = logits.max()
    return top + np.log(np.exp(logits - top).sum()) - logits[target]


def np_arcface(labels, cos, margin=28.6, scale=64.0):
    m = math.radians(margin)
    losses = []
    for row, label in zip(np.asarray(cos, "float64"), labels):
        logits = row.copy()
        t = min(max(row[label], -1.0), 1.0)
        theta = math.acos(t)
        logits[label] = (
            math.cos(theta + m) if theta <= math.pi - m else t - m * math.sin(m)
        )
        losses.append(np_log_softmax_target(scale * logits, label))
    return float(np.mean(losses))


def np_cosface(labels, cos, margin=0.35, scale=64.0):
    losses = []
    for row, label in zip(np.asarray(cos, "float64"), labels):
        logits = row.copy()
        logits[label] -= margin
        losses.append(np_log_softmax_target(scale * logits, label))
    return float(np.mean(losses))


def np_proxy_anchor(labels, cos, margin=0.1, alpha=32.0):
    cos = np.asarray(cos, "float64")
    classes = cos.shape[1]
    positive, negative, present = 0.0, 0.0, 0
    for c in range(classes):
        mine = [i for i in range(len(labels)) if labels[i] == c]
        others = [i for i in range(len(labels)) if labels[i] != c]
        if mine:
            present += 1
            positive += math.log1p(
                sum(math.exp(-alpha * (cos[i, c] - margin)) for i in mine)
            )
        negative += math.log1p(
            sum(math.exp(alpha * (cos[i, c] + margin)) for i in others)
        )
    return positive / max(present, 1) + negative / classes


NP_LOSSES = {
    "arcface": np_arcface,
    "cosface": np_cosface,
    "proxy_anchor": np_proxy_anchor,
}
FUNCTIONS = {
    "arcface": arcface_loss,
    "cosface": cosface_loss,
    "proxy_anchor": proxy_anchor_loss,
}


def function_value(name, labels, cos, **kwargs):
    value = to_numpy(FUNCTIONS[name](labels, cos, **kwargs))
    return float(np.mean(value))


# --- the head and the loss together, with the gradient of the proxies -------


def golden(name):
    return {
        key: GOLDENS[f"{name}/{key}"]
        for key in (
            "embeddings",
            "labels",
            "proxies",
            "loss",
            "embedding_gradient",
            "proxy_gradient",
        )
    }


def through_head(case, data, lr_multiplier=1.0):
    """Loss and gradients (embeddings, stored variable) via `stateless_call`."""
    classes = len(data["proxies"]) // case["sub_centers"]
    dim = data["embeddings"].shape[1]
    head = CosineProxies(
        classes, sub_centers=case["sub_centers"], lr_multiplier=lr_multiplier
    )
    head.build((None, dim))
    loss = LOSS_CLASSES[case["loss"]](**case["kwargs"])
    labels = data["labels"].astype("int32")

    def fn(embeddings, stored):
        cosines, _ = head.stateless_call([stored], [], embeddings)
        return loss(labels, cosines)

    stored = (data["proxies"] / lr_multiplier).astype("float32")
    value, (embedding_gradient, stored_gradient) = value_and_grad(
        fn, data["embeddings"], stored
    )
    return float(value), embedding_gradient, stored_gradient


@pytest.mark.parametrize("name", sorted(CASES))
def test_matches_pytorch_metric_learning_goldens(name):
    case, data = CASES[name], golden(name)
    value, embedding_gradient, proxy_gradient = through_head(case, data)
    np.testing.assert_allclose(value, data["loss"], rtol=2e-5, atol=1e-5)
    np.testing.assert_allclose(
        embedding_gradient, data["embedding_gradient"], rtol=1e-3, atol=2e-5
    )
    np.testing.assert_allclose(
        proxy_gradient, data["proxy_gradient"], rtol=1e-3, atol=2e-5
    )
    # The NumPy reference agrees too, so the goldens are not this code's echo.
    cos = np_cosines(data["embeddings"], data["proxies"], case["sub_centers"])
    want = NP_LOSSES[case["loss"]](data["labels"], cos, **case["kwargs"])
    np.testing.assert_allclose(value, want, rtol=1e-4)


def test_goldens_cover_the_obtuse_branch_of_arcface():
    data = golden("arcface_obtuse")
    cos = np_cosines(data["embeddings"], data["proxies"])
    target = cos[np.arange(len(cos)), data["labels"]]
    assert np.any(target < -math.cos(math.radians(28.6)))
    assert np.any(target > -math.cos(math.radians(28.6)))


@pytest.mark.parametrize("multiplier", [0.5, 10.0])
def test_lr_multiplier_keeps_value_and_proxy_gradient(multiplier):
    """The stored variable's gradient is the proxies' gradient, at any multiplier."""
    case, data = CASES["arcface_default"], golden("arcface_default")
    value, embedding_gradient, stored_gradient = through_head(case, data, multiplier)
    np.testing.assert_allclose(value, data["loss"], rtol=2e-5)
    np.testing.assert_allclose(
        embedding_gradient, data["embedding_gradient"], rtol=1e-3, atol=2e-5
    )
    np.testing.assert_allclose(
        stored_gradient, data["proxy_gradient"], rtol=1e-3, atol=2e-5
    )


def _train_proxies(data, optimizer, learning_rate, multiplier, steps, freeze):
    """Proxies and encoder kernel after `steps` compiled training steps."""
    dim = data["embeddings"].shape[1]
    keras.utils.set_random_seed(0)
    encoder = keras.Sequential([keras.Input((dim,)), keras.layers.Dense(dim)])
    encoder.trainable = not freeze
    head = CosineProxies(5, lr_multiplier=multiplier)
    model = keras.Sequential([encoder, head])
    make = {"sgd": keras.optimizers.SGD, "adam": keras.optimizers.Adam}[optimizer]
    model.compile(optimizer=make(learning_rate=learning_rate), loss=CosFaceLoss())
    head.set_weights([data["proxies"] / multiplier])
    np.testing.assert_allclose(to_numpy(head.proxies), data["proxies"], rtol=1e-6)
    for _ in range(steps):
        model.train_on_batch(data["embeddings"], data["labels"])
    return to_numpy(head.proxies), to_numpy(encoder.layers[0].kernel)


def test_lr_multiplier_scales_the_proxies_steps_not_the_encoders():
    data = golden("cosface_default")
    proxies_1, kernel_1 = _train_proxies(data, "adam", 1e-3, 1.0, 1, False)
    proxies_10, kernel_10 = _train_proxies(data, "adam", 1e-3, 10.0, 1, False)
    step_1, step_10 = proxies_1 - data["proxies"], proxies_10 - data["proxies"]
    assert np.abs(step_1).max() > 1e-5
    np.testing.assert_allclose(step_10, 10.0 * step_1, rtol=2e-3, atol=1e-6)
    np.testing.assert_allclose(kernel_10, kernel_1, rtol=1e-5, atol=1e-7)


@pytest.mark.parametrize("optimizer", ["sgd", "adam"])
def test_lr_multiplier_equals_a_larger_learning_rate(optimizer):
    """Over several steps: multiplier m at rate r is rate m * r (encoder frozen)."""
    data = golden("cosface_default")
    scaled, _ = _train_proxies(data, optimizer, 1e-3, 10.0, 3, True)
    faster, _ = _train_proxies(data, optimizer, 1e-2, 1.0, 3, True)
    np.testing.assert_allclose(scaled, faster, rtol=1e-4, atol=1e-6)
    assert np.abs(scaled - data["proxies"]).max() > 1e-4


@pytest.mark.skipif(
    keras.backend.backend() != "torch", reason="PyTorch Metric Learning runs on torch"
)
@given(
    seed=st.integers(0, 2**16),
    which=st.sampled_from(["arcface", "subcenter", "cosface", "proxy_anchor"]),
    margin_scale=st.sampled_from([None, (5.0, 8.0), (0.3, 20.0)]),
)
def test_matches_pytorch_metric_learning_live(seed, which, margin_scale):
    pml = pytest.importorskip("pytorch_metric_learning.losses")
    import torch

    rng = np.random.default_rng(seed)
    size, dim, classes = 10, 4, 3
    sub_centers = 3 if which == "subcenter" else 1
    x = rng.normal(size=(size, dim)).astype("float32")
    labels = rng.integers(0, classes, size)
    proxies = rng.normal(size=(classes * sub_centers, dim)).astype("float32")
    names = {
        "arcface": ("ArcFaceLoss", ("margin", "scale")),
        "subcenter": ("SubCenterArcFaceLoss", ("margin", "scale")),
        "cosface": ("CosFaceLoss", ("margin", "scale")),
        "proxy_anchor": ("ProxyAnchorLoss", ("margin", "alpha")),
    }
    pml_name, keys = names[which]
    kwargs = {} if margin_scale is None else dict(zip(keys, margin_scale))
    reference = getattr(pml, pml_name)(
        num_classes=classes, embedding_size=dim, **kwargs
    )
    weight = reference.proxies if which == "proxy_anchor" else reference.W
    with torch.no_grad():
        weight.copy_(
            torch.from_numpy(proxies if which == "proxy_anchor" else proxies.T)
        )
    x_reference = torch.tensor(x, requires_grad=True)
    want = reference(x_reference, torch.from_numpy(labels))
    want.backward()

    case = {
        "loss": which.replace("subcenter", "arcface"),
        "kwargs": kwargs,
        "sub_centers": sub_centers,
    }
    data = {"embeddings": x, "labels": labels, "proxies": proxies}
    value, embedding_gradient, proxy_gradient = through_head(case, data)
    pml_proxy_gradient = weight.grad.numpy()
    if which != "proxy_anchor":
        pml_proxy_gradient = pml_proxy_gradient.T
    np.testing.assert_allclose(value, want.item(), rtol=2e-5, atol=1e-5)
    np.testing.assert_allclose(
        embedding_gradient, x_reference.grad.numpy(), rtol=1e-3, atol=2e-5
    )
    np.testing.assert_allclose(proxy_gradient, pml_proxy_gradient, rtol=1e-3, atol=2e-5)


# --- the functional forms against NumPy ---------------------------------------


@st.composite
def labelled_cosines(draw):
    # One shape, so that JAX compiles each operation once; one class or four.
    rng = np.random.default_rng(draw(st.integers(0, 2**32 - 1)))
    cos = rng.uniform(-1, 1, size=(6, 4)).astype("float32")
    labels = rng.integers(0, draw(st.sampled_from([1, 4])), 6)
    if draw(st.booleans()):
        cos[:, 0] = draw(st.sampled_from([-1.0, 1.0, 0.0]))  # the ends and ties
    return labels, cos


@pytest.mark.parametrize("name", sorted(NP_LOSSES))
@given(data=labelled_cosines(), which=st.integers(0, 2))
def test_functions_match_numpy(name, data, which):
    labels, cos = data
    kwargs = [
        {},
        {
            "arcface": {"margin": 60.0, "scale": 4.0},
            "cosface": {"margin": 0.5, "scale": 4.0},
            "proxy_anchor": {"margin": 0.3, "alpha": 4.0},
        }[name],
        {
            "arcface": {"margin": 0.0, "scale": 1.0},
            "cosface": {"margin": 0.0, "scale": 1.0},
            "proxy_anchor": {"margin": 0.0, "alpha": 1.0},
        }[name],
    ][which]
    got = function_value(name, labels, cos, **kwargs)
    want = NP_LOSSES[name](labels, cos, **kwargs)
    np.testing.assert_allclose(got, want, rtol=1e-4, atol=1e-4)


@pytest.mark.parametrize("name", sorted(NP_LOSSES))
def test_gradient_matches_finite_differences(name):
    rng = np.random.default_rng(4)
    labels = np.array([0, 1, 2, 0, 1])
    cos = rng.uniform(-0.9, 0.9, size=(5, 3))
    cos[0, 0] = -0.95  # ArcFace's linear branch

    def fn(c):
        return keras.ops.mean(FUNCTIONS[name](labels, c))

    _, (grad,) = value_and_grad(fn, cos.astype("float32"))
    want = np.zeros_like(cos)
    for index in np.ndindex(cos.shape):
        up, down = cos.copy(), cos.copy()
        up[index] += 1e-6
        down[index] -= 1e-6
        want[index] = (
            NP_LOSSES[name](labels, up) - NP_LOSSES[name](labels, down)
        ) / 2e-6
    np.testing.assert_allclose(grad, want, rtol=2e-3, atol=1e-4)


def test_zero_margin_arcface_and_cosface_are_scaled_softmax():
    rng = np.random.default_rng(1)
    cos = rng.uniform(-1, 1, size=(6, 4)).astype("float32")
    labels = rng.integers(0, 4, 6)
    softmax = keras.losses.SparseCategoricalCrossentropy(from_logits=True)
    want = float(softmax(labels, 16.0 * cos))
    for loss in (
        ArcFaceLoss(margin=0.0, scale=16.0),
        CosFaceLoss(margin=0.0, scale=16.0),
    ):
        assert float(loss(labels, cos)) == pytest.approx(want, rel=1e-5)


def test_sub_centers_give_each_class_its_closest_proxy():
    head = CosineProxies(2, sub_centers=3)
    head.build((None, 2))
    angles = np.radians([0, 90, 180, 45, 135, 270])
    proxies = np.stack([np.cos(angles), np.sin(angles)], 1).astype("float32")
    head.set_weights([proxies])
    x = np.array([[1.0, 0.0], [0.0, -1.0]], "float32")
    want = np_cosines(x, proxies, 3)
    np.testing.assert_allclose(to_numpy(head(x)), want, atol=1e-6)
    np.testing.assert_allclose(
        want, [[1.0, np.cos(np.radians(45))], [0.0, 1.0]], atol=1e-6
    )


# --- degenerate batches and precision -----------------------------------------


@pytest.mark.parametrize("name", sorted(LOSS_CLASSES))
@pytest.mark.parametrize(
    "kind", ["one-class", "duplicates", "zero-vectors", "zero-proxy"]
)
def test_degenerate_batches_are_finite(name, kind):
    rng = np.random.default_rng(2)
    x = rng.normal(size=(12, 6)).astype("float32")  # the goldens' shapes
    labels = np.arange(12) % 5
    proxies = rng.normal(size=(5, 6)).astype("float32")
    if kind == "one-class":
        labels = np.zeros(12, "int64")
    elif kind == "duplicates":
        x[:] = x[0]
        proxies[:] = x[0]
    elif kind == "zero-vectors":
        x[:5] = 0.0
    else:
        proxies[1] = 0.0
    case = {"loss": name, "kwargs": {}, "sub_centers": 1}
    data = {"embeddings": x, "labels": labels, "proxies": proxies}
    value, embedding_gradient, proxy_gradient = through_head(case, data)
    assert np.isfinite(value)
    assert np.all(np.isfinite(embedding_gradient))
    assert np.all(np.isfinite(proxy_gradient))


@pytest.mark.parametrize("name", sorted(LOSS_CLASSES))
@pytest.mark.parametrize("policy", ["mixed_float16", "mixed_bfloat16"])
def test_half_precision_is_finite_and_close(name, policy):
    data = golden(f"{'proxy_anchor' if name == 'proxy_anchor' else name}_default")
    want = float(data["loss"])
    keras.config.set_dtype_policy(policy)
    head = CosineProxies(len(data["proxies"]), dtype="float32")
    head.build((None, data["embeddings"].shape[1]))
    head.set_weights([data["proxies"]])
    x = keras.ops.cast(
        data["embeddings"] * 100.0, keras.config.dtype_policy().compute_dtype
    )
    value = to_numpy(LOSS_CLASSES[name]()(data["labels"], head(x)))
    half_head = CosineProxies(len(data["proxies"]))
    half_head.build((None, data["embeddings"].shape[1]))
    half_head.set_weights([data["proxies"]])
    half_value = to_numpy(LOSS_CLASSES[name]()(data["labels"], half_head(x)))
    keras.config.set_dtype_policy("float32")
    assert value.dtype == np.float32 and np.all(np.isfinite(half_value))
    tolerance = 5e-2 if policy == "mixed_bfloat16" else 5e-3
    np.testing.assert_allclose(float(np.squeeze(value)), want, rtol=tolerance)


# --- training, saving and loading --------------------------------------------


def _proxy_model(loss_name: str, sub_centers: int = 1):
    keras.utils.set_random_seed(0)
    encoder = keras.Sequential(
        [
            keras.Input((6,)),
            keras.layers.Dense(8, activation="tanh"),
            keras.layers.Dense(4),
        ],
        name="encoder",
    )
    initializer = "he_normal" if loss_name == "proxy_anchor" else None
    head = CosineProxies(
        4, sub_centers=sub_centers, initializer=initializer, lr_multiplier=10.0
    )
    model = keras.Sequential([encoder, head])
    model.compile(optimizer=keras.optimizers.Adam(1e-2), loss=LOSS_CLASSES[loss_name]())
    return encoder, head, model


def _blobs(n=64, seed=0):
    rng = np.random.default_rng(seed)
    y = np.repeat(np.arange(4), n // 4)
    x = rng.normal(size=(4, 6))[y] * 2 + 0.5 * rng.normal(size=(n, 6))
    return x.astype("float32"), y


@pytest.mark.slow
@pytest.mark.parametrize(
    ("loss_name", "sub_centers"),
    [("arcface", 1), ("arcface", 3), ("proxy_anchor", 1)],
    ids=["arcface", "subcenter-arcface", "proxy-anchor"],
)
def test_fit_then_reload_in_safe_mode(loss_name, sub_centers, tmp_path):
    x, y = _blobs()
    encoder, head, model = _proxy_model(loss_name, sub_centers)
    history = model.fit(x, y, batch_size=16, epochs=3, verbose=0, shuffle=False)
    losses = history.history["loss"]
    assert np.all(np.isfinite(losses)) and losses[-1] < losses[0]
    path = tmp_path / "proxies.keras"
    model.save(path)
    restored = keras.saving.load_model(path, safe_mode=True)
    restored_head = restored.layers[-1]
    assert isinstance(restored_head, CosineProxies)
    assert restored_head.get_config() == head.get_config()
    np.testing.assert_allclose(
        to_numpy(restored_head.proxies), to_numpy(head.proxies), rtol=1e-6
    )
    np.testing.assert_allclose(
        restored.predict(x, verbose=0),
        model.predict(x, verbose=0),
        rtol=1e-5,
        atol=1e-6,
    )
    np.testing.assert_allclose(
        restored.layers[0].predict(x, verbose=0),
        encoder.predict(x, verbose=0),
        rtol=1e-5,
        atol=1e-6,
    )
    assert isinstance(restored.loss, LOSS_CLASSES[loss_name])


# --- configuration and errors --------------------------------------------------


@pytest.mark.parametrize(
    ("cls", "kwargs"),
    [
        (ArcFaceLoss, {"margin": 10.0, "scale": 30.0}),
        (CosFaceLoss, {"margin": 0.2, "scale": 30.0}),
        (ProxyAnchorLoss, {"margin": 0.2, "alpha": 16.0}),
    ],
)
def test_loss_config_round_trip(cls, kwargs):
    loss = cls(**kwargs)
    config = loss.get_config()
    for key, value in kwargs.items():
        assert config[key] == value
    restored = keras.saving.deserialize_keras_object(
        keras.saving.serialize_keras_object(loss)
    )
    assert isinstance(restored, cls) and restored.get_config() == config


def test_layer_config_round_trip():
    head = CosineProxies(7, sub_centers=2, initializer="he_normal", lr_multiplier=5.0)
    config = head.get_config()
    clone = CosineProxies.from_config(config)
    assert clone.get_config() == config
    assert (clone.num_classes, clone.sub_centers, clone.lr_multiplier) == (7, 2, 5.0)


def test_pml_default_initialisation_scale():
    head = CosineProxies(50)
    head.build((None, 64))
    assert np.std(to_numpy(head.proxies)) == pytest.approx(1.0, rel=0.05)
    scaled = CosineProxies(50, lr_multiplier=10.0)
    scaled.build((None, 64))
    assert np.std(to_numpy(scaled.proxies)) == pytest.approx(1.0, rel=0.05)
    assert np.std(to_numpy(scaled.weights[0])) == pytest.approx(0.1, rel=0.05)
    kaiming = CosineProxies(50, initializer="he_normal")
    kaiming.build((None, 64))
    assert np.std(to_numpy(kaiming.proxies)) == pytest.approx(
        math.sqrt(2 / 50), rel=0.05
    )


@pytest.mark.parametrize(
    ("make", "error", "match"),
    [
        (lambda: ArcFaceLoss(margin=-1.0), ValueError, "margin"),
        (lambda: ArcFaceLoss(margin=200.0), ValueError, "margin"),
        (lambda: ArcFaceLoss(scale=0.0), ValueError, "scale"),
        (lambda: CosFaceLoss(margin=float("nan")), ValueError, "margin"),
        (lambda: CosFaceLoss(scale="64"), TypeError, "scale"),
        (lambda: ProxyAnchorLoss(alpha=-1.0), ValueError, "alpha"),
        (lambda: ProxyAnchorLoss(margin=-0.1), ValueError, "margin"),
        (lambda: CosineProxies(0), ValueError, "num_classes"),
        (lambda: CosineProxies(2.5), TypeError, "num_classes"),
        (lambda: CosineProxies(3, sub_centers=0), ValueError, "sub_centers"),
        (lambda: CosineProxies(3, lr_multiplier=0.0), ValueError, "lr_multiplier"),
        (lambda: CosineProxies(3, lr_multiplier=True), TypeError, "lr_multiplier"),
    ],
)
def test_bad_arguments_raise(make, error, match):
    with pytest.raises(error, match=match):
        make()


@pytest.mark.parametrize("name", sorted(LOSS_CLASSES))
def test_labels_outside_the_classes(name):
    cos = np.array([[0.5, 0.1], [0.2, 0.3]], "float32")
    with pytest.raises(ValueError, match="labels"):
        LOSS_CLASSES[name]()(np.array([0, 2]), cos)
    with pytest.raises(ValueError, match="labels"):
        FUNCTIONS[name](np.array([0, -1]), cos)
    # Tensor labels cannot be read inside a compiled step: the loss is NaN.
    value = to_numpy(FUNCTIONS[name](keras.ops.convert_to_tensor([0, 2]), cos))
    assert np.isnan(value).any()


def test_wrong_shapes_raise():
    with pytest.raises(ValueError, match="similarities"):
        arcface_loss(np.zeros(2), np.zeros((2, 3, 1), "float32"))
    with pytest.raises(ValueError, match="batch size"):
        cosface_loss(np.zeros(3), np.zeros((2, 3), "float32"))
    with pytest.raises(ValueError, match="sample_weight"):
        ProxyAnchorLoss()(np.zeros(2), np.zeros((2, 3), "float32"), np.ones(2))
    with pytest.raises(ValueError, match="dim"):
        CosineProxies(3)(np.zeros((2, 3, 4), "float32"))
