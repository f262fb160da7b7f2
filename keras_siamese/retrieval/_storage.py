"""The on-disk format of an index (and a verifier): a directory, no pickle.

    name/
        index.json       format, version, distance, sizes, label kind, engine
                         (and the kept prefix, truncate_dim, where one is set)
                         (one object: its name and options), SHA-256 and byte
                         size of every data file, verifier settings
        embeddings.npy   float32 (count, dim)
        labels.npy       int64, uint64 or unicode (count,), when there are labels
        codes.npy        a quantized index's codes: int8 (count, dim) or packed
                         sign bits, uint8 (count, ceil(dim / 8))
        ranges.npy       its int8 ranges, float32 (2, dim): min and max
                         (embeddings.npy is left out where it keeps no floats)
        encoder.keras    the encoder of a saved verifier
        query_encoder.keras  its query tower, when it has one of its own

Arrays are read with `np.load(..., allow_pickle=False)`, metadata is JSON,
and the encoder loads through Keras' safe mode: reading a saved index runs no
code from it. Everything read is checked (known keys, types and ranges,
format version, sizes, checksums, dtypes, shapes, finite values) and any
problem is a `ValueError` that names it. Sizes are checked before a byte is
hashed, so a huge (or sparse) file is refused at once. Symbolic links are
never followed, neither the directory nor a file in it.

A save is written into a new sibling directory `.NAME.saving-XXXXXXXX`,
flushed to disk (files and directory), and renamed into place; a previous
save is first renamed aside to `.NAME.old-XXXXXXXX`, and removed once the new
one is in place. So an interrupted or failed save leaves the previous save
untouched at `NAME`, except for a crash between the two renames, which
leaves `NAME` missing and both complete saves as those siblings (rename
either back).

The engine object holds the settings of a built-in engine (each bounded), or
the JSON-scalar options of an engine registered with
`keras_siamese.retrieval.engines.register`, which its `from_config` checks.

Version 1 (before sizes were recorded) is still read; its file sizes are
checked against the arrays' own headers, its encoder's is not.
"""

from __future__ import annotations

import contextlib
import hashlib
import json
import math
import os
import secrets
import shutil
import stat
from pathlib import Path
from typing import Any

import numpy as np

from keras_siamese.retrieval._engines import ENGINE_LIMITS, ENGINES, registered
from keras_siamese.retrieval._quantized import KEEP_FLOAT, MAX_RESCORE, QUANTIZATIONS
from keras_siamese.retrieval.calibration import TARGETS as CALIBRATION_TARGETS

FORMAT = "keras-siamese-index"
VERSION = 2
READABLE_VERSIONS = (1, 2)
INDEX_FILE = "index.json"
EMBEDDINGS_FILE = "embeddings.npy"
LABELS_FILE = "labels.npy"
ENCODER_FILE = "encoder.keras"
QUERY_ENCODER_FILE = "query_encoder.keras"
CODES_FILE = "codes.npy"
RANGES_FILE = "ranges.npy"
_DATA_FILES = (
    EMBEDDINGS_FILE,
    LABELS_FILE,
    ENCODER_FILE,
    QUERY_ENCODER_FILE,
    CODES_FILE,
    RANGES_FILE,
)
_MAX_JSON_BYTES = 2**20
# Integers in index.json have at most this many digits (int64 has 19).
_MAX_INT_DIGITS = 20
_MAX_FLOAT_CHARS = 64
_MAX_ROWS = 2**40
_MAX_DIM = 2**24
_MAX_FILE_BYTES = 2**50
# Version 1 recorded no sizes: its files are hashed without one to compare,
# so a larger file (a sparse or planted one) is refused before it is read.
_MAX_UNRECORDED_BYTES = 2**33
_MAX_BATCH_SIZE = 2**31 - 1
_INT64 = (-(2**63), 2**63 - 1)
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
    "truncate_dim",
    "quantization",
}
_QUANTIZATION_KEYS = {"kind", "rescore", "keep_float"}
# The dtype name of each array file's expected dtype.
_ARRAY_DTYPES = {
    np.dtype("<f4"): "float32",
    np.dtype("i1"): "int8",
    np.dtype("u1"): "uint8",
}
_ENGINE_KEYS = {"name", *ENGINE_LIMITS}
# The options of a user-defined engine: JSON scalars, and few.
_ENGINE_OPTION_TYPES = (str, int, float, bool, type(None))
_MAX_ENGINE_KEYS = 65
_FILE_KEYS = {"sha256", "bytes"}
_VERIFIER_KEYS = {"threshold", "unknown", "batch_size", "calibration", "truncate_dim"}
_RATES = ("accuracy", "precision", "recall", "far", "frr")
_CALIBRATION_KEYS = {"threshold", "target", "value", "pairs", *_RATES}

