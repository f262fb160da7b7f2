"""File-backed datasets: folders of images, loaders, and their errors.

`from_directory` is compared with `keras.utils.image_dataset_from_directory`
itself where TensorFlow is installed, and everywhere with an independent
reference (Pillow's nearest-neighbour resize, a float64 `np.interp` bilinear
resize).
"""

from __future__ import annotations

import os
from concurrent.futures import ThreadPoolExecutor

import keras
import numpy as np
import pytest
from hypothesis import given
from hypothesis import strategies as st

from keras_siamese import ClassBalancedDataset, PairDataset, TripletDataset
from keras_siamese.data import ImageLoader
from keras_siamese.data.images import (
    center_crop_to_aspect_ratio,
    index_directory,
    resize,
)

Image = pytest.importorskip("PIL.Image")

KINDS = {
    "pairs": lambda source, **kw: PairDataset.from_directory(
        source, batch_size=4, **kw
    ),
    "triplets": lambda source, **kw: TripletDataset.from_directory(
        source, batch_size=4, **kw
    ),
    "balanced": lambda source, **kw: ClassBalancedDataset.from_directory(
        source, classes_per_batch=2, samples_per_class=2, **kw
    ),
}


def write_folder(root, classes=("b", "a", "c"), per_class=3, seed=0, jpeg=True):
    """Random images of random sizes in PNG, GIF, BMP and JPEG, per class."""
    rng = np.random.default_rng(seed)
    for name in classes:
        folder = root / name
        folder.mkdir(parents=True)
        for k in range(per_class):
            height, width = rng.integers(5, 30, 2)
            pixels = rng.integers(0, 256, (height, width, 3), dtype=np.uint8)
            Image.fromarray(pixels).save(folder / f"{k}.png")
            Image.fromarray(pixels).convert("P").save(folder / f"{k}.GIF")
            Image.fromarray(pixels).save(folder / f"{k}.bmp")
            if jpeg:
                Image.fromarray(pixels).save(folder / f"{k}.jpg", quality=95)
    return root


def reference_bicubic(pixels, size):
    """Keys' cubic (a = -0.5) in float64; outside positions get no weight."""

    def kernel(t):
        t = np.abs(t)
        near = (1.5 * t - 2.5) * t * t + 1
        far = ((-0.5 * t + 2.5) * t - 4) * t + 2
        return np.where(t <= 1, near, np.where(t < 2, far, 0.0))

    values = pixels.astype(np.float64)
    for axis, out in enumerate(size):
        n = values.shape[axis]
        centres = (np.arange(out) + 0.5) * (n / out) - 0.5
        weights = kernel(centres[:, None] - np.arange(n)[None, :])
        weights /= weights.sum(axis=1, keepdims=True)
        values = np.moveaxis(np.tensordot(weights, values, axes=([1], [axis])), 0, axis)
    return values


def reference_area(pixels, size):
    """The mean of the input over each output cell's span, in float64."""
    values = pixels.astype(np.float64)
    for axis, out in enumerate(size):
        n = values.shape[axis]
        low = np.arange(out)[:, None] * (n / out)
        high = low + n / out
        cells = np.arange(n)[None, :]
        overlap = np.clip(np.minimum(high, cells + 1) - np.maximum(low, cells), 0, None)
        weights = overlap / overlap.sum(axis=1, keepdims=True)
        values = np.moveaxis(np.tensordot(weights, values, axes=([1], [axis])), 0, axis)
    return values


def reference_bilinear(pixels, size):
    """Half-pixel-centred bilinear resize in float64, axis by axis."""
    values = pixels.astype(np.float64)
    for axis, out in enumerate(size):
        n = values.shape[axis]
        centres = (np.arange(out) + 0.5) * (n / out) - 0.5
        values = np.apply_along_axis(
            lambda line, centres=centres, n=n: np.interp(centres, np.arange(n), line),
            axis,
            values,
        )
    return values


# --- Folder conventions -----------------------------------------------------


