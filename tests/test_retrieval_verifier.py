"""Verifier and the saved format: round trips, other backends, tampering."""

from __future__ import annotations

import hashlib
import json
import pickle
from pathlib import Path

import keras
import numpy as np
import pytest

from keras_siamese import EmbeddingIndex, Verifier, calibrate_threshold
from tests.helpers import skip_if_saved_by_a_newer_keras

FIXTURES = Path(__file__).resolve().parent / "fixtures"
SAVED_ON = ["tensorflow", "jax", "torch"]


def identity_encoder(dim=2):
    return keras.Sequential([keras.Input((dim,)), keras.layers.Identity()])


def test_verify_and_identify_open_set():
    verifier = Verifier(identity_encoder(), threshold=1.0)
    a = np.array([[0.0, 0.0], [0.0, 0.0], [1.0, 1.0]])
    b = np.array([[0.6, 0.8], [0.6, 0.7], [4.0, 5.0]])  # distances 1.0, 0.92, 5.0
    assert verifier.verify(a, b).tolist() == [False, True, False]
    assert verifier.verify(a, b, threshold=1.5).tolist() == [True, True, False]
    np.testing.assert_allclose(
        verifier.pair_distances(a, b), [1.0, np.hypot(0.6, 0.7), 5.0]
    )
    verifier.enroll(np.array([[0.0, 0.0], [5.0, 5.0]]), [3, 4])
    verifier.enroll(np.array([[9.0, 9.0]]), [5])
    queries = np.array([[0.5, 0.0], [5.0, 6.5], [9.0, 9.5]])
    labels, distances = verifier.identify(queries, return_distances=True)
    assert labels.tolist() == [3, -1, 5]
    np.testing.assert_allclose(distances, [0.5, 1.5, 0.5])
    assert verifier.identify(queries, threshold=2.0).tolist() == [3, 4, 5]
    custom = Verifier(
        identity_encoder(), threshold=1.0, index=verifier.index, unknown=99
    )
    assert custom.identify(queries).tolist() == [3, 99, 5]
    other = EmbeddingIndex()
    other.add(np.array([[5.0, 6.0]]), ["x"])
    assert verifier.identify(queries, index=other).tolist() == [
        "unknown",
        "x",
        "unknown",
    ]


def test_calibrate_sets_the_threshold_that_verify_uses():
    rng = np.random.default_rng(0)
    labels = rng.integers(0, 10, 400)
    x = (rng.normal(size=(10, 4)) * 3)[labels] + rng.normal(size=(400, 4))
    x = x.astype("float32")
    left, right = rng.integers(0, 400, (2, 3000))
    same = labels[left] == labels[right]
    verifier = Verifier(identity_encoder(4))
    result = verifier.calibrate(x[left], x[right], same, target="precision", value=0.95)
    assert verifier.threshold == result.threshold and verifier.calibration is result
    decided = verifier.verify(x[left], x[right])
    assert np.mean(same[decided]) == pytest.approx(result.precision)
    distances = np.linalg.norm(x[left].astype(float) - x[right], axis=1)
    assert result == calibrate_threshold(distances, same, "precision", 0.95)


def test_bad_arguments_raise():
    with pytest.raises(TypeError, match="predict"):
        Verifier(lambda x: x)
    verifier = Verifier(identity_encoder())
    with pytest.raises(ValueError, match="no threshold"):
        verifier.verify(np.zeros((1, 2)), np.zeros((1, 2)))
    with pytest.raises(ValueError, match="No gallery"):
        verifier.identify(np.zeros((1, 2)), threshold=1.0)
    with pytest.raises(ValueError, match="same number of inputs"):
        verifier.pair_distances(np.zeros((2, 2)), np.zeros((3, 2)))
    with pytest.raises(ValueError, match="`threshold`"):
        Verifier(identity_encoder(), threshold=-1.0)
    with pytest.raises(ValueError, match="must agree"):
        Verifier(identity_encoder(), distance="cosine", index=EmbeddingIndex())
    with pytest.raises(TypeError, match="`unknown`"):
        Verifier(identity_encoder(), unknown=1.5)
    unlabelled = EmbeddingIndex()
    unlabelled.add(np.zeros((2, 2)))
    with pytest.raises(ValueError, match="no labels"):
        verifier.identify(np.zeros((1, 2)), threshold=1.0, index=unlabelled)


def saved_verifier(tmp_path, labels):
    keras.utils.set_random_seed(1)
    encoder = keras.Sequential([keras.Input((3,)), keras.layers.Dense(4)])
    rng = np.random.default_rng(1)
    x = rng.normal(size=(len(labels), 3)).astype("float32")
    verifier = Verifier(encoder, distance="cosine", batch_size=8)
    verifier.enroll(x, labels)
    verifier.calibrate(x[:6], x[6:12], np.array([1, 0, 1, 0, 1, 0]))
    path = tmp_path / "verifier"
    verifier.save(path)
    return verifier, path, x


