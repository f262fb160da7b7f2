"""The self-supervised models: SimSiam, BarlowTwins, VICReg and SimCLR."""

from __future__ import annotations

import inspect
import os

import keras
import numpy as np
import pytest

import keras_siamese
from keras_siamese import (
    BYOL,
    BarlowTwins,
    BarlowTwinsLoss,
    BYOLLoss,
    ClassBalancedDataset,
    NegativeCosineSimilarity,
    NTXentLoss,
    SimCLR,
    SimSiam,
    VICReg,
    VICRegLoss,
)
from tests import lightly_reference

FEATURES = 6
SMALL = {
    "SimSiam": (
        SimSiam,
        {"projection_hidden_dim": 12, "projection_dim": 5, "prediction_hidden_dim": 3},
    ),
    "BarlowTwins": (BarlowTwins, {"projection_hidden_dim": 12, "projection_dim": 5}),
    "VICReg": (
        VICReg,
        {"projection_hidden_dim": 12, "projection_dim": 5, "projection_layers": 3},
    ),
    "BYOL": (
        BYOL,
        {
            "momentum_steps": 20,
            "projection_hidden_dim": 12,
            "projection_dim": 5,
            "prediction_hidden_dim": 12,
        },
    ),
    "SimCLR": (
        SimCLR,
        {"projection_hidden_dim": 12, "projection_dim": 5, "projection_layers": 3},
    ),
}
DEFAULT_LOSS = {
    "SimSiam": NegativeCosineSimilarity,
    "BarlowTwins": BarlowTwinsLoss,
    "VICReg": VICRegLoss,
    "SimCLR": NTXentLoss,
    "BYOL": BYOLLoss,
}
NAMES = list(SMALL)


def encoder():
    return keras.Sequential(
        [keras.Input((4,)), keras.layers.Dense(FEATURES, activation="relu")],
        name="encoder",
    )


def make(name, **overrides):
    cls, kwargs = SMALL[name]
    return cls(encoder(), **{**kwargs, **overrides})


def jitter(batch, seed):
    rng = np.random.default_rng(seed)
    return batch + rng.normal(0.0, 0.1, size=batch.shape).astype(batch.dtype)


def views_dataset(examples=64, per_batch=16, seed=0):
    x = np.random.default_rng(seed).normal(size=(examples, 4)).astype("float32")
    # Every example is its own class: a label-free two-view dataset.
    return ClassBalancedDataset(
        x, np.arange(examples), per_batch, 1, views=2, augment=jitter, seed=seed
    )


@pytest.mark.parametrize("name", NAMES)
def test_fit_decreases_the_loss(name):
    keras.utils.set_random_seed(0)
    model = make(name)
    # Compiled where the backend compiles (TensorFlow's "auto" does not on CPU).
    jit = keras.backend.backend() != "torch"
    model.compile(optimizer=keras.optimizers.Adam(1e-2), jit_compile=jit)
    assert model.jit_compile is jit
    assert isinstance(model.loss, DEFAULT_LOSS[name])
    before = model.get_layer("encoder").get_weights()[0].copy()
    history = model.fit(views_dataset(), epochs=8, verbose=0)
    losses = history.history["loss"]
    assert np.all(np.isfinite(losses))
    assert losses[-1] < losses[0] - 0.02 * abs(losses[0]), losses
    # The trained encoder is the model's, with its weights changed.
    assert not np.allclose(model.encoder.get_weights()[0], before)


