"""The `tf.data` pipeline of the sampled datasets.

Keras feeds a `keras.utils.PyDataset` to a TensorFlow model through
`tf.data.Dataset.from_generator`, one Python call per batch. The pipeline
here calls Python once per block of batches, for the block's row indices, and
gathers the rows in the graph (benchmarks/README.md, "Data path", compares
the two). It uses only the public interface of `SampledDataset`. A dataset
that reads image files with an `ImageLoader` has its files read, decoded and
resized by TensorFlow's kernels in the pipeline, to the pixels the loader
gives.

TensorFlow is imported only when a pipeline is built, never at import.
"""

from __future__ import annotations

import importlib
import os
from typing import Any

import keras
import numpy as np

from keras_siamese.data.images import decode_image
from keras_siamese.data.sampling import gather

_PNG_SIGNATURE = b"\x89PNG\r\n\x1a\n"
_PNG_END = b"\x00\x00\x00\x00IEND\xaeB`\x82"


def block_pipeline(dataset: Any) -> Any:
    """A `tf.data.Dataset` of one epoch of `dataset`'s batches.

    A dataset whose batches are not plain rows of `x` (see
    `batches_are_rows`) is read through `dataset[i]`, one call per batch.
    Otherwise each block of batches is drawn by one `tf.numpy_function` call (the
    dataset's own cached draw, so the batches equal `dataset[i]`), split into
    batches, and each batch's rows are gathered from tensors that hold `x`.
    The other arrays are copied into tensors at the first call and reused by
    later ones, so in-place changes to them after that are not seen. Arrays
    that are `np.memmap`s are gathered batch by batch in NumPy instead, so
    that they are never read into memory whole.

    Args:
        dataset: a `SampledDataset`.

    Returns:
        A `tf.data.Dataset` whose elements are `(inputs, targets)` in the
        structure of `dataset[i]`. Each iteration draws from the dataset's
        epoch when it reaches the block.
    """
    tf = importlib.import_module("tensorflow")
    if dataset.batches_are_image_files:
        return image_files_pipeline(tf, dataset)
    if not dataset.batches_are_rows:
        return batch_pipeline(tf, dataset)
    parts, items = dataset.num_branches, dataset.batch_size
    target_dtype = tf.as_dtype(dataset.block_rows(0)[1].dtype)

    def draw(block: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
        rows, targets = dataset.block_rows(int(block))
        return rows.astype(np.int64, copy=False), targets

    def split(block: Any) -> Any:
        rows, targets = tf.numpy_function(
            draw, [block], [tf.int64, target_dtype], stateful=True
        )
        rows = tf.transpose(tf.reshape(rows, [parts, -1, items]), [1, 0, 2])
        targets = tf.reshape(targets, [-1, items])
        return tf.data.Dataset.from_tensor_slices((rows, targets))

    # Converting `x` copies it: once per dataset, not once per `fit`,
    # `evaluate` or `predict` call.
    gathers = dataset.cache.get("tf_gathers")
    if gathers is None:
        gathers = keras.tree.map_structure(
            lambda leaf: _leaf_gather(tf, leaf, items), dataset.x
        )
        dataset.cache["tf_gathers"] = gathers

    def batch(rows: Any, targets: Any) -> tuple:
        sides = [
            keras.tree.map_structure(lambda take, side=side: take(rows[side]), gathers)
            for side in range(parts)
        ]
        return dataset.pack_batch(sides, targets)

    return (
        tf.data.Dataset.range(dataset.num_blocks)
        .flat_map(split)
        .map(batch, num_parallel_calls=tf.data.AUTOTUNE, deterministic=True)
        .with_options(_options(tf))
        .prefetch(tf.data.AUTOTUNE)
    )


def _options(tf: Any, optimize: bool = False) -> Any:
    options = tf.data.Options()
    # As Keras' own array pipeline: tf.data's default graph rewrites only add
    # work to a gather (they help a pipeline of many small per-file steps),
    # and a distribution strategy shards by batch.
    options.experimental_optimization.apply_default_optimizations = optimize
    options.experimental_distribute.auto_shard_policy = (
        tf.data.experimental.AutoShardPolicy.DATA
    )
    return options


def _batch_spec(dataset: Any) -> tuple:
    """The structure of a batch, and the shape and dtype of each leaf.

    From one batch, made once per dataset (not once per `fit`, `evaluate` or
    `predict` call).
    """
    spec = dataset.cache.get("tf_batch_spec")
    if spec is None:
        batch = dataset[0]
        leaves = [np.asarray(leaf) for leaf in keras.tree.flatten(batch)]
        skeleton = keras.tree.map_structure(lambda _: None, batch)
        spec = (skeleton, [(leaf.shape, leaf.dtype) for leaf in leaves])
        dataset.cache["tf_batch_spec"] = spec
    return spec


def image_files_pipeline(tf: Any, dataset: Any) -> Any:
    """A `tf.data.Dataset` of a dataset that reads images with an `ImageLoader`.

    Python draws each batch's rows (the dataset's own draw); TensorFlow reads,
    decodes (PNG and JPEG), crops and resizes the files, batches in
    parallel. The pixels are the loader's: PNG of 8 bits per channel as
    libpng gives them, JPEG with the accurate integer DCT (Pillow's), colour
    to grayscale with Pillow's weights. Other files (GIF, BMP, palette or
    16-bit PNG, and any file that does not look whole) are decoded by the
    loader itself, which names a file it cannot read. The augmentation, if
    any, runs on each decoded batch with the seeds of `__getitem__`.
    """
    loader = dataset.loader
    structure, shapes = _batch_spec(dataset)
    dtypes = [tf.as_dtype(dtype) for _, dtype in shapes]
    parts, items = dataset.num_branches, dataset.batch_size
    paths = dataset.cache.get("tf_paths")
    if paths is None:
        paths = tf.constant([os.fsencode(path) for path in dataset.x])
        dataset.cache["tf_paths"] = paths
    decode = _decoder(tf, loader)

    def draw(index: np.ndarray) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
        epoch = dataset.epoch
        block, offset = divmod(int(index), dataset.batches_per_block)
        rows, targets = dataset.block_rows(block, epoch)
        start = offset * items
        rows = rows[:, start : start + items].astype(np.int64)
        return np.int64(epoch), rows, targets[start : start + items]

    def augment(images: np.ndarray, epoch: Any, index: Any, branch: Any) -> Any:
        augmented = dataset.augment_batch(images, int(index), int(branch), int(epoch))
        return np.asarray(augmented, dtype=dtypes[0].as_numpy_dtype)

    count = parts * items

    def files_of(index: Any) -> tuple:
        epoch, rows, targets = tf.numpy_function(
            draw,
            [index],
            [tf.int64, tf.int64, tf.as_dtype(shapes[-1][1])],
            stateful=True,
        )
        files = tf.gather(paths, tf.reshape(rows, [count]))
        # Each file carries its batch's index, epoch and targets, so that the
        # batch is whole again after the files are read one by one.
        return (
            files,
            tf.fill([count], index),
            tf.fill([count], epoch),
            tf.repeat(tf.expand_dims(targets, 0), count, axis=0),
        )

    def read(path: Any, index: Any, epoch: Any, targets: Any) -> tuple:
        return decode(path), index, epoch, targets

    def assemble(images: Any, index: Any, epoch: Any, targets: Any) -> Any:
        index, epoch, targets = index[0], epoch[0], targets[0]
        images = tf.reshape(images, [parts, items, *loader.shape])
        sides = []
        for side in range(parts):
            side_images = images[side]
            if dataset.augment is not None:
                side_images = tf.numpy_function(
                    augment,
                    [side_images, epoch, index, side],
                    dtypes[side],
                    stateful=False,
                )
            sides.append(side_images)
        leaves = [*sides, tf.tile(targets, [dataset.views])]
        for leaf, (shape, _) in zip(leaves, shapes):
            leaf.set_shape(shape)
        return keras.tree.pack_sequence_as(structure, leaves)

    # Python draws the rows of each batch; the files of all batches are read
    # one by one in parallel (as `image_dataset_from_directory` reads them),
    # then regrouped into their batches, in order.
    return (
        tf.data.Dataset.range(len(dataset))
        .map(files_of)
        .unbatch()
        .map(read, num_parallel_calls=tf.data.AUTOTUNE, deterministic=True)
        .batch(count, drop_remainder=True)
        .map(assemble, num_parallel_calls=tf.data.AUTOTUNE, deterministic=True)
        .with_options(_options(tf, optimize=True))
        .prefetch(tf.data.AUTOTUNE)
    )


def _decoder(tf: Any, loader: Any) -> Any:
    """A graph function from a file path to the loader's float32 pixels."""
    height, width = loader.image_size
    color_mode = loader.color_mode
    channels = loader.shape[-1]
    # Colour to grayscale with Pillow's integer weights: the decoders' own
    # conversions (libpng's sRGB weights, libjpeg's luma plane) differ.
    decoded_channels = 4 if channels == 4 else 3

    def to_mode(pixels: Any) -> Any:
        if channels == 4 and pixels.shape[-1] == 3:
            opaque = tf.fill(tf.shape(pixels[..., :1]), tf.constant(255, tf.uint8))
            return tf.concat([pixels, opaque], axis=-1)
        if channels != 1:
            return pixels
        weighted = tf.cast(pixels, tf.int32) * tf.constant([19595, 38470, 7471])
        luma = tf.bitwise.right_shift(
            tf.reduce_sum(weighted, -1, keepdims=True) + 0x8000, 16
        )
        return tf.cast(luma, tf.uint8)

    def with_pillow(path: np.ndarray) -> np.ndarray:
        return decode_image(os.fsdecode(path), color_mode)

    def read(path: Any) -> Any:
        contents = tf.io.read_file(path)
        # Fixed-length head and tail, padded, so that short files compare too
        # (the head padded after it is cut: the file itself is not copied).
        head = tf.strings.substr(
            tf.strings.join([tf.strings.substr(contents, 0, 26), "\0" * 26]), 0, 26
        )
        size = tf.strings.length(contents)
        tail = tf.strings.substr(contents, tf.maximum(size - 12, 0), 12)
        is_png = (
            tf.equal(tf.strings.substr(head, 0, 8), _PNG_SIGNATURE)
            & tf.equal(tf.strings.substr(head, 12, 4), b"IHDR")
            # 8 bits per channel; grey, RGB, grey + alpha or RGBA (no palette).
            & tf.equal(tf.strings.substr(head, 24, 1), b"\x08")
            & tf.reduce_any(
                tf.equal(tf.strings.substr(head, 25, 1), [b"\0", b"\2", b"\4", b"\6"])
            )
            & tf.equal(tail, _PNG_END)
        )
        is_jpeg = tf.equal(tf.strings.substr(head, 0, 3), b"\xff\xd8\xff") & tf.equal(
            tf.strings.substr(tail, 10, 2), b"\xff\xd9"
        )

        def colour_png() -> Any:
            return to_mode(tf.io.decode_png(contents, channels=decoded_channels))

        def grey_png() -> Any:
            # A grey PNG read in grey: its own levels, no conversion to undo.
            return tf.io.decode_png(contents, channels=1)

        def jpeg() -> Any:
            pixels = tf.io.decode_jpeg(
                contents, channels=3, dct_method="INTEGER_ACCURATE"
            )
            return to_mode(pixels)

        def other() -> Any:
            pixels = tf.numpy_function(with_pillow, [path], tf.uint8, stateful=False)
            return tf.ensure_shape(pixels, [None, None, channels])

        # One `switch_case` per image: each conditional costs tf.data about
        # a fifth of a small image's decoding time.
        branch = tf.where(is_png, 0, tf.where(is_jpeg, 1, 2))
        branches = [colour_png, jpeg, other]
        if channels == 1:
            grey = is_png & tf.equal(tf.strings.substr(head, 25, 1), b"\0")
            branch = tf.where(grey, 3, branch)
            branches.append(grey_png)
        pixels = tf.switch_case(branch, branches)
        pixels.set_shape([None, None, channels])
        if loader.crop_to_aspect_ratio:
            pixels = _center_crop(tf, pixels, loader.image_size)
        # Unconditionally: at scale 1 every interpolation the loader takes
        # (bilinear, nearest, bicubic, area) returns the pixels themselves.
        resized = tf.image.resize(pixels, (height, width), loader.interpolation)
        return tf.cast(resized, tf.float32)

    return read


def _center_crop(tf: Any, pixels: Any, size: tuple) -> Any:
    """`images.center_crop_to_aspect_ratio` in the graph."""
    target_height, target_width = size
    shape = tf.shape(pixels, out_type=tf.int64)
    height, width = shape[0], shape[1]

    def whole(numerator: Any, denominator: int) -> Any:
        ratio = tf.cast(numerator, tf.float64) / float(denominator)
        return tf.cast(tf.floor(ratio), tf.int64)

    crop_height = tf.maximum(
        tf.minimum(height, whole(width * target_height, target_width)), 1
    )
    crop_width = tf.maximum(
        tf.minimum(width, whole(height * target_width, target_height)), 1
    )
    top = whole(height - crop_height, 2)
    left = whole(width - crop_width, 2)
    return pixels[top : top + crop_height, left : left + crop_width]


def batch_pipeline(tf: Any, dataset: Any) -> Any:
    """A `tf.data.Dataset` that calls `dataset[i]` for every batch.

    For datasets whose batches are not plain rows of `x` (files read,
    augmentation, an overridden `__getitem__`): the batches are then those
    of `__getitem__` on every backend. Batches are made in parallel, in
    order; the element spec comes from one batch, made at the first call.
    """
    structure, shapes = _batch_spec(dataset)
    dtypes = [tf.as_dtype(dtype) for _, dtype in shapes]

    def make(index: np.ndarray) -> list:
        batch = keras.tree.flatten(dataset[int(index)])
        return [
            np.asarray(leaf, dtype=leaf_dtype.as_numpy_dtype)
            for leaf, leaf_dtype in zip(batch, dtypes)
        ]

    def load(index: Any) -> Any:
        tensors = tf.numpy_function(make, [index], dtypes, stateful=True)
        for tensor, (shape, _) in zip(tensors, shapes):
            tensor.set_shape(shape)
        return keras.tree.pack_sequence_as(structure, tensors)

    return (
        tf.data.Dataset.range(len(dataset))
        .map(load, num_parallel_calls=tf.data.AUTOTUNE, deterministic=True)
        .with_options(_options(tf))
        .prefetch(tf.data.AUTOTUNE)
    )


def _leaf_gather(tf: Any, leaf: np.ndarray, items: int) -> Any:
    """A function from a batch's rows (a tensor) to those rows of `leaf`."""
    if not isinstance(leaf, np.memmap):
        values = tf.convert_to_tensor(leaf)
        return lambda rows: tf.gather(values, rows)

    def take(rows: Any) -> Any:
        gathered = tf.numpy_function(lambda r: gather(leaf, r), [rows], leaf.dtype)
        gathered.set_shape([items, *leaf.shape[1:]])
        return gathered

    return take
