"""The on-disk format of an index (and a verifier): a directory, no pickle.

    name/
        index.json       format, version, distance, sizes, label kind, engine,
                         SHA-256 of every data file, verifier settings
        embeddings.npy   float32 (count, dim)
        labels.npy       int64, uint64 or unicode (count,), when there are labels
        encoder.keras    the encoder of a saved verifier

Arrays are read with `np.load(..., allow_pickle=False)`, metadata is JSON,
and the encoder loads through Keras' safe mode: reading a saved index runs no
code from it. Everything read is checked (known keys and types, format
version, checksums, dtypes, shapes, finite values) and any problem is a
`ValueError` that names it.
"""

from __future__ import annotations

import hashlib
import json
import math
import os
from pathlib import Path
from typing import Any

import numpy as np

FORMAT = "keras-siamese-index"
VERSION = 1
INDEX_FILE = "index.json"
EMBEDDINGS_FILE = "embeddings.npy"
LABELS_FILE = "labels.npy"
ENCODER_FILE = "encoder.keras"
_DATA_FILES = (EMBEDDINGS_FILE, LABELS_FILE, ENCODER_FILE)
_MAX_JSON_BYTES = 2**20
# The label kind `index.json` names for each integer dtype of `labels.npy`
# ("str" for unicode).
_LABEL_KINDS = {np.dtype("<i8"): "int", np.dtype("<u8"): "uint64"}
_TOP_KEYS = {
    "format",
    "version",
    "distance",
    "count",
    "dim",
    "labels",
    "engine",
    "files",
    "verifier",
}
_ENGINE_KEYS = {"name", "block_bytes", "hnsw_neighbors", "ef_search", "ef_construction"}
_VERIFIER_KEYS = {"threshold", "unknown", "batch_size", "calibration"}
_CALIBRATION_KEYS = {
    "threshold",
    "target",
    "value",
    "accuracy",
    "precision",
    "recall",
    "far",
    "frr",
    "pairs",
}


def _sha256(path: Path) -> str:
    digest = hashlib.sha256()
    with open(path, "rb") as handle:
        for chunk in iter(lambda: handle.read(2**20), b""):
            digest.update(chunk)
    return digest.hexdigest()


def write(
    path: str | os.PathLike,
    metadata: dict[str, Any],
    embeddings: np.ndarray,
    labels: np.ndarray | None,
    encoder: Any | None = None,
) -> Path:
    """Write a saved index directory; `metadata` lacks only `files`.

    Refuses to write into a non-empty directory that is not a saved index,
    so that saving over the wrong path cannot mix files or delete any.
    """
    directory = Path(os.fspath(path))
    if directory.exists() and not directory.is_dir():
        raise ValueError(f"Cannot save an index to {directory}: it is a file.")
    if directory.is_dir():
        present = {entry.name for entry in directory.iterdir()}
        foreign = present - {INDEX_FILE, *_DATA_FILES}
        if present and (INDEX_FILE not in present or foreign):
            raise ValueError(
                f"Refusing to save an index into {directory}: the directory is "
                "not empty and is not a saved index."
            )
    directory.mkdir(parents=True, exist_ok=True)
    index_path = directory / INDEX_FILE
    # The metadata goes last: a directory whose save was interrupted has no
    # (or a stale) index.json, whose checksums then refuse the new files.
    if index_path.exists():
        index_path.unlink()
    written = {EMBEDDINGS_FILE: embeddings}
    if labels is not None:
        written[LABELS_FILE] = labels
    for name in _DATA_FILES:
        if name not in written and (directory / name).exists():
            (directory / name).unlink()
    for name, array in written.items():
        with open(directory / name, "wb") as handle:
            np.save(handle, array, allow_pickle=False)
    if encoder is not None:
        encoder.save(directory / ENCODER_FILE)
    files = {
        name: _sha256(directory / name)
        for name in _DATA_FILES
        if (directory / name).exists()
    }
    record = {"format": FORMAT, "version": VERSION, **metadata, "files": files}
    index_path.write_text(json.dumps(record, indent=2) + "\n", encoding="utf-8")
    return directory


