"""Cross-batch memory against brute-force NumPy over the recorded past batches."""

from __future__ import annotations

import itertools

import keras
import numpy as np
import pytest
from hypothesis import given
from hypothesis import strategies as st
from hypothesis.extra import numpy as hnp

from keras_siamese import (
    CrossBatchMemory,
    circle_loss,
    multi_similarity_loss,
    ntxent_loss,
    online_triplet_loss,
    supervised_contrastive_loss,
)
from tests.helpers import to_numpy, value_and_grad

MODES = ("batch_hard", "batch_all", "semi_hard")


def train_step(model, x, y=None, **kwargs):
    """One `train_on_batch`, returning this batch's loss alone.

    Keras before 3.8 does not reset the loss mean between `train_on_batch`
    calls on JAX, so the metrics are reset here first.
    """
    model.reset_metrics()
    return model.train_on_batch(x, y, **kwargs)


def read(variable):
    """A Keras variable's value as NumPy, on every backend."""
    return np.asarray(variable.numpy())


# --- independent reference -------------------------------------------------


def np_distance(a, b, distance):
    a, b = a.astype("float64"), b.astype("float64")
    if distance == "cosine":
        na = max(np.sqrt((a**2).sum()), 1e-6)
        nb = max(np.sqrt((b**2).sum()), 1e-6)
        return 1.0 - (a / na) @ (b / nb)
    if distance == "manhattan":
        return np.abs(a - b).sum()
    squares = ((a - b) ** 2).sum()
    return squares if distance == "squared_euclidean" else np.sqrt(squares)


def term(difference, margin, soft):
    return np.log1p(np.exp(difference)) if soft else max(difference + margin, 0.0)


def reference(
    labels,
    x,
    ref_labels,
    refs,
    allowed,
    mining,
    margin=1.0,
    distance="euclidean",
    soft=False,
):
    """Triplet loss, anchors = rows of `x`, positives/negatives = allowed `refs`."""
    losses = []
    for a in range(len(x)):
        d = {
            j: np_distance(x[a], refs[j], distance)
            for j in range(len(refs))
            if allowed[a][j]
        }
        pos = [j for j in d if ref_labels[j] == labels[a]]
        neg = [j for j in d if ref_labels[j] != labels[a]]
        if not pos or not neg:
            continue
        if mining == "batch_hard":
            losses.append(
                term(max(d[p] for p in pos) - min(d[n] for n in neg), margin, soft)
            )
        elif mining == "semi_hard":
            for p in pos:
                farther = [d[n] for n in neg if d[n] > d[p]]
                chosen = min(farther) if farther else max(d[n] for n in neg)
                losses.append(term(d[p] - chosen, margin, soft))
        else:
            for p, n in itertools.product(pos, neg):
                if d[p] - d[n] + margin > 0:
                    losses.append(d[p] - d[n] + margin)
    return float(np.mean(losses)) if losses else 0.0


def xbm_reference(labels, x, history, memory_size, **kwargs):
    """The XBM loss of batch `(labels, x)` after the batches in `history`.

    The memory holds the last `memory_size` examples of the stream including
    the current batch: the batch itself and the last `memory_size - batch`
    examples before it. Every anchor is compared with all of them but itself.
    """
    past_labels = np.concatenate([h[0] for h in history] or [np.zeros(0, int)])
    past_x = np.concatenate([h[1] for h in history] or [np.zeros((0, x.shape[1]))])
    start = max(len(past_x) - (memory_size - len(x)), 0)
    past_labels, past_x = past_labels[start:], past_x[start:]
    refs = np.concatenate([x, past_x])
    ref_labels = np.concatenate([labels, past_labels])
    allowed = [[j != a for j in range(len(refs))] for a in range(len(x))]
    return reference(labels, x, ref_labels, refs, allowed, **kwargs)


# --- the reference-taking triplet loss ---------------------------------------


