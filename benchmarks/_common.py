"""Shared harness of the benchmark scripts: device, timing, data, output.

Every script selects the backend through `KERAS_BACKEND`, as Keras does, and
uses the helpers here so that all of them

- name the device they ran on (CPU model and cores, or the accelerator),
- warm up before timing (compilation and first-call costs are excluded),
- synchronise with the device before stopping the clock (GPU work is
  asynchronous on every backend),
- report medians over repeats, and
- print a Markdown table and write the same numbers as JSON under
  `benchmarks/results/` (or the folder named by `BENCH_RESULTS_DIR`, which
  `gpu.sh` sets so that each of its steps keeps its own files).
"""

from __future__ import annotations

import argparse
import datetime
import json
import os
import platform
import statistics
import sys
import time
from collections.abc import Callable, Sequence
from pathlib import Path
from typing import Any

import numpy as np

os.environ.setdefault("TF_CPP_MIN_LOG_LEVEL", "2")

import keras

RESULTS_DIR = Path(
    os.environ.get("BENCH_RESULTS_DIR") or Path(__file__).resolve().parent / "results"
)
# The shared data folder beside the repository (or beside its parent folder).
DATASETS = next(
    (
        parent / "shared" / "datasets"
        for parent in Path(__file__).resolve().parents[1:4]
        if (parent / "shared" / "datasets").is_dir()
    ),
    Path("shared") / "datasets",
)
MNIST_SHAPE = (28, 28)
MNIST_TRAIN = 60000
MNIST_TEST = 10000


def backend() -> str:
    """The Keras backend in use: `"tensorflow"`, `"jax"` or `"torch"`."""
    return keras.backend.backend()


def _cpu_model() -> str:
    try:
        with open("/proc/cpuinfo") as handle:
            for line in handle:
                if line.startswith("model name"):
                    return line.split(":", 1)[1].strip()
    except OSError:
        pass
    return platform.processor() or platform.machine()


def _cpu_count() -> int:
    try:
        return len(os.sched_getaffinity(0))
    except AttributeError:
        return os.cpu_count() or 1


def accelerator() -> str | None:
    """Name of the accelerator the backend computes on, or `None` on CPU."""
    name = backend()
    if name == "jax":
        import jax

        device = jax.devices()[0]
        return None if device.platform == "cpu" else device.device_kind
    if name == "torch":
        import torch

        if torch.cuda.is_available():
            return torch.cuda.get_device_name(0)
        return None
    if name == "tensorflow":
        import tensorflow as tf

        gpus = tf.config.list_physical_devices("GPU")
        if gpus:
            details = tf.config.experimental.get_device_details(gpus[0])
            return details.get("device_name", gpus[0].name)
        return None
    return None


def accelerator_peak_bytes() -> int | None:
    """Peak memory the backend has allocated on the accelerator, or `None` on CPU.

    On a CPU the process's peak resident memory (`ru_maxrss`) is the measure
    instead; accelerator memory is not part of it.
    """
    if accelerator() is None:
        return None
    name = backend()
    if name == "jax":
        import jax

        return int(jax.devices()[0].memory_stats()["peak_bytes_in_use"])
    if name == "torch":
        import torch

        return int(torch.cuda.max_memory_allocated())
    import tensorflow as tf

    return int(tf.config.experimental.get_memory_info("GPU:0")["peak"])


def device_description() -> str:
    """One line naming the machine, e.g. `CPU: AMD EPYC, 2 cores`."""
    cpu = f"{_cpu_model()}, {_cpu_count()} cores"
    gpu = accelerator()
    if gpu is None:
        return f"CPU: {cpu}"
    return f"GPU: {gpu} (host CPU: {cpu})"


def framework_version() -> str:
    """Version of Keras and of the backend's framework."""
    name = backend()
    module = {"tensorflow": "tensorflow", "jax": "jax", "torch": "torch"}[name]
    version = __import__(module).__version__
    return f"keras {keras.__version__}, {module} {version}"


def header(title: str) -> str:
    """Print and return the run's header: title, backend, versions, device."""
    text = (
        f"## {title}\n\n"
        f"- backend: {backend()} ({framework_version()})\n"
        f"- device: {device_description()}\n"
        f"- date: {datetime.datetime.now(datetime.timezone.utc):%Y-%m-%d %H:%M} UTC\n"
    )
    print(text, flush=True)
    return text