def _fail(directory: Path, problem: str) -> ValueError:
    return ValueError(f"Cannot load the index saved at {directory}: {problem}")


def _expect(directory: Path, value: Any, kinds: tuple, what: str) -> Any:
    if isinstance(value, bool) and bool not in kinds:
        raise _fail(directory, f"{what} has the wrong type ({value!r}).")
    if not isinstance(value, kinds):
        raise _fail(directory, f"{what} has the wrong type ({value!r}).")
    if isinstance(value, float) and not math.isfinite(value):
        raise _fail(directory, f"{what} is not finite ({value!r}).")
    return value


def _check_keys(directory: Path, record: Any, allowed: set, what: str) -> dict:
    if not isinstance(record, dict):
        raise _fail(directory, f"{what} must be a JSON object.")
    unknown = sorted(set(record) - allowed)
    if unknown:
        raise _fail(directory, f"{what} has unknown keys {unknown}.")
    return record


def _read_metadata(directory: Path) -> dict[str, Any]:
    index_path = directory / INDEX_FILE
    if not directory.is_dir():
        raise _fail(directory, "it is not a directory.")
    if not index_path.is_file():
        raise _fail(directory, f"{INDEX_FILE} is missing.")
    if index_path.stat().st_size > _MAX_JSON_BYTES:
        raise _fail(directory, f"{INDEX_FILE} is larger than a saved index writes.")
    try:
        record = json.loads(index_path.read_text(encoding="utf-8"))
    except (UnicodeDecodeError, json.JSONDecodeError) as error:
        raise _fail(directory, f"{INDEX_FILE} is not valid JSON ({error}).") from None
    record = _check_keys(directory, record, _TOP_KEYS, INDEX_FILE)
    missing = sorted(_TOP_KEYS - {"verifier"} - set(record))
    if missing:
        raise _fail(directory, f"{INDEX_FILE} lacks {missing}.")
    if record["format"] != FORMAT:
        raise _fail(directory, f"{INDEX_FILE} is not a {FORMAT} file.")
    version = _expect(directory, record["version"], (int,), "version")
    if version != VERSION:
        raise _fail(
            directory,
            f"format version {version} is not supported (this release reads "
            f"version {VERSION}).",
        )
    _expect(directory, record["distance"], (str,), "distance")
    count = _expect(directory, record["count"], (int,), "count")
    if count < 0:
        raise _fail(directory, f"count is negative ({count}).")
    dim = record["dim"]
    if dim is not None and (_expect(directory, dim, (int,), "dim") < 1):
        raise _fail(directory, f"dim must be positive ({dim}).")
    if count and dim is None:
        raise _fail(directory, "dim is missing for a non-empty index.")
    if record["labels"] not in (None, "str", *_LABEL_KINDS.values()):
        raise _fail(directory, f"label kind {record['labels']!r} is unknown.")
    engine = _check_keys(directory, record["engine"], _ENGINE_KEYS, "engine")
    _expect(directory, engine.get("name"), (str,), "engine name")
    for key in _ENGINE_KEYS - {"name"}:
        if key in engine and _expect(directory, engine[key], (int,), key) < 1:
            raise _fail(directory, f"{key} must be positive ({engine[key]}).")
    files = _check_keys(directory, record["files"], set(_DATA_FILES), "files")
    for name, digest in files.items():
        if not isinstance(digest, str) or len(digest) != 64:
            raise _fail(directory, f"the checksum of {name} is malformed.")
    if EMBEDDINGS_FILE not in files:
        raise _fail(directory, f"files lacks {EMBEDDINGS_FILE}.")
    if (record["labels"] is None) == (LABELS_FILE in files):
        raise _fail(directory, "the label kind and the label file disagree.")
    verifier = record.get("verifier")
    if verifier is not None:
        _check_verifier(directory, verifier)
    elif ENCODER_FILE in files:
        raise _fail(directory, "an encoder is listed without verifier settings.")
    return record