@st.composite
def anchors_and_references(draw):
    """Grid values (exact in float32), one shape, random labels and mask.

    One shape, so that JAX compiles each operation once.
    """
    batch, size = 5, 7
    classes = draw(st.sampled_from([1, 2, 3]))
    ints = st.integers(-3, 3)
    x = draw(hnp.arrays("int32", (batch, 2), elements=ints)).astype("float32") / 2
    refs = draw(hnp.arrays("int32", (size, 2), elements=ints)).astype("float32") / 2
    labels = draw(hnp.arrays("int32", batch, elements=st.integers(0, classes - 1)))
    ref_labels = draw(hnp.arrays("int32", size, elements=st.integers(0, classes - 1)))
    mask = draw(hnp.arrays("bool", (batch, size)))
    return labels, x, ref_labels, refs, mask


@pytest.mark.parametrize("mining", MODES)
@pytest.mark.parametrize("distance", ["euclidean", "manhattan"])
@given(data=anchors_and_references(), margin=st.sampled_from([0.0, 1.0]))
def test_loss_with_references_matches_brute_force(mining, distance, data, margin):
    labels, x, ref_labels, refs, mask = data
    got = online_triplet_loss(
        labels,
        x,
        references=refs,
        reference_labels=ref_labels,
        reference_mask=mask,
        mining=mining,
        margin=margin,
        distance=distance,
    )
    want = reference(labels, x, ref_labels, refs, mask, mining, margin, distance)
    np.testing.assert_allclose(float(to_numpy(got)), want, rtol=1e-5, atol=1e-5)


LABELLED_LOSSES = {
    "online_triplet_batch_hard": lambda *a, **k: online_triplet_loss(*a, **k),
    "online_triplet_batch_all": lambda *a, **k: online_triplet_loss(
        *a, mining="batch_all", **k
    ),
    "online_triplet_semi_hard": lambda *a, **k: online_triplet_loss(
        *a, mining="semi_hard", **k
    ),
    "supervised_contrastive": supervised_contrastive_loss,
    "ntxent": ntxent_loss,
    "multi_similarity": multi_similarity_loss,
    "circle": circle_loss,
}


@pytest.mark.parametrize("name", sorted(LABELLED_LOSSES))
def test_batch_as_its_own_masked_references_is_the_in_batch_loss(name):
    """Every labelled loss: the batch (diagonal masked) plus masked-out extra
    rows as references gives the in-batch loss; an all-true mask changes
    nothing; a mask that drops columns equals leaving them out."""
    loss = LABELLED_LOSSES[name]
    rng = np.random.default_rng(0)
    x = rng.normal(size=(5, 2)).astype("float32")
    labels = np.array([0, 0, 1, 1, 2])
    extra = rng.normal(size=(2, 2)).astype("float32")
    want = float(to_numpy(loss(labels, x)))
    refs = np.concatenate([x, extra])
    ref_labels = np.concatenate([labels, [0, 1]])
    mask = np.concatenate([~np.eye(5, dtype=bool), np.zeros((5, 2), bool)], 1)
    got = loss(
        labels, x, references=refs, reference_labels=ref_labels, reference_mask=mask
    )
    assert float(to_numpy(got)) == pytest.approx(want, rel=1e-5, abs=1e-6)
    unmasked = loss(labels, x, references=refs, reference_labels=ref_labels)
    all_true = loss(
        labels,
        x,
        references=refs,
        reference_labels=ref_labels,
        reference_mask=np.ones((5, 7), bool),
    )
    assert float(to_numpy(all_true)) == pytest.approx(float(to_numpy(unmasked)))
    keep = np.array([True, False, True, True, False, True, True])
    dropped = loss(labels, x, references=refs[keep], reference_labels=ref_labels[keep])
    masked = loss(
        labels,
        x,
        references=refs,
        reference_labels=ref_labels,
        reference_mask=np.broadcast_to(keep, (5, 7)),
    )
    assert float(to_numpy(masked)) == pytest.approx(
        float(to_numpy(dropped)), rel=1e-5, abs=1e-6
    )