def sync(tree: Any = None) -> None:
    """Block until the device has finished all queued work.

    Args:
        tree: tensors (any nesting) whose values must be ready; on JAX only
            these are waited for, so pass what the timed code produced (or
            the model's variables).
    """
    name = backend()
    if name == "jax":
        import jax

        leaves = [
            leaf.value if isinstance(leaf, keras.Variable) else leaf
            for leaf in keras.tree.flatten(tree)
        ]
        jax.block_until_ready(leaves)
    elif name == "torch":
        import torch

        if torch.cuda.is_available():
            torch.cuda.synchronize()
    elif name == "tensorflow":
        import tensorflow as tf

        if tf.config.list_physical_devices("GPU"):
            tf.test.experimental.sync_devices()


def time_call(
    fn: Callable[[], Any], repeats: int = 5, warmup: int = 1
) -> tuple[list[float], list[float]]:
    """Wall and CPU seconds of each of `repeats` calls of `fn`, after warm-up.

    Args:
        fn: the work to time; its return value is synchronised on (see
            `sync`), so it should return the tensors it produced.
        repeats: number of timed calls.
        warmup: untimed calls first (compilation, caches, allocator).

    Returns:
        `(wall, cpu)`: the wall-clock seconds and the process CPU seconds (all
        threads) of each timed call.
    """
    for _ in range(warmup):
        sync(fn())
    wall, cpu = [], []
    for _ in range(repeats):
        start = (time.perf_counter(), time.process_time())
        sync(fn())
        wall.append(time.perf_counter() - start[0])
        cpu.append(time.process_time() - start[1])
    return wall, cpu


def median(values: Sequence[float]) -> float:
    return float(statistics.median(values))


def matmul_flops(n: int | None = None, repeats: int = 5) -> tuple[float, float]:
    """Measured float32 matrix-multiply rate of the device, in FLOP/s.

    A square `n x n` float32 product in the backend's own framework (compiled
    where the framework compiles), median of `repeats` timed calls after a
    warm-up. This is the ceiling ("roofline") that dense layers can reach.

    Args:
        n: matrix size; default 2048 on CPU, 8192 on an accelerator.
        repeats: timed calls.

    Returns:
        `(per_wall_second, per_cpu_second)`: FLOPs per second of wall-clock
        time, and per second of this process's CPU time (all threads), the
        latter being what a loaded machine leaves comparable between runs.
    """
    n = n or (8192 if accelerator() else 2048)
    rng = np.random.default_rng(0)
    a_np = rng.standard_normal((n, n), dtype=np.float32)
    b_np = rng.standard_normal((n, n), dtype=np.float32)
    name = backend()
    if name == "jax":
        import jax
        import jax.numpy as jnp

        a, b = jnp.asarray(a_np), jnp.asarray(b_np)
        product = jax.jit(jnp.matmul)
    elif name == "torch":
        import torch

        device = "cuda" if torch.cuda.is_available() else "cpu"
        a = torch.from_numpy(a_np).to(device)
        b = torch.from_numpy(b_np).to(device)
        product = torch.matmul
    else:
        import tensorflow as tf

        a, b = tf.constant(a_np), tf.constant(b_np)
        product = tf.function(tf.linalg.matmul)

    def run() -> Any:
        result = product(a, b)
        if name == "tensorflow":
            # Reading one element waits for the product on any device.
            return result[0, 0].numpy()
        return result

    wall, cpu = time_call(run, repeats=repeats, warmup=2)
    flops = 2.0 * n**3
    return flops / median(wall), flops / median(cpu)


def add_common_args(parser: argparse.ArgumentParser) -> argparse.ArgumentParser:
    """Add `--data`, `--repeats`, `--threads` and `--no-json` to a parser."""
    parser.add_argument(
        "--data",
        default="synthetic",
        help="path to mnist.npz (keys x_train, y_train, x_test, y_test), or "
        "'synthetic' for random data of the same shape (default).",
    )
    parser.add_argument(
        "--repeats",
        type=int,
        default=3,
        help="timed repeats per measurement; medians are reported (default 3).",
    )
    parser.add_argument(
        "--threads",
        type=int,
        default=None,
        help="CPU threads per operation for the backend (default: the "
        "framework's choice, all cores). On a loaded machine, 1 avoids the "
        "collapse of spinning thread pools when cores are oversubscribed.",
    )
    parser.add_argument(
        "--no-json",
        action="store_true",
        help="do not write the JSON file under benchmarks/results/.",
    )
    return parser


