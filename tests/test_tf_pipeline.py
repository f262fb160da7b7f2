"""`as_tf_dataset`: the `tf.data` pipeline equals `__getitem__`, batch by batch.

Runs wherever TensorFlow is installed (with any backend); the checks that
`fit` uses the pipeline run on the TensorFlow backend.
"""

from __future__ import annotations

import keras
import numpy as np
import pytest

from keras_siamese import (
    ClassBalancedDataset,
    ContrastiveLoss,
    EuclideanDistance,
    PairDataset,
    SiameseWrapper,
    TripletDataset,
)
from keras_siamese.data import base, tf_pipeline
from keras_siamese.data import images as image_files

tf = pytest.importorskip("tensorflow")

RNG = np.random.default_rng(3)
X = RNG.normal(size=(90, 5)).astype(np.float32)
Y = np.arange(90) % 6
ON_TENSORFLOW = keras.backend.backend() == "tensorflow"


def make(kind, x=X, **kwargs):
    if kind == "pairs":
        return PairDataset(x, Y, batch_size=8, seed=1, **kwargs)
    if kind == "triplets":
        return TripletDataset(x, Y, batch_size=8, seed=1, **kwargs)
    return ClassBalancedDataset(x, Y, 3, 2, seed=1, **kwargs)


def leaves(batch_inputs):
    if isinstance(batch_inputs, dict):
        return [batch_inputs[key] for key in sorted(batch_inputs)]
    if isinstance(batch_inputs, tuple):
        return [leaf for side in batch_inputs for leaf in leaves(side)]
    return [batch_inputs]


def assert_same_epoch(dataset, pipeline):
    batches = list(pipeline)
    assert len(batches) == len(dataset)
    for index, (inputs, targets) in enumerate(batches):
        expected_inputs, expected_targets = dataset[index]
        got, expected = leaves(inputs), leaves(expected_inputs)
        assert len(got) == len(expected)
        for tensor, array in zip(got, expected):
            assert tensor.dtype == tf.as_dtype(array.dtype)
            assert np.array_equal(tensor.numpy(), array)
        assert tf.as_dtype(expected_targets.dtype) == targets.dtype
        assert np.array_equal(targets.numpy(), expected_targets)


@pytest.mark.parametrize("kind", ["pairs", "triplets", "balanced"])
def test_pipeline_yields_the_batches_of_getitem(kind, monkeypatch):
    # Blocks of two batches: an epoch spans several, the last one partial.
    monkeypatch.setattr(base, "_BLOCK_ITEMS", 16)
    dataset = make(kind, steps_per_epoch=5)
    pipeline = dataset.as_tf_dataset()
    for epoch in (0, 1, 7):
        # One pipeline, iterated again after each change of epoch.
        dataset.set_epoch(epoch)
        assert_same_epoch(dataset, pipeline)


def test_dict_inputs_and_memmap_arrays(tmp_path):
    memmap = np.lib.format.open_memmap(
        tmp_path / "x.npy", mode="w+", dtype=np.float32, shape=(90, 2)
    )
    memmap[:] = X[:, :2]
    x = {"kept": X[:, 2:], "mapped": memmap}
    dataset = make("pairs", x=x, steps_per_epoch=3)
    pipeline = dataset.as_tf_dataset()
    (left, _), _ = pipeline.element_spec
    assert left["mapped"].shape == (8, 2) and left["kept"].shape == (8, 3)
    assert_same_epoch(dataset, pipeline)


def test_element_spec_has_full_static_batch_shapes():
    (left, right), labels = make("pairs").as_tf_dataset().element_spec
    assert left.shape == right.shape == (8, 5)
    assert labels.shape == (8,) and labels.dtype == tf.float32


@pytest.mark.skipif(not ON_TENSORFLOW, reason="the TensorFlow backend's fit")
def test_fit_on_tensorflow_uses_the_pipeline(monkeypatch):
    dataset = make("pairs", steps_per_epoch=4)
    inputs = [keras.Input((5,)), keras.Input((5,))]
    encoder = keras.Sequential([keras.Input((5,)), keras.layers.Dense(3)])
    model = keras.Model(
        inputs, SiameseWrapper(encoder, merge=EuclideanDistance())(inputs)
    )
    model.compile(optimizer="sgd", loss=ContrastiveLoss())

    def refuse(self, index):
        raise AssertionError("fit read a batch through __getitem__")

    # Patched where it is defined: a subclass's own `__getitem__` would be
    # an override, which the pipeline does call.
    monkeypatch.setattr(base.SampledDataset, "__getitem__", refuse)
    history = model.fit(dataset, epochs=2, verbose=0)
    assert np.all(np.isfinite(history.history["loss"]))
    assert dataset.epoch == 2


