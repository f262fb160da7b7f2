"""`DualEncoder` (two towers, unshared weights) and the retrieval classes
given a query encoder different from the gallery encoder."""

from __future__ import annotations

import json

import keras
import numpy as np
import pytest

from keras_siamese import (
    ContrastiveLoss,
    CosineDistance,
    DualEncoder,
    EuclideanDistance,
    RetrievalEvaluation,
    SiameseWrapper,
    Verifier,
    retrieval_metrics,
)


def text_tower(seed: int = 0) -> keras.Model:
    return keras.Sequential(
        [
            keras.Input((6,)),
            keras.layers.Dense(
                4, kernel_initializer=keras.initializers.GlorotUniform(seed)
            ),
        ],
        name="text",
    )


def image_tower(seed: int = 1) -> keras.Model:
    return keras.Sequential(
        [
            keras.Input((3, 3)),
            keras.layers.Flatten(),
            keras.layers.Dense(
                5, "tanh", kernel_initializer=keras.initializers.GlorotUniform(seed)
            ),
            keras.layers.Dense(
                4, kernel_initializer=keras.initializers.GlorotUniform(seed + 1)
            ),
        ],
        name="image",
    )


def two_tower_model(merge=None, candidates: int = 1, fuse=None) -> keras.Model:
    query = keras.Input((6,))
    others = [keras.Input((3, 3)) for _ in range(candidates)]
    towers = DualEncoder(text_tower(), image_tower(), merge=merge, fuse_candidates=fuse)
    return keras.Model([query, *others], towers([query, *others]))


def data(n: int = 7, candidates: int = 1, seed: int = 0) -> list[np.ndarray]:
    rng = np.random.default_rng(seed)
    return [rng.normal(size=(n, 6)).astype("float32")] + [
        rng.normal(size=(n, 3, 3)).astype("float32") for _ in range(candidates)
    ]


def numpy_towers(model: keras.Model, inputs: list[np.ndarray]) -> list[np.ndarray]:
    """Each tower applied with NumPy, from its own weights."""
    towers = model.layers[-1]
    wq, bq = (keras.ops.convert_to_numpy(w) for w in towers.query_encoder.weights)
    w1, b1, w2, b2 = (
        keras.ops.convert_to_numpy(w) for w in towers.candidate_encoder.weights
    )
    query = inputs[0] @ wq + bq
    candidates = [
        np.tanh(c.reshape(len(c), -1) @ w1 + b1) @ w2 + b2 for c in inputs[1:]
    ]
    return [query, *candidates]


@pytest.mark.parametrize("fuse", [False, True])
def test_each_input_goes_through_its_own_tower(fuse):
    model = two_tower_model(merge="stack", candidates=3, fuse=fuse)
    inputs = data(candidates=3)
    expected = np.stack(numpy_towers(model, inputs), axis=1)
    np.testing.assert_allclose(model.predict(inputs, verbose=0), expected, atol=1e-5)


def test_tuple_concat_and_distance_merges():
    inputs = data()
    tuple_model = two_tower_model()
    query, candidate = numpy_towers(tuple_model, inputs)
    outputs = tuple_model.predict(inputs, verbose=0)
    np.testing.assert_allclose(outputs[0], query, atol=1e-5)
    np.testing.assert_allclose(outputs[1], candidate, atol=1e-5)
    towers = tuple_model.layers[-1]
    q, c = keras.Input((6,)), keras.Input((3, 3))
    for merge, expected in [
        ("concat", np.concatenate([query, candidate], axis=-1)),
        (EuclideanDistance(), np.linalg.norm(query - candidate, axis=1)[:, None]),
    ]:
        layer = DualEncoder(towers.query_encoder, towers.candidate_encoder, merge=merge)
        model = keras.Model([q, c], layer([q, c]))
        np.testing.assert_allclose(
            model.predict(inputs, verbose=0), expected, atol=1e-5
        )


