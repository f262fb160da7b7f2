"""Every layer, loss and metric of `tests/conformance.py` passes every check.

The checks are Keras' contract for a public object: the same output shapes
symbolically and eagerly, a complete JSON config that round-trips,
`serialize_keras_object` / `deserialize_keras_object` under the package's
registered name, a `.keras` file that reloads in safe mode without
`custom_objects` and computes the same, and half-precision policies (layers
output the policy's compute dtype; losses and metrics compute finite float32
results). Layers also pass Keras' own `run_layer_test`.
"""

from __future__ import annotations

import inspect
import json
import re
import sys
from typing import Any

import keras
import numpy as np
import pytest
from keras.src import testing
from keras.src.backend import compute_output_spec

from tests.conformance import CASES, LAYERS, LAYOUTS, LOSSES_AND_METRICS, Case
from tests.helpers import to_numpy

POLICIES = {"mixed_float16": "float16", "mixed_bfloat16": "bfloat16"}
BATCH_OF_MODEL = 16


def _rng() -> np.random.Generator:
    return np.random.default_rng(0)


def _shapes(outputs: Any) -> list[tuple]:
    return [tuple(leaf.shape) for leaf in keras.tree.flatten(outputs)]


def _expected_shapes(case: Case, batch: int | None) -> list[tuple]:
    output = case.output
    shapes = list(output) if isinstance(output[0], tuple) else [output]
    return [(batch, *shape[1:]) for shape in shapes]


def _single(case: Case) -> bool:
    """Whether the layer takes one tensor (`inputs` is one shape, not a tuple)."""
    return isinstance(case.inputs[0], int)


def _input_shapes(case: Case) -> tuple:
    return (case.inputs,) if _single(case) else case.inputs


def _one_or_tuple(case: Case, tensors: tuple) -> Any:
    return tensors[0] if _single(case) else tensors


def _layer_inputs(case: Case, dtype: str = "float32") -> Any:
    rng = _rng()
    return _one_or_tuple(
        case,
        tuple(
            keras.ops.cast(rng.normal(size=(2, *shape)), dtype)
            for shape in _input_shapes(case)
        ),
    )


def _symbolic_layer_inputs(case: Case, dtype: str = "float32") -> Any:
    return _one_or_tuple(
        case, tuple(keras.Input(shape, dtype=dtype) for shape in _input_shapes(case))
    )


def _loss_data(case: Case) -> tuple[np.ndarray, np.ndarray]:
    layout = LAYOUTS[case.layout]
    rng = _rng()
    return layout.y_true(rng), layout.y_pred(rng).astype("float32")


def _function_form(case: Case) -> tuple[Any, dict] | None:
    """The snake_case function with the same math, and its arguments, if any."""
    name = re.sub(r"(?<!^)(?=[A-Z])", "_", case.cls.__name__).lower()
    function = getattr(sys.modules[case.cls.__module__], name, None)
    if function is None:
        return None
    config = case.build().get_config()
    # Objects (a wrapped loss) are passed as objects, not as their configs.
    objects = {k: v for k, v in case.init_kwargs().items() if not _plain(v)}
    config.update(objects)
    parameters = inspect.signature(function).parameters
    return function, {key: config[key] for key in parameters if key in config}


def _symbolic(fn: Any, *arrays: np.ndarray) -> Any:
    """`fn` traced on placeholders with an unknown batch size."""
    specs = [
        keras.KerasTensor((None, *np.shape(a)[1:]), dtype=np.asarray(a).dtype.name)
        for a in arrays
    ]
    return compute_output_spec(fn, *specs)


def _assert_same_shape(symbolic: tuple, eager: tuple) -> None:
    assert len(symbolic) == len(eager), (symbolic, eager)
    assert all(s is None or s == e for s, e in zip(symbolic, eager)), (symbolic, eager)


# --- output shapes -------------------------------------------------------------


@pytest.mark.parametrize("case", LAYERS, ids=str)
def test_layer_output_shapes_symbolic_and_eager(case):
    symbolic = case.build()(_symbolic_layer_inputs(case))
    assert _shapes(symbolic) == _expected_shapes(case, None)
    eager = case.build()(_layer_inputs(case))
    assert _shapes(eager) == _expected_shapes(case, 2)


