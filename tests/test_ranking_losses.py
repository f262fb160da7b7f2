"""The ranking losses: multiple negatives ranking, CLIP, and `LogitScale`.

On every backend: values and gradients equal the goldens of
`tests/fixtures/ranking_goldens.npz` (written by `make_ranking_goldens.py`
with sentence-transformers 6.3.0 and open_clip 3.3.0), and an independent
NumPy reference (accidental hits included); hypothesis properties (finite
gradients, invariance to the scale of the rows under cosine similarity, to
the order of the rows and of the hard negatives, non-negativity); errors;
`LogitScale`'s clamp after an optimizer step and training in `fit`. On
PyTorch, where the references are installed (test-only dependencies of the
torch environment), the losses are compared with them live; on TensorFlow,
`global_batch` under `MirroredStrategy` equals one device.
"""

from __future__ import annotations

import json
import math
import os
import subprocess
import sys
import textwrap
from pathlib import Path

import keras
import numpy as np
import pytest
from hypothesis import given
from hypothesis import strategies as st

from keras_siamese import (
    ClipLoss,
    LogitScale,
    MultipleNegativesRankingLoss,
    NTXentLoss,
    SiameseWrapper,
    SupervisedContrastiveLoss,
    clip_loss,
    multiple_negatives_ranking_loss,
)
from tests import ranking_reference
from tests.helpers import few_examples, to_numpy, value_and_grad

