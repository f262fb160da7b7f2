"""A user-defined distance (Chebyshev) end to end, and the forms of every distance."""

import keras
import numpy as np
import pytest
from hypothesis import given
from hypothesis import strategies as st
from hypothesis.extra import numpy as hnp
from keras import ops

from keras_siamese import (
    ContrastiveLoss,
    EmbeddingIndex,
    OnlineTripletLoss,
    PairDistance,
    TripletAccuracy,
    TripletLoss,
    Verifier,
    distances,
    one_shot_accuracy,
    pairwise_distances,
    retrieval_metrics,
)
from keras_siamese.losses.contrastive import contrastive_loss
from tests.helpers import to_numpy


class Chebyshev(distances.Distance):
    """`max_k |a_k - b_k|`: no matrix-product form, no faiss metric."""

    name = "chebyshev"

    def paired_form(self, a, b, keepdims):
        return ops.max(ops.abs(a - b), axis=-1, keepdims=keepdims)

    def pairwise_form(self, x, y):
        return ops.max(ops.abs(ops.expand_dims(x, 1) - ops.expand_dims(y, 0)), axis=-1)

    def exact_form(self, a, b):
        return np.max(np.abs(a - b), axis=-1)


class FaissChebyshev(Chebyshev):
    """The same distance, searched by faiss with its L-infinity metric."""

    name = "chebyshev_faiss"
    faiss_form = distances.FaissForm("Linf")


class PairedOnly(distances.Distance):
    """Only the paired `keras.ops` form: enough for TripletLoss, not for search."""

    name = "paired_only"

    def paired_form(self, a, b, keepdims):
        return ops.max(ops.abs(a - b), axis=-1, keepdims=keepdims)


class ExactOnly(distances.Distance):
    """Only the NumPy form: enough for one-shot accuracy, not for search."""

    name = "exact_only"

    def exact_form(self, a, b):
        return np.max(np.abs(a - b), axis=-1)


def chebyshev_matrix(x, y):
    x = np.asarray(x, np.float64)
    y = np.asarray(y, np.float64)
    return np.max(np.abs(x[:, None, :] - y[None, :, :]), axis=-1)


def brute_force(queries, gallery, k):
    """The k nearest rows by Chebyshev distance, ties to the lower row."""
    d = chebyshev_matrix(queries, gallery)
    columns = np.broadcast_to(np.arange(len(gallery)), d.shape)
    order = np.lexsort((columns, d), axis=-1)[:, :k]
    return np.take_along_axis(d, order, axis=1), order


@pytest.fixture
def registry(monkeypatch):
    """A private copy of the registry, so that registrations end with the test."""
    monkeypatch.setattr(distances, "_DISTANCES", dict(distances._DISTANCES))
    return distances


# -- search ---------------------------------------------------------------


def test_index_searches_with_the_custom_distance_not_its_name():
    # Euclidean would put (8, 1) first at sqrt(65) = 8.062; Chebyshev puts
    # (6, 6) first at 6 and (8, 1) second at exactly 8.
    index = EmbeddingIndex(Chebyshev())
    index.add(np.array([[8.0, 1.0], [6.0, 6.0]]))
    found, rows = index.search(np.array([[0.0, 0.0]]), k=2)
    assert rows.tolist() == [[1, 0]]
    assert found.tolist() == [[6.0, 8.0]]
    assert index.distance == "chebyshev"
    assert isinstance(index.distance_object, Chebyshev)


@pytest.mark.parametrize("values", ["integers", "reals"])
def test_index_search_equals_numpy_brute_force(values):
    rng = np.random.default_rng(3)
    if values == "integers":  # many equal distances: ties by the lower row
        gallery = rng.integers(-3, 4, size=(300, 5)).astype("float32")
        queries = rng.integers(-3, 4, size=(37, 5)).astype("float32")
    else:
        gallery = rng.normal(size=(300, 5)).astype("float32")
        queries = rng.normal(size=(37, 5)).astype("float32")
    # A small budget: several tiles and query blocks.
    index = EmbeddingIndex(Chebyshev(), block_bytes=4096)
    index.add(gallery)
    found, rows = index.search(queries, k=12)
    expected_distances, expected_rows = brute_force(queries, gallery, 12)
    np.testing.assert_array_equal(rows, expected_rows)
    np.testing.assert_array_equal(found, expected_distances.astype("float32"))


def test_faiss_engines_refuse_a_distance_without_a_faiss_metric():
    for engine in ("faiss", "faiss-hnsw"):
        with pytest.raises(ValueError, match="faiss_form"):
            EmbeddingIndex(Chebyshev(), engine=engine)