def test_index_follows_image_dataset_from_directory_conventions(tmp_path):
    write_folder(tmp_path, jpeg=False)
    (tmp_path / "a" / "nested").mkdir()
    Image.fromarray(np.zeros((3, 3, 3), np.uint8)).save(tmp_path / "a/nested/z.PNG")
    (tmp_path / "a" / "notes.txt").write_text("not an image")
    (tmp_path / ".hidden").mkdir()
    Image.fromarray(np.zeros((3, 3, 3), np.uint8)).save(tmp_path / ".hidden/x.png")
    paths, labels, names = index_directory(tmp_path)
    assert names == ["a", "b", "c"]
    names_of = [os.path.relpath(path, tmp_path) for path in paths]
    assert names_of[:10] == [
        "a/0.GIF", "a/0.bmp", "a/0.png", "a/1.GIF", "a/1.bmp", "a/1.png",
        "a/2.GIF", "a/2.bmp", "a/2.png", "a/nested/z.PNG",
    ]  # fmt: skip
    assert labels.tolist() == [0] * 10 + [1] * 9 + [2] * 9
    _, labels, names = index_directory(tmp_path, class_names=["c", "a"])
    assert names == ["c", "a"] and labels.tolist() == [0] * 9 + [1] * 10


def test_from_directory_matches_image_dataset_from_directory(tmp_path):
    pytest.importorskip("tensorflow")
    write_folder(tmp_path, classes=("b", "a", "c"))
    for size, interpolation, crop in [
        ((12, 9), "bilinear", False),
        ((7, 20), "bilinear", True),
        ((12, 9), "nearest", False),
        ((9, 16), "nearest", True),
        ((11, 13), "bicubic", False),
        ((20, 8), "bicubic", True),
        ((6, 4), "area", False),
        ((14, 30), "area", True),
    ]:
        reference = keras.utils.image_dataset_from_directory(
            tmp_path,
            image_size=size,
            interpolation=interpolation,
            crop_to_aspect_ratio=crop,
            class_names=["c", "a", "b"],
            shuffle=False,
            batch_size=None,
            verbose=False,
        )
        dataset = ClassBalancedDataset.from_directory(
            tmp_path,
            image_size=size,
            interpolation=interpolation,
            crop_to_aspect_ratio=crop,
            class_names=["c", "a", "b"],
            classes_per_batch=2,
            samples_per_class=2,
        )
        assert dataset.class_names == reference.class_names
        assert list(dataset.x) == reference.file_paths
        for path, (image, label) in zip(dataset.x, reference):
            mine = dataset.loader(path)
            assert mine.dtype == np.float32 and mine.shape == (*size, 3)
            assert int(label) == dataset.class_names.index(path.split(os.sep)[-2])
            theirs = image.numpy().astype(np.float32)
            if path.endswith(".jpg"):
                # TensorFlow's JPEG decoder uses the fast integer DCT, Pillow's
                # the accurate one: their pixels differ by a few levels.
                assert np.abs(mine - theirs).mean() < 3.0
            else:
                np.testing.assert_array_equal(mine, theirs)


@pytest.mark.parametrize("color_mode, channels", [("grayscale", 1), ("rgba", 4)])
def test_color_modes(tmp_path, color_mode, channels):
    pixels = np.random.default_rng(1).integers(0, 256, (6, 5, 4), dtype=np.uint8)
    Image.fromarray(pixels).save(tmp_path / "x.png")
    loaded = ImageLoader((6, 5), color_mode)(tmp_path / "x.png")
    assert loaded.shape == (6, 5, channels) and loaded.dtype == np.float32
    expected = np.asarray(
        Image.fromarray(pixels).convert({1: "L", 4: "RGBA"}[channels])
    ).reshape(6, 5, channels)
    np.testing.assert_array_equal(loaded, expected)