@pytest.mark.parametrize("kind", ["pairs", "triplets", "balanced"])
def test_augmented_and_file_backed_datasets_go_through_getitem(kind, tmp_path):
    def shift(images, seed):
        return images + np.float32(seed % 1000)

    paths = []
    for i, row in enumerate(X):
        np.save(tmp_path / f"{i}.npy", row)
        paths.append(str(tmp_path / f"{i}.npy"))
    for dataset in (
        make(kind, augment=shift, steps_per_epoch=3),
        make(kind, x=paths, loader=np.load, steps_per_epoch=3),
    ):
        assert not dataset.batches_are_rows
        pipeline = dataset.as_tf_dataset()
        for epoch in (0, 2):
            dataset.set_epoch(epoch)
            assert_same_epoch(dataset, pipeline)


def test_getitem_pipeline_makes_its_spec_batch_once_per_dataset():
    calls = []

    class Counting(PairDataset):
        def __getitem__(self, index):
            calls.append(index)
            return super().__getitem__(index)

    dataset = Counting(X, Y, batch_size=8, seed=1, steps_per_epoch=3)
    first, second = dataset.as_tf_dataset(), dataset.as_tf_dataset()
    assert calls == [0]
    assert first.element_spec == second.element_spec
    assert len(list(second)) == 3 and sorted(calls[1:]) == [0, 1, 2]


def test_a_corrupt_file_is_named_by_the_pipeline(tmp_path):
    image = pytest.importorskip("PIL.Image")
    for name in ("a", "b"):
        (tmp_path / name).mkdir()
        for k in range(6):
            pixels = np.zeros((4, 4, 3), np.uint8)
            image.fromarray(pixels).save(tmp_path / name / f"{k}.png")
    (tmp_path / "b" / "zz.png").write_bytes(b"not an image")
    dataset = PairDataset.from_directory(
        tmp_path, image_size=(4, 4), batch_size=2, seed=0, steps_per_epoch=40
    )
    # Batch 0 may or may not hold the file (it is read for the element spec,
    # where the ValueError comes as it is); TensorFlow wraps the others.
    with pytest.raises((ValueError, tf.errors.OpError), match=r"zz\.png"):
        for _ in dataset.as_tf_dataset():
            pass


def random_pictures(root, rng):
    """Folders a, b, c of `root`, with three random RGBA pictures of 4-19
    pixels a side for each: yields `(folder, k, picture)`."""
    image = pytest.importorskip("PIL.Image")
    for name in ("a", "b", "c"):
        (root / name).mkdir()
        for k in range(3):
            height, width = rng.integers(4, 20, 2)
            pixels = rng.integers(0, 256, (height, width, 4), dtype=np.uint8)
            yield root / name, k, image.fromarray(pixels, "RGBA")


def write_images(root, seed=0):
    """PNG in every 8-bit colour type, palette PNG, JPEG, GIF and BMP files."""
    image = pytest.importorskip("PIL.Image")
    rng = np.random.default_rng(seed)
    for folder, k, pixels in random_pictures(root, rng):
        for mode in ("L", "LA", "RGB", "RGBA"):
            pixels.convert(mode).save(folder / f"{k}{mode}.png")
        pixels.convert("RGB").convert("P").save(folder / f"{k}P.png")
        pixels.convert("RGB").save(folder / f"{k}.jpg", quality=90)
        pixels.convert("L").save(folder / f"{k}L.jpeg", quality=90)
        pixels.convert("RGB").convert("P").save(folder / f"{k}.gif")
        pixels.convert("RGB").save(folder / f"{k}.bmp")
    # Files of the loader's size exactly, which are not resized.
    for k in range(2):
        pixels = rng.integers(0, 256, (6, 5, 3), dtype=np.uint8)
        image.fromarray(pixels).save(root / "a" / f"same{k}.png")
    return root