@pytest.mark.parametrize("case", LOSSES_AND_METRICS, ids=str)
def test_loss_and_metric_output_shapes_symbolic_and_eager(case):
    y_true, y_pred = _loss_data(case)
    if case.kind == "loss":
        assert tuple(case.build()(y_true, y_pred).shape) == ()
    else:
        metric = case.build()
        metric.update_state(y_true, y_pred)
        assert tuple(metric.result().shape) == ()
    function_form = _function_form(case)
    if function_form is not None:
        function, kwargs = function_form

        def call(y_true, y_pred):
            return function(y_true, y_pred, **kwargs)

        eager = tuple(call(y_true, y_pred).shape)
        _assert_same_shape(tuple(_symbolic(call, y_true, y_pred).shape), eager)


# --- configs and serialization -------------------------------------------------


def _plain(value: Any) -> bool:
    return not isinstance(value, (keras.layers.Layer, keras.losses.Loss))


@pytest.mark.parametrize("case", CASES, ids=str)
def test_config_and_serialization_round_trips(case):
    obj = case.build()
    config = obj.get_config()
    parameters = [
        name
        for name, parameter in inspect.signature(case.cls.__init__).parameters.items()
        if name != "self" and parameter.kind is not parameter.VAR_KEYWORD
    ]
    missing = set(parameters) - set(config)
    assert not missing, f"get_config() lacks constructor arguments {missing}"
    for key, value in case.init_kwargs().items():
        if _plain(value):
            assert config[key] == value, key
    clone = case.cls.from_config(config)
    assert type(clone) is case.cls
    assert clone.get_config() == config
    # Through JSON, as in a `.keras` file (Keras' nested configs then hold
    # lists where they held tuples, so the comparison is of the JSON).
    text = json.dumps(config)
    clone = case.cls.from_config(json.loads(text))
    assert type(clone) is case.cls
    assert json.dumps(clone.get_config()) == text
    # `serialize_keras_object` / `deserialize_keras_object`, under the
    # package's registered name.
    serialized = keras.saving.serialize_keras_object(obj)
    assert serialized["registered_name"] == f"keras_siamese>{case.cls.__name__}"
    revived = keras.saving.deserialize_keras_object(json.loads(json.dumps(serialized)))
    assert type(revived) is case.cls
    assert json.dumps(revived.get_config()) == json.dumps(obj.get_config())


# --- .keras files in safe mode ------------------------------------------------


def _reload(model: keras.Model, tmp_path) -> keras.Model:
    path = tmp_path / "model.keras"
    model.save(path)
    return keras.saving.load_model(path, safe_mode=True)  # no custom_objects


@pytest.mark.parametrize("case", LAYERS, ids=str)
def test_layer_model_reloads_from_keras_file_in_safe_mode(case, tmp_path):
    inputs = _symbolic_layer_inputs(case)
    inputs = inputs if _single(case) else list(inputs)
    model = keras.Model(inputs, case.build()(inputs))
    rng = _rng()
    # Weights unlike a fresh initialisation, so that only loading them matches.
    model.set_weights([rng.normal(size=w.shape) for w in model.get_weights()])
    x = keras.tree.map_structure(to_numpy, _layer_inputs(case))
    x = x if _single(case) else list(x)
    restored = _reload(model, tmp_path)
    assert len(restored.weights) == len(model.weights)
    assert isinstance(restored.layers[-1], case.cls)
    for got, want in zip(
        keras.tree.flatten(restored.predict(x, verbose=0)),
        keras.tree.flatten(model.predict(x, verbose=0)),
    ):
        np.testing.assert_allclose(got, want, rtol=1e-6, atol=1e-6)


