"""Saving an index or a verifier: atomic, contained, safe under hostile files.

A failed or interrupted save leaves the previous save byte for byte; a save
never writes into another program's folder, never follows a symbolic link;
loading refuses oversized files before hashing them, and any malformed
`index.json` is a `ValueError`, never another exception or a hang.
"""

from __future__ import annotations

import errno
import hashlib
import json
import os
import shutil
import subprocess
import sys
import tempfile
from pathlib import Path
from types import SimpleNamespace

import keras
import numpy as np
import pytest
from hypothesis import given
from hypothesis import strategies as st

from keras_siamese import EmbeddingIndex, Verifier
from keras_siamese.retrieval import _storage
from keras_siamese.retrieval._engines import ENGINE_LIMITS

ROOT = Path(__file__).resolve().parent.parent
FIXTURES = ROOT / "tests" / "fixtures"


def make_index(rows=12, dim=4, labelled=True, seed=0):
    rng = np.random.default_rng(seed)
    index = EmbeddingIndex()
    labels = rng.integers(0, 5, rows) if labelled else None
    index.add(rng.normal(size=(rows, dim)).astype("float32"), labels)
    return index


def make_verifier(rows=12):
    keras.utils.set_random_seed(2)
    encoder = keras.Sequential([keras.Input((3,)), keras.layers.Dense(4)])
    rng = np.random.default_rng(3)
    verifier = Verifier(encoder, threshold=0.5)
    verifier.enroll(rng.normal(size=(rows, 3)).astype("float32"), np.arange(rows))
    return verifier


def snapshot(path):
    """Every file of a save, by name, with its bytes."""
    return {entry.name: entry.read_bytes() for entry in sorted(path.iterdir())}


def siblings(path):
    return sorted(p.name for p in path.parent.iterdir() if p.name != path.name)


def rewrite_json(path, change):
    record = json.loads((path / "index.json").read_text())
    change(record)
    (path / "index.json").write_text(json.dumps(record))


# -- a failed save keeps the previous one -----------------------------------


class _FullDiskEncoder:
    """An encoder whose `save` writes a little, then finds the disk full."""

    def predict(self, x, **kwargs):
        return np.asarray(x, dtype="float32")

    def save(self, path):
        Path(path).write_bytes(b"partial")
        raise OSError(errno.ENOSPC, "No space left on device")


def test_a_failing_encoder_save_keeps_the_previous_save(tmp_path):
    path = tmp_path / "verifier"
    make_verifier().save(path)
    before = snapshot(path)
    broken = Verifier(_FullDiskEncoder(), threshold=1.0, index=make_index(5))
    with pytest.raises(OSError, match="No space left"):
        broken.save(path)
    assert snapshot(path) == before
    assert siblings(path) == []  # the unfinished save is removed
    assert Verifier.load(path).threshold == 0.5


