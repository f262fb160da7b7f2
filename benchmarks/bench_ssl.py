"""SimSiam and BYOL: Keras `model.fit` on PyTorch against lightly's own loop.

Both sides train the same small CNN (`cnn_encoder` of `_common.py`, and the
same layers in PyTorch) with the same heads, the same optimizer (SGD at
0.06, lightly's examples' setting), the same batch size and the same
augmented views:

- **keras**: `keras_siamese.SimSiam` or `keras_siamese.BYOL` on the encoder,
  trained by `model.fit` on the PyTorch backend, the two views of a batch
  stacked on the batch axis (the package's layout: one forward pass of
  `2 * batch` rows, the heads' batch norm sees both views);
- **keras channels_first**: the same, with the encoder's convolutions and
  pools computing channels first (`cnn_encoder(data_format=
  "channels_first")`, a `Permute` of the images first), PyTorch's native
  layout: Keras' PyTorch backend runs a channels-last convolution or pool
  by transposing to channels first and back around it;
- **lightly**: lightly 1.6.0's heads (`SimSiamProjectionHead` and
  `SimSiamPredictionHead`, `BYOLProjectionHead` and `BYOLPredictionHead`),
  `NegativeCosineSimilarity`, and for BYOL its `update_momentum` and
  `cosine_schedule`, in the plain PyTorch loop of lightly's examples (a
  forward pass per view, the symmetric loss, `backward`, `step`).

The augmented views are computed once, before any timing (`ViewAugment` of
`_common.py`, one seed per batch), and both sides read the same arrays: only
the training steps are timed. The Keras side reads them as NumPy arrays
through `fit(x, batch_size=2 * batch, shuffle=False)`, so each of its
batches is exactly one batch of the lightly side (views first, then their
partners), and its time includes Keras' own per-step costs (the data
adapter, the loss tracker, callbacks). Times are of whole epochs of
`--steps` steps, after one untimed warm-up epoch per side; the sides
alternate, `--repeats` times, and the table gives the medians per step
and the ratios to lightly.

Run with

    KERAS_BACKEND=torch python benchmarks/bench_ssl.py
"""

from __future__ import annotations

import argparse
import copy
import sys
import time
import types
from pathlib import Path
from typing import Any

import keras
import numpy as np
from _common import (
    EpochClock,
    ViewAugment,
    cnn_encoder,
    header,
    median,
    print_table,
    set_threads,
    write_json,
)

import keras_siamese as ks

# name: (projection hidden, projection out, prediction hidden)
SIZES = {"simsiam": (512, 512, 128), "byol": (512, 128, 512)}
LEARNING_RATE = 0.06


def lightly_modules() -> dict[str, Any]:
    """lightly's heads, loss, momentum update and schedule, from their files.

    lightly's package `__init__` imports torchvision; the modules used here
    need only PyTorch, so they are loaded from their files as the tests'
    `lightly_reference` does, with the few names they import stubbed.
    """
    sys.path.insert(0, str(Path(__file__).resolve().parents[1]))
    from tests import lightly_reference

    utils = lightly_reference.load(
        "models/utils.py",
        {
            "torchvision": {},
            "torchvision.ops": {"StochasticDepth": object},
            "lightly": {},
            "lightly.utils": {"dependency": types.ModuleType("dependency")},
        },
    )
    heads = lightly_reference.load(
        "models/modules/heads.py",
        {"lightly": {}, "lightly.models": {"utils": utils}},
    )
    return {
        "heads": heads,
        "utils": utils,
        "loss": lightly_reference.load(
            "loss/negative_cosine_similarity.py"
        ).NegativeCosineSimilarity,
        "cosine_schedule": lightly_reference.load("utils/scheduler.py").cosine_schedule,
    }


def torch_encoder(embedding_dim: int) -> Any:
    """`cnn_encoder`'s layers in PyTorch (channels first)."""
    from torch import nn

    return nn.Sequential(
        nn.Conv2d(1, 16, 3, padding=1),
        nn.ReLU(),
        nn.MaxPool2d(2),
        nn.Conv2d(16, 32, 3, padding=1),
        nn.ReLU(),
        nn.MaxPool2d(2),
        nn.Flatten(),
        nn.Linear(32 * 7 * 7, 128),
        nn.ReLU(),
        nn.Linear(128, embedding_dim),
    )