@pytest.mark.parametrize(
    ("kwargs", "match"),
    [
        ({"reference_mask": np.ones((5, 5), bool)}, "needs `references`"),
        (
            {
                "references": np.zeros((3, 2), "float32"),
                "reference_labels": np.zeros(3),
                "reference_mask": np.ones((5, 4), bool),
            },
            "reference_mask",
        ),
    ],
)
def test_bad_reference_mask_is_refused_by_name(kwargs, match):
    x = np.zeros((5, 2), "float32")
    for loss in (online_triplet_loss, supervised_contrastive_loss, circle_loss):
        with pytest.raises(ValueError, match=match):
            loss(np.arange(5), x, **kwargs)


# --- the memory in training --------------------------------------------------


def _encoder(dim_in=3, dim_out=2):
    return keras.Sequential(
        [keras.Input((dim_in,)), keras.layers.Dense(dim_out, activation="tanh")]
    )


def _batches(steps, batch=4, dim=3, classes=3, seed=0):
    rng = np.random.default_rng(seed)
    for _ in range(steps):
        labels = rng.integers(0, classes, batch).astype("int32")
        yield labels, rng.normal(size=(batch, dim)).astype("float32")


@pytest.mark.parametrize("mining", ["batch_hard"])
def test_training_steps_match_the_recorded_past_batches(mining):
    """Memory 10, batches of 4: filling, wrapping around, overwriting."""
    keras.utils.set_random_seed(0)
    model = CrossBatchMemory(
        _encoder(), memory_size=10, loss_kwargs={"mining": mining, "margin": 0.5}
    )
    model.compile(optimizer=keras.optimizers.SGD(0.5))
    history = []
    for step, (labels, x) in enumerate(_batches(6)):
        embeddings = to_numpy(model.encoder(x))  # before this step's update
        loss = train_step(model, x, labels)
        want = xbm_reference(labels, embeddings, history, 10, mining=mining, margin=0.5)
        np.testing.assert_allclose(
            float(loss), want, rtol=1e-5, atol=1e-6, err_msg=str(step)
        )
        history.append((labels, embeddings))
        # The memory is the ring buffer of every embedding recorded so far.
        stream_x = np.concatenate([h[1] for h in history])
        stream_labels = np.concatenate([h[0] for h in history])
        slots = np.arange(len(stream_x)) % 10
        stored = read(model.memory_embeddings)
        stored_labels = read(model.memory_labels)
        for slot in range(min(len(stream_x), 10)):
            latest = np.flatnonzero(slots == slot)[-1]
            np.testing.assert_allclose(stored[slot], stream_x[latest], rtol=1e-6)
            assert stored_labels[slot] == stream_labels[latest]
        assert int(read(model.memory_count)) == min(4 * (step + 1), 10)
        assert int(read(model.memory_position)) == (4 * (step + 1)) % 10
    # The weights did change, so the memory really holds stale embeddings.
    assert not np.allclose(to_numpy(model.encoder(x)), embeddings, atol=1e-3)


def test_first_step_is_the_in_batch_loss_and_evaluate_ignores_the_memory():
    keras.utils.set_random_seed(1)
    model = CrossBatchMemory(_encoder(), memory_size=8, loss_kwargs={"margin": 0.3})
    model.compile(optimizer=keras.optimizers.SGD(0.0))
    (labels, x), (labels_2, x_2) = _batches(2, seed=3)
    embeddings = to_numpy(model.encoder(x))
    want = float(to_numpy(online_triplet_loss(labels, embeddings, margin=0.3)))
    assert float(train_step(model, x, labels)) == pytest.approx(want, rel=1e-5)
    before = read(model.memory_embeddings)
    embeddings_2 = to_numpy(model.encoder(x_2))
    in_batch = float(to_numpy(online_triplet_loss(labels_2, embeddings_2, margin=0.3)))
    assert float(model.evaluate(x_2, labels_2, verbose=0)) == pytest.approx(
        in_batch, rel=1e-5
    )
    np.testing.assert_array_equal(read(model.memory_embeddings), before)
    assert int(read(model.memory_count)) == 4


