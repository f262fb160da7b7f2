"""Folders of image files: indexing, decoding and resizing, in NumPy.

The conventions are those of `keras.utils.image_dataset_from_directory`: one
sub-folder per class, classes in alphanumeric order (or the order given),
files in the order of a sorted walk of each class folder, the formats
`.bmp .gif .jpeg .jpg .png`, and images resized to float32 pixels in
`[0, 255]`. The resize reproduces TensorFlow's `tf.image.resize` (half-pixel
centres, no antialiasing) in NumPy, so that a file gives the same pixels on
every backend as `image_dataset_from_directory` gives on TensorFlow.

Pillow is imported when the first image is decoded, never at import.
"""

from __future__ import annotations

import importlib
import os
from collections.abc import Sequence
from typing import Any

import numpy as np

from keras_siamese._checks import check_bool, check_choice, check_positive_int

#: The file extensions `image_dataset_from_directory` reads (any case).
IMAGE_FORMATS = (".bmp", ".gif", ".jpeg", ".jpg", ".png")
_COLOR_MODES = {"grayscale": ("L", 1), "rgb": ("RGB", 3), "rgba": ("RGBA", 4)}
_INTERPOLATIONS = ("bilinear", "nearest", "bicubic", "area")
# TensorFlow's bicubic kernel reads its weights from a table of this many steps.
_CUBIC_STEPS = 1024


def _pil_image() -> Any:
    try:
        return importlib.import_module("PIL.Image")
    except ImportError as err:
        raise ImportError(
            "Reading image files needs Pillow: `pip install keras-siamese[images]`."
        ) from err


def index_directory(
    directory: Any,
    class_names: Sequence[str] | None = None,
    follow_links: bool = False,
) -> tuple[list[str], np.ndarray, list[str]]:
    """Image files of a folder with one sub-folder per class.

    Args:
        directory: the folder; each of its sub-folders (except hidden ones,
            whose names start with a dot) holds the images of one class,
            possibly in nested folders.
        class_names: the sub-folders to use, in the order of their labels;
            defaults to all of them, sorted.
        follow_links: whether to descend into folders that are symbolic
            links.

    Returns:
        `(paths, labels, class_names)`: file paths class by class, each
        class's files in the order of a sorted walk; int32 labels indexing
        `class_names`.

    Raises:
        ValueError: if `directory` is not a folder, `class_names` names a
            folder that is not there, the folder has no class sub-folders, or
            a class folder holds no image.
    """
    directory = os.fspath(directory)
    if not os.path.isdir(directory):
        raise ValueError(f"`directory` must be a folder; got {directory!r}.")
    folders = [
        name
        for name in sorted(os.listdir(directory))
        if os.path.isdir(os.path.join(directory, name)) and not name.startswith(".")
    ]
    if class_names is None:
        class_names = folders
    else:
        if isinstance(class_names, str):
            raise TypeError("`class_names` must be a list of folder names.")
        class_names = [str(name) for name in class_names]
        unknown = sorted(set(class_names) - set(folders))
        if unknown:
            raise ValueError(
                f"`class_names` names folders that are not in {directory!r}: "
                f"{unknown}; its class folders are {folders}."
            )
    if not class_names:
        raise ValueError(
            f"No class folders found in directory {directory!r}: it must hold one "
            f"sub-folder of images per class. Allowed formats: {IMAGE_FORMATS}."
        )
    paths: list[str] = []
    labels: list[int] = []
    empty = []
    for label, name in enumerate(class_names):
        files = list(_class_files(os.path.join(directory, name), follow_links))
        if not files:
            empty.append(name)
        paths += files
        labels += [label] * len(files)
    if empty:
        raise ValueError(
            f"Class folder(s) {empty} of {directory!r} hold no image. Allowed "
            f"formats: {IMAGE_FORMATS}."
        )
    return paths, np.asarray(labels, dtype=np.int32), list(class_names)


def _class_files(folder: str, follow_links: bool) -> Any:
    walk = os.walk(folder, followlinks=follow_links)
    for root, _, files in sorted(walk, key=lambda entry: entry[0]):
        for name in sorted(files):
            if name.lower().endswith(IMAGE_FORMATS):
                yield os.path.join(root, name)


