"""`Verifier`: same-or-different decisions and open-set identification."""

from __future__ import annotations

import os
from typing import Any

import keras
import numpy as np

from keras_siamese import distances as _distances
from keras_siamese._checks import (
    check_float,
    check_labels,
    check_positive_int,
    truncate_embeddings,
)
from keras_siamese.retrieval import _storage
from keras_siamese.retrieval._search import paired_exact
from keras_siamese.retrieval.calibration import Calibration, calibrate_threshold
from keras_siamese.retrieval.engines import Engine
from keras_siamese.retrieval.index import EmbeddingIndex, encode, no_inputs

#: What `identify` answers for an unknown query, by the kind of labels.
DEFAULT_UNKNOWN = {"int": -1, "str": "unknown"}


def _label_kind(labels: np.ndarray) -> str | None:
    return {"i": "int", "u": "int", "U": "str"}.get(labels.dtype.kind)


def _fits(marker: Any, labels: np.ndarray) -> bool:
    """Whether `marker` can stand among `labels` without changing dtype or value."""
    kind = _label_kind(labels)
    if kind == "int" and isinstance(marker, int) and not isinstance(marker, bool):
        bounds = np.iinfo(labels.dtype)
        return bounds.min <= marker <= bounds.max
    return kind == "str" and isinstance(marker, str)


