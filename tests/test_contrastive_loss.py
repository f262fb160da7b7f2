"""ContrastiveLoss against a per-pair NumPy loop, and its properties."""

import keras
import numpy as np
import pytest
from hypothesis import given
from hypothesis import strategies as st
from hypothesis.extra import numpy as hnp

from keras_siamese import ContrastiveLoss, contrastive_loss
from tests.helpers import to_numpy, value_and_grad

BATCHES = (1, 4, 9)


def reference(labels, distances, margin):
    losses = []
    for y, d in zip(labels.reshape(-1), distances.reshape(-1).astype("float64")):
        if y == 1:
            losses.append(d * d)
        else:
            losses.append(max(margin - d, 0.0) ** 2)
    return np.array(losses)


@st.composite
def pair_batches(draw):
    batch = draw(st.sampled_from(BATCHES))
    labels = draw(hnp.arrays("float32", batch, elements=st.sampled_from([0.0, 1.0])))
    distances = draw(hnp.arrays("float32", batch, elements=st.floats(0, 4, width=32)))
    column = draw(st.booleans())
    return labels, distances[:, None] if column else distances


@given(data=pair_batches(), margin=st.sampled_from([0.0, 0.5, 1.0, 2.0]))
def test_matches_reference_per_pair_and_mean(data, margin):
    labels, distances = data
    want = reference(labels, distances, margin)
    per_pair = to_numpy(contrastive_loss(labels, distances, margin=margin))
    assert per_pair.shape == (len(labels),)
    np.testing.assert_allclose(per_pair, want, rtol=1e-5, atol=1e-6)
    mean = to_numpy(ContrastiveLoss(margin=margin)(labels, distances))
    np.testing.assert_allclose(mean, want.mean(), rtol=1e-5, atol=1e-6)


def test_batch_by_one_prediction_does_not_broadcast_against_labels():
    labels = np.array([1.0, 0.0, 1.0, 0.0], "float32")
    distances = np.array([[0.0], [2.0], [0.0], [2.0]], "float32")
    # Broadcasting (batch, 1) against (batch,) would average a 4 x 4 matrix
    # mixing every label with every distance, and not give 0.
    assert float(to_numpy(ContrastiveLoss()(labels, distances))) == 0.0
    assert float(to_numpy(ContrastiveLoss()(labels[:, None], distances))) == 0.0


@given(data=pair_batches(), seed=st.integers(0, 2**16))
def test_non_negative_and_permutation_invariant(data, seed):
    labels, distances = data
    value = float(to_numpy(ContrastiveLoss()(labels, distances)))
    perm = np.random.default_rng(seed).permutation(len(labels))
    permuted = float(to_numpy(ContrastiveLoss()(labels[perm], distances[perm])))
    assert value >= 0
    np.testing.assert_allclose(value, permuted, rtol=1e-6, atol=1e-7)


def test_zero_when_similar_pairs_coincide_and_dissimilar_pairs_clear_margin():
    labels = np.array([1, 1, 0, 0], "float32")
    distances = np.array([0.0, 0.0, 1.0, 3.0], "float32")
    assert float(to_numpy(ContrastiveLoss(margin=1.0)(labels, distances))) == 0.0


def test_gradients_finite_through_a_distance_of_identical_embeddings():
    from keras_siamese import euclidean_distance

    labels = np.array([1.0, 0.0], "float32")
    a = np.array([[1.0, 2.0], [0.0, 0.0]], "float32")

    def loss(x, y):
        return ContrastiveLoss()(labels, euclidean_distance(x, y))

    value, grads = value_and_grad(loss, a, a.copy())
    assert np.isfinite(value)
    assert all(np.all(np.isfinite(g)) for g in grads)


@pytest.mark.parametrize("policy", ["mixed_float16", "mixed_bfloat16"])
def test_mixed_precision_close_to_float32(policy):
    rng = np.random.default_rng(0)
    labels = rng.integers(0, 2, 64).astype("float32")
    distances = rng.uniform(0, 2, (64, 1)).astype("float32")
    want = float(to_numpy(ContrastiveLoss()(labels, distances)))
    keras.config.set_dtype_policy(policy)
    half = keras.ops.cast(distances, keras.config.dtype_policy().compute_dtype)
    direct = to_numpy(keras.ops.mean(contrastive_loss(labels, half)))
    value = to_numpy(ContrastiveLoss()(labels, half))
    assert value.dtype == np.float32 and direct.dtype == np.float32
    np.testing.assert_allclose([value, direct], want, rtol=1e-2)


@pytest.mark.parametrize(
    ("margin", "error"),
    [(-1.0, ValueError), (float("inf"), ValueError), (None, TypeError)],
)
def test_bad_margin_raises(margin, error):
    with pytest.raises(error, match="margin"):
        ContrastiveLoss(margin=margin)


def test_wrong_shapes_raise():
    with pytest.raises(ValueError, match="y_pred"):
        contrastive_loss(np.zeros(2), np.zeros((2, 2), "float32"))
    with pytest.raises(ValueError, match="y_true"):
        contrastive_loss(np.zeros((2, 3)), np.zeros((2, 1), "float32"))
    with pytest.raises(ValueError, match="batch size"):
        contrastive_loss(np.zeros(3), np.zeros((2, 1), "float32"))


REDUCED = ("sum_over_batch_size", "sum", "mean", "mean_with_sample_weight")