class LightlySimSiam:
    """lightly's SimSiam example: backbone, projection and prediction heads."""

    def __init__(self, lightly: dict, dim: int) -> None:
        import torch

        hidden, out, pred_hidden = SIZES["simsiam"]
        heads = lightly["heads"]
        self.backbone = torch_encoder(dim)
        self.projection_head = heads.SimSiamProjectionHead(dim, hidden, out)
        self.prediction_head = heads.SimSiamPredictionHead(out, pred_hidden, out)
        self.criterion = lightly["loss"]()
        self.modules = torch.nn.ModuleList(
            [self.backbone, self.projection_head, self.prediction_head]
        )
        self.optimizer = torch.optim.SGD(self.modules.parameters(), lr=LEARNING_RATE)

    def forward(self, x: Any) -> tuple[Any, Any]:
        z = self.projection_head(self.backbone(x))
        p = self.prediction_head(z)
        return z.detach(), p

    def step(self, x0: Any, x1: Any, index: int, total: int) -> Any:
        z0, p0 = self.forward(x0)
        z1, p1 = self.forward(x1)
        loss = 0.5 * (self.criterion(z0, p1) + self.criterion(z1, p0))
        loss.backward()
        self.optimizer.step()
        self.optimizer.zero_grad()
        return loss.detach()


class LightlyBYOL:
    """lightly's BYOL example: online and momentum networks."""

    def __init__(self, lightly: dict, dim: int) -> None:
        import torch

        hidden, out, pred_hidden = SIZES["byol"]
        heads, utils = lightly["heads"], lightly["utils"]
        self.utils, self.schedule = utils, lightly["cosine_schedule"]
        self.backbone = torch_encoder(dim)
        self.projection_head = heads.BYOLProjectionHead(dim, hidden, out)
        self.prediction_head = heads.BYOLPredictionHead(out, pred_hidden, out)
        self.backbone_momentum = copy.deepcopy(self.backbone)
        self.projection_head_momentum = copy.deepcopy(self.projection_head)
        utils.deactivate_requires_grad(self.backbone_momentum)
        utils.deactivate_requires_grad(self.projection_head_momentum)
        self.criterion = lightly["loss"]()
        self.modules = torch.nn.ModuleList(
            [
                self.backbone,
                self.projection_head,
                self.prediction_head,
                self.backbone_momentum,
                self.projection_head_momentum,
            ]
        )
        self.optimizer = torch.optim.SGD(
            [
                *self.backbone.parameters(),
                *self.projection_head.parameters(),
                *self.prediction_head.parameters(),
            ],
            lr=LEARNING_RATE,
        )

    def forward(self, x: Any) -> Any:
        return self.prediction_head(self.projection_head(self.backbone(x)))

    def forward_momentum(self, x: Any) -> Any:
        z = self.projection_head_momentum(self.backbone_momentum(x))
        return z.detach()

    def step(self, x0: Any, x1: Any, index: int, total: int) -> Any:
        m = self.schedule(index, total, 0.99, 1.0)
        self.utils.update_momentum(self.backbone, self.backbone_momentum, m=m)
        self.utils.update_momentum(
            self.projection_head, self.projection_head_momentum, m=m
        )
        p0, p1 = self.forward(x0), self.forward(x1)
        z0, z1 = self.forward_momentum(x0), self.forward_momentum(x1)
        loss = 0.5 * (self.criterion(p0, z1) + self.criterion(p1, z0))
        loss.backward()
        self.optimizer.step()
        self.optimizer.zero_grad()
        return loss.detach()


def keras_model(
    method: str, dim: int, total: int, data_format: str = "channels_last"
) -> keras.Model:
    hidden, out, pred_hidden = SIZES[method]
    encoder = cnn_encoder(dim, data_format=data_format)
    if method == "simsiam":
        model = ks.SimSiam(
            encoder,
            projection_hidden_dim=hidden,
            projection_dim=out,
            prediction_hidden_dim=pred_hidden,
        )
    else:
        model = ks.BYOL(
            encoder,
            momentum_steps=total,
            projection_hidden_dim=hidden,
            projection_dim=out,
            prediction_hidden_dim=pred_hidden,
        )
    model.compile(optimizer=keras.optimizers.SGD(LEARNING_RATE))
    return model


def make_views(args: argparse.Namespace) -> np.ndarray:
    """`(steps * 2 * batch, 28, 28, 1)`: per step, view 1 then view 2."""
    rng = np.random.default_rng(0)
    if args.data == "synthetic":
        images = rng.random((args.steps * args.batch_size, 28, 28, 1), np.float32)
    else:
        with np.load(args.data) as archive:
            pixels = archive["x_train"][: args.steps * args.batch_size]
        images = (pixels.astype(np.float32) / 255.0)[..., None]
    augment = ViewAugment()
    batches = []
    for step in range(args.steps):
        batch = images[step * args.batch_size : (step + 1) * args.batch_size]
        batches += [
            augment(batch, seed=2 * step + 1),
            augment(batch, seed=2 * step + 2),
        ]
    return np.concatenate(batches)