_READ_FLAGS = (
    os.O_RDONLY
    | getattr(os, "O_NOFOLLOW", 0)
    | getattr(os, "O_NONBLOCK", 0)
    | getattr(os, "O_CLOEXEC", 0)
    | getattr(os, "O_BINARY", 0)
)
_CREATE_FLAGS = (
    os.O_WRONLY
    | os.O_CREAT
    | os.O_EXCL
    | getattr(os, "O_NOFOLLOW", 0)
    | getattr(os, "O_CLOEXEC", 0)
    | getattr(os, "O_BINARY", 0)
)


class _Malformed(ValueError):
    """A problem with the contents of a saved index, said without its path."""


# -- labels ------------------------------------------------------------------


# The label kind `index.json` names for each integer dtype of `labels.npy`.
_LABEL_KINDS = {np.dtype("<i8"): "int", np.dtype("<u8"): "uint64"}


def label_kind(dtype: np.dtype) -> str | None:
    """The saved kind of labels of `dtype` (`"int"`, `"uint64"`, `"str"`), or `None`."""
    if dtype.kind == "U":
        return "str"
    return _LABEL_KINDS.get(dtype)


def _check_label_kind(kind: Any) -> str | None:
    if kind is not None and kind not in ("str", *_LABEL_KINDS.values()):
        raise _Malformed(f"labels: the label kind {_show(kind)} is unknown.")
    return kind


# -- metadata checks -----------------------------------------------------------


def _show(value: Any) -> str:
    if isinstance(value, (dict, list)):
        return f"a JSON {'object' if isinstance(value, dict) else 'array'}"
    text = repr(value)
    return text if len(text) <= 60 else text[:57] + "..."


def _object(value: Any, field: str, allowed: set) -> dict:
    if not isinstance(value, dict):
        raise _Malformed(f"{field} must be a JSON object; got {_show(value)}.")
    unknown = sorted(set(value) - allowed)
    if unknown:
        raise _Malformed(f"{field} has unknown keys {unknown}.")
    return value


def _integer(value: Any, field: str, low: int, high: int) -> int:
    if isinstance(value, bool) or not isinstance(value, int):
        raise _Malformed(f"{field} must be an integer; got {_show(value)}.")
    if not low <= value <= high:
        raise _Malformed(f"{field} must be in [{low}, {high}]; got {value}.")
    return value


def _number(value: Any, field: str, low: float, high: float = math.inf) -> float:
    if isinstance(value, bool) or not isinstance(value, (int, float)):
        raise _Malformed(f"{field} must be a number; got {_show(value)}.")
    # Compared without a float conversion, which overflows for huge ints.
    finite = not isinstance(value, float) or math.isfinite(value)
    if not (finite and low <= value <= high):
        raise _Malformed(f"{field} must be finite and in [{low}, {high}]; got {value}.")
    return value


def _string(value: Any, field: str) -> str:
    if not isinstance(value, str):
        raise _Malformed(f"{field} must be a string; got {_show(value)}.")
    return value