def image_dataset(kind, root, **kwargs):
    common = {"image_size": (6, 5), "seed": 4, "steps_per_epoch": 4, **kwargs}
    if kind == "pairs":
        return PairDataset.from_directory(root, batch_size=6, **common)
    if kind == "triplets":
        return TripletDataset.from_directory(root, batch_size=6, **common)
    return ClassBalancedDataset.from_directory(root, 3, 3, **common)


@pytest.mark.parametrize(
    "kind, color_mode, interpolation, crop",
    [
        ("pairs", "rgb", "bilinear", False),
        ("triplets", "grayscale", "bicubic", True),
        ("balanced", "rgba", "area", False),
        ("balanced", "grayscale", "nearest", False),
        ("balanced", "rgb", "bicubic", True),
    ],
)
def test_image_files_are_decoded_by_tensorflow_to_the_pixels_of_getitem(
    kind, color_mode, interpolation, crop, tmp_path, monkeypatch
):
    write_images(tmp_path)
    dataset = image_dataset(
        kind,
        tmp_path,
        color_mode=color_mode,
        interpolation=interpolation,
        crop_to_aspect_ratio=crop,
    )
    assert dataset.batches_are_image_files and not dataset.batches_are_rows
    pipeline = dataset.as_tf_dataset()
    by_pillow = []

    def decode_image(path, mode, decoder):
        by_pillow.append(path)
        return image_files.decode_image(path, mode, decoder)

    for epoch in (0, 3):
        dataset.set_epoch(epoch)
        expected = [dataset[index] for index in range(len(dataset))]
        # The pipeline reads the files itself: `__getitem__` is not called,
        # and only GIF, BMP and palette PNG files are left to Pillow.
        with monkeypatch.context() as patch:
            patch.setattr(base.SampledDataset, "__getitem__", refuse_getitem)
            patch.setattr(tf_pipeline, "decode_image", decode_image)
            batches = list(pipeline)
        assert by_pillow and all(
            path.endswith((".gif", ".bmp", "P.png")) for path in by_pillow
        )
        assert len(batches) == len(expected)
        for (inputs, targets), (want, want_targets) in zip(batches, expected):
            for tensor, array in zip(leaves(inputs), leaves(want)):
                assert tensor.dtype == tf.float32 and tensor.shape == array.shape
                np.testing.assert_array_equal(tensor.numpy(), array)
            np.testing.assert_array_equal(targets.numpy(), want_targets)


def refuse_getitem(self, index):
    raise AssertionError("the pipeline read a batch through __getitem__")


def refuse_augment_batch(self, *args, **kwargs):
    raise AssertionError("the pipeline augmented a batch in Python")


def test_image_files_pipeline_augments_with_the_seeds_of_getitem(tmp_path, monkeypatch):
    write_images(tmp_path)
    augment = keras.Sequential(
        [
            keras.layers.RandomFlip("horizontal"),
            keras.layers.RandomCrop(4, 3),
            keras.layers.RandomRotation(0.2),
            keras.layers.RandomContrast(0.3),
        ]
    )
    for views in (1, 2):
        dataset = image_dataset("balanced", tmp_path, augment=augment, views=views)
        assert dataset.batches_are_image_files
        pipeline = dataset.as_tf_dataset()
        dataset.set_epoch(2)
        with monkeypatch.context() as patch:
            if ON_TENSORFLOW:
                # Keras layers run in the graph, with the same numbers.
                patch.setattr(
                    base.SampledDataset, "augment_batch", refuse_augment_batch
                )
            batches = list(pipeline)
        assert len(batches) == len(dataset)
        for index, (images, labels) in enumerate(batches):
            want, want_labels = dataset[index]
            assert images.shape == (views * 9, 4, 3, 3)
            np.testing.assert_array_equal(images.numpy(), want)
            np.testing.assert_array_equal(labels.numpy(), want_labels)


def test_an_overridden_augment_batch_is_what_the_image_files_pipeline_runs(
    tmp_path,
):
    write_images(tmp_path)

    class Negated(ClassBalancedDataset):
        def augment_batch(self, images, index, branch, epoch=None):
            return -super().augment_batch(images, index, branch, epoch)

    dataset = Negated.from_directory(
        tmp_path,
        3,
        3,
        image_size=(6, 5),
        seed=0,
        steps_per_epoch=3,
        augment=keras.layers.RandomFlip("horizontal"),
    )
    assert dataset.batches_are_image_files
    for index, (images, _) in enumerate(dataset.as_tf_dataset()):
        plain, _ = dataset[index]
        # `__getitem__` does not call `augment_batch`: the pipeline does.
        np.testing.assert_array_equal(images.numpy(), -plain)