@pytest.mark.parametrize("name", NAMES)
def test_output_layout(name):
    keras.utils.set_random_seed(1)
    model = make(name)
    x = np.random.default_rng(1).normal(size=(10, 4)).astype("float32")
    out = keras.ops.convert_to_numpy(model(x, training=False))
    z = model.projector(model.encoder(x, training=False), training=False)
    if name == "SimSiam":
        assert out.shape == (10, 2, 5)
        p = model.predictor(z, training=False)
        np.testing.assert_allclose(out[:, 0], keras.ops.convert_to_numpy(p), atol=1e-6)
        np.testing.assert_allclose(out[:, 1], keras.ops.convert_to_numpy(z), atol=1e-6)
    elif name == "BYOL":
        assert out.shape == (10, 2, 5)
        p = model.predictor(z, training=False)
        t = model.target_projector(
            model.target_encoder(x, training=False), training=False
        )
        np.testing.assert_allclose(out[:, 0], keras.ops.convert_to_numpy(p), atol=1e-6)
        np.testing.assert_allclose(out[:, 1], keras.ops.convert_to_numpy(t), atol=1e-6)
    else:
        assert out.shape == (10, 5)
        np.testing.assert_allclose(out, keras.ops.convert_to_numpy(z), atol=1e-6)
    # The default loss takes the output as it is.
    loss = DEFAULT_LOSS[name]()
    labels = np.tile(np.arange(5), 2)
    assert np.isfinite(float(keras.ops.convert_to_numpy(loss(labels, out))))