def _check_record(record: Any) -> dict[str, dict[str, Any]]:
    """Check every field of the metadata; return `{file: {sha256, bytes}}`.

    `bytes` is `None` for version 1, which did not record sizes.
    """
    record = _object(record, INDEX_FILE, _TOP_KEYS)
    if record.get("format") != FORMAT:
        raise _Malformed(f"{INDEX_FILE} is not a {FORMAT} file (its format field).")
    missing = sorted(
        _TOP_KEYS - {"verifier", "truncate_dim", "quantization"} - set(record)
    )
    if missing:
        raise _Malformed(f"{INDEX_FILE} lacks {missing}.")
    version = _integer(record["version"], "version", 0, 2**31)
    if version not in READABLE_VERSIONS:
        raise _Malformed(
            f"format version {version} is not supported (this release reads "
            f"versions {', '.join(map(str, READABLE_VERSIONS))})."
        )
    _string(record["distance"], "distance")
    count = _integer(record["count"], "count", 0, _MAX_ROWS)
    dim = record["dim"]
    if dim is not None:
        _integer(dim, "dim", 1, _MAX_DIM)
    elif count:
        raise _Malformed("dim is missing for a non-empty index.")
    truncate_dim = record.get("truncate_dim")
    if truncate_dim is not None:
        _integer(truncate_dim, "truncate_dim", 1, _MAX_DIM)
        if dim is not None and dim != truncate_dim:
            raise _Malformed(f"dim {dim} differs from truncate_dim {truncate_dim}.")
    kind = _check_label_kind(record["labels"])
    _check_engine(record["engine"])
    files = _check_files(record["files"], version)
    quantization = _check_quantization(record.get("quantization"), files)
    if quantization is None or quantization["keep_float"] is not None:
        if EMBEDDINGS_FILE not in files:
            raise _Malformed(f"files lacks {EMBEDDINGS_FILE}.")
    elif EMBEDDINGS_FILE in files:
        raise _Malformed(
            f"{EMBEDDINGS_FILE} is listed for an index that keeps no float32 "
            "embeddings (quantization.keep_float null)."
        )
    if (kind is None) == (LABELS_FILE in files):
        raise _Malformed("the label kind and the label file disagree.")
    verifier = record.get("verifier")
    if verifier is not None:
        _check_verifier(verifier)
    elif ENCODER_FILE in files:
        raise _Malformed("an encoder is listed without verifier settings.")
    if QUERY_ENCODER_FILE in files and ENCODER_FILE not in files:
        raise _Malformed("a query encoder is listed without an encoder.")
    return files


def _check_quantization(quantization: Any, files: dict) -> dict | None:
    """A quantized index's settings, and the code files they need."""
    if quantization is None:
        extra = sorted({CODES_FILE, RANGES_FILE} & set(files))
        if extra:
            raise _Malformed(f"{extra} are listed for an index without quantization.")
        return None
    quantization = _object(quantization, "quantization", _QUANTIZATION_KEYS)
    if set(quantization) != _QUANTIZATION_KEYS:
        raise _Malformed(
            f"quantization lacks {sorted(_QUANTIZATION_KEYS - set(quantization))}."
        )
    if quantization["kind"] not in QUANTIZATIONS:
        raise _Malformed(
            f"quantization.kind {_show(quantization['kind'])} is not one of "
            f"{QUANTIZATIONS}."
        )
    _integer(quantization["rescore"], "quantization.rescore", 1, MAX_RESCORE)
    if quantization["keep_float"] not in KEEP_FLOAT:
        raise _Malformed(
            f"quantization.keep_float {_show(quantization['keep_float'])} is not "
            f"one of {KEEP_FLOAT}."
        )
    if CODES_FILE not in files:
        raise _Malformed(f"files lacks {CODES_FILE}.")
    if quantization["kind"] == "binary" and RANGES_FILE in files:
        raise _Malformed(f"{RANGES_FILE} is listed for binary codes.")
    return quantization


def _check_engine(engine: Any) -> None:
    """The engine's name and options: bounded settings of a built-in engine,
    JSON scalars for a registered one (its `from_config` checks them)."""
    if not isinstance(engine, dict):
        raise _Malformed(f"engine must be a JSON object; got {_show(engine)}.")
    name = _string(engine.get("name"), "engine.name")
    if name in ENGINES:
        _object(engine, "engine", _ENGINE_KEYS)
        for key, limit in ENGINE_LIMITS.items():
            if key in engine:
                _integer(engine[key], f"engine.{key}", 1, limit)
        return
    if registered(name) is None:
        raise _Malformed(
            f"engine.name {_show(name)} is not one of {ENGINES} nor a registered "
            "engine (register a user-defined engine with "
            "`keras_siamese.retrieval.engines.register` before loading)."
        )
    if len(engine) > _MAX_ENGINE_KEYS:
        raise _Malformed(f"engine has more than {_MAX_ENGINE_KEYS - 1} options.")
    for key, value in engine.items():
        if not isinstance(value, _ENGINE_OPTION_TYPES):
            raise _Malformed(
                f"engine.{key} must be a string, a number, a boolean or null; "
                f"got {_show(value)}."
            )


def _check_digest(value: Any, field: str) -> str:
    if not (
        isinstance(value, str)
        and len(value) == 64
        and all(c in "0123456789abcdef" for c in value)
    ):
        raise _Malformed(f"{field} is not a SHA-256 hex digest.")
    return value