@pytest.mark.parametrize("reduction", REDUCED)
@pytest.mark.parametrize("shape", [(0,), (0, 1)])
def test_an_empty_batch_has_loss_zero(reduction, shape):
    loss = ContrastiveLoss(reduction=reduction)(np.zeros(0), np.zeros(shape))
    assert tuple(loss.shape) == () and float(to_numpy(loss)) == 0.0


@pytest.mark.parametrize("reduction", [None, "none"])
def test_an_empty_batch_unreduced_is_an_empty_vector(reduction):
    # As Keras' own losses: no pairs, no per-pair losses.
    ours = ContrastiveLoss(reduction=reduction)(np.zeros(0), np.zeros((0, 1)))
    keras_own = keras.losses.MeanSquaredError(reduction=reduction)(
        np.zeros((0, 1)), np.zeros((0, 1))
    )
    assert tuple(ours.shape) == tuple(keras_own.shape) == (0,)
    functional = contrastive_loss(np.zeros(0), np.zeros((0, 1)))
    assert tuple(functional.shape) == (0,)


def test_float64_pairs_give_float64_losses():
    if keras.backend.backend() == "jax":
        import jax

        if not jax.config.jax_enable_x64:
            pytest.skip("JAX computes in float32 unless jax_enable_x64 is set")
    labels = np.array([1.0, 0.0, 0.0])
    distances = np.array([[0.1], [0.3], [2.0]], dtype="float64")
    per_pair = contrastive_loss(labels, distances, margin=0.7)
    assert keras.backend.standardize_dtype(per_pair.dtype) == "float64"
    np.testing.assert_allclose(
        to_numpy(per_pair), reference(labels, distances, 0.7), rtol=1e-15
    )
    for reduction in (None, "sum"):
        loss = ContrastiveLoss(margin=0.7, reduction=reduction, dtype="float64")
        value = loss(labels, distances)
        assert keras.backend.standardize_dtype(value.dtype) == "float64"


def reference_with(labels, distances, margin, similar_label):
    """The per-pair loop with `similar_label` marking the similar pairs."""
    losses = []
    for y, d in zip(labels.reshape(-1), distances.reshape(-1).astype("float64")):
        losses.append(d * d if y == similar_label else max(margin - d, 0.0) ** 2)
    return np.array(losses)


@given(
    data=pair_batches(),
    margin=st.sampled_from([0.5, 1.0, 2.0]),
    similar_label=st.sampled_from([0, 1]),
)
def test_both_label_conventions_match_the_reference(data, margin, similar_label):
    labels, distances = data
    want = reference_with(labels, distances, margin, similar_label)
    per_pair = contrastive_loss(
        labels, distances, margin=margin, similar_label=similar_label
    )
    np.testing.assert_allclose(to_numpy(per_pair), want, rtol=1e-5, atol=1e-6)
    loss = ContrastiveLoss(margin=margin, similar_label=similar_label)
    np.testing.assert_allclose(
        to_numpy(loss(labels, distances)), want.mean(), rtol=1e-5, atol=1e-6
    )


def test_similar_label_zero_changes_the_values():
    # A near pair labelled 0 and a far pair labelled 1: with 0 = similar both
    # cost little; read with 1 = similar (the flag ignored) both cost a lot.
    labels = np.array([0.0, 1.0], "float32")
    distances = np.array([[0.2], [1.3]], "float32")
    flipped = to_numpy(contrastive_loss(labels, distances, similar_label=0))
    np.testing.assert_allclose(flipped, [0.04, 0.0], atol=1e-6)
    default = to_numpy(contrastive_loss(labels, distances))
    np.testing.assert_allclose(default, [0.64, 1.69], rtol=1e-6)
    mean = to_numpy(ContrastiveLoss(similar_label=0)(labels, distances))
    np.testing.assert_allclose(mean, 0.02, rtol=1e-5)


def test_similar_label_zero_gives_the_gradients_of_flipped_labels():
    labels = np.array([0.0, 1.0, 1.0, 0.0], "float32")
    a = np.random.default_rng(3).normal(size=(4, 3)).astype("float32")
    b = np.random.default_rng(4).normal(size=(4, 3)).astype("float32")
    from keras_siamese import euclidean_distance

    def zero_similar(x, y):
        return ContrastiveLoss(similar_label=0)(labels, euclidean_distance(x, y))

    def flipped(x, y):
        return ContrastiveLoss()(1.0 - labels, euclidean_distance(x, y))

    value, grads = value_and_grad(zero_similar, a, b)
    want_value, want_grads = value_and_grad(flipped, a, b)
    np.testing.assert_allclose(value, want_value, rtol=1e-6)
    for got, want in zip(grads, want_grads):
        np.testing.assert_allclose(got, want, rtol=1e-5, atol=1e-7)


def test_similar_label_is_in_the_config_and_survives_a_round_trip():
    loss = ContrastiveLoss(margin=0.5, similar_label=0)
    config = loss.get_config()
    assert config["similar_label"] == 0
    again = keras.saving.deserialize_keras_object(
        keras.saving.serialize_keras_object(loss)
    )
    assert again.similar_label == 0 and again.margin == 0.5
    assert ContrastiveLoss().get_config()["similar_label"] == 1


@pytest.mark.parametrize(
    ("value", "error"),
    [
        (2, ValueError),
        (-1, ValueError),
        (True, TypeError),
        (1.0, TypeError),
        ("0", TypeError),
        (None, TypeError),
    ],
)
def test_bad_similar_label_raises(value, error):
    with pytest.raises(error, match="similar_label"):
        ContrastiveLoss(similar_label=value)
    with pytest.raises(error, match="similar_label"):
        contrastive_loss(np.ones(2), np.ones((2, 1), "float32"), similar_label=value)
