"""Miners, and losses fed by miners, give pytorch-metric-learning's numbers.

On every backend: the mined masks, losses and gradients of every pipeline of
`tests/fixtures/make_miner_goldens.py` equal the golden values stored in
`tests/fixtures/miner_goldens.npz`. On PyTorch, where pytorch-metric-learning
is installed (a test-only dependency of the torch environment), the same
pipelines are also compared with it live on random batches.

pytorch-metric-learning's default distance (`LpDistance`) L2-normalises the
embeddings; the package's distances do not, so the package side normalises
them first (inside the differentiated function, so gradients are with
respect to the raw embeddings, as there).
"""

from __future__ import annotations

from pathlib import Path

import keras
import numpy as np
import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from keras_siamese import (
    circle_loss,
    multi_similarity_loss,
    ntxent_loss,
    online_contrastive_loss,
    online_triplet_loss,
    supervised_contrastive_loss,
)
from keras_siamese.distances import l2_normalize
from keras_siamese.miners import (
    BatchEasyHardMiner,
    MultiSimilarityMiner,
    PairMarginMiner,
    TripletMarginMiner,
)
from tests.helpers import to_numpy, value_and_grad

GOLDENS = Path(__file__).resolve().parent / "fixtures" / "miner_goldens.npz"
COSINE = "cosine_similarity"

# The package's counterparts of the pipelines' pieces.
MINERS = {
    "ms": lambda: MultiSimilarityMiner(),
    "pair_margin": lambda: PairMarginMiner(),
    "pair_margin_cosine": lambda: PairMarginMiner(0.7, 0.2, distance=COSINE),
    "triplet_all": lambda: TripletMarginMiner(0.2, "all"),
    "triplet_hard": lambda: TripletMarginMiner(0.2, "hard"),
    "triplet_semihard": lambda: TripletMarginMiner(0.2, "semihard"),
    "triplet_easy": lambda: TripletMarginMiner(0.2, "easy"),
    "triplet_semihard_cosine": lambda: TripletMarginMiner(
        0.2, "semihard", distance=COSINE
    ),
    "easy_hard": lambda: BatchEasyHardMiner(),
    "hard_hard": lambda: BatchEasyHardMiner("hard", "hard"),
    "semihard_easy": lambda: BatchEasyHardMiner("semihard", "easy"),
    "all_hard": lambda: BatchEasyHardMiner("all", "hard"),
    "easy_all_range": lambda: BatchEasyHardMiner(
        "easy", "all", allowed_pos_range=(0.3, 1.2)
    ),
}


def _triplet(margin=0.05, **kwargs):
    def loss(labels, x, miner, **refs):
        options = {"miner": miner} if miner is not None else {"mining": "batch_all"}
        return online_triplet_loss(
            labels, x, margin=margin, **options, **kwargs, **refs
        )

    return loss


def _contrastive(**kwargs):
    def loss(labels, x, miner, **refs):
        return online_contrastive_loss(labels, x, miner=miner, **kwargs, **refs)

    return loss


def _labelled(function, **kwargs):
    def loss(labels, x, miner, **refs):
        options = {} if miner is None else {"miner": miner}
        return function(labels, x, **kwargs, **options, **refs)

    return loss


# loss name -> (package loss, whether PML's distance normalises the embeddings)
LOSSES = {
    "triplet": (_triplet(), True),
    "triplet_wide": (_triplet(0.5), True),
    "triplet_mean": (_triplet(reducer="mean"), True),
    "triplet_smooth": (_triplet(smooth_loss=True), True),
    "triplet_cosine": (_triplet(0.1, distance=COSINE), False),
    "contrastive": (_contrastive(), True),
    "contrastive_cosine": (
        _contrastive(pos_margin=1.0, neg_margin=0.3, distance=COSINE),
        False,
    ),
    "supcon_lp": (_labelled(supervised_contrastive_loss, distance="euclidean"), True),
    "supcon_dot": (
        _labelled(
            supervised_contrastive_loss,
            temperature=0.5,
            distance="dot_product_similarity",
        ),
        False,
    ),
    "ntxent_lp": (_labelled(ntxent_loss, distance="euclidean"), True),
    "ntxent_dot": (
        _labelled(ntxent_loss, temperature=0.5, distance="dot_product_similarity"),
        False,
    ),
    "multi_similarity_lp": (
        _labelled(multi_similarity_loss, distance="euclidean"),
        True,
    ),
    # The cosine similarity normalises anyway; normalised here so that a
    # miner measuring with the Euclidean distance sees what PML's sees.
    "multi_similarity": (_labelled(multi_similarity_loss), True),
    "circle": (_labelled(circle_loss), True),
    "supcon": (_labelled(supervised_contrastive_loss), True),
    "ntxent": (_labelled(ntxent_loss), True),
    "contrastive_per_anchor": (_contrastive(reducer="per_anchor"), True),
    "supcon_mean": (_labelled(supervised_contrastive_loss, reducer="mean"), True),
    "supcon_per_anchor": (
        _labelled(supervised_contrastive_loss, reducer="per_anchor"),
        True,
    ),
    "ntxent_nonzero": (_labelled(ntxent_loss, reducer="nonzero_mean"), True),
    "ntxent_per_anchor": (_labelled(ntxent_loss, reducer="per_anchor"), True),
    "multi_similarity_nonzero": (
        _labelled(multi_similarity_loss, reducer="nonzero_mean"),
        True,
    ),
    "circle_mean": (_labelled(circle_loss, reducer="mean"), True),
}


def _pipeline(name: str) -> tuple[str | None, str]:
    miner, loss = name.split("+")
    return (None if miner == "none" else miner), loss