def run_lightly(
    model: Any, views: Any, batch_size: int, epoch: int, total: int
) -> float:
    import torch

    steps = len(views) // (2 * batch_size)
    start = time.perf_counter()
    for index in range(steps):
        batch = views[index * 2 * batch_size : (index + 1) * 2 * batch_size]
        model.step(batch[:batch_size], batch[batch_size:], epoch * steps + index, total)
    if torch.cuda.is_available():
        torch.cuda.synchronize()
    return time.perf_counter() - start


def run_keras(model: keras.Model, views: np.ndarray, batch_size: int) -> float:
    clock = EpochClock()
    model.fit(
        views,
        np.zeros(len(views), np.float32),
        batch_size=2 * batch_size,
        shuffle=False,
        epochs=1,
        verbose=0,
        callbacks=[clock],
    )
    return clock.times[0]


def bench(method: str, views: np.ndarray, lightly: dict, args: argparse.Namespace):
    import torch

    torch.manual_seed(0)
    keras.utils.set_random_seed(0)
    total = (args.repeats + 1) * args.steps
    ours = {
        "keras": keras_model(method, args.embedding_dim, total),
        "keras_cf": keras_model(method, args.embedding_dim, total, "channels_first"),
    }
    theirs = (LightlySimSiam if method == "simsiam" else LightlyBYOL)(
        lightly, args.embedding_dim
    )
    device = "cuda" if torch.cuda.is_available() else "cpu"
    theirs.modules.to(device)
    # Channels first for PyTorch's convolutions, converted before timing.
    torch_views = torch.from_numpy(views).permute(0, 3, 1, 2).contiguous().to(device)
    times = {"keras": [], "keras_cf": [], "lightly": []}
    for repeat in range(args.repeats + 1):
        round_times = {
            name: run_keras(model, views, args.batch_size)
            for name, model in ours.items()
        }
        round_times["lightly"] = run_lightly(
            theirs, torch_views, args.batch_size, repeat, total
        )
        if repeat:  # the first round warms up every side
            for name, seconds in round_times.items():
                times[name].append(seconds)
        print(
            f"{method} round {repeat}: "
            + ", ".join(f"{name} {sec:.3f} s" for name, sec in round_times.items())
            + ("" if repeat else " (warm-up)"),
            flush=True,
        )
    return times


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument(
        "--data",
        default="synthetic",
        help="an .npz in the Keras layout whose x_train images are used, or "
        "'synthetic' (random pixels; the same work per step).",
    )
    parser.add_argument(
        "--methods", nargs="+", choices=list(SIZES), default=list(SIZES)
    )
    parser.add_argument("--steps", type=int, default=20, help="steps per epoch")
    parser.add_argument("--batch-size", type=int, default=256)
    parser.add_argument("--embedding-dim", type=int, default=128)
    parser.add_argument("--repeats", type=int, default=3)
    parser.add_argument("--threads", type=int, default=None)
    parser.add_argument(
        "--quick", action="store_true", help="tiny sizes, for a smoke test."
    )
    parser.add_argument("--no-json", action="store_true")
    args = parser.parse_args()
    if keras.backend.backend() != "torch":
        parser.error(
            "bench_ssl.py compares with PyTorch code: set KERAS_BACKEND=torch."
        )
    set_threads(args.threads)
    if args.quick:
        args.steps, args.batch_size, args.repeats = 2, 16, 1
    lightly = lightly_modules()
    header("SimSiam and BYOL: Keras fit (PyTorch backend) against lightly's loop")
    views = make_views(args)
    print(
        f"{args.steps} steps of {args.batch_size} images x 2 views per epoch, "
        f"views precomputed; {args.repeats} timed rounds after a warm-up\n",
        flush=True,
    )
    rows, results = [], {}
    for method in args.methods:
        times = bench(method, views, lightly, args)
        keras_s, lightly_s = median(times["keras"]), median(times["lightly"])
        first_s = median(times["keras_cf"])
        results[method] = times
        rows.append(
            [
                method,
                args.batch_size,
                1000 * keras_s / args.steps,
                1000 * first_s / args.steps,
                1000 * lightly_s / args.steps,
                f"{keras_s / lightly_s:.2f}",
                f"{first_s / lightly_s:.2f}",
            ]
        )
    print_table(
        [
            "method",
            "batch",
            "keras ms/step",
            "keras channels_first ms/step",
            "lightly ms/step",
            "keras/lightly",
            "keras channels_first/lightly",
        ],
        rows,
    )
    write_json(
        "bench_ssl",
        {
            "settings": {
                "steps": args.steps,
                "batch_size": args.batch_size,
                "embedding_dim": args.embedding_dim,
                "repeats": args.repeats,
                "data": args.data,
                "sizes": SIZES,
            },
            "seconds_per_epoch": results,
        },
        enabled=not args.no_json,
    )


if __name__ == "__main__":
    main()
