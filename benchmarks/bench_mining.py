"""Time and peak memory of the online triplet miners against the batch size.

For every mining mode and batch size, each implementation runs in a fresh
subprocess, so the peak memory of one configuration is not hidden by an
earlier, larger one (on a CPU the growth of the resident memory,
`ru_maxrss`; on an accelerator the backend's peak allocation there):

- `keras_siamese`: `online_triplet_loss` plus its gradient on the backend in
  `KERAS_BACKEND` (jitted on JAX, a `tf.function` on TensorFlow, eager on
  PyTorch, as in `model.fit`);
- `naive`: the textbook `(B, B, B)` formulation, on the same backend and with
  the same gradient; skipped where its cubic tensors would not fit in
  `--naive-limit-gib`;
- `numpy`: an `O(B^2)`-memory NumPy loop over anchors (forward only, no
  gradient), also a check of the loss value; its peak is `tracemalloc`'s.

Inputs are placed on the device before the clock starts, and the clock stops
once the loss and gradient are back on the host. Both the wall-clock time
and the process CPU time (all threads) are reported: on a machine shared
with other jobs, CPU time is the steadier of the two. The modes run one
after the other at each batch size, so the ratios to `batch_hard` printed at
the end compare runs made side by side. Prints a table and writes
`benchmarks/results/mining-<backend>.json`.

    KERAS_BACKEND=jax python benchmarks/bench_mining.py
    KERAS_BACKEND=torch python benchmarks/bench_mining.py --sizes 256 1024 4096
"""

from __future__ import annotations

import argparse
import json
import os
import resource
import subprocess
import sys
import time
import tracemalloc

import numpy as np

MODES = ("batch_hard", "batch_all", "semi_hard")