def test_faiss_engine_uses_the_distance_faiss_metric():
    pytest.importorskip("faiss")
    rng = np.random.default_rng(4)
    gallery = rng.normal(size=(200, 6)).astype("float32")
    queries = rng.normal(size=(20, 6)).astype("float32")
    index = EmbeddingIndex(FaissChebyshev(), engine="faiss")
    index.add(gallery)
    found, rows = index.search(queries, k=5)
    expected_distances, expected_rows = brute_force(queries, gallery, 5)
    np.testing.assert_array_equal(rows, expected_rows)
    np.testing.assert_array_equal(found, expected_distances.astype("float32"))


def test_a_faiss_metric_faiss_lacks_is_refused_at_construction():
    pytest.importorskip("faiss")

    class Unknown(Chebyshev):
        name = "unknown_metric"
        faiss_form = distances.FaissForm("NO_SUCH_METRIC")

    with pytest.raises(ValueError, match="METRIC_NO_SUCH_METRIC"):
        EmbeddingIndex(Unknown(), engine="faiss")


def test_retrieval_metrics_with_the_custom_distance():
    rng = np.random.default_rng(5)
    x = rng.normal(size=(60, 3)).astype("float32")
    labels = rng.integers(0, 4, size=60)
    scores = retrieval_metrics(x, labels, distance=Chebyshev())
    d = chebyshev_matrix(x, x)
    np.fill_diagonal(d, np.inf)
    columns = np.broadcast_to(np.arange(60), d.shape)
    nearest = np.lexsort((columns, d), axis=-1)[:, 0]
    answerable = np.array([np.sum(labels == c) > 1 for c in labels])
    hits = labels[nearest] == labels
    assert scores["recall_at_1"] == pytest.approx(hits[answerable].mean())


# -- losses, layers and metrics -----------------------------------------------


def test_online_triplet_loss_against_numpy():
    rng = np.random.default_rng(6)
    embeddings = rng.normal(size=(12, 4)).astype("float32")
    labels = np.repeat(np.arange(4), 3)
    loss = OnlineTripletLoss(mining="batch_hard", margin=0.5, distance=Chebyshev())
    value = float(to_numpy(loss(labels, embeddings)))
    d = chebyshev_matrix(embeddings, embeddings)
    same = labels[:, None] == labels[None, :]
    positive = same & ~np.eye(12, dtype=bool)
    hardest_positive = np.where(positive, d, -np.inf).max(axis=1)
    hardest_negative = np.where(~same, d, np.inf).min(axis=1)
    expected = np.maximum(hardest_positive - hardest_negative + 0.5, 0.0).mean()
    assert value == pytest.approx(expected, rel=1e-5, abs=1e-6)
    assert loss.distance == "chebyshev"


def test_online_triplet_loss_trains_with_an_unregistered_distance():
    rng = np.random.default_rng(7)
    x = rng.normal(size=(32, 4)).astype("float32")
    y = np.repeat(np.arange(8), 4)
    model = keras.Sequential([keras.Input((4,)), keras.layers.Dense(3)])
    model.compile(optimizer="sgd", loss=OnlineTripletLoss(distance=Chebyshev()))
    history = model.fit(x, y, batch_size=16, epochs=1, verbose=0)
    assert np.isfinite(history.history["loss"][0])


def test_triplet_loss_and_accuracy_against_numpy():
    rng = np.random.default_rng(8)
    triplets = rng.normal(size=(10, 3, 4)).astype("float32")
    a, p, n = (triplets[:, i].astype(np.float64) for i in range(3))
    d_ap = np.max(np.abs(a - p), axis=-1)
    d_an = np.max(np.abs(a - n), axis=-1)
    loss = TripletLoss(margin=0.3, distance=Chebyshev())
    value = float(to_numpy(loss(np.zeros(10), triplets)))
    assert value == pytest.approx(np.maximum(d_ap - d_an + 0.3, 0).mean(), rel=1e-5)
    metric = TripletAccuracy(distance=Chebyshev())
    metric.update_state(np.zeros(10), triplets)
    assert float(to_numpy(metric.result())) == pytest.approx(np.mean(d_ap < d_an))