def _check_files(files: Any, version: int) -> dict[str, dict[str, Any]]:
    files = _object(files, "files", set(_DATA_FILES))
    checked = {}
    for name, entry in files.items():
        if version == 1:
            digest, size = _check_digest(entry, f"files.{name}"), None
        else:
            entry = _object(entry, f"files.{name}", _FILE_KEYS)
            if set(entry) != _FILE_KEYS:
                raise _Malformed(
                    f"files.{name} lacks {sorted(_FILE_KEYS - set(entry))}."
                )
            digest = _check_digest(entry["sha256"], f"files.{name}.sha256")
            size = _integer(entry["bytes"], f"files.{name}.bytes", 0, _MAX_FILE_BYTES)
        checked[name] = {"sha256": digest, "bytes": size}
    return checked


def _check_verifier(verifier: Any) -> None:
    verifier = _object(verifier, "verifier", _VERIFIER_KEYS)
    if verifier.get("threshold") is not None:
        _number(verifier["threshold"], "verifier.threshold", 0.0)
    unknown = verifier.get("unknown")
    if unknown is not None and not isinstance(unknown, str):
        _integer(unknown, "verifier.unknown", *_INT64)
    _integer(verifier.get("batch_size", 1), "verifier.batch_size", 1, _MAX_BATCH_SIZE)
    if verifier.get("truncate_dim") is not None:
        _integer(verifier["truncate_dim"], "verifier.truncate_dim", 1, _MAX_DIM)
    calibration = verifier.get("calibration")
    if calibration is None:
        return
    calibration = _object(calibration, "verifier.calibration", _CALIBRATION_KEYS)
    if set(calibration) != _CALIBRATION_KEYS:
        raise _Malformed(
            "verifier.calibration lacks "
            f"{sorted(_CALIBRATION_KEYS - set(calibration))}."
        )
    target = _string(calibration["target"], "verifier.calibration.target")
    if target not in CALIBRATION_TARGETS:
        raise _Malformed(f"verifier.calibration.target {target!r} is unknown.")
    _integer(calibration["pairs"], "verifier.calibration.pairs", 0, 2**53)
    _number(calibration["threshold"], "verifier.calibration.threshold", 0.0)
    for key in _RATES:
        _number(calibration[key], f"verifier.calibration.{key}", 0.0, 1.0)
    if calibration["value"] is not None:
        _number(calibration["value"], "verifier.calibration.value", 0.0, 1.0)


# -- JSON ----------------------------------------------------------------------


def _parse_int(text: str) -> int:
    if len(text.lstrip("-")) > _MAX_INT_DIGITS:
        raise _Malformed(f"{INDEX_FILE} holds an integer of {len(text)} digits.")
    return int(text)


def _parse_float(text: str) -> float:
    value = float(text) if len(text) <= _MAX_FLOAT_CHARS else math.inf
    if not math.isfinite(value):
        raise _Malformed(f"{INDEX_FILE} holds a number out of range ({text[:40]}).")
    return value


def _parse_constant(text: str) -> None:
    raise _Malformed(f"{INDEX_FILE} holds {text}, which is not a number.")


def _unique_keys(pairs: list[tuple[str, Any]]) -> dict[str, Any]:
    record = dict(pairs)
    if len(record) != len(pairs):
        raise _Malformed(f"{INDEX_FILE} repeats a key in an object.")
    return record


def _parse(text: bytes) -> Any:
    """Decode index.json: every problem (nesting too, huge numbers) a ValueError."""
    try:
        return json.loads(
            text.decode("utf-8"),
            parse_int=_parse_int,
            parse_float=_parse_float,
            parse_constant=_parse_constant,
            object_pairs_hook=_unique_keys,
        )
    except _Malformed:
        raise
    except RecursionError:
        raise _Malformed(f"{INDEX_FILE} is nested too deeply.") from None
    except (UnicodeDecodeError, ValueError) as error:
        raise _Malformed(f"{INDEX_FILE} is not valid JSON ({error}).") from None


# -- files ---------------------------------------------------------------------


def _fail(directory: Path, problem: str) -> ValueError:
    return ValueError(f"Cannot load the index saved at {directory}: {problem}")