def _check_verifier(directory: Path, verifier: Any) -> None:
    verifier = _check_keys(directory, verifier, _VERIFIER_KEYS, "verifier")
    threshold = verifier.get("threshold")
    if threshold is not None:
        _expect(directory, threshold, (int, float), "threshold")
    unknown = verifier.get("unknown")
    if unknown is not None:
        _expect(directory, unknown, (int, str), "unknown")
    if _expect(directory, verifier.get("batch_size", 1), (int,), "batch_size") < 1:
        raise _fail(directory, "batch_size must be positive.")
    calibration = verifier.get("calibration")
    if calibration is None:
        return
    calibration = _check_keys(directory, calibration, _CALIBRATION_KEYS, "calibration")
    if set(calibration) != _CALIBRATION_KEYS:
        raise _fail(directory, "calibration is incomplete.")
    _expect(directory, calibration["target"], (str,), "calibration target")
    _expect(directory, calibration["pairs"], (int,), "calibration pairs")
    for key in _CALIBRATION_KEYS - {"target", "pairs", "value"}:
        _expect(directory, calibration[key], (int, float), f"calibration {key}")
    if calibration["value"] is not None:
        _expect(directory, calibration["value"], (int, float), "calibration value")


def _load_array(directory: Path, name: str) -> np.ndarray:
    try:
        with open(directory / name, "rb") as handle:
            array = np.load(handle, allow_pickle=False)
            if handle.read(1):
                raise ValueError("trailing bytes after the array")
    except (OSError, ValueError, EOFError) as error:
        raise _fail(directory, f"{name} is not a readable array ({error}).") from None
    if not isinstance(array, np.ndarray):
        raise _fail(directory, f"{name} is not a single array.")
    return array


def read(path: str | os.PathLike) -> dict[str, Any]:
    """Read and check a saved index directory.

    Returns:
        The metadata dict, plus `embeddings` (float32 `(count, dim)`),
        `labels` (int64, uint64 or unicode `(count,)`, or `None`) and `encoder_path`
        (a `Path`, or `None`).

    Raises:
        ValueError: for anything missing, malformed, tampered with or
            truncated.
    """
    directory = Path(os.fspath(path))
    record = _read_metadata(directory)
    for name, digest in record["files"].items():
        file = directory / name
        if not file.is_file():
            raise _fail(directory, f"{name} is missing.")
        if _sha256(file) != digest:
            raise _fail(
                directory,
                f"{name} does not match its checksum in {INDEX_FILE} (the file "
                "was modified or truncated).",
            )
    count, dim = record["count"], record["dim"]
    embeddings = _load_array(directory, EMBEDDINGS_FILE)
    if embeddings.dtype != np.dtype("<f4"):
        raise _fail(
            directory, f"embeddings have dtype {embeddings.dtype}, not float32."
        )
    expected = (count, dim if dim is not None else 0)
    if embeddings.shape != expected:
        raise _fail(
            directory,
            f"embeddings have shape {embeddings.shape}, not {expected} as "
            f"{INDEX_FILE} says.",
        )
    if not np.isfinite(embeddings).all():
        raise _fail(directory, "embeddings hold NaN or infinite values.")
    labels = None
    if record["labels"] is not None:
        labels = _load_array(directory, LABELS_FILE)
        kind = "str" if labels.dtype.kind == "U" else _LABEL_KINDS.get(labels.dtype)
        if kind != record["labels"]:
            raise _fail(
                directory,
                f"labels have dtype {labels.dtype}, not the {record['labels']} "
                f"labels {INDEX_FILE} says.",
            )
        if labels.shape != (count,):
            raise _fail(directory, f"labels have shape {labels.shape}, not ({count},).")
    encoder = directory / ENCODER_FILE
    return {
        **record,
        "embeddings": embeddings,
        "labels": labels,
        "encoder_path": encoder if ENCODER_FILE in record["files"] else None,
    }
