"""Throughput of reading images from files: images per second.

Writes a folder of image files (one sub-folder per class) into a temporary
folder: Fashion-MNIST images (`--data`, an `.npz` with `x_train`,
`y_train`; 28 x 28 grayscale, read as grayscale) or random RGB pixels, as
PNG and/or JPEG (`--format`). Then it reads whole epochs of it:

* `from_directory`: `ClassBalancedDataset.from_directory`, read as Keras
  reads a `PyDataset` (`model.predict` with a model that returns its input,
  so the enqueuer and its `workers` threads, or processes with
  `--processes`, are part of the measure; on TensorFlow the dataset's own
  `tf.data` pipeline, where `workers` does not apply); under JAX and
  PyTorch once per `--decoder` (the `ImageLoader`'s: Pillow or OpenCV);
* `from_directory + augment`: the same with a `RandomFlip` + `RandomCrop`
  pipeline, seeded per batch;
* `image_dataset_from_directory`, where TensorFlow is installed: Keras' own
  reader, batched, and with the same augmentation mapped in `tf.data`
  (TensorFlow's parallelism, not `workers`), read the same way (`predict`
  of a model that returns its input, on TensorFlow). The last column
  divides each `from_directory` row by the `tf.data` row of the same format
  and augmentation.

Each number is the median of `--repeats` epochs after a warm-up epoch. The
readers of one format and augmentation read in turn, round after round
(and the training epochs from arrays and from files alternate), so that a
change of the machine's speed falls on both sides of a ratio. Under another
backend, `--tf-python` reads the `tf.data` reader in its own process once
per round (its start and warm-up read not timed).

A second table times one training epoch of a small CNN (a `TrunkHead`
trained with `SupervisedContrastiveLoss`, the same batches) fed from the
files and from the same images held in memory as an array: the cost of
reading files while training, as a ratio.

Usage:
    KERAS_BACKEND=jax python benchmarks/bench_files.py \
        --data fashion_mnist.npz --images 20000 --format png jpeg \
        --image-size 28 --workers 1 2 --processes --decoder pillow opencv

Prints a table and writes `benchmarks/results/bench_files-<backend>.json`.
"""

from __future__ import annotations

import argparse
import importlib.util
import os
import statistics
import subprocess
import sys
import tempfile
import time
from pathlib import Path
from typing import Any

import _common as common
import keras
import numpy as np
from PIL import Image

from keras_siamese import ClassBalancedDataset, SupervisedContrastiveLoss
from keras_siamese.data.images import index_directory
from keras_siamese.layers import TrunkHead

_SUFFIXES = {"png": "png", "jpeg": "jpg"}


def write_folder(
    root: Path,
    images: int,
    classes: int,
    size: int,
    image_format: str = "png",
    data: str | None = None,
) -> None:
    """`images` files in class folders: from `data` if given, else random RGB."""
    suffix = _SUFFIXES[image_format]
    if data is not None:
        with np.load(data) as arrays:
            pixels, labels = arrays["x_train"][:images], arrays["y_train"][:images]
        if len(pixels) < images:
            raise SystemExit(f"{data} holds only {len(pixels)} training images.")
    rng = np.random.default_rng(0)
    for index in range(images):
        if data is None:
            label = index % classes
            image = rng.integers(0, 256, (size, size, 3), dtype=np.uint8)
        else:
            label, image = int(labels[index]), pixels[index]
        folder = root / f"class_{label:03d}"
        folder.mkdir(exist_ok=True)
        Image.fromarray(image).save(folder / f"{index:06d}.{suffix}", quality=90)


def small_cnn(shape: tuple[int, int, int]) -> TrunkHead:
    """The encoder of the epoch table: two convolutions, a 32-d head."""
    trunk = keras.Sequential(
        [
            keras.Input(shape),
            keras.layers.Rescaling(1 / 255),
            keras.layers.Conv2D(16, 3, activation="relu"),
            keras.layers.MaxPooling2D(),
            keras.layers.Conv2D(32, 3, activation="relu"),
            keras.layers.GlobalAveragePooling2D(),
        ]
    )
    head = keras.Sequential(
        [keras.Input((32,)), keras.layers.Dense(32), keras.layers.UnitNormalization()]
    )
    model = TrunkHead(trunk, head)
    model.compile(optimizer="adam", loss=SupervisedContrastiveLoss())
    return model