def test_a_failing_array_write_keeps_the_previous_save(tmp_path, monkeypatch):
    path = tmp_path / "index"
    make_index().save(path)
    before = snapshot(path)
    real_save = np.save

    def full_disk(handle, array, **kwargs):
        real_save(handle, array[: len(array) // 2], **kwargs)
        raise OSError(errno.ENOSPC, "No space left on device")

    monkeypatch.setattr(np, "save", full_disk)
    with pytest.raises(OSError, match="No space left"):
        make_index(rows=30, seed=1).save(path)
    monkeypatch.undo()
    assert snapshot(path) == before
    assert siblings(path) == []
    np.testing.assert_array_equal(
        EmbeddingIndex.load(path).embeddings, make_index().embeddings
    )


def test_saving_over_a_save_replaces_it_whole(tmp_path):
    path = tmp_path / "saved"
    make_verifier().save(path)
    unlabelled = make_index(rows=7, labelled=False, seed=4)
    unlabelled.save(path)
    assert set(snapshot(path)) == {"index.json", "embeddings.npy"}
    assert siblings(path) == []  # the old save is removed, no staging left
    np.testing.assert_array_equal(
        EmbeddingIndex.load(path).embeddings, unlabelled.embeddings
    )
    (tmp_path / "empty").mkdir()  # an empty directory is a fine target
    unlabelled.save(tmp_path / "empty")
    assert len(EmbeddingIndex.load(tmp_path / "empty")) == 7


# -- a save never writes into another program's folder ----------------------

FOREIGN = {
    "another program's index.json and encoder": {
        "index.json": b'{"name": "photo-app", "version": 1}',
        "encoder.keras": b"another program's model",
    },
    "an index.json that is not JSON": {
        "index.json": b"[settings]\nkey = 1\n",
        "embeddings.npy": b"not ours",
    },
    "an index.json of another type": {"index.json": b'["keras-siamese-index"]'},
    "a save with an extra file": {
        "index.json": b'{"format": "keras-siamese-index"}',
        "notes.txt": b"mine",
    },
    "files without an index.json": {"labels.npy": b"mine"},
}


@pytest.mark.parametrize("case", sorted(FOREIGN))
@pytest.mark.parametrize("kind", ["index", "verifier"])
def test_a_foreign_folder_is_refused_and_nothing_deleted(tmp_path, case, kind):
    folder = tmp_path / "folder"
    folder.mkdir()
    for name, data in FOREIGN[case].items():
        (folder / name).write_bytes(data)
    saved = make_index() if kind == "index" else make_verifier()
    with pytest.raises(ValueError, match="not a saved index"):
        saved.save(folder)
    assert snapshot(folder) == FOREIGN[case]
    assert siblings(folder) == []


# -- symbolic links are never followed ---------------------------------------


def test_save_refuses_a_symlinked_directory(tmp_path):
    real = tmp_path / "real"
    make_index().save(real)
    before = snapshot(real)
    link = tmp_path / "link"
    link.symlink_to(real, target_is_directory=True)
    with pytest.raises(ValueError, match="symbolic link"):
        make_index(seed=5).save(link)
    assert link.is_symlink() and snapshot(real) == before


@pytest.mark.parametrize("name", ["embeddings.npy", "labels.npy", "index.json"])
def test_save_refuses_a_save_holding_a_symlink(tmp_path, name):
    path = tmp_path / "saved"
    make_index().save(path)
    victim = tmp_path / "victim"
    content = (path / name).read_bytes()
    victim.write_bytes(content)
    (path / name).unlink()
    (path / name).symlink_to(victim)
    with pytest.raises(ValueError, match=f"symbolic links.*{name}"):
        make_index(rows=40, seed=6).save(path)
    assert victim.read_bytes() == content
    assert (path / name).is_symlink()


@pytest.mark.parametrize(
    "name", ["", "index.json", "embeddings.npy", "labels.npy", "encoder.keras"]
)
def test_load_refuses_symlinks(tmp_path, name):
    saved = tmp_path / "saved"
    make_verifier().save(saved)
    Verifier.load(saved)  # loads before the link is made
    if name:  # a file links to an identical copy: following it would load
        copy = tmp_path / "copy"
        copy.write_bytes((saved / name).read_bytes())
        (saved / name).unlink()
        (saved / name).symlink_to(copy)
        path = saved
    else:
        path = tmp_path / "link"
        path.symlink_to(saved, target_is_directory=True)
    for load in (Verifier.load, EmbeddingIndex.load):
        with pytest.raises(ValueError, match=f"{name or 'it'} is a symbolic link"):
            load(path)


# -- sizes are checked before anything is hashed or read --------------------


@pytest.fixture
def hash_budget(monkeypatch):
    """Fail a test that hashes more than 16 MiB (a whole sparse file)."""
    hashed = []

    class Counting:
        def __init__(self):
            self.digest = hashlib.sha256()

        def update(self, data):
            hashed.append(len(data))
            assert sum(hashed) <= 2**24, "hashed a file before checking its size"
            self.digest.update(data)

        def hexdigest(self):
            return self.digest.hexdigest()

    monkeypatch.setattr(_storage, "hashlib", SimpleNamespace(sha256=Counting))
    return hashed


def _version_1_copy(tmp_path):
    path = tmp_path / "version1"
    shutil.copytree(FIXTURES / "verifier_jax", path)
    assert json.loads((path / "index.json").read_text())["version"] == 1
    return path


@pytest.mark.parametrize(
    "version, name",
    [
        (2, "embeddings.npy"),
        (2, "labels.npy"),
        (2, "encoder.keras"),
        (1, "embeddings.npy"),
        (1, "labels.npy"),
    ],
)
def test_a_sparse_oversized_file_is_refused_before_hashing(
    tmp_path, hash_budget, version, name
):
    if version == 2:
        path = tmp_path / "saved"
        make_verifier().save(path)
    else:
        path = _version_1_copy(tmp_path)
    try:
        os.truncate(path / name, 2**40)  # 1 TiB, sparse: nothing is written
    except OSError:  # a file system with a smaller largest file
        os.truncate(path / name, 2**33)
    with pytest.raises(ValueError, match=name.replace(".", r"\.")):
        EmbeddingIndex.load(path)
    assert sum(hash_budget) < 2**20


def test_a_version_1_encoder_past_the_bound_is_refused_before_hashing(
    tmp_path, hash_budget
):
    """Version 1 records no size to compare: a large encoder is not hashed."""
    path = _version_1_copy(tmp_path)
    try:
        os.truncate(path / "encoder.keras", 2**40)
    except OSError:
        os.truncate(path / "encoder.keras", 2**33 + 1)
    with pytest.raises(ValueError, match=r"encoder\.keras holds .* version-1 save"):
        Verifier.load(path)
    assert sum(hash_budget) < 2**20


def test_an_array_header_claiming_a_huge_array_is_refused(tmp_path, hash_budget):
    path = tmp_path / "saved"
    make_index().save(path)
    # A real header for 2**40 labels of 1000 characters, with a tiny body and
    # the checksum and size in index.json updated to match.
    with open(path / "labels.npy", "wb") as handle:
        np.lib.format.write_array_header_1_0(
            handle,
            {"descr": "<U1000", "fortran_order": False, "shape": (2**40,)},
        )
        handle.write(b"\0" * 64)
    data = (path / "labels.npy").read_bytes()
    entry = {"sha256": hashlib.sha256(data).hexdigest(), "bytes": len(data)}
    rewrite_json(path, lambda r: r["files"].__setitem__("labels.npy", entry))
    with pytest.raises(ValueError, match=r"labels\.npy is not a readable array"):
        EmbeddingIndex.load(path)


def test_version_1_fixture_still_loads(tmp_path):
    path = _version_1_copy(tmp_path)
    index = EmbeddingIndex.load(path)
    assert len(index) == 18 and index.labels.dtype.kind == "U"


# -- engine settings have upper bounds ---------------------------------------


@pytest.mark.parametrize("setting", sorted(ENGINE_LIMITS))
def test_engine_settings_are_bounded_in_the_constructor(setting):
    limit = ENGINE_LIMITS[setting]
    assert getattr(EmbeddingIndex(**{setting: limit}), setting) == limit
    for value in {limit + 1, max(limit + 1, 2**31), 2**63}:
        with pytest.raises(ValueError, match=f"`{setting}` must be at most {limit}"):
            EmbeddingIndex(**{setting: value})


@pytest.mark.parametrize("setting", sorted(ENGINE_LIMITS))
@pytest.mark.parametrize("value", ["limit + 1", 2**63, 0, 1.5, "64", None])
def test_engine_settings_are_checked_at_load(tmp_path, setting, value):
    path = tmp_path / "saved"
    make_index().save(path)
    if value == "limit + 1":
        value = ENGINE_LIMITS[setting] + 1
    rewrite_json(path, lambda r: r["engine"].update({setting: value}))
    with pytest.raises(ValueError, match=f"engine\\.{setting}"):
        EmbeddingIndex.load(path)


def test_save_refuses_settings_changed_beyond_their_bounds(tmp_path):
    index = make_index()
    index.block_bytes = 2**40
    with pytest.raises(ValueError, match=r"engine\.block_bytes"):
        index.save(tmp_path / "saved")
    assert list(tmp_path.iterdir()) == []


def test_faiss_hnsw_searches_at_the_bounds():
    pytest.importorskip("faiss")
    rng = np.random.default_rng(7)
    gallery = rng.normal(size=(64, 4)).astype("float32")
    queries = rng.normal(size=(5, 4)).astype("float32")
    exact = EmbeddingIndex()
    exact.add(gallery)
    bounded = EmbeddingIndex(
        engine="faiss-hnsw",
        hnsw_neighbors=ENGINE_LIMITS["hnsw_neighbors"],
        ef_search=ENGINE_LIMITS["ef_search"],
        ef_construction=ENGINE_LIMITS["ef_construction"],
    )
    bounded.add(gallery)
    for got, want in zip(bounded.search(queries, k=3), exact.search(queries, k=3)):
        np.testing.assert_array_equal(got, want)


# -- a hostile index.json is always a ValueError -----------------------------


def _deep(text, depth=100_000):
    return text.replace('"count": 12', '"count": ' + "[" * depth + "]" * depth)


HOSTILE_TEXT = {
    "deeply nested arrays": (lambda t: _deep(t), "nested too deeply"),
    "a deeply nested object": (
        lambda t: '{"a": ' * 100_000 + "1" + "}" * 100_000,
        "nested too deeply",
    ),
    "a huge integer": (
        lambda t: t.replace('"count": 12', '"count": 1' + "0" * 5000),
        "integer of 5001 digits",
    ),
    "a huge threshold": (
        lambda t: t.replace('"threshold": 0.5', '"threshold": 1' + "0" * 400),
        "integer of 401 digits",
    ),
    "an infinite threshold": (
        lambda t: t.replace('"threshold": 0.5', '"threshold": 1e999'),
        "out of range",
    ),
    "a NaN threshold": (
        lambda t: t.replace('"threshold": 0.5', '"threshold": NaN'),
        "NaN, which is not a number",
    ),
    "a repeated key": (
        lambda t: t.replace('"count": 12', '"count": 12, "count": 13'),
        "repeats a key",
    ),
    "bytes that are not UTF-8": (lambda t: t + "\udcff", "not valid JSON"),
}

HOSTILE_RECORD = {
    "count of the wrong type": (lambda r: r.update(count="12"), "count"),
    "a negative dim": (lambda r: r.update(dim=-4), "dim"),
    "a huge count": (lambda r: r.update(count=2**62), "count"),
    "an unknown engine": (lambda r: r["engine"].update(name="annoy"), "engine.name"),
    "an engine name of the wrong type": (
        lambda r: r["engine"].update(name=["keras"]),
        "engine.name",
    ),
    "an unknown label kind": (lambda r: r.update(labels="float"), "labels"),
    "a label kind of the wrong type": (lambda r: r.update(labels={"a": 1}), "labels"),
    "an unknown marker beyond int64": (
        lambda r: r["verifier"].update(unknown=2**64),
        "verifier.unknown",
    ),
    "a float unknown marker": (
        lambda r: r["verifier"].update(unknown=1.5),
        "verifier.unknown",
    ),
    "a batch size of 2**40": (
        lambda r: r["verifier"].update(batch_size=2**40),
        "verifier.batch_size",
    ),
    "a boolean threshold": (
        lambda r: r["verifier"].update(threshold=True),
        "verifier.threshold",
    ),
    "a file size of the wrong type": (
        lambda r: r["files"]["embeddings.npy"].update(bytes="256"),
        r"files\.embeddings\.npy\.bytes",
    ),
    "a malformed checksum": (
        lambda r: r["files"]["embeddings.npy"].update(sha256="z" * 64),
        r"files\.embeddings\.npy\.sha256",
    ),
    "a version-1 file entry in version 2": (
        lambda r: r["files"].update({"embeddings.npy": "0" * 64}),
        r"files\.embeddings\.npy must be a JSON object",
    ),
    "a calibration rate above 1": (
        lambda r: r["verifier"].update(
            calibration={
                "threshold": 0.5,
                "target": "accuracy",
                "value": None,
                "accuracy": 2.0,
                "precision": 1.0,
                "recall": 1.0,
                "far": 0.0,
                "frr": 0.0,
                "pairs": 4,
            }
        ),
        r"verifier\.calibration\.accuracy",
    ),
    "no format marker": (lambda r: r.pop("format"), "not a keras-siamese-index"),
}


@pytest.fixture(scope="module")
def saved_verifier(tmp_path_factory):
    path = tmp_path_factory.mktemp("hostile") / "verifier"
    make_verifier().save(path)
    return path


def _load_with_text(saved, text):
    with tempfile.TemporaryDirectory() as folder:
        path = Path(folder) / "copy"
        shutil.copytree(saved, path)
        (path / "index.json").write_bytes(text.encode("utf-8", "surrogateescape"))
        loaded = Verifier.load(path)
        if loaded.index is not None:  # what loads must also search
            loaded.index.search(loaded.index.embeddings[:2], k=1)
            loaded.identify(np.zeros((1, 3), dtype="float32"))
        return loaded


@pytest.mark.parametrize("case", sorted(HOSTILE_TEXT))
def test_hostile_index_json_text_is_a_value_error(saved_verifier, case):
    edit, message = HOSTILE_TEXT[case]
    text = json.dumps(json.loads((saved_verifier / "index.json").read_text()))
    hostile = edit(text)
    assert hostile != text
    with pytest.raises(ValueError, match=message):
        _load_with_text(saved_verifier, hostile)


@pytest.mark.parametrize("case", sorted(HOSTILE_RECORD))
def test_hostile_index_json_fields_are_value_errors_naming_them(saved_verifier, case):
    edit, field = HOSTILE_RECORD[case]
    record = json.loads((saved_verifier / "index.json").read_text())
    edit(record)
    with pytest.raises(ValueError, match=field):
        _load_with_text(saved_verifier, json.dumps(record))


_SCALARS = (
    st.none()
    | st.booleans()
    | st.integers()
    | st.sampled_from([2**31, 2**63, -(2**63) - 1, 10**30, 10**400, 0, -1])
    | st.floats(allow_nan=True, allow_infinity=True)
    | st.text(max_size=8)
    | st.sampled_from(["keras", "faiss-hnsw", "int", "str", "accuracy", "euclidean"])
)
_JSON = st.recursive(
    _SCALARS,
    lambda inner: (
        st.lists(inner, max_size=3)
        | st.dictionaries(st.text(max_size=6), inner, max_size=3)
    ),
    max_leaves=6,
)


def _paths(node, prefix=()):
    yield prefix
    if isinstance(node, dict):
        for key, value in node.items():
            yield from _paths(value, (*prefix, key))
    elif isinstance(node, list):
        for i, value in enumerate(node):
            yield from _paths(value, (*prefix, i))


def _nodes(node):
    yield node
    for child in node.values() if isinstance(node, dict) else []:
        yield from _nodes(child)


@given(data=st.data())
def test_any_mutated_index_json_loads_or_is_a_value_error(saved_verifier, data):
    record = json.loads((saved_verifier / "index.json").read_text())
    where = data.draw(st.sampled_from(sorted(_paths(record), key=repr)))
    action = data.draw(st.sampled_from(["replace", "delete", "add"]))
    # Random JSON, or a value found elsewhere in a valid record (more often
    # of the right type, so that some mutated records load and then search).
    found = [node for node in _nodes(record) if not isinstance(node, (dict, list))]
    value = data.draw(_JSON | st.sampled_from(found))
    if not where:
        record = value
    else:
        parent = record
        for key in where[:-1]:
            parent = parent[key]
        if action == "delete" and isinstance(parent, dict):
            del parent[where[-1]]
        elif action == "add" and isinstance(parent, dict):
            parent[data.draw(st.text(max_size=6))] = value
        else:
            parent[where[-1]] = value
    try:
        _load_with_text(saved_verifier, json.dumps(record))
    except ValueError:
        pass
    except ImportError as error:  # a faiss engine, documented without faiss
        assert "faiss" in str(error)


@given(text=st.text(max_size=200) | st.binary(max_size=200).map(lambda b: b.hex()))
def test_arbitrary_index_json_text_is_a_value_error(saved_verifier, text):
    with pytest.raises(ValueError, match="Cannot load the index"):
        _load_with_text(saved_verifier, text)


# -- a save killed midway leaves the previous save --------------------------

_CHILD = """
import os, sys, time
import numpy as np
from keras_siamese import EmbeddingIndex, Verifier

path, stage = sys.argv[1], sys.argv[2]
index = EmbeddingIndex()
index.add(np.arange(200, dtype="float32").reshape(50, 4), np.arange(50))


class StuckEncoder:
    def predict(self, x, **kwargs):
        return x

    def save(self, target):
        with open(target, "wb") as handle:
            handle.write(b"partial")
        print("stuck", flush=True)
        time.sleep(600)


if stage == "encoder":
    Verifier(StuckEncoder(), index=index).save(path)
elif stage == "rename":
    real_rename = os.rename
    renamed = []

    def rename(source, target):
        if renamed:  # the old save is aside; the new one not yet in place
            print("stuck", flush=True)
            time.sleep(600)
        renamed.append(source)
        real_rename(source, target)

    os.rename = rename
    index.save(path)
else:
    while True:
        print("saving", flush=True)
        index.save(path)
"""


def _run_child(path, stage):
    env = {
        **os.environ,
        "KERAS_BACKEND": keras.backend.backend(),
        "PYTHONPATH": os.pathsep.join(
            [str(ROOT), *filter(None, [os.environ.get("PYTHONPATH")])]
        ),
    }
    return subprocess.Popen(
        [sys.executable, "-c", _CHILD, str(path), stage],
        env=env,
        stdout=subprocess.PIPE,
        text=True,
    )


def _kill_after(child, line, times=1):
    try:
        for _ in range(times):
            assert child.stdout.readline().strip() == line, "the child ended early"
    finally:
        child.kill()
        child.wait()
        child.stdout.close()


@pytest.mark.slow
def test_a_save_killed_while_saving_the_encoder_keeps_the_previous_save(tmp_path):
    path = tmp_path / "verifier"
    make_verifier().save(path)
    before = snapshot(path)
    _kill_after(_run_child(path, "encoder"), "stuck")
    assert snapshot(path) == before
    assert Verifier.load(path).threshold == 0.5
    # The unfinished save is left aside, under an obvious name.
    (staging,) = siblings(path)
    assert staging.startswith(".verifier.saving-")


@pytest.mark.slow
def test_a_save_killed_between_its_renames_leaves_both_saves_whole(tmp_path):
    path = tmp_path / "index"
    old = make_index()
    old.save(path)
    before = snapshot(path)
    _kill_after(_run_child(path, "rename"), "stuck")
    assert not path.exists()
    aside, staging = siblings(path)
    assert aside.startswith(".index.old-") and staging.startswith(".index.saving-")
    assert snapshot(tmp_path / aside) == before
    new = EmbeddingIndex.load(tmp_path / staging)
    np.testing.assert_array_equal(new.labels, np.arange(50))
    os.rename(tmp_path / aside, path)  # the documented recovery
    np.testing.assert_array_equal(EmbeddingIndex.load(path).embeddings, old.embeddings)


@pytest.mark.slow
def test_a_save_killed_at_any_moment_leaves_a_whole_save(tmp_path):
    path = tmp_path / "index"
    make_index().save(path)
    before = snapshot(path)
    expected_new = tmp_path / "expected"
    new = EmbeddingIndex()
    new.add(np.arange(200, dtype="float32").reshape(50, 4), np.arange(50))
    new.save(expected_new)
    whole = [before, snapshot(expected_new)]
    shutil.rmtree(expected_new)
    _kill_after(_run_child(path, "loop"), "saving", times=3)
    if path.exists():
        assert snapshot(path) in whole
        EmbeddingIndex.load(path)
    else:  # killed between the renames: the old save is aside, whole
        (aside,) = [n for n in siblings(path) if n.startswith(".index.old-")]
        assert snapshot(tmp_path / aside) in whole