def test_the_towers_keep_separate_weights_and_both_train():
    model = two_tower_model(merge=EuclideanDistance())
    towers = model.layers[-1]
    query_ids = {id(w) for w in towers.query_encoder.trainable_weights}
    candidate_ids = {id(w) for w in towers.candidate_encoder.trainable_weights}
    assert not query_ids & candidate_ids
    assert {id(w) for w in model.trainable_weights} == query_ids | candidate_ids
    before = [keras.ops.convert_to_numpy(w) for w in model.trainable_weights]
    inputs = data(n=32)
    same = (np.arange(32) % 2).astype("float32")
    model.compile(optimizer=keras.optimizers.SGD(0.05), loss=ContrastiveLoss())
    history = model.fit(inputs, same, epochs=3, batch_size=8, verbose=0)
    assert np.all(np.isfinite(history.history["loss"]))
    after = [keras.ops.convert_to_numpy(w) for w in model.trainable_weights]
    changed = [not np.allclose(a, b) for a, b in zip(before, after)]
    assert all(changed), "every weight of both towers must receive a gradient"


def test_saves_and_reloads_in_safe_mode(tmp_path):
    model = two_tower_model(merge=CosineDistance())
    inputs = data()
    path = tmp_path / "towers.keras"
    model.save(path)
    reloaded = keras.saving.load_model(path, safe_mode=True)
    np.testing.assert_allclose(
        reloaded.predict(inputs, verbose=0), model.predict(inputs, verbose=0), atol=1e-6
    )
    layer = reloaded.layers[-1]
    assert isinstance(layer, DualEncoder)
    assert layer.query_encoder is not layer.candidate_encoder
    config = model.layers[-1].get_config()
    clone = DualEncoder.from_config(config)
    assert clone.get_config()["fuse_candidates"] is None
    assert isinstance(clone.merge, CosineDistance)


def test_bad_towers_and_inputs_are_refused():
    text = text_tower()
    with pytest.raises(TypeError, match="`query_encoder` must be a Keras layer"):
        DualEncoder(lambda x: x, text)
    with pytest.raises(TypeError, match="`candidate_encoder` must be a Keras layer"):
        DualEncoder(text, "image")
    with pytest.raises(ValueError, match=r"same object.*SiameseWrapper"):
        DualEncoder(text, text)
    with pytest.raises(ValueError, match="`merge`"):
        DualEncoder(text, image_tower(), merge="sum")
    with pytest.raises(TypeError, match="fuse_candidates"):
        DualEncoder(text, image_tower(), fuse_candidates="yes")
    towers = DualEncoder(text, image_tower())
    with pytest.raises(TypeError, match="list or tuple"):
        towers(keras.Input((6,)))
    with pytest.raises(ValueError, match="a query and at least one candidate"):
        towers([keras.Input((6,))])
    with pytest.raises(ValueError, match=r"candidate inputs.*same structure and shape"):
        DualEncoder(text_tower(), image_tower())(
            [keras.Input((6,)), keras.Input((3, 3)), keras.Input((2, 3))]
        )
    wide = keras.Sequential(
        [keras.Input((3, 3)), keras.layers.Flatten(), keras.layers.Dense(7)]
    )
    with pytest.raises(ValueError, match="query tower gives 4, the candidate tower 7"):
        DualEncoder(text_tower(), wide, merge="stack")(
            [keras.Input((6,)), keras.Input((3, 3))]
        )
    # Concatenation compares nothing: towers of different widths are fine.
    joined = DualEncoder(text_tower(), wide, merge="concat")(
        [keras.Input((6,)), keras.Input((3, 3))]
    )
    assert tuple(joined.shape) == (None, 11)


def test_a_shared_encoder_is_still_a_siamese_wrapper():
    # The confusion the error above answers: one encoder object in both
    # places is weight sharing, which SiameseWrapper already is.
    encoder = text_tower()
    a, b = keras.Input((6,)), keras.Input((6,))
    shared = keras.Model([a, b], SiameseWrapper(encoder)([a, b]))
    assert len(shared.trainable_weights) == len(encoder.trainable_weights)


