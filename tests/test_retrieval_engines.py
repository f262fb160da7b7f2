"""Search engines: the protocol, the registry, the shared exact re-ranking,
`search(exclude=...)`, and saving an index with its engine."""

from __future__ import annotations

import json

import keras
import numpy as np
import pytest
from hypothesis import given
from hypothesis import strategies as st
from hypothesis.extra import numpy as hnp

from keras_siamese import EmbeddingIndex, Verifier, distances
from keras_siamese.retrieval import engines
from keras_siamese.retrieval._rerank import rerank
from tests.test_retrieval_index import assert_matches_brute_force, brute_force

DISTANCES = ["euclidean", "squared_euclidean", "cosine", "manhattan"]


def exact_engines():
    """The engines that must find every true neighbour here."""
    names = ["keras"]
    try:
        import faiss  # noqa: F401
    except ImportError:
        return names
    return [*names, "faiss"]


def reference_search(queries, gallery, distance, k, exclude=None):
    """`(distances, rows)` by sorting the NumPy brute force by (distance, row)."""
    reference = brute_force(queries, gallery, distance)
    if exclude is not None:
        for row, left_out in enumerate(exclude):
            if left_out >= 0:
                reference[row, left_out] = np.inf
    order = np.lexsort(
        (np.broadcast_to(np.arange(len(gallery)), reference.shape), reference), axis=-1
    )[:, :k]
    return np.take_along_axis(reference, order, axis=1), order, reference


class Shuffled(engines.Engine):
    """Every gallery row as a candidate, shuffled, repeated, padded with -1
    and with rows past the gallery: the re-ranking must sort all that out."""

    name = "shuffled-test"

    def __init__(self, seed=0):
        if not isinstance(seed, int):
            raise TypeError(f"`seed` must be an int; got {seed!r}.")
        self.seed = seed
        self.added = 0

    def add(self, embeddings):
        self.added += len(embeddings)

    def candidates(self, queries, k, references):
        rng = np.random.default_rng(self.seed)
        rows = np.arange(len(references))
        found = np.stack([rng.permutation(rows) for _ in queries])
        junk = np.tile([-1, len(references), len(references) + 7], (len(queries), 1))
        return np.concatenate([found, found[:, :2], junk], axis=1)

    def get_config(self):
        return {"seed": self.seed}


class Nothing(engines.Engine):
    """No candidates at all: every query is searched exactly instead."""

    name = "nothing-test"

    def add(self, embeddings):
        pass

    def candidates(self, queries, k, references):
        return np.full((len(queries), 2), -1)


# -- the shared exact re-ranking ------------------------------------------------


@given(data=st.data())
def test_rerank_equals_sorting_the_brute_force(data):
    m, dim = 12, 2
    grid = hnp.arrays("int64", (m, dim), elements=st.integers(-2, 2))
    gallery = data.draw(grid).astype("float32")
    queries = data.draw(hnp.arrays("int64", (3, dim), elements=st.integers(-2, 2)))
    queries = queries.astype("float32")
    distance = data.draw(st.sampled_from(["euclidean", "manhattan"]))
    width = data.draw(st.integers(0, 20))
    candidates = data.draw(
        hnp.arrays("int64", (3, width), elements=st.integers(-1, m + 2))
    )
    exclude = data.draw(hnp.arrays("int64", (3,), elements=st.integers(-1, m - 1)))
    k = data.draw(st.integers(1, m - 1))
    found, rows, short = rerank(
        queries, gallery, candidates, k, distances.get(distance), exclude
    )
    reference = brute_force(queries, gallery, distance)
    for row in range(3):
        usable = {int(c) for c in candidates[row] if 0 <= c < m and c != exclude[row]}
        # Integer grids: equal distances are exactly equal, ties by the row.
        expected = sorted(usable, key=lambda c: (reference[row, c], c))[:k]
        got = [int(c) for c in rows[row] if c >= 0]
        assert got == expected
        np.testing.assert_array_equal(found[row, : len(got)], reference[row, got])
        assert (rows[row, len(got) :] == -1).all()
        assert np.isinf(found[row, len(got) :]).all()
        assert (row in short) == (len(usable) < k)
    assert found.dtype == np.float64 and rows.dtype == np.int64


# -- exclude ---------------------------------------------------------------------


