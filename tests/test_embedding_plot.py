"""EmbeddingPlot: PCA against a NumPy reference, PNG files, missing matplotlib."""

import os
import sys

import keras
import numpy as np
import pytest
from hypothesis import given
from hypothesis import strategies as st
from hypothesis.extra import numpy as hnp

from keras_siamese.callbacks import EmbeddingPlot, pca_project

PNG_SIGNATURE = b"\x89PNG\r\n\x1a\n"


def reference_pca(x, k):
    """PCA through the eigendecomposition of the covariance matrix."""
    centred = x - x.mean(axis=0)
    eigenvalues, eigenvectors = np.linalg.eigh(centred.T @ centred)
    order = np.argsort(eigenvalues)[::-1][:k]
    ratio = eigenvalues[order] / eigenvalues.sum()
    return centred @ eigenvectors[:, order], ratio


def encoder(features=6, dim=5):
    return keras.Sequential(
        [keras.Input((features,)), keras.layers.Dense(dim, activation="tanh")]
    )


def labelled_sample(n=40, features=6, seed=0):
    rng = np.random.default_rng(seed)
    return rng.normal(size=(n, features)).astype("float32"), np.arange(n) % 4


def is_png(path):
    with open(path, "rb") as handle:
        return handle.read(8) == PNG_SIGNATURE


def test_pca_matches_covariance_eigendecomposition():
    rng = np.random.default_rng(1)
    # Distinct scales per axis give well-separated eigenvalues.
    x = rng.normal(size=(200, 5)) * np.array([5.0, 3.0, 1.0, 0.5, 0.1])
    x = x @ np.linalg.qr(rng.normal(size=(5, 5)))[0]
    projection, ratio = pca_project(x, n_components=2)
    expected, expected_ratio = reference_pca(x, 2)
    np.testing.assert_allclose(ratio, expected_ratio, rtol=1e-8)
    # Components are defined up to sign.
    for column in range(2):
        sign = np.sign(projection[:, column] @ expected[:, column])
        np.testing.assert_allclose(
            projection[:, column], sign * expected[:, column], atol=1e-8
        )
    assert ratio[0] > ratio[1]


@given(
    hnp.arrays(
        np.float64,
        hnp.array_shapes(min_dims=2, max_dims=2, min_side=1, max_side=12),
        elements=st.floats(-100, 100),
    )
)
def test_pca_properties(x):
    projection, ratio = pca_project(x)
    assert projection.shape == (x.shape[0], 2)
    assert np.all(np.isfinite(projection))
    assert np.all(ratio >= 0)
    assert ratio[0] >= ratio[1] - 1e-12
    assert ratio.sum() <= 1 + 1e-9
    # The projection keeps the variance it claims to keep.
    centred = x - x.mean(axis=0)
    total = float((centred**2).sum())
    if total > 1e-6:
        kept = float((projection**2).sum()) / total
        np.testing.assert_allclose(kept, ratio.sum(), rtol=1e-6, atol=1e-9)


def test_pca_sign_does_not_depend_on_row_order_or_offset():
    rng = np.random.default_rng(2)
    x = rng.normal(size=(30, 4)) * np.array([4.0, 2.0, 1.0, 0.5])
    first, _ = pca_project(x)
    order = rng.permutation(30)
    shuffled, _ = pca_project(x[order] + 7.0)
    np.testing.assert_allclose(shuffled, first[order], atol=1e-10)
    # The convention: each component's largest loading is positive.
    _, _, components = np.linalg.svd(x - x.mean(axis=0), full_matrices=False)
    for column in range(2):
        loading = components[column]
        sign = np.sign(loading[np.argmax(np.abs(loading))])
        centred = x - x.mean(axis=0)
        np.testing.assert_allclose(first[:, column], sign * centred @ loading)


def test_pca_pads_missing_components():
    projection, ratio = pca_project(np.array([[1.0], [2.0], [4.0]]))
    assert projection.shape == (3, 2)
    np.testing.assert_array_equal(projection[:, 1], 0.0)
    np.testing.assert_allclose(ratio, [1.0, 0.0])
    _, constant_ratio = pca_project(np.ones((4, 3)))
    np.testing.assert_array_equal(constant_ratio, 0.0)


def test_pca_rejects_bad_arguments():
    with pytest.raises(ValueError, match="n_components"):
        pca_project(np.ones((3, 2)), n_components=0)
    with pytest.raises(ValueError, match="`x`"):
        pca_project(np.ones((0, 2)))


def test_writes_png_every_n_epochs_and_grid(tmp_path):
    x, y = labelled_sample()
    model = encoder()
    model.compile(optimizer="sgd", loss="mse")
    plot = EmbeddingPlot(
        model, x, y, every_n_epochs=2, output_dir=tmp_path / "plots", final_grid=True
    )
    model.fit(
        x, np.zeros((len(x), 5)), epochs=5, batch_size=20, verbose=0, callbacks=[plot]
    )
    names = sorted(os.listdir(tmp_path / "plots"))
    assert names == [
        "embeddings_epoch_002.png",
        "embeddings_epoch_004.png",
        "embeddings_grid.png",
    ]
    assert all(is_png(tmp_path / "plots" / name) for name in names)
    assert sorted(plot.projections) == [2, 4]
    assert len(plot.paths) == 3


