"""Crafted `.keras` files cannot make the package's objects run arbitrary code.

Each test saves a genuine model, rewrites one field of its `config.json`
inside the zip archive, and loads the result with `safe_mode=True` (the
default of `keras.saving.load_model`). A value outside the documented set must
be refused with a `ValueError` or `TypeError` naming the field; a field that
deserializes to a Lambda or to something that is not a Keras layer must be
refused too. Positive controls show that the untampered file loads, and that
the Lambda file is refused because of safe mode and not for another reason.
"""

from __future__ import annotations

import json
import zipfile
from collections.abc import Callable
from pathlib import Path
from typing import Any

import keras
import numpy as np
import pytest

from keras_siamese import (
    ArcFaceLoss,
    CosineProxies,
    CrossBatchMemory,
    EuclideanDistance,
    SiameseWrapper,
)
from keras_siamese.losses import (
    CircleLoss,
    ContrastiveLoss,
    MultiSimilarityLoss,
    NTXentLoss,
    OnlineTripletLoss,
    SupervisedContrastiveLoss,
    TripletLoss,
)

REFUSED = (ValueError, TypeError)


def _encoder() -> keras.Model:
    return keras.Sequential([keras.Input((3,)), keras.layers.Dense(2)])


def _pair_model() -> keras.Model:
    inputs = [keras.Input((3,)), keras.Input((3,))]
    outputs = SiameseWrapper(_encoder(), merge=EuclideanDistance())(inputs)
    model = keras.Model(inputs, outputs)
    model.compile(optimizer="sgd", loss=ContrastiveLoss(margin=1.0))
    return model


def _triplet_model() -> keras.Model:
    inputs = [keras.Input((3,)) for _ in range(3)]
    model = keras.Model(inputs, SiameseWrapper(_encoder(), merge="stack")(inputs))
    model.compile(optimizer="sgd", loss=TripletLoss(distance="cosine"))
    return model


def _embedding_model() -> keras.Model:
    model = _encoder()
    model.compile(optimizer="sgd", loss=OnlineTripletLoss(mining="semi_hard"))
    return model


def _proxy_model() -> keras.Model:
    model = keras.Sequential([_encoder(), CosineProxies(4, sub_centers=2)])
    model.compile(optimizer="sgd", loss=ArcFaceLoss())
    return model


def _memory_model() -> keras.Model:
    model = CrossBatchMemory(
        _encoder(), memory_size=8, loss_kwargs={"mining": "semi_hard", "margin": 0.5}
    )
    model.compile(optimizer="sgd")
    model(np.zeros((1, 3), "float32"))
    return model


# The labelled-embedding losses, each compiled into an embedding model.
LABELLED_LOSSES = {
    "supervised_contrastive": lambda: SupervisedContrastiveLoss(
        temperature=0.2, global_batch=True
    ),
    "ntxent": lambda: NTXentLoss(temperature=0.1),
    "multi_similarity": lambda: MultiSimilarityLoss(mining=True, epsilon=0.2),
    "circle": lambda: CircleLoss(m=0.25, gamma=64.0),
}


def _labelled_model(name: str) -> Callable[[], keras.Model]:
    def build() -> keras.Model:
        model = _encoder()
        model.compile(optimizer="sgd", loss=LABELLED_LOSSES[name]())
        return model

    return build


def _find(node: Any, registered_name: str) -> list[dict]:
    """Every serialized object in `node` with this `registered_name`."""
    found = []
    if isinstance(node, dict):
        if node.get("registered_name") == registered_name:
            found.append(node)
        for value in node.values():
            found.extend(_find(value, registered_name))
    elif isinstance(node, list):
        for value in node:
            found.extend(_find(value, registered_name))
    return found