def test_the_pipeline_is_built_once_and_follows_the_epoch(tmp_path):
    write_images(tmp_path)
    dataset = image_dataset("balanced", tmp_path, color_mode="grayscale")
    pipeline = dataset.as_tf_dataset()
    assert dataset.as_tf_dataset() is pipeline
    for epoch in (1, 5):
        dataset.set_epoch(epoch)
        for index, (images, labels) in enumerate(pipeline):
            want, want_labels = dataset[index]
            np.testing.assert_array_equal(images.numpy(), want)
            np.testing.assert_array_equal(labels.numpy(), want_labels)


@pytest.mark.parametrize("channels", [1, 3, 4])
def test_file_kind_follows_the_format_and_mode_pillow_finds(tmp_path, channels):
    image = pytest.importorskip("PIL.Image")
    write_images(tmp_path)
    whole = sorted(tmp_path.glob("*/*"))
    data = whole[0].read_bytes()
    (tmp_path / "cut.png").write_bytes(data[: len(data) // 2])
    jpeg = (tmp_path / "a" / "0.jpg").read_bytes()
    (tmp_path / "cut.jpg").write_bytes(jpeg[:-2])
    for path in whole:
        with image.open(path) as opened:
            form, mode = opened.format, opened.mode
        if form == "PNG" and mode in ("L", "LA", "RGB", "RGBA"):
            grey = channels == 1 and mode == "L"
            want = tf_pipeline._GREY_PNG if grey else tf_pipeline._COLOUR_PNG
        elif form == "JPEG":
            grey = channels == 1 and mode == "L"
            want = tf_pipeline._GREY_JPEG if grey else tf_pipeline._JPEG
        else:
            want = tf_pipeline._OTHER
        assert tf_pipeline.file_kind(str(path), channels) == want, path
    for name in ("cut.png", "cut.jpg", "missing.png"):
        kind = tf_pipeline.file_kind(str(tmp_path / name), channels)
        assert kind == tf_pipeline._OTHER


def write_one_kind(root, files):
    """Image files of the `(mode, suffix)` pairs `files`, three classes."""
    for folder, k, pixels in random_pictures(root, np.random.default_rng(1)):
        for mode, suffix in files:
            pixels.convert(mode).save(folder / f"{k}{mode}.{suffix}")


ALL_PNG = [(mode, "png") for mode in ("L", "LA", "RGB", "RGBA")]


@pytest.mark.parametrize(
    "color_mode, files",
    [
        ("grayscale", [("L", "png")]),
        ("grayscale", [("L", "jpeg")]),
        ("grayscale", [("RGB", "jpeg")]),
        ("grayscale", [("RGB", "png"), ("RGBA", "png")]),
        ("rgb", ALL_PNG),
        ("rgb", [("RGB", "jpeg"), ("L", "jpeg")]),
        ("rgba", ALL_PNG),
        ("rgb", [("P", "gif"), ("RGB", "bmp")]),
    ],
)
def test_blocks_of_files_of_one_kind_skip_the_per_file_conditional(
    tmp_path, color_mode, files, monkeypatch
):
    write_one_kind(tmp_path, files)
    decoders = tf_pipeline._decoders

    def without_conditional(tf_module, loader):
        _, by_kind = decoders(tf_module, loader)

        def refuse(path, kind):
            tf.debugging.assert_equal(kind, -1, "the per-file conditional ran")
            return by_kind[0](path)

        return refuse, by_kind

    monkeypatch.setattr(tf_pipeline, "_decoders", without_conditional)
    dataset = image_dataset("triplets", tmp_path, color_mode=color_mode)
    for index, (inputs, targets) in enumerate(dataset.as_tf_dataset()):
        want, want_targets = dataset[index]
        for tensor, array in zip(leaves(inputs), leaves(want)):
            np.testing.assert_array_equal(tensor.numpy(), array)
        np.testing.assert_array_equal(targets.numpy(), want_targets)