def set_threads(threads: int | None) -> None:
    """Limit the backend's intra-op CPU threads (no-op for `None`).

    Call before any computation. JAX reads its XLA flags when its CPU client
    starts, so the flag is set here if JAX has not computed anything yet;
    XLA's CPU flags can only make it single-threaded (`threads=1`): another
    count leaves it with all the cores.
    """
    if threads is None:
        return
    name = backend()
    if name == "torch":
        import torch

        torch.set_num_threads(threads)
    elif name == "tensorflow":
        import tensorflow as tf

        tf.config.threading.set_intra_op_parallelism_threads(threads)
    elif name == "jax":
        if threads == 1:
            flags = os.environ.get("XLA_FLAGS", "")
            os.environ["XLA_FLAGS"] = (
                f"{flags} --xla_cpu_multi_thread_eigen=false "
                "intra_op_parallelism_threads=1"
            ).strip()


class EpochClock(keras.callbacks.Callback):
    """Wall-clock and process CPU seconds of every epoch of `fit`.

    Starts at `on_epoch_begin` and stops at `on_epoch_end` after waiting for
    the model's variables, so the time covers the data pipeline (including a
    `PyDataset`'s end-of-epoch resampling, which Keras runs before the
    callbacks' `on_epoch_end`) and every step, but not `fit`'s one-off setup.
    CPU time (all threads of this process) is a steadier measure of work than
    wall time on a machine shared with other jobs.
    """

    def __init__(self) -> None:
        super().__init__()
        self.times: list[float] = []
        self.cpu_times: list[float] = []
        self._start = (0.0, 0.0)

    def on_epoch_begin(self, epoch: int, logs: dict | None = None) -> None:
        self._start = (time.perf_counter(), time.process_time())

    def on_epoch_end(self, epoch: int, logs: dict | None = None) -> None:
        sync(self.model.trainable_variables)
        self.times.append(time.perf_counter() - self._start[0])
        self.cpu_times.append(time.process_time() - self._start[1])


def fit_epoch(model: keras.Model, **fit_kwargs: Any) -> tuple[float, float]:
    """Wall and CPU seconds of one epoch of `model.fit(**fit_kwargs)`."""
    clock = EpochClock()
    model.fit(**fit_kwargs, epochs=1, verbose=0, callbacks=[clock])
    return clock.times[0], clock.cpu_times[0]


def load_images(data: str, seed: int = 0) -> tuple[np.ndarray, np.ndarray]:
    """MNIST training images as float32 in [0, 1] with their int labels.

    Args:
        data: path to an `mnist.npz`, or `"synthetic"` for random images and
            labels of MNIST's shape (60000 x 28 x 28, 10 classes) so that the
            benchmarks run without any download.
        seed: seed of the synthetic data.

    Returns:
        `(x, y)`: `x` float32 of shape `(60000, 28, 28)`, `y` int64.
    """
    if data == "synthetic":
        rng = np.random.default_rng(seed)
        x = rng.random((MNIST_TRAIN, *MNIST_SHAPE), dtype=np.float32)
        y = rng.integers(0, 10, MNIST_TRAIN).astype(np.int64)
        return x, y
    return load_mnist(data)[:2]


def load_mnist(path: str | None) -> tuple[np.ndarray, ...]:
    """MNIST train and test splits as float32 images in [0, 1] and int64 labels.

    Args:
        path: an `mnist.npz` in the Keras layout (x_train, y_train, x_test,
            y_test); `None` uses Keras' loader, which downloads once.

    Returns:
        `(x_train, y_train, x_test, y_test)`, images of shape `(n, 28, 28)`.
    """
    if path is None:
        (x_train, y_train), (x_test, y_test) = keras.datasets.mnist.load_data()
    else:
        with np.load(path) as archive:
            x_train, y_train = archive["x_train"], archive["y_train"]
            x_test, y_test = archive["x_test"], archive["y_test"]
    return (
        x_train.astype(np.float32) / 255.0,
        y_train.astype(np.int64),
        x_test.astype(np.float32) / 255.0,
        y_test.astype(np.int64),
    )


