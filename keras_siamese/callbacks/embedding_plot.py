"""`EmbeddingPlot`: a 2-D PCA picture of the embeddings, saved as PNG during training."""

from __future__ import annotations

import os
from typing import Any

import keras
import numpy as np

from keras_siamese._checks import check_positive_int
from keras_siamese.layers.trunk_head import trunk_of

_INSTALL_HINT = (
    "EmbeddingPlot needs matplotlib, an optional dependency of keras-siamese. "
    'Install it with `pip install "keras-siamese[demo]"` (or `pip install '
    "matplotlib`)."
)


def _import_figure() -> Any:
    """Return matplotlib's `Figure` class, or raise an ImportError with the fix.

    Figures are built from `matplotlib.figure.Figure` and written by the Agg
    renderer, never through `pyplot`, so no window opens and the user's global
    matplotlib backend is left untouched.
    """
    try:
        from matplotlib.figure import Figure
    except ImportError as error:
        raise ImportError(_INSTALL_HINT) from error
    return Figure


def pca_project(x: Any, n_components: int = 2) -> tuple[np.ndarray, np.ndarray]:
    """Project rows of `x` on their first principal components, with NumPy only.

    The data are centred and decomposed with an SVD. Each component's sign is
    fixed so that its largest-magnitude loading is positive, which keeps
    successive plots of slowly changing embeddings from flipping.

    Args:
        x: array of shape `(n_samples, ...)`; trailing axes are flattened.
        n_components: number of components to keep, at least 1. When the data
            have fewer samples or features than that, the missing components
            are returned as zeros with zero explained variance.

    Returns:
        `(projection, explained_variance_ratio)`: the `(n_samples,
        n_components)` coordinates and, per component, the fraction of the
        total variance it explains (non-increasing; all zeros for constant
        data).

    Raises:
        ValueError: if `x` has no samples or `n_components < 1`.

    Examples:
        >>> import numpy as np
        >>> points = np.array([[0.0, 0.0], [2.0, 0.1], [4.0, -0.1]])
        >>> projection, ratio = pca_project(points)
        >>> projection.shape, bool(ratio[0] > 0.99)
        ((3, 2), True)
    """
    n_components = check_positive_int(n_components, "n_components")
    x = np.asarray(x, dtype=np.float64)
    if x.ndim == 0 or x.shape[0] == 0:
        raise ValueError(f"`x` needs at least one sample; got shape {x.shape}.")
    x = x.reshape(x.shape[0], -1)
    centred = x - x.mean(axis=0, keepdims=True)
    _, singular, components = np.linalg.svd(centred, full_matrices=False)
    kept = min(n_components, components.shape[0])
    components = components[:kept]
    signs = np.sign(components[np.arange(kept), np.argmax(np.abs(components), axis=1)])
    signs[signs == 0] = 1.0
    components = components * signs[:, None]
    projection = np.zeros((x.shape[0], n_components))
    projection[:, :kept] = centred @ components.T
    variance = singular**2
    total = variance.sum()
    ratio = np.zeros(n_components)
    if total > 0:
        ratio[:kept] = variance[:kept] / total
    return projection, ratio


def _num_samples(x: Any) -> int:
    sizes = {int(np.shape(leaf)[0]) for leaf in keras.tree.flatten(x)}
    if len(sizes) != 1:
        raise ValueError(
            f"All arrays in `x` must have the same number of samples; got {sizes}."
        )
    return sizes.pop()