def test_projection_is_pca_of_the_model_embeddings(tmp_path):
    x, y = labelled_sample()
    model = encoder()
    plot = EmbeddingPlot(model, x, y, output_dir=tmp_path)
    plot.on_epoch_end(0)
    embeddings = keras.ops.convert_to_numpy(model(x))
    expected, expected_ratio = reference_pca(embeddings.astype(np.float64), 2)
    np.testing.assert_allclose(
        np.abs(plot.projections[1]), np.abs(expected), rtol=1e-4, atol=1e-5
    )
    np.testing.assert_allclose(plot.explained_variance[1], expected_ratio, rtol=1e-4)
    assert is_png(tmp_path / "embeddings_epoch_001.png")


def test_max_points_draws_a_fixed_subset(tmp_path):
    x, y = labelled_sample(n=50)
    plot = EmbeddingPlot(encoder(), x, y, max_points=12, output_dir=tmp_path, seed=3)
    assert plot.x.shape == (12, 6)
    rows = [int(np.flatnonzero(np.all(x == row, axis=1))[0]) for row in plot.x]
    np.testing.assert_array_equal(plot.labels, y[rows])
    again = EmbeddingPlot(encoder(), x, y, max_points=12, output_dir=tmp_path, seed=3)
    np.testing.assert_array_equal(plot.x, again.x)


def test_multi_input_encoder(tmp_path):
    left = keras.Input((3,))
    right = keras.Input((2,))
    merged = keras.layers.Concatenate()([left, right])
    model = keras.Model([left, right], keras.layers.Dense(4)(merged))
    rng = np.random.default_rng(0)
    x = [rng.normal(size=(30, 3)), rng.normal(size=(30, 2))]
    plot = EmbeddingPlot(
        model, x, np.arange(30) % 3, output_dir=tmp_path, max_points=10
    )
    path = plot.save_plot()
    assert is_png(path)
    assert os.path.basename(path) == "embeddings.png"


def test_no_grid_before_any_epoch(tmp_path):
    x, y = labelled_sample()
    plot = EmbeddingPlot(encoder(), x, y, output_dir=tmp_path, final_grid=True)
    assert plot.save_grid() is None
    assert os.listdir(tmp_path) == []


def test_missing_matplotlib_names_the_extra(monkeypatch, tmp_path):
    x, y = labelled_sample()
    monkeypatch.setitem(sys.modules, "matplotlib", None)
    monkeypatch.setitem(sys.modules, "matplotlib.figure", None)
    with pytest.raises(ImportError, match=r"pip install \"keras-siamese\[demo\]\""):
        EmbeddingPlot(encoder(), x, y, output_dir=tmp_path)


@pytest.mark.parametrize(
    ("kwargs", "error", "match"),
    [
        ({"every_n_epochs": 0}, ValueError, "every_n_epochs"),
        ({"every_n_epochs": 1.5}, TypeError, "every_n_epochs"),
        ({"max_points": 0}, ValueError, "max_points"),
        ({"labels": np.zeros(3)}, ValueError, "`labels`"),
        ({"encoder": "encoder"}, TypeError, "`encoder`"),
        ({"unseen_classes": [3, 7]}, ValueError, r"`unseen_classes` \[7\]"),
    ],
)
def test_rejects_bad_arguments(tmp_path, kwargs, error, match):
    x, y = labelled_sample()
    arguments = {"encoder": encoder(), "x": x, "labels": y, "output_dir": tmp_path}
    arguments.update(kwargs)
    with pytest.raises(error, match=match):
        EmbeddingPlot(**arguments)


def test_unseen_classes_are_crosses_marked_in_the_legend(tmp_path):
    from matplotlib.figure import Figure

    x, y = labelled_sample()
    plot = EmbeddingPlot(encoder(), x, y, output_dir=tmp_path, unseen_classes=[2, 3])
    axes = Figure().add_subplot(1, 1, 1)
    plot._draw(axes, plot.project()[0], "title")
    _, legend = axes.get_legend_handles_labels()
    assert legend == ["0", "1", "2 (unseen)", "3 (unseen)"]
    markers = [collection.get_paths()[0] for collection in axes.collections]
    # A cross and a disc are drawn from different paths.
    assert markers[2].vertices.shape == markers[3].vertices.shape
    assert markers[0].vertices.shape != markers[2].vertices.shape
    assert is_png(plot.save_plot())
    plain = EmbeddingPlot(encoder(), x, y, output_dir=tmp_path)
    axes = Figure().add_subplot(1, 1, 1)
    plain._draw(axes, plain.project()[0], "title")
    assert axes.get_legend_handles_labels()[1] == ["0", "1", "2", "3"]
