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

import functools
import importlib
import os
from typing import Any

import keras
import numpy as np

from keras_siamese.data.augment import Augmentation, batch_seed, seed_dtype
from keras_siamese.data.images import (
    HEAD_BYTES,
    LUMA_WEIGHTS,
    TAIL_BYTES,
    decode_image,
    is_whole_jpeg,
    jpeg_components,
    png_colour_type,
)
from keras_siamese.data.sampling import gather


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

    Python draws the rows of each block of batches (the dataset's own
    draw), the next block while the files of this one are read; TensorFlow
    reads, decodes (PNG and JPEG), crops and resizes the files, one file per
    parallel step, and batches them. The pixels are the loader's: PNG of 8 bits per channel as
    libpng gives them, JPEG with the accurate integer DCT (Pillow's), colour
    to grayscale with Pillow's weights. Other files (GIF, BMP, palette or
    16-bit PNG, and any file that does not look whole) are decoded by the
    loader itself, which names a file it cannot read. Which is which is
    found from each file's first and last bytes, by Python, the first time
    a block holds the file (`file_kind`), and kept for later epochs; a
    block whose files are all of one kind is read without a per-file
    conditional.

    The augmentation, if any, runs on each decoded batch with the seeds of
    `__getitem__`: a Keras layer pipeline in the graph, when the backend is
    TensorFlow (the same numbers as `__getitem__`'s eager layers), anything
    else through `augment_batch` in Python.
    """
    loader = dataset.loader
    structure, shapes = _batch_spec(dataset)
    dtypes = [tf.as_dtype(dtype) for _, dtype in shapes]
    parts, items, views = dataset.num_branches, dataset.batch_size, dataset.views
    paths = dataset.cache.get("tf_paths")
    if paths is None:
        paths = tf.constant([os.fsencode(path) for path in dataset.x])
        dataset.cache["tf_paths"] = paths
        # -1: not looked at yet.
        dataset.cache["tf_file_kinds"] = np.full(len(dataset.x), -1, np.int32)
    kinds = dataset.cache["tf_file_kinds"]
    channels = loader.shape[-1]
    decode, by_kind = _decoders(tf, loader)
    in_graph = _graph_augmentation(dataset)
    if in_graph is not None:
        seed_type = seed_dtype()

    def draw(block: np.ndarray) -> tuple:
        block = int(block)
        epoch = dataset.epoch
        rows, targets = dataset.block_rows(block, epoch)
        first = block * dataset.batches_per_block
        batches = np.arange(first, first + len(targets) // items)
        # Batch after batch, each batch input after input: the order in
        # which `assemble` takes the files back.
        rows = rows.astype(np.int64).reshape(parts, len(batches), items)
        rows = rows.transpose(1, 0, 2).reshape(-1)
        unseen = np.unique(rows[kinds[rows] < 0])
        for row in unseen.tolist():
            kinds[row] = file_kind(dataset.x[row], channels)
        block_kinds = kinds[rows]
        seeds = np.zeros((len(batches), parts, views), np.int64)
        if in_graph is not None:
            for (batch, side, view), _ in np.ndenumerate(seeds):
                index = int(batches[batch])
                seeds[batch, side, view] = batch_seed(
                    dataset.seed, epoch, index, side, view
                )
        return (
            np.int64(epoch),
            rows,
            block_kinds,
            # The one kind of all the block's files, or -1.
            np.int32(block_kinds[0] if (block_kinds == block_kinds[0]).all() else -1),
            batches,
            targets.reshape(len(batches), items),
            seeds,
        )

    def augment(images: np.ndarray, epoch: Any, index: Any, branch: Any) -> Any:
        augmented = dataset.augment_batch(images, int(index), int(branch), int(epoch))
        return np.asarray(augmented, dtype=dtypes[0].as_numpy_dtype)

    count = parts * items

    def assemble(images: Any, index: Any, epoch: Any, targets: Any, seeds: Any) -> Any:
        images = tf.reshape(images, [parts, items, *loader.shape])
        sides = []
        for side in range(parts):
            side_images = images[side]
            if in_graph is not None:
                side_images = tf.concat(
                    [
                        in_graph.in_graph(side_images, seeds[side, view], seed_type)
                        for view in range(views)
                    ],
                    axis=0,
                )
            elif dataset.augment is not None:
                side_images = tf.numpy_function(
                    augment,
                    [side_images, epoch, index, side],
                    dtypes[side],
                    stateful=False,
                )
            sides.append(tf.cast(side_images, dtypes[side]))
        leaves = [*sides, tf.tile(targets, [views])]
        for leaf, (shape, _) in zip(leaves, shapes):
            leaf.set_shape(shape)
        return keras.tree.pack_sequence_as(structure, leaves)

    def drawn(block: Any) -> tuple:
        epoch, rows, file_kinds, uniform, batches, targets, seeds = tf.numpy_function(
            draw,
            [block],
            [
                tf.int64,
                tf.int64,
                tf.int32,
                tf.int32,
                tf.int64,
                tf.as_dtype(shapes[-1][1]),
                tf.int64,
            ],
            stateful=True,
        )
        rows.set_shape([None])
        file_kinds.set_shape([None])
        uniform.set_shape([])
        batches.set_shape([None])
        targets.set_shape([None, items])
        seeds.set_shape([None, parts, views])
        return epoch, rows, file_kinds, uniform, batches, targets, seeds

    def block_batches(
        epoch: Any,
        rows: Any,
        file_kinds: Any,
        uniform: Any,
        batches: Any,
        targets: Any,
        seeds: Any,
    ) -> Any:
        files = tf.gather(paths, rows)
        size = tf.size(files, out_type=tf.int64)
        zero = tf.constant(0, tf.int64)
        # The files are read one by one in parallel, as
        # `image_dataset_from_directory` reads them. A block whose files are
        # all of one kind is read by that kind's decoder, without a per-file
        # conditional; every other stream is then empty. Each stream is
        # batched before they are concatenated (a stream holds whole batches
        # or nothing): tf.data then fuses each decoding map with its batch,
        # which it cannot do across the concatenation (measured under
        # `predict`: about a third more images per second).
        streams = [
            tf.data.Dataset.from_tensor_slices(files)
            .take(tf.where(uniform == kind, size, zero))
            .map(step, num_parallel_calls=tf.data.AUTOTUNE, deterministic=True)
            .batch(count, drop_remainder=True)
            for kind, step in by_kind.items()
        ]
        streams.append(
            tf.data.Dataset.from_tensor_slices((files, file_kinds))
            .take(tf.where(uniform < 0, size, zero))
            .map(decode, num_parallel_calls=tf.data.AUTOTUNE, deterministic=True)
            .batch(count, drop_remainder=True)
        )
        meta = tf.data.Dataset.from_tensor_slices(
            (batches, tf.fill(tf.shape(batches), epoch), targets, seeds)
        )
        images = functools.reduce(tf.data.Dataset.concatenate, streams)
        # In parallel only when batches are augmented: reshaping a batch is
        # cheaper than the threads' own work (measured: a fifth more CPU per
        # image with a parallel map here).
        parallel = None if dataset.augment is None else tf.data.AUTOTUNE
        return tf.data.Dataset.zip((images, meta)).map(
            lambda images, meta: assemble(images, *meta),
            num_parallel_calls=parallel,
            deterministic=None if parallel is None else True,
        )

    # Python draws the rows of each block of batches (the next block while
    # the files of this one are read); TensorFlow reads the files.
    return (
        tf.data.Dataset.range(dataset.num_blocks)
        .map(drawn)
        .prefetch(1)
        # One block after the other: a parallel interleave costs more CPU
        # than its overlap of two blocks' files saves.
        .flat_map(block_batches)
        .with_options(_options(tf, optimize=True))
        .prefetch(tf.data.AUTOTUNE)
    )


def _graph_augmentation(dataset: Any) -> Any:
    """The dataset's augmentation if the pipeline may run it in the graph.

    Only Keras layers on the TensorFlow backend (where `__getitem__` runs the
    same TensorFlow kernels eagerly), and only when no subclass changes how
    batches are augmented.
    """
    # Imported here: the datasets' module imports this one.
    from keras_siamese.data.base import SampledDataset

    if dataset.augment is None or keras.config.backend() != "tensorflow":
        return None
    for name in ("augment_batch", "_augment"):
        if getattr(type(dataset), name) is not getattr(SampledDataset, name):
            return None
    augmentation = Augmentation(dataset.augment)
    return augmentation if augmentation.runs_in_graph else None


# What `file_kind` finds, the branches of `_decoders`' `decode`.
_COLOUR_PNG, _JPEG, _OTHER, _GREY_PNG, _GREY_JPEG = 0, 1, 2, 3, 4


def file_kind(path: str, channels: int) -> int:
    """How the pipeline decodes a file, from its first and last bytes.

    An 8-bit PNG that is not a palette image and ends with its `IEND`
    chunk (`_GREY_PNG` if grey and read as grayscale, else `_COLOUR_PNG`),
    a JPEG that starts and ends with its markers (`_GREY_JPEG` if it has one
    component and is read as grayscale, else `_JPEG`); anything else,
    or a file that cannot be opened, `_OTHER` (read by the loader, which
    names a file it cannot read). A file changed after it was looked at is
    decoded as it was found.

    Args:
        path: the file.
        channels: channels of the loader's images.
    """
    try:
        with open(path, "rb") as file:
            head = file.read(HEAD_BYTES)
            size = file.seek(0, os.SEEK_END)
            file.seek(max(size - TAIL_BYTES, 0))
            tail = file.read(TAIL_BYTES)
            jpeg = is_whole_jpeg(head, tail)
            grey_jpeg = jpeg and channels == 1 and jpeg_components(file) == 1
    except OSError:
        return _OTHER
    colour_type = png_colour_type(head, tail)
    if colour_type is not None:
        return _GREY_PNG if channels == 1 and colour_type == 0 else _COLOUR_PNG
    if jpeg:
        return _GREY_JPEG if grey_jpeg else _JPEG
    return _OTHER


def _decoders(tf: Any, loader: Any) -> tuple:
    """Graph functions from files to the loader's pixels.

    Returns:
        `(decode, by_kind)`: `decode(path, kind)` for a file of any
        `file_kind`, by one `switch_case`; `by_kind[kind](path)` for a file
        known to be of that kind, without a conditional.
    """
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
        weighted = tf.cast(pixels, tf.int32) * tf.constant(LUMA_WEIGHTS)
        luma = tf.bitwise.right_shift(
            tf.reduce_sum(weighted, -1, keepdims=True) + 0x8000, 16
        )
        return tf.cast(luma, tf.uint8)

    def in_python(path: np.ndarray) -> np.ndarray:
        return decode_image(os.fsdecode(path), color_mode, loader.decoder)

    def colour_png(path: Any) -> Any:
        contents = tf.io.read_file(path)
        return to_mode(tf.io.decode_png(contents, channels=decoded_channels))

    def jpeg(path: Any) -> Any:
        contents = tf.io.read_file(path)
        pixels = tf.io.decode_jpeg(contents, channels=3, dct_method="INTEGER_ACCURATE")
        return to_mode(pixels)

    def other(path: Any) -> Any:
        pixels = tf.numpy_function(in_python, [path], tf.uint8, stateful=False)
        return tf.ensure_shape(pixels, [None, None, channels])

    def grey_png(path: Any) -> Any:
        # A grey PNG read in grey: its own levels, no conversion to undo.
        return tf.io.decode_png(tf.io.read_file(path), channels=1)

    def grey_jpeg(path: Any) -> Any:
        # A one-component JPEG read in grey: its plane as it is.
        contents = tf.io.read_file(path)
        return tf.io.decode_jpeg(contents, channels=1, dct_method="INTEGER_ACCURATE")

    def finish(pixels: Any) -> Any:
        pixels.set_shape([None, None, channels])
        if loader.crop_to_aspect_ratio:
            pixels = _center_crop(tf, pixels, loader.image_size)
        # Unconditionally: at scale 1 every interpolation the loader takes
        # (bilinear, nearest, bicubic, area) returns the pixels themselves.
        resized = tf.image.resize(pixels, (height, width), loader.interpolation)
        return tf.cast(resized, tf.float32)

    kinds = {_COLOUR_PNG: colour_png, _JPEG: jpeg, _OTHER: other}
    if channels == 1:
        kinds.update({_GREY_PNG: grey_png, _GREY_JPEG: grey_jpeg})
    by_kind = {kind: _then(step, finish) for kind, step in kinds.items()}

    def decode(path: Any, kind: Any) -> Any:
        # One `switch_case` per image, on the kind Python found: the kinds
        # are the branch numbers, in the order of `kinds`.
        branches = [functools.partial(step, path) for step in kinds.values()]
        return finish(tf.switch_case(kind, branches))

    return decode, by_kind


def _then(first: Any, second: Any) -> Any:
    """`second(first(x))`."""
    return lambda value: second(first(value))


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