def print_table(headers: Sequence[str], rows: Sequence[Sequence[Any]]) -> str:
    """Print and return a Markdown table; floats get 3 significant digits."""

    def cell(value: Any) -> str:
        if isinstance(value, float):
            if value == 0 or 0.01 <= abs(value) < 1e5:
                return f"{value:.3g}" if abs(value) < 100 else f"{value:,.0f}"
            return f"{value:.3g}"
        return str(value)

    body = [[cell(v) for v in row] for row in rows]
    widths = [
        max(len(str(h)), *(len(r[i]) for r in body)) if body else len(str(h))
        for i, h in enumerate(headers)
    ]
    lines = [
        "| " + " | ".join(str(h).ljust(w) for h, w in zip(headers, widths)) + " |",
        "|" + "|".join("-" * (w + 2) for w in widths) + "|",
    ]
    lines += [
        "| " + " | ".join(c.ljust(w) for c, w in zip(row, widths)) + " |"
        for row in body
    ]
    text = "\n".join(lines)
    print(text + "\n", flush=True)
    return text


def write_json(name: str, payload: dict, enabled: bool = True) -> Path | None:
    """Write `payload` with run metadata to `RESULTS_DIR/<name>-<backend>.json`.

    `RESULTS_DIR` is `benchmarks/results/` unless `BENCH_RESULTS_DIR` names
    another folder.

    Returns:
        The path written, or `None` when `enabled` is false.
    """
    if not enabled:
        return None
    RESULTS_DIR.mkdir(parents=True, exist_ok=True)
    path = RESULTS_DIR / f"{name}-{backend()}.json"
    record = {
        "benchmark": name,
        "backend": backend(),
        "versions": framework_version(),
        "device": device_description(),
        "python": sys.version.split()[0],
        "argv": sys.argv[1:],
        "utc": datetime.datetime.now(datetime.timezone.utc).isoformat(),
        **payload,
    }
    path.write_text(json.dumps(record, indent=2, default=float) + "\n")
    print(f"results written to {path}", flush=True)
    return path


def mean_std(values: Sequence[float]) -> str:
    """`mean ± std` in percent (population std over the seeds)."""
    return f"{100 * np.mean(values):.1f} ± {100 * np.std(values):.1f}"


def cnn_encoder(
    embedding_dim: int, width: int = 1, data_format: str = "channels_last"
) -> Any:
    """The demo's small CNN as a `TrunkHead` on `(28, 28, 1)` images.

    The trunk is two 3x3 convolutions (`16 * width` and `32 * width` filters,
    ReLU), each followed by a 2x2 max-pool, flattened; the head is
    `Dense(128, relu)` then a linear `Dense(embedding_dim)`. With
    `data_format="channels_first"` the images are moved to `(1, 28, 28)` by
    a `Permute` layer and the convolutions and pools compute channels first,
    PyTorch's native layout (the same function, another memory layout).
    """
    from keras_siamese.layers import TrunkHead

    inputs = keras.Input((28, 28, 1))
    hidden = inputs
    if data_format == "channels_first":
        hidden = keras.layers.Permute((3, 1, 2))(hidden)
    for filters in (16 * width, 32 * width):
        hidden = keras.layers.Conv2D(
            filters, 3, padding="same", activation="relu", data_format=data_format
        )(hidden)
        hidden = keras.layers.MaxPooling2D(2, data_format=data_format)(hidden)
    features = keras.layers.Flatten()(hidden)
    trunk = keras.Model(inputs, features, name="trunk")
    head = keras.Sequential(
        [
            keras.Input(tuple(features.shape[1:])),
            keras.layers.Dense(128, activation="relu"),
            keras.layers.Dense(embedding_dim),
        ],
        name="head",
    )
    return TrunkHead(trunk, head, name="encoder")


class RandomShift:
    """Move every image by up to `max_shift` pixels on each axis, filling with 0.

    A callable `augment(images, seed=...)` for the package's datasets: the
    shifts are drawn from `numpy.random.default_rng(seed)`, so a batch's
    augmentation depends on its seed alone.
    """

    def __init__(self, max_shift: int) -> None:
        self.max_shift = max_shift

    def __call__(self, images: np.ndarray, seed: int) -> np.ndarray:
        m = self.max_shift
        rng = np.random.default_rng(seed)
        offsets = rng.integers(0, 2 * m + 1, (len(images), 2))
        padded = np.pad(images, ((0, 0), (m, m), (m, m), (0, 0)))
        side_y, side_x = images.shape[1:3]
        return np.stack(
            [
                padded[i, dy : dy + side_y, dx : dx + side_x]
                for i, (dy, dx) in enumerate(offsets)
            ]
        )