class EmbeddingPlot(keras.callbacks.Callback):
    """Saves a 2-D PCA scatter plot of embeddings, coloured by class, as training runs.

    At the end of every `every_n_epochs`-th epoch the callback embeds a fixed
    labelled sample with `encoder`, projects the embeddings to two
    dimensions with PCA (NumPy only) and writes
    `{output_dir}/{prefix}_epoch_{NNN}.png`. With `final_grid=True` it also
    writes `{output_dir}/{prefix}_grid.png` at the end of training, one panel
    per plotted epoch, to see the classes separate over time.

    The encoder is usually the shared one inside the Siamese model being
    trained (the layer given to `SiameseWrapper`), so its weights are
    the ones being learned. matplotlib is only imported when the callback is
    created and figures are rendered with the Agg backend, so it works without
    a display and leaves any interactive matplotlib setup alone. A
    `TrunkHead` is plotted by its trunk's features, the ones retrieval uses.

    Args:
        encoder: the model mapping one input to one embedding; it must have a
            `predict` method (a `keras.Model` or `keras.Sequential`).
        x: inputs of the fixed sample: an array `(n, ...)`, or a structure of
            arrays for a multi-input encoder.
        labels: class labels, shape `(n,)`, used for the colours.
        every_n_epochs: plot after epochs `N, 2N, ...` (1-based).
        output_dir: directory for the PNG files, created if needed.
        final_grid: also write a grid of all plotted epochs when training ends.
        max_points: if given and smaller than `n`, plot a random subset of
            this many samples, the same subset at every epoch.
        prefix: file name prefix.
        seed: seed of the subset drawn when `max_points` is given.
        batch_size: batch size used to compute the embeddings.
        dpi: resolution of the PNG files.
        unseen_classes: labels of classes kept out of training, if the sample
            holds some: they are drawn as crosses and marked "(unseen)" in
            the legend, to see whether the encoder separates classes it
            never saw.

    Attributes:
        projections: `{epoch: (n, 2) array}` of every plotted epoch (1-based).
        explained_variance: `{epoch: (2,) array}`, the variance ratio of the
            two components of every plotted epoch.
        paths: paths of the files written so far, in order.

    Raises:
        ImportError: at construction if matplotlib is not installed.
        TypeError: if `encoder` has no `predict` method, or an integer
            argument is not an int.
        ValueError: if `labels` is not one label per sample of `x`, an integer
            argument is smaller than 1, or an unseen class has no sample.

    Examples:
        >>> import os, tempfile
        >>> import keras, numpy as np
        >>> encoder = keras.Sequential([keras.Input((4,)), keras.layers.Dense(3)])
        >>> x = np.random.rand(20, 4).astype("float32")
        >>> y = np.arange(20) % 2
        >>> with tempfile.TemporaryDirectory() as folder:
        ...     plot = EmbeddingPlot(encoder, x, y, output_dir=folder)
        ...     path = plot.save_plot()
        ...     print(os.path.basename(path), os.path.exists(path))
        embeddings.png True
    """

    def __init__(
        self,
        encoder: keras.Model,
        x: Any,
        labels: Any,
        every_n_epochs: int = 1,
        output_dir: str | os.PathLike = "embedding_plots",
        final_grid: bool = False,
        max_points: int | None = None,
        prefix: str = "embeddings",
        seed: int = 0,
        batch_size: int = 256,
        dpi: int = 100,
        unseen_classes: Any = None,
    ) -> None:
        super().__init__()
        self._figure_class = _import_figure()
        if not callable(getattr(encoder, "predict", None)):
            raise TypeError(
                "`encoder` must be a Keras model with a `predict` method; "
                f"got {type(encoder).__name__}."
            )
        given = labels
        labels = np.asarray(labels)
        if labels.ndim == 2 and labels.shape[1] == 1:
            labels = labels[:, 0]
        n = _num_samples(x)
        if labels.ndim != 1 or labels.shape[0] != n:
            raise ValueError(
                f"`labels` must hold one label per sample of `x` ({n}); got shape "
                f"{np.shape(given)}."
            )
        self.encoder = encoder
        self.every_n_epochs = check_positive_int(every_n_epochs, "every_n_epochs")
        self.output_dir = os.fspath(output_dir)
        self.final_grid = bool(final_grid)
        self.max_points = (
            None if max_points is None else check_positive_int(max_points, "max_points")
        )
        self.prefix = str(prefix)
        self.seed = seed
        self.batch_size = check_positive_int(batch_size, "batch_size")
        self.dpi = check_positive_int(dpi, "dpi")
        unseen = np.unique(np.asarray([] if unseen_classes is None else unseen_classes))
        missing = unseen[~np.isin(unseen, labels)]
        if missing.size:
            raise ValueError(
                f"`unseen_classes` {missing.tolist()} have no sample in `labels` "
                f"(its classes are {np.unique(labels).tolist()})."
            )
        self.unseen_classes = unseen

        indices = np.arange(n)
        if self.max_points is not None and self.max_points < n:
            rng = np.random.default_rng(seed)
            indices = np.sort(rng.choice(n, size=self.max_points, replace=False))
        self.x = keras.tree.map_structure(lambda a: np.asarray(a)[indices], x)
        self.labels = labels[indices]
        self.projections: dict[int, np.ndarray] = {}
        self.explained_variance: dict[int, np.ndarray] = {}
        self.paths: list[str] = []

    def project(self) -> tuple[np.ndarray, np.ndarray]:
        """Embed the fixed sample with the current weights and project it to 2-D.

        Returns:
            `(projection, explained_variance_ratio)` as from `pca_project`.
        """
        embeddings = trunk_of(self.encoder).predict(
            self.x, batch_size=self.batch_size, verbose=0
        )
        embeddings = keras.ops.convert_to_numpy(keras.tree.flatten(embeddings)[0])
        return pca_project(embeddings, n_components=2)

    def _draw(self, axes: Any, projection: np.ndarray, title: str) -> None:
        classes = np.unique(self.labels)
        palette = "tab10" if len(classes) <= 10 else "tab20"
        colours = _class_colours(palette, len(classes))
        for colour, label in zip(colours, classes):
            mask = self.labels == label
            unseen = bool(np.isin(label, self.unseen_classes))
            axes.scatter(
                projection[mask, 0],
                projection[mask, 1],
                s=14 if unseen else 8,
                color=colour,
                marker="x" if unseen else "o",
                label=f"{label} (unseen)" if unseen else str(label),
                alpha=0.8,
            )
        axes.set_title(title, fontsize=9)
        axes.set_xticks([])
        axes.set_yticks([])

    def save_plot(
        self, path: str | os.PathLike | None = None, epoch: int | None = None
    ) -> str:
        """Project the sample now and write one scatter plot.

        Args:
            path: PNG file to write; by default
                `{output_dir}/{prefix}_epoch_{epoch:03d}.png`, or
                `{output_dir}/{prefix}.png` when `epoch` is None.
            epoch: 1-based epoch, used in the title and default file name and
                to record the projection in `projections`.

        Returns:
            The path written.
        """
        projection, ratio = self.project()
        if epoch is not None:
            self.projections[epoch] = projection
            self.explained_variance[epoch] = ratio
        if path is None:
            name = self.prefix if epoch is None else f"{self.prefix}_epoch_{epoch:03d}"
            path = os.path.join(self.output_dir, f"{name}.png")
        path = os.fspath(path)
        os.makedirs(os.path.dirname(path) or ".", exist_ok=True)
        figure = self._figure_class(figsize=(6, 5))
        axes = figure.add_subplot(1, 1, 1)
        when = "" if epoch is None else f"epoch {epoch}, "
        self._draw(
            axes,
            projection,
            f"{when}PCA of embeddings ({ratio[0]:.0%} + {ratio[1]:.0%} of variance)",
        )
        axes.legend(
            loc="center left",
            bbox_to_anchor=(1.0, 0.5),
            fontsize=7,
            markerscale=1.5,
            title="class",
            frameon=False,
        )
        figure.tight_layout()
        figure.savefig(path, dpi=self.dpi, format="png")
        self.paths.append(path)
        return path

    def save_grid(self, path: str | os.PathLike | None = None) -> str | None:
        """Write one figure with a panel per plotted epoch.

        Args:
            path: PNG file to write; by default `{output_dir}/{prefix}_grid.png`.

        Returns:
            The path written, or None if no epoch has been plotted yet.
        """
        if not self.projections:
            return None
        epochs = sorted(self.projections)
        columns = min(4, len(epochs))
        rows = -(-len(epochs) // columns)
        # Extra width on the right holds one legend shared by all panels.
        legend_width = 0.9
        width = 3 * columns + legend_width
        figure = self._figure_class(figsize=(width, 3 * rows))
        for index, epoch in enumerate(epochs):
            axes = figure.add_subplot(rows, columns, index + 1)
            self._draw(axes, self.projections[epoch], f"epoch {epoch}")
        handles, labels = axes.get_legend_handles_labels()
        figure.legend(
            handles,
            labels,
            loc="center right",
            fontsize=7,
            markerscale=1.5,
            title="class",
            frameon=False,
        )
        figure.tight_layout(rect=(0, 0, 1 - legend_width / width, 1))
        if path is None:
            path = os.path.join(self.output_dir, f"{self.prefix}_grid.png")
        path = os.fspath(path)
        os.makedirs(os.path.dirname(path) or ".", exist_ok=True)
        figure.savefig(path, dpi=self.dpi, format="png")
        self.paths.append(path)
        return path

    def on_epoch_end(self, epoch: int, logs: dict | None = None) -> None:
        if (epoch + 1) % self.every_n_epochs == 0:
            self.save_plot(epoch=epoch + 1)

    def on_train_end(self, logs: dict | None = None) -> None:
        if self.final_grid:
            self.save_grid()


def _class_colours(name: str, count: int) -> list:
    """The first `count` colours of a qualitative matplotlib colormap."""
    from matplotlib import colormaps

    colormap = colormaps[name]
    return [colormap(i % colormap.N) for i in range(count)]
