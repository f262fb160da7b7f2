"""EmbeddingIndex: exact search against a NumPy brute force, errors, faiss."""

from __future__ import annotations

import numpy as np
import pytest
from hypothesis import given
from hypothesis import strategies as st
from hypothesis.extra import numpy as hnp

from keras_siamese import EmbeddingIndex
from tests.helpers import record_score_blocks

DISTANCES = ["euclidean", "squared_euclidean", "cosine", "manhattan"]


def brute_force(queries, gallery, distance):
    """`(n, m)` float64 distances, one pair at a time."""
    queries = np.asarray(queries, dtype=np.float64)
    gallery = np.asarray(gallery, dtype=np.float64)
    out = np.zeros((len(queries), len(gallery)))
    for i, q in enumerate(queries):
        if distance == "cosine":
            u = q / max(np.linalg.norm(q), 1e-6)
            v = gallery / np.maximum(
                np.linalg.norm(gallery, axis=1, keepdims=True), 1e-6
            )
            out[i] = np.clip(1.0 - v @ u, 0.0, 2.0)
        elif distance == "manhattan":
            out[i] = np.abs(q - gallery).sum(axis=1)
        else:
            s = ((q - gallery) ** 2).sum(axis=1)
            out[i] = s if distance == "squared_euclidean" else np.sqrt(s)
    return out


def assert_matches_brute_force(distances, indices, reference, k, rtol=1e-5):
    """Same neighbours as sorting `reference` by (distance, index).

    Where two reference distances differ by less than the tolerance, either
    order is accepted; exact ties must be broken by the lower index.
    """
    assert distances.shape == indices.shape == (reference.shape[0], k)
    assert distances.dtype == np.float32 and indices.dtype == np.int64
    for row, (d, i) in enumerate(zip(distances, indices)):
        expected = np.lexsort((np.arange(reference.shape[1]), reference[row]))[:k]
        np.testing.assert_allclose(d, reference[row, expected], rtol=rtol, atol=1e-7)
        # The returned indices are at the distances they claim...
        np.testing.assert_allclose(reference[row, i], d, rtol=rtol, atol=1e-7)
        assert len(set(i.tolist())) == k
        # ...and equal the reference wherever it has no near-tie.
        values = reference[row, expected]
        gaps = np.diff(values)
        scale = np.maximum(np.abs(values[1:]), 1e-6)
        clear = np.ones(k, dtype=bool)
        near = gaps <= rtol * scale + 1e-7
        clear[1:] &= ~near
        clear[:-1] &= ~near
        exact_run = np.zeros(k, dtype=bool)
        exact_run[1:] |= gaps == 0
        exact_run[:-1] |= gaps == 0
        keep = clear | exact_run
        if k < reference.shape[1]:
            # A near-tie with the first item left out blurs the last one.
            after = np.sort(reference[row])[k]
            if after - values[-1] <= rtol * max(abs(after), 1e-6) + 1e-7:
                keep[-1] = False
        np.testing.assert_array_equal(i[keep], expected[keep])


@pytest.fixture(scope="module")
def gallery():
    rng = np.random.default_rng(0)
    x = rng.normal(size=(70, 6)).astype("float32")
    x[10] = x[3]  # duplicate rows: ties broken by the lower index
    x[40] = x[3]
    x[55] = x[20]
    x += 5.0  # an offset makes the Gram form lose more to cancellation
    return x


@pytest.mark.parametrize("distance", DISTANCES)
@pytest.mark.parametrize("block_bytes", [480, 2**26])  # tiles of 40, or one
def test_search_equals_brute_force(gallery, distance, block_bytes):
    rng = np.random.default_rng(1)
    queries = np.concatenate(
        [
            rng.normal(size=(12, 6)).astype("float32") + 5.0,
            gallery[[3, 20, 0, 69]],  # gallery items, some duplicated
        ]
    )
    index = EmbeddingIndex(distance, block_bytes=block_bytes)
    index.add(gallery[:30])
    index.add(gallery[30:])  # rows are numbered in insertion order
    reference = brute_force(queries, gallery, distance)
    for k in (1, 4, len(gallery)):
        distances, indices = index.search(queries, k=k)
        assert_matches_brute_force(distances, indices, reference, k)
    # A query that is a gallery item is at distance 0 from it, exactly.
    distances, indices = index.search(gallery[[3]], k=3)
    assert indices[0].tolist() == [3, 10, 40]
    assert distances[0].tolist() == [0.0, 0.0, 0.0]