def test_gradient_flows_through_the_batch_not_the_memory():
    model = CrossBatchMemory(_encoder(), memory_size=12)
    model(np.zeros((1, 3), "float32"))
    # Eight past examples, written into the memory directly.
    rng = np.random.default_rng(5)
    past_labels = rng.integers(0, 3, 8).astype("int32")
    past = rng.normal(size=(8, 2)).astype("float32")
    model.memory_embeddings.assign(np.concatenate([past, np.zeros((4, 2), "float32")]))
    model.memory_labels.assign(np.concatenate([past_labels, np.zeros(4, "int32")]))
    model.memory_position.assign(8)
    model.memory_count.assign(8)
    history = [(past_labels, past)]
    labels = rng.integers(0, 3, 4).astype("int32")
    x = rng.normal(size=(4, 2))
    _, (grad,) = value_and_grad(
        lambda e: model.memory_loss(labels, e, update=False), x.astype("float32")
    )
    want = np.zeros_like(x)
    for index in np.ndindex(x.shape):
        up, down = x.copy(), x.copy()
        up[index] += 1e-5
        down[index] -= 1e-5
        want[index] = (
            xbm_reference(labels, up, history, 12, mining="batch_hard")
            - xbm_reference(labels, down, history, 12, mining="batch_hard")
        ) / 2e-5
    assert np.abs(want).max() > 0
    np.testing.assert_allclose(grad, want, rtol=1e-3, atol=1e-4)


@pytest.mark.parametrize("policy", ["mixed_float16", "mixed_bfloat16"])
def test_half_precision_encoder_gives_finite_float32_memory(policy):
    keras.config.set_dtype_policy(policy)
    keras.utils.set_random_seed(0)
    model = CrossBatchMemory(_encoder(), memory_size=8)
    model.compile(optimizer="sgd")
    losses = [float(train_step(model, x, y)) for y, x in _batches(3)]
    keras.config.set_dtype_policy("float32")
    assert np.all(np.isfinite(losses))
    stored = read(model.memory_embeddings)
    assert stored.dtype == np.float32 and np.all(np.isfinite(stored))


@pytest.mark.skipif(
    keras.backend.backend() != "torch", reason="PyTorch Metric Learning runs on torch"
)
@pytest.mark.parametrize("mining", ["batch_all", "batch_hard"])
def test_matches_pytorch_metric_learning_cross_batch_memory_live(mining):
    """PML's XBM + TripletMarginLoss on plain Euclidean distances, step by step.

    batch_all is PML's default triplet loss (all triplets, averaged over the
    non-zero ones); batch_hard is its `BatchHardMiner` with a mean reducer.
    """
    pml = pytest.importorskip("pytorch_metric_learning")
    import torch
    from pytorch_metric_learning import distances, losses, miners, reducers

    plain = distances.LpDistance(normalize_embeddings=False)
    if mining == "batch_all":
        inner, miner = losses.TripletMarginLoss(margin=0.5, distance=plain), None
    else:
        inner = losses.TripletMarginLoss(
            margin=0.5, distance=plain, reducer=reducers.MeanReducer()
        )
        miner = miners.BatchHardMiner(distance=plain)
    reference_memory = losses.CrossBatchMemory(
        inner, embedding_size=3, memory_size=10, miner=miner
    )
    identity = keras.Sequential([keras.Input((3,)), keras.layers.Identity()])
    model = CrossBatchMemory(
        identity, memory_size=10, loss_kwargs={"mining": mining, "margin": 0.5}
    )
    model(np.zeros((1, 3), "float32"))
    rng = np.random.default_rng(0)
    for step in range(7):  # fills, wraps around and overwrites the memory
        labels = rng.integers(0, 3, 6)
        x = rng.normal(size=(6, 3)).astype("float32")
        want = float(reference_memory(torch.tensor(x), torch.tensor(labels)))
        got = float(to_numpy(model.memory_loss(labels, x)))
        assert got == pytest.approx(want, rel=1e-5, abs=1e-6), (pml.__version__, step)