def test_contrastive_loss_on_the_pair_distance_layer():
    rng = np.random.default_rng(9)
    a = rng.normal(size=(8, 5)).astype("float32")
    b = rng.normal(size=(8, 5)).astype("float32")
    same = np.array([1, 0, 1, 0, 0, 1, 1, 0], "float32")
    layer = PairDistance(Chebyshev())
    d = to_numpy(layer([a, b]))
    expected_d = np.max(np.abs(a.astype(np.float64) - b), axis=-1)
    assert d.shape == (8, 1)
    np.testing.assert_allclose(d[:, 0], expected_d, rtol=1e-6)
    value = float(to_numpy(ContrastiveLoss(margin=2.0)(same, d)))
    expected = np.mean(
        same * expected_d**2 + (1 - same) * np.maximum(2.0 - expected_d, 0) ** 2
    )
    assert value == pytest.approx(expected, rel=1e-5)
    # The function form agrees with the loss object.
    per_pair = to_numpy(contrastive_loss(same, d, margin=2.0))
    assert float(np.mean(per_pair)) == pytest.approx(expected, rel=1e-5)


@pytest.mark.parametrize("name", distances.DISTANCES)
def test_pair_distance_layer_is_the_paired_form(name):
    rng = np.random.default_rng(10)
    a = rng.normal(size=(4, 3)).astype("float32")
    b = rng.normal(size=(4, 3)).astype("float32")
    expected = np.asarray(distances.get(name).exact(a, b))[:, None]
    got = to_numpy(PairDistance(name)([a, b]))
    np.testing.assert_allclose(got, expected, rtol=1e-5, atol=1e-6)
    assert PairDistance.from_config(PairDistance(name).get_config()).distance == name


# -- one-shot ---------------------------------------------------------------------


def test_one_shot_accuracy_with_the_custom_distance():
    # In two dimensions max(|u|, |v|) = (|u + v| + |u - v|) / 2: Chebyshev
    # is half the Manhattan distance after a rotation, and class means
    # commute with it, so both must score every episode alike.
    # Coordinates on a grid of eighths keep the rotation and the class means
    # of four shots exact, so equal distances stay equal in both.
    rng = np.random.default_rng(12)
    labels = np.repeat(np.arange(12), 6)
    x = rng.normal(size=(72, 2)) + 0.8 * rng.normal(size=(12, 2))[labels]
    x = np.round(x * 8) / 8
    rotated = x @ np.array([[1.0, 1.0], [1.0, -1.0]]).T
    for shots in (1, 4):
        mine = one_shot_accuracy(
            x, labels, ways=5, shots=shots, episodes=200, distance=Chebyshev()
        )
        reference = one_shot_accuracy(
            rotated, labels, ways=5, shots=shots, episodes=200, distance="manhattan"
        )
        assert mine == reference
        # The custom distance is used, not a built-in one (on these points,
        # each scores differently).
        for name in ("euclidean", "manhattan"):
            other = one_shot_accuracy(
                x, labels, ways=5, shots=shots, episodes=200, distance=name
            )
            assert mine != other


def test_one_shot_accuracy_needs_only_the_exact_form():
    labels = np.repeat(np.arange(3), 2)
    x = labels[:, None] * 10.0 + np.array([[0.0, 0.0], [1.0, 0.0]] * 3)
    assert one_shot_accuracy(x, labels, ways=3, episodes=5, distance=ExactOnly()) == 1
    with pytest.raises(ValueError, match="exact_form"):
        one_shot_accuracy(x, labels, ways=3, episodes=5, distance=PairedOnly())


# -- refusals at construction ---------------------------------------------------


def _identity():
    return keras.Sequential([keras.Input((2,)), keras.layers.Identity()])


@pytest.mark.parametrize(
    ("make", "lacking"),
    [
        (lambda: EmbeddingIndex(PairedOnly()), "exact_form"),
        (lambda: EmbeddingIndex(ExactOnly()), "pairwise_form"),
        (lambda: Verifier(_identity(), PairedOnly()), "exact_form"),
        (lambda: OnlineTripletLoss(distance=PairedOnly()), "pairwise_form"),
        (lambda: OnlineTripletLoss(distance=ExactOnly()), "pairwise_form"),
        (lambda: TripletLoss(distance=ExactOnly()), "paired_form"),
        (lambda: TripletAccuracy(distance=ExactOnly()), "paired_form"),
        (lambda: PairDistance(ExactOnly()), "paired_form"),
        (lambda: pairwise_distances(np.ones((2, 2)), PairedOnly()), "pairwise_form"),
    ],
)
def test_a_distance_lacking_a_form_is_refused_by_name(make, lacking):
    with pytest.raises(ValueError, match=lacking) as error:
        make()
    assert "cannot use distance" in str(error.value)