def _tamper(source: Path, target: Path, edit: Callable[[dict], None]) -> Path:
    """Copy the `.keras` zip `source` to `target` with `edit` applied to its config."""
    with zipfile.ZipFile(source) as archive_in:
        config = json.loads(archive_in.read("config.json"))
        edit(config)
        with zipfile.ZipFile(target, "w") as archive_out:
            for item in archive_in.infolist():
                if item.filename == "config.json":
                    archive_out.writestr(item, json.dumps(config))
                else:
                    archive_out.writestr(item, archive_in.read(item.filename))
    return target


def _set_wrapper_field(field: str, value: Any) -> Callable[[dict], None]:
    def edit(config: dict) -> None:
        (wrapper,) = _find(config, "keras_siamese>SiameseWrapper")
        wrapper["config"][field] = value

    return edit


def _set_loss_field(field: str, value: Any) -> Callable[[dict], None]:
    def edit(config: dict) -> None:
        config["compile_config"]["loss"]["config"][field] = value

    return edit


def _lambda_config() -> dict:
    """A serialized Lambda layer carrying Python bytecode."""
    return keras.saving.serialize_keras_object(
        keras.layers.Lambda(lambda pair: pair[0] - pair[1])
    )


# A function that is not a Layer, but is a registered, loadable Keras object.
_FUNCTION_CONFIG = {
    "module": "builtins",
    "class_name": "function",
    "config": "keras_siamese>contrastive_loss",
    "registered_name": "function",
}
# A loadable Keras object (a loss) that is not a Layer.
_NON_LAYER_CONFIG = keras.saving.serialize_keras_object(keras.losses.MeanSquaredError())
# Functions outside Keras that an attacker would like to reach.
_OS_SYSTEM = {"module": "os", "class_name": "function", "config": "system"}
_BUILTIN_EVAL = {"module": "builtins", "class_name": "function", "config": "eval"}


@pytest.fixture(scope="module")
def saved(tmp_path_factory) -> dict[str, Path]:
    folder = tmp_path_factory.mktemp("saved")
    paths = {}
    for name, build in [
        ("pair", _pair_model),
        ("triplet", _triplet_model),
        ("embedding", _embedding_model),
        ("proxies", _proxy_model),
        ("memory", _memory_model),
        *((name, _labelled_model(name)) for name in LABELLED_LOSSES),
    ]:
        paths[name] = folder / f"{name}.keras"
        build().save(paths[name])
    return paths


@pytest.mark.parametrize(
    "name", ["pair", "triplet", "embedding", "proxies", *LABELLED_LOSSES]
)
def test_untampered_files_load_in_safe_mode(saved, name):
    model = keras.saving.load_model(saved[name], safe_mode=True)
    assert model.loss is not None


def test_untampered_memory_model_loads_in_safe_mode(saved):
    model = keras.saving.load_model(saved["memory"], safe_mode=True)
    assert isinstance(model, CrossBatchMemory)
    assert model.loss_kwargs == {"mining": "semi_hard", "margin": 0.5}


@pytest.mark.parametrize("name", sorted(LABELLED_LOSSES))
def test_labelled_losses_round_trip_with_their_config(saved, name):
    model = keras.saving.load_model(saved[name], safe_mode=True)
    assert model.loss.get_config() == LABELLED_LOSSES[name]().get_config()
    labels = np.array([0, 0, 1, 1])
    x = np.random.default_rng(0).normal(size=(4, 3)).astype("float32")
    embeddings = model(x)
    np.testing.assert_allclose(
        keras.ops.convert_to_numpy(model.loss(labels, embeddings)),
        keras.ops.convert_to_numpy(LABELLED_LOSSES[name]()(labels, embeddings)),
        rtol=1e-6,
    )


def test_rewriting_config_without_changes_keeps_it_loadable(saved, tmp_path):
    path = _tamper(saved["pair"], tmp_path / "same.keras", lambda config: None)
    model = keras.saving.load_model(path)
    x = np.ones((2, 3), "float32")
    assert model.predict([x, x], verbose=0).shape == (2, 1)


