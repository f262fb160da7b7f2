"""The metric-learning losses give pytorch-metric-learning's numbers.

On every backend: losses and gradients equal the golden values stored in
`tests/fixtures/pml_goldens.npz` (written by `make_pml_goldens.py` with
pytorch-metric-learning's default configuration of each loss). On PyTorch,
where pytorch-metric-learning is installed (a test-only dependency of the
torch environment), the package is also compared with it live on random
batches, with and without references.
"""

from __future__ import annotations

from pathlib import Path

import keras
import numpy as np
import pytest
from hypothesis import given
from hypothesis import strategies as st
from hypothesis.extra import numpy as hnp

from keras_siamese import (
    circle_loss,
    multi_similarity_loss,
    ntxent_loss,
    online_triplet_loss,
    supervised_contrastive_loss,
)
from tests.helpers import value_and_grad

GOLDENS = Path(__file__).resolve().parent / "fixtures" / "pml_goldens.npz"


def _multi_similarity_mined(labels, embeddings, **kwargs):
    return multi_similarity_loss(labels, embeddings, mining=True, **kwargs)


# golden / PML name -> the package's function with its defaults
LOSSES = {
    "supcon": supervised_contrastive_loss,
    "ntxent": ntxent_loss,
    "multi_similarity": multi_similarity_loss,
    "multi_similarity-mining": _multi_similarity_mined,
    "circle": circle_loss,
}


def _goldens() -> dict[str, dict[str, np.ndarray]]:
    with np.load(GOLDENS) as archive:
        cases: dict[str, dict[str, np.ndarray]] = {}
        for key in archive.files:
            if "/" in key:
                case, field = key.split("/")
                cases.setdefault(case, {})[field] = archive[key]
    return cases


CASES = _goldens()


def _compute(name, labels, embeddings, references=None, reference_labels=None):
    """Loss and gradients on the current backend."""
    function = LOSSES[name]
    if references is None:
        value, grads = value_and_grad(lambda e: function(labels, e), embeddings)
    else:
        value, grads = value_and_grad(
            lambda e, r: function(
                labels, e, references=r, reference_labels=reference_labels
            ),
            embeddings,
            references,
        )
    return float(value), grads


def _assert_gradients_close(got, want):
    # Relative to the largest entry: entries near zero are round-off there.
    scale = max(float(np.abs(want).max()), 1e-6)
    np.testing.assert_allclose(got, want, rtol=2e-4, atol=2e-5 * scale)


def test_goldens_cover_every_loss_with_and_without_references():
    names = {case.rsplit("-", 1)[0] for case in CASES}
    expected = set(LOSSES) | {f"{name}-references" for name in LOSSES}
    assert names == expected


@pytest.mark.parametrize("case", sorted(CASES))
def test_loss_and_gradients_equal_the_goldens(case):
    data = CASES[case]
    name = case.rsplit("-", 1)[0].removesuffix("-references")
    value, grads = _compute(
        name,
        data["labels"],
        data["embeddings"],
        data.get("references"),
        data.get("reference_labels"),
    )
    np.testing.assert_allclose(value, float(data["loss"]), rtol=1e-5, atol=1e-6)
    _assert_gradients_close(grads[0], data["grad_embeddings"])
    if "references" in data:
        _assert_gradients_close(grads[1], data["grad_references"])


# --------------------------------------------------------------------------
# Live comparison on PyTorch.


def _pml():
    if keras.backend.backend() != "torch":
        pytest.skip("pytorch-metric-learning runs on the torch backend only")
    return pytest.importorskip("pytorch_metric_learning")


def _pml_value_and_grad(name, labels, embeddings, references, reference_labels):
    import torch
    from pytorch_metric_learning import losses, miners

    x = torch.tensor(embeddings, requires_grad=True)
    inputs = [x]
    kwargs = {}
    if references is not None:
        r = torch.tensor(references, requires_grad=True)
        inputs.append(r)
        kwargs = {"ref_emb": r, "ref_labels": torch.tensor(reference_labels)}
    y = torch.tensor(labels)
    if name == "multi_similarity-mining":
        pairs = miners.MultiSimilarityMiner()(
            x, y, kwargs.get("ref_emb"), kwargs.get("ref_labels")
        )
        loss = losses.MultiSimilarityLoss()(x, y, pairs, **kwargs)
    else:
        loss = {
            "supcon": losses.SupConLoss,
            "ntxent": losses.NTXentLoss,
            "multi_similarity": losses.MultiSimilarityLoss,
            "circle": losses.CircleLoss,
        }[name]()(x, y, **kwargs)
    grads = torch.autograd.grad(loss, inputs, allow_unused=True)
    grads = [
        np.zeros_like(i.detach().numpy()) if g is None else g.numpy()
        for i, g in zip(inputs, grads)
    ]
    return float(loss.detach()), grads


@st.composite
def _batches(draw, batch=10, references=7, dim=4):
    """Labels from 1 to `batch` classes; rows in general position, duplicates."""
    classes = draw(st.sampled_from([1, 2, 3, batch]))
    labels = draw(hnp.arrays("int64", batch, elements=st.integers(0, classes - 1)))
    rng = np.random.default_rng(draw(st.integers(0, 2**32 - 1)))
    x = rng.normal(size=(batch, dim)).astype("float32")
    if draw(st.booleans()):
        x[1] = x[0]
    if not draw(st.booleans()):
        return labels, x, None, None
    reference_labels = draw(
        hnp.arrays("int64", references, elements=st.integers(0, classes - 1))
    )
    refs = rng.normal(size=(references, dim)).astype("float32")
    return labels, x, refs, reference_labels


@pytest.mark.parametrize("name", sorted(LOSSES))
@given(data=_batches())
def test_equal_to_pytorch_metric_learning_live(name, data):
    _pml()
    labels, x, refs, reference_labels = data
    want, want_grads = _pml_value_and_grad(name, labels, x, refs, reference_labels)
    got, grads = _compute(name, labels, x, refs, reference_labels)
    np.testing.assert_allclose(got, want, rtol=1e-5, atol=1e-6)
    for grad, want_grad in zip(grads, want_grads):
        _assert_gradients_close(grad, want_grad)


@given(data=_batches())
def test_triplet_batch_all_equals_triplet_margin_loss_live(data):
    # TripletMarginLoss() mines every triplet of L2-normalised embeddings with
    # margin 0.05 and averages the non-zero ones: batch_all on unit vectors.
    _pml()
    import torch
    from pytorch_metric_learning import losses

    labels, x, refs, reference_labels = data
    x = x / np.linalg.norm(x, axis=1, keepdims=True)
    kwargs, pml_kwargs = {}, {}
    if refs is not None:
        refs = refs / np.linalg.norm(refs, axis=1, keepdims=True)
        kwargs = {"references": refs, "reference_labels": reference_labels}
        pml_kwargs = {
            "ref_emb": torch.tensor(refs),
            "ref_labels": torch.tensor(reference_labels),
        }
    want = losses.TripletMarginLoss()(
        torch.tensor(x), torch.tensor(labels), **pml_kwargs
    )
    got = online_triplet_loss(labels, x, mining="batch_all", margin=0.05, **kwargs)
    np.testing.assert_allclose(float(got), float(want), rtol=1e-5, atol=1e-6)