def _normalised(name: str) -> bool:
    return LOSSES[_pipeline(name)[1]][1]


def _compute(name, labels, x, references=None, reference_labels=None):
    """Loss and gradients of pipeline `name` on the current backend."""
    miner_name, loss_name = _pipeline(name)
    miner = None if miner_name is None else MINERS[miner_name]()
    loss, normalise = LOSSES[loss_name]

    def prepare(e):
        return l2_normalize(e) if normalise else e

    if references is None:
        return value_and_grad(lambda e: loss(labels, prepare(e), miner), x)
    return value_and_grad(
        lambda e, r: loss(
            labels,
            prepare(e),
            miner,
            references=prepare(r),
            reference_labels=reference_labels,
        ),
        x,
        references,
    )


def _masks(name, labels, x, references=None, reference_labels=None):
    """The package miner's masks on the inputs PML's miner saw."""
    miner_name = _pipeline(name)[0]
    miner = MINERS[miner_name]()
    normalise = miner.distance != COSINE
    x = to_numpy(l2_normalize(x)) if normalise else x
    refs = {}
    if references is not None:
        references = to_numpy(l2_normalize(references)) if normalise else references
        refs = {"references": references, "reference_labels": reference_labels}
    if miner.kind == "triplets":
        return {"triplets": to_numpy(miner.triplet_mask(labels, x, **refs))}
    positive, negative = miner(labels, x, **refs)
    return {"positive": to_numpy(positive), "negative": to_numpy(negative)}


def _assert_gradients_close(got, want):
    scale = max(float(np.abs(want).max()), 1e-6)
    np.testing.assert_allclose(got, want, rtol=2e-4, atol=2e-5 * scale)


def _goldens() -> dict[str, dict[str, np.ndarray]]:
    with np.load(GOLDENS) as archive:
        cases: dict[str, dict[str, np.ndarray]] = {}
        for key in archive.files:
            if "/" in key:
                case, field = key.split("/")
                cases.setdefault(case, {})[field] = archive[key]
    return cases


CASES = _goldens()


def _name(case: str) -> str:
    return case.rsplit("-", 1)[0].removesuffix("-references")


def test_goldens_cover_every_miner_and_loss_with_and_without_references():
    names = {case.rsplit("-", 1)[0] for case in CASES}
    plain = {name for name in names if not name.endswith("-references")}
    assert names == plain | {f"{name}-references" for name in plain}
    pieces = [_pipeline(name) for name in plain]
    assert {miner for miner, _ in pieces} == set(MINERS) | {None}
    assert {loss for _, loss in pieces} == set(LOSSES)


# Every case on PyTorch (beside the live comparison); one seed of each
# pipeline elsewhere, which keeps the suite's time on the eager backends.
GOLDEN_CASES = sorted(
    case
    for case in CASES
    if keras.backend.backend() == "torch" or case.rsplit("-", 1)[1] == "0"
)


@pytest.mark.parametrize("case", GOLDEN_CASES)
def test_masks_losses_and_gradients_equal_the_goldens(case):
    data = CASES[case]
    name = _name(case)
    args = (data["labels"], data["embeddings"])
    if "references" in data:
        args += (data["references"], data["reference_labels"])
    value, grads = _compute(name, *args)
    np.testing.assert_allclose(float(value), float(data["loss"]), rtol=1e-5, atol=1e-6)
    _assert_gradients_close(grads[0], data["grad_embeddings"])
    if "references" in data:
        _assert_gradients_close(grads[1], data["grad_references"])
    if _pipeline(name)[0] is not None:
        for key, mask in _masks(name, *args).items():
            np.testing.assert_array_equal(mask, data[key], err_msg=key)


# --------------------------------------------------------------------------
# Live comparison on PyTorch.


def _pml_pipelines():
    if keras.backend.backend() != "torch":
        pytest.skip("pytorch-metric-learning runs on the torch backend only")
    pytest.importorskip("pytorch_metric_learning")
    from tests.fixtures import make_miner_goldens

    return make_miner_goldens


@st.composite
def _batches(draw, batch=10, references=7, dim=4):
    """Labels of 1 to `batch` classes, rows in general position, maybe references."""
    classes = draw(st.sampled_from([1, 2, 3, batch]))
    rng = np.random.default_rng(draw(st.integers(0, 2**32 - 1)))
    labels = rng.integers(0, classes, batch)
    x = rng.normal(size=(batch, dim)).astype("float32")
    if not draw(st.booleans()):
        return labels, x, None, None
    reference_labels = rng.integers(0, classes, references)
    refs = rng.normal(size=(references, dim)).astype("float32")
    return labels, x, refs, reference_labels


PIPELINE_NAMES = sorted({_name(case) for case in CASES})


@pytest.mark.parametrize("name", PIPELINE_NAMES)
@settings(max_examples=20, deadline=None)
@given(data=_batches())
def test_equal_to_pytorch_metric_learning_live(name, data):
    pml = _pml_pipelines()
    labels, x, refs, reference_labels = data
    args = (x, labels) if refs is None else (x, labels, refs, reference_labels)
    want, want_grads, want_masks = pml.run(name, *args)
    inputs = (labels, x) if refs is None else (labels, x, refs, reference_labels)
    got, grads = _compute(name, *inputs)
    np.testing.assert_allclose(float(got), want, rtol=1e-5, atol=1e-6)
    for grad, want_grad in zip(grads, want_grads):
        _assert_gradients_close(grad, want_grad)
    if want_masks:
        for key, mask in _masks(name, *inputs).items():
            np.testing.assert_array_equal(mask, want_masks[key], err_msg=key)