@pytest.mark.parametrize("case", LOSSES_AND_METRICS, ids=str)
def test_compiled_model_reloads_from_keras_file_in_safe_mode(case, tmp_path):
    layout = LAYOUTS[case.layout]
    model = layout.model()
    # Eager steps: the file is under test here, not the compiled step.
    if case.kind == "loss":
        model.compile(optimizer="sgd", loss=case.build(), jit_compile=False)
    else:
        metrics = [case.build()]
        model.compile(
            optimizer="sgd", loss=layout.loss(), metrics=metrics, jit_compile=False
        )
    x = _rng().normal(size=(BATCH_OF_MODEL, *layout.input_shape)).astype("float32")
    y = np.resize(layout.y_true(_rng()), BATCH_OF_MODEL)
    before = model.evaluate(
        x, y, batch_size=BATCH_OF_MODEL, verbose=0, return_dict=True
    )
    restored = _reload(model, tmp_path)
    assert restored.get_compile_config() == model.get_compile_config()
    if case.kind == "loss":
        assert type(restored.loss) is case.cls
        assert restored.loss.get_config() == model.loss.get_config()
    after = restored.evaluate(
        x, y, batch_size=BATCH_OF_MODEL, verbose=0, return_dict=True
    )
    assert before.keys() == after.keys()
    assert len(before) == (1 if case.kind == "loss" else 2)
    for key in before:
        np.testing.assert_allclose(after[key], before[key], rtol=1e-5, atol=1e-6)


# --- half precision ------------------------------------------------------------


@pytest.mark.parametrize("case", LAYERS, ids=str)
def test_layer_outputs_the_compute_dtype_of_a_half_precision_policy(case):
    for policy, half in POLICIES.items():
        keras.config.set_dtype_policy(policy)
        outputs = keras.tree.flatten(case.build()(_layer_inputs(case, half)))
        assert {keras.backend.standardize_dtype(t.dtype) for t in outputs} == {half}
        assert all(np.isfinite(to_numpy(t)).all() for t in outputs)
        inputs = _symbolic_layer_inputs(case, half)
        symbolic = keras.tree.flatten(case.build()(inputs))
        if _keras_traces_in(half):
            assert {t.dtype for t in symbolic} == {half}, policy


class _CallsDense(keras.layers.Layer):
    """A composite layer, whose symbolic output Keras finds by tracing `call`."""

    def __init__(self, **kwargs):
        super().__init__(**kwargs)
        self.dense = keras.layers.Dense(1)

    def call(self, x):
        return self.dense(x)


def _keras_traces_in(half: str) -> bool:
    """Whether Keras traces a composite layer to a `half` output under the policy.

    Keras' PyTorch backend traces a mixed-precision `Dense` inside another
    layer to a float32 KerasTensor although it computes float16 (Keras' own
    `run_layer_test` skips mixed precision on a PyTorch CPU). Layers that
    wrap Keras layers inherit that, so their symbolic dtype is checked only
    where Keras' own composite layers get it right.
    """
    return _CallsDense()(keras.Input((4,), dtype=half)).dtype == half


@pytest.mark.parametrize("case", LOSSES_AND_METRICS, ids=str)
def test_loss_and_metric_compute_float32_on_half_inputs(case):
    y_true, y_pred = _loss_data(case)
    for policy, dtype in POLICIES.items():
        keras.config.set_dtype_policy(policy)
        half = keras.ops.cast(y_pred, dtype)
        obj = case.build()
        if case.kind == "loss":
            results = [obj(y_true, half)]
        else:
            obj.update_state(y_true, half)
            results = [obj.result()]
        function_form = _function_form(case)
        if function_form is not None:
            function, kwargs = function_form
            results.append(function(y_true, half, **kwargs))
        for result in results:
            assert keras.backend.standardize_dtype(result.dtype) == "float32", policy
            assert np.isfinite(to_numpy(result)).all(), policy


# --- Keras' own layer test ------------------------------------------------------


@pytest.mark.parametrize("case", LAYERS, ids=str)
def test_keras_run_layer_test(case):
    expected = _expected_shapes(case, 2)
    testing.TestCase().run_layer_test(
        case.cls,
        init_kwargs=case.init_kwargs(),
        input_shape=_one_or_tuple(
            case, tuple((2, *shape) for shape in _input_shapes(case))
        ),
        expected_output_shape=tuple(expected) if len(expected) > 1 else expected[0],
    )