@pytest.mark.parametrize(
    ("rows", "block_bytes"),
    [(300, 12 * 4 * 64), (3000, 2**26)],  # 64-row tiles; one grouped tile
    ids=["tiles", "grouped"],
)
def test_ties_across_the_backend_top_k_cut_go_to_the_lower_index(rows, block_bytes):
    """Forty identical rows: the first ones win on every backend.

    Each tile (or group of a wide tile) holds more copies than the candidates
    its `top_k` keeps, so the cut falls inside a run of equal scores.
    """
    rng = np.random.default_rng(2)
    gallery = rng.normal(size=(rows, 3)).astype("float32")
    copies = rng.permutation(150)[:40]
    gallery[copies] = np.float32([0.5, 0.5, 0.5])
    index = EmbeddingIndex("euclidean", block_bytes=block_bytes)
    for k in (1, 5, 12):
        distances, indices = index_search(index, gallery, np.float32([[0.5] * 3]), k)
        assert indices[0].tolist() == sorted(copies)[:k]
        assert (distances == 0).all()


@pytest.mark.parametrize("distance", ["euclidean", "cosine"])
def test_wide_tiles_select_in_two_stages_exactly(distance):
    """Galleries wider than a group scan match the brute force too."""
    rng = np.random.default_rng(7)
    gallery = rng.normal(size=(5000, 8)).astype("float32")
    gallery[4000:4100] = gallery[:100]  # duplicates in other groups
    queries = np.concatenate([rng.normal(size=(20, 8)), gallery[[0, 50, 4999]]])
    index = EmbeddingIndex(distance)
    index.add(gallery)
    reference = brute_force(queries, gallery, distance)
    for k in (1, 10, 40):
        distances, indices = index.search(queries.astype("float32"), k=k)
        assert_matches_brute_force(distances, indices, reference, k)


@pytest.mark.parametrize("exclude_self", [False, True])
def test_later_wide_tiles_are_pruned_by_the_best_so_far_exactly(
    exclude_self, monkeypatch
):
    """Three wide tiles, each pruned by a bound: scores equal to it count.

    Copies of one point lie in more groups of the first tile than the
    candidates kept, so the first tile's bound (its `fetch`-th smallest
    group minimum) equals their score, and in every later tile, where the
    bound is the `fetch`-th best so far: the lower indices must win. Leave-one-out (a query never finds itself) is
    checked against the brute force with the diagonal removed.
    """
    from keras_siamese.distances import get
    from keras_siamese.retrieval import _search

    monkeypatch.setattr(_search, "TILE_COLUMNS", 4096)

    rng = np.random.default_rng(11)
    gallery = rng.normal(size=(10000, 4)).astype("float32")
    # In 25 groups of the first tile (its bound then equals their score),
    # and in the later tiles.
    copies = np.concatenate([32 * np.arange(25) + 7, [4500, 6000, 8100, 9000, 9999]])
    gallery[copies] = np.float32([0.25, -0.5, 1.0, 0.75])
    prepared = _search.PreparedGallery(gallery, get("euclidean", needs=("search",)))
    assert len(prepared.tiles) == 3 and prepared.tiles[0].width == 4096
    rows = np.concatenate([copies[[0, 29]], rng.choice(10000, 6, replace=False)])
    queries = gallery[rows]
    reference = brute_force(queries, gallery, "euclidean")
    if exclude_self:
        reference[np.arange(len(rows)), rows] = np.inf
        found = list(_search.search_blocks(prepared, gallery, 12, exclude_self=True))
        distances = np.concatenate([d for _, d, _ in found])[rows]
        indices = np.concatenate([i for _, _, i in found])[rows]
    else:
        found = list(_search.search_blocks(prepared, queries, 12))
        distances = np.concatenate([d for _, d, _ in found])
        indices = np.concatenate([i for _, _, i in found])
    assert_matches_brute_force(
        distances.astype("float32"), indices, reference, 12, rtol=1e-5
    )
    expected = [c for c in copies if not (exclude_self and c == rows[0])][:12]
    assert indices[0].tolist() == expected


def index_search(index, gallery, queries, k):
    if len(index) == 0:
        index.add(gallery)
    return index.search(queries, k=k)