@given(
    height=st.integers(1, 23),
    width=st.integers(1, 23),
    out_height=st.integers(1, 31),
    out_width=st.integers(1, 31),
    seed=st.integers(0, 2**32 - 1),
)
def test_resize_matches_independent_references(
    height, width, out_height, out_width, seed
):
    pixels = np.random.default_rng(seed).integers(
        0, 256, (height, width, 3), dtype=np.uint8
    )
    bilinear = resize(pixels, (out_height, out_width), "bilinear")
    assert bilinear.dtype == np.float32
    np.testing.assert_allclose(
        bilinear, reference_bilinear(pixels, (out_height, out_width)), atol=2e-3
    )
    # The bicubic weights come from a table of 1024 steps (as TensorFlow's):
    # close to the exact kernel, not equal.
    bicubic = resize(pixels, (out_height, out_width), "bicubic")
    np.testing.assert_allclose(
        bicubic, reference_bicubic(pixels, (out_height, out_width)), atol=0.5
    )
    np.testing.assert_allclose(
        resize(pixels, (out_height, out_width), "area"),
        reference_area(pixels, (out_height, out_width)),
        atol=2e-3,
    )
    # Nearest: each output pixel is the input pixel whose cell holds the
    # output pixel's centre, `floor((i + 0.5) * n / out)` in exact arithmetic;
    # at an exact tie float32 may round to the pixel before (as TensorFlow).
    code = np.arange(height)[:, None] * 100.0 + np.arange(width)[None, :]
    picked = resize(code[..., None], (out_height, out_width), "nearest")[..., 0]
    for axis, (n, out) in enumerate([(height, out_height), (width, out_width)]):
        got = (picked // 100 if axis == 0 else picked % 100).astype(int)
        got = got[:, 0] if axis == 0 else got[0]
        numerator = (2 * np.arange(out) + 1) * n
        exact = numerator // (2 * out)
        tie = numerator % (2 * out) == 0
        assert np.all((got == exact) | (tie & (got == exact - 1)))


@given(
    height=st.integers(1, 40),
    width=st.integers(1, 40),
    out_height=st.integers(1, 40),
    out_width=st.integers(1, 40),
    seed=st.integers(0, 2**32 - 1),
)
def test_resize_equals_tf_image_resize_to_the_bit(
    height, width, out_height, out_width, seed
):
    tf = pytest.importorskip("tensorflow")
    pixels = np.random.default_rng(seed).integers(
        0, 256, (height, width, 3), dtype=np.uint8
    )
    for method in ("bilinear", "nearest", "bicubic", "area"):
        # The given size, and the image's own (which skips the arithmetic).
        for size in [(out_height, out_width), (height, width)]:
            theirs = tf.image.resize(pixels, size, method=method)
            mine = resize(pixels, size, method)
            np.testing.assert_array_equal(mine, theirs.numpy().astype(np.float32))


@given(
    height=st.integers(1, 20),
    width=st.integers(1, 20),
    out_height=st.integers(1, 24),
    out_width=st.integers(1, 24),
    batch=st.integers(1, 4),
    seed=st.integers(0, 2**32 - 1),
)
def test_batched_resize_equals_resizing_each_image(
    height, width, out_height, out_width, batch, seed
):
    pixels = np.random.default_rng(seed).integers(
        0, 256, (batch, height, width, 2), dtype=np.uint8
    )
    for method in ("bilinear", "nearest", "bicubic", "area"):
        together = resize(pixels, (out_height, out_width), method)
        assert together.shape == (batch, out_height, out_width, 2)
        assert together.dtype == np.float32
        for image, resized in zip(pixels, together):
            np.testing.assert_array_equal(
                resized, resize(image, (out_height, out_width), method)
            )
        # At its own size an image comes back as it is, in float32.
        np.testing.assert_array_equal(
            resize(pixels, (height, width), method), pixels.astype(np.float32)
        )


@pytest.mark.parametrize("color_mode", ["grayscale", "rgb", "rgba"])
@pytest.mark.parametrize("crop", [False, True])
def test_load_batch_equals_loading_each_file(tmp_path, color_mode, crop):
    write_folder(tmp_path, classes=("a", "b"), per_class=3)
    # Two files of the loader's size, which are not resized.
    for k in range(2):
        pixels = np.random.default_rng(k).integers(0, 256, (9, 7, 3), np.uint8)
        Image.fromarray(pixels).save(tmp_path / "a" / f"same{k}.png")
    paths, _, _ = index_directory(tmp_path)
    mode = {"grayscale": "L", "rgb": "RGB", "rgba": "RGBA"}[color_mode]
    for interpolation in ("bilinear", "nearest", "bicubic", "area"):
        loader = ImageLoader((9, 7), color_mode, interpolation, crop)
        batch = loader.load_batch(paths)
        assert batch.shape == (len(paths), *loader.shape)
        for path, image in zip(paths, batch):
            with Image.open(path) as source:
                decoded = np.asarray(source.convert(mode))
            decoded = decoded.reshape(*decoded.shape[:2], -1)
            if crop:
                decoded = center_crop_to_aspect_ratio(decoded, (9, 7))
            np.testing.assert_array_equal(image, resize(decoded, (9, 7), interpolation))
            np.testing.assert_array_equal(image, loader(path))


def test_batches_are_the_same_whatever_the_threads(tmp_path):
    write_folder(tmp_path, classes=("a", "b", "c"), per_class=3)
    make = lambda: ClassBalancedDataset.from_directory(  # noqa: E731
        tmp_path, image_size=(8, 6), classes_per_batch=2, samples_per_class=3,
        seed=5, steps_per_epoch=8,
    )  # fmt: skip
    alone, shared = make(), make()
    alone.set_epoch(2)
    shared.set_epoch(2)
    expected = [alone[index] for index in range(len(alone))]
    # The batches read at once by four threads, in another order.
    order = [7, 3, 0, 5, 1, 6, 2, 4] * 2
    with ThreadPoolExecutor(4) as pool:
        got = list(pool.map(shared.__getitem__, order))
    for index, (images, labels) in zip(order, got):
        np.testing.assert_array_equal(images, expected[index][0])
        np.testing.assert_array_equal(labels, expected[index][1])


def test_crop_to_aspect_ratio_takes_the_centred_crop(tmp_path):
    pixels = np.zeros((10, 30, 3), np.uint8)
    pixels[:, 10:20] = 200  # the centred square
    Image.fromarray(pixels).save(tmp_path / "wide.png")
    cropped = ImageLoader((5, 5), crop_to_aspect_ratio=True)(tmp_path / "wide.png")
    np.testing.assert_array_equal(cropped, np.full((5, 5, 3), 200.0))
    whole = ImageLoader((5, 5))(tmp_path / "wide.png")
    assert whole[:, 0].max() == 0.0


# --- Paths and loaders ------------------------------------------------------


@pytest.mark.parametrize("kind", ["pairs", "triplets", "balanced"])
def test_file_backed_batches_equal_array_batches(tmp_path, kind):
    x = np.random.default_rng(2).normal(size=(24, 3, 2)).astype(np.float32)
    y = np.arange(24) % 4
    paths = []
    for i, row in enumerate(x):
        np.save(tmp_path / f"{i}.npy", row)
        paths.append(tmp_path / f"{i}.npy")
    if kind == "pairs":
        files = PairDataset(paths, y, batch_size=5, seed=3, loader=np.load)
        arrays = PairDataset(x, y, batch_size=5, seed=3)
    elif kind == "triplets":
        files = TripletDataset(paths, y, batch_size=5, seed=3, loader=np.load)
        arrays = TripletDataset(x, y, batch_size=5, seed=3)
    else:
        files = ClassBalancedDataset(paths, y, 2, 3, seed=3, loader=np.load)
        arrays = ClassBalancedDataset(x, y, 2, 3, seed=3)
    assert files.x == tuple(str(path) for path in paths)
    for epoch in (0, 4):
        files.set_epoch(epoch)
        arrays.set_epoch(epoch)
        for index in range(len(files)):
            got, expected = files[index], arrays[index]
            for a, b in zip(keras.tree.flatten(got), keras.tree.flatten(expected)):
                np.testing.assert_array_equal(a, b)


def test_only_the_files_of_the_batch_are_read_once_each(tmp_path):
    y = np.arange(40) % 5
    read = []

    def loader(path):
        read.append(path)
        return np.full((2,), float(os.path.basename(path)))

    dataset = TripletDataset([str(i) for i in range(40)], y, batch_size=6, seed=0,
                             loader=loader)  # fmt: skip
    (anchors, positives, negatives), _ = dataset[3]
    rows = dataset.batch_indices(3)[0]
    for side, side_rows in zip((anchors, positives, negatives), rows):
        np.testing.assert_array_equal(side[:, 0], side_rows)
    # One call per distinct row of each input, nothing else.
    expected = sum(len(np.unique(side_rows)) for side_rows in rows)
    assert len(read) == expected
    assert {int(p) for p in read} == {int(r) for side in rows for r in side}


def test_loader_returning_different_shapes_is_named(tmp_path):
    y = np.arange(10) % 2

    def loader(path):
        return np.zeros(3 if path == "odd" else 2)

    paths = ["odd", *[f"p{i}" for i in range(9)]]
    dataset = ClassBalancedDataset(paths, y, 2, 5, seed=0, loader=loader)
    with pytest.raises(ValueError, match=r"one shape.*'odd'"):
        dataset[0]


def test_bad_paths_and_loaders_are_refused():
    y = np.arange(4) % 2
    with pytest.raises(TypeError, match="callable"):
        PairDataset(["a", "b", "c", "d"], y, loader="np.load")
    with pytest.raises(TypeError, match="sequence of file paths"):
        PairDataset("abcd", y, loader=np.load)
    with pytest.raises(TypeError, match="element 3"):
        PairDataset(["a", "b", "c", 3], y, loader=np.load)
    with pytest.raises(ValueError, match="empty"):
        PairDataset([], [], loader=np.load)


# --- Bad folders and files, by name -----------------------------------------


def test_missing_or_empty_folder(tmp_path):
    with pytest.raises(ValueError, match="must be a folder"):
        PairDataset.from_directory(tmp_path / "nowhere")
    with pytest.raises(ValueError, match="No class folders"):
        PairDataset.from_directory(tmp_path)


def test_class_folder_without_images_is_named(tmp_path):
    write_folder(tmp_path, classes=("a", "b"), jpeg=False)
    (tmp_path / "empty_class").mkdir()
    (tmp_path / "empty_class" / "readme.txt").write_text("no images here")
    with pytest.raises(ValueError, match=r"\['empty_class'\].*no image"):
        TripletDataset.from_directory(tmp_path)


def test_unknown_class_names_are_named(tmp_path):
    write_folder(tmp_path, classes=("a", "b"), jpeg=False)
    with pytest.raises(ValueError, match=r"\['zebra'\]"):
        PairDataset.from_directory(tmp_path, class_names=["a", "zebra"])


@pytest.mark.parametrize("kind", ["pairs", "triplets", "balanced"])
def test_class_with_too_few_images_is_named_by_folder(tmp_path, kind):
    write_folder(tmp_path, classes=("a", "b", "c"), jpeg=False)
    lonely = tmp_path / "lonely"
    lonely.mkdir()
    Image.fromarray(np.zeros((4, 4, 3), np.uint8)).save(lonely / "only.png")
    with pytest.raises(ValueError, match=r"only one.*'lonely'"):
        KINDS[kind](tmp_path)


@pytest.mark.parametrize(
    "content, problem",
    [(b"this is not an image", "corrupt"), (None, "unreadable")],
)
def test_bad_file_is_named_when_its_batch_is_read(tmp_path, content, problem):
    write_folder(tmp_path, classes=("a", "b"), per_class=1, jpeg=False)
    bad = tmp_path / "a" / "bad.png"
    if content is None:
        # A link to nothing: listed in the folder, but it cannot be opened.
        os.symlink(tmp_path / "gone.png", bad)
    else:
        bad.write_bytes(content)
    # Every batch of a 2 x 4 dataset holds all four images of class "a".
    dataset = ClassBalancedDataset.from_directory(
        tmp_path, image_size=(4, 4), classes_per_batch=2, samples_per_class=4
    )
    with pytest.raises(ValueError, match=str(bad).replace("\\", "\\\\")):
        dataset[0]


def test_truncated_image_is_named(tmp_path):
    write_folder(tmp_path, classes=("a", "b"), per_class=1, jpeg=False)
    whole = (tmp_path / "a" / "0.png").read_bytes()
    (tmp_path / "a" / "cut.png").write_bytes(whole[: len(whole) // 2])
    dataset = ClassBalancedDataset.from_directory(
        tmp_path, image_size=(4, 4), classes_per_batch=2, samples_per_class=4
    )
    with pytest.raises(ValueError, match=r"cut\.png"):
        dataset[0]


def test_bad_loader_arguments(tmp_path):
    with pytest.raises(ValueError, match="image_size"):
        ImageLoader(image_size=(3, 4, 5))
    with pytest.raises(ValueError, match="color_mode"):
        ImageLoader(color_mode="cmyk")
    with pytest.raises(ValueError, match="interpolation"):
        ImageLoader(interpolation="lanczos3")
    write_folder(tmp_path, classes=("a", "b"), jpeg=False)
    with pytest.raises(TypeError, match="follow_links"):
        PairDataset.from_directory(tmp_path, follow_links="yes")


def test_class_names_must_index_integer_labels():
    with pytest.raises(ValueError, match="class_names"):
        PairDataset(np.zeros((4, 1)), np.array([0, 1, 2, 2]), class_names=["a", "b"])


def test_config_rebuilds_a_file_backed_augmented_dataset(tmp_path):
    write_folder(tmp_path, classes=("a", "b", "c"), jpeg=False)

    def shift(images, seed):
        return images + np.float32(seed % 7)

    dataset = ClassBalancedDataset.from_directory(
        tmp_path, image_size=(5, 6), classes_per_batch=2, samples_per_class=3,
        seed=4, augment=shift, views=2,
    )  # fmt: skip
    config = dataset.get_config()
    assert config["class_names"] == ["a", "b", "c"] and config["views"] == 2
    labels = np.repeat(np.arange(3), 9).astype(np.int32)
    rebuilt = ClassBalancedDataset(dataset.x, labels, **config)
    for index in range(len(dataset)):
        for a, b in zip(dataset[index], rebuilt[index]):
            np.testing.assert_array_equal(a, b)


def test_missing_pillow_is_named_when_an_image_is_read(tmp_path, monkeypatch):
    from keras_siamese.data import images

    real_import = images.importlib.import_module

    def without_pillow(name, *args):
        if name.startswith("PIL"):
            raise ImportError("No module named 'PIL'")
        return real_import(name, *args)

    loader = ImageLoader((2, 2))  # constructing needs no Pillow
    monkeypatch.setattr(images.importlib, "import_module", without_pillow)
    with pytest.raises(ImportError, match=r"keras-siamese\[images\]"):
        loader(tmp_path / "x.png")


# --- Decoders ---------------------------------------------------------------


def write_every_kind(root):
    """One file of every format, mode and JPEG variant the decoders meet.

    Returns `(paths OpenCV decodes, paths left to Pillow)`.
    """
    rng = np.random.default_rng(3)
    fast, slow = [], []
    for k, (height, width) in enumerate([(7, 11), (23, 16), (40, 33)]):
        noise = rng.integers(0, 256, (height, width, 4), dtype=np.uint8)
        ramp = np.cumsum(rng.integers(-9, 10, (height, width, 4)), axis=1)
        pixels = noise if k % 2 else np.clip(ramp + 128, 0, 255).astype(np.uint8)
        rgba = Image.fromarray(pixels, "RGBA")
        for mode in ("L", "LA", "RGB", "RGBA"):
            fast.append(root / f"{k}{mode}.png")
            rgba.convert(mode).save(fast[-1])
        for mode in ("L", "RGB"):
            for quality, subsampling, progressive in [
                (95, 0, False), (75, 2, False), (50, 1, True), (90, 2, True)
            ]:  # fmt: skip
                fast.append(root / f"{k}{mode}{quality}{subsampling}.jpg")
                rgba.convert(mode).save(
                    fast[-1], quality=quality, subsampling=subsampling,
                    progressive=progressive,
                )  # fmt: skip
        # Stored as it is, shown turned: the pixels are the stored ones.
        exif = Image.Exif()
        exif[0x0112] = 6
        fast.append(root / f"{k}turned.jpg")
        rgba.convert("RGB").save(fast[-1], exif=exif)
        for name, image in [
            ("P.png", rgba.convert("RGB").convert("P")),
            ("I16.png", rgba.convert("I;16")),
            ("1.png", rgba.convert("1")),
            ("CMYK.jpg", rgba.convert("CMYK")),
            (".gif", rgba.convert("RGB").convert("P")),
            (".bmp", rgba.convert("RGB")),
        ]:
            slow.append(root / f"{k}{name}")
            image.save(slow[-1])
    return fast, slow


@pytest.mark.parametrize("color_mode", ["grayscale", "rgb", "rgba"])
def test_opencv_decodes_pillows_pixels(tmp_path, color_mode):
    cv2 = pytest.importorskip("cv2")
    from keras_siamese.data import images

    fast, slow = write_every_kind(tmp_path)
    for path in fast + slow:
        want = images.decode_image(path, color_mode, decoder="pillow")
        got = images.decode_image(path, color_mode, decoder="opencv")
        assert got.dtype == np.uint8 and got.shape == want.shape, path
        np.testing.assert_array_equal(got, want, err_msg=str(path))
    # The fast path is taken where it is meant to be, and only there.
    for path in fast:
        assert images._decode_with_opencv(cv2, path, color_mode) is not None, path
    for path in slow:
        assert images._decode_with_opencv(cv2, path, color_mode) is None, path


def test_opencv_leaves_bad_files_to_pillow_which_names_them(tmp_path):
    pytest.importorskip("cv2")
    from keras_siamese.data import images

    fast, _ = write_every_kind(tmp_path)
    png = fast[2].read_bytes()
    # The signature, header and end are whole; the image data between is not.
    broken = png[:40] + bytes(len(png) - 52) + png[-12:]
    (tmp_path / "broken.png").write_bytes(broken)
    (tmp_path / "cut.png").write_bytes(png[: len(png) // 2])
    for name in ("broken.png", "cut.png", "missing.png"):
        with pytest.raises(ValueError, match=name.replace(".", r"\.")):
            images.decode_image(tmp_path / name, "rgb", decoder="opencv")


def test_decoder_is_checked_and_opencv_required_by_name(tmp_path, monkeypatch):
    from keras_siamese.data import images

    with pytest.raises(ValueError, match="decoder"):
        ImageLoader(decoder="cv2")
    with pytest.raises(ValueError, match="decoder"):
        ClassBalancedDataset.from_directory(
            write_folder(tmp_path, jpeg=False), decoder="turbo"
        )
    path = tmp_path / "a" / "0.png"
    want = images.decode_image(path, "rgb", decoder="pillow")
    monkeypatch.setitem(__import__("sys").modules, "cv2", None)
    images._opencv.cache_clear()
    try:
        loader = ImageLoader(want.shape[:2], decoder="auto")
        np.testing.assert_array_equal(loader(path), want.astype(np.float32))
        with pytest.raises(ImportError, match=r"keras-siamese\[opencv\]"):
            ImageLoader(decoder="opencv")(path)
    finally:
        images._opencv.cache_clear()


@pytest.mark.parametrize("decoder", ["pillow", "opencv"])
def test_from_directory_batches_are_the_same_whatever_the_decoder(tmp_path, decoder):
    if decoder == "opencv":
        pytest.importorskip("cv2")
    write_folder(tmp_path, classes=("a", "b", "c"))
    batches = {
        name: ClassBalancedDataset.from_directory(
            tmp_path,
            image_size=(9, 7),
            classes_per_batch=2,
            samples_per_class=3,
            seed=5,
            decoder=name,
        )
        for name in ("auto", decoder)
    }
    assert batches[decoder].loader.decoder == decoder
    for index in range(len(batches["auto"])):
        for a, b in zip(batches["auto"][index], batches[decoder][index]):
            np.testing.assert_array_equal(a, b)
