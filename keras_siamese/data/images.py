"""Folders of image files: indexing, decoding and resizing, in NumPy.

The conventions are those of `keras.utils.image_dataset_from_directory`: one
sub-folder per class, classes in alphanumeric order (or the order given),
files in the order of a sorted walk of each class folder, the formats
`.bmp .gif .jpeg .jpg .png`, and images resized to float32 pixels in
`[0, 255]`. The resize reproduces TensorFlow's `tf.image.resize` (half-pixel
centres, no antialiasing) in NumPy, so that a file gives the same pixels on
every backend as `image_dataset_from_directory` gives on TensorFlow.

Files are decoded by Pillow, or by OpenCV where it is installed and gives
the same pixels (8-bit PNG and JPEG files; `ImageLoader`'s `decoder`).
Pillow and OpenCV are imported when the first image is decoded, never at
import.
"""

from __future__ import annotations

import functools
import importlib
import io
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
_DECODERS = ("auto", "pillow", "opencv")

_PNG_SIGNATURE = b"\x89PNG\r\n\x1a\n"
_PNG_END = b"\x00\x00\x00\x00IEND\xaeB`\x82"
_JPEG_START = b"\xff\xd8\xff"
_JPEG_END = b"\xff\xd9"
# JPEG start-of-frame markers (baseline, progressive, lossless, arithmetic).
_SOF_MARKERS = frozenset(range(0xC0, 0xD0)) - {0xC4, 0xC8, 0xCC}
#: The bytes `png_colour_type` and `is_whole_jpeg` look at: a file's first
#: `HEAD_BYTES` and last `TAIL_BYTES`.
HEAD_BYTES, TAIL_BYTES = 26, 12
# Colour to grayscale as Pillow converts (ITU-R 601-2 luma in 16-bit fixed
# point, rounded): the decoders' own conversions differ.
LUMA_WEIGHTS = (19595, 38470, 7471)


def _pil_image() -> Any:
    try:
        return importlib.import_module("PIL.Image")
    except ImportError as err:
        raise ImportError(
            "Reading image files needs Pillow: `pip install keras-siamese[images]`."
        ) from err


@functools.cache
def _opencv(required: bool) -> Any:
    """The `cv2` module; `None` if it is not installed and not `required`."""
    try:
        return importlib.import_module("cv2")
    except ImportError as err:
        if not required:
            return None
        raise ImportError(
            "`decoder='opencv'` needs OpenCV: "
            "`pip install keras-siamese[opencv]` (opencv-python-headless)."
        ) from err


def png_colour_type(head: bytes, tail: bytes) -> int | None:
    """The colour type of an 8-bit PNG from its first and last bytes.

    Args:
        head: the file's first `HEAD_BYTES` bytes (its `IHDR` chunk).
        tail: its last `TAIL_BYTES` bytes (its `IEND` chunk).

    Returns:
        0 (grey), 2 (RGB), 4 (grey + alpha) or 6 (RGBA) for a PNG of 8
        bits per channel that ends with its `IEND` chunk; `None` for
        anything else (a palette or 16-bit PNG, another format, a truncated
        file).
    """
    if (
        len(head) >= HEAD_BYTES
        and head.startswith(_PNG_SIGNATURE)
        and head[12:16] == b"IHDR"
        and head[24] == 8
        and head[25] in (0, 2, 4, 6)
        and tail == _PNG_END
    ):
        return head[25]
    return None


def is_whole_jpeg(head: bytes, tail: bytes) -> bool:
    """Whether a file's first bytes and last `TAIL_BYTES` bytes are a JPEG's
    start and end markers (a file shorter than that is not taken)."""
    return (
        head.startswith(_JPEG_START)
        and len(tail) == TAIL_BYTES
        and tail.endswith(_JPEG_END)
    )


def jpeg_components(file: Any) -> int | None:
    """The number of colour components in an open JPEG file's frame header.

    `None` if the header is not among the first 64 segments.
    """
    file.seek(2)
    for _ in range(64):
        marker = file.read(2)
        if len(marker) < 2 or marker[0] != 0xFF:
            return None
        if marker[1] in _SOF_MARKERS:
            header = file.read(8)
            return header[7] if len(header) == 8 else None
        length = file.read(2)
        if len(length) < 2:
            return None
        file.seek(int.from_bytes(length, "big") - 2, os.SEEK_CUR)
    return None


