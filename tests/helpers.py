"""Test-only helpers that need to know the backend (gradients, conversion)."""

from __future__ import annotations

import dataclasses
import json
import weakref
import zipfile
from collections.abc import Callable
from pathlib import Path
from typing import Any

import keras
import numpy as np
import pytest
from hypothesis import settings
from hypothesis import strategies as st
from hypothesis.extra import numpy as hnp


def to_numpy(x: Any) -> np.ndarray:
    return np.asarray(keras.ops.convert_to_numpy(x))


def value_and_grad(fn: Callable[..., Any], *args: np.ndarray) -> tuple:
    """Value of scalar `fn(*args)` and its gradient w.r.t. every argument.

    Arguments are NumPy arrays; results are NumPy. Uses the selected
    backend's own autodiff, so the package's gradients are checked on each.
    """
    backend = keras.backend.backend()
    if backend == "tensorflow":
        import tensorflow as tf

        tensors = [tf.Variable(a) for a in args]
        with tf.GradientTape() as tape:
            value = fn(*tensors)
        grads = tape.gradient(value, tensors)
        grads = [
            np.zeros_like(a) if g is None else g.numpy() for a, g in zip(args, grads)
        ]
        return to_numpy(value), grads
    if backend == "jax":
        import jax

        value, grads = jax.value_and_grad(fn, argnums=tuple(range(len(args))))(*args)
        return to_numpy(value), [np.asarray(g) for g in grads]
    if backend == "torch":
        import torch

        tensors = [torch.tensor(a, requires_grad=True) for a in args]
        value = fn(*tensors)
        grads = torch.autograd.grad(value, tensors, allow_unused=True)
        grads = [
            np.zeros_like(a) if g is None else g.detach().cpu().numpy()
            for a, g in zip(args, grads)
        ]
        return value.detach().cpu().numpy(), grads
    raise NotImplementedError(f"No gradient helper for backend {backend!r}.")


def _version(text: str) -> tuple[int, ...]:
    return tuple(int(part) for part in text.split(".")[:3] if part.isdigit())


def skip_if_saved_by_a_newer_keras(model_path: Path) -> None:
    """Skip the test if the `.keras` file was written by a newer Keras."""
    # Keras reads the files of older versions, not of newer ones (a newer
    # Keras writes config keys that older layers refuse), so the minimum-Keras
    # environment cannot read fixtures written with the current Keras.
    with zipfile.ZipFile(model_path) as archive:
        saved_by = json.loads(archive.read("metadata.json"))["keras_version"]
    if _version(keras.__version__) < _version(saved_by):
        pytest.skip(f"saved by Keras {saved_by}, newer than {keras.__version__}")


@dataclasses.dataclass
class ScoreBlocks:
    """What `record_score_blocks` saw.

    Attributes:
        shapes: the shape of every score matrix, in order.
        alive: for each, how many earlier score matrices were still
            referenced when it was made.
    """

    shapes: list[tuple] = dataclasses.field(default_factory=list)
    alive: list[int] = dataclasses.field(default_factory=list)


def record_score_blocks(monkeypatch: pytest.MonkeyPatch) -> ScoreBlocks:
    """Record every score matrix that `EmbeddingIndex` search computes."""
    from keras_siamese.retrieval import _search

    blocks = ScoreBlocks()
    earlier: list[weakref.ref] = []

    def record(original: Any, pick: Callable[[Any], Any]) -> Callable[..., Any]:
        def recording(self: Any, *args: Any, **kwargs: Any) -> Any:
            blocks.alive.append(sum(ref() is not None for ref in earlier))
            result = original(self, *args, **kwargs)
            scores = pick(result)
            # Grouped scores `(rows, groups, group)` count as `(rows, columns)`.
            blocks.shapes.append((int(scores.shape[0]), int(np.prod(scores.shape[1:]))))
            earlier.append(weakref.ref(scores))
            return result

        return recording

    prepared = _search.PreparedGallery
    monkeypatch.setattr(prepared, "scores", record(prepared.scores, lambda s: s))
    monkeypatch.setattr(
        prepared, "grouped_scores", record(prepared.grouped_scores, lambda r: r[0])
    )
    return blocks


def few_examples() -> settings:
    """Hypothesis settings for a property test run once per parameter value
    (a test parametrized over many miners, say): a third of the profile's
    examples, at least 4, so that the parameters together get about the
    profile's budget."""
    return settings(max_examples=max(4, settings.default.max_examples // 3))


@st.composite
def tied_corpus(draw: Any, min_rows: int = 1) -> tuple[np.ndarray, np.ndarray]:
    """`(queries, corpus)`: up to 6 queries and `min_rows..12` corpus rows
    of 1 to 3 small integer coordinates, so that many distances tie."""
    dim = draw(st.integers(1, 3))
    m = draw(st.integers(min_rows, 12))
    n = draw(st.integers(1, 6))
    coordinates = st.integers(-3, 3).map(float)
    corpus = draw(hnp.arrays("float32", (m, dim), elements=coordinates))
    queries = draw(hnp.arrays("float32", (n, dim), elements=coordinates))
    return queries, corpus