class ViewAugment:
    """Self-supervised views of small grey images, in NumPy, seeded per batch.

    A callable `augment(images, seed=...)` for the package's datasets, on
    `(n, height, width, channels)` float images in [0, 1]. Each image gets,
    with draws from `numpy.random.default_rng(seed)`:

    - a random resized crop: a box of `scale` (a range) of the image's area
      and an aspect ratio in `ratio` (a range), resized back to the full
      size bilinearly (half-pixel centres);
    - a horizontal flip with probability `flip`;
    - with probability `jitter`, a brightness offset in `[-0.2, 0.2]` and a
      contrast factor in `[0.6, 1.4]` around the image's mean, clipped to
      [0, 1].

    Args:
        scale: `(low, high)` fractions of the area the crop keeps.
        ratio: `(low, high)` aspect ratios (width / height) of the crop.
        flip: probability of a horizontal flip.
        jitter: probability of the brightness and contrast change.
    """

    def __init__(
        self,
        scale: tuple[float, float] = (0.4, 1.0),
        ratio: tuple[float, float] = (3 / 4, 4 / 3),
        flip: float = 0.5,
        jitter: float = 0.8,
    ) -> None:
        self.scale = scale
        self.ratio = ratio
        self.flip = flip
        self.jitter = jitter

    def __call__(self, images: np.ndarray, seed: int) -> np.ndarray:
        rng = np.random.default_rng(seed)
        images = np.asarray(images, np.float32)
        n, side_y, side_x = images.shape[:3]
        area = rng.uniform(*self.scale, n)
        ratio = np.exp(rng.uniform(*np.log(self.ratio), n))
        height = np.clip(np.sqrt(area / ratio) * side_y, 2, side_y)
        width = np.clip(np.sqrt(area * ratio) * side_x, 2, side_x)
        top = rng.uniform(0, 1, n) * (side_y - height)
        left = rng.uniform(0, 1, n) * (side_x - width)
        ys = _sample_grid(top, height, side_y)
        xs = _sample_grid(left, width, side_x)
        flipped = rng.random(n) < self.flip
        xs = np.where(flipped[:, None, None], xs[:, ::-1], xs)
        out = _bilinear_gather(images, ys, xs)
        jittered = rng.random(n) < self.jitter
        brightness = np.where(jittered, rng.uniform(-0.2, 0.2, n), 0.0)
        contrast = np.where(jittered, rng.uniform(0.6, 1.4, n), 1.0)
        shape = (n,) + (1,) * (images.ndim - 1)
        mean = out.mean(axis=tuple(range(1, images.ndim)), keepdims=True)
        out = (out - mean) * contrast.reshape(shape) + mean + brightness.reshape(shape)
        return np.clip(out, 0.0, 1.0).astype(np.float32)


def _sample_grid(start: np.ndarray, length: np.ndarray, side: int) -> np.ndarray:
    """Per image, the floor index and weight of `side` samples of a span.

    Returns an array `(n, side, 2)`: the lower source index (as a float) and
    the interpolation weight of the next index.
    """
    centres = (np.arange(side) + 0.5) / side
    position = start[:, None] + centres[None, :] * length[:, None] - 0.5
    position = np.clip(position, 0, side - 1)
    low = np.floor(position)
    return np.stack([low, position - low], axis=-1)


def _bilinear_gather(images: np.ndarray, ys: np.ndarray, xs: np.ndarray) -> np.ndarray:
    n, side_y, side_x = images.shape[:3]
    y0 = ys[..., 0].astype(np.int64)
    x0 = xs[..., 0].astype(np.int64)
    y1 = np.minimum(y0 + 1, side_y - 1)
    x1 = np.minimum(x0 + 1, side_x - 1)
    wy = ys[..., 1][:, :, None]
    wx = xs[..., 1][:, None, :]
    rows = np.arange(n)[:, None, None]
    if images.ndim == 4:
        wy, wx = wy[..., None], wx[..., None]

    def at(yy: np.ndarray, xx: np.ndarray) -> np.ndarray:
        return images[rows, yy[:, :, None], xx[:, None, :]]

    top = at(y0, x0) * (1 - wx) + at(y0, x1) * wx
    bottom = at(y1, x0) * (1 - wx) + at(y1, x1) * wx
    return top * (1 - wy) + bottom * wy


def normalized_std(embeddings: np.ndarray) -> float:
    """Mean over dimensions of the std of the L2-normalised embeddings.

    `CollapseMonitor.normalized_std` (lightly's `std_of_l2_normalized`) of
    given embeddings: about `1 / sqrt(dim)` when they spread over the unit
    sphere, 0 when they all point one way.
    """
    from keras_siamese.callbacks.collapse import _std_of_l2_normalized

    return _std_of_l2_normalized(embeddings)