@given(data=st.data())
def test_search_on_integer_grids_breaks_ties_by_index(data):
    # Few shapes, so that JAX compiles little; 16-column tiles or one tile.
    m, dim = data.draw(st.sampled_from([(3, 1), (20, 2)]))
    grid = hnp.arrays("int64", (m, dim), elements=st.integers(-2, 2))
    gallery = data.draw(grid).astype("float32")
    queries = data.draw(hnp.arrays("int64", (3, dim), elements=st.integers(-2, 2)))
    distance = data.draw(st.sampled_from(["euclidean", "manhattan", "cosine"]))
    k = data.draw(st.integers(1, m))
    block_bytes = data.draw(st.sampled_from([12 * 4 * 4, 2**20]))
    index = EmbeddingIndex(distance, block_bytes=block_bytes)
    index.add(gallery)
    distances, indices = index.search(queries.astype("float32"), k=k)
    reference = brute_force(queries, gallery, distance)
    for row in range(3):
        # On integer grids equal distances are exactly equal: ties are exact.
        values = np.round(reference[row], 9)
        expected = np.lexsort((np.arange(m), values))[:k]
        assert indices[row].tolist() == expected.tolist()
        np.testing.assert_allclose(
            distances[row], reference[row, expected], rtol=1e-6, atol=1e-7
        )


def test_labels_are_kept_in_insertion_order():
    index = EmbeddingIndex()
    index.add(np.zeros((2, 2)), ["a", "b"])
    index.add(np.ones((1, 2)), np.array(["cc"]))
    assert index.labels.tolist() == ["a", "b", "cc"]
    assert index.labels_of(np.array([[2, 0]])).tolist() == [["cc", "a"]]
    numbered = EmbeddingIndex()
    numbered.add(np.zeros((2, 2)), np.array([7, 8], dtype=np.uint8))
    assert numbered.labels.dtype == np.int64
    with pytest.raises(TypeError, match="holds int labels"):
        numbered.add(np.zeros((1, 2)), ["x"])  # another kind: refused, not mixed
    assert numbered.labels.tolist() == [7, 8]
    assert len(numbered) == 2 and numbered.dim == 2
    assert "2 x 2 labelled" in repr(numbered)
    floats = EmbeddingIndex()
    floats.add(np.zeros((1, 2)), [0.5])
    with pytest.raises(ValueError, match="integer or string"):
        floats.save("unused")


def test_bad_input_raises_clear_errors():
    index = EmbeddingIndex()
    with pytest.raises(ValueError, match="empty"):
        index.search(np.zeros((1, 3)))
    index.add(np.zeros((4, 3)), [0, 1, 2, 3])
    with pytest.raises(ValueError, match="embedding size 3"):
        index.search(np.zeros((2, 4)))
    with pytest.raises(ValueError, match="embedding size 3"):
        index.add(np.zeros((2, 2)), [0, 1])
    with pytest.raises(ValueError, match="finite"):
        index.search(np.array([[0.0, np.nan, 0.0]]))
    with pytest.raises(ValueError, match=r"finite.*row 1|row 1.*finite"):
        index.add(np.array([[0.0, 0.0, 0.0], [np.inf, 0.0, 0.0]]), [0, 1])
    with pytest.raises(ValueError, match="`k`"):
        index.search(np.zeros((1, 3)), k=0)
    with pytest.raises(TypeError, match="`k`"):
        index.search(np.zeros((1, 3)), k=1.5)
    with pytest.raises(ValueError, match="at most the number of indexed rows"):
        index.search(np.zeros((1, 3)), k=5)
    with pytest.raises(ValueError, match="one label per row: 2 rows but 3 labels"):
        index.add(np.zeros((2, 3)), [0, 1, 2])
    with pytest.raises(ValueError, match="pass `labels`"):
        index.add(np.zeros((2, 3)))
    with pytest.raises(ValueError, match="2-D"):
        index.search(np.zeros(3))
    with pytest.raises(TypeError, match="real numbers"):
        index.search(np.array([["a", "b", "c"]]))
    with pytest.raises(ValueError, match=r"row numbers in \[0, 4\)"):
        index.labels_of([4])
    with pytest.raises(ValueError, match=r"`distance`.*chebyshev"):
        EmbeddingIndex("chebyshev")
    with pytest.raises(ValueError, match="`engine`"):
        EmbeddingIndex(engine="annoy")
    unlabelled = EmbeddingIndex()
    unlabelled.add(np.zeros((2, 3)))
    with pytest.raises(ValueError, match="no labels"):
        unlabelled.add(np.zeros((1, 3)), [1])
    with pytest.raises(ValueError, match="no labels"):
        unlabelled.labels_of([0])


