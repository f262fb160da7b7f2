"""Everything the package needs from Keras beyond its public API, in one place.

Each function here reaches into Keras' private modules or its call stack,
and each falls back to a public behaviour (at the cost of a feature, never of
correctness) when that Keras internal is not where this module expects it:

- `data_adapter_base`: the private `DataAdapter` class, which lets a dataset
  hand TensorFlow its own `tf.data` pipeline. Without it the datasets stay
  plain `keras.utils.PyDataset`s and Keras' generator path is used.
- `in_object_sharing_scope`: whether Keras is serializing a whole model,
  with its record of objects seen twice. Without it, a wrapped layer's
  config is always marked as shared: saving and loading stay right, and only
  `get_config()` carries an id that differs between two equal layers.
- `fit_epoch`: the epoch index of a running `Model.fit`. Without it, the
  datasets count their own epochs (and `EpochSync` ties them to Keras').
- `in_symbolic_scope`: whether Keras is tracing output shapes, where an
  unknown batch size stands in as a placeholder size. Without it, the
  two-view losses check the placeholder size too (a shape trace of them
  with an unknown batch size fails on PyTorch; training is unaffected).

`tests/test_keras_compat.py` checks every fallback.
"""

from __future__ import annotations

import importlib
import sys
from typing import Any

import keras

_DATA_ADAPTER_MODULE = "keras.src.trainers.data_adapters.data_adapter"
_GLOBAL_STATE_MODULE = "keras.src.backend.common.global_state"
_SHARED_CONFIGS = "shared_objects/id_to_config_map"
_SYMBOLIC_SCOPE = "symbolic_scope"

#: Returned by `fit_epoch` while Keras builds a model on a first batch of the
#: data: a pass over the data that is not an epoch.
BUILDING = "building"


def _private(module: str) -> Any | None:
    try:
        return importlib.import_module(module)
    except ImportError:
        return None


def data_adapter_base() -> tuple[type, ...]:
    """`(DataAdapter,)` on the TensorFlow backend, `()` otherwise.

    Keras' `fit`, `evaluate` and `predict` use an input that is a
    `DataAdapter` as it is, so a dataset that is one hands its own `tf.data`
    pipeline to TensorFlow.
    """
    if keras.backend.backend() != "tensorflow":
        return ()
    module = _private(_DATA_ADAPTER_MODULE)
    adapter = getattr(module, "DataAdapter", None)
    return (adapter,) if isinstance(adapter, type) else ()


def in_object_sharing_scope() -> bool | None:
    """Whether Keras is saving a model and recording the objects it shares.

    Inside that scope Keras gives an object serialized twice a
    `shared_object_id` and, on loading, builds it once.

    Returns:
        `True` or `False`, or `None` where Keras' state cannot be read.
    """
    module = _private(_GLOBAL_STATE_MODULE)
    getter = getattr(module, "get_global_attribute", None)
    if getter is None:
        return None
    return getter(_SHARED_CONFIGS) is not None


def mark_shared(config: dict, obj: Any) -> dict:
    """Give the config of `obj` the id Keras gives an object it sees twice.

    A layer config that another layer's `get_config` returns is copied by
    Keras after it has been recorded, so Keras' own mark, added when the
    object is met a second time, would miss the copy. Marking the config
    first (with the very id Keras uses, `id(obj)`) makes every occurrence in
    the saved file carry it, and the loader builds the object once. Outside
    a saving scope the config is returned unchanged, so `get_config()` stays
    a pure description; where the scope cannot be seen, the config is marked
    all the same (outside a scope Keras ignores the mark, so `clone_model`
    still gets a new object).
    """
    if in_object_sharing_scope() is not False:
        config["shared_object_id"] = id(obj)
    return config


def in_symbolic_scope() -> bool:
    """Whether Keras is tracing shapes (`compute_output_spec`, `keras.SymbolicScope`).

    Keras' PyTorch backend traces an unknown batch size as a placeholder
    size (83, then 89), which a check of the batch size must not refuse.

    Returns:
        `True` inside Keras' symbolic scope; `False` outside it or where
        Keras' state cannot be read.
    """
    module = _private(_GLOBAL_STATE_MODULE)
    getter = getattr(module, "get_global_attribute", None)
    if getter is None:
        return False
    return getter(_SYMBOLIC_SCOPE) is not None


def fit_epoch() -> int | str | None:
    """The epoch index of the innermost running `keras.Model.fit`, if any.

    Keras calls a dataset's `on_epoch_begin` from inside `fit` (also for the
    validation data, through `evaluate`), without the epoch index; the index
    is the loop variable `epoch` of every backend's `fit`. On JAX and
    PyTorch, `fit`, `evaluate` and `predict` also open and close one epoch of
    the data to build an unbuilt model on its first batch (in the model's
    `_symbolic_build`): this returns `BUILDING` there.

    Returns:
        The epoch index, `BUILDING`, or `None` when not called from `fit`
        (a custom loop, `evaluate` or `predict` on their own).
    """
    frame = sys._getframe(1)
    while frame is not None:
        name = frame.f_code.co_name
        if name in ("fit", "_symbolic_build") and isinstance(
            frame.f_locals.get("self"), keras.Model
        ):
            epoch = frame.f_locals.get("epoch") if name == "fit" else None
            if isinstance(epoch, int) and not isinstance(epoch, bool):
                return epoch
            return BUILDING
        frame = frame.f_back
    return None
