"""`CollapseMonitor`: warn when the embeddings collapse to a single point."""

from __future__ import annotations

import warnings
from typing import Any

import keras
import numpy as np

from keras_siamese import distances
from keras_siamese._checks import check_bool, check_float, check_positive_int


class EmbeddingCollapseWarning(UserWarning):
    """The embeddings of a model are collapsing to a single point.

    Issued by `CollapseMonitor`. Turn it into an error with
    `warnings.simplefilter("error", EmbeddingCollapseWarning)`.

    Examples:
        >>> import warnings
        >>> with warnings.catch_warnings(record=True) as caught:
        ...     warnings.simplefilter("always")
        ...     warnings.warn("spread fell to 1%", EmbeddingCollapseWarning)
        >>> issubclass(caught[0].category, UserWarning)
        True
    """


def _num_samples(x: Any) -> int:
    leaves = keras.tree.flatten(x)
    if not leaves:
        raise ValueError("`x` must hold at least two samples; got no arrays.")
    return int(np.shape(leaves[0])[0]) if np.ndim(leaves[0]) else 0


def _std_of_l2_normalized(embeddings: np.ndarray) -> float:
    """lightly's `std_of_l2_normalized` of `(n, dim)` embeddings, in float64."""
    rows = np.asarray(embeddings, "float64")
    norms = np.linalg.norm(rows, axis=1, keepdims=True)
    # The floor of PyTorch's `normalize`: a zero embedding stays zero.
    unit = rows / np.maximum(norms, 1e-12)
    return float(np.mean(np.std(unit, axis=0, ddof=1)))


def _where(epoch: int, batch: int | None) -> str:
    if batch == -1:
        return "the start of training"
    return f"epoch {epoch}" + ("" if batch is None else f", batch {batch}")


