"""Which online-mining recipes collapse on MNIST, and which train.

The triplet notebook's embedding model (`Dense(64, relu)` then
`Dense(64, sigmoid)` on flattened MNIST, Adam) trained on P x K batches of
`ClassBalancedDataset` with `OnlineTripletLoss`. With batch-hard mining,
margin 0.2 on the Euclidean distance and K = 8 or more examples per class it
collapses: every image maps to nearly one point (`docs/benchmarks.md`).
Each recipe here is run for a few hundred steps per seed with a
`CollapseMonitor` on 512 training images (checked every 50 batches), then
evaluated by recall@1 on the 10,000 test images:

- `hard`: batch-hard, hinge, margin 0.2 (the collapsing baseline);
- `hard_soft`: batch-hard with the soft margin (`soft=True`);
- `hard_unit`: batch-hard, margin 0.2, embeddings L2-normalised by a final
  `UnitNormalization` layer;
- `hard_lr1e-4`: the baseline with Adam's learning rate 1e-4 instead of 1e-3;
- `semi_hard`, `batch_all`: the other two mining modes, margin 0.2;
- `hard_xbm`: the baseline wrapped in `CrossBatchMemory` (memory 1024).

Run with

    KERAS_BACKEND=jax python benchmarks/mnist_collapse.py --data mnist.npz
"""

from __future__ import annotations

import argparse
import time
import warnings

import keras
import numpy as np
from _common import header, load_mnist, print_table, write_json

from keras_siamese import CollapseMonitor, CrossBatchMemory, EmbeddingCollapseWarning
from keras_siamese.data import ClassBalancedDataset
from keras_siamese.losses import OnlineTripletLoss
from keras_siamese.metrics import recall_at_k

RECIPES = {
    # name: (mining, soft, unit-normalised, learning rate, cross-batch memory)
    "hard": ("batch_hard", False, False, 1e-3, False),
    "hard_soft": ("batch_hard", True, False, 1e-3, False),
    "hard_unit": ("batch_hard", False, True, 1e-3, False),
    "hard_lr1e-4": ("batch_hard", False, False, 1e-4, False),
    "semi_hard": ("semi_hard", False, False, 1e-3, False),
    "batch_all": ("batch_all", False, False, 1e-3, False),
    "hard_xbm": ("batch_hard", False, False, 1e-3, True),
}
MARGIN = 0.2


def encoder(unit: bool) -> keras.Model:
    layers = [
        keras.Input((784,)),
        keras.layers.Dense(64, activation="relu"),
        keras.layers.Dense(64, activation="sigmoid"),
    ]
    if unit:
        layers.append(keras.layers.UnitNormalization())
    return keras.Sequential(layers)


def run(name: str, data: tuple, per_class: int, steps: int, seed: int) -> dict:
    x_train, y_train, x_test, y_test = data
    mining, soft, unit, learning_rate, memory = RECIPES[name]
    keras.utils.set_random_seed(seed)
    embedder = encoder(unit)
    if memory:
        kwargs = {"mining": mining, "margin": MARGIN, "soft": soft}
        model = CrossBatchMemory(embedder, memory_size=1024, loss_kwargs=kwargs)
        model.compile(optimizer=keras.optimizers.Adam(learning_rate))
    else:
        model = embedder
        model.compile(
            optimizer=keras.optimizers.Adam(learning_rate),
            loss=OnlineTripletLoss(mining=mining, margin=MARGIN, soft=soft),
        )
    dataset = ClassBalancedDataset(
        x_train,
        y_train,
        classes_per_batch=10,
        samples_per_class=per_class,
        steps_per_epoch=steps,
        seed=seed,
    )
    rng = np.random.default_rng(seed)
    probe = x_train[rng.choice(len(x_train), min(512, len(x_train)), replace=False)]
    monitor = CollapseMonitor(probe, encoder=embedder, every_n_batches=50)
    start = time.perf_counter()
    with warnings.catch_warnings():
        warnings.simplefilter("ignore", EmbeddingCollapseWarning)
        history = model.fit(dataset, epochs=1, verbose=0, callbacks=[monitor])
    seconds = time.perf_counter() - start
    embeddings = embedder.predict(x_test, batch_size=4096, verbose=0)
    final_spread = monitor.spreads[-1][2]
    return {
        "recall_at_1": float(recall_at_k(embeddings, y_test, k=1)),
        "collapsed_at_batch": None
        if monitor.collapsed_at is None
        else monitor.collapsed_at[1],
        "spread_ratio": final_spread / monitor.initial_spread,
        "final_loss": float(history.history["loss"][-1]),
        "seconds": seconds,
    }


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--data", help="mnist.npz in the Keras layout.")
    parser.add_argument("--steps", type=int, default=500)
    parser.add_argument("--per-class", type=int, nargs="+", default=[8, 16])
    parser.add_argument("--seeds", type=int, nargs="+", default=[0, 1, 2])
    parser.add_argument(
        "--recipes", nargs="+", choices=sorted(RECIPES), default=list(RECIPES)
    )
    parser.add_argument("--no-json", action="store_true")
    args = parser.parse_args()

    header("MNIST: collapse of online triplet mining")
    x_train, y_train, x_test, y_test = load_mnist(args.data)
    data = (
        x_train.reshape(len(x_train), -1),
        y_train,
        x_test.reshape(len(x_test), -1),
        y_test,
    )
    rows, results = [], {}
    for per_class in args.per_class:
        for name in args.recipes:
            runs = [run(name, data, per_class, args.steps, s) for s in args.seeds]
            results[f"10x{per_class}/{name}"] = runs
            collapsed = sum(r["collapsed_at_batch"] is not None for r in runs)
            rows.append(
                [
                    keras.backend.backend(),
                    f"10 x {per_class}",
                    name,
                    f"{collapsed}/{len(runs)}",
                    " ".join(f"{r['recall_at_1']:.1%}" for r in runs),
                    " ".join(f"{r['spread_ratio']:.2g}" for r in runs),
                    float(np.median([r["seconds"] for r in runs])),
                ]
            )
            print(rows[-1], flush=True)
    print_table(
        [
            "backend",
            "P x K",
            "recipe",
            "collapsed",
            "test recall@1 per seed",
            "final spread / start",
            "s per run",
        ],
        rows,
    )
    write_json("mnist_collapse", results, enabled=not args.no_json)


if __name__ == "__main__":
    main()