def to_luma(pixels: np.ndarray) -> np.ndarray:
    """uint8 RGB `(..., 3)` to grey `(..., 1)` with Pillow's integer weights."""
    weighted = pixels.astype(np.int32) @ np.asarray(LUMA_WEIGHTS, np.int32)
    return ((weighted + 0x8000) >> 16).astype(np.uint8)[..., None]


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

    The image is decoded (the first frame of a GIF), converted to the
    colour mode as Pillow converts, and resized to `image_size` with
    TensorFlow's resizing arithmetic (half-pixel centres, no antialiasing)
    done in NumPy: the pixels equal those of
    `keras.utils.image_dataset_from_directory` for the same file and
    arguments, on every backend (JPEG files aside, whose decoders round
    differently by a few levels). Instances are picklable, so they can be
    used by worker processes.

    The decoder changes the speed, never the pixels: OpenCV decodes an
    8-bit PNG or a one- or three-component JPEG to exactly Pillow's pixels
    (the same libpng and libjpeg arithmetic, with the JPEG's EXIF
    orientation ignored as Pillow and TensorFlow ignore it), in about half
    of Pillow's time for a small image and without holding Python's GIL,
    so `workers` threads decode in parallel. Other files (GIF, BMP, palette
    or 16-bit PNG, CMYK JPEG) and any file OpenCV cannot decode go to
    Pillow, which names a file it cannot read either.

    Args:
        image_size: `(height, width)` of the result, or one integer for a
            square.
        color_mode: `"rgb"` (3 channels), `"rgba"` (4) or `"grayscale"` (1).
        interpolation: `"bilinear"`, `"nearest"`, `"bicubic"` or `"area"`.
        crop_to_aspect_ratio: resize the largest centred crop with the
            aspect ratio of `image_size` instead of the whole image.
        decoder: `"auto"` (OpenCV where installed, else Pillow), `"pillow"`
            or `"opencv"` (OpenCV required).

    Returns:
        Called with a path, a float32 array `(height, width, channels)` with
        values in `[0, 255]`.

    Raises:
        ValueError: for a bad size, colour mode, interpolation or decoder;
            when called, for a file that cannot be read or decoded (named).
        ImportError: when called, if Pillow is not installed (or OpenCV,
            with `decoder="opencv"`).

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
        decoder: str = "auto",
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
        self.decoder = check_choice(decoder, _DECODERS, "decoder")

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
            pixels = decode_image(path, self.color_mode, self.decoder)
            if self.crop_to_aspect_ratio:
                pixels = center_crop_to_aspect_ratio(pixels, self.image_size)
            decoded.append(pixels)
        result = np.empty((len(decoded), *self.shape), np.float32)
        by_shape: dict = {}
        for position, pixels in enumerate(decoded):
            if pixels.shape == self.shape:
                # Cast into place: at scale 1 every kernel gives the pixels.
                result[position] = pixels
            else:
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
            "decoder": self.decoder,
        }

    def __repr__(self) -> str:
        arguments = ", ".join(f"{k}={v!r}" for k, v in self.get_config().items())
        return f"ImageLoader({arguments})"


def decode_image(
    path: Any, color_mode: str = "rgb", decoder: str = "auto"
) -> np.ndarray:
    """The uint8 pixels `(height, width, channels)` of one image file.

    Pillow's pixels, whichever `decoder` (`ImageLoader` says which files
    OpenCV decodes).

    Raises:
        ValueError: naming the file, if it cannot be opened or decoded.
    """
    if decoder != "pillow":
        opencv = _opencv(required=decoder == "opencv")
        if opencv is not None:
            pixels = _decode_with_opencv(opencv, path, color_mode)
            if pixels is not None:
                return pixels
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


def _decode_with_opencv(cv2: Any, path: Any, color_mode: str) -> np.ndarray | None:
    """Pillow's pixels of an 8-bit PNG or a 1- or 3-component JPEG, by OpenCV.

    `None` for any other file, or one OpenCV cannot decode: Pillow then
    reads it (and names the problem).
    """
    try:
        data = np.fromfile(path, np.uint8)
    except (OSError, ValueError):
        return None
    head, tail = data[:HEAD_BYTES].tobytes(), data[-TAIL_BYTES:].tobytes()
    colour_type = png_colour_type(head, tail)
    if colour_type is not None:
        grey, alpha = colour_type == 0, colour_type in (4, 6)
    elif is_whole_jpeg(head, tail):
        components = jpeg_components(io.BytesIO(data))
        if components not in (1, 3):
            return None
        grey, alpha = components == 1, False
    else:
        return None
    # Pixels as stored: OpenCV would otherwise turn a JPEG by its EXIF tag.
    keep = cv2.IMREAD_IGNORE_ORIENTATION
    if color_mode == "grayscale" and grey:
        flags = cv2.IMREAD_GRAYSCALE | keep
    elif color_mode == "rgba" and alpha:
        flags = cv2.IMREAD_UNCHANGED
    else:
        flags = cv2.IMREAD_COLOR | keep
    pixels = cv2.imdecode(data, flags)
    if pixels is None or pixels.dtype != np.uint8 or pixels.size == 0:
        return None
    if pixels.ndim == 2:
        pixels = pixels[..., None]
    elif pixels.shape[-1] == 4:
        pixels = pixels[..., [2, 1, 0, 3]]
    elif pixels.shape[-1] == 3:
        pixels = pixels[..., ::-1]
        if color_mode == "grayscale":
            pixels = to_luma(pixels)
        elif color_mode == "rgba":
            opaque = np.full((*pixels.shape[:2], 1), 255, np.uint8)
            pixels = np.concatenate([pixels, opaque], axis=-1)
    if pixels.shape[-1] != _COLOR_MODES[color_mode][1]:
        return None
    return np.ascontiguousarray(pixels)


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
