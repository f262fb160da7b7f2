"""Quantized EmbeddingIndex: int8 codes and packed sign bits, rescored exactly."""

from __future__ import annotations

import json
from unittest import mock

import numpy as np
import pytest
from hypothesis import given
from hypothesis import strategies as st
from hypothesis.extra import numpy as hnp

from keras_siamese import EmbeddingIndex
from keras_siamese.retrieval import _quantized
from tests.test_retrieval_index import assert_matches_brute_force, brute_force

KINDS = [
    ("int8", "euclidean"),
    ("int8", "squared_euclidean"),
    ("int8", "cosine"),
    ("binary", "cosine"),
]
KEEP = ["memory", "disk", None]

small_floats = st.floats(-8, 8, width=32, allow_subnormal=False)


def mixture(count, dim, clusters=20, seed=0, spread=0.4):
    """Gaussian mixture around centred cluster means, float32."""
    rng = np.random.default_rng(seed)
    centres = rng.normal(size=(clusters, dim))
    rows = centres[rng.integers(0, clusters, count)]
    return (rows + spread * rng.normal(size=(count, dim))).astype("float32")


def recall(found, truth):
    return np.mean([len(set(a) & set(b)) / len(b) for a, b in zip(found, truth)])


# -- the codes against NumPy references ----------------------------------------


@given(
    hnp.arrays(
        np.float32,
        st.tuples(st.integers(1, 12), st.integers(1, 6)),
        elements=small_floats,
    )
)
def test_int8_codes_are_the_nearest_of_256_levels(x):
    ranges = _quantized.int8_ranges(x)
    np.testing.assert_array_equal(ranges, [x.min(axis=0), x.max(axis=0)])
    codes = _quantized.int8_codes(x, ranges)
    assert codes.dtype == np.int8
    # Reference: the 256 evenly spaced levels of each range, nearest by brute force.
    low, high = ranges.astype(np.float64)
    levels = low + (high - low)[None, :] / 255.0 * np.arange(256)[:, None]
    gaps = np.abs(x.astype(np.float64)[:, None, :] - levels[None, :, :])
    nearest = gaps.min(axis=1)
    chosen = np.take_along_axis(gaps, codes.astype(np.int64)[:, None, :] + 128, axis=1)
    # The code is a nearest level (either one at an exact half-step).
    step = (high - low) / 255.0
    assert (chosen[:, 0] - nearest <= 1e-4 * step + 1e-6).all()
    # A constant column is code -128, its one value.
    constant = high == low
    assert (codes[:, constant] == -128).all()
    decoded = _quantized.int8_decode(codes, ranges)
    assert (np.abs(decoded - x) <= step / 2 + 1e-5 * (1 + np.abs(x))).all()


def test_int8_values_outside_the_range_are_clipped():
    ranges = np.array([[0.0, -1.0], [1.0, 1.0]], dtype=np.float32)
    x = np.array([[5.0, -3.0], [-2.0, 9.0], [0.5, 0.0]], dtype=np.float32)
    codes = _quantized.int8_codes(x, ranges)
    assert codes[:2].tolist() == [[127, -128], [-128, 127]]
    assert codes[2].tolist() == [0, 0]  # 127.5 and 127.5 rounded to even: 128 - 128


@given(
    st.integers(1, 70).flatmap(
        lambda bits: st.tuples(
            hnp.arrays(bool, st.tuples(st.integers(1, 6), st.just(bits))),
            hnp.arrays(bool, st.tuples(st.integers(1, 6), st.just(bits))),
        )
    )
)
def test_hamming_counts_differing_bits_symmetrically(pair):
    a, b = pair
    bits = a.shape[1]
    distance = _quantized.hamming(np.packbits(a, axis=1), np.packbits(b, axis=1))
    reference = np.array([[int(np.sum(u != v)) for v in b] for u in a])
    np.testing.assert_array_equal(distance, reference)
    np.testing.assert_array_equal(
        _quantized.hamming(np.packbits(b, axis=1), np.packbits(a, axis=1)), distance.T
    )
    assert ((distance >= 0) & (distance <= bits)).all()
    assert (np.diag(_quantized.hamming(*[np.packbits(a, axis=1)] * 2)) == 0).all()


