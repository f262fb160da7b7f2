"""Keras internals are reached from one module, and every fallback works."""

from __future__ import annotations

import os
import re
import subprocess
import sys
from pathlib import Path

import keras
import numpy as np
import pytest

import keras_siamese
from keras_siamese import (
    CosineDistance,
    EpochSync,
    EuclideanDistance,
    PairDataset,
    SiameseWrapper,
    _keras_compat,
)

PACKAGE = Path(keras_siamese.__file__).parent
PRIVATE = re.compile(r"keras\.src\b|_symbolic_build|global_state")


def test_keras_internals_appear_only_in_the_compat_module():
    offenders = [
        f"{path.relative_to(PACKAGE)}:{number}"
        for path in PACKAGE.rglob("*.py")
        if path.name != "_keras_compat.py"
        for number, line in enumerate(path.read_text().splitlines(), 1)
        if PRIVATE.search(line)
    ]
    assert not offenders, offenders


def _encoder() -> keras.Model:
    return keras.Sequential(
        [keras.Input((3,)), keras.layers.Dense(4)], name="shared_encoder"
    )


def _shared_model() -> keras.Model:
    encoder = _encoder()
    inputs = [keras.Input((3,)), keras.Input((3,))]
    outputs = [
        SiameseWrapper(encoder, merge=EuclideanDistance())(inputs),
        SiameseWrapper(encoder, merge=CosineDistance())(inputs),
    ]
    return keras.Model(inputs, outputs)


def _reloaded_encoders(tmp_path) -> list:
    model = _shared_model()
    model.save(tmp_path / "shared.keras")
    restored = keras.saving.load_model(tmp_path / "shared.keras")
    pairs = [np.random.default_rng(i).normal(size=(4, 3)) for i in range(2)]
    for got, expected in zip(
        restored.predict(pairs, verbose=0), model.predict(pairs, verbose=0)
    ):
        np.testing.assert_allclose(got, expected, rtol=1e-5, atol=1e-6)
    return [
        layer.layer for layer in restored.layers if isinstance(layer, SiameseWrapper)
    ]


def test_shared_encoder_reloads_once_inside_keras_saving_scope(tmp_path):
    assert _keras_compat.in_object_sharing_scope() is False
    first, second = _reloaded_encoders(tmp_path)
    assert first is second


def test_without_the_sharing_scope_a_shared_encoder_still_reloads_once(
    tmp_path, monkeypatch
):
    # Fallback: where Keras' record of shared objects cannot be read, every
    # wrapped layer's config is marked, so saving and loading stay right...
    monkeypatch.setattr(_keras_compat, "_private", lambda module: None)
    assert _keras_compat.in_object_sharing_scope() is None
    first, second = _reloaded_encoders(tmp_path)
    assert first is second
    # ...and a clone still gets an encoder of its own.
    wrapper = SiameseWrapper(_encoder(), merge=EuclideanDistance())
    config = wrapper.get_config()
    assert config["layer"]["shared_object_id"] == id(wrapper.layer)
    assert SiameseWrapper.from_config(config).layer is not wrapper.layer


def test_get_config_is_plain_json_outside_a_save():
    wrapper = SiameseWrapper(_encoder(), merge=EuclideanDistance())
    config = wrapper.get_config()
    assert "shared_object_id" not in config["layer"]
    assert "shared_object_id" not in config["merge"]


def test_data_adapter_fallback_is_a_plain_py_dataset(monkeypatch):
    monkeypatch.setattr(_keras_compat, "_private", lambda module: None)
    assert _keras_compat.data_adapter_base() == ()