@pytest.mark.parametrize("engine", exact_engines())
@pytest.mark.parametrize("distance", DISTANCES)
def test_leave_one_out_equals_the_brute_force(engine, distance):
    rng = np.random.default_rng(0)
    gallery = rng.normal(size=(60, 5)).astype("float32") + 3.0
    gallery[[10, 30]] = gallery[3]  # copies of row 3 must still be found
    index = EmbeddingIndex(distance, engine=engine, block_bytes=1024)
    index.add(gallery[:25])
    index.add(gallery[25:])
    for k in (1, 5, 59):
        found, rows = index.search(gallery, k=k, exclude=np.arange(60))
        assert not (rows == np.arange(60)[:, None]).any()
        _, _, reference = reference_search(gallery, gallery, distance, k, np.arange(60))
        assert_matches_brute_force(found, rows, reference, k)
    _, rows = index.search(gallery[[3]], k=2, exclude=[3])
    assert rows.tolist() == [[10, 30]]


@pytest.mark.parametrize("engine", exact_engines())
@given(data=st.data())
def test_exclude_on_integer_grids_equals_the_brute_force(engine, data):
    m, dim = data.draw(st.sampled_from([(3, 1), (20, 2)]))
    gallery = data.draw(hnp.arrays("int64", (m, dim), elements=st.integers(-2, 2)))
    queries = data.draw(hnp.arrays("int64", (4, dim), elements=st.integers(-2, 2)))
    exclude = data.draw(hnp.arrays("int64", (4,), elements=st.integers(-1, m - 1)))
    distance = data.draw(
        st.sampled_from(["euclidean", "squared_euclidean", "manhattan"])
    )
    k = data.draw(st.integers(1, m - 1))
    index = EmbeddingIndex(distance, engine=engine)
    index.add(gallery.astype("float32"))
    found, rows = index.search(queries.astype("float32"), k=k, exclude=exclude)
    want_distances, want_rows, _ = reference_search(
        queries, gallery, distance, k, exclude
    )
    np.testing.assert_array_equal(rows, want_rows)
    np.testing.assert_array_equal(found, want_distances.astype("float32"))


def test_hnsw_leave_one_out_never_finds_the_row_and_reports_exact_distances():
    pytest.importorskip("faiss")
    rng = np.random.default_rng(8)
    centres = rng.normal(size=(10, 8)) * 4
    gallery = (centres[rng.integers(0, 10, 400)] + rng.normal(size=(400, 8))).astype(
        "float32"
    )
    gallery[[5, 6]] = gallery[4]
    index = EmbeddingIndex(engine="faiss-hnsw", ef_search=32, hnsw_neighbors=8)
    index.add(gallery)
    found, rows = index.search(gallery, k=5, exclude=np.arange(400))
    assert not (rows == np.arange(400)[:, None]).any()
    assert (rows >= 0).all() and all(len(set(r)) == 5 for r in rows.tolist())
    reference = brute_force(gallery, gallery, "euclidean")
    np.testing.assert_allclose(
        found, np.take_along_axis(reference, rows, axis=1), rtol=1e-6, atol=1e-7
    )
    assert rows[4, :2].tolist() == [5, 6]  # its copies, at distance 0
    _, truth, _ = reference_search(gallery, gallery, "euclidean", 5, np.arange(400))
    recall = np.mean([len(set(a) & set(b)) / 5 for a, b in zip(rows, truth)])
    assert recall >= 0.9


def test_exclude_without_rows_to_leave_out_is_an_ordinary_search():
    rng = np.random.default_rng(1)
    gallery = rng.normal(size=(9, 3)).astype("float32")
    index = EmbeddingIndex()
    index.add(gallery)
    plain = index.search(gallery[:4], k=9)
    none = index.search(gallery[:4], k=9, exclude=np.full(4, -1))
    for got, want in zip(none, plain):
        np.testing.assert_array_equal(got, want)


def test_bad_exclude_raises_clear_errors():
    index = EmbeddingIndex()
    index.add(np.eye(4, dtype="float32"))
    queries = np.eye(4, dtype="float32")[:2]
    with pytest.raises(TypeError, match=r"`exclude`.*integer"):
        index.search(queries, exclude=[0.0, 1.0])
    with pytest.raises(TypeError, match=r"`exclude`.*integer"):
        index.search(queries, exclude=[True, False])
    with pytest.raises(ValueError, match=r"`exclude`.*shape \(2,\); got shape \(3,\)"):
        index.search(queries, exclude=[0, 1, 2])
    with pytest.raises(ValueError, match=r"`exclude`.*shape \(2,\); got shape \(\)"):
        index.search(queries, exclude=0)
    with pytest.raises(ValueError, match=r"\[0, 4\) or -1.*from -2 to 0"):
        index.search(queries, exclude=[-2, 0])
    with pytest.raises(ValueError, match=r"\[0, 4\) or -1.*from 0 to 4"):
        index.search(queries, exclude=[0, 4])
    with pytest.raises(ValueError, match="less the excluded one \\(3\\); got 4"):
        index.search(queries, k=4, exclude=[0, -1])
    assert index.search(queries, k=4, exclude=[-1, -1])[1].shape == (2, 4)