def test_binary_codes_are_packed_sign_bits():
    x = np.array([[0.5, -1.0, 0.0, 2.0, 1.0, 1.0, -1.0, 1.0, 3.0]], dtype=np.float32)
    codes = _quantized.binary_codes(x)
    assert codes.dtype == np.uint8 and codes.shape == (1, 2)
    assert codes[0].tolist() == [0b10011101, 0b10000000]


def test_popcount_table_counts_bits():
    assert _quantized._POPCOUNT.tolist() == [bin(i).count("1") for i in range(256)]
    words = np.array([0, 1, 2**64 - 1, 0x0F0F], dtype=np.uint64)
    assert _quantized.popcount(words).tolist() == [0, 1, 64, 8]


def distances_by_codes(index, queries, gallery):
    """NumPy reference: each query's distance to every row as the codes see it
    (to the decoded int8 rows, or the Hamming distance of the sign bits)."""
    if index.quantization == "int8":
        decoded = _quantized.int8_decode(index.codes, index.int8_ranges)
        return brute_force(queries, decoded, index.distance)
    return (
        ((queries[:, None, :] > 0) != (gallery[None, :, :] > 0))
        .sum(axis=-1)
        .astype(np.float64)
    )


# -- rescored search against exact search ----------------------------------------


@given(
    data=st.data(),
    kind=st.sampled_from(KINDS),
    k=st.integers(1, 4),
    rescore=st.integers(1, 6),
)
def test_rescored_top_k_is_exact_when_the_candidates_hold_it(data, kind, k, rescore):
    quantization, distance = kind
    dim = data.draw(st.integers(1, 10), label="dim")
    gallery = data.draw(
        hnp.arrays(
            np.float32, (data.draw(st.integers(k, 30)), dim), elements=small_floats
        ),
        label="gallery",
    )
    queries = data.draw(
        hnp.arrays(
            np.float32, (data.draw(st.integers(1, 4)), dim), elements=small_floats
        ),
        label="queries",
    )
    index = EmbeddingIndex(distance, quantization=quantization, rescore=rescore)
    index.add(gallery)
    distances, indices = index.search(queries, k=k)
    reference = brute_force(queries, gallery, distance)
    candidates = index._quantizer.candidates(queries, index.codes, k * rescore)
    for row in range(len(queries)):
        expected = np.lexsort((np.arange(len(gallery)), reference[row]))[:k]
        # Every returned row is a candidate, at its exact distance, nearest first.
        assert set(indices[row]) <= set(candidates[row])
        np.testing.assert_allclose(
            distances[row], reference[row, indices[row]], rtol=1e-5, atol=1e-6
        )
        assert (np.diff(distances[row]) >= 0).all()
        if set(expected) <= set(candidates[row]):
            assert_matches_brute_force(
                distances[row : row + 1],
                indices[row : row + 1],
                reference[row : row + 1],
                k,
            )
    if k * rescore >= len(gallery):  # the candidates are every row
        assert_matches_brute_force(distances, indices, reference, k)


@pytest.mark.parametrize("hits", [0.0, 2.0])
@pytest.mark.parametrize("kind", KINDS)
@given(data=st.data(), width=st.integers(1, 8))
def test_candidates_are_the_nearest_by_the_codes_across_tiles(data, width, kind, hits):
    """Tiles of a few rows (binary) and chunks of a few rows (int8): the
    candidates merged across them are still the `width` nearest by the codes,
    whether each tile's nearest are selected first (`hits` 0) or only the
    distances below the worst kept are merged (`hits` 2)."""
    quantization, distance = kind
    dim = data.draw(st.integers(1, 10), label="dim")
    count = data.draw(st.integers(width, 40), label="count")
    gallery = data.draw(
        hnp.arrays(np.float32, (count, dim), elements=small_floats), label="gallery"
    )
    queries = data.draw(
        hnp.arrays(
            np.float32, (data.draw(st.integers(1, 12)), dim), elements=small_floats
        ),
        label="queries",
    )
    index = EmbeddingIndex(distance, quantization=quantization)
    index.add(gallery)
    with (
        mock.patch.object(_quantized, "_BINARY_TILE_ROWS", 1),
        mock.patch.object(_quantized, "_BINARY_BLOCK", 3),
        mock.patch.object(_quantized, "_DECODED_CHUNK_ELEMENTS", 1),
        mock.patch.object(_quantized, "_HITS_FRACTION", hits),
    ):
        rows = index._quantizer.candidates(queries, index.codes, width)
    by_codes = distances_by_codes(index, queries, gallery)
    assert rows.shape == (len(queries), width)
    for row in range(len(queries)):
        assert len(set(rows[row].tolist())) == width
        np.testing.assert_allclose(
            np.sort(by_codes[row, rows[row]]),
            np.sort(by_codes[row])[:width],
            rtol=1e-5,
            atol=1e-6,
        )