def test_datasets_train_as_plain_py_datasets_without_the_adapter_class():
    # In a fresh process where Keras' DataAdapter module cannot be imported,
    # the datasets fall back to Keras' PyDataset path (on TensorFlow too).
    code = (
        "import sys, keras, numpy as np; "
        "sys.modules['keras.src.trainers.data_adapters.data_adapter'] = None; "
        "from keras_siamese import PairDataset, SiameseWrapper, EuclideanDistance; "
        "x = np.random.default_rng(0).normal(size=(40, 3)).astype('float32'); "
        "pairs = PairDataset(x, np.arange(40) % 4, batch_size=8, seed=0); "
        "print('+'.join(b.__name__ for b in type(pairs).__mro__[1].__bases__)); "
        "e = keras.Sequential([keras.Input((3,)), keras.layers.Dense(2)]); "
        "i = [keras.Input((3,)), keras.Input((3,))]; "
        "m = keras.Model(i, SiameseWrapper(e, merge=EuclideanDistance())(i)); "
        "m.compile('sgd', 'mse'); "
        "h = m.fit(pairs, epochs=2, verbose=0); "
        "print(len(h.history['loss']))"
    )
    env = {**os.environ, "KERAS_BACKEND": keras.backend.backend()}
    result = subprocess.run(
        [sys.executable, "-c", code], env=env, capture_output=True, text=True
    )
    assert result.returncode == 0, result.stderr[-2000:]
    assert result.stdout.split()[-2:] == ["PyDataset", "2"]


def _fit_and_record(pairs: PairDataset, callbacks: list) -> list:
    seen = []

    class Record(keras.callbacks.Callback):
        def on_train_batch_begin(self, batch, logs=None):
            if batch == 0:
                seen.append(pairs.epoch)

    encoder = keras.Sequential([keras.Input((3,)), keras.layers.Dense(2)])
    inputs = [keras.Input((3,)), keras.Input((3,))]
    model = keras.Model(
        inputs, SiameseWrapper(encoder, merge=EuclideanDistance())(inputs)
    )
    model.compile("sgd", "mse")
    model.fit(
        pairs, epochs=4, initial_epoch=1, verbose=0, callbacks=[*callbacks, Record()]
    )
    return seen


def test_without_the_link_to_fit_datasets_count_and_epoch_sync_pins_them(
    monkeypatch,
):
    monkeypatch.setattr(_keras_compat, "fit_epoch", lambda: None)
    x = np.random.default_rng(0).normal(size=(40, 3)).astype("float32")
    counting = PairDataset(x, np.arange(40) % 4, batch_size=8, seed=0)
    # Counting: a fresh dataset starts at 0 (or 1 after the JAX and PyTorch
    # build pass), not at Keras' initial epoch.
    assert _fit_and_record(counting, [])[0] in (0, 1)
    pinned = PairDataset(x, np.arange(40) % 4, batch_size=8, seed=0)
    assert _fit_and_record(pinned, [EpochSync(pinned)]) == [1, 2, 3]


def test_fit_epoch_is_none_outside_fit():
    assert _keras_compat.fit_epoch() is None


@pytest.mark.parametrize("name", ["fit", "_symbolic_build"])
def test_fit_epoch_ignores_functions_of_other_objects(name):
    # A function called `fit` that is not a Keras model's does not count.
    def probe(self):
        return _keras_compat.fit_epoch()

    probe.__code__ = probe.__code__.replace(co_name=name)
    assert probe(object()) is None


@pytest.mark.parametrize(
    "make_layer",
    [
        EuclideanDistance,
        CosineDistance,
        lambda: SiameseWrapper(_encoder(), merge="stack"),
    ],
)
@pytest.mark.parametrize("position", [0, 1])
def test_a_missing_input_is_refused_by_name_on_every_keras(make_layer, position):
    # Keras up to 3.12 fails on a None input inside `Layer.__call__`, with an
    # AttributeError, before the layer's own checks run.
    inputs = [np.zeros((2, 3), "float32"), np.zeros((2, 3), "float32")]
    inputs[position] = None
    with pytest.raises(TypeError, match=rf"`inputs`.*\[{position}\]"):
        make_layer()(inputs)
    with pytest.raises(TypeError, match="`inputs`"):
        make_layer()(None)
