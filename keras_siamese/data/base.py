"""`SampledDataset`: the seed, epoch and batching logic the datasets share."""

from __future__ import annotations

import operator
from typing import Any

import keras
import numpy as np

from keras_siamese import _keras_compat
from keras_siamese._checks import check_positive_int
from keras_siamese.data.augment import Augmentation, batch_seed
from keras_siamese.data.images import ImageLoader, index_directory
from keras_siamese.data.sampling import (
    LabelIndex,
    batch_index,
    default_length,
    gather,
    load_files,
    normalize_paths,
    normalize_x,
    resolve_seed,
)
from keras_siamese.data.tf_pipeline import block_pipeline

# Pairs, triplets or examples drawn at once, per block of consecutive batches:
# enough for the per-call cost of the vectorised draw to vanish, few enough
# that its temporaries are reused from the heap rather than page-faulted in
# afresh at every draw (benchmarks/README.md, "Data path").
_BLOCK_ITEMS = 2**14
# Blocks of the current epoch kept at once, in items (about 20 bytes per
# pair). `fit(shuffle=True)`, Keras' default, asks for the batches of an
# epoch in random order: a dataset that kept only its last block would redraw
# a whole block for most batches.
_CACHED_ITEMS = 2**21


class SampledDataset(keras.utils.PyDataset, *_keras_compat.data_adapter_base()):
    """Base of the datasets that draw fresh random batches every epoch.

    Batch `i` of epoch `e` is a pure function of `(seed, e, i)` (for given
    constructor arguments), whatever the `workers` and `use_multiprocessing`
    settings and whatever order the batches are asked for in. Only the rows
    of each batch are gathered from `x`, so `x` may be a `np.memmap` larger
    than memory.

    Inside `Model.fit`, a dataset draws the batches of Keras' epoch index:
    epoch `e` of training (or of validation, for a `validation_data` dataset)
    is `batch_indices(i, epoch=e)`, on every backend, so a run resumed with
    `keras.callbacks.BackupAndRestore` or `fit(initial_epoch=...)` sees the
    batches an uninterrupted run saw. A dataset never goes back to an epoch
    it has already served: a second `fit` call on the same dataset goes on
    with new batches. Outside `fit` (`evaluate`, `predict`, a custom loop)
    the dataset counts the epochs it has served, or follows `set_epoch()`.
    How epochs, blocks, workers and the TensorFlow pipeline work is described
    in the guide "Datasets: epochs, blocks and workers".

    On the TensorFlow backend a dataset is also its own Keras data adapter:
    `fit`, `evaluate` and `predict` read it through `as_tf_dataset()`. There,
    `workers`, `use_multiprocessing`, `fit(shuffle=...)` and
    `fit(class_weight=...)` do not apply (Keras passes neither argument to a
    data adapter).

    Args:
        x: a NumPy array (or `np.memmap`), or a tuple, list or dict of arrays
            for a multi-input encoder, with the examples on axis 0. It is
            never copied: each batch gathers only its own rows. With a
            `loader`, a sequence of file paths instead.
        y: 1-D array of hashable labels (integers, strings, ...), one per
            example.
        examples_per_batch: examples drawn per batch, which sets the default
            number of batches per epoch.
        steps_per_epoch: batches per epoch. Defaults to
            `ceil(len(x) / examples_per_batch)`, one pass over the data in
            expectation.
        seed: non-negative integer. `None` draws one at construction; it is
            then available as `dataset.seed`.
        loader: a callable from one element of `x` to an array. With it, `x`
            is a sequence of file paths (`str` or `os.PathLike`) and each
            batch calls `loader` on the paths of its own rows only (once per
            distinct row), stacking the results; an `ImageLoader` reads
            images. `from_directory` sets it.
        augment: a Keras image preprocessing pipeline (a `keras.Sequential`
            of layers such as `RandomFlip` and `RandomCrop`, or one such
            layer) or a callable `augment(images, seed=seed)`, applied to the
            batch of every input separately (each side of a pair or triplet
            gets its own draw). It is seeded per batch: input `b`, view `v`
            of batch `i` of epoch `e` gets a seed derived from
            `(seed, e, i, b, v)`, so augmented batches are reproducible
            whatever the workers. A callable gets that seed as a positive
            int32; a Keras pipeline gets a `keras.random.SeedGenerator` made
            from it (the layers' own generators are not used). Needs `x` to
            be one array or file paths.
        views: with `augment`, the number of independently augmented views
            of every example. Views are stacked on the batch axis: each input
            has `views * batch_size` rows, row `v * batch_size + k` being
            view `v` of example `k`, and the targets are repeated `views`
            times, so a batch of `ClassBalancedDataset` feeds
            `SupervisedContrastiveLoss` (or `NTXentLoss`) as it is.
        class_names: names of the classes, for messages and as
            `dataset.class_names`; `from_directory` sets them.
        **kwargs: `workers`, `use_multiprocessing`, `max_queue_size`, passed
            to `keras.utils.PyDataset`.

    Raises:
        TypeError: for an `x` or `y` that is not array-like, a non-integer
            size or seed, or an unknown keyword argument.
        ValueError: for non-positive sizes, a negative seed, `len(x) !=
            len(y)`, fewer than two classes, or `views > 1` without
            `augment`. With a `loader`, when a batch is read: a file that
            the loader cannot read (named by path), or files of different
            shapes.

    Examples:
        >>> import numpy as np
        >>> from keras_siamese import TripletDataset
        >>> x = np.arange(40, dtype="float32")[:, None]  # row i holds i
        >>> triplets = TripletDataset(x, np.arange(40) % 4, batch_size=4, seed=0)
        >>> (anchors, positives, negatives), _ = triplets.batch_indices(0, epoch=3)
        >>> triplets.set_epoch(3)
        >>> (batch_anchors, _, _), _ = triplets[0]
        >>> bool((batch_anchors[:, 0] == anchors).all())
        True
    """

    def __init__(
        self,
        x: Any,
        y: Any,
        examples_per_batch: int,
        steps_per_epoch: int | None = None,
        seed: int | None = None,
        *,
        loader: Any = None,
        augment: Any = None,
        views: int = 1,
        class_names: Any = None,
        **kwargs: Any,
    ) -> None:
        super().__init__(**kwargs)
        if loader is None:
            self._x, num_examples = normalize_x(x)
        else:
            if not callable(loader):
                raise TypeError(
                    f"`loader` must be a callable from a path to an array; got "
                    f"{loader!r}."
                )
            self._x, num_examples = normalize_paths(x)
        self.loader = loader
        views = check_positive_int(views, "views")
        if augment is None:
            self._augmentation = None
            if views > 1:
                raise ValueError(
                    f"`views={views}` needs an `augment`: without one the views "
                    "of an example would be identical."
                )
        else:
            if loader is None and isinstance(self._x, (tuple, dict)):
                raise TypeError(
                    "`augment` applies to a single input: `x` must be one array "
                    "or a sequence of file paths, not a tuple or dict of arrays."
                )
            self._augmentation = Augmentation(augment)
        self.augment = augment
        self.views = views
        if class_names is not None:
            class_names = [str(name) for name in class_names]
        self.class_names = class_names
        self._labels = LabelIndex(y, num_examples, names=class_names)
        classes = self._labels.classes
        if class_names is not None and not (
            np.issubdtype(classes.dtype, np.integer)
            and classes.min() >= 0
            and classes.max() < len(class_names)
        ):
            raise ValueError(
                "With `class_names`, `y` must hold integer labels in "
                f"[0, {len(class_names)}), indices into `class_names`."
            )
        if steps_per_epoch is not None:
            steps_per_epoch = check_positive_int(steps_per_epoch, "steps_per_epoch")
        self.steps_per_epoch = steps_per_epoch
        self.seed = resolve_seed(seed)
        self._length = steps_per_epoch or default_length(
            num_examples, examples_per_batch
        )
        self._batch_items = examples_per_batch
        self._block_batches = max(1, _BLOCK_ITEMS // examples_per_batch)
        self._max_blocks = max(
            1, _CACHED_ITEMS // (self._block_batches * examples_per_batch)
        )
        # `{(epoch, block): (rows, targets)}`, blocks of one epoch, oldest first.
        self._blocks: dict = {}
        self._cache: dict = {}
        self._epoch = 0
        self._epoch_open = False

    @property
    def classes(self) -> np.ndarray:
        """The distinct labels of `y`; integer codes index into this array."""
        return self._labels.classes

    @property
    def num_examples(self) -> int:
        """The number of examples in `x`."""
        return self._labels.num_examples

    @property
    def x(self) -> Any:
        """The examples the batches are gathered from (never copied).

        With a `loader`, the tuple of file paths.
        """
        return self._x

    @property
    def batches_are_rows(self) -> bool:
        """Whether each batch is rows of `x` gathered as they are.

        False when files are read, batches are augmented, or a subclass
        overrides `__getitem__`: then a batch exists only as `__getitem__`
        makes it, and the TensorFlow pipeline calls `__getitem__` too (or,
        for `batches_are_image_files`, reads the files as it does).
        """
        return (
            self.loader is None
            and self._augmentation is None
            and type(self).__getitem__ is SampledDataset.__getitem__
        )

    @property
    def batches_are_image_files(self) -> bool:
        """Whether each batch is images an `ImageLoader` reads, then augmented.

        Then the TensorFlow pipeline reads and decodes the files itself, with
        TensorFlow's kernels, to the same pixels; False when a subclass
        overrides `__getitem__`.
        """
        return (
            isinstance(self.loader, ImageLoader)
            and type(self).__getitem__ is SampledDataset.__getitem__
            and type(self)._gather is SampledDataset._gather
        )

    @property
    def num_branches(self) -> int:
        """Inputs per batch: 2 for pairs, 3 for triplets, 1 for examples."""
        return self._parts

    @property
    def batches_per_block(self) -> int:
        """Consecutive batches drawn together by one call of the sampler."""
        return self._block_batches

    @property
    def num_blocks(self) -> int:
        """Blocks per epoch: `ceil(len(self) / batches_per_block)`."""
        return -(-len(self) // self._block_batches)

    @property
    def cache(self) -> dict:
        """A dictionary for objects derived from this dataset's data.

        Tools that feed the dataset elsewhere keep what they build once per
        dataset here (the `tf.data` pipeline keeps its tensor copy of `x`).
        It is emptied when the dataset is pickled for a worker process.
        """
        return self._cache

    @property
    def epoch(self) -> int:
        """The epoch whose batches `__getitem__` returns now."""
        return self._epoch

    def set_epoch(self, epoch: int) -> None:
        """Make `__getitem__` return the batches of epoch `epoch`.

        Args:
            epoch: a non-negative integer.

        Raises:
            TypeError: if `epoch` is not an integer.
            ValueError: if `epoch` is negative.
        """
        epoch = operator.index(epoch)
        if epoch < 0:
            raise ValueError(f"`epoch` must be non-negative; got {epoch}.")
        self._epoch = epoch

    def on_epoch_begin(self) -> None:
        """Called by Keras before it asks for the batches of an epoch.

        Inside `Model.fit` the dataset moves on to Keras' epoch index unless
        it has already served that epoch; the pass with which `fit` builds a
        model on its first batch (JAX, PyTorch) is not counted.
        """
        keras_epoch = _keras_compat.fit_epoch()
        if keras_epoch == _keras_compat.BUILDING:
            return
        if keras_epoch is not None:
            self._epoch = max(self._epoch, keras_epoch)
        self._epoch_open = True

    def on_epoch_end(self) -> None:
        """Called by Keras after an epoch: the next one draws new batches."""
        if self._epoch_open:
            self._epoch += 1
        self._epoch_open = False

    def __len__(self) -> int:
        return self._length

    @classmethod
    def from_directory(
        cls,
        directory: Any,
        *args: Any,
        image_size: Any = (256, 256),
        color_mode: str = "rgb",
        class_names: Any = None,
        interpolation: str = "bilinear",
        crop_to_aspect_ratio: bool = False,
        follow_links: bool = False,
        decoder: str = "auto",
        **kwargs: Any,
    ) -> SampledDataset:
        """A dataset of the images in a folder with one sub-folder per class.

        The folder is read as `keras.utils.image_dataset_from_directory`
        reads it: the classes are the sub-folders (hidden ones, whose names
        start with a dot, are skipped) in alphanumeric order, or in the order
        of `class_names`; each class's files are those with the extensions
        `.bmp .gif .jpeg .jpg .png` (any case) in a sorted walk of its
        folder, nested folders included; class `c` gets the label `c`, the
        index of its folder in `dataset.class_names`. Only the paths are
        listed here: each batch reads and decodes its own images, with an
        `ImageLoader`, into float32 pixels in `[0, 255]` of shape
        `(*image_size, channels)`, the pixels `image_dataset_from_directory`
        gives on TensorFlow for the same file (JPEG files aside, whose
        decoders round differently by a few levels).

        Args:
            directory: the folder.
            *args: the dataset's own positional arguments after `x` and `y`
                (such as `batch_size`); better passed by keyword.
            image_size: `(height, width)` the images are resized to.
            color_mode: `"rgb"`, `"rgba"` or `"grayscale"`.
            class_names: the sub-folders to use, in label order; defaults
                to all of them, sorted.
            interpolation: `"bilinear"`, `"nearest"`, `"bicubic"` or
                `"area"`.
            crop_to_aspect_ratio: resize the largest centred crop with the
                aspect ratio of `image_size`, not the whole image.
            follow_links: whether to walk into folders that are symbolic
                links.
            decoder: `"auto"`, `"pillow"` or `"opencv"`: which library
                decodes the files (`ImageLoader`; the same pixels, OpenCV's
                faster where installed).
            **kwargs: the dataset's other arguments (`batch_size`, `seed`,
                `augment`, `views`, `workers`, ...).

        Returns:
            A dataset of this class whose `x` is the tuple of file paths and
            whose `class_names` are the class folders.

        Raises:
            ValueError: if `directory` is not a folder or holds no class
                folder, a class folder holds no image, a class has too few
                images for the sampler (named by folder), or an argument is
                out of range. When a batch is read: a file that cannot be
                read or decoded (named by path).
            ImportError: when a batch is read, if Pillow is not installed
                (or OpenCV, with `decoder="opencv"`).

        Examples:
            >>> import numpy as np, os, tempfile
            >>> from PIL import Image
            >>> from keras_siamese import ClassBalancedDataset
            >>> root = tempfile.mkdtemp()
            >>> for name in ["cat", "dog", "owl"]:
            ...     os.mkdir(os.path.join(root, name))
            ...     for k in range(3):
            ...         pixels = np.full((8, 8, 3), 40 * k, "uint8")
            ...         Image.fromarray(pixels).save(os.path.join(root, name, f"{k}.png"))
            >>> batches = ClassBalancedDataset.from_directory(
            ...     root, image_size=(4, 4), classes_per_batch=2,
            ...     samples_per_class=2, seed=0)
            >>> images, labels = batches[0]
            >>> images.shape, images.dtype, batches.class_names
            ((4, 4, 4, 3), dtype('float32'), ['cat', 'dog', 'owl'])
        """
        loader = ImageLoader(
            image_size, color_mode, interpolation, crop_to_aspect_ratio, decoder
        )
        if not isinstance(follow_links, bool):
            raise TypeError(f"`follow_links` must be a bool; got {follow_links!r}.")
        paths, labels, names = index_directory(directory, class_names, follow_links)
        return cls(paths, labels, *args, loader=loader, class_names=names, **kwargs)

    def batch_indices(self, index: int, epoch: int | None = None) -> tuple:
        """The batch `__getitem__(index)` returns, with row indices for rows.

        Args:
            index: batch index in `[0, len(self))`.
            epoch: the epoch to draw from; defaults to the current one.

        Returns:
            The batch's structure with, in place of every input, the 1-D
            integer array of the rows of `x` that it holds.
        """
        epoch = self._epoch if epoch is None else operator.index(epoch)
        rows, targets = self._rows(batch_index(index, len(self)), epoch)
        # With views, row `v * batch_size + k` is view `v` of example `k`.
        return self.pack_batch(
            [np.tile(side, self.views) for side in rows], np.tile(targets, self.views)
        )

    def __getitem__(self, index: int) -> tuple:
        index = batch_index(index, len(self))
        epoch = self._epoch
        rows, targets = self._rows(index, epoch)
        inputs = [self._gather(side) for side in rows]
        if self._augmentation is not None:
            inputs = [
                self._augment(images, epoch, index, branch)
                for branch, images in enumerate(inputs)
            ]
        # The targets are a view of the cached block: hand out a copy, so
        # that a consumer writing into its batch cannot change later ones.
        return self.pack_batch(inputs, np.tile(targets, self.views))

    def _gather(self, rows: np.ndarray) -> Any:
        if self.loader is None:
            return gather(self._x, rows)
        if isinstance(self.loader, ImageLoader):
            # Each distinct file read once, the batch resized at once.
            distinct, inverse = np.unique(rows, return_inverse=True)
            images = self.loader.load_batch([self._x[row] for row in distinct.tolist()])
            return images[inverse.reshape(-1)]
        return load_files(self._x, rows, self.loader)

    def augment_batch(
        self, images: np.ndarray, index: int, branch: int, epoch: int | None = None
    ) -> np.ndarray:
        """The augmented views of input `branch` of batch `index`, as `self[index]`.

        Args:
            images: that input's images, before augmentation.
            index: the batch index.
            branch: the input (0 for the first side of a pair).
            epoch: the epoch; defaults to the current one.

        Returns:
            `views` augmented copies, one after the other on axis 0; `images`
            itself without an `augment`.

        Examples:
            >>> import numpy as np
            >>> from keras_siamese import ClassBalancedDataset
            >>> x = np.zeros((8, 2), "float32")
            >>> def shift(images, seed):
            ...     return images + seed
            >>> data = ClassBalancedDataset(x, np.arange(8) % 2, 2, 2, seed=0,
            ...                             augment=shift)
            >>> images, _ = data[1]
            >>> bool((data.augment_batch(x[:4], 1, 0) == images).all())
            True
        """
        epoch = self._epoch if epoch is None else operator.index(epoch)
        if self._augmentation is None:
            return images
        return self._augment(images, epoch, batch_index(index, len(self)), branch)

    def _augment(self, images: np.ndarray, epoch: int, index: int, branch: int) -> Any:
        """`views` augmented copies of one input's batch, one after the other."""
        augmented = [
            self._augmentation(
                images, batch_seed(self.seed, epoch, index, branch, view)
            )
            for view in range(self.views)
        ]
        return augmented[0] if self.views == 1 else np.concatenate(augmented)

    def block_rows(
        self, block: int, epoch: int | None = None
    ) -> tuple[np.ndarray, np.ndarray]:
        """Row indices and targets of every batch of one block.

        Args:
            block: block index in `[0, num_blocks)`.
            epoch: the epoch to draw from; defaults to the current one.

        Returns:
            `(rows, targets)`: `rows` of shape `(num_branches, items)`, the
            rows of `x` of each input, and `targets` of length `items`, both
            batch after batch (`items` is `batch_size` times the block's
            number of batches). Read-only views of the dataset's cache.

        Raises:
            IndexError: if `block` is out of range.
        """
        block = operator.index(block)
        if not 0 <= block < self.num_blocks:
            raise IndexError(
                f"Block {block} is out of range for a dataset of "
                f"{self.num_blocks} blocks."
            )
        epoch = self._epoch if epoch is None else operator.index(epoch)
        return self._block(epoch, block)

    def _rows(self, index: int, epoch: int) -> tuple[np.ndarray, np.ndarray]:
        """Views of batch `index`'s `(parts, items)` rows and its targets."""
        block, offset = divmod(index, self._block_batches)
        rows, targets = self._block(epoch, block)
        start = offset * self._batch_items
        stop = start + self._batch_items
        return rows[:, start:stop], targets[start:stop]

    def _block(self, epoch: int, block: int) -> tuple[np.ndarray, np.ndarray]:
        """`(rows, targets)` of all batches of block `block` of epoch `epoch`."""
        key = (epoch, block)
        # The cache is never mutated, only replaced by one attribute write:
        # threads that race here draw the same block, and at worst one of
        # their copies is not kept (it is drawn again if needed).
        blocks = self._blocks
        cached = blocks.get(key)
        if cached is None:
            first = block * self._block_batches
            count = min(self._block_batches, len(self) - first)
            # SFC64 seeded through SeedSequence: independent streams per
            # (seed, epoch, block).
            entropy = np.random.SeedSequence([self.seed, epoch, block])
            rng = np.random.Generator(np.random.SFC64(entropy))
            cached = self._sample(rng, count)
            kept = [item for item in blocks.items() if item[0][0] == epoch]
            self._blocks = dict(
                [*kept[max(0, len(kept) + 1 - self._max_blocks) :], (key, cached)]
            )
        return cached

    @property
    def batch_size(self) -> int:
        """Pairs, triplets or examples per batch."""
        return self._batch_items

    def as_tf_dataset(self) -> Any:
        """The batches of the current epoch as a `tf.data.Dataset`.

        Python is called once per block of batches, for the block's row
        indices (the same as `__getitem__`'s), and the rows are gathered by
        TensorFlow. Arrays of `x` that are not `np.memmap`s are copied into
        tensors at the first call, so later in-place changes to them are not
        seen by the pipeline. On the TensorFlow backend `fit`, `evaluate`
        and `predict` use this pipeline by themselves (the dataset acts as
        its own Keras data adapter), so `workers` and `use_multiprocessing`
        have no effect there. Needs TensorFlow installed; with another
        backend the result can be passed to `fit` like any `tf.data` input.

        Each iteration yields the batches of the dataset's epoch when the
        iteration reaches them: call `set_epoch()` (or `on_epoch_end()`)
        between iterations, not during one.

        Returns:
            A `tf.data.Dataset` of `len(self)` elements, each the structure
            of `self[i]` with tensors in place of arrays.

        Examples:
            >>> import numpy as np
            >>> from keras_siamese import PairDataset
            >>> x = np.arange(40, dtype="float32")[:, None]
            >>> pairs = PairDataset(x, np.arange(40) % 4, batch_size=4, seed=0)
            >>> (left, right), same = next(iter(pairs.as_tf_dataset()))
            >>> bool((left.numpy() == pairs[0][0][0]).all())
            True
        """
        # Built once per dataset: its functions read the dataset's epoch
        # when they run, and tracing them again for every `fit`, `evaluate`
        # or `predict` call costs about as much as reading a small epoch.
        pipeline = self._cache.get("tf_pipeline")
        if pipeline is None:
            pipeline = block_pipeline(self)
            self._cache["tf_pipeline"] = pipeline
        return pipeline

    # What Keras' TensorFlow trainer asks of a `DataAdapter` beyond the
    # `PyDataset` methods (`num_batches`, `on_epoch_begin`, `on_epoch_end`).

    def get_tf_dataset(self) -> Any:
        return self.as_tf_dataset()

    def pack_batch(self, inputs: list, targets: Any) -> tuple:
        """Arrange one batch's inputs as `__getitem__` returns them.

        Args:
            inputs: `num_branches` inputs, each in the structure of `x`.
            targets: the batch's targets.

        Returns:
            `(inputs[0], targets)` for one input, else `(tuple(inputs),
            targets)`.
        """
        if self._parts == 1:
            return inputs[0], targets
        return tuple(inputs), targets

    # Subclasses set `_parts`, the number of inputs per batch, and implement
    # `_sample(rng, num_batches) -> (rows, targets)`: `rows` of shape
    # `(_parts, num_batches * examples_per_batch)`, the row indices of each
    # input, and `targets` of length `num_batches * examples_per_batch`, both
    # batch after batch.
    _parts = 1

    def _sample(
        self, rng: np.random.Generator, num_batches: int
    ) -> tuple[np.ndarray, np.ndarray]:
        raise NotImplementedError

    def __getstate__(self) -> dict:
        # A pickled copy (a `use_multiprocessing` worker started by spawn)
        # draws its blocks itself rather than receiving them.
        state = self.__dict__.copy()
        state["_blocks"] = {}
        state["_cache"] = {}
        return state

    def get_config(self) -> dict:
        """Every constructor argument except the data `x` and `y`.

        `type(dataset)(x, y, **dataset.get_config())` rebuilds a dataset that
        yields exactly the same batches (the seed is included). The `loader`
        and `augment` entries are the objects themselves.
        """
        return {
            "steps_per_epoch": self.steps_per_epoch,
            "seed": self.seed,
            "loader": self.loader,
            "augment": self.augment,
            "views": self.views,
            "class_names": self.class_names,
            "workers": self.workers,
            "use_multiprocessing": self.use_multiprocessing,
            "max_queue_size": self.max_queue_size,
        }