@pytest.mark.parametrize(("quantization", "distance"), KINDS)
def test_rescoring_recovers_exact_recall_on_clustered_data(quantization, distance):
    gallery, queries = mixture(3000, 64, seed=0), mixture(60, 64, seed=1)
    exact = EmbeddingIndex(distance)
    exact.add(gallery)
    truth = exact.search(queries, k=10)[1]
    found = {}
    for keep, rescore in ((None, 1), ("memory", 1), ("memory", 4), ("memory", 300)):
        index = EmbeddingIndex(
            distance, quantization=quantization, rescore=rescore, keep_float=keep
        )
        index.add(gallery)
        found[keep, rescore] = recall(index.search(queries, k=10)[1], truth)
    # Every row a candidate: exact.
    assert found["memory", 300] == 1.0
    # Rescoring the same candidates only reorders them, more candidates help.
    assert found["memory", 4] >= found["memory", 1] >= found[None, 1] - 1e-9
    if quantization == "int8":
        assert found["memory", 4] >= 0.97, found
    else:
        # Sign bits barely tell apart the rows of one cluster: rescoring
        # 4x more candidates must find clearly more of the true neighbours.
        assert found["memory", 4] >= 2 * found[None, 1], found


@pytest.mark.parametrize(("quantization", "distance"), KINDS)
def test_without_floats_the_distances_are_measured_on_the_codes(quantization, distance):
    gallery, queries = mixture(200, 12, seed=2), mixture(7, 12, seed=3)
    index = EmbeddingIndex(distance, quantization=quantization, keep_float=None)
    index.add(gallery)
    distances, indices = index.search(queries, k=5)
    reference = distances_by_codes(index, queries, gallery)
    np.testing.assert_allclose(
        distances, np.take_along_axis(reference, indices, axis=1), rtol=1e-4, atol=1e-5
    )
    assert (np.diff(distances, axis=1) >= 0).all()
    # The k nearest by the codes (ties aside).
    kth = np.sort(reference, axis=1)[:, 4]
    assert (distances[:, -1] <= kth + 1e-4).all()
    with pytest.raises(ValueError, match="keeps no float32 embeddings"):
        _ = index.embeddings


@pytest.mark.parametrize("keep", KEEP)
def test_exclude_leaves_each_row_out(keep):
    gallery = mixture(100, 8)
    index = EmbeddingIndex("cosine", quantization="binary", keep_float=keep)
    index.add(gallery)
    _, indices = index.search(gallery, k=3, exclude=np.arange(100))
    assert not (indices == np.arange(100)[:, None]).any()
    assert len(set(map(tuple, np.sort(indices, axis=1)))) > 1


# -- memory ------------------------------------------------------------------


def test_memory_is_4x_and_32x_smaller():
    gallery = mixture(1000, 64)
    sizes = {}
    for quantization, distance in (
        (None, "cosine"),
        ("int8", "cosine"),
        ("binary", "cosine"),
    ):
        options = {} if quantization is None else {"keep_float": None}
        index = EmbeddingIndex(distance, quantization=quantization, **options)
        index.add(gallery)
        sizes[quantization] = index.memory_bytes
    assert sizes[None] == gallery.nbytes
    assert sizes["int8"] == gallery.nbytes // 4 + 2 * 64 * 4  # codes and ranges
    assert sizes["binary"] == gallery.nbytes // 32
    kept = EmbeddingIndex("cosine", quantization="int8")
    kept.add(gallery)
    assert kept.memory_bytes == gallery.nbytes + sizes["int8"]