def epoch_seconds(datasets: list, shape: tuple, repeats: int) -> list[float]:
    """Median wall seconds of one epoch of `small_cnn` on each dataset.

    A model per dataset, a warm-up epoch each, then the epochs of the
    datasets in turn, `repeats` rounds: a change of the machine's speed
    falls on all of them alike.
    """
    models = [small_cnn(shape) for _ in datasets]
    for model, dataset in zip(models, datasets):
        common.fit_epoch(model, x=dataset)
    seconds = [[] for _ in datasets]
    for _ in range(repeats):
        for model, dataset, times in zip(models, datasets, seconds):
            times.append(common.fit_epoch(model, x=dataset)[0])
    return [statistics.median(times) for times in seconds]


def images_per_second(read, count: int, repeats: int) -> float:
    """Median of `repeats` reads of `count` images (the first read warms up)."""
    return interleaved_rates({"": (read, count)}, repeats)[""]


def interleaved_rates(reads: dict, repeats: int) -> dict:
    """Images per second of each `name: (read, count)`, read in turn.

    Each reader reads once to warm up, then all read one after the other,
    `repeats` rounds; the median of each. Side by side in every round, so
    that the ratios hold while the machine's speed changes. A `read` that
    returns a number times itself (a reader in another process, whose
    start is not part of the measure): that number is its seconds.
    """
    for read, _ in reads.values():
        read()
    seconds = {name: [] for name in reads}
    for _ in range(repeats):
        for name, (read, _) in reads.items():
            start = time.perf_counter()
            took = read()
            seconds[name].append(
                time.perf_counter() - start if took is None else float(took)
            )
    return {
        name: count / statistics.median(seconds[name])
        for name, (_, count) in reads.items()
    }


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--data", help="Fashion-MNIST .npz (default: random RGB)")
    parser.add_argument("--images", type=int, default=2000)
    parser.add_argument("--classes", type=int, default=20, help="random images")
    parser.add_argument("--source-size", type=int, default=64, help="random images")
    parser.add_argument("--image-size", type=int, default=48)
    parser.add_argument(
        "--format", nargs="+", choices=sorted(_SUFFIXES), default=["png"]
    )
    parser.add_argument("--per-class", type=int, default=4, help="K of P x K")
    parser.add_argument("--classes-per-batch", type=int, default=16)
    parser.add_argument("--workers", type=int, nargs="+", default=[1, 4])
    parser.add_argument(
        "--processes",
        action="store_true",
        help="also read with `use_multiprocessing=True` for workers > 1",
    )
    parser.add_argument(
        "--decoder",
        nargs="+",
        choices=["auto", "pillow", "opencv"],
        default=["auto"],
        help="ImageLoader decoders to read with, each a row (JAX and PyTorch)",
    )
    parser.add_argument("--no-augment", action="store_true")
    parser.add_argument("--repeats", type=int, default=3)
    parser.add_argument(
        "--epoch-workers",
        type=int,
        default=4,
        help="workers of the file-fed training epoch (0: no epoch table)",
    )
    parser.add_argument(
        "--epoch-steps", type=int, help="batches of the training epoch (default: all)"
    )
    parser.add_argument(
        "--tf-python",
        help="a Python with TensorFlow that times the tf.data reader, between "
        "this script's rows, where this environment has no TensorFlow",
    )
    parser.add_argument("--tf-data-folder", help=argparse.SUPPRESS)
    parser.add_argument(
        "--tf-data-augment", action="store_true", help=argparse.SUPPRESS
    )
    parser.add_argument("--no-json", action="store_true")
    args = parser.parse_args()
    if args.tf_data_folder:
        # The tf.data reader alone, for a run under another backend.
        crop = max(1, args.image_size - 4)
        augment = keras.Sequential(
            [keras.layers.RandomFlip("horizontal"), keras.layers.RandomCrop(crop, crop)]
        )
        read = tf_data_reader(
            args.tf_data_folder,
            (args.image_size, args.image_size),
            "rgb" if args.data is None else "grayscale",
            args.classes_per_batch * args.per_class,
            augment if args.tf_data_augment else None,
        )
        print(images_per_second(read, args.images, args.repeats))
        return
    title = common.header("Reading images from files (bench_files.py)")
    size = (args.image_size, args.image_size)
    color_mode = "rgb" if args.data is None else "grayscale"
    channels = 3 if args.data is None else 1
    crop = max(1, args.image_size - 4)
    batch = args.classes_per_batch * args.per_class

    def augmentation():
        return keras.Sequential(
            [keras.layers.RandomFlip("horizontal"), keras.layers.RandomCrop(crop, crop)]
        )

    settings = [("", {}, (*size, channels))]
    if not args.no_augment:
        settings.append(
            (" + augment", {"augment": augmentation()}, (crop, crop, channels))
        )
    readers = [(workers, False) for workers in args.workers]
    if args.processes:
        readers += [(workers, True) for workers in args.workers if workers > 1]
    # The TensorFlow pipeline decodes with TensorFlow: the decoder is moot.
    decoders = ["auto"] if keras.backend.backend() == "tensorflow" else args.decoder
    readers = [(*reader, decoder) for decoder in decoders for reader in readers]
    has_tf = importlib.util.find_spec("tensorflow") is not None
    rows = []
    epochs = []
    for image_format in args.format:
        with tempfile.TemporaryDirectory() as folder:
            write_folder(
                Path(folder),
                args.images,
                args.classes,
                args.source_size,
                image_format,
                args.data,
            )
            for suffix, kwargs, shape in settings:
                mine = []
                reads = {}
                echo = keras.Sequential([keras.Input(shape), keras.layers.Identity()])
                for workers, processes, decoder in readers:
                    dataset = ClassBalancedDataset.from_directory(
                        folder,
                        image_size=size,
                        color_mode=color_mode,
                        classes_per_batch=args.classes_per_batch,
                        samples_per_class=args.per_class,
                        seed=0,
                        workers=workers,
                        use_multiprocessing=processes,
                        decoder=decoder,
                        **kwargs,
                    )

                    def read(dataset=dataset, echo=echo):
                        echo.predict(dataset, verbose=0)

                    label = (
                        f"{workers}p" if processes else str(workers),
                        decoder_name(decoder),
                    )
                    reads[label] = (read, len(dataset) * dataset.batch_size)
                if has_tf:
                    reference = tf_data_reader(
                        folder, size, color_mode, batch, kwargs.get("augment")
                    )
                    reads["tf.data"] = (reference, args.images)
                elif args.tf_python:
                    reference = tf_data_subprocess(folder, bool(suffix), args)
                    reads["tf.data"] = (reference, args.images)
                rates = interleaved_rates(reads, args.repeats)
                reference_rate = rates.pop("tf.data", None)
                for (label, decoder), rate in rates.items():
                    mine.append(
                        [
                            "from_directory" + suffix,
                            label,
                            decoder,
                            image_format,
                            round(rate),
                        ]
                    )
                    print(*mine[-1], file=sys.stderr, flush=True)
                print(
                    "tf.data",
                    suffix,
                    image_format,
                    reference_rate,
                    file=sys.stderr,
                    flush=True,
                )
                for row in mine:
                    ratio = "-" if reference_rate is None else row[4] / reference_rate
                    rows.append([*row, ratio if ratio == "-" else round(ratio, 2)])
                if reference_rate is not None:
                    rows.append(
                        [
                            "image_dataset_from_directory" + suffix,
                            "tf.data",
                            "tensorflow",
                            image_format,
                            round(reference_rate),
                            1.0,
                        ]
                    )
            if args.epoch_workers and image_format == args.format[0]:
                epochs = epoch_rows(folder, size, color_mode, channels, args)
    table = common.print_table(
        ["reader", "workers", "decoder", "format", "images/s", "x tf.data"], rows
    )
    epoch_table = ""
    if epochs:
        print(f"\nOne training epoch of a small CNN ({epochs[0][-1]} batches):")
        epochs = [row[:-1] for row in epochs]
        epoch_table = common.print_table(
            ["fed from", "workers", "epoch s", "x arrays"], epochs
        )
    common.write_json(
        "bench_files",
        {
            "title": title,
            "args": vars(args),
            "table": table,
            "rows": rows,
            "epoch_table": epoch_table,
            "epochs": epochs,
        },
        enabled=not args.no_json,
    )


