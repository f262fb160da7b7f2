"""Models built from the layers save to `.keras` and reload in safe mode."""

import json
import zipfile

import keras
import numpy as np
import pytest

from keras_siamese import (
    CosineDistance,
    EuclideanDistance,
    ManhattanDistance,
    SiameseWrapper,
)


def mlp_encoder():
    return keras.Sequential(
        [
            keras.Input((6,)),
            keras.layers.Dense(8, activation="relu"),
            keras.layers.Dense(4),
        ]
    )


def lstm_encoder():
    return keras.Sequential(
        [keras.Input((6,)), keras.layers.Reshape((3, 2)), keras.layers.LSTM(4)]
    )


ENCODERS = {"mlp": mlp_encoder, "lstm": lstm_encoder}


def pair_model(encoder):
    inputs = [keras.Input((6,)), keras.Input((6,))]
    return keras.Model(
        inputs, SiameseWrapper(encoder, merge=EuclideanDistance())(inputs)
    )


def triplet_model(encoder):
    inputs = [keras.Input((6,)) for _ in range(3)]
    return keras.Model(inputs, SiameseWrapper(encoder, merge="stack")(inputs))


@pytest.mark.parametrize("encoder_name", sorted(ENCODERS))
@pytest.mark.parametrize("build", [pair_model, triplet_model], ids=["pair", "triplet"])
def test_keras_round_trip_in_safe_mode(tmp_path, encoder_name, build):
    model = build(ENCODERS[encoder_name]())
    model.compile(optimizer="adam", loss="mse")
    rng = np.random.default_rng(0)
    xs = [rng.normal(size=(5, 6)).astype("float32") for _ in model.inputs]
    target = np.zeros_like(model.predict(xs, verbose=0))
    model.fit(xs, target, epochs=1, verbose=0)  # weights differ from a fresh init
    path = tmp_path / "model.keras"
    model.save(path)
    restored = keras.saving.load_model(path)  # no custom_objects, safe_mode=True
    np.testing.assert_allclose(
        restored.predict(xs, verbose=0),
        model.predict(xs, verbose=0),
        rtol=1e-6,
        atol=1e-6,
    )
    assert len(restored.trainable_weights) == len(model.trainable_weights)
    wrapper = next(
        layer for layer in restored.layers if isinstance(layer, SiameseWrapper)
    )
    assert len(wrapper.trainable_weights) == len(wrapper.layer.trainable_weights)


def test_saved_config_names_the_package(tmp_path):
    path = tmp_path / "model.keras"
    pair_model(mlp_encoder()).save(path)
    with zipfile.ZipFile(path) as archive:
        config = json.loads(archive.read("config.json"))
    text = json.dumps(config)
    assert '"keras_siamese>SiameseWrapper"' in text
    assert '"keras_siamese>EuclideanDistance"' in text


@pytest.mark.parametrize(
    "layer",
    [
        EuclideanDistance(squared=True, epsilon=1e-6, name="d"),
        EuclideanDistance(),
        CosineDistance(name="cos"),
        ManhattanDistance(),
    ],
    ids=["euclid-options", "euclid", "cosine", "manhattan"],
)
def test_distance_layer_config_round_trip(layer):
    config = layer.get_config()
    clone = type(layer).from_config(config)
    assert clone.get_config() == config
    revived = keras.saving.deserialize_keras_object(
        keras.saving.serialize_keras_object(layer)
    )
    assert type(revived) is type(layer)
    assert revived.get_config() == config


@pytest.mark.parametrize("merge", [None, "stack", "concat", ManhattanDistance()])
def test_wrapper_config_round_trip(merge):
    wrapper = SiameseWrapper(
        mlp_encoder(), merge=merge, fuse_branches=True, name="twins"
    )
    clone = SiameseWrapper.from_config(wrapper.get_config())
    serialized = keras.saving.serialize_keras_object(wrapper)
    assert keras.saving.serialize_keras_object(clone) == serialized
    # `from_config(get_config())` is how clone_model copies a layer: the
    # clone must get an encoder of its own.
    assert clone.layer is not wrapper.layer
    assert clone.fuse_branches is True
    if isinstance(merge, keras.layers.Layer):
        assert isinstance(clone.merge, ManhattanDistance)
        assert clone.merge is not merge
    else:
        assert clone.merge == merge


def test_clone_model_gives_the_wrapper_its_own_encoder():
    inputs = [keras.Input((6,)), keras.Input((6,))]
    model = keras.Model(
        inputs, SiameseWrapper(mlp_encoder(), merge=EuclideanDistance())(inputs)
    )
    clone = keras.models.clone_model(model)
    clone.set_weights(model.get_weights())
    pairs = [np.ones((2, 6), "float32"), np.zeros((2, 6), "float32")]
    np.testing.assert_allclose(
        clone.predict(pairs, verbose=0), model.predict(pairs, verbose=0), rtol=1e-6
    )
    clone.set_weights([w + 1.0 for w in model.get_weights()])
    assert not np.allclose(
        clone.predict(pairs, verbose=0), model.predict(pairs, verbose=0)
    )


def test_seed_lambda_model_fails_in_safe_mode_but_ours_loads(tmp_path):
    """The seed recipe's Lambda distance cannot be reloaded safely; ours can."""
    inputs = [keras.Input((6,)), keras.Input((6,))]
    encoder = mlp_encoder()
    left, right = encoder(inputs[0]), encoder(inputs[1])
    distance = keras.layers.Lambda(
        lambda v: keras.ops.sqrt(
            keras.ops.sum((v[0] - v[1]) ** 2, axis=1, keepdims=True)
        ),
        output_shape=(1,),
    )([left, right])
    lambda_path = tmp_path / "lambda.keras"
    keras.Model(inputs, distance).save(lambda_path)
    with pytest.raises(ValueError, match=r"(?i)lambda"):
        keras.saving.load_model(lambda_path)

    ours_path = tmp_path / "ours.keras"
    pair_model(mlp_encoder()).save(ours_path)
    assert isinstance(keras.saving.load_model(ours_path), keras.Model)