class ImageLoader:
    """Reads one image file as float32 pixels, as `image_dataset_from_directory`.

    The image is decoded with Pillow (its first frame for a GIF), converted
    to the colour mode, and resized to `image_size` with TensorFlow's
    resizing arithmetic (half-pixel centres, no antialiasing) done in NumPy:
    the pixels equal those of `keras.utils.image_dataset_from_directory` for
    the same file and arguments, on every backend. Instances are picklable,
    so they can be used by worker processes.

    Args:
        image_size: `(height, width)` of the result, or one integer for a
            square.
        color_mode: `"rgb"` (3 channels), `"rgba"` (4) or `"grayscale"` (1).
        interpolation: `"bilinear"`, `"nearest"`, `"bicubic"` or `"area"`.
        crop_to_aspect_ratio: resize the largest centred crop with the
            aspect ratio of `image_size` instead of the whole image.

    Returns:
        Called with a path, a float32 array `(height, width, channels)` with
        values in `[0, 255]`.

    Raises:
        ValueError: for a bad size, colour mode or interpolation; when
            called, for a file that cannot be read or decoded (named).
        ImportError: when called, if Pillow is not installed.

    Examples:
        >>> import numpy as np, os, tempfile
        >>> from PIL import Image
        >>> path = os.path.join(tempfile.mkdtemp(), "red.png")
        >>> Image.fromarray(np.full((4, 6, 3), [255, 0, 0], "uint8")).save(path)
        >>> pixels = ImageLoader(image_size=(2, 3))(path)
        >>> pixels.shape, pixels.dtype, pixels[0, 0].tolist()
        ((2, 3, 3), dtype('float32'), [255.0, 0.0, 0.0])
    """

    def __init__(
        self,
        image_size: Any = (256, 256),
        color_mode: str = "rgb",
        interpolation: str = "bilinear",
        crop_to_aspect_ratio: bool = False,
    ) -> None:
        if isinstance(image_size, (int, np.integer)) and not isinstance(
            image_size, bool
        ):
            image_size = (image_size, image_size)
        if not isinstance(image_size, (tuple, list)) or len(image_size) != 2:
            raise ValueError(
                "`image_size` must be an integer or a (height, width) pair; got "
                f"{image_size!r}."
            )
        self.image_size = tuple(
            check_positive_int(side, "image_size") for side in image_size
        )
        self.color_mode = check_choice(color_mode, tuple(_COLOR_MODES), "color_mode")
        if not isinstance(interpolation, str):
            raise TypeError(f"`interpolation` must be a string; got {interpolation!r}.")
        self.interpolation = check_choice(
            interpolation.lower(), _INTERPOLATIONS, "interpolation"
        )
        self.crop_to_aspect_ratio = check_bool(
            crop_to_aspect_ratio, "crop_to_aspect_ratio"
        )

    @property
    def shape(self) -> tuple[int, int, int]:
        """`(height, width, channels)` of every image it returns."""
        return (*self.image_size, _COLOR_MODES[self.color_mode][1])

    def __call__(self, path: Any) -> np.ndarray:
        return self.load_batch([path])[0]

    def load_batch(self, paths: Sequence[Any]) -> np.ndarray:
        """The images of several files, stacked: `(len(paths), *shape)`.

        The pixels are those of calling the loader on each path: images of
        one source size are resized together, and not at all when that size
        is `image_size` already.

        Raises:
            ValueError: naming the first file that cannot be read.

        Examples:
            >>> import numpy as np, os, tempfile
            >>> from PIL import Image
            >>> folder = tempfile.mkdtemp()
            >>> for name, side in [("a.png", 4), ("b.png", 2)]:
            ...     pixels = np.full((side, side), 100, "uint8")
            ...     Image.fromarray(pixels).save(os.path.join(folder, name))
            >>> paths = [os.path.join(folder, name) for name in ("a.png", "b.png")]
            >>> batch = ImageLoader(2, "grayscale").load_batch(paths)
            >>> batch.shape, float(batch.min()), float(batch.max())
            ((2, 2, 2, 1), 100.0, 100.0)
        """
        decoded = []
        for path in paths:
            pixels = decode_image(path, self.color_mode)
            if self.crop_to_aspect_ratio:
                pixels = center_crop_to_aspect_ratio(pixels, self.image_size)
            decoded.append(pixels)
        result = np.empty((len(decoded), *self.shape), np.float32)
        by_shape: dict = {}
        for position, pixels in enumerate(decoded):
            by_shape.setdefault(pixels.shape, []).append(position)
        for positions in by_shape.values():
            images = np.stack([decoded[position] for position in positions])
            result[positions] = resize(images, self.image_size, self.interpolation)
        return result

    def get_config(self) -> dict:
        return {
            "image_size": self.image_size,
            "color_mode": self.color_mode,
            "interpolation": self.interpolation,
            "crop_to_aspect_ratio": self.crop_to_aspect_ratio,
        }

    def __repr__(self) -> str:
        arguments = ", ".join(f"{k}={v!r}" for k, v in self.get_config().items())
        return f"ImageLoader({arguments})"