# -- engines end to end -------------------------------------------------------------


@pytest.mark.parametrize("engine", [Shuffled(seed=3), Nothing()])
def test_a_user_engine_searches_exactly(engine):
    rng = np.random.default_rng(2)
    gallery = rng.integers(-2, 3, size=(40, 3)).astype("float32")
    queries = np.concatenate([rng.integers(-2, 3, size=(6, 3)), gallery[:2]])
    index = EmbeddingIndex("manhattan", engine=engine)
    index.add(gallery[:15])
    index.add(gallery[15:])
    assert index.engine == engine.name and index.engine_object is engine
    for k in (1, 7, 40):
        found, rows = index.search(queries, k=k)
        want_distances, want_rows, _ = reference_search(
            queries, gallery, "manhattan", k
        )
        np.testing.assert_array_equal(rows, want_rows)
        np.testing.assert_array_equal(found, want_distances.astype("float32"))
    found, rows = index.search(gallery, k=3, exclude=np.arange(40))
    want_distances, want_rows, _ = reference_search(
        gallery, gallery, "manhattan", 3, np.arange(40)
    )
    np.testing.assert_array_equal(rows, want_rows)
    if isinstance(engine, Shuffled):
        assert engine.added == 40  # every row given to `add` once


def test_faiss_engine_objects_equal_the_exact_engine():
    pytest.importorskip("faiss")
    rng = np.random.default_rng(4)
    gallery = rng.normal(size=(300, 8)).astype("float32")
    queries = rng.normal(size=(20, 8)).astype("float32")
    exact = EmbeddingIndex("cosine")
    exact.add(gallery)
    for engine in (
        engines.FaissEngine(),
        # A graph searched as broadly as the gallery is large finds all.
        engines.FaissHNSWEngine(ef_search=512, hnsw_neighbors=16),
    ):
        index = EmbeddingIndex("cosine", engine=engine)
        index.add(gallery)
        for got, want in zip(index.search(queries, k=10), exact.search(queries, k=10)):
            np.testing.assert_array_equal(got, want)
    assert index.ef_search == 512 and index.hnsw_neighbors == 16


def test_bad_engines_raise_clear_errors():
    with pytest.raises(ValueError, match=r"`engine`.*'annoy'"):
        EmbeddingIndex(engine="annoy")
    with pytest.raises(TypeError, match=r"`engine`.*got 3"):
        EmbeddingIndex(engine=3)
    with pytest.raises(TypeError, match=r"class ExactEngine \(call it"):
        EmbeddingIndex(engine=engines.ExactEngine)
    with pytest.raises(TypeError, match=r"Engine object.*\['block_bytes'\]"):
        EmbeddingIndex(engine=engines.ExactEngine(), block_bytes=2**20)
    with pytest.raises(TypeError, match=r"engine='keras'.*beam_width"):
        EmbeddingIndex(engine="keras", beam_width=3)
    with pytest.raises(ValueError, match="`block_bytes` must be at most"):
        engines.ExactEngine(block_bytes=2**31)
    shared = engines.ExactEngine()
    EmbeddingIndex(engine=shared)
    with pytest.raises(ValueError, match="already serves an index"):
        EmbeddingIndex(engine=shared)


def test_an_engine_returning_malformed_candidates_is_named():
    class Flat(Nothing):
        def candidates(self, queries, k, references):
            return np.zeros(len(queries), dtype=np.int64)

    class Floats(Nothing):
        def candidates(self, queries, k, references):
            return np.zeros((len(queries), 2))

    for engine, error, message in [
        (Flat(), ValueError, r"'nothing-test'.*shape \(2,\).*\(2, c\)"),
        (Floats(), TypeError, "'nothing-test'.*dtype float64"),
    ]:
        index = EmbeddingIndex(engine=engine)
        index.add(np.eye(3, dtype="float32"))
        with pytest.raises(error, match=message):
            index.search(np.eye(3, dtype="float32")[:2])