def _open_member(directory: Path, name: str) -> Any:
    """A binary reader of a regular file `directory/name`, never via a link."""
    path = directory / name
    try:
        mode = os.lstat(path).st_mode
    except FileNotFoundError:
        raise _Malformed(f"{name} is missing.") from None
    if stat.S_ISLNK(mode):
        raise _Malformed(f"{name} is a symbolic link; links are never followed.")
    if not stat.S_ISREG(mode):
        raise _Malformed(f"{name} is not a regular file.")
    try:
        descriptor = os.open(path, _READ_FLAGS)
    except OSError as error:
        raise _Malformed(f"{name} cannot be opened ({error.strerror}).") from None
    handle = os.fdopen(descriptor, "rb")
    if not stat.S_ISREG(os.fstat(handle.fileno()).st_mode):
        handle.close()
        raise _Malformed(f"{name} is not a regular file.")
    return handle


def _size(handle: Any) -> int:
    return os.fstat(handle.fileno()).st_size


def _sha256(handle: Any) -> str:
    handle.seek(0)
    digest = hashlib.sha256()
    for chunk in iter(lambda: handle.read(2**20), b""):
        digest.update(chunk)
    return digest.hexdigest()


def _array_header(handle: Any, name: str) -> tuple[tuple[int, ...], np.dtype]:
    """Shape and dtype from a `.npy` header, after checking the file's size."""
    try:
        version = np.lib.format.read_magic(handle)
        if version == (1, 0):
            shape, _, dtype = np.lib.format.read_array_header_1_0(handle)
        elif version == (2, 0):
            shape, _, dtype = np.lib.format.read_array_header_2_0(handle)
        else:
            raise ValueError(f"unsupported .npy version {version}")
    except (ValueError, EOFError, OSError, SyntaxError) as error:
        raise _Malformed(f"{name} is not a readable array ({error}).") from None
    if dtype.hasobject:
        raise _Malformed(
            f"{name} is not a readable array (it holds Python objects, which "
            "are never unpickled)."
        )
    expected = handle.tell() + math.prod(shape) * dtype.itemsize
    if _size(handle) != expected:
        raise _Malformed(
            f"{name} is not a readable array (its header describes {expected} "
            f"bytes, the file holds {_size(handle)})."
        )
    return shape, dtype


def _check_size(handle: Any, name: str, entry: dict[str, Any]) -> None:
    if entry["bytes"] is None and _size(handle) > _MAX_UNRECORDED_BYTES:
        raise _Malformed(
            f"{name} holds {_size(handle)} bytes, more than a version-1 save, "
            f"which records no sizes, is read with (at most "
            f"{_MAX_UNRECORDED_BYTES}); save it again with this version."
        )
    if entry["bytes"] is not None and _size(handle) != entry["bytes"]:
        raise _Malformed(
            f"{name} holds {_size(handle)} bytes, not the {entry['bytes']} "
            f"{INDEX_FILE} records (the file was modified or truncated)."
        )


def _check_checksum(handle: Any, name: str, entry: dict[str, Any]) -> None:
    if _sha256(handle) != entry["sha256"]:
        raise _Malformed(
            f"{name} does not match its checksum in {INDEX_FILE} (the file "
            "was modified or truncated)."
        )


_WHAT = {
    EMBEDDINGS_FILE: "embeddings",
    LABELS_FILE: "labels",
    CODES_FILE: "codes",
    RANGES_FILE: "int8 ranges",
}


def _read_array(
    directory: Path,
    name: str,
    entry: dict[str, Any],
    shape: tuple[int, ...],
    kind: str,
    mapped: bool = False,
) -> np.ndarray:
    """Size, header (dtype and shape), checksum, then the array itself.

    `mapped`: return a read-only memory map of the file instead of reading
    it (the checksum is of the file as it is now).
    """
    with _open_member(directory, name) as handle:
        _check_size(handle, name, entry)
        found_shape, dtype = _array_header(handle, name)
        offset = handle.tell()
        found = _ARRAY_DTYPES.get(dtype) or label_kind(dtype)
        what = _WHAT[name]
        if found != kind:
            expected = kind if name != LABELS_FILE else f"the {kind} labels"
            raise _Malformed(f"{what} have dtype {dtype}, not {expected} as saved.")
        if found_shape != shape:
            raise _Malformed(
                f"{what} have shape {found_shape}, not {shape} as {INDEX_FILE} says."
            )
        _check_checksum(handle, name, entry)
        if mapped and math.prod(shape):
            return np.memmap(handle, dtype=dtype, mode="r", offset=offset, shape=shape)
        handle.seek(0)
        try:
            array = np.load(handle, allow_pickle=False)
            if handle.read(1):
                raise ValueError("trailing bytes after the array")
        except (OSError, ValueError, EOFError) as error:
            raise _Malformed(f"{name} is not a readable array ({error}).") from None
    if not isinstance(array, np.ndarray):
        raise _Malformed(f"{name} is not a single array.")
    return array


