"""The re-ranking distances: the product form equals the difference form."""

from __future__ import annotations

import os
import subprocess
import sys
from pathlib import Path

import keras
import numpy as np
import pytest
from hypothesis import given
from hypothesis import strategies as st
from hypothesis.extra import numpy as hnp

from keras_siamese import distances
from keras_siamese.retrieval import _search


def direct(queries, gallery, indices, distance):
    """Every pair from its coordinate differences, in float64."""
    q = queries[:, None, :].astype(np.float64)
    return distance.exact(q, gallery[indices].astype(np.float64))


@pytest.mark.parametrize("name", ["euclidean", "squared_euclidean", "cosine"])
def test_the_product_form_equals_the_difference_form(name):
    distance = distances.get(name)
    rng = np.random.default_rng(0)
    gallery = rng.normal(size=(300, 40)).astype("float32")
    # Exact duplicates, a near duplicate, a zero row and a tiny one: where
    # the product form cancels, the pairs are measured from differences.
    gallery[1] = gallery[0]
    gallery[2] = gallery[0] + np.float32(1e-6)
    gallery[3] = 0.0
    gallery[4] = 1e-30
    queries = np.concatenate([gallery[:5], rng.normal(size=(20, 40))]).astype("float32")
    indices = np.concatenate(
        [np.tile(np.arange(6), (25, 1)), rng.integers(0, 300, (25, 30))], axis=1
    )
    got = _search.exact_distances(queries, gallery, indices, distance)
    expected = direct(queries, gallery, indices, distance)
    np.testing.assert_allclose(got, expected, rtol=1e-9, atol=0)
    # Identical rows are exactly 0 apart, as the difference form has them.
    assert got[0, 0] == got[0, 1] == got[1, 0] == 0.0
    np.testing.assert_array_equal(got == 0, expected == 0)


def test_spread_candidates_are_measured_from_differences(monkeypatch):
    calls = []
    original = _search._direct
    monkeypatch.setattr(
        _search, "_direct", lambda *args: calls.append(args[-2:]) or original(*args)
    )
    rng = np.random.default_rng(1)
    gallery = rng.normal(size=(5000, 4)).astype("float32")
    queries = rng.normal(size=(400, 4)).astype("float32")
    distance = distances.get("euclidean")
    # Two candidates per query, nearly all distinct rows: no product.
    indices = rng.permutation(5000)[:800].reshape(400, 2)
    got = _search.exact_distances(queries, gallery, indices, distance)
    assert calls
    np.testing.assert_allclose(
        got, direct(queries, gallery, indices, distance), rtol=1e-14
    )
    # Shared candidates go through the product.
    calls.clear()
    shared = rng.integers(0, 20, (400, 10))
    got = _search.exact_distances(queries, gallery, shared, distance)
    assert not calls
    np.testing.assert_allclose(
        got, direct(queries, gallery, shared, distance), rtol=1e-9
    )
    # Unless their prepared copy would outgrow the differences' memory.
    monkeypatch.setattr(_search, "_EXACT_CHUNK_ELEMENTS", 256)
    wide = rng.normal(size=(40, 64)).astype("float32")
    shared = rng.integers(0, 40, (30, 10))
    got = _search.exact_distances(wide[:30], wide, shared, distance)
    assert calls
    np.testing.assert_allclose(
        got, direct(wide[:30], wide, shared, distance), rtol=1e-14
    )


@given(data=st.data())
def test_integer_grids_are_exact(data):
    name = data.draw(st.sampled_from(["euclidean", "squared_euclidean"]))
    distance = distances.get(name)
    dim = data.draw(st.integers(1, 4))
    m = data.draw(st.integers(1, 12))
    grid = st.integers(-3, 3).map(float)
    gallery = data.draw(hnp.arrays("float32", (m, dim), elements=grid))
    queries = data.draw(hnp.arrays("float32", (5, dim), elements=grid))
    indices = data.draw(hnp.arrays("int64", (5, 6), elements=st.integers(0, m - 1)))
    got = _search.exact_distances(queries, gallery, indices, distance)
    np.testing.assert_array_equal(got, direct(queries, gallery, indices, distance))


@pytest.mark.slow
def test_the_rerank_benchmark_prints_every_step():
    done = subprocess.run(
        [
            sys.executable,
            str(Path(__file__).resolve().parent.parent / "benchmarks/bench_rerank.py"),
            *("--count", "60", "--dim", "8", "--repeats", "1"),
        ],
        capture_output=True,
        text=True,
        env={**os.environ, "KERAS_BACKEND": keras.backend.backend()},
        timeout=600,
        check=False,
    )
    assert done.returncode == 0, done.stderr[-3000:]
    for distance in ("cosine", "euclidean"):
        for step in ("map_at_r", "exact_distances", "from differences", "brute force"):
            assert any(
                line.startswith(distance) and step in line
                for line in done.stdout.splitlines()
            ), done.stdout