def test_a_distance_class_or_a_nameless_distance_is_refused():
    with pytest.raises(TypeError, match=r"call it: Chebyshev\(\)"):
        EmbeddingIndex(Chebyshev)

    class Nameless(Chebyshev):
        name = ""

    with pytest.raises(TypeError, match="non-empty string `name`"):
        TripletLoss(distance=Nameless())


def test_missing_lists_the_lacking_forms():
    assert Chebyshev().missing(*distances.FORMS) == ["faiss"]
    assert PairedOnly().missing("paired", "pairwise", "exact", "search") == [
        "pairwise",
        "exact",
        "search",
    ]
    with pytest.raises(ValueError, match="Unknown distance form"):
        Chebyshev().missing("gradient")


# -- registration and saving --------------------------------------------------


def test_registered_distance_is_found_by_name_everywhere(registry):
    chebyshev = registry.register(Chebyshev())
    assert registry.get("chebyshev") is chebyshev
    x = np.array([[0.0, 0.0], [8.0, 1.0]])
    assert float(to_numpy(pairwise_distances(x, "chebyshev"))[0, 1]) == 8.0
    index = EmbeddingIndex("chebyshev")
    assert index.distance_object is chebyshev
    # Registering an equal distance again is harmless; another one is refused.
    registry.register(Chebyshev())
    assert registry.get("chebyshev") is chebyshev

    class Other(Chebyshev):
        pass

    with pytest.raises(ValueError, match="already registered"):
        registry.register(Other())
    assert registry.register(Other(), override=True) is registry.get("chebyshev")

    class Impostor(Chebyshev):
        name = "euclidean"

    with pytest.raises(ValueError, match="cannot be replaced"):
        registry.register(Impostor(), override=True)


def test_unregistered_distance_cannot_be_saved_by_name(tmp_path):
    index = EmbeddingIndex(Chebyshev())
    index.add(np.ones((3, 2)))
    target = tmp_path / "index"
    with pytest.raises(ValueError, match="not registered"):
        index.save(target)
    assert not target.exists()
    for owner in (
        OnlineTripletLoss(distance=Chebyshev()),
        TripletLoss(distance=Chebyshev()),
        TripletAccuracy(distance=Chebyshev()),
        PairDistance(Chebyshev()),
    ):
        with pytest.raises(ValueError, match="register"):
            owner.get_config()


def test_registered_distance_saves_and_loads(registry, tmp_path):
    registry.register(Chebyshev())
    rng = np.random.default_rng(12)
    gallery = rng.normal(size=(40, 3)).astype("float32")
    queries = rng.normal(size=(5, 3)).astype("float32")
    index = EmbeddingIndex(Chebyshev())
    index.add(gallery)
    index.save(tmp_path / "index")
    loaded = EmbeddingIndex.load(tmp_path / "index")
    assert loaded.distance_object == Chebyshev()
    for got, want in zip(loaded.search(queries, 4), index.search(queries, 4)):
        np.testing.assert_array_equal(got, want)
    loss = OnlineTripletLoss.from_config(
        OnlineTripletLoss(distance=Chebyshev()).get_config()
    )
    config = PairDistance(Chebyshev()).get_config()
    # A process that has not registered the distance cannot load it, and says
    # how to make it known.
    registry._DISTANCES.pop("chebyshev")
    with pytest.raises(ValueError, match="register"):
        EmbeddingIndex.load(tmp_path / "index")
    # Keras re-raises a layer's from_config error as a TypeError.
    with pytest.raises((TypeError, ValueError), match="register"):
        PairDistance.from_config(config)
    registry.register(Chebyshev())
    assert loss.distance == "chebyshev"
    layer = PairDistance.from_config(PairDistance(Chebyshev()).get_config())
    assert layer.distance == "chebyshev"


def test_verifier_with_the_custom_distance():
    verifier = Verifier(_identity(), Chebyshev(), threshold=7.0)
    np.testing.assert_array_equal(
        verifier.pair_distances(np.array([[0.0, 0.0]]), np.array([[8.0, 1.0]])),
        [8.0],
    )
    verifier.enroll(np.array([[8.0, 1.0], [6.0, 6.0]]), ["a", "b"])
    assert verifier.identify(np.array([[0.0, 0.0]])).tolist() == ["b"]
    with pytest.raises(ValueError, match="must agree"):
        verifier.index = EmbeddingIndex("euclidean")


# -- properties of the forms ------------------------------------------------------

finite = st.floats(-50, 50, allow_nan=False, width=32)
EVERY = (*distances.DISTANCES, "chebyshev")