def test_verifier_embeds_queries_with_the_query_tower(tmp_path):
    model = two_tower_model()
    towers = model.layers[-1]
    query_model = keras.Sequential([keras.Input((6,)), towers.query_encoder])
    candidate_model = keras.Sequential([keras.Input((3, 3)), towers.candidate_encoder])
    queries, gallery = data(n=9, seed=3)
    query_embeddings, gallery_embeddings = numpy_towers(model, [queries, gallery])
    labels = np.arange(9) % 3
    verifier = Verifier(candidate_model, threshold=10.0, query_encoder=query_model)
    verifier.enroll(gallery, labels)
    distances = np.linalg.norm(
        query_embeddings[:, None] - gallery_embeddings[None], axis=-1
    )
    expected = labels[np.argmin(distances, axis=1)]
    np.testing.assert_array_equal(verifier.identify(queries), expected)
    np.testing.assert_allclose(
        verifier.pair_distances(queries, gallery),
        np.linalg.norm(query_embeddings - gallery_embeddings, axis=1),
        rtol=1e-5,
    )
    verifier.save(tmp_path / "v")
    assert (tmp_path / "v" / "query_encoder.keras").is_file()
    loaded = Verifier.load(tmp_path / "v")
    assert loaded.query_encoder is not None
    np.testing.assert_array_equal(loaded.identify(queries), expected)
    # Without a query tower, a verifier saves no query encoder.
    Verifier(candidate_model, threshold=1.0).save(tmp_path / "one")
    assert not (tmp_path / "one" / "query_encoder.keras").exists()
    assert Verifier.load(tmp_path / "one").query_encoder is None
    with pytest.raises(TypeError, match="`query_encoder` must be a Keras model"):
        Verifier(candidate_model, query_encoder="text")


def test_retrieval_evaluation_encodes_queries_with_the_query_tower():
    model = two_tower_model()
    towers = model.layers[-1]
    query_model = keras.Sequential([keras.Input((6,)), towers.query_encoder])
    candidate_model = keras.Sequential([keras.Input((3, 3)), towers.candidate_encoder])
    queries, gallery = data(n=12, seed=5)
    labels = np.arange(12) % 4
    callback = RetrievalEvaluation(
        candidate_model,
        queries,
        labels,
        references=gallery,
        reference_labels=labels,
        query_encoder=query_model,
    )
    query_embeddings, gallery_embeddings = numpy_towers(model, [queries, gallery])
    expected = retrieval_metrics(query_embeddings, labels, gallery_embeddings, labels)
    results = callback.evaluate()
    assert set(results) == {"recall_at_1", "map_at_r"}
    for name, value in results.items():
        assert value == pytest.approx(expected[name], abs=1e-6)
    with pytest.raises(ValueError, match="`query_encoder` needs `references`"):
        RetrievalEvaluation(candidate_model, queries, labels, query_encoder=query_model)


def test_a_saved_query_encoder_is_checked_like_the_encoder(tmp_path):
    model = two_tower_model()
    towers = model.layers[-1]
    query_model = keras.Sequential([keras.Input((6,)), towers.query_encoder])
    candidate_model = keras.Sequential([keras.Input((3, 3)), towers.candidate_encoder])
    verifier = Verifier(candidate_model, threshold=1.0, query_encoder=query_model)
    path = tmp_path / "v"
    verifier.save(path)
    name = "query_encoder.keras"
    data = bytearray((path / name).read_bytes())
    data[len(data) // 2] ^= 0xFF
    (path / name).write_bytes(bytes(data))
    with pytest.raises(ValueError, match=r"query_encoder\.keras"):
        Verifier.load(path)
    verifier.save(path)
    record = json.loads((path / "index.json").read_text())
    del record["files"]["encoder.keras"]
    (path / "encoder.keras").unlink()
    (path / "index.json").write_text(json.dumps(record))
    with pytest.raises(ValueError, match="query encoder is listed without an encoder"):
        Verifier.load(path)