def decode_image(path: Any, color_mode: str = "rgb") -> np.ndarray:
    """The uint8 pixels `(height, width, channels)` of one image file.

    Raises:
        ValueError: naming the file, if it cannot be opened or decoded.
    """
    image_module = _pil_image()
    mode, channels = _COLOR_MODES[color_mode]
    try:
        with image_module.open(path) as image:
            image.seek(0)
            if image.mode != mode:
                image = image.convert(mode)
            pixels = np.asarray(image)
    except FileNotFoundError as err:
        raise ValueError(f"Image file {os.fspath(path)!r} does not exist.") from err
    except (OSError, SyntaxError, ValueError) as err:
        # Pillow raises OSError (UnidentifiedImageError) for a file it cannot
        # identify or that is truncated, and SyntaxError for some corrupt headers.
        raise ValueError(f"Cannot read image file {os.fspath(path)!r}: {err}") from err
    return pixels.reshape(*pixels.shape[:2], channels)


def center_crop_to_aspect_ratio(pixels: np.ndarray, size: Sequence[int]) -> np.ndarray:
    """The largest centred crop of `pixels` with the aspect ratio of `size`.

    The arithmetic is `keras.preprocessing.image.smart_resize`'s.
    """
    height, width = pixels.shape[:2]
    target_height, target_width = size
    crop_height = max(min(height, int(float(width * target_height) / target_width)), 1)
    crop_width = max(min(width, int(float(height * target_width) / target_height)), 1)
    top = int(float(height - crop_height) / 2)
    left = int(float(width - crop_width) / 2)
    return pixels[top : top + crop_height, left : left + crop_width]


def resize(pixels: np.ndarray, size: Sequence[int], interpolation: str) -> np.ndarray:
    """Resize `(..., height, width, channels)` pixels to float32 as `tf.image.resize`.

    TensorFlow's kernels (`ResizeBilinear`, `ResizeNearestNeighbor` and
    `ResizeBicubic` with half-pixel centres, `ResizeArea`) in float32,
    operation for operation, so the results agree to the last bit. Leading
    axes are a batch: each image is resized as it would be alone. An image
    already of `size` is returned as float32 pixels, which every kernel
    gives at scale 1.
    """
    height, width = pixels.shape[-3:-1]
    out_height, out_width = size
    values = pixels.astype(np.float32)
    if (height, width) == (out_height, out_width):
        return values
    if interpolation == "nearest":
        rows = _nearest(height, out_height)
        columns = _nearest(width, out_width)
        return np.ascontiguousarray(
            np.take(np.take(values, rows, axis=-3), columns, axis=-2)
        )
    if interpolation == "bicubic":
        return _bicubic(values, size)
    if interpolation == "area":
        return _area(values, size)
    # Along the width first, on every input row, then along the height: each
    # output pixel goes through TensorFlow's three lerps in the same order.
    left, right, x_lerp = _bilinear(width, out_width)
    lefts = np.take(values, left, axis=-2)
    across = lefts + (np.take(values, right, axis=-2) - lefts) * x_lerp[:, None]
    top, bottom, y_lerp = _bilinear(height, out_height)
    tops = np.take(across, top, axis=-3)
    return tops + (np.take(across, bottom, axis=-3) - tops) * y_lerp[:, None, None]


def _cubic_table() -> np.ndarray:
    """Keys' cubic kernel (a = -0.5) at `i / steps`: `[i, 0]` at distance
    `i / steps`, `[i, 1]` at `1 + i / steps`, rounded as TensorFlow rounds them
    (computed in float64 from float32 positions, stored as float32)."""
    a = -0.5
    table = np.empty((_CUBIC_STEPS + 1, 2), np.float32)
    for i in range(_CUBIC_STEPS + 1):
        x = float(np.float32(i / _CUBIC_STEPS))
        table[i, 0] = ((a + 2) * x - (a + 3)) * x * x + 1
        x = float(np.float32(x + 1.0))
        table[i, 1] = ((a * x - 5 * a) * x + 8 * a) * x - 4 * a
    return table


_CUBIC_TABLE = _cubic_table()