GOLDENS = Path(__file__).resolve().parent / "fixtures" / "ranking_goldens.npz"
# golden name -> arguments of multiple_negatives_ranking_loss
RANKING = {
    "mnrl-cosine": {"scale": 20.0, "similarity": "cosine", "symmetric": False},
    "mnrl-dot": {"scale": 1.0, "similarity": "dot", "symmetric": False},
    "mnsrl-cosine": {"scale": 20.0, "similarity": "cosine", "symmetric": True},
    "mnsrl-dot": {"scale": 1.0, "similarity": "dot", "symmetric": True},
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


def _assert_close(value, grad, want_value, want_grad, logits_scale=1.0):
    # Dot-product logits grow with the embeddings; a float32 loss is a
    # difference of such logits, so its round-off is relative to them.
    np.testing.assert_allclose(value, want_value, rtol=1e-5, atol=1e-6 * logits_scale)
    atol = 2e-5 * max(float(np.abs(want_grad).max()), 0.1)
    np.testing.assert_allclose(grad, want_grad, rtol=2e-4, atol=atol)


def _ranking(y, **kwargs):
    value, (grad,) = value_and_grad(
        lambda t: multiple_negatives_ranking_loss(None, t, **kwargs), y
    )
    return float(value), grad


def _clip_through_layer(y, log_scale):
    """Value and gradients of `ClipLoss` after `LogitScale` holding `log_scale`."""
    layer = LogitScale()
    layer.build(y.shape)

    def loss(t, s):
        scaled, _ = layer.stateless_call([s], [], t)
        return clip_loss(None, scaled)

    value, (grad, log_grad) = value_and_grad(loss, y, np.float32(log_scale))
    return float(value), grad, log_grad


# --------------------------------------------------------------------------
# Goldens, on every backend.


def test_goldens_cover_every_loss_and_layout():
    names = {case.split("/")[0] for case in CASES}
    assert names == {*RANKING, "clip"}
    for name in RANKING:
        kinds = {case.split("/")[1] for case in CASES if case.startswith(f"{name}/")}
        assert {"pairs", "random-0", "three-negatives", "two", "identical"} <= kinds
    shapes = {CASES[case]["y"].shape[1] for case in CASES if case.startswith("mnrl")}
    assert shapes == {2, 3, 5}


@pytest.mark.parametrize("case", sorted(c for c in CASES if not c.startswith("clip")))
def test_multiple_negatives_ranking_equals_the_goldens(case):
    data = CASES[case]
    value, grad = _ranking(data["y"], **RANKING[case.split("/")[0]])
    assert np.isfinite(value) and np.isfinite(grad).all()
    _assert_close(value, grad, float(data["loss"]), data["grad"])


@pytest.mark.parametrize("case", sorted(c for c in CASES if c.startswith("clip")))
def test_clip_loss_through_logit_scale_equals_the_goldens(case):
    data = CASES[case]
    value, grad, log_grad = _clip_through_layer(data["y"], data["log_scale"])
    _assert_close(value, grad, float(data["loss"]), data["grad"])
    np.testing.assert_allclose(log_grad, data["log_scale_grad"], rtol=1e-4, atol=1e-6)


def test_the_class_gives_the_function_value():
    data = CASES["mnsrl-cosine/random-0"]
    loss = MultipleNegativesRankingLoss(symmetric=True)
    np.testing.assert_allclose(
        to_numpy(loss(None, data["y"])), float(data["loss"]), rtol=1e-5
    )
    data = CASES["clip/random-0"]
    layer = LogitScale(initial=float(np.exp(data["log_scale"])))
    np.testing.assert_allclose(
        to_numpy(ClipLoss()(None, layer(data["y"]))), float(data["loss"]), rtol=1e-5
    )


# --------------------------------------------------------------------------
# An independent NumPy reference, with accidental hits.


def _cos(u, v):
    return float(u @ v / (np.linalg.norm(u) * np.linalg.norm(v)))


def _logsumexp(values):
    peak = max(values)
    return peak + math.log(sum(math.exp(v - peak) for v in values))


def reference(y, scale, similarity, symmetric, ids=None):
    """The loss by its definition, candidate by candidate, in float64."""
    y = y.astype("float64")
    rows, columns = y.shape[:2]
    sim = _cos if similarity == "cosine" else lambda u, v: float(u @ v)
    # (row, column) of every candidate, and its id
    candidates = [(j, c) for c in range(1, columns) for j in range(rows)]
    ids = None if ids is None else np.reshape(ids, (rows, columns - 1))

    def hit(i, j, c):
        return ids is not None and (j, c) != (i, 1) and ids[j, c - 1] == ids[i, 0]

    forward = []
    for i in range(rows):
        terms = [
            scale * sim(y[i, 0], y[j, c]) for j, c in candidates if not hit(i, j, c)
        ]
        forward.append(_logsumexp(terms) - scale * sim(y[i, 0], y[i, 1]))
    if not symmetric:
        return float(np.mean(forward))
    backward = []
    for j in range(rows):
        terms = [scale * sim(y[i, 0], y[j, 1]) for i in range(rows) if not hit(j, i, 1)]
        backward.append(_logsumexp(terms) - scale * sim(y[j, 0], y[j, 1]))
    return float((np.mean(forward) + np.mean(backward)) / 2)


@st.composite
def ranking_batches(draw, min_rows=1):
    """`(y, ids, kwargs)`: 1 to 7 rows of 2 + 0..3 columns, ids with repeats."""
    rows = draw(st.integers(min_rows, 7))
    negatives = draw(st.integers(0, 3))
    dim = draw(st.integers(2, 5))
    rng = np.random.default_rng(draw(st.integers(0, 2**32 - 1)))
    size = 10.0 ** draw(st.integers(-1, 1))
    y = (size * rng.normal(size=(rows, 2 + negatives, dim))).astype("float32")
    # Few distinct ids, so that candidates repeat the positives' ids.
    ids = rng.integers(0, rows + 1, size=(rows, 1 + negatives))
    kwargs = {
        "similarity": draw(st.sampled_from(["cosine", "dot"])),
        "symmetric": draw(st.booleans()),
    }
    kwargs["scale"] = draw(
        st.sampled_from([1.0, 20.0] if kwargs["similarity"] == "cosine" else [0.1, 1.0])
    )
    return y, ids, kwargs


def _logit_size(y, kwargs):
    if kwargs["similarity"] == "cosine":
        return kwargs["scale"]
    return kwargs["scale"] * float(np.max(np.sum(np.square(y), axis=-1)))


@given(batch=ranking_batches())
def test_equals_the_numpy_reference(batch):
    y, _, kwargs = batch
    got = float(to_numpy(multiple_negatives_ranking_loss(None, y, **kwargs)))
    want = reference(y, **kwargs)
    np.testing.assert_allclose(got, want, rtol=1e-4, atol=1e-5 * _logit_size(y, kwargs))


@given(batch=ranking_batches())
def test_removing_accidental_hits_equals_the_numpy_reference(batch):
    y, ids, kwargs = batch
    ids_true = ids if ids.shape[1] > 1 else ids[:, 0]  # (batch,) without negatives
    loss = MultipleNegativesRankingLoss(remove_accidental_hits=True, **kwargs)
    got = float(to_numpy(loss(ids_true, y)))
    want = reference(y, ids=ids, **kwargs)
    np.testing.assert_allclose(got, want, rtol=1e-4, atol=1e-5 * _logit_size(y, kwargs))


def test_removing_accidental_hits_changes_the_loss_only_with_repeated_ids():
    y = np.random.default_rng(0).normal(size=(4, 3, 3)).astype("float32")
    plain = MultipleNegativesRankingLoss(scale=1.0)(None, y)
    loss = MultipleNegativesRankingLoss(scale=1.0, remove_accidental_hits=True)
    distinct = np.arange(8).reshape(4, 2)
    np.testing.assert_allclose(to_numpy(loss(distinct, y)), to_numpy(plain), rtol=1e-6)
    repeated = distinct.copy()
    repeated[2, 1] = repeated[0, 0]  # row 2's hard negative is row 0's positive
    assert float(to_numpy(loss(repeated, y))) < float(to_numpy(plain))


# --------------------------------------------------------------------------
# Properties.


@few_examples()
@given(batch=ranking_batches(), zero_row=st.booleans())
def test_gradients_are_finite_and_the_loss_is_not_negative(batch, zero_row):
    y, _, kwargs = batch
    if zero_row:
        y[0, 1] = 0.0  # a zero embedding: cosine 0, no NaN
    value, grad = _ranking(y, **kwargs)
    assert np.isfinite(value) and np.isfinite(grad).all()
    assert value >= -1e-5 * _logit_size(y, kwargs)


@few_examples()
@given(batch=ranking_batches(), seed=st.integers(0, 2**32 - 1))
def test_cosine_loss_is_invariant_to_the_length_of_every_embedding(batch, seed):
    y, _, kwargs = batch
    kwargs["similarity"] = "cosine"
    factors = np.random.default_rng(seed).uniform(0.1, 10.0, size=(*y.shape[:2], 1))
    scaled = (y * factors).astype("float32")
    np.testing.assert_allclose(
        to_numpy(multiple_negatives_ranking_loss(None, scaled, **kwargs)),
        to_numpy(multiple_negatives_ranking_loss(None, y, **kwargs)),
        rtol=1e-4,
        atol=1e-5 * kwargs["scale"],
    )


@few_examples()
@given(batch=ranking_batches(), seed=st.integers(0, 2**32 - 1))
def test_permuting_the_rows_permutes_the_gradient(batch, seed):
    y, _, kwargs = batch
    order = np.random.default_rng(seed).permutation(len(y))
    value, grad = _ranking(y, **kwargs)
    value_permuted, grad_permuted = _ranking(y[order], **kwargs)
    size = _logit_size(y, kwargs)
    np.testing.assert_allclose(value_permuted, value, rtol=1e-5, atol=1e-5 * size)
    atol = 1e-5 * max(float(np.abs(grad).max()), 1e-3) * max(size, 1.0)
    np.testing.assert_allclose(grad_permuted, grad[order], rtol=1e-4, atol=atol)


@few_examples()
@given(batch=ranking_batches(), seed=st.integers(0, 2**32 - 1))
def test_the_order_of_the_hard_negatives_does_not_matter(batch, seed):
    y, _, kwargs = batch
    columns = np.concatenate(
        [[0, 1], 2 + np.random.default_rng(seed).permutation(y.shape[1] - 2)]
    )
    np.testing.assert_allclose(
        to_numpy(multiple_negatives_ranking_loss(None, y[:, columns], **kwargs)),
        to_numpy(multiple_negatives_ranking_loss(None, y, **kwargs)),
        rtol=1e-5,
        atol=1e-5 * _logit_size(y, kwargs),
    )


@given(batch=ranking_batches(), scale=st.sampled_from([1.0, 14.0, 100.0]))
def test_symmetric_pairs_are_the_clip_loss_of_logit_scaled_features(batch, scale):
    y = batch[0][:, :2]
    layer = LogitScale(initial=scale, maximum=100.0)
    np.testing.assert_allclose(
        to_numpy(clip_loss(None, layer(y))),
        to_numpy(multiple_negatives_ranking_loss(None, y, scale=scale, symmetric=True)),
        rtol=1e-4,
        atol=1e-5 * scale,
    )


def test_more_hard_negatives_never_lower_the_forward_loss():
    y = np.random.default_rng(3).normal(size=(5, 4, 3)).astype("float32")
    losses = [
        float(to_numpy(multiple_negatives_ranking_loss(None, y[:, :k], scale=5.0)))
        for k in (2, 3, 4)
    ]
    assert losses[0] < losses[1] < losses[2]


def test_an_empty_batch_gives_zero():
    empty = np.zeros((0, 3, 4), "float32")
    assert float(to_numpy(multiple_negatives_ranking_loss(None, empty))) == 0.0


# --------------------------------------------------------------------------
# LogitScale.


def test_logit_scale_outputs_normalised_features_times_the_root_of_the_scale():
    x = np.random.default_rng(0).normal(size=(3, 2, 4)).astype("float32")
    layer = LogitScale(initial=25.0)
    out = to_numpy(layer(x))
    unit = x / np.linalg.norm(x, axis=-1, keepdims=True)
    np.testing.assert_allclose(out, 5.0 * unit, rtol=1e-5)
    np.testing.assert_allclose(to_numpy(layer.logit_scale), 25.0, rtol=1e-6)
    # The dot product of two outputs is the scale times the cosine.
    np.testing.assert_allclose(
        np.sum(out[:, 0] * out[:, 1], axis=-1),
        25.0 * np.sum(unit[:, 0] * unit[:, 1], axis=-1),
        rtol=1e-5,
    )


def test_logit_scale_defaults_are_open_clip_s():
    layer = LogitScale()
    layer.build((None, 2, 3))
    np.testing.assert_allclose(to_numpy(layer.log_scale), math.log(1 / 0.07), rtol=1e-6)
    assert layer.maximum == 100.0


@pytest.mark.parametrize(("gradient", "bound"), [(-1e3, math.log(100.0)), (1e3, 0.0)])
def test_an_optimizer_step_clamps_the_log_scale(gradient, bound):
    layer = LogitScale()
    layer.build((None, 2, 3))
    optimizer = keras.optimizers.SGD(learning_rate=1.0)
    optimizer.apply([keras.ops.convert_to_tensor(gradient)], [layer.log_scale])
    np.testing.assert_allclose(to_numpy(layer.log_scale), bound, rtol=1e-6, atol=1e-7)


def test_fit_trains_the_logit_scale_with_the_encoders():
    rng = np.random.default_rng(0)
    images = rng.normal(size=(32, 4)).astype("float32")
    texts = (images @ rng.normal(size=(4, 6))).astype("float32")
    image, text = keras.Input((4,)), keras.Input((6,))
    pair = keras.ops.stack(
        [keras.layers.Dense(3)(image), keras.layers.Dense(3)(text)], axis=1
    )
    scale = LogitScale(initial=2.0, maximum=3.0)
    model = keras.Model([image, text], scale(pair))
    model.compile(optimizer=keras.optimizers.SGD(5.0), loss=ClipLoss())
    history = model.fit(
        [images, texts], np.zeros(32), batch_size=8, epochs=2, verbose=0
    )
    assert np.isfinite(history.history["loss"]).all()
    log_scale = float(to_numpy(scale.log_scale))
    assert log_scale != pytest.approx(math.log(2.0))
    assert 0.0 <= log_scale <= math.log(3.0) + 1e-6


def test_fit_on_anchor_positive_negative_inputs_lowers_the_loss():
    keras.utils.set_random_seed(0)
    rng = np.random.default_rng(0)
    x = rng.normal(size=(64, 4)).astype("float32")
    anchors, positives = x, x + 0.5 * rng.normal(size=x.shape).astype("float32")
    negatives = rng.normal(size=x.shape).astype("float32")
    encoder = keras.Sequential([keras.Input((4,)), keras.layers.Dense(8)])
    inputs = [keras.Input((4,)) for _ in range(3)]
    model = keras.Model(inputs, SiameseWrapper(encoder, merge="stack")(inputs))
    model.compile(
        optimizer=keras.optimizers.Adam(0.01), loss=MultipleNegativesRankingLoss()
    )
    data = [anchors, positives, negatives]
    before = model.evaluate(data, np.zeros(64), batch_size=64, verbose=0)
    history = model.fit(
        data, np.zeros(64), batch_size=16, epochs=10, shuffle=False, verbose=0
    )
    after = model.evaluate(data, np.zeros(64), batch_size=64, verbose=0)
    assert np.isfinite(history.history["loss"]).all()
    assert after < 0.9 * before, (before, after)


# --------------------------------------------------------------------------
# Errors.


@pytest.mark.parametrize(
    ("kwargs", "error", "match"),
    [
        ({"scale": 0.0}, ValueError, "scale"),
        ({"scale": float("nan")}, ValueError, "scale"),
        ({"scale": "20"}, TypeError, "scale"),
        ({"similarity": "euclidean"}, ValueError, "similarity"),
        ({"symmetric": 1}, TypeError, "symmetric"),
        ({"remove_accidental_hits": "yes"}, TypeError, "remove_accidental_hits"),
        ({"global_batch": None}, TypeError, "global_batch"),
    ],
)
def test_bad_arguments_are_refused_at_construction_and_call(kwargs, error, match):
    with pytest.raises(error, match=match):
        MultipleNegativesRankingLoss(**kwargs)
    if "global_batch" not in kwargs:
        y = np.zeros((2, 2, 3), "float32")
        with pytest.raises(error, match=match):
            multiple_negatives_ranking_loss(None, y, **kwargs)


@pytest.mark.parametrize("shape", [(4, 3), (4, 1, 3), (4, 2, 2, 3)])
def test_y_pred_of_another_layout_is_refused(shape):
    with pytest.raises(ValueError, match=r"\(batch, 2 \+ negatives, dim\)"):
        MultipleNegativesRankingLoss()(None, np.zeros(shape, "float32"))


@pytest.mark.parametrize("shape", [(4, 3), (4, 3, 3)])
def test_clip_loss_takes_pairs_only(shape):
    with pytest.raises(ValueError, match=r"\(batch, 2, dim\)"):
        ClipLoss()(None, np.ones(shape, "float32"))


def test_candidate_ids_of_the_wrong_shape_or_missing_are_refused():
    y = np.ones((4, 3, 2), "float32")
    loss = MultipleNegativesRankingLoss(remove_accidental_hits=True)
    with pytest.raises(ValueError, match=r"\(batch, 1 \+ n\)"):
        loss(np.arange(4), y)  # one id per row, but two candidates per row
    with pytest.raises(ValueError, match="same batch size"):
        loss(np.arange(6).reshape(3, 2), y)
    with pytest.raises(ValueError, match=r"needs `y_true` \(the candidate ids\)"):
        loss(None, y)


def test_ids_beyond_float32_precision_are_refused_or_kept_exact():
    """Keras casts the class's `y_true` to float32, where 2**24 and
    2**24 + 1 would be one id: the class refuses NumPy ids beyond 2**24,
    and the function, given integer ids, keeps them apart."""
    y = np.random.default_rng(0).normal(size=(2, 2, 3)).astype("float32")
    big = np.array([2**24, 2**24 + 1])  # one float32 value
    loss = MultipleNegativesRankingLoss(scale=1.0, remove_accidental_hits=True)
    for ids in (big, -big, big.tolist(), big.astype("float64")):
        with pytest.raises(ValueError, match=r"at most 2\*\*24"):
            loss(ids, y)
    edge = np.array([2**24 - 1, 2**24])  # still exact in float32
    distinct = float(to_numpy(loss(np.arange(2), y)))
    assert float(to_numpy(loss(edge, y))) == pytest.approx(distinct, rel=1e-6)
    exact = multiple_negatives_ranking_loss(
        big, y, scale=1.0, remove_accidental_hits=True
    )
    assert float(to_numpy(exact)) == pytest.approx(distinct, rel=1e-6)


def test_only_the_losses_that_ignore_y_true_take_none():
    y = np.random.default_rng(0).normal(size=(4, 2, 3)).astype("float32")
    ignored = np.zeros(4, "float32")
    for loss in (MultipleNegativesRankingLoss(), ClipLoss()):
        np.testing.assert_allclose(
            to_numpy(loss(None, y)), to_numpy(loss(ignored, y)), rtol=1e-6
        )
    # A labelled loss names what is missing instead of taking every row
    # for one class.
    with pytest.raises(ValueError, match=r"needs `y_true` \(class labels\)"):
        NTXentLoss()(None, y[:, 0])


def test_sample_weight_is_refused():
    with pytest.raises(ValueError, match="sample_weight"):
        MultipleNegativesRankingLoss()(None, np.ones((2, 2, 3)), sample_weight=[1, 1])
    with pytest.raises(ValueError, match="sample_weight"):
        ClipLoss()(None, np.ones((2, 2, 3)), sample_weight=[1, 1])


@pytest.mark.parametrize(
    ("kwargs", "match"),
    [
        ({"initial": 0.5}, "initial"),
        ({"initial": 200.0}, "initial"),
        ({"maximum": 0.5}, "maximum"),
        ({"initial": float("inf")}, "initial"),
    ],
)
def test_logit_scale_refuses_scales_out_of_range(kwargs, match):
    with pytest.raises(ValueError, match=match):
        LogitScale(**kwargs)


# --------------------------------------------------------------------------
# Live comparison with sentence-transformers and open_clip, on PyTorch.


def _torch():
    if keras.backend.backend() != "torch":
        pytest.skip("the references run on the torch backend only")
    if not ranking_reference.available():
        pytest.skip("sentence-transformers or open_clip is not installed")
    import torch

    return torch


@given(batch=ranking_batches(min_rows=1))
def test_equals_sentence_transformers_live(batch):
    torch = _torch()
    y, _, kwargs = batch
    tensor = torch.tensor(y, requires_grad=True)
    want = ranking_reference.multiple_negatives_ranking(
        [tensor[:, i] for i in range(y.shape[1])], **kwargs
    )
    (want_grad,) = torch.autograd.grad(want, [tensor])
    value, grad = _ranking(y, **kwargs)
    size = _logit_size(y, kwargs)
    np.testing.assert_allclose(value, float(want.detach()), rtol=1e-5, atol=1e-5 * size)
    atol = 1e-5 * max(float(want_grad.abs().max()), 1e-3) * max(size, 1.0)
    np.testing.assert_allclose(grad, want_grad.numpy(), rtol=2e-4, atol=atol)


@given(
    batch=ranking_batches(min_rows=1),
    log_scale=st.floats(0.0, math.log(100.0)),
)
def test_clip_loss_equals_open_clip_live(batch, log_scale):
    torch = _torch()
    functional = torch.nn.functional
    y = batch[0][:, :2]
    tensor = torch.tensor(y, requires_grad=True)
    log_tensor = torch.tensor(np.float32(log_scale), requires_grad=True)
    want = ranking_reference.open_clip_loss()()(
        functional.normalize(tensor[:, 0], dim=-1),
        functional.normalize(tensor[:, 1], dim=-1),
        log_tensor.exp(),
    )
    want_grad, want_log_grad = torch.autograd.grad(want, [tensor, log_tensor])
    value, grad, log_grad = _clip_through_layer(y, log_scale)
    scale = math.exp(log_scale)
    np.testing.assert_allclose(
        value, float(want.detach()), rtol=1e-5, atol=1e-5 * scale
    )
    atol = 1e-5 * max(float(want_grad.abs().max()), 1e-3) * scale
    np.testing.assert_allclose(grad, want_grad.numpy(), rtol=2e-4, atol=atol)
    np.testing.assert_allclose(
        log_grad, want_log_grad.numpy(), rtol=1e-4, atol=1e-5 * scale
    )


# --------------------------------------------------------------------------
# The global batch under MirroredStrategy, on TensorFlow.

GLOBAL_BATCH_SCRIPT = textwrap.dedent(
    """
    import json
    import tensorflow as tf

    cpu = tf.config.list_physical_devices("CPU")[0]
    tf.config.set_logical_device_configuration(
        cpu, [tf.config.LogicalDeviceConfiguration()] * 2
    )
    import keras
    import numpy as np
    from keras_siamese import ClipLoss, LogitScale, MultipleNegativesRankingLoss

    BUILD = {
        "mnrl": lambda g: MultipleNegativesRankingLoss(scale=5.0, global_batch=g),
        "mnsrl": lambda g: MultipleNegativesRankingLoss(
            scale=5.0, symmetric=True, global_batch=g
        ),
        "mnrl-hits": lambda g: MultipleNegativesRankingLoss(
            scale=5.0, remove_accidental_hits=True, global_batch=g
        ),
        "clip": lambda g: ClipLoss(global_batch=g),
    }
    devices = [d.name for d in tf.config.list_logical_devices("CPU")]
    strategy = tf.distribute.MirroredStrategy(devices)
    replicas = strategy.num_replicas_in_sync
    rng = np.random.default_rng(1)
    x = rng.normal(size=(8, 3, 6)).astype("float32")
    ids = rng.integers(0, 5, size=(8, 2)).astype("float32")
    half = len(x) // replicas
    keras.utils.set_random_seed(0)
    with strategy.scope():
        model = keras.Sequential(
            [keras.Input((3, 6)), keras.layers.Dense(4), LogitScale(initial=5.0)]
        )
    slices = lambda a: strategy.experimental_distribute_values_from_function(
        lambda context: a[
            context.replica_id_in_sync_group * half :
            (context.replica_id_in_sync_group + 1) * half
        ]
    )

    def gradients(loss, features, labels, name):
        with tf.GradientTape() as tape:
            out = model(features)
            out = out[:, :2] if name == "clip" else out
            value = loss(labels if name == "mnrl-hits" else None, out)
        return value, tape.gradient(value, model.trainable_variables)

    out = {"replicas": replicas, "losses": {}}
    for name, build in BUILD.items():
        single_value, single_grads = gradients(build(False), x, ids, name)
        result = {"single": float(single_value)}
        for global_batch in (True, False):
            loss = build(global_batch)
            step = tf.function(
                lambda a, b: strategy.run(gradients, args=(loss, a, b, name))
            )
            values, grads = step(slices(x), slices(ids))
            key = "global" if global_batch else "per_replica"
            result[key] = [
                float(v) * replicas
                for v in strategy.experimental_local_results(values)
            ]
            summed = [strategy.reduce("SUM", g, axis=None) for g in grads]
            scale = max(float(np.max(np.abs(b.numpy()))) for b in single_grads)
            result[key + "_grad_error"] = max(
                float(np.max(np.abs(a.numpy() - b.numpy()))) / scale
                for a, b in zip(summed, single_grads)
            )
        out["losses"][name] = result
    print("RESULT", json.dumps(out))
    """
)


# Not marked slow although it runs a subprocess: it runs on one backend only,
# and the tensorflow environment skips slow tests.
@pytest.mark.skipif(
    keras.backend.backend() != "tensorflow", reason="tf.distribute on TensorFlow"
)
def test_tf_mirrored_strategy_global_batch_equals_one_device():
    result = subprocess.run(
        [sys.executable, "-c", GLOBAL_BATCH_SCRIPT],
        env={**os.environ, "KERAS_BACKEND": "tensorflow", "TF_CPP_MIN_LOG_LEVEL": "2"},
        capture_output=True,
        text=True,
        timeout=300,
    )
    assert result.returncode == 0, result.stderr[-3000:]
    (line,) = [x for x in result.stdout.splitlines() if x.startswith("RESULT ")]
    out = json.loads(line.removeprefix("RESULT "))
    assert out["replicas"] == 2
    for name, losses in out["losses"].items():
        np.testing.assert_allclose(
            losses["global"], [losses["single"]] * 2, rtol=1e-5, err_msg=name
        )
        assert losses["global_grad_error"] < 1e-5, name
        # Control: each replica's own slice gives another loss and gradient.
        assert not np.allclose(losses["per_replica"], losses["single"], rtol=1e-3)
        assert losses["per_replica_grad_error"] > 1e-3, name


# --------------------------------------------------------------------------
# The loss base the ranking losses share with NT-Xent and SupCon.


@pytest.mark.parametrize(
    ("cls", "name", "temperature", "reducer"),
    [
        (NTXentLoss, "ntxent_loss", 0.07, "mean"),
        (SupervisedContrastiveLoss, "supervised_contrastive_loss", 0.1, "nonzero_mean"),
    ],
)
def test_function_losses_keep_their_configs_and_attributes(
    cls, name, temperature, reducer
):
    # The config written before the losses shared `FunctionLoss`, key by key.
    saved = {
        "name": name,
        "reduction": "sum_over_batch_size",
        "global_batch": True,
        "dtype": "float32",
        "temperature": 0.5,
    }
    loss = cls.from_config(saved)
    # Arguments added since are written after them, at their defaults.
    added = {"distance": "cosine_similarity", "miner": None, "reducer": reducer}
    assert loss.get_config() == {**saved, **added}
    assert list(loss.get_config()) == [*saved, *added]
    assert loss.temperature == 0.5 and loss.global_batch is True
    assert cls().temperature == temperature
    with pytest.raises(AttributeError, match="margin"):
        _ = loss.margin


def test_ranking_configs_hold_the_function_arguments():
    loss = MultipleNegativesRankingLoss(scale=7.0, similarity="dot", symmetric=True)
    config = loss.get_config()
    assert {k: config[k] for k in ("scale", "similarity", "symmetric")} == {
        "scale": 7.0,
        "similarity": "dot",
        "symmetric": True,
    }
    assert config["remove_accidental_hits"] is False
    assert "fn" not in config
    assert loss.scale == 7.0 and loss.symmetric is True