def decoder_name(decoder: str) -> str:
    """The library an `ImageLoader` with `decoder` decodes PNG and JPEG with."""
    if keras.backend.backend() == "tensorflow":
        return "tensorflow"
    if decoder == "auto":
        return "pillow" if importlib.util.find_spec("cv2") is None else "opencv"
    return decoder


def tf_data_reader(folder, size, color_mode, batch, augment):
    """A read of `image_dataset_from_directory` (+ `augment` in `tf.data`)."""
    import tensorflow as tf

    reference = keras.utils.image_dataset_from_directory(
        folder,
        image_size=size,
        color_mode=color_mode,
        batch_size=batch,
        seed=0,
        verbose=False,
    )
    if augment is not None:
        reference = reference.map(
            lambda images, labels: (augment(images, training=True), labels),
            num_parallel_calls=tf.data.AUTOTUNE,
        ).prefetch(tf.data.AUTOTUNE)

    # Read as the package's datasets are: through `predict` of a model that
    # returns its input, so that both sides pay Keras' per-batch loop.
    shape = tuple(reference.element_spec[0].shape[1:])
    echo = keras.Sequential([keras.Input(shape), keras.layers.Identity()])

    def read_reference():
        echo.predict(reference, verbose=0)

    return read_reference


def tf_data_subprocess(folder: str, augment: bool, args) -> Any:
    """A read of `tf_data_reader` by `args.tf_python` on the TensorFlow backend.

    Each call starts that Python, which reads once to warm up and once
    timed, and returns the timed read's seconds.
    """
    command = [args.tf_python, __file__, "--tf-data-folder", folder, "--repeats", "1"]
    for flag in ("images", "image_size", "classes_per_batch", "per_class"):
        command += [f"--{flag.replace('_', '-')}", str(getattr(args, flag))]
    if args.data:
        command += ["--data", args.data]
    if augment:
        command.append("--tf-data-augment")
    environment = {**os.environ, "KERAS_BACKEND": "tensorflow"}

    def read() -> float:
        done = subprocess.run(
            command, env=environment, capture_output=True, text=True, check=True
        )
        return args.images / float(done.stdout.strip().splitlines()[-1])

    return read


def epoch_rows(folder, size, color_mode, channels, args) -> list:
    """Training-epoch seconds fed from arrays and from the files, and ratio."""
    sampler = {
        "classes_per_batch": args.classes_per_batch,
        "samples_per_class": args.per_class,
        "steps_per_epoch": args.epoch_steps,
        "seed": 0,
    }
    files = ClassBalancedDataset.from_directory(
        folder,
        image_size=size,
        color_mode=color_mode,
        workers=args.epoch_workers,
        **sampler,
    )
    paths, labels, _ = index_directory(folder)
    pixels = files.loader.load_batch(paths)
    arrays = ClassBalancedDataset(pixels, labels, **sampler)
    shape = (*size, channels)
    from_arrays, from_files = epoch_seconds([arrays, files], shape, args.repeats)
    return [
        ["arrays in memory", 1, round(from_arrays, 3), 1.0, len(files)],
        [
            "from_directory",
            args.epoch_workers,
            round(from_files, 3),
            round(from_files / from_arrays, 2),
            len(files),
        ],
    ]


if __name__ == "__main__":
    main()