@pytest.mark.parametrize("labels", [np.arange(12) % 4, np.array(list("abcdefabcdef"))])
def test_round_trip_through_save_and_load(tmp_path, labels):
    verifier, path, x = saved_verifier(tmp_path, labels)
    loaded = Verifier.load(path)
    assert loaded.distance == "cosine" and loaded.batch_size == 8
    assert loaded.threshold == verifier.threshold
    assert loaded.calibration == verifier.calibration
    np.testing.assert_array_equal(loaded.index.labels, verifier.index.labels)
    assert loaded.index.labels.dtype == verifier.index.labels.dtype
    np.testing.assert_array_equal(loaded.embed(x), verifier.embed(x))
    e = verifier.embed(x)
    for a, b in zip(loaded.index.search(e, k=5), verifier.index.search(e, k=5)):
        np.testing.assert_array_equal(a, b)
    np.testing.assert_array_equal(loaded.identify(x), verifier.identify(x))
    # The directory is an index too, and saving over it replaces it.
    index = EmbeddingIndex.load(path)
    np.testing.assert_array_equal(index.embeddings, verifier.index.embeddings)
    index.save(path)
    assert not (path / "encoder.keras").exists()
    with pytest.raises(ValueError, match="without an encoder"):
        Verifier.load(path)
    assert len(EmbeddingIndex.load(path)) == 12


def test_a_verifier_without_gallery_or_threshold_round_trips(tmp_path):
    Verifier(identity_encoder(), distance="manhattan").save(tmp_path / "bare")
    loaded = Verifier.load(tmp_path / "bare")
    assert loaded.index is None and loaded.threshold is None
    assert loaded.distance == "manhattan"
    empty = EmbeddingIndex.load(tmp_path / "bare")
    assert len(empty) == 0 and empty.dim is None


def test_save_refuses_foreign_directories(tmp_path):
    (tmp_path / "notes.txt").write_text("mine")
    index = EmbeddingIndex()
    index.add(np.zeros((1, 2)))
    with pytest.raises(ValueError, match="not empty and is not a saved index"):
        index.save(tmp_path)
    assert (tmp_path / "notes.txt").read_text() == "mine"
    with pytest.raises(ValueError, match="is a file"):
        index.save(tmp_path / "notes.txt")


@pytest.mark.parametrize("saved_on", SAVED_ON)
def test_fixture_saved_on_any_backend_gives_the_same_answers(saved_on):
    path = FIXTURES / f"verifier_{saved_on}"
    assert path.exists(), (
        f"missing fixture; run make_retrieval_fixtures.py on {saved_on}"
    )
    skip_if_saved_by_a_newer_keras(path / "encoder.keras")
    verifier = Verifier.load(path)
    with np.load(FIXTURES / f"verifier_{saved_on}.npz") as expected:
        queries = expected["queries"]
        np.testing.assert_allclose(
            verifier.embed(queries), expected["embeddings"], rtol=1e-5, atol=1e-6
        )
        distances, indices = verifier.index.search(expected["embeddings"], k=4)
        np.testing.assert_array_equal(indices, expected["indices"])
        np.testing.assert_array_equal(distances, expected["distances"])
        assert verifier.threshold == float(expected["threshold"])
        np.testing.assert_array_equal(
            verifier.identify(queries), expected["identified"]
        )


# -- a crafted, tampered or truncated directory raises ValueError -----------


def rewrite_json(path, change):
    record = json.loads((path / "index.json").read_text())
    change(record)
    (path / "index.json").write_text(json.dumps(record))


def refresh_checksum(path, name):
    data = (path / name).read_bytes()
    entry = {"sha256": hashlib.sha256(data).hexdigest(), "bytes": len(data)}
    rewrite_json(path, lambda r: r["files"].__setitem__(name, entry))


class _Payload:
    """Unpickling this would create a file: loading must never do it."""

    def __init__(self, marker):
        self.marker = marker

    def __reduce__(self):
        return (open, (self.marker, "w"))


def test_pickled_labels_are_refused_and_never_run(tmp_path):
    _, path, _ = saved_verifier(tmp_path, np.arange(12))
    marker = tmp_path / "pwned"
    labels = np.empty(12, dtype=object)
    labels[:] = [_Payload(str(marker))] * 12
    with open(path / "labels.npy", "wb") as handle:
        np.save(handle, labels, allow_pickle=True)
    pickle.dumps(labels)  # the payload is a real pickle
    refresh_checksum(path, "labels.npy")
    for load in (Verifier.load, EmbeddingIndex.load):
        with pytest.raises(ValueError, match=r"labels\.npy is not a readable array"):
            load(path)
    assert not marker.exists()