@pytest.mark.skipif(
    keras.backend.backend() != "torch", reason="PyTorch Metric Learning runs on torch"
)
@pytest.mark.parametrize(
    ("name", "pml_loss"),
    [
        (supervised_contrastive_loss, "SupConLoss"),
        (multi_similarity_loss, "MultiSimilarityLoss"),
        (circle_loss, "CircleLoss"),
    ],
    ids=["supervised_contrastive", "multi_similarity", "circle"],
)
def test_pair_losses_match_pml_cross_batch_memory_live(name, pml_loss):
    """PML's XBM around each pair loss in its default configuration."""
    pytest.importorskip("pytorch_metric_learning")
    import torch
    from pytorch_metric_learning import losses

    reference_memory = losses.CrossBatchMemory(
        getattr(losses, pml_loss)(), embedding_size=3, memory_size=10
    )
    identity = keras.Sequential([keras.Input((3,)), keras.layers.Identity()])
    model = CrossBatchMemory(identity, loss_fn=name, memory_size=10)
    model(np.zeros((1, 3), "float32"))
    rng = np.random.default_rng(1)
    for step in range(5):  # fills, wraps around and overwrites the memory
        labels = rng.integers(0, 3, 6)
        x = rng.normal(size=(6, 3)).astype("float32")
        want = float(reference_memory(torch.tensor(x), torch.tensor(labels)))
        got = float(to_numpy(model.memory_loss(labels, x)))
        assert got == pytest.approx(want, rel=1e-4, abs=1e-5), step


# --- saving, a custom loss, errors ------------------------------------------


@keras.saving.register_keras_serializable(package="tests")
def pair_hinge(
    labels,
    embeddings,
    references=None,
    reference_labels=None,
    reference_mask=None,
    margin=1.0,
):
    """Mean of `d` over positive pairs plus `max(margin - d, 0)` over negatives."""
    if references is None:
        references, reference_labels = embeddings, labels
        reference_mask = ~np.eye(embeddings.shape[0], dtype=bool)
    d = keras.ops.sqrt(
        keras.ops.sum(
            keras.ops.square(keras.ops.expand_dims(embeddings, 1) - references), axis=-1
        )
        + 1e-12
    )
    same = keras.ops.expand_dims(labels, 1) == keras.ops.expand_dims(
        reference_labels, 0
    )
    allowed = keras.ops.cast(reference_mask, "float32")
    costs = keras.ops.where(same, d, keras.ops.relu(margin - d)) * allowed
    return keras.ops.sum(costs) / keras.ops.maximum(keras.ops.sum(allowed), 1.0)


def test_any_registered_loss_taking_references_works():
    keras.utils.set_random_seed(0)
    model = CrossBatchMemory(
        _encoder(), loss_fn=pair_hinge, memory_size=8, loss_kwargs={"margin": 2.0}
    )
    model.compile(optimizer=keras.optimizers.SGD(0.0))
    (labels, x), (labels_2, x_2) = _batches(2)
    train_step(model, x, labels)
    e, e_2 = to_numpy(model.encoder(x)), to_numpy(model.encoder(x_2))
    loss = float(train_step(model, x_2, labels_2))
    refs = np.concatenate([e_2, e])
    ref_labels = np.concatenate([labels_2, labels])
    total, count = 0.0, 0
    for a, j in itertools.product(range(4), range(8)):
        if a == j:
            continue
        dist = np.linalg.norm(e_2[a] - refs[j])
        total += dist if labels_2[a] == ref_labels[j] else max(2.0 - dist, 0.0)
        count += 1
    assert loss == pytest.approx(total / count, rel=1e-4)