def test_register_adds_an_engine_by_name_and_guards_the_names():
    @engines.register
    class Everything(Shuffled):
        name = "everything-test"

    index = EmbeddingIndex("manhattan", engine="everything-test", seed=5)
    assert isinstance(index.engine_object, Everything)
    assert index.engine_object.seed == 5
    assert engines.register(Everything) is Everything  # again: no change

    class Other(Shuffled):
        name = "everything-test"

    with pytest.raises(ValueError, match=r"already registered.*override=True"):
        engines.register(Other)
    assert engines.register(Other, override=True) is Other
    assert isinstance(engines.get("everything-test"), Other)

    class Keras(engines.ExactEngine):
        name = "keras"

    with pytest.raises(ValueError, match="built-in engine 'keras'"):
        engines.register(Keras, override=True)
    with pytest.raises(TypeError, match="subclass of Engine"):
        engines.register(Shuffled())
    with pytest.raises(TypeError, match="non-empty string `name`"):
        engines.register(type("Nameless", (engines.Engine,), {}))


# -- configuration and saving -----------------------------------------------------


def test_get_config_and_from_config_round_trip():
    index = EmbeddingIndex("cosine", engine="keras", block_bytes=2**20, ef_search=99)
    config = index.get_config()
    assert config == {
        "distance": "cosine",
        "engine": {
            "name": "keras",
            "block_bytes": 2**20,
            "hnsw_neighbors": 32,
            "ef_search": 99,
            "ef_construction": 64,
        },
    }
    assert json.loads(json.dumps(config)) == config
    rebuilt = EmbeddingIndex.from_config(config)
    assert rebuilt.get_config() == config and len(rebuilt) == 0
    # Another engine object, or another engine's name with the same options.
    other = EmbeddingIndex.from_config(config, engine=Shuffled(seed=4))
    assert other.engine == "shuffled-test" and other.distance == "cosine"
    with pytest.raises(TypeError, match="`config` must be a dict"):
        EmbeddingIndex.from_config({"distance": "cosine"})


def test_an_unregistered_engine_is_refused_by_save_and_nothing_written(tmp_path):
    class Unregistered(Shuffled):
        name = "unregistered-test"

    index = EmbeddingIndex(engine=Unregistered())
    index.add(np.eye(3, dtype="float32"))
    with pytest.raises(ValueError, match=r"Unregistered.*not registered.*register"):
        index.save(tmp_path / "saved")
    assert list(tmp_path.iterdir()) == []
    encoder = keras.Sequential([keras.Input((3,)), keras.layers.Identity()])
    verifier = Verifier(encoder, index=index)
    with pytest.raises(ValueError, match="not registered"):
        verifier.save(tmp_path / "verifier")
    assert list(tmp_path.iterdir()) == []


def test_a_registered_engine_saves_and_loads_with_its_options(tmp_path):
    @engines.register
    class Saved(Shuffled):
        name = "saved-test"

    rng = np.random.default_rng(5)
    gallery = rng.normal(size=(30, 4)).astype("float32")
    index = EmbeddingIndex(engine=Saved(seed=11))
    index.add(gallery, np.arange(30))
    index.save(tmp_path / "saved")
    record = json.loads((tmp_path / "saved" / "index.json").read_text())
    assert record["engine"] == {"name": "saved-test", "seed": 11}
    loaded = EmbeddingIndex.load(tmp_path / "saved")
    assert type(loaded.engine_object) is Saved and loaded.engine_object.seed == 11
    expected = index.search(gallery, k=4)
    for got, want in zip(loaded.search(gallery, k=4), expected):
        np.testing.assert_array_equal(got, want)
    np.testing.assert_array_equal(loaded.labels, np.arange(30))
    # Loaded with another engine, by name or as an object.
    assert EmbeddingIndex.load(tmp_path / "saved", engine="keras").engine == "keras"
    custom = EmbeddingIndex.load(tmp_path / "saved", engine=engines.ExactEngine())
    np.testing.assert_array_equal(custom.search(gallery, k=4)[1], expected[1])
    # Options the engine refuses are a ValueError of the load.
    record["engine"]["seed"] = "eleven"
    (tmp_path / "saved" / "index.json").write_text(json.dumps(record))
    with pytest.raises(ValueError, match=r"settings are invalid.*eleven"):
        EmbeddingIndex.load(tmp_path / "saved")


def test_a_tampered_user_engine_record_is_a_value_error(tmp_path):
    @engines.register
    class Tampered(Shuffled):
        name = "tampered-test"

    index = EmbeddingIndex(engine=Tampered())
    index.add(np.eye(2, dtype="float32"))
    path = tmp_path / "saved"
    index.save(path)

    def rewrite(change):
        record = json.loads((path / "index.json").read_text())
        change(record["engine"])
        (path / "index.json").write_text(json.dumps(record))

    rewrite(lambda engine: engine.update(seed={"nested": 1}))
    with pytest.raises(ValueError, match=r"engine\.seed must be a string, a number"):
        EmbeddingIndex.load(path)
    rewrite(lambda engine: engine.update(seed=1, name="never-registered"))
    with pytest.raises(ValueError, match=r"engine.name 'never-registered'.*register"):
        EmbeddingIndex.load(path)


