"""`python -m keras_siamese` (or `keras-siamese`): train and evaluate a demo model.

The arguments are parsed before anything imports Keras from here, so that
`--backend` can set `KERAS_BACKEND` first. Running the package as a module
imports `keras_siamese` itself, and with it Keras, before this file runs; if
that fixed a different backend, the demo restarts in a fresh interpreter with
`KERAS_BACKEND` set.
"""

from __future__ import annotations

import argparse
import os
import subprocess
import sys
from collections.abc import Sequence

BACKENDS = ("tensorflow", "jax", "torch")
DATASETS = ("digits", "mnist")
LOSSES = (
    "contrastive",
    "triplet",
    "batch-hard",
    "semi-hard",
    "supcon",
    "multi-similarity",
    "circle",
    "ntxent",
)

# Set in the restarted interpreter, so that a backend which still does not
# take effect is reported instead of restarting forever.
_RESTARTED = "KERAS_SIAMESE_DEMO_RESTARTED"


def build_parser() -> argparse.ArgumentParser:
    """The command-line interface of the demo.

    Returns:
        An `argparse.ArgumentParser`; `parse_args` gives the namespace that
        `keras_siamese.demo.run` takes.
    """
    parser = argparse.ArgumentParser(
        prog="keras-siamese",
        description=(
            "Train a Siamese network end to end and report test pair accuracy "
            "at the best threshold, ROC AUC and recall@1, then one-shot accuracy "
            "and open-set identification on classes held out of training. "
            "Writes model.keras, the saved verifier (index/) and a PNG of the "
            "test embeddings to --output."
        ),
    )
    parser.add_argument(
        "--dataset",
        choices=DATASETS,
        default="digits",
        help="digits: scikit-learn's bundled 8x8 digits (no download, default); "
        "mnist: keras.datasets.mnist (downloaded once, cached by Keras).",
    )
    parser.add_argument(
        "--data",
        metavar="PATH.npz",
        help="a local .npz in the Keras layout (x_train, y_train, x_test, "
        "y_test); overrides --dataset.",
    )
    parser.add_argument(
        "--loss",
        choices=LOSSES,
        default="contrastive",
        help="contrastive: random pairs; triplet: random triplets; batch-hard "
        "(soft margin) / semi-hard: online triplet mining, supcon, "
        "multi-similarity, circle, ntxent: the losses of those names, all on "
        "class-balanced batches.",
    )
    parser.add_argument("--epochs", type=_positive_int, default=20)
    parser.add_argument(
        "--steps-per-epoch",
        type=_positive_int,
        default=15,
        metavar="N",
        help="batches per epoch (default 15: 300 batches in 20 epochs).",
    )
    parser.add_argument("--batch-size", type=_positive_int, default=128)
    parser.add_argument(
        "--embedding-dim",
        type=_positive_int,
        default=32,
        help="size of the head's output, which the loss trains (retrieval uses "
        "the trunk's features).",
    )
    parser.add_argument(
        "--backend",
        choices=BACKENDS,
        help="Keras backend; default: KERAS_BACKEND or Keras' configuration.",
    )
    parser.add_argument(
        "--output",
        default="keras-siamese-demo",
        metavar="DIR",
        help="directory for model.keras, index/ and embeddings.png (created).",
    )
    parser.add_argument("--seed", type=int, default=0, help="random seed.")
    parser.add_argument(
        "--max-train",
        type=_positive_int,
        metavar="N",
        help="use only the first N training examples (for quick runs).",
    )
    parser.add_argument(
        "--unseen-classes",
        type=_unseen_count,
        default=5,
        metavar="N",
        help="hold the N largest labels out of training (default 5: train on "
        "digits 0-4) and report one-shot accuracy and open-set identification "
        "on them; 0 trains on every class.",
    )
    parser.add_argument(
        "--verbose",
        type=int,
        choices=(0, 1, 2),
        default=1,
        help="Keras fit verbosity: 1 progress bars (default), 2 one line per "
        "epoch, 0 silent.",
    )
    return parser


def _unseen_count(text: str) -> int:
    value = int(text)
    if value == 1 or value < 0:
        raise argparse.ArgumentTypeError(
            f"must be 0 or at least 2 (one-shot needs two classes), got {text}"
        )
    return value


def _positive_int(text: str) -> int:
    value = int(text)
    if value < 1:
        raise argparse.ArgumentTypeError(f"must be a positive integer, got {text}")
    return value


def main(argv: Sequence[str] | None = None) -> int:
    """Run the demo with command-line arguments `argv` (default: `sys.argv`).

    Args:
        argv: the arguments without the program name.

    Returns:
        The process exit status, 0 on success.
    """
    argv = list(sys.argv[1:] if argv is None else argv)
    args = build_parser().parse_args(argv)
    if args.backend is not None:
        os.environ["KERAS_BACKEND"] = args.backend
    import keras

    active = keras.backend.backend()
    if args.backend is not None and active != args.backend:
        if os.environ.get(_RESTARTED):
            print(
                f"error: Keras started with the {active!r} backend although "
                f"KERAS_BACKEND={args.backend!r}; is {args.backend} installed?",
                file=sys.stderr,
            )
            return 2
        print(f"Restarting with KERAS_BACKEND={args.backend} ...", flush=True)
        environment = {**os.environ, "KERAS_BACKEND": args.backend, _RESTARTED: "1"}
        command = [sys.executable, "-m", "keras_siamese", *argv]
        return subprocess.call(command, env=environment)

    from keras_siamese import demo

    demo.run(args)
    return 0


if __name__ == "__main__":
    sys.exit(main())