def _cubic(in_size: int, out_size: int) -> tuple[np.ndarray, np.ndarray]:
    """Per output position, its four input positions and their weights."""
    sample = (np.arange(out_size, dtype=np.float32) + np.float32(0.5)) * _scale(
        in_size, out_size
    ) - np.float32(0.5)
    start = np.floor(sample).astype(np.int64)
    step = np.rint(
        (sample - start.astype(np.float32)) * np.float32(_CUBIC_STEPS)
    ).astype(np.int64)
    table = _CUBIC_TABLE
    back = _CUBIC_STEPS - step
    weights = np.stack(
        [table[step, 1], table[step, 0], table[back, 0], table[back, 1]], axis=1
    )
    positions = start[:, None] + np.arange(-1, 3)
    # Positions outside the image get no weight, and the others are
    # renormalised (TensorFlow's half-pixel bicubic).
    weights = np.where((positions >= 0) & (positions < in_size), weights, 0)
    weights = weights.astype(np.float32)
    total = ((weights[:, 0] + weights[:, 1]) + weights[:, 2]) + weights[:, 3]
    usable = np.abs(total) >= np.float32(1000) * np.finfo(np.float32).tiny
    inverse = np.float32(1) / np.where(usable, total, np.float32(1))
    weights = np.where(usable[:, None], weights * inverse[:, None], weights)
    return np.clip(positions, 0, in_size - 1), weights.astype(np.float32)


def _bicubic(values: np.ndarray, size: Sequence[int]) -> np.ndarray:
    # Along the height first, then the width, each a left-to-right sum of
    # four products: TensorFlow's order.
    rows, row_weights = _cubic(values.shape[-3], size[0])
    columns, column_weights = _cubic(values.shape[-2], size[1])
    down = [
        np.take(values, rows[:, k], axis=-3) * row_weights[:, k, None, None]
        for k in range(4)
    ]
    across = ((down[0] + down[1]) + down[2]) + down[3]
    parts = [
        np.take(across, columns[:, k], axis=-2) * column_weights[None, :, k, None]
        for k in range(4)
    ]
    return ((parts[0] + parts[1]) + parts[2]) + parts[3]


def _area_cells(in_size: int, out_size: int) -> tuple[np.ndarray, np.ndarray]:
    """Per output position, the input cells it covers and their weights.

    Output position `o` covers `[o * s, (o + 1) * s)` of the input, `s` the
    scale; each cell's weight is the length it shares with that span, in
    float32 as TensorFlow computes it. Rows are padded with weight 0.
    """
    scale = _scale(in_size, out_size)
    lows = np.arange(out_size, dtype=np.float32) * scale
    highs = np.arange(1, out_size + 1, dtype=np.float32) * scale
    firsts = np.floor(lows).astype(np.int64)
    counts = np.ceil(highs).astype(np.int64) - firsts
    cells = firsts[:, None] + np.arange(counts.max())
    edges = cells.astype(np.float32)
    after = edges + np.float32(1)
    inside = np.where(after > highs[:, None], highs[:, None] - edges, np.float32(1))
    straddles = np.where(after > highs[:, None], scale, after - lows[:, None])
    weights = np.where(edges < lows[:, None], straddles, inside).astype(np.float32)
    weights = np.where(np.arange(counts.max()) < counts[:, None], weights, 0)
    return np.clip(cells, 0, in_size - 1), weights.astype(np.float32)


def _area(values: np.ndarray, size: Sequence[int]) -> np.ndarray:
    # TensorFlow sums each input row's covered cells first (the first and
    # last scaled, those between added as they are), then the rows, each
    # scaled, in order; padding terms add exact zeros.
    height, width = values.shape[-3:-1]
    rows, row_weights = _area_cells(height, size[0])
    columns, column_weights = _area_cells(width, size[1])
    across = np.take(values, columns[:, 0], axis=-2) * column_weights[:, 0, None]
    for k in range(1, columns.shape[1]):
        term = np.take(values, columns[:, k], axis=-2)
        weight = column_weights[:, k, None]
        across = across + np.where(weight == 1, term, term * weight)
    total = np.zeros((*values.shape[:-3], *size, values.shape[-1]), np.float32)
    for k in range(rows.shape[1]):
        total = (
            total + np.take(across, rows[:, k], axis=-3) * row_weights[:, k, None, None]
        )
    scale = np.float32(1.0 / float(_scale(height, size[0]) * _scale(width, size[1])))
    return total * scale


def _scale(in_size: int, out_size: int) -> np.float32:
    return np.float32(in_size) / np.float32(out_size)


def _nearest(in_size: int, out_size: int) -> np.ndarray:
    centres = (np.arange(out_size, dtype=np.float32) + np.float32(0.5)) * _scale(
        in_size, out_size
    )
    return np.clip(np.floor(centres).astype(np.int64), 0, in_size - 1)


def _bilinear(in_size: int, out_size: int) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
    sample = (np.arange(out_size, dtype=np.float32) + np.float32(0.5)) * _scale(
        in_size, out_size
    ) - np.float32(0.5)
    floor = np.floor(sample)
    low = np.maximum(floor, 0).astype(np.int64)
    high = np.minimum(np.ceil(sample), in_size - 1).astype(np.int64)
    return low, high, (sample - floor).astype(np.float32)