# -- saving and loading ------------------------------------------------------


@pytest.mark.parametrize("keep", KEEP)
@pytest.mark.parametrize(("quantization", "distance"), [KINDS[0], KINDS[3]])
def test_save_load_round_trip_and_add_after_load(
    tmp_path, quantization, distance, keep
):
    gallery, queries = mixture(300, 16, seed=4), mixture(9, 16, seed=5)
    index = EmbeddingIndex(
        distance, quantization=quantization, rescore=3, keep_float=keep
    )
    index.add(gallery[:250], np.arange(250))
    before = index.search(queries, k=4)
    index.save(tmp_path / "saved")
    assert index.search(queries, k=4)[1].tolist() == before[1].tolist()
    loaded = EmbeddingIndex.load(tmp_path / "saved")
    assert loaded.get_config() == index.get_config()
    assert (loaded.quantization, loaded.rescore, loaded.keep_float) == (
        quantization,
        3,
        keep,
    )
    np.testing.assert_array_equal(loaded.codes, index.codes)
    if quantization == "int8":
        np.testing.assert_array_equal(loaded.int8_ranges, index.int8_ranges)
    after = loaded.search(queries, k=4)
    np.testing.assert_array_equal(after[0], before[0])
    np.testing.assert_array_equal(after[1], before[1])
    np.testing.assert_array_equal(loaded.labels, np.arange(250))
    ranges_bytes = 0 if quantization == "binary" else 2 * 16 * 4
    if keep == "disk":  # the floats are mapped from the save, not in memory
        assert loaded.memory_bytes == loaded.codes.nbytes + ranges_bytes
    if keep is not None:
        np.testing.assert_array_equal(loaded.embeddings, gallery[:250])
    # Adding after a load: the same as adding to the original.
    for each in (index, loaded):
        each.add(gallery[250:], np.arange(250, 300))
    np.testing.assert_array_equal(loaded.codes, index.codes)
    both = [each.search(queries, k=6) for each in (index, loaded)]
    np.testing.assert_array_equal(both[0][0], both[1][0])
    np.testing.assert_array_equal(both[0][1], both[1][1])
    if keep == "disk":
        # Only the rows added since the load are in memory.
        assert loaded.memory_bytes == loaded.codes.nbytes + ranges_bytes + 50 * 16 * 4
        np.testing.assert_array_equal(loaded.embeddings, gallery)
    # Saved again over the mapped save: still the same rows.
    loaded.save(tmp_path / "saved")
    again = EmbeddingIndex.load(tmp_path / "saved")
    np.testing.assert_array_equal(again.search(queries, k=6)[1], both[0][1])


def test_an_empty_quantized_index_saves_and_loads(tmp_path):
    index = EmbeddingIndex(
        "cosine", quantization="int8", calibration=mixture(20, 4), keep_float=None
    )
    index.save(tmp_path / "empty")
    loaded = EmbeddingIndex.load(tmp_path / "empty")
    assert len(loaded) == 0
    np.testing.assert_array_equal(loaded.int8_ranges, index.int8_ranges)
    loaded.add(mixture(30, 4))
    assert loaded.search(mixture(2, 4, seed=9), k=2)[1].shape == (2, 2)


@pytest.mark.parametrize("name", ["codes.npy", "ranges.npy", "embeddings.npy"])
def test_tampered_arrays_are_detected(tmp_path, name):
    index = EmbeddingIndex(quantization="int8", keep_float="disk")
    index.add(mixture(50, 8))
    index.save(tmp_path / "saved")
    path = tmp_path / "saved" / name
    data = bytearray(path.read_bytes())
    data[-1] ^= 0x01
    path.write_bytes(bytes(data))
    with pytest.raises(ValueError, match=f"{name} does not match its checksum"):
        EmbeddingIndex.load(tmp_path / "saved")