def test_a_verifier_saves_and_loads_its_gallery_through_public_methods(tmp_path):
    @engines.register
    class Served(Shuffled):
        name = "served-test"

    encoder = keras.Sequential([keras.Input((3,)), keras.layers.Identity()])
    verifier = Verifier(
        encoder, threshold=1.0, index=EmbeddingIndex(engine=Served(seed=2))
    )
    verifier.enroll(np.eye(3, dtype="float32"), ["a", "b", "c"])
    verifier.save(tmp_path / "v")
    loaded = Verifier.load(tmp_path / "v")
    assert loaded.index.engine_object.seed == 2
    queries = np.array([[0.9, 0.1, 0.0], [0.0, 0.0, 5.0]], dtype="float32")
    assert loaded.identify(queries).tolist() == ["a", "unknown"]
    exact = Verifier.load(tmp_path / "v", engine=engines.ExactEngine(block_bytes=4096))
    assert exact.index.block_bytes == 4096
    assert exact.identify(queries).tolist() == ["a", "unknown"]


def test_a_save_loaded_with_another_built_in_engine_keeps_its_settings(tmp_path):
    pytest.importorskip("faiss")
    index = EmbeddingIndex(ef_search=77, hnsw_neighbors=8)
    index.add(np.random.default_rng(6).normal(size=(50, 4)).astype("float32"))
    index.save(tmp_path / "saved")
    hnsw = EmbeddingIndex.load(tmp_path / "saved", engine="faiss-hnsw")
    assert (hnsw.engine, hnsw.ef_search, hnsw.hnsw_neighbors) == ("faiss-hnsw", 77, 8)


# -- no rows -------------------------------------------------------------------------


class _NoPredict:
    def predict(self, x, **kwargs):
        raise AssertionError("predict must not be called without inputs")


def test_adding_no_rows_changes_nothing():
    index = EmbeddingIndex()
    index.add(np.zeros((0, 5)))
    index.add(np.zeros((0, 3)), [])
    assert len(index) == 0 and index.dim is None and index.labels is None
    index.add(np.ones((2, 3)), [1, 2])
    index.add(np.zeros((0, 3)), np.zeros(0, dtype=np.int64))
    assert len(index) == 2 and index.labels.tolist() == [1, 2]
    with pytest.raises(ValueError, match="embedding size 3"):
        index.add(np.zeros((0, 4)))
    with pytest.raises(ValueError, match="2 labels"):
        index.add(np.zeros((0, 3)), [1, 2])
    empty = EmbeddingIndex.from_encoder(_NoPredict(), np.zeros((0, 4)), [])
    assert len(empty) == 0
    with pytest.raises(ValueError, match="0 rows but 1 labels"):
        EmbeddingIndex.from_encoder(_NoPredict(), np.zeros((0, 4)), [1])


def test_enrolling_no_inputs_changes_nothing():
    verifier = Verifier(_NoPredict(), threshold=1.0)
    verifier.enroll(np.zeros((0, 4)), [])
    verifier.enroll({"a": np.zeros((0, 4)), "b": np.zeros((0, 2))}, [])
    assert verifier.index is None
    with pytest.raises(ValueError, match="0 rows but 2 labels"):
        verifier.enroll(np.zeros((0, 4)), ["a", "b"])


@pytest.mark.parametrize("distance", DISTANCES)
def test_exclude_on_tiles_pruned_by_group_minima(distance):
    # 3,000 rows make tiles wide enough to be pruned by group minima (on JAX,
    # scored as `(rows, groups, group)` blocks); every query leaves itself out.
    rng = np.random.default_rng(11)
    gallery = rng.normal(size=(3000, 8)).astype("float32")
    index = EmbeddingIndex(distance, block_bytes=2**18)
    index.add(gallery)
    queries = np.arange(0, 3000, 37)
    found_distances, found = index.search(gallery[queries], k=6, exclude=queries)
    expected_distances, expected, _ = reference_search(
        gallery[queries], gallery, distance, 6, exclude=queries
    )
    np.testing.assert_array_equal(found, expected)
    np.testing.assert_allclose(found_distances, expected_distances, rtol=1e-6)