def test_memory_is_saved_and_reloaded_in_safe_mode(tmp_path):
    keras.utils.set_random_seed(0)
    model = CrossBatchMemory(
        _encoder(), memory_size=6, loss_kwargs={"mining": "batch_all", "margin": 0.2}
    )
    model.compile(optimizer="adam")
    for labels, x in _batches(2):
        train_step(model, x, labels)
    model.save(tmp_path / "xbm.keras")
    restored = keras.saving.load_model(tmp_path / "xbm.keras", safe_mode=True)
    assert isinstance(restored, CrossBatchMemory)
    assert restored.get_config() == model.get_config() or (
        restored.memory_size == 6 and restored.loss_kwargs == model.loss_kwargs
    )
    assert restored.loss_fn is online_triplet_loss
    for name in (
        "memory_embeddings",
        "memory_labels",
        "memory_position",
        "memory_count",
    ):
        np.testing.assert_array_equal(
            read(getattr(restored, name)), read(getattr(model, name))
        )
    np.testing.assert_allclose(
        restored.predict(x, verbose=0), model.predict(x, verbose=0), rtol=1e-6
    )
    # Training goes on from the restored memory, as it would have.
    labels, x = next(_batches(1, seed=7))
    np.testing.assert_allclose(
        float(train_step(restored, x, labels)),
        float(train_step(model, x, labels)),
        rtol=1e-5,
    )
    restored.reset_memory()
    assert int(read(restored.memory_count)) == 0


def test_a_batch_larger_than_the_memory():
    model = CrossBatchMemory(_encoder(), memory_size=3)
    labels, x = next(_batches(1))
    model(x)
    with pytest.raises(ValueError, match="memory_size"):
        model.memory_loss(labels, model.encoder(x))
    if keras.backend.backend() != "tensorflow":
        return
    # A graph of unknown batch size cannot refuse it: the last rows are kept.
    import tensorflow as tf

    step = tf.function(
        lambda y, e: model.memory_loss(y, e),
        input_signature=[tf.TensorSpec([None], tf.int32), tf.TensorSpec([None, 2])],
    )
    embeddings = to_numpy(model.encoder(x))
    step(labels, embeddings)
    np.testing.assert_allclose(read(model.memory_embeddings), embeddings[[3, 1, 2]])
    np.testing.assert_array_equal(read(model.memory_labels), labels[[3, 1, 2]])
    assert int(read(model.memory_count)) == 3 and int(read(model.memory_position)) == 1


@pytest.mark.parametrize(
    ("kwargs", "error", "match"),
    [
        ({"memory_size": 0}, ValueError, "memory_size"),
        ({"memory_size": 2.5}, TypeError, "memory_size"),
        ({"loss_fn": lambda y, e: 0.0}, TypeError, "loss_fn"),
        ({"loss_fn": keras.losses.MeanSquaredError()}, TypeError, "loss_fn"),
        ({"loss_fn": keras.losses.mean_squared_error}, TypeError, "loss_fn"),
        ({"loss_kwargs": {"mining": "hardest"}}, ValueError, "mining"),
        ({"loss_kwargs": {"margin": -1.0}}, ValueError, "margin"),
        ({"loss_kwargs": {"metric_name": "x"}}, TypeError, "metric_name"),
        ({"loss_kwargs": {"references": None}}, ValueError, "references"),
        ({"loss_kwargs": {"margin": [1.0]}}, TypeError, "margin"),
        ({"loss_kwargs": ["margin"]}, TypeError, "loss_kwargs"),
    ],
)
def test_bad_arguments_raise(kwargs, error, match):
    with pytest.raises(error, match=match):
        CrossBatchMemory(_encoder(), **kwargs)


def test_encoder_must_be_a_layer_and_fit_needs_labels():
    with pytest.raises(TypeError, match="encoder"):
        CrossBatchMemory("dense")
    labels, x = next(_batches(1))
    for kwargs, match in [
        ({}, "labels"),
        ({"y": labels, "sample_weight": 1}, "sample"),
    ]:
        # A fresh model each time: a failed trace may be cached by TensorFlow.
        model = CrossBatchMemory(_encoder(), memory_size=8)
        model.compile(optimizer="sgd")
        if "sample_weight" in kwargs:
            kwargs["sample_weight"] = np.ones(4)
        with pytest.raises(ValueError, match=match):
            train_step(model, x, **kwargs)
