"""The self-supervised losses give lightly's numbers.

On every backend: losses and gradients equal the golden values stored in
`tests/fixtures/ssl_goldens.npz` (written by `make_ssl_goldens.py` with
lightly 1.6.0's losses in their default configuration), degenerate batches
included. On PyTorch, where lightly is installed (a test-only dependency of
the torch environment), the package is also compared with it live on random
batches, and `vicreg_loss` with pytorch-metric-learning's `VICRegLoss`.
"""

from __future__ import annotations

from pathlib import Path

import keras
import numpy as np
import pytest
from hypothesis import given
from hypothesis import strategies as st

from keras_siamese import (
    barlow_twins_loss,
    byol_loss,
    negative_cosine_similarity,
    vicreg_loss,
)
from tests import lightly_reference
from tests.helpers import value_and_grad

GOLDENS = Path(__file__).resolve().parent / "fixtures" / "ssl_goldens.npz"

# golden name -> the package's function with its defaults
LOSSES = {
    "negative_cosine": negative_cosine_similarity,
    "negative_cosine-stacked": negative_cosine_similarity,
    "byol-stacked": byol_loss,
    "barlow_twins": barlow_twins_loss,
    "vicreg": vicreg_loss,
}


def _goldens() -> dict[str, dict[str, np.ndarray]]:
    with np.load(GOLDENS) as archive:
        cases: dict[str, dict[str, np.ndarray]] = {}
        for key in archive.files:
            if key.count("/") == 2:
                name, kind, field = key.split("/")
                cases.setdefault(f"{name}/{kind}", {})[field] = archive[key]
    return cases


CASES = _goldens()


def _compute(name: str, y: np.ndarray) -> tuple[float, np.ndarray]:
    value, (grad,) = value_and_grad(lambda t: LOSSES[name](None, t), y)
    return float(value), grad


def _assert_close(value, grad, want_value, want_grad, y, kind):
    np.testing.assert_allclose(value, want_value, rtol=1e-5, atol=1e-6)
    # Relative to the largest entry (entries near zero are round-off there),
    # or to the loss over the size of the inputs where that is larger: at an
    # optimum (identical views, tiny vectors) or in a barely conditioned
    # batch (two examples), the float32 round-off of either library is a
    # fraction of the gradient's natural scale, not of its value there.
    natural = abs(want_value) / max(float(np.sqrt(np.mean(np.square(y)))), 1e-3)
    atol = 2e-5 * max(float(np.abs(want_grad).max()), 0.1, natural)
    if kind == "constant":
        # The exact gradient is 0, and what either library computes is the
        # round-off of centring the embeddings (about 1e-7 |y|), divided by
        # the floored standard deviation of the variance terms.
        atol = max(atol, 1e-4 * float(np.abs(y).max()))
    np.testing.assert_allclose(grad, want_grad, rtol=2e-4, atol=atol)


def test_goldens_cover_every_loss_and_the_degenerate_batches():
    names = {case.split("/")[0] for case in CASES}
    assert names == set(LOSSES)
    for name in LOSSES:
        kinds = {case.split("/")[1] for case in CASES if case.startswith(f"{name}/")}
        assert {"random-0", "identical", "two", "constant"} <= kinds, name


@pytest.mark.parametrize("case", sorted(CASES))
def test_loss_and_gradients_equal_the_goldens(case):
    data = CASES[case]
    name, kind = case.split("/")
    value, grad = _compute(name, data["y"])
    assert np.isfinite(value) and np.isfinite(grad).all()
    _assert_close(value, grad, float(data["loss"]), data["grad"], data["y"], kind)


# --------------------------------------------------------------------------
# Live comparison on PyTorch.


def _torch():
    if keras.backend.backend() != "torch":
        pytest.skip("lightly runs on the torch backend only")
    if lightly_reference.root() is None:
        pytest.skip("lightly is not installed")
    import torch

    return torch


@st.composite
def _batches(draw, stacked=False, min_dim=1):
    """Two views of 2 to 9 examples; random, identical views or constant."""
    n = draw(st.integers(2, 9))
    dim = draw(st.integers(min_dim, 6))
    kind = draw(st.sampled_from(["random", "random", "identical", "constant"]))
    rng = np.random.default_rng(draw(st.integers(0, 2**32 - 1)))
    scale = 10.0 ** draw(st.integers(-2, 1))
    y = scale * rng.normal(size=(2 * n, 2, dim) if stacked else (2 * n, dim))
    if kind == "identical":
        y[n:] = y[:n]
    elif kind == "constant":
        y[:] = y[0]
    return kind, y.astype("float32")


def _lightly_value_and_grad(name, y):
    torch = _torch()
    classes = lightly_reference.losses()
    tensor = torch.tensor(y, requires_grad=True)
    half = y.shape[0] // 2
    if name.endswith("-stacked"):
        criterion = classes["NegativeCosineSimilarity"]()
        p, z = tensor[:, 0], tensor[:, 1]
        loss = 0.5 * (
            criterion(p[:half], z[half:].detach())
            + criterion(p[half:], z[:half].detach())
        )
        if name.startswith("byol"):
            loss = 2 + 2 * loss
    else:
        cls = {
            "negative_cosine": "NegativeCosineSimilarity",
            "barlow_twins": "BarlowTwinsLoss",
            "vicreg": "VICRegLoss",
        }[name]
        loss = classes[cls]()(tensor[:half], tensor[half:])
    (grad,) = torch.autograd.grad(loss, [tensor])
    return float(loss.detach()), grad.numpy()


@pytest.mark.parametrize("name", ["barlow_twins", "vicreg"])
@given(batch=_batches())
def test_equal_to_lightly_live(name, batch):
    _torch()
    kind, y = batch
    want, want_grad = _lightly_value_and_grad(name, y)
    got, grad = _compute(name, y)
    _assert_close(got, grad, want, want_grad, y, kind)


# In one dimension a cosine is +-1, whose gradient, 0, is round-off alone in
# both libraries: the cosine losses are compared from two dimensions up.
@given(batch=_batches(min_dim=2))
def test_negative_cosine_similarity_equals_lightly_live(batch):
    _torch()
    kind, y = batch
    want, want_grad = _lightly_value_and_grad("negative_cosine", y)
    got, grad = _compute("negative_cosine", y)
    _assert_close(got, grad, want, want_grad, y, kind)


@pytest.mark.parametrize("name", ["negative_cosine-stacked", "byol-stacked"])
@given(batch=_batches(stacked=True, min_dim=2))
def test_stacked_layout_equals_lightly_with_a_stop_gradient_live(name, batch):
    _torch()
    kind, y = batch
    want, want_grad = _lightly_value_and_grad(name, y)
    got, grad = _compute(name, y)
    _assert_close(got, grad, want, want_grad, y, kind)
    assert not grad[:, 1].any()  # the targets get no gradient


@given(batch=_batches())
def test_vicreg_equals_pytorch_metric_learning_live(batch):
    torch = _torch()
    kind, y = batch
    pml_losses = pytest.importorskip("pytorch_metric_learning.losses")
    tensor = torch.tensor(y, requires_grad=True)
    half = y.shape[0] // 2
    want = pml_losses.VICRegLoss()(tensor[:half], ref_emb=tensor[half:])
    (want_grad,) = torch.autograd.grad(want, [tensor])
    got, grad = _compute("vicreg", y)
    _assert_close(got, grad, float(want.detach()), want_grad.numpy(), y, kind)