def make_batch(size: int, dim: int, per_class: int, seed: int = 0):
    rng = np.random.default_rng(seed)
    labels = rng.permutation(np.arange(size) % max(size // per_class, 1))
    embeddings = rng.normal(size=(size, dim)).astype("float32")
    return labels.astype("int32"), embeddings


def numpy_loss(labels, x, mode: str, margin: float) -> float:
    """Forward-only reference, one anchor at a time (O(B^2) memory)."""
    x = x.astype("float64")
    squares = (x * x).sum(1)
    d = np.sqrt(np.maximum(squares[:, None] - 2 * x @ x.T + squares[None], 0.0))
    np.fill_diagonal(d, 0.0)
    total, count = 0.0, 0
    for a in range(len(labels)):
        same = labels == labels[a]
        same[a] = False
        negatives = np.sort(d[a, labels != labels[a]])
        positives = d[a, same]
        if positives.size == 0 or negatives.size == 0:
            continue
        if mode == "batch_hard":
            total += max(positives.max() - negatives[0] + margin, 0.0)
            count += 1
        elif mode == "semi_hard":
            after = np.searchsorted(negatives, positives, side="right")
            chosen = negatives[np.minimum(after, negatives.size - 1)]
            chosen = np.where(after < negatives.size, chosen, negatives[-1])
            total += np.maximum(positives - chosen + margin, 0.0).sum()
            count += positives.size
        else:
            below = np.searchsorted(negatives, positives + margin, side="left")
            prefix = np.concatenate([[0.0], np.cumsum(negatives)])
            total += (below * (positives + margin) - prefix[below]).sum()
            count += int(below.sum())
    return total / max(count, 1)


def naive_loss(labels, x, mode: str, margin: float):
    """The (B, B, B) formulation, in keras.ops."""
    from keras import ops

    from keras_siamese import pairwise_distances
    from keras_siamese.losses.mining import label_masks

    d = pairwise_distances(x)
    positive, negative = label_masks(ops.convert_to_tensor(labels))
    valid = ops.logical_and(
        ops.expand_dims(positive, 2), ops.expand_dims(negative, 1)
    )  # (a, p, n)
    d_ap, d_an = ops.expand_dims(d, 2), ops.expand_dims(d, 1)
    if mode == "batch_all":
        losses = ops.where(valid, ops.relu(d_ap - d_an + margin), 0.0)
        count = ops.sum(ops.cast(losses > 0, "float32"))
        return ops.sum(losses) / ops.maximum(count, 1.0)
    if mode == "batch_hard":
        gap = ops.max(ops.where(valid, d_ap - d_an, -1e9), axis=(1, 2))
        anchors = ops.any(valid, axis=(1, 2))
        losses = ops.where(anchors, ops.relu(gap + margin), 0.0)
        return ops.sum(losses) / ops.maximum(ops.sum(ops.cast(anchors, "float32")), 1.0)
    farther = ops.logical_and(ops.expand_dims(negative, 1), d_an > d_ap)
    nearest = ops.min(ops.where(farther, d_an, 1e9), axis=2)
    farthest = ops.max(ops.where(negative, d, -1.0), axis=1, keepdims=True)
    chosen = ops.where(ops.any(farther, axis=2), nearest, farthest)
    pairs = ops.logical_and(positive, ops.any(negative, axis=1, keepdims=True))
    losses = ops.where(pairs, ops.relu(d - chosen + margin), 0.0)
    return ops.sum(losses) / ops.maximum(ops.sum(ops.cast(pairs, "float32")), 1.0)


def value_and_grad_runner(fn, x):
    """Return (prepare_seconds, run) where run() gives (value, grad) as NumPy."""
    import keras

    backend = keras.backend.backend()
    start = time.perf_counter()
    if backend == "jax":
        import jax

        x = jax.device_put(x)
        compiled = jax.jit(jax.value_and_grad(fn)).lower(x).compile()
        prepare = time.perf_counter() - start

        def run():
            value, grad = compiled(x)
            return float(value), np.asarray(grad)

        return prepare, run
    if backend == "tensorflow":
        import tensorflow as tf

        tensor = tf.constant(x)

        @tf.function
        def step(e):
            with tf.GradientTape() as tape:
                tape.watch(e)
                value = fn(e)
            return value, tape.gradient(value, e)

        step.get_concrete_function(tensor)
        prepare = time.perf_counter() - start

        def run():
            value, grad = step(tensor)
            return float(value), grad.numpy()

        return prepare, run
    if backend == "torch":
        import torch

        device = "cuda" if torch.cuda.is_available() else "cpu"
        on_device = torch.from_numpy(x).to(device)

        def run():
            e = on_device.detach().requires_grad_()
            value = fn(e)
            (grad,) = torch.autograd.grad(value, [e])
            return float(value), grad.cpu().numpy()

        return 0.0, run
    raise SystemExit(f"unsupported backend {backend!r}")


def worker(impl: str, mode: str, size: int, args) -> dict:
    labels, x = make_batch(size, args.dim, args.per_class)
    repeats = args.repeats if size <= 1024 else 1
    if impl == "numpy":
        tracemalloc.start()
        times, cpu_times = [], []
        for _ in range(repeats):
            start, cpu_start = time.perf_counter(), time.process_time()
            value = numpy_loss(labels, x, mode, args.margin)
            times.append(time.perf_counter() - start)
            cpu_times.append(time.process_time() - cpu_start)
        peak = tracemalloc.get_traced_memory()[1]
        return {
            "value": value,
            "seconds": min(times),
            "cpu_seconds": min(cpu_times),
            "peak_mib": peak / 2**20,
        }
    import _common as common

    from keras_siamese import online_triplet_loss

    baseline = resource.getrusage(resource.RUSAGE_SELF).ru_maxrss
    if impl == "keras_siamese":

        def fn(e):
            return online_triplet_loss(labels, e, mining=mode, margin=args.margin)
    else:

        def fn(e):
            return naive_loss(labels, e, mode, args.margin)

    prepare, run = value_and_grad_runner(fn, x)
    times, cpu_times = [], []
    for _ in range(repeats):
        start, cpu_start = time.perf_counter(), time.process_time()
        value, grad = run()
        times.append(time.perf_counter() - start)
        cpu_times.append(time.process_time() - cpu_start)
    peak = resource.getrusage(resource.RUSAGE_SELF).ru_maxrss
    device_peak = common.accelerator_peak_bytes()
    return {
        "value": value,
        "seconds": min(times),
        "cpu_seconds": min(cpu_times),
        "compile_seconds": prepare,
        "grad_finite": bool(np.isfinite(grad).all()),
        "peak_rss_mib": peak / 1024,
        "peak_mib": (
            (peak - baseline) / 1024 if device_peak is None else device_peak / 2**20
        ),
    }


def run_config(impl: str, mode: str, size: int, args) -> dict:
    command = [sys.executable, __file__, "--worker", impl, mode, str(size)]
    command += ["--dim", str(args.dim), "--per-class", str(args.per_class)]
    command += ["--margin", str(args.margin), "--repeats", str(args.repeats)]
    done = subprocess.run(command, capture_output=True, text=True, check=False)
    if done.returncode != 0:
        tail = (done.stderr or done.stdout).strip().splitlines()[-1:]
        return {"error": f"exit {done.returncode}: {' '.join(tail)}"}
    return json.loads(done.stdout.strip().splitlines()[-1])


def print_ratios(rows: list[dict]) -> list[dict]:
    """Print and return each mode's time over batch_hard's, per batch size."""
    ours = {
        (row["mode"], row["batch"]): row
        for row in rows
        if row["impl"] == "keras_siamese" and "seconds" in row
    }
    ratios = []
    for (mode, size), row in ours.items():
        base = ours.get(("batch_hard", size))
        if mode == "batch_hard" or base is None:
            continue
        ratios.append(
            {
                "mode": mode,
                "batch": size,
                "wall": row["seconds"] / base["seconds"],
                "cpu": row["cpu_seconds"] / max(base["cpu_seconds"], 1e-9),
            }
        )
    if ratios:
        print("\nkeras_siamese time / batch_hard time (same batch size):")
        for ratio in ratios:
            print(
                f"{ratio['mode']:<11}{ratio['batch']:>6}  wall {ratio['wall']:5.2f}x"
                f"  cpu {ratio['cpu']:5.2f}x"
            )
    return ratios


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    parser.add_argument(
        "--sizes", type=int, nargs="+", default=[256, 512, 1024, 2048, 4096]
    )
    parser.add_argument("--modes", nargs="+", default=list(MODES), choices=MODES)
    parser.add_argument("--dim", type=int, default=128)
    parser.add_argument("--per-class", type=int, default=8)
    parser.add_argument("--margin", type=float, default=1.0)
    parser.add_argument("--repeats", type=int, default=3)
    parser.add_argument("--naive-limit-gib", type=float, default=2.0)
    parser.add_argument("--skip-numpy", action="store_true")
    parser.add_argument("--no-json", action="store_true")
    parser.add_argument("--worker", nargs=3, metavar=("IMPL", "MODE", "SIZE"))
    args = parser.parse_args()
    if args.worker:
        impl, mode, size = args.worker
        print(json.dumps(worker(impl, mode, int(size), args)))
        return

    import _common as common

    common.header("Online triplet mining: time and peak memory")
    load = os.getloadavg()
    print(f"load average at start: {load[0]:.2f} {load[1]:.2f} {load[2]:.2f}")
    columns = (
        f"{'mode':<11}{'B':>6}  {'impl':<14}{'loss+grad s':>12}{'cpu s':>9}"
        f"{'compile s':>10}{'peak MiB':>10}{'loss':>12}"
    )
    peak = (
        "peak allocation on the accelerator"
        if common.accelerator()
        else "RSS growth over the process after imports"
    )
    print(
        f"dim={args.dim}, {args.per_class} per class, margin={args.margin}\n"
        f"peak MiB: {peak} (backends), tracemalloc peak (numpy); numpy times the "
        "forward pass only, on the CPU\n"
    )
    print(columns)
    print("-" * len(columns))
    rows, failed = [], 0
    for size in args.sizes:
        for mode in args.modes:
            impls = ["keras_siamese", "naive"] + ([] if args.skip_numpy else ["numpy"])
            for impl in impls:
                cubic_gib = 3 * 4 * size**3 / 2**30
                if impl == "naive" and cubic_gib > args.naive_limit_gib:
                    result = {"skipped": f"(B,B,B) tensors ~{cubic_gib:.0f} GiB"}
                else:
                    result = run_config(impl, mode, size, args)
                rows.append({"mode": mode, "batch": size, "impl": impl, **result})
                if "seconds" in result:
                    print(
                        f"{mode:<11}{size:>6}  {impl:<14}{result['seconds']:>12.3f}"
                        f"{result['cpu_seconds']:>9.3f}"
                        f"{result.get('compile_seconds', 0.0):>10.2f}"
                        f"{result['peak_mib']:>10.0f}{result['value']:>12.6f}"
                    )
                else:
                    failed += "error" in result
                    reason = result.get("skipped") or result.get("error")
                    print(f"{mode:<11}{size:>6}  {impl:<14}  skipped: {reason}")
                sys.stdout.flush()
    ratios = print_ratios(rows)
    load = os.getloadavg()
    print(f"\nload average at the end: {load[0]:.2f} {load[1]:.2f} {load[2]:.2f}")
    common.write_json(
        "mining",
        {
            "dim": args.dim,
            "per_class": args.per_class,
            "margin": args.margin,
            "rows": rows,
            "ratios_to_batch_hard": ratios,
        },
        enabled=not args.no_json,
    )
    if failed:
        raise SystemExit(f"{failed} configuration(s) failed; see the table.")


if __name__ == "__main__":
    main()
