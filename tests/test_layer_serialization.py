"""Saving beyond the conformance table: clones, the seed's Lambda distance, and
loading in a program that has not imported the package.

The config, JSON and `.keras` round trips of every layer are in
`tests/test_conformance.py`.
"""

import os
import subprocess
import sys
import textwrap
from pathlib import Path

import keras
import numpy as np
import pytest

from keras_siamese import EuclideanDistance, ManhattanDistance, SiameseWrapper


def mlp_encoder():
    return keras.Sequential(
        [
            keras.Input((6,)),
            keras.layers.Dense(8, activation="relu"),
            keras.layers.Dense(4),
        ]
    )


def pair_model(encoder):
    inputs = [keras.Input((6,)), keras.Input((6,))]
    return keras.Model(
        inputs, SiameseWrapper(encoder, merge=EuclideanDistance())(inputs)
    )


def test_recurrent_encoder_reloads_from_keras_file_in_safe_mode(tmp_path):
    # The conformance table's encoders are Dense; an LSTM has its own state
    # layout and weights to restore.
    encoder = keras.Sequential(
        [keras.Input((6,)), keras.layers.Reshape((3, 2)), keras.layers.LSTM(4)]
    )
    model = pair_model(encoder)
    rng = np.random.default_rng(0)
    model.set_weights([rng.normal(size=w.shape) for w in model.get_weights()])
    pairs = [rng.normal(size=(5, 6)).astype("float32") for _ in range(2)]
    model.save(tmp_path / "lstm.keras")
    restored = keras.saving.load_model(tmp_path / "lstm.keras", safe_mode=True)
    assert len(restored.weights) == len(encoder.weights)
    np.testing.assert_allclose(
        restored.predict(pairs, verbose=0),
        model.predict(pairs, verbose=0),
        rtol=1e-6,
        atol=1e-6,
    )


def test_from_config_builds_a_new_encoder_and_merge_layer():
    # `from_config(get_config())` is how clone_model copies a layer: the
    # clone must get an encoder (and merge layer) of its own.
    wrapper = SiameseWrapper(
        mlp_encoder(), merge=ManhattanDistance(), fuse_branches=True
    )
    clone = SiameseWrapper.from_config(wrapper.get_config())
    assert clone.layer is not wrapper.layer
    assert isinstance(clone.merge, ManhattanDistance)
    assert clone.merge is not wrapper.merge
    assert clone.fuse_branches is True


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


@pytest.mark.slow
def test_loading_needs_the_package_imported_first(tmp_path):
    """Keras imports only its own modules while loading: the package must be
    imported first, which registers its classes."""
    path = tmp_path / "pair.keras"
    pair_model(mlp_encoder()).save(path)
    program = textwrap.dedent(
        f"""
        import sys

        import keras

        assert "keras_siamese" not in sys.modules
        try:
            keras.saving.load_model({str(path)!r})
        except Exception as error:
            print("WITHOUT", type(error).__name__, " ".join(str(error).split()))
        else:
            print("WITHOUT loaded")
        assert "keras_siamese" not in sys.modules

        import keras_siamese

        model = keras.saving.load_model({str(path)!r})
        wrapper = model.layers[-1]
        print("WITH", type(wrapper).__name__, type(wrapper.merge).__name__)
        """
    )
    result = subprocess.run(
        [sys.executable, "-c", program],
        cwd=Path(__file__).resolve().parent.parent,
        env={**os.environ, "KERAS_BACKEND": keras.backend.backend()},
        capture_output=True,
        text=True,
        timeout=300,
    )
    assert result.returncode == 0, result.stderr[-3000:]
    lines = dict(
        line.split(" ", 1)
        for line in result.stdout.splitlines()
        if line.startswith(("WITHOUT", "WITH "))
    )
    assert lines["WITHOUT"].startswith("TypeError ")
    assert "Could not locate class 'SiameseWrapper'" in lines["WITHOUT"]
    assert lines["WITH"] == "SiameseWrapper EuclideanDistance"