def ntxent_reference(embeddings, temperature):
    """SimCLR's loss in NumPy: each view against the other and all other rows."""
    unit = embeddings / np.linalg.norm(embeddings, axis=1, keepdims=True)
    logits = unit @ unit.T / temperature
    rows = len(unit)
    np.fill_diagonal(logits, -np.inf)
    partner = (np.arange(rows) + rows // 2) % rows
    log_softmax = logits - np.log(np.exp(logits).sum(axis=1, keepdims=True))
    return -np.mean(log_softmax[np.arange(rows), partner])


def test_simclr_pairs_the_two_views_of_every_example_whatever_the_targets():
    keras.utils.set_random_seed(3)
    linear = keras.Sequential([keras.Input((4,)), keras.layers.Dense(FEATURES)])
    model = SimCLR(linear, projection_hidden_dim=64, projection_dim=5)
    model.compile(optimizer="sgd")
    x = np.random.default_rng(3).normal(size=(12, 4)).astype("float32")
    embeddings = model.predict(x, verbose=0).astype("float64")
    assert np.all(np.linalg.norm(embeddings, axis=1) > 1e-3)
    expected = ntxent_reference(embeddings, 0.5)
    for targets in (np.zeros(12), np.arange(12), np.tile(np.arange(6), 2)):
        got = model.evaluate(x, targets, verbose=0, batch_size=12)
        np.testing.assert_allclose(got, expected, rtol=1e-4)
    np.testing.assert_allclose(
        model.evaluate(x, verbose=0, batch_size=12), expected, rtol=1e-4
    )


def test_head_structure():
    model = make("SimSiam")
    model(np.zeros((4, 4), "float32"))
    kinds = [type(layer).__name__ for layer in model.projector.layers]
    assert kinds == ["Dense", "BatchNormalization", "ReLU"] * 2 + [
        "Dense",
        "BatchNormalization",
    ]
    last = model.projector.layers[-1]
    assert not last.center and not last.scale
    assert [type(layer).__name__ for layer in model.predictor.layers] == [
        "Dense",
        "BatchNormalization",
        "ReLU",
        "Dense",
    ]
    plain = make("SimCLR", batch_norm=False, projection_layers=2)
    assert [type(layer).__name__ for layer in plain.projector.layers] == [
        "Dense",
        "ReLU",
        "Dense",
    ]


@pytest.mark.parametrize("name", NAMES)
def test_save_reload_predicts_and_trains_identically(name, tmp_path):
    keras.utils.set_random_seed(2)
    model = make(name)
    model.compile(
        optimizer=keras.optimizers.Adam(1e-2),
        jit_compile=keras.backend.backend() != "torch",
    )
    dataset = views_dataset(examples=32)
    model.fit(dataset, epochs=1, verbose=0)
    path = os.fspath(tmp_path / "model.keras")
    model.save(path)
    reloaded = keras.models.load_model(path, safe_mode=True)
    assert type(reloaded) is type(model)
    assert isinstance(reloaded.loss, DEFAULT_LOSS[name])
    x, y = dataset[1]
    np.testing.assert_array_equal(
        model.predict(x, verbose=0), reloaded.predict(x, verbose=0)
    )
    np.testing.assert_array_equal(
        keras.ops.convert_to_numpy(model.encoder(x)),
        keras.ops.convert_to_numpy(reloaded.encoder(x)),
    )
    first = model.train_on_batch(x, y)
    second = reloaded.train_on_batch(x, y)
    np.testing.assert_allclose(first, second, rtol=1e-6, atol=1e-7)
    assert len(model.get_weights()) == len(reloaded.get_weights())
    for a, b in zip(model.get_weights(), reloaded.get_weights()):
        np.testing.assert_allclose(a, b, rtol=1e-6, atol=1e-7)
    # The step moved the weights, so the comparison above can fail.
    assert any(
        not np.allclose(a, b)
        for a, b in zip(
            model.get_weights(), keras.models.load_model(path).get_weights()
        )
    )


@pytest.mark.parametrize("name", NAMES)
def test_config_round_trip(name):
    model = make(name)
    config = model.get_config()
    clone = type(model).from_config(config)
    assert clone.get_config() == config
    assert clone.encoder is not model.encoder
    restored = keras.saving.deserialize_keras_object(
        keras.saving.serialize_keras_object(model)
    )
    assert type(restored) is type(model)
    assert restored.get_config() == config
    for key, value in SMALL[name][1].items():
        assert config[key] == value


@pytest.mark.parametrize("name", NAMES)
def test_a_given_loss_replaces_the_default(name):
    model = make(name)
    model.compile(optimizer="sgd", loss=NTXentLoss(temperature=0.2))
    assert isinstance(model.loss, NTXentLoss)
    assert model.loss.temperature == 0.2


@pytest.mark.parametrize("name", NAMES)
def test_bad_arguments_are_refused_by_name(name):
    cls, kwargs = SMALL[name]
    with pytest.raises(TypeError, match="encoder"):
        cls("resnet", **kwargs)
    for argument in kwargs:
        with pytest.raises(ValueError, match=argument):
            make(name, **{argument: 0})
        with pytest.raises(TypeError, match=argument):
            make(name, **{argument: 2.5})
    flat = keras.Sequential([keras.Input((3, 4)), keras.layers.Dense(FEATURES)])
    with pytest.raises(ValueError, match="encoder"):
        cls(flat, **kwargs)(np.zeros((2, 3, 4), "float32"))


@pytest.mark.parametrize("name", ["VICReg", "SimCLR", "BYOL"])
def test_a_head_needs_two_layers(name):
    with pytest.raises(ValueError, match="projection_layers"):
        make(name, projection_layers=1)


@pytest.mark.parametrize("norm", [None, "affine", "plain"])
def test_byol_projection_head_options_shape_both_networks(norm, tmp_path):
    model = make("BYOL", projection_layers=3, projection_output_norm=norm)
    model(np.zeros((4, 4), "float32"))
    want = ["Dense", "BatchNormalization", "ReLU"] * 2 + ["Dense"]
    if norm is not None:
        want.append("BatchNormalization")
    for head in (model.projector, model.target_projector):
        assert [type(layer).__name__ for layer in head.layers] == want
        last = head.layers[-1]
        if norm is None:
            assert last.use_bias
        else:
            assert last.center == last.scale == (norm == "affine")
    config = model.get_config()
    assert config["projection_layers"] == 3
    assert config["projection_output_norm"] == norm
    model.compile(optimizer="sgd")
    x, y = views_dataset(examples=16)[0]
    model.fit(x, y, epochs=1, verbose=0)
    path = os.fspath(tmp_path / "byol.keras")
    model.save(path)
    reloaded = keras.models.load_model(path, safe_mode=True)
    assert reloaded.get_config()["projection_output_norm"] == norm
    np.testing.assert_array_equal(
        model.predict(x, verbose=0), reloaded.predict(x, verbose=0)
    )


@pytest.mark.parametrize("norm", ["batch", "", 1])
def test_byol_projection_output_norm_is_checked(norm):
    with pytest.raises(ValueError, match="projection_output_norm"):
        make("BYOL", projection_output_norm=norm)


def test_batch_norm_must_be_a_bool():
    with pytest.raises(TypeError, match="batch_norm"):
        make("SimCLR", batch_norm="yes")


def test_exported_at_top_level():
    for name in NAMES:
        assert getattr(keras_siamese, name) is SMALL[name][0]
        assert name in keras_siamese.__all__


# lightly's heads, for the published default sizes and the layer structure.
LIGHTLY_HEADS = {
    "SimSiam": [
        (
            "SimSiamProjectionHead",
            {"hidden_dim": "projection_hidden_dim", "output_dim": "projection_dim"},
        ),
        ("SimSiamPredictionHead", {"hidden_dim": "prediction_hidden_dim"}),
    ],
    "BarlowTwins": [
        (
            "BarlowTwinsProjectionHead",
            {"hidden_dim": "projection_hidden_dim", "output_dim": "projection_dim"},
        ),
    ],
    "VICReg": [
        (
            "VICRegProjectionHead",
            {
                "hidden_dim": "projection_hidden_dim",
                "output_dim": "projection_dim",
                "num_layers": "projection_layers",
            },
        ),
    ],
    "BYOL": [
        (
            "BYOLProjectionHead",
            {"hidden_dim": "projection_hidden_dim", "output_dim": "projection_dim"},
        ),
        (
            "BYOLPredictionHead",
            {"hidden_dim": "prediction_hidden_dim", "output_dim": "projection_dim"},
        ),
    ],
    "SimCLR": [
        (
            "SimCLRProjectionHead",
            {
                "hidden_dim": "projection_hidden_dim",
                "output_dim": "projection_dim",
                "num_layers": "projection_layers",
                "batch_norm": "batch_norm",
            },
        ),
    ],
}


def lightly_heads():
    try:
        return lightly_reference.load(
            "models/modules/heads.py",
            stubs={"lightly": {}, "lightly.models": {"utils": None}},
        )
    except ModuleNotFoundError:
        pytest.skip("lightly (and PyTorch) are installed in the torch environment only")


@pytest.mark.parametrize("name", NAMES)
def test_default_sizes_are_lightlys(name):
    heads = lightly_heads()
    ours = inspect.signature(SMALL[name][0]).parameters
    for head, arguments in LIGHTLY_HEADS[name]:
        theirs = inspect.signature(getattr(heads, head)).parameters
        for their_name, our_name in arguments.items():
            assert ours[our_name].default == theirs[their_name].default, (
                head,
                their_name,
            )


@pytest.mark.parametrize(
    ("name", "extra"),
    [(name, {}) for name in NAMES] + [("SimCLR", {"batch_norm": False})],
)
def test_weights_have_lightlys_shapes(name, extra):
    heads = lightly_heads()
    model = make(name, **extra)
    model(np.zeros((4, 4), "float32"))
    sizes = {"batch_norm": True, **SMALL[name][1], **extra}
    ours = [model.projector] + (
        [model.predictor] if name in ("SimSiam", "BYOL") else []
    )
    for layer, (head, arguments) in zip(ours, LIGHTLY_HEADS[name]):
        kwargs = {their: sizes[our] for their, our in arguments.items()}
        if head in ("SimSiamPredictionHead", "BYOLPredictionHead"):
            kwargs.update(
                input_dim=sizes["projection_dim"], output_dim=sizes["projection_dim"]
            )
        else:
            kwargs["input_dim"] = FEATURES
        module = getattr(heads, head)(**kwargs)
        # PyTorch stores a Linear layer's weight transposed.
        theirs = [
            tuple(p.shape)[::-1] if p.ndim == 2 else tuple(p.shape)
            for p in module.parameters()
        ]
        assert [tuple(w.shape) for w in layer.trainable_weights] == theirs
        buffers = [tuple(b.shape) for b in module.buffers() if b.ndim == 1]
        assert [tuple(w.shape) for w in layer.non_trainable_weights] == buffers


def cosine_momentum(step, steps, start, end):
    """The momentum schedule, from its definition (lightly's `cosine_schedule`)."""
    if steps <= 1 or step >= steps - 1:
        return end
    return end - (end - start) * (np.cos(np.pi * step / (steps - 1)) + 1) / 2


def numpy_weights(variables):
    return [keras.ops.convert_to_numpy(v).copy() for v in variables]


def test_byol_target_follows_the_online_network_step_by_step():
    keras.utils.set_random_seed(4)
    model = make("BYOL", momentum_steps=5, start_momentum=0.9)
    model.compile(optimizer=keras.optimizers.SGD(0.1))
    x, y = views_dataset(examples=16, per_batch=8)[0]
    model(x)
    pairs = [(t, o) for t, o in model._pairs() if o.trainable]
    assert all(not t.trainable for t, _ in pairs)
    for t, o in pairs:
        np.testing.assert_array_equal(*numpy_weights([t, o]))
    moved = 0.0
    for step in range(7):
        targets = numpy_weights([t for t, _ in pairs])
        online = numpy_weights([o for _, o in pairs])
        model.train_on_batch(x, y)
        m = cosine_momentum(step, 5, 0.9, 1.0)
        for t_before, o_before, (t, o) in zip(targets, online, pairs):
            np.testing.assert_allclose(
                keras.ops.convert_to_numpy(t),
                m * t_before + (1 - m) * o_before,
                rtol=1e-5,
                atol=1e-6,
            )
            moved = max(
                moved, float(np.abs(keras.ops.convert_to_numpy(o) - o_before).max())
            )
        assert int(keras.ops.convert_to_numpy(model.momentum_step)) == step + 1
    # The online network trained, so the comparisons above could fail.
    assert moved > 1e-4
    # Inference leaves the target and the step alone.
    before = numpy_weights(model.non_trainable_weights)
    model.predict(x, verbose=0)
    for a, b in zip(before, numpy_weights(model.non_trainable_weights)):
        np.testing.assert_array_equal(a, b)


def test_byol_target_is_not_trained():
    model = make("BYOL")
    model(np.zeros((4, 4), "float32"))
    target = {
        id(v) for v in model.target_encoder.weights + model.target_projector.weights
    }
    assert not target & {id(v) for v in model.trainable_weights}
    assert target <= {id(v) for v in model.non_trainable_weights}
    online = model.encoder.trainable_weights + model.projector.trainable_weights
    assert len(model.trainable_weights) == len(online) + len(
        model.predictor.trainable_weights
    )
    # Freezing and unfreezing the model leaves the target out of training.
    model.trainable = False
    assert not model.trainable_weights
    model.trainable = True
    assert not target & {id(v) for v in model.trainable_weights}
    assert len(model.trainable_weights) == len(online) + len(
        model.predictor.trainable_weights
    )
    assert model.target_projector.trainable


def test_byol_momentum_schedule_is_lightlys():
    try:
        scheduler = lightly_reference.load("utils/scheduler.py")
    except ModuleNotFoundError:
        pytest.skip("lightly is installed in the torch environment only")
    model = make("BYOL", momentum_steps=9)
    for step in range(12):
        expected = scheduler.cosine_schedule(min(step, 9), 9, 0.99, 1.0)
        got = float(keras.ops.convert_to_numpy(model.momentum(step)))
        np.testing.assert_allclose(got, expected, rtol=0, atol=1e-7)
        assert cosine_momentum(step, 9, 0.99, 1.0) == pytest.approx(expected, abs=1e-12)


def test_byol_momenta_are_checked():
    with pytest.raises(ValueError, match="start_momentum"):
        make("BYOL", start_momentum=1.5)
    with pytest.raises(ValueError, match="end_momentum"):
        make("BYOL", end_momentum=-0.1)
    with pytest.raises(ValueError, match="start_momentum"):
        make("BYOL", start_momentum=0.999, end_momentum=0.99)
    with pytest.raises(TypeError, match="momentum_steps"):
        BYOL(encoder())