class Verifier:
    """An encoder, a distance and a threshold: verification and identification.

    Two inputs are "the same" when the distance between their embeddings is
    strictly below `threshold` (as `PairAccuracy` and
    `verification_accuracy` decide). `calibrate` chooses the threshold on
    labelled pairs (see `calibrate_threshold`). Enrolled with a labelled
    gallery (an `EmbeddingIndex`), the verifier also identifies: a query gets
    the label of its nearest gallery item, or an "unknown" marker when even
    that item is not nearer than the threshold (open-set identification).
    `save` writes the encoder, the threshold and the gallery to one
    directory, and `load` reads it back on any backend.

    With two towers (a `DualEncoder`'s), `encoder` embeds the gallery and
    the second input of each pair, and `query_encoder` the queries of
    `identify` and the first input of each pair.

    Args:
        encoder: the trained embedding network (a Keras model); with two
            towers, the candidate (gallery) tower.
        distance: `"euclidean"` (default), `"squared_euclidean"`, `"cosine"`,
            `"manhattan"`, or a `Distance` with the forms `EmbeddingIndex`
            needs.
        threshold: the distance threshold, or `None` until calibrated.
        index: a gallery to identify against (its distance must be the
            verifier's), or `None`; `enroll` creates one.
        batch_size: batch size of the encoder's `predict`.
        unknown: what `identify` returns for an unknown query; by default
            `-1` for integer labels and `"unknown"` for string labels. No
            enrolled label may equal it (`enroll` and `identify` refuse a
            gallery that holds it).
        query_encoder: the query tower of a two-tower model (a Keras
            model), or `None` (default): `encoder` embeds the queries too.
        truncate_dim: keep only the first `truncate_dim` dimensions of every
            embedding (Matryoshka embeddings, see `MatryoshkaLoss`); `None`
            (default) keeps them all. The gallery `enroll` creates truncates
            alike.

    Raises:
        TypeError: if `encoder` or `query_encoder` has no `predict` method,
            `index` is not an `EmbeddingIndex`, or `unknown` is neither an
            int nor a string.
        ValueError: for an unknown distance (or one lacking an exact or a
            search form), a negative or non-finite
            threshold, or an index with another distance.

    Examples:
        >>> import keras, numpy as np
        >>> encoder = keras.Sequential([keras.Input((2,)), keras.layers.Identity()])
        >>> verifier = Verifier(encoder, threshold=1.0)
        >>> verifier.verify(np.array([[0.0, 0.0], [0.0, 0.0]]),
        ...                 np.array([[0.5, 0.0], [3.0, 0.0]])).tolist()
        [True, False]
        >>> verifier.enroll(np.array([[0.0, 0.0], [5.0, 5.0]]), ["ann", "bob"])
        >>> verifier.identify(np.array([[0.2, 0.1], [5.0, 4.5], [9.0, 0.0]])).tolist()
        ['ann', 'bob', 'unknown']
    """

    def __init__(
        self,
        encoder: keras.Model,
        distance: str | _distances.Distance = "euclidean",
        threshold: float | None = None,
        index: EmbeddingIndex | None = None,
        *,
        batch_size: int = 256,
        unknown: int | str | None = None,
        query_encoder: keras.Model | None = None,
        truncate_dim: int | None = None,
    ) -> None:
        for name, model in (("encoder", encoder), ("query_encoder", query_encoder)):
            if (model is not None or name == "encoder") and not callable(
                getattr(model, "predict", None)
            ):
                raise TypeError(
                    f"`{name}` must be a Keras model with a `predict` method; got "
                    f"{type(model).__name__}."
                )
        self.encoder = encoder
        self.query_encoder = query_encoder
        self.truncate_dim = (
            None
            if truncate_dim is None
            else check_positive_int(truncate_dim, "truncate_dim")
        )
        self._distance = _distances.get(distance, needs=("search",), user="Verifier")
        self.threshold = threshold
        self.batch_size = check_positive_int(batch_size, "batch_size")
        if unknown is not None and (
            isinstance(unknown, bool) or not isinstance(unknown, (int, str))
        ):
            raise TypeError(f"`unknown` must be an int or a string; got {unknown!r}.")
        self.unknown = unknown
        self.calibration: Calibration | None = None
        self._index: EmbeddingIndex | None = None
        if index is not None:
            self.index = index

    @property
    def distance(self) -> str:
        """The name of the distance between embeddings."""
        return self._distance.name

    @property
    def threshold(self) -> float | None:
        """The distance threshold: pairs strictly nearer are "the same"."""
        return self._threshold

    @threshold.setter
    def threshold(self, value: float | None) -> None:
        self._threshold = (
            None if value is None else check_float(value, "threshold", minimum=0.0)
        )

    @property
    def index(self) -> EmbeddingIndex | None:
        """The gallery `identify` searches, or `None`."""
        return self._index

    @index.setter
    def index(self, index: EmbeddingIndex | None) -> None:
        if index is not None:
            if not isinstance(index, EmbeddingIndex):
                raise TypeError(
                    f"`index` must be an EmbeddingIndex; got {type(index).__name__}."
                )
            if index.distance_object != self._distance:
                raise ValueError(
                    f"The index searches with distance={index.distance!r} but the "
                    f"verifier measures distance={self.distance!r}; they must agree."
                )
        self._index = index

    def __repr__(self) -> str:
        gallery = (
            "no gallery" if self._index is None else f"{len(self._index)} enrolled"
        )
        return (
            f"Verifier(distance={self.distance!r}, threshold={self._threshold}, "
            f"{gallery})"
        )

    def embed(self, x: Any, verbose: Any = 0) -> np.ndarray:
        """The embeddings of `x` by `encoder`, float32 `(n, dim)`, in batches."""
        return self._truncate(encode(self.encoder, x, self.batch_size, verbose))

    def embed_queries(self, x: Any, verbose: Any = 0) -> np.ndarray:
        """The embeddings of queries `x`: by `query_encoder` where there is one."""
        encoder = self.encoder if self.query_encoder is None else self.query_encoder
        return self._truncate(encode(encoder, x, self.batch_size, verbose))

    def _truncate(self, embeddings: np.ndarray) -> np.ndarray:
        return truncate_embeddings(
            embeddings,
            self.truncate_dim,
            "The encoder gives {dim}-dimensional embeddings, fewer than "
            "truncate_dim={keep}.",
        )

    def pair_distances(self, x1: Any, x2: Any) -> np.ndarray:
        """Distances between the embeddings of `x1[i]` and `x2[i]`, float64 `(n,)`.

        With a `query_encoder`, `x1` holds the queries (embedded by it) and
        `x2` the candidates (embedded by `encoder`).

        Raises:
            ValueError: if `x1` and `x2` hold different numbers of inputs.
        """
        empty = (no_inputs(x1), no_inputs(x2))
        if all(empty):  # Keras' `predict` fails on no inputs
            return np.zeros(0, dtype=np.float64)
        if any(empty):
            raise ValueError(
                "`x1` and `x2` must hold the same number of inputs; one of them "
                "is empty."
            )
        a, b = self.embed_queries(x1), self.embed(x2)
        if a.shape != b.shape:
            raise ValueError(
                "`x1` and `x2` must hold the same number of inputs; their "
                f"embeddings have shapes {a.shape} and {b.shape}."
            )
        return paired_exact(a, b, self._distance)

    def calibrate(
        self,
        x1: Any,
        x2: Any,
        same: Any,
        target: str = "accuracy",
        value: float | None = None,
    ) -> Calibration:
        """Choose the threshold on labelled pairs `(x1[i], x2[i])`.

        Args:
            x1: first inputs of the pairs.
            x2: second inputs.
            same: true (or 1) where a pair is of one class.
            target: `"accuracy"`, `"f1"`, `"precision"`, `"recall"` or `"far"`, as
                in `calibrate_threshold`.
            value: the precision, recall or false-accept rate to reach.

        Returns:
            The `Calibration`, also kept as `self.calibration`; its threshold
            becomes `self.threshold`.
        """
        calibration = calibrate_threshold(
            self.pair_distances(x1, x2), same, target=target, value=value
        )
        self.calibration = calibration
        self.threshold = calibration.threshold
        return calibration

    def _threshold_or(self, threshold: float | None) -> float:
        if threshold is not None:
            return check_float(threshold, "threshold", minimum=0.0)
        if self._threshold is None:
            raise ValueError(
                "The verifier has no threshold: call `calibrate` first, set "
                "`threshold`, or pass `threshold=`."
            )
        return self._threshold

    def verify(self, x1: Any, x2: Any, threshold: float | None = None) -> np.ndarray:
        """Whether each pair `(x1[i], x2[i])` is "the same": a boolean `(n,)` array.

        The decision is `pair_distances(x1, x2) < threshold`, in float64, as
        `identify` decides. No pairs give an empty array.

        Args:
            x1: first inputs.
            x2: second inputs.
            threshold: overrides the verifier's threshold for this call.

        Raises:
            ValueError: without a threshold, or for mismatched inputs.
        """
        threshold = self._threshold_or(threshold)
        return self.pair_distances(x1, x2) < threshold

    def _marker(self, labels: np.ndarray) -> Any:
        """The unknown marker for these labels (`None` where there is none)."""
        if self.unknown is not None:
            return self.unknown
        return DEFAULT_UNKNOWN.get(_label_kind(labels))

    def _refuse_marker(self, labels: np.ndarray, where: str) -> None:
        marker = self._marker(labels)
        if marker is None or not labels.size:
            return
        code = labels.dtype.kind
        number = isinstance(marker, (int, float)) and not isinstance(marker, bool)
        if (code in "iuf" and not number) or (
            code == "U" and not isinstance(marker, str)
        ):
            return  # no label of this dtype can equal the marker
        if code in "iu" and not _fits(marker, labels):
            return
        if np.any(labels == marker):
            raise ValueError(
                f"{where} holds the label {marker!r}, which `identify` answers for "
                "an unknown query, so a match could not be told from a rejection. "
                "Choose another marker with `Verifier(..., unknown=...)` (or the "
                "`unknown` attribute), or relabel that class."
            )

    def enroll(self, x: Any, labels: Any) -> None:
        """Encode `x` and add it, with its labels, to the gallery.

        Args:
            x: the inputs to enroll.
            labels: their labels, as `EmbeddingIndex.add` takes them.

        Enrolling no inputs (and no labels) changes nothing; the encoder is
        not called.

        Raises:
            TypeError: for labels `EmbeddingIndex.add` refuses (of another
                kind than those enrolled, say).
            ValueError: for labels `EmbeddingIndex.add` refuses, or a label
                equal to the unknown marker (`-1` for integer labels and
                `"unknown"` for strings by default; set another with
                `unknown=`).
        """
        if no_inputs(x):  # Keras' `predict` fails on no inputs
            check_labels(labels, 0)
            return
        embeddings = self.embed(x)
        checked = check_labels(labels, len(embeddings))
        self._refuse_marker(checked, "`labels`")
        if self._index is None:
            self._index = EmbeddingIndex(self._distance, truncate_dim=self.truncate_dim)
        self._index.add(embeddings, checked)

    def identify(
        self,
        x: Any,
        threshold: float | None = None,
        index: EmbeddingIndex | None = None,
        return_distances: bool = False,
    ) -> np.ndarray | tuple[np.ndarray, np.ndarray]:
        """The label of each query's nearest gallery item, or "unknown".

        A query whose nearest gallery item is at `threshold` or farther gets
        the `unknown` marker (open-set identification). The distance to that
        item is compared with the threshold in float64, as `verify` compares:
        a query and a gallery item get the same decision from both.

        Args:
            x: the queries' inputs.
            threshold: overrides the verifier's threshold for this call.
            index: a labelled gallery to search instead of the verifier's.
            return_distances: also return the distance to the nearest item.

        Returns:
            The `(n,)` labels (with the marker where unknown), and, with
            `return_distances`, the `(n,)` float32 distances.

        Raises:
            ValueError: without a threshold, without a labelled gallery, for
                a gallery with another distance, or for a gallery holding the
                unknown marker as a label.
        """
        threshold = self._threshold_or(threshold)
        gallery = self._index if index is None else index
        if gallery is None:
            raise ValueError(
                "No gallery to identify against: `enroll` labelled examples, or "
                "pass `index=`."
            )
        if gallery.distance_object != self._distance:
            raise ValueError(
                f"The index searches with distance={gallery.distance!r} but the "
                f"verifier measures distance={self.distance!r}; they must agree."
            )
        held = gallery.labels
        if held is None:
            raise ValueError("The gallery holds no labels to identify with.")
        self._refuse_marker(held, "The gallery")
        if no_inputs(x):  # Keras' `predict` fails on no inputs
            nothing = np.zeros(0, dtype=held.dtype)
            return (nothing, np.zeros(0, np.float32)) if return_distances else nothing
        queries = self.embed_queries(x)
        distances, indices = gallery.search(queries, k=1)
        nearest = indices[:, 0]
        labels = gallery.labels_of(nearest)
        # float64, as `verify`: the float32 search distance can round across
        # the threshold.
        exact = paired_exact(queries, gallery.embeddings[nearest], self._distance)
        known = exact < threshold
        marker = self._marker(held)
        if _fits(marker, labels):
            if labels.dtype.kind in "iu":
                marker = labels.dtype.type(marker)
            answer = np.where(known, labels, marker)
        else:  # a marker of another kind than the labels: keep both as they are
            answer = labels.astype(object)
            answer[~known] = marker
        if return_distances:
            return answer, distances[:, 0]
        return answer

    def save(self, path: str | os.PathLike) -> None:
        """Save the encoder, distance, threshold and gallery to one directory.

        The layout of `EmbeddingIndex.save`, plus `encoder.keras` (and
        `query_encoder.keras` where there is one) and the verifier's settings in `index.json`; `EmbeddingIndex.load` reads the
        gallery from it too. Atomic as `EmbeddingIndex.save`: an encoder
        that fails to save, a full disk or a crash leaves an earlier save at
        `path` as it was.

        Args:
            path: the directory to write (created if needed). An existing
                save of this format there is replaced; anything else is
                refused.

        Raises:
            ValueError: as `EmbeddingIndex.save`.
            Exception: whatever `encoder.save` raises; the earlier save is
                kept.
        """
        index = (
            self._index if self._index is not None else EmbeddingIndex(self._distance)
        )
        settings = {
            "threshold": self._threshold,
            "unknown": self.unknown,
            "batch_size": self.batch_size,
            "truncate_dim": self.truncate_dim,
            "calibration": None
            if self.calibration is None
            else self.calibration.as_dict(),
        }
        _storage.write(
            path,
            index.get_config(),
            index.embeddings,
            index.labels,
            encoder=self.encoder,
            verifier=settings,
            query_encoder=self.query_encoder,
        )

    @classmethod
    def load(
        cls, path: str | os.PathLike, engine: str | Engine | None = None
    ) -> Verifier:
        """Load a verifier written by `save`, on any backend.

        The encoder loads with Keras' safe mode and without its training
        configuration.

        Args:
            path: the saved directory.
            engine: search the gallery with this engine instead of the saved
                one: a name or an `Engine` object (as
                `EmbeddingIndex.from_config`).

        Raises:
            ValueError: if the directory is not a saved verifier, or is
                malformed, truncated, oversized, tampered with or a symbolic
                link (as `EmbeddingIndex.load`), or its encoder does not
                load.
        """
        record = _storage.read(path)
        settings = record.get("verifier")
        if settings is None or record["encoder_path"] is None:
            raise ValueError(
                f"Cannot load a verifier from {os.fspath(path)}: it holds an index "
                "without an encoder (load it with EmbeddingIndex.load)."
            )
        encoder = _load_encoder(record["encoder_path"])
        query_encoder = None
        if record["query_encoder_path"] is not None:
            query_encoder = _load_encoder(record["query_encoder_path"])
        try:
            index = None
            if record["count"]:
                config = {"distance": record["distance"], "engine": record["engine"]}
                if record.get("truncate_dim") is not None:
                    config["truncate_dim"] = record["truncate_dim"]
                index = EmbeddingIndex.from_config(config, engine)
                index.add(record["embeddings"], record["labels"])
            verifier = cls(
                encoder,
                record["distance"],
                settings.get("threshold"),
                index,
                batch_size=settings.get("batch_size", 256),
                unknown=settings.get("unknown"),
                query_encoder=query_encoder,
                truncate_dim=settings.get("truncate_dim"),
            )
            calibration = settings.get("calibration")
            if calibration is not None:
                verifier.calibration = Calibration(**calibration)
        except (TypeError, ValueError) as error:
            raise ValueError(
                f"Cannot load the verifier saved at {os.fspath(path)}: its settings "
                f"are invalid ({error})"
            ) from None
        return verifier


def _load_encoder(path: os.PathLike) -> keras.Model:
    """A saved encoder, loaded in safe mode without its training configuration."""
    try:
        return keras.saving.load_model(path, compile=False, safe_mode=True)
    except Exception as error:  # a crafted archive fails in many ways
        raise ValueError(f"Cannot load the encoder saved at {path}: {error}") from error
