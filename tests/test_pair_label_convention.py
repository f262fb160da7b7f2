"""`similar_label=0` on PairAccuracy: pairs labelled 0 = similar, against NumPy."""

import keras
import numpy as np
import pytest
from hypothesis import given
from hypothesis import strategies as st
from hypothesis.extra import numpy as hnp

from keras_siamese import (
    ContrastiveLoss,
    EuclideanDistance,
    PairAccuracy,
    SiameseWrapper,
    pair_accuracy,
)
from tests.helpers import to_numpy


@given(
    labels=hnp.arrays("int32", 9, elements=st.integers(0, 1)),
    distances=hnp.arrays("float32", 9, elements=st.floats(0, 1, width=32)),
    threshold=st.sampled_from([0.25, 0.5, 1.0]),
    similar_label=st.sampled_from([0, 1]),
)
def test_pair_accuracy_with_either_convention_matches_numpy(
    labels, distances, threshold, similar_label
):
    want = [(d < threshold) == (y == similar_label) for y, d in zip(labels, distances)]
    per_pair = pair_accuracy(labels, distances, threshold, similar_label=similar_label)
    np.testing.assert_array_equal(to_numpy(per_pair), np.array(want, "float32"))
    metric = PairAccuracy(threshold=threshold, similar_label=similar_label)
    metric.update_state(labels, distances[:, None])
    np.testing.assert_allclose(float(metric.result()), np.mean(want), rtol=1e-6)


def test_similar_label_zero_reads_near_pairs_labelled_zero_as_right():
    labels = np.array([0, 0, 1, 1])
    distances = np.array([[0.1], [0.2], [0.9], [0.8]], "float32")
    zero_similar = PairAccuracy(similar_label=0)
    zero_similar.update_state(labels, distances)
    assert float(zero_similar.result()) == 1.0
    default = PairAccuracy()
    default.update_state(labels, distances)
    assert float(default.result()) == 0.0


def test_similar_label_is_in_the_config_and_survives_a_round_trip():
    metric = PairAccuracy(threshold=0.3, similar_label=0)
    assert metric.get_config()["similar_label"] == 0
    again = keras.saving.deserialize_keras_object(
        keras.saving.serialize_keras_object(metric)
    )
    assert again.similar_label == 0 and again.threshold == 0.3
    assert PairAccuracy().get_config()["similar_label"] == 1


@pytest.mark.parametrize(
    ("value", "error"),
    [(2, ValueError), (True, TypeError), (0.0, TypeError), (None, TypeError)],
)
def test_bad_similar_label_raises(value, error):
    with pytest.raises(error, match="similar_label"):
        PairAccuracy(similar_label=value)
    with pytest.raises(error, match="similar_label"):
        pair_accuracy(np.ones(2), np.ones(2, "float32"), similar_label=value)


def test_a_model_compiled_with_either_convention_reports_the_same_numbers():
    x = np.random.default_rng(0).normal(size=(16, 3)).astype("float32")
    same = (np.arange(16) % 2).astype("float32")
    pair = [keras.Input((3,)), keras.Input((3,))]
    results = []
    for similar_label, labels in [(1, same), (0, 1.0 - same)]:
        keras.utils.set_random_seed(0)
        siamese = SiameseWrapper(keras.layers.Dense(2), merge=EuclideanDistance())
        model = keras.Model(pair, siamese(pair))
        model.compile(
            loss=ContrastiveLoss(similar_label=similar_label),
            metrics=[PairAccuracy(similar_label=similar_label)],
        )
        results.append(model.evaluate([x, x[::-1]], labels, verbose=0))
    np.testing.assert_allclose(results[0], results[1], rtol=1e-6)
