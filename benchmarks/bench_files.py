"""Throughput of reading images from files: images per second.

Writes a folder of PNG files (random pixels, one sub-folder per class) into
a temporary folder, then reads whole epochs of it:

* `from_directory`: `ClassBalancedDataset.from_directory`, read as Keras
  reads a `PyDataset` (`model.predict` with a model that returns its input,
  so the enqueuer and its `workers` threads are part of the measure);
* `from_directory + augment`: the same with a `RandomFlip` + `RandomCrop`
  pipeline, seeded per batch;
* `image_dataset_from_directory`: Keras' own reader, batched, where
  TensorFlow is installed (TensorFlow's parallelism, not `workers`).

A second table times one training epoch of a small CNN (a `TrunkHead`
trained with `SupervisedContrastiveLoss`, the same batches) fed from the
files and from the same images held in memory as an array: the cost of
reading files while training, as a ratio.

Usage:
    KERAS_BACKEND=jax python benchmarks/bench_files.py --images 2000 --workers 1 4

Prints a table and writes `benchmarks/results/bench_files-<backend>.json`.
"""

from __future__ import annotations

import argparse
import importlib.util
import tempfile
import time
from pathlib import Path

import _common as common
import keras
import numpy as np
from PIL import Image

from keras_siamese import ClassBalancedDataset, SupervisedContrastiveLoss
from keras_siamese.data.images import index_directory
from keras_siamese.layers import TrunkHead


def write_folder(root: Path, images: int, classes: int, size: int) -> None:
    rng = np.random.default_rng(0)
    for index in range(images):
        folder = root / f"class_{index % classes:03d}"
        folder.mkdir(exist_ok=True)
        pixels = rng.integers(0, 256, (size, size, 3), dtype=np.uint8)
        Image.fromarray(pixels).save(folder / f"{index:06d}.png")


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


def epoch_seconds(dataset: ClassBalancedDataset, shape: tuple, repeats: int) -> float:
    """Best wall seconds of one epoch of `small_cnn` (after a warm-up epoch)."""
    model = small_cnn(shape)
    common.fit_epoch(model, x=dataset)
    return min(common.fit_epoch(model, x=dataset)[0] for _ in range(repeats))


def images_per_second(read, count: int, repeats: int) -> float:
    """Best of `repeats` reads of `count` images (the first read warms up)."""
    read()
    best = float("inf")
    for _ in range(repeats):
        start = time.perf_counter()
        read()
        best = min(best, time.perf_counter() - start)
    return count / best


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--images", type=int, default=2000)
    parser.add_argument("--classes", type=int, default=20)
    parser.add_argument("--source-size", type=int, default=64)
    parser.add_argument("--image-size", type=int, default=48)
    parser.add_argument("--per-class", type=int, default=4, help="K of P x K")
    parser.add_argument("--classes-per-batch", type=int, default=16)
    parser.add_argument("--workers", type=int, nargs="+", default=[1, 4])
    parser.add_argument("--repeats", type=int, default=3)
    parser.add_argument(
        "--epoch-workers",
        type=int,
        default=4,
        help="workers of the file-fed training epoch (0: no epoch table)",
    )
    parser.add_argument("--no-json", action="store_true")
    args = parser.parse_args()
    title = common.header("Reading images from files (bench_files.py)")
    size = (args.image_size, args.image_size)
    crop = max(1, args.image_size - 8)
    augment = keras.Sequential(
        [keras.layers.RandomFlip("horizontal"), keras.layers.RandomCrop(crop, crop)]
    )
    rows = []
    with tempfile.TemporaryDirectory() as folder:
        write_folder(Path(folder), args.images, args.classes, args.source_size)
        for name, kwargs, shape in [
            ("from_directory", {}, (*size, 3)),
            ("from_directory + augment", {"augment": augment}, (crop, crop, 3)),
        ]:
            echo = keras.Sequential([keras.Input(shape), keras.layers.Identity()])
            for workers in args.workers:
                dataset = ClassBalancedDataset.from_directory(
                    folder,
                    image_size=size,
                    classes_per_batch=args.classes_per_batch,
                    samples_per_class=args.per_class,
                    seed=0,
                    workers=workers,
                    **kwargs,
                )
                count = len(dataset) * dataset.batch_size

                def read(dataset=dataset, echo=echo):
                    echo.predict(dataset, verbose=0)

                rate = images_per_second(read, count, args.repeats)
                rows.append([name, workers, round(rate)])
        if importlib.util.find_spec("tensorflow") is not None:
            batch = args.classes_per_batch * args.per_class
            reference = keras.utils.image_dataset_from_directory(
                folder, image_size=size, batch_size=batch, verbose=False
            )

            def read_reference():
                for _ in reference:
                    pass

            rate = images_per_second(read_reference, args.images, args.repeats)
            rows.append(["image_dataset_from_directory", "tf.data", round(rate)])
        epochs = []
        if args.epoch_workers:
            sampler = {
                "classes_per_batch": args.classes_per_batch,
                "samples_per_class": args.per_class,
                "seed": 0,
            }
            files = ClassBalancedDataset.from_directory(
                folder, image_size=size, workers=args.epoch_workers, **sampler
            )
            paths, labels, _ = index_directory(folder)
            pixels = np.stack([files.loader(path) for path in paths])
            arrays = ClassBalancedDataset(pixels, labels, **sampler)
            shape = (*size, 3)
            from_arrays = epoch_seconds(arrays, shape, args.repeats)
            from_files = epoch_seconds(files, shape, args.repeats)
            epochs = [
                ["arrays in memory", 1, round(from_arrays, 3), 1.0],
                [
                    "from_directory",
                    args.epoch_workers,
                    round(from_files, 3),
                    round(from_files / from_arrays, 2),
                ],
            ]
    table = common.print_table(["reader", "workers", "images/s"], rows)
    epoch_table = ""
    if epochs:
        print(f"\nOne training epoch of a small CNN ({len(files)} batches):")
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


if __name__ == "__main__":
    main()