TAMPERING = {
    "a flipped byte": (
        lambda p: (p / "embeddings.npy").write_bytes(
            (p / "embeddings.npy").read_bytes()[:-1] + b"\x01"
        ),
        "embeddings.npy does not match its checksum",
    ),
    "a truncated array": (
        lambda p: (p / "embeddings.npy").write_bytes(
            (p / "embeddings.npy").read_bytes()[:100]
        ),
        "modified or truncated",
    ),
    "a truncated array with its checksum": (
        lambda p: (
            (p / "embeddings.npy").write_bytes(
                (p / "embeddings.npy").read_bytes()[:140]
            ),
            refresh_checksum(p, "embeddings.npy"),
        ),
        "embeddings.npy is not a readable array",
    ),
    "NaN embeddings": (
        lambda p: (
            np.save(p / "embeddings.npy", np.full((12, 4), np.nan, dtype="float32")),
            refresh_checksum(p, "embeddings.npy"),
        ),
        "NaN",
    ),
    "float64 embeddings": (
        lambda p: (
            np.save(p / "embeddings.npy", np.zeros((12, 4))),
            refresh_checksum(p, "embeddings.npy"),
        ),
        "not float32",
    ),
    "a wrong count": (lambda p: rewrite_json(p, lambda r: r.update(count=11)), "shape"),
    "an unknown key": (
        lambda p: rewrite_json(p, lambda r: r.update(code="x")),
        "unknown keys",
    ),
    "a newer version": (
        lambda p: rewrite_json(p, lambda r: r.update(version=3)),
        "version 3",
    ),
    "another format": (
        lambda p: rewrite_json(p, lambda r: r.update(format="npz")),
        "not a",
    ),
    "an unknown distance": (
        lambda p: rewrite_json(p, lambda r: r.update(distance="hamming")),
        "distance",
    ),
    "a negative threshold": (
        lambda p: rewrite_json(p, lambda r: r["verifier"].update(threshold=-1.0)),
        "threshold",
    ),
    "labels of another kind": (
        lambda p: rewrite_json(p, lambda r: r.update(labels="str")),
        "labels have dtype int64",
    ),
    "invalid JSON": (lambda p: (p / "index.json").write_text("{"), "not valid JSON"),
    "no metadata": (lambda p: (p / "index.json").unlink(), "index.json is missing"),
    "a missing file": (lambda p: (p / "labels.npy").unlink(), "labels.npy is missing"),
    "a truncated encoder": (
        lambda p: (
            (p / "encoder.keras").write_bytes((p / "encoder.keras").read_bytes()[:500]),
            refresh_checksum(p, "encoder.keras"),
        ),
        "Cannot load the encoder",
    ),
}


@pytest.mark.parametrize("case", sorted(TAMPERING))
def test_tampered_directories_raise_value_error(tmp_path, case):
    _, path, _ = saved_verifier(tmp_path, np.arange(12))
    tamper, message = TAMPERING[case]
    tamper(path)
    with pytest.raises(ValueError, match=message):
        Verifier.load(path)


def test_loading_a_missing_directory_raises_value_error(tmp_path):
    with pytest.raises(ValueError, match="not a directory"):
        EmbeddingIndex.load(tmp_path / "nowhere")


def test_verify_of_no_pairs_is_an_empty_boolean_array():
    verifier = Verifier(identity_encoder(), threshold=1.0)
    empty = np.zeros((0, 2))
    decided = verifier.verify(empty, empty)
    assert decided.dtype == bool and decided.shape == (0,)
    assert verifier.pair_distances(empty, empty).shape == (0,)
    with pytest.raises(ValueError, match="same number of inputs"):
        verifier.verify(empty, np.zeros((1, 2)))
    verifier.enroll(np.zeros((1, 2)), ["ann"])
    assert verifier.identify(empty).shape == (0,)


@pytest.mark.parametrize("distance", ["euclidean", "squared_euclidean", "cosine"])
def test_identify_and_verify_agree_at_the_threshold(distance):
    # The float64 distance of the query from the gallery item is no float32
    # number: rounded to float32 it falls on the other side of a threshold
    # that equals it (or the next float64 above it).
    gallery = np.array([[1.0, 0.0] if distance == "cosine" else [0.0, 0.0]])
    query = np.array([[1.0, 1.0] if distance == "cosine" else [0.1, 0.3]])
    verifier = Verifier(identity_encoder(), distance=distance)
    exact = float(verifier.pair_distances(query, gallery)[0])
    assert float(np.float32(exact)) != exact  # the case float32 decides wrongly
    verifier.enroll(gallery, [7])
    for threshold in (exact, np.nextafter(exact, np.inf)):
        verifier.threshold = threshold
        same = bool(verifier.verify(query, gallery)[0])
        assert same == (exact < threshold)
        answer = verifier.identify(query)[0]
        assert answer == (7 if same else -1)