def _read_index_file(directory: Path) -> Any:
    with _open_member(directory, INDEX_FILE) as handle:
        if _size(handle) > _MAX_JSON_BYTES:
            raise _Malformed(f"{INDEX_FILE} is larger than a saved index writes.")
        text = handle.read(_MAX_JSON_BYTES + 1)
    return _parse(text)


def _check_directory(directory: Path) -> None:
    try:
        mode = os.lstat(directory).st_mode
    except (FileNotFoundError, NotADirectoryError):
        raise _Malformed("it is not a directory.") from None
    if stat.S_ISLNK(mode):
        raise _Malformed("it is a symbolic link; links are never followed.")
    if not stat.S_ISDIR(mode):
        raise _Malformed("it is not a directory.")


def _all_finite(array: np.ndarray) -> bool:
    step = max(1, 2**22 // max(1, array.shape[1] if array.ndim == 2 else 1))
    return all(
        np.isfinite(array[start : start + step]).all()
        for start in range(0, len(array), step)
    )


def read(path: str | os.PathLike) -> dict[str, Any]:
    """Read and check a saved index directory.

    Args:
        path: the directory. The float32 rows of a quantized index saved
            with `keep_float="disk"` are memory-mapped (read-only), not read
            into memory.

    Returns:
        The metadata dict, plus `embeddings` (float32 `(count, dim)`, `None`
        where a quantized index keeps none), `codes` and `ranges` (`None`
        where the index is not quantized or has no ranges yet),
        `labels` (int64, uint64 or unicode `(count,)`, or `None`) and `encoder_path`
        (a `Path`, or `None`).

    Raises:
        ValueError: for anything missing, malformed, tampered with,
            truncated, oversized, or a symbolic link.
    """
    directory = Path(os.fspath(path))
    try:
        _check_directory(directory)
        record = _read_index_file(directory)
        files = _check_record(record)
        count, dim = record["count"], record["dim"]
        embeddings = None
        if EMBEDDINGS_FILE in files:
            embeddings = _read_array(
                directory,
                EMBEDDINGS_FILE,
                files[EMBEDDINGS_FILE],
                (count, dim if dim is not None else 0),
                "float32",
                mapped=(record.get("quantization") or {}).get("keep_float") == "disk",
            )
            if not _all_finite(embeddings):
                raise _Malformed("embeddings hold NaN or infinite values.")
        codes, ranges = _read_codes(directory, record, files)
        labels = None
        if record["labels"] is not None:
            labels = _read_array(
                directory, LABELS_FILE, files[LABELS_FILE], (count,), record["labels"]
            )
        encoders = {}
        for name in (ENCODER_FILE, QUERY_ENCODER_FILE):
            encoders[name] = None
            if name in files:
                with _open_member(directory, name) as handle:
                    _check_size(handle, name, files[name])
                    _check_checksum(handle, name, files[name])
                encoders[name] = directory / name
    except _Malformed as problem:
        raise _fail(directory, str(problem)) from None
    return {
        **record,
        "embeddings": embeddings,
        "codes": codes,
        "ranges": ranges,
        "labels": labels,
        "encoder_path": encoders[ENCODER_FILE],
        "query_encoder_path": encoders[QUERY_ENCODER_FILE],
    }


def _read_codes(
    directory: Path, record: dict[str, Any], files: dict
) -> tuple[np.ndarray | None, np.ndarray | None]:
    """A quantized index's codes and int8 ranges, checked; `(None, None)` otherwise."""
    quantization = record.get("quantization")
    if quantization is None:
        return None, None
    count, dim = record["count"], record["dim"] or 0
    kind = quantization["kind"]
    width = dim if kind == "int8" else -(-dim // 8)
    codes = _read_array(
        directory,
        CODES_FILE,
        files[CODES_FILE],
        (count, width),
        "int8" if kind == "int8" else "uint8",
    )
    ranges = None
    if RANGES_FILE in files:
        ranges = _read_array(
            directory, RANGES_FILE, files[RANGES_FILE], (2, dim), "float32"
        )
        if not (np.isfinite(ranges).all() and (ranges[0] <= ranges[1]).all()):
            raise _Malformed("the int8 ranges are not finite [min, max] pairs.")
    elif kind == "int8" and count:
        raise _Malformed(f"files lacks {RANGES_FILE}.")
    return codes, ranges


# -- writing -------------------------------------------------------------------


def _refuse(directory: Path, problem: str) -> ValueError:
    return ValueError(f"Refusing to save an index into {directory}: {problem}")


def _check_target(directory: Path) -> bool:
    """Whether `directory` holds a save to replace; refuse anything else.

    Returns `False` for a missing or empty directory.
    """
    try:
        mode = os.lstat(directory).st_mode
    except FileNotFoundError:
        return False
    if stat.S_ISLNK(mode):
        raise _refuse(directory, "it is a symbolic link; links are never followed.")
    if not stat.S_ISDIR(mode):
        raise ValueError(f"Cannot save an index to {directory}: it is a file.")
    with os.scandir(directory) as entries:
        present = {entry.name: entry for entry in entries}
    if not present:
        return False
    links = sorted(name for name, entry in present.items() if entry.is_symlink())
    if links:
        raise _refuse(
            directory, f"it holds symbolic links {links}; links are never followed."
        )
    foreign = sorted(set(present) - {INDEX_FILE, *_DATA_FILES})
    if INDEX_FILE not in present or foreign:
        listed = f" (it holds {foreign[:5]})" if foreign else ""
        raise _refuse(
            directory, f"the directory is not empty and is not a saved index{listed}."
        )
    irregular = sorted(
        name
        for name, entry in present.items()
        if not entry.is_file(follow_symlinks=False)
    )
    if irregular:
        raise _refuse(directory, f"{irregular} are not regular files.")
    try:
        record = _read_index_file(directory)
    except _Malformed as problem:
        raise _refuse(
            directory,
            f"the directory is not empty and is not a saved index ({problem})",
        ) from None
    if not isinstance(record, dict) or record.get("format") != FORMAT:
        raise _refuse(
            directory,
            f"the directory is not empty and is not a saved index (its {INDEX_FILE} "
            f"is not a {FORMAT} file).",
        )
    return True


def _sibling(directory: Path, purpose: str) -> Path:
    return directory.with_name(f".{directory.name}.{purpose}-{secrets.token_hex(4)}")


def _fsync_directory(directory: Path) -> None:
    if not hasattr(os, "O_DIRECTORY"):  # Windows cannot open a directory
        return
    descriptor = os.open(directory, os.O_RDONLY | os.O_DIRECTORY)
    try:
        os.fsync(descriptor)
    finally:
        os.close(descriptor)


def _seal(path: Path) -> dict[str, Any]:
    """Flush a written file to disk; its checksum and size."""
    with open(os.open(path, _READ_FLAGS), "rb") as handle:
        os.fsync(handle.fileno())
        return {"sha256": _sha256(handle), "bytes": _size(handle)}


def _create(path: Path, data: bytes | np.ndarray) -> dict[str, Any]:
    with open(os.open(path, _CREATE_FLAGS, 0o666), "wb") as handle:
        if isinstance(data, np.ndarray):
            np.save(handle, data, allow_pickle=False)
        else:
            handle.write(data)
        handle.flush()
        os.fsync(handle.fileno())
    return _seal(path)


def _swap(staging: Path, directory: Path, replace: bool) -> None:
    """Rename `staging` to `directory`; an old save there only by renames."""
    if not replace:
        with contextlib.suppress(FileNotFoundError):
            os.rmdir(directory)  # an empty directory: nothing to keep
        os.rename(staging, directory)
        _fsync_directory(directory.parent)
        return
    aside = _sibling(directory, "old")
    os.rename(directory, aside)
    try:
        os.rename(staging, directory)
    except BaseException:
        os.rename(aside, directory)
        raise
    _fsync_directory(directory.parent)
    shutil.rmtree(aside, ignore_errors=True)


def _metadata(
    config: dict[str, Any],
    embeddings: np.ndarray,
    labels: np.ndarray | None,
    verifier: dict[str, Any] | None,
    dim: int | None = None,
) -> tuple[dict[str, Any], np.ndarray]:
    """`index.json` without `files`, and the embeddings as saved.

    `dim`: the embedding size, where `embeddings` does not give it (a
    quantized index keeping no floats)."""
    kind = None
    if labels is not None:
        kind = label_kind(labels.dtype)
        if kind is None:
            raise ValueError(
                "Only integer or string labels can be saved; this index holds "
                f"labels of dtype {labels.dtype}. Convert them, e.g. with "
                "`labels.astype(str)`, before adding."
            )
    count = len(embeddings)
    if dim is None:
        dim = embeddings.shape[1] if count else None
    if not count:
        embeddings = np.zeros((0, dim or 0), dtype=np.float32)
    metadata = {
        "distance": config["distance"],
        "count": count,
        "dim": dim,
        "labels": kind,
        "engine": config["engine"],
    }
    if config.get("truncate_dim") is not None:
        metadata["truncate_dim"] = config["truncate_dim"]
    if config.get("quantization") is not None:
        metadata["quantization"] = config["quantization"]
    if verifier is not None:
        metadata["verifier"] = verifier
    return metadata, np.asarray(embeddings)


def write(
    path: str | os.PathLike,
    config: dict[str, Any],
    embeddings: np.ndarray,
    labels: np.ndarray | None,
    encoder: Any | None = None,
    verifier: dict[str, Any] | None = None,
    query_encoder: Any | None = None,
    codes: np.ndarray | None = None,
    ranges: np.ndarray | None = None,
    dim: int | None = None,
) -> Path:
    """Write a saved index directory, atomically.

    Args:
        path: the directory.
        config: the index's `get_config()` (distance and engine).
        embeddings: float32 `(count, dim)`.
        labels: `(count,)` integer or string labels, or `None`.
        encoder: a verifier's encoder, saved as `encoder.keras`, or `None`.
        verifier: a verifier's settings, or `None`.
        query_encoder: a verifier's own query encoder, saved as
            `query_encoder.keras`, or `None`.
        codes: a quantized index's codes `(count, width)` (its config has
            `"quantization"`); with `keep_float` `None`, `embeddings` is
            not written and only gives the count.
        ranges: its int8 ranges `(2, dim)`, or `None`.
        dim: the embedding size where `embeddings` are not written.

    The files are written into a new sibling directory, flushed to disk and
    renamed into place (see the module docstring for what a crash leaves).
    Refuses a path that is a symbolic link, a file, or a non-empty directory
    other than a save of this format, so that saving to the wrong path
    cannot mix files or delete any.

    Raises:
        ValueError: for labels neither integers nor strings, settings that
            do not pass the checks of `read`, or a refused path.
    """
    quantization = config.get("quantization")
    floats = quantization is None or quantization["keep_float"] is not None
    if not floats:
        count = len(codes)
        embeddings = np.zeros((count, 0), dtype=np.float32)
    metadata, embeddings = _metadata(config, embeddings, labels, verifier, dim)
    directory = Path(os.path.abspath(os.fspath(path)))
    _check_target(directory)
    directory.parent.mkdir(parents=True, exist_ok=True)
    staging = _sibling(directory, "saving")
    os.mkdir(staging)
    try:
        files = {}
        if floats:
            files[EMBEDDINGS_FILE] = _create(staging / EMBEDDINGS_FILE, embeddings)
        if codes is not None:
            files[CODES_FILE] = _create(staging / CODES_FILE, np.asarray(codes))
        if ranges is not None:
            files[RANGES_FILE] = _create(staging / RANGES_FILE, np.asarray(ranges))
        if labels is not None:
            files[LABELS_FILE] = _create(staging / LABELS_FILE, labels)
        if encoder is not None:
            encoder.save(staging / ENCODER_FILE)
            files[ENCODER_FILE] = _seal(staging / ENCODER_FILE)
        if query_encoder is not None:
            query_encoder.save(staging / QUERY_ENCODER_FILE)
            files[QUERY_ENCODER_FILE] = _seal(staging / QUERY_ENCODER_FILE)
        record = {"format": FORMAT, "version": VERSION, **metadata, "files": files}
        try:
            _check_record(record)
        except _Malformed as problem:
            raise ValueError(
                f"Cannot save an index to {directory}: {problem}"
            ) from None
        text = json.dumps(record, indent=2, allow_nan=False) + "\n"
        _create(staging / INDEX_FILE, text.encode("utf-8"))
        _fsync_directory(staging)
        # Checked again: the directory may have changed while writing.
        _swap(staging, directory, _check_target(directory))
    except BaseException:
        shutil.rmtree(staging, ignore_errors=True)
        raise
    return directory