@pytest.mark.parametrize(
    ("field", "value", "message"),
    [
        ("merge", "sum", "merge"),
        ("merge", "__import__('os').system('true')", "merge"),
        ("merge", 3, "merge"),
        ("merge", ["stack"], "merge"),
        ("merge", _FUNCTION_CONFIG, "merge"),
        ("merge", _NON_LAYER_CONFIG, "merge"),
        ("layer", _FUNCTION_CONFIG, "layer"),
        ("layer", _NON_LAYER_CONFIG, "layer"),
        ("fuse_branches", "yes", "fuse_branches"),
    ],
    ids=[
        "merge-unknown-string",
        "merge-code-string",
        "merge-int",
        "merge-list",
        "merge-function",
        "merge-non-layer",
        "layer-function",
        "layer-non-layer",
        "fuse-branches-string",
    ],
)
def test_wrapper_refuses_values_outside_the_documented_set(
    saved, tmp_path, field, value, message
):
    path = _tamper(
        saved["pair"], tmp_path / "bad.keras", _set_wrapper_field(field, value)
    )
    with pytest.raises(REFUSED, match=message):
        keras.saving.load_model(path, safe_mode=True)


@pytest.mark.parametrize("field", ["merge", "layer"])
@pytest.mark.parametrize(
    "value", [_OS_SYSTEM, _BUILTIN_EVAL], ids=["os-system", "builtin-eval"]
)
def test_wrapper_never_resolves_functions_outside_keras(saved, tmp_path, field, value):
    path = _tamper(
        saved["pair"], tmp_path / "bad.keras", _set_wrapper_field(field, value)
    )
    with pytest.raises(REFUSED):
        keras.saving.load_model(path, safe_mode=True)


@pytest.mark.parametrize("field", ["merge", "layer"])
def test_lambda_is_refused_in_safe_mode(saved, tmp_path, field):
    path = _tamper(
        saved["pair"],
        tmp_path / "lambda.keras",
        _set_wrapper_field(field, _lambda_config()),
    )
    with pytest.raises(ValueError, match="safe_mode"):
        keras.saving.load_model(path, safe_mode=True)


def test_lambda_merge_refusal_is_due_to_safe_mode(saved, tmp_path):
    # Control: the very same file is a well-formed model, which an explicit
    # opt-out of safe mode loads and runs.
    path = _tamper(
        saved["pair"],
        tmp_path / "lambda.keras",
        _set_wrapper_field("merge", _lambda_config()),
    )
    model = keras.saving.load_model(path, safe_mode=False)
    x = np.ones((2, 3), "float32")
    np.testing.assert_allclose(model.predict([x, x], verbose=0), 0.0)


@pytest.mark.parametrize(
    ("name", "field", "value"),
    [
        ("pair", "margin", -1.0),
        ("pair", "margin", "1.0"),
        ("pair", "margin", float("nan")),
        ("triplet", "distance", "mahalanobis"),
        ("triplet", "distance", _OS_SYSTEM),
        ("triplet", "distance", None),
        ("triplet", "soft", "false"),
        ("embedding", "mining", "hardest"),
        ("embedding", "mining", _FUNCTION_CONFIG),
        ("embedding", "distance", "os.system"),
        ("embedding", "margin", float("inf")),
        ("embedding", "global_batch", "yes"),
        ("supervised_contrastive", "temperature", 0.0),
        ("supervised_contrastive", "temperature", "0.1"),
        ("supervised_contrastive", "global_batch", 1),
        ("ntxent", "temperature", float("nan")),
        ("multi_similarity", "alpha", -2.0),
        ("multi_similarity", "beta", None),
        ("multi_similarity", "base", float("inf")),
        ("multi_similarity", "mining", "true"),
        ("multi_similarity", "epsilon", _OS_SYSTEM),
        ("circle", "m", -0.4),
        ("circle", "gamma", "80"),
    ],
)
def test_losses_refuse_values_outside_the_documented_set(
    saved, tmp_path, name, field, value
):
    path = _tamper(saved[name], tmp_path / "bad.keras", _set_loss_field(field, value))
    with pytest.raises(REFUSED, match=field):
        keras.saving.load_model(path, safe_mode=True)