def _distance(name):
    return Chebyshev() if name == "chebyshev" else distances.get(name)


@st.composite
def row_sets(draw):
    n = draw(st.sampled_from((1, 3)))
    m = draw(st.sampled_from((2, 5)))
    dim = draw(st.sampled_from((1, 4)))
    x = draw(hnp.arrays("float32", (n, dim), elements=finite))
    y = draw(hnp.arrays("float32", (m, dim), elements=finite))
    return x, y


def _tolerance(name, x, y, gram):
    """Round-off allowance of the float32 `keras.ops` forms.

    `gram`: the form goes through `||x||^2 - 2 x.y + ||y||^2` (the pairwise
    Euclidean kinds), which loses precision relative to the squared norms.
    """
    size = max(np.abs(x).max(initial=0), np.abs(y).max(initial=0), 1.0)
    dim = x.shape[1]
    if name == "cosine":
        return 1e-6 * dim
    if name == "squared_euclidean":
        return 1e-6 * size**2 * dim
    if name == "euclidean" and gram:
        return np.sqrt(1e-6 * size**2 * dim)
    return 1e-6 * size * dim


@pytest.mark.parametrize("name", EVERY)
@given(rows=row_sets())
def test_exact_form_equals_pairwise_and_paired_forms(name, rows):
    x, y = rows
    distance = _distance(name)
    exact = distance.exact(x[:, None, :], y[None, :, :])
    assert exact.dtype == np.float64
    assert exact.shape == (len(x), len(y))
    np.testing.assert_allclose(
        to_numpy(distance.pairwise(x, y)),
        exact,
        rtol=1e-6,
        atol=_tolerance(name, x, y, gram=True),
    )
    paired = to_numpy(distance.paired(x[:1].repeat(len(y), 0), y))
    np.testing.assert_allclose(
        paired, exact[0], rtol=1e-6, atol=_tolerance(name, x, y, gram=False)
    )


@pytest.mark.parametrize("name", EVERY)
@given(rows=row_sets())
def test_exact_form_is_symmetric_and_non_negative_with_a_zero_diagonal(name, rows):
    x, y = rows
    distance = _distance(name)
    forward = distance.exact(x[:, None, :], y[None, :, :])
    backward = distance.exact(y[:, None, :], x[None, :, :])
    np.testing.assert_allclose(forward, backward.T, rtol=1e-12, atol=1e-12)
    assert (forward >= 0).all()
    itself = distance.exact(x, x)
    if name == "cosine":
        # A zero vector has no direction: its distance to anything is 1.
        itself = itself[np.linalg.norm(x.astype(np.float64), axis=1) > 1e-5]
    np.testing.assert_allclose(itself, 0.0, atol=1e-12)


@pytest.mark.parametrize(
    "name", [name for name in distances.DISTANCES if distances.get(name).matmul_form]
)
@given(rows=row_sets())
def test_matmul_form_orders_the_gallery_as_the_exact_form(name, rows):
    queries, gallery = rows
    distance = distances.get(name)
    form = distance.matmul_form
    weights, bias = form.gallery(gallery.astype(np.float64))
    prepared = queries if form.query is None else form.query(queries)
    scores = np.asarray(prepared, np.float64) @ np.asarray(weights, np.float64).T
    scores = scores + bias
    exact = distance.exact(queries[:, None, :], gallery[None, :, :])
    # A monotone map: for each query, the score difference of two gallery
    # rows has the sign of their distance difference (beyond round-off).
    size = max(np.abs(queries).max(), np.abs(gallery).max(), 1.0)
    slack = 1e-6 * size**2 * queries.shape[1]
    score_gap = scores[:, :, None] - scores[:, None, :]
    exact_gap = exact[:, :, None] - exact[:, None, :]
    if name == "euclidean":
        exact_gap = np.square(exact)[:, :, None] - np.square(exact)[:, None, :]
    assert not ((exact_gap > slack) & (score_gap < -slack)).any()
    assert not ((exact_gap < -slack) & (score_gap > slack)).any()


def test_retrieval_evaluation_callback_with_the_custom_distance():
    from keras_siamese import RetrievalEvaluation

    rng = np.random.default_rng(13)
    x = rng.normal(size=(40, 2)).astype("float32")
    y = rng.integers(0, 3, size=40)
    callback = RetrievalEvaluation(
        _identity(), x, y, metrics=("map_at_r",), distance=Chebyshev()
    )
    assert callback.evaluate() == retrieval_metrics(
        x, y, distance=Chebyshev(), metrics=("map_at_r",)
    )