@pytest.mark.parametrize(
    ("change", "message"),
    [
        (lambda r: r["quantization"].update(kind="int4"), "quantization.kind"),
        (lambda r: r["quantization"].update(rescore=0), "quantization.rescore"),
        (lambda r: r["quantization"].update(keep_float="gpu"), "keep_float"),
        (lambda r: r["files"].pop("codes.npy"), "files lacks codes.npy"),
        (lambda r: r.pop("quantization"), "without quantization"),
        (lambda r: r["quantization"].update(keep_float=None), "keeps no float32"),
        (lambda r: r["quantization"].update(kind="binary"), "ranges.npy is listed"),
    ],
)
def test_tampered_quantization_settings_are_value_errors(tmp_path, change, message):
    index = EmbeddingIndex(quantization="int8")
    index.add(mixture(20, 8))
    index.save(tmp_path / "saved")
    path = tmp_path / "saved" / "index.json"
    record = json.loads(path.read_text())
    change(record)
    path.write_text(json.dumps(record))
    with pytest.raises(ValueError, match=message):
        EmbeddingIndex.load(tmp_path / "saved")


def test_missing_codes_file_is_a_value_error(tmp_path):
    index = EmbeddingIndex("cosine", quantization="binary", keep_float=None)
    index.add(mixture(20, 8))
    index.save(tmp_path / "saved")
    assert not (tmp_path / "saved" / "embeddings.npy").exists()
    (tmp_path / "saved" / "codes.npy").unlink()
    with pytest.raises(ValueError, match=r"codes\.npy is missing"):
        EmbeddingIndex.load(tmp_path / "saved")


# -- truncate_dim --------------------------------------------------------------


@pytest.mark.parametrize("quantization", ["int8", "binary"])
def test_truncate_dim_composes_with_quantization(quantization):
    gallery, queries = mixture(120, 10), mixture(5, 10, seed=6)
    calibration = mixture(40, 10, seed=7) if quantization == "int8" else None
    truncated = EmbeddingIndex(
        "cosine", quantization=quantization, truncate_dim=4, calibration=calibration
    )
    truncated.add(gallery)
    narrow = EmbeddingIndex(
        "cosine",
        quantization=quantization,
        calibration=None if calibration is None else calibration[:, :4],
    )
    narrow.add(gallery[:, :4])
    np.testing.assert_array_equal(truncated.codes, narrow.codes)
    for a, b in zip(truncated.search(queries, k=3), narrow.search(queries[:, :4], k=3)):
        np.testing.assert_array_equal(a, b)


# -- bad input -----------------------------------------------------------------


@pytest.mark.parametrize(
    ("options", "error", "message"),
    [
        ({"quantization": "int4"}, ValueError, "`quantization` must be one of"),
        (
            {"quantization": "int8", "rescore": 0},
            ValueError,
            "`rescore` must be a positive integer",
        ),
        ({"quantization": "int8", "rescore": 2**16 + 1}, ValueError, "`rescore`"),
        ({"quantization": "int8", "rescore": 2.0}, TypeError, "`rescore`"),
        ({"quantization": "binary", "distance": "euclidean"}, ValueError, "sign bits"),
        ({"quantization": "int8", "distance": "manhattan"}, ValueError, "manhattan"),
        ({"quantization": "int8", "keep_float": "gpu"}, ValueError, "`keep_float`"),
        ({"rescore": 8}, ValueError, "give `quantization`"),
        ({"keep_float": None}, ValueError, "give `quantization`"),
        ({"quantization": "int8", "engine": "faiss"}, ValueError, "leave `engine`"),
        (
            {
                "quantization": "binary",
                "distance": "cosine",
                "calibration": np.ones((2, 3)),
            },
            ValueError,
            "binary codes take none",
        ),
        (
            {"quantization": "int8", "calibration": np.array([[1.0, np.nan]])},
            ValueError,
            "`calibration` must hold finite numbers",
        ),
    ],
)
def test_bad_settings_are_refused(options, error, message):
    with pytest.raises(error, match=message):
        EmbeddingIndex(**options)


def test_calibration_of_another_width_is_refused_at_the_first_add():
    index = EmbeddingIndex(quantization="int8", calibration=np.ones((3, 5)))
    with pytest.raises(ValueError, match="`calibration` has 5 dimensions"):
        index.add(np.ones((2, 4)))
    assert len(index) == 0
    with pytest.raises(ValueError, match="fewer than the index's truncate_dim=4"):
        EmbeddingIndex(quantization="int8", calibration=np.ones((3, 2)), truncate_dim=4)