@pytest.mark.parametrize(("field", "value"), [("epsilon", -1.0), ("epsilon", "tiny")])
def test_distance_layer_refuses_bad_fields(saved, tmp_path, field, value):
    def edit(config: dict) -> None:
        (layer,) = _find(config, "keras_siamese>EuclideanDistance")
        layer["config"][field] = value

    path = _tamper(saved["pair"], tmp_path / "bad.keras", edit)
    with pytest.raises(REFUSED, match=field):
        keras.saving.load_model(path, safe_mode=True)


def _set_field(registered_name: str, field: str, value: Any) -> Callable[[dict], None]:
    def edit(config: dict) -> None:
        (found,) = _find(config, registered_name)
        found["config"][field] = value

    return edit


@pytest.mark.parametrize(
    ("field", "value"),
    [
        ("num_classes", -1),
        ("num_classes", "4"),
        ("sub_centers", 0),
        ("lr_multiplier", float("nan")),
        ("lr_multiplier", "10"),
        ("initializer", _OS_SYSTEM),
        ("initializer", _BUILTIN_EVAL),
        ("initializer", "os.system"),
    ],
)
def test_cosine_proxies_refuse_values_outside_the_documented_set(
    saved, tmp_path, field, value
):
    edit = _set_field("keras_siamese>CosineProxies", field, value)
    path = _tamper(saved["proxies"], tmp_path / "bad.keras", edit)
    with pytest.raises(REFUSED):
        keras.saving.load_model(path, safe_mode=True)


@pytest.mark.parametrize(
    ("field", "value"), [("margin", 400.0), ("scale", 0.0), ("scale", "64")]
)
def test_proxy_loss_refuses_values_outside_the_documented_set(
    saved, tmp_path, field, value
):
    path = _tamper(
        saved["proxies"], tmp_path / "bad.keras", _set_loss_field(field, value)
    )
    with pytest.raises(REFUSED, match=field):
        keras.saving.load_model(path, safe_mode=True)


@pytest.mark.parametrize(
    ("field", "value", "message"),
    [
        ("memory_size", -1, "memory_size"),
        ("memory_size", "1024", "memory_size"),
        ("loss_fn", _OS_SYSTEM, None),
        ("loss_fn", _BUILTIN_EVAL, None),
        ("loss_fn", _FUNCTION_CONFIG, "loss_fn"),
        ("loss_fn", _NON_LAYER_CONFIG, "loss_fn"),
        ("loss_fn", "online_triplet_loss", "loss_fn"),
        ("loss_kwargs", {"mining": "hardest"}, "mining"),
        ("loss_kwargs", {"margin": _OS_SYSTEM}, "margin"),
        ("loss_kwargs", {"references": None}, "references"),
        ("loss_kwargs", "mining=batch_all", "loss_kwargs"),
        ("encoder", _FUNCTION_CONFIG, "encoder"),
        ("encoder", _NON_LAYER_CONFIG, "encoder"),
    ],
)
def test_cross_batch_memory_refuses_values_outside_the_documented_set(
    saved, tmp_path, field, value, message
):
    edit = _set_field("keras_siamese>CrossBatchMemory", field, value)
    path = _tamper(saved["memory"], tmp_path / "bad.keras", edit)
    with pytest.raises(REFUSED, match=message):
        keras.saving.load_model(path, safe_mode=True)


@pytest.mark.parametrize("field", ["loss_fn", "encoder"])
def test_cross_batch_memory_refuses_a_lambda_in_safe_mode(saved, tmp_path, field):
    edit = _set_field("keras_siamese>CrossBatchMemory", field, _lambda_config())
    path = _tamper(saved["memory"], tmp_path / "lambda.keras", edit)
    with pytest.raises(ValueError, match="safe_mode"):
        keras.saving.load_model(path, safe_mode=True)