class CollapseMonitor(keras.callbacks.Callback):
    """Warns, by name, when a model's embeddings collapse to a single point.

    The classic failure of online triplet mining: with batch-hard mining and
    many examples per class, the quickest way to shrink every hardest
    violation at once is to shrink all distances, and the model maps every
    input to (nearly) the same embedding; the loss then sticks at the margin
    and the gradient vanishes, so training never recovers (Hermans et al.
    2017; PyTorch Metric Learning issue 20; `docs/benchmarks.md`).

    The monitor embeds a fixed probe set at the start of training and then
    after every epoch (or every `every_n_batches` batches), and measures the
    spread of the probe embeddings: their mean pairwise distance. When the
    spread falls below `min_ratio` times its value at the start, it issues an
    `EmbeddingCollapseWarning` (once), records where in `collapsed_at`, and
    stops training if `stop_training=True`. A spread that is 0 from the start
    warns at once. The probe's labels are not needed: a collapse merges all
    classes. A `TrunkHead` is watched at its output, the head's embeddings
    that the loss trains (retrieval uses its trunk): that is where the loss
    collapses.

    With `min_std_ratio`, the monitor also applies the collapse check of
    SimSiam (Chen and He 2021) and lightly (`std_of_l2_normalized`): the
    standard deviation over the probe of the L2-normalised embeddings,
    averaged over the dimensions (`normalized_std`). Embeddings spread over
    the unit sphere give about `1 / sqrt(dim)`; a collapse to one direction
    gives 0, even where the norms, and so the spread, still vary (the
    failure of self-supervised models such as SimSiam without its
    stop-gradient). It warns when the standard deviation falls below
    `min_std_ratio / sqrt(dim)`, an absolute bound, checked from the start.

    Args:
        x: the probe inputs, an array `(n, ...)` (or a structure of arrays for
            a multi-input encoder) with `n >= 2`; a few hundred examples of
            the training data are plenty.
        encoder: the model mapping inputs to embeddings; by default the model
            being trained. Give the encoder when the trained model outputs
            something else, e.g. `keras.Sequential([encoder, CosineProxies(n)])`.
        min_ratio: the fraction of the initial spread below which the
            embeddings count as collapsed; default 0.05 (the spreads of
            collapsed and healthy MNIST runs are in `docs/benchmarks.md`).
        every_n_batches: check after every `N` training batches (the
            collapse often happens within the first epoch); `None` (default)
            checks at the end of every epoch.
        distance: the distance the spread is measured with, default
            `"euclidean"` (see `keras_siamese.distances.get`).
        stop_training: also stop training on a collapse.
        batch_size: batch size used to embed the probe.
        min_std_ratio: if given, in `(0, 1)`, also warn when
            `normalized_std() * sqrt(dim)` falls below it; `None` (default)
            only records the standard deviations.

    Attributes:
        initial_spread: the spread at the start of training.
        spreads: `[(epoch, batch, spread), ...]` of every check, the start
            included as `(epoch, -1, spread)` (batch `None` at epoch ends).
        stds: `[(epoch, batch, normalized_std), ...]` of every check, as
            `spreads`.
        collapsed_at: `(epoch, batch)` of the check that warned, else `None`.

    Raises:
        TypeError: if `encoder` is given and is not a Keras model, or an
            argument has the wrong type.
        ValueError: if `x` holds fewer than two samples, `min_ratio` or
            `min_std_ratio` is not in `(0, 1)`, or `every_n_batches` or
            `batch_size` is not positive.

    Examples:
        >>> import keras
        >>> import numpy as np
        >>> model = keras.Sequential([keras.Input((3,)), keras.layers.Dense(2)])
        >>> probe = np.random.default_rng(0).normal(size=(16, 3))
        >>> monitor = CollapseMonitor(probe)
        >>> monitor.set_model(model)
        >>> monitor.on_train_begin()
        >>> model.set_weights([w * 0.01 for w in model.get_weights()])
        >>> with warnings.catch_warnings(record=True) as caught:
        ...     warnings.simplefilter("always")
        ...     monitor.on_epoch_end(0)
        >>> [w.category for w in caught].count(EmbeddingCollapseWarning)
        1
        >>> monitor.collapsed_at
        (0, None)
    """

    def __init__(
        self,
        x: Any,
        encoder: keras.Model | None = None,
        min_ratio: float = 0.05,
        every_n_batches: int | None = None,
        distance: str | distances.Distance = "euclidean",
        stop_training: bool = False,
        batch_size: int = 256,
        min_std_ratio: float | None = None,
    ) -> None:
        super().__init__()
        if encoder is not None and not callable(
            getattr(encoder, "predict_on_batch", None)
        ):
            raise TypeError(
                "`encoder` must be a Keras model (with `predict_on_batch`); got "
                f"{type(encoder).__name__}."
            )
        if _num_samples(x) < 2:
            raise ValueError(
                "`x` must hold at least two samples, to measure their spread; "
                f"got {_num_samples(x)}."
            )
        self.x = x
        self.encoder = encoder
        self.min_ratio = check_float(
            min_ratio, "min_ratio", minimum=0.0, inclusive=False, maximum=1.0
        )
        self.every_n_batches = (
            None
            if every_n_batches is None
            else check_positive_int(every_n_batches, "every_n_batches")
        )
        self._measure = distances.get(
            distance, needs=("pairwise",), user="CollapseMonitor"
        )
        self.distance = self._measure.name
        self.stop_training = check_bool(stop_training, "stop_training")
        self.batch_size = check_positive_int(batch_size, "batch_size")
        self.min_std_ratio = (
            None
            if min_std_ratio is None
            else check_float(
                min_std_ratio,
                "min_std_ratio",
                minimum=0.0,
                inclusive=False,
                maximum=1.0,
            )
        )
        self.initial_spread: float | None = None
        self.spreads: list[tuple[int, int | None, float]] = []
        self.stds: list[tuple[int, int | None, float]] = []
        self.collapsed_at: tuple[int, int | None] | None = None
        self._epoch, self._batches = 0, 0

    def spread(self) -> float:
        """The mean pairwise distance of the probe's embeddings, now."""
        return self._spread_of(self._embeddings())

    def normalized_std(self) -> float:
        """The mean over dimensions of the std of the L2-normalised embeddings.

        Each probe embedding is divided by its norm (floored at 1e-12), and
        the standard deviation over the probe (with `n - 1`) of every
        dimension is averaged: lightly's `std_of_l2_normalized`. About
        `1 / sqrt(dim)` for embeddings spread over the sphere, 0 for
        embeddings that all point one way.
        """
        return _std_of_l2_normalized(self._embeddings())

    def _embeddings(self) -> np.ndarray:
        """The probe's embeddings `(n, dim)`, float32, now."""
        model = self.model  # on JAX, this puts the trained weights back
        encoder = self.encoder if self.encoder is not None else model
        count = _num_samples(self.x)
        parts = []
        for start in range(0, count, self.batch_size):
            inputs = keras.tree.map_structure(
                lambda a, start=start: np.asarray(a)[start : start + self.batch_size],
                self.x,
            )
            output = keras.tree.flatten(encoder.predict_on_batch(inputs))[0]
            parts.append(np.asarray(keras.ops.convert_to_numpy(output), "float32"))
        return np.concatenate(parts).reshape(count, -1)

    def _spread_of(self, embeddings: np.ndarray) -> float:
        count = len(embeddings)
        matrix = keras.ops.convert_to_numpy(
            distances.pairwise_distances(embeddings, self._measure)
        )
        return float(np.sum(matrix) / (count * (count - 1)))

    def _check(self, epoch: int, batch: int | None) -> None:
        embeddings = self._embeddings()
        spread = self._spread_of(embeddings)
        self.spreads.append((epoch, batch, spread))
        std = _std_of_l2_normalized(embeddings)
        self.stds.append((epoch, batch, std))
        if self.collapsed_at is None and spread < self.min_ratio * self.initial_spread:
            self._collapsed(epoch, batch, spread)
        elif self.collapsed_at is None and self._std_collapsed(embeddings, std):
            self._std_collapse(epoch, batch, embeddings.shape[1], std)

    def _std_collapsed(self, embeddings: np.ndarray, std: float) -> bool:
        if self.min_std_ratio is None:
            return False
        return std * np.sqrt(embeddings.shape[1]) < self.min_std_ratio

    def _std_collapse(
        self, epoch: int, batch: int | None, dim: int, std: float
    ) -> None:
        self.collapsed_at = (epoch, batch)
        healthy = 1.0 / np.sqrt(dim)
        warnings.warn(
            "Embedding collapse: the standard deviation of the L2-normalised "
            f"probe embeddings is {std:.4g}, {std / healthy:.1%} of "
            f"1/sqrt(dim) = {healthy:.4g} (embeddings spread over the sphere), at "
            f"{_where(epoch, batch)}; the model maps every input to nearly one "
            "direction. In self-supervised training (SimSiam, BYOL) the "
            "stop-gradient on the target branch and the predictor prevent it.",
            EmbeddingCollapseWarning,
            stacklevel=3,
        )
        if self.stop_training:
            self.model.stop_training = True

    def _collapsed(self, epoch: int, batch: int | None, spread: float) -> None:
        self.collapsed_at = (epoch, batch)
        where = _where(epoch, batch)
        fraction = spread / self.initial_spread if self.initial_spread else 0.0
        warnings.warn(
            "Embedding collapse: the mean pairwise distance of the probe "
            f"embeddings is {fraction:.1%} of its value at the start of training "
            f"({self.initial_spread:.4g} -> {spread:.4g}) at {where}; the model "
            "maps every input to nearly the same point, and training will not "
            "recover. Batch-hard mining with many examples per class is prone "
            "to it: see the collapse section of the losses guide for recipes "
            "that train (soft margin, normalised embeddings, semi-hard or "
            "batch-all mining, fewer examples per class).",
            EmbeddingCollapseWarning,
            stacklevel=3,
        )
        if self.stop_training:
            self.model.stop_training = True

    def on_train_begin(self, logs: dict | None = None) -> None:
        embeddings = self._embeddings()
        self.initial_spread = self._spread_of(embeddings)
        self.spreads = [(0, -1, self.initial_spread)]
        std = _std_of_l2_normalized(embeddings)
        self.stds = [(0, -1, std)]
        self.collapsed_at = None
        self._epoch, self._batches = 0, 0
        if self.initial_spread == 0:
            self._collapsed(0, -1, 0.0)
        elif self._std_collapsed(embeddings, std):
            self._std_collapse(0, -1, embeddings.shape[1], std)

    def on_epoch_begin(self, epoch: int, logs: dict | None = None) -> None:
        self._epoch = epoch

    def on_train_batch_end(self, batch: int, logs: dict | None = None) -> None:
        self._batches += 1
        if self.every_n_batches and self._batches % self.every_n_batches == 0:
            self._check(self._epoch, batch)

    def on_epoch_end(self, epoch: int, logs: dict | None = None) -> None:
        if self.every_n_batches is None:
            self._check(epoch, None)