@pytest.mark.parametrize("distance", DISTANCES)
def test_scores_never_exceed_the_block_budget(monkeypatch, distance):
    blocks = record_score_blocks(monkeypatch)
    rng = np.random.default_rng(3)
    block_bytes = 2**16
    index = EmbeddingIndex(distance, block_bytes=block_bytes)
    index.add(rng.normal(size=(3000, 8)))
    index.search(rng.normal(size=(60, 8)), k=5)
    budget = block_bytes // 4
    assert len(blocks.shapes) > 1
    assert max(rows * columns for rows, columns in blocks.shapes) <= budget
    # One score matrix at a time: each is freed before the next is made.
    assert max(blocks.alive) == 0


def test_from_encoder_encodes_in_batches():
    keras = pytest.importorskip("keras")
    encoder = keras.Sequential([keras.Input((3,)), keras.layers.Dense(2)])
    x = np.random.default_rng(4).random((9, 3)).astype("float32")
    index = EmbeddingIndex.from_encoder(
        encoder, x, np.arange(9), batch_size=4, verbose=0, distance="cosine"
    )
    assert index.distance == "cosine" and len(index) == 9
    np.testing.assert_allclose(
        index.embeddings, encoder.predict(x, verbose=0), rtol=1e-6, atol=1e-6
    )
    with pytest.raises(TypeError, match="predict"):
        EmbeddingIndex.from_encoder(object(), x)


@pytest.mark.parametrize("distance", DISTANCES)
def test_faiss_flat_equals_the_exact_engine(gallery, distance):
    pytest.importorskip("faiss")
    rng = np.random.default_rng(5)
    queries = np.concatenate([rng.normal(size=(10, 6)) + 5.0, gallery[[3, 20]]])
    exact = EmbeddingIndex(distance)
    flat = EmbeddingIndex(distance, engine="faiss")
    for index in (exact, flat):
        index.add(gallery[:50])
        index.add(gallery[50:])
    for k in (1, 7):
        expected = exact.search(queries, k=k)
        got = flat.search(queries, k=k)
        np.testing.assert_array_equal(got[1], expected[1])
        np.testing.assert_allclose(got[0], expected[0], rtol=1e-6)


@pytest.mark.parametrize("distance", ["euclidean", "cosine"])
def test_faiss_hnsw_finds_most_true_neighbours(distance):
    pytest.importorskip("faiss")
    rng = np.random.default_rng(6)
    centres = rng.normal(size=(20, 16)) * 4
    gallery = centres[rng.integers(0, 20, 2000)] + rng.normal(size=(2000, 16))
    queries = centres[rng.integers(0, 20, 100)] + rng.normal(size=(100, 16))
    exact = EmbeddingIndex(distance)
    hnsw = EmbeddingIndex(distance, engine="faiss-hnsw", ef_search=64)
    exact.add(gallery)
    hnsw.add(gallery)
    _, truth = exact.search(queries, k=10)
    distances, found = hnsw.search(queries, k=10)
    recall = np.mean([len(set(a) & set(b)) / 10 for a, b in zip(truth, found)])
    assert recall >= 0.9
    # Whatever HNSW finds is re-ranked with exact distances.
    np.testing.assert_allclose(
        distances,
        brute_force(queries, gallery, distance)[np.arange(100)[:, None], found],
        rtol=1e-5,
        atol=1e-6,
    )


def test_faiss_engines_explain_a_missing_install(monkeypatch):
    import sys

    monkeypatch.setitem(sys.modules, "faiss", None)
    with pytest.raises(ImportError, match=r"keras-siamese\[faiss\]"):
        EmbeddingIndex(engine="faiss-hnsw")


def _padded_floor_by_search(size: int) -> int:
    from keras_siamese.retrieval._search import padded_size

    rows = size
    while rows > 1 and padded_size(rows) > size:
        rows -= 1
    return rows


@given(st.integers(1, 5000) | st.integers(1, 2**40))
def test_padded_floor_is_the_largest_padded_size_not_above(size):
    from keras_siamese.retrieval._search import padded_floor, padded_size

    rows = padded_floor(size)
    assert 1 <= rows <= size and padded_size(rows) == rows
    if size <= 5000:
        assert rows == _padded_floor_by_search(size)
    else:  # the next padded size is above `size`
        assert padded_size(rows + 1) > size


def test_the_largest_block_budget_sizes_blocks_by_its_padded_rows():
    # 1 GiB of scores on a one-row gallery: hundreds of millions of rows
    # per block, sized without counting down to them.
    index = EmbeddingIndex(block_bytes=2**30)
    index.add(np.ones((1, 4), "float32"))
    distances, indices = index.search(np.zeros((3, 4), "float32"), k=1)
    assert indices.tolist() == [[0], [0], [0]]
    np.testing.assert_allclose(distances, 2.0)
