"""The benchmark scripts run on the current backend and count FLOPs correctly.

Each script runs once as a user runs it, as a subprocess with the smallest
sizes, so a change to the package or to Keras that breaks one fails here
rather than in the next benchmark session. Nothing is timed: the scripts'
tables are checked for their rows, not their numbers.
"""

from __future__ import annotations

import importlib.util
import itertools
import json
import os
import subprocess
import sys
from pathlib import Path

import keras
import numpy as np
import pytest

BENCHMARKS = Path(__file__).resolve().parent.parent / "benchmarks"


def run_script(name: str, *args: str, cwd: Path, results: Path | None = None) -> str:
    """Run `benchmarks/<name>` with `args`; return its output, failing on error.

    With `results`, the script writes its JSON there (`BENCH_RESULTS_DIR`).
    """
    env = {**os.environ, "KERAS_BACKEND": keras.backend.backend()}
    if results is not None:
        env["BENCH_RESULTS_DIR"] = str(results)
    done = subprocess.run(
        [sys.executable, str(BENCHMARKS / name), *args],
        capture_output=True,
        text=True,
        cwd=cwd,
        env=env,
        timeout=600,
        check=False,
    )
    assert done.returncode == 0, done.stderr[-3000:]
    return done.stdout


def table_rows(output: str, prefixes: str | tuple[str, ...]) -> list[list[str]]:
    """The cells of the Markdown table rows of `output` that start with `prefixes`."""
    return [
        [cell.strip() for cell in line.strip("|").split("|")]
        for line in output.splitlines()
        if line.startswith(prefixes)
    ]


@pytest.fixture(scope="module")
def small_mnist(tmp_path_factory: pytest.TempPathFactory) -> Path:
    """An `mnist.npz` in the Keras layout, 20 images per class, random pixels."""
    rng = np.random.default_rng(0)
    path = tmp_path_factory.mktemp("data") / "mnist.npz"
    arrays = {}
    for split, per_class in (("train", 20), ("test", 10)):
        labels = np.repeat(np.arange(10), per_class)
        arrays[f"x_{split}"] = rng.integers(0, 256, (len(labels), 28, 28), np.uint8)
        arrays[f"y_{split}"] = rng.permutation(labels).astype(np.uint8)
    np.savez(path, **arrays)
    return path


@pytest.mark.slow
def test_bench_training_reports_every_variant_and_ratio(tmp_path: Path) -> None:
    out = run_script(
        "bench_training.py",
        *("--pairs", "256", "--rounds", "1", "--no-json"),
        cwd=tmp_path,
    )
    for variant in ("a_keras", "b_package", "b_arrays", "c_native", "d_matmuls"):
        assert f"| {variant}" in out
    for ratio in ("b_package/a_keras", "b_package/c_native", "c_native/d_matmuls"):
        assert f"| {ratio}" in out
    assert "Work of one training step" in out
    assert "1.196 MFLOP of matmuls per pair" in out
    assert "device: CPU" in out or "device: GPU" in out


@pytest.mark.slow
def test_bench_branches_times_both_ways(tmp_path: Path) -> None:
    out = run_script(
        "bench_branches.py",
        *("--encoders", "mlp", "--steps", "2", "--rounds", "1", "--no-json"),
        cwd=tmp_path,
    )
    assert "| mlp" in out
    assert "fused speed-up" in out


@pytest.mark.slow
def test_bench_mining_runs_each_implementation(tmp_path: Path) -> None:
    out = run_script(
        "bench_mining.py",
        *("--sizes", "32", "--modes", "semi_hard", "--repeats", "1", "--no-json"),
        cwd=tmp_path,
    )
    rows = [line.split() for line in out.splitlines() if line.startswith("semi_hard")]
    assert [row[2] for row in rows] == ["keras_siamese", "naive", "numpy"]
    # Every implementation reports the same loss (last column).
    losses = [float(row[-1]) for row in rows]
    np.testing.assert_allclose(losses, losses[0], rtol=1e-4)


@pytest.mark.slow
def test_bench_data_measures_every_sampler(tmp_path: Path, small_mnist: Path) -> None:
    out = run_script(
        "bench_data.py",
        *("--data", str(small_mnist), "--batch-sizes", "16"),
        *("--min-time", "0.01", "--repeats", "1", "--out", str(tmp_path / "d.json")),
        cwd=tmp_path,
    )
    first_cells = [line[:9].strip() for line in out.splitlines()]
    for sampler in ("triplets", "pairs", "P x K"):
        assert sampler in first_cells
    assert (tmp_path / "d.json").exists()


@pytest.mark.slow
def test_bench_files_reads_the_folder_every_way(tmp_path: Path) -> None:
    pytest.importorskip("PIL")
    tensorflow = keras.backend.backend() == "tensorflow"
    decoders = ["pillow"]
    if not tensorflow and importlib.util.find_spec("cv2") is not None:
        decoders.append("opencv")
    out = run_script(
        "bench_files.py",
        *("--images", "40", "--classes", "4", "--classes-per-batch", "2"),
        *("--per-class", "2", "--workers", "1", "2", "--repeats", "1"),
        *("--epoch-workers", "3", "--no-json", "--decoder", *decoders),
        cwd=tmp_path,
    )
    rows = [line.strip("|").split("|") for line in out.splitlines() if "|" in line]
    readers = [tuple(cell.strip() for cell in row[:3]) for row in rows]
    for reader in ("from_directory", "from_directory + augment"):
        for decoder in ["tensorflow"] if tensorflow else decoders:
            assert (reader, "1", decoder) in readers
            assert (reader, "2", decoder) in readers
    if importlib.util.find_spec("tensorflow") is not None:
        assert ("image_dataset_from_directory", "tf.data", "tensorflow") in readers
    # The epoch table: arrays first (ratio 1), then the files with 3 workers.
    assert "One training epoch of a small CNN (10 batches)" in out
    epochs = {row[0].strip(): row for row in rows if len(row) == 4}
    assert float(epochs["arrays in memory"][3]) == 1.0
    assert epochs["from_directory"][1].strip() == "3"
    assert float(epochs["from_directory"][2]) > 0


@pytest.mark.slow
def test_mnist_collapse_runs_every_kind_of_recipe(
    tmp_path: Path, small_mnist: Path
) -> None:
    out = run_script(
        "mnist_collapse.py",
        *("--data", str(small_mnist), "--steps", "2", "--seeds", "0"),
        *("--per-class", "2", "--recipes", "hard", "hard_unit", "hard_xbm"),
        "--no-json",
        cwd=tmp_path,
    )
    rows = table_rows(out, f"| {keras.backend.backend()} ")
    assert [row[1:3] for row in rows] == [
        ["10 x 2", recipe] for recipe in ("hard", "hard_unit", "hard_xbm")
    ]


@pytest.mark.slow
@pytest.mark.parametrize("script", ["mnist_contrastive.py", "mnist_triplet.py"])
def test_reproductions_run_from_a_local_file(
    script: str, tmp_path: Path, small_mnist: Path
) -> None:
    out = run_script(
        script,
        *("--data", str(small_mnist), "--epochs", "1", "--verbose", "0", "--no-json"),
        cwd=tmp_path,
    )
    assert f"| {keras.backend.backend()}" in out


@pytest.mark.slow
@pytest.mark.skipif(
    keras.backend.backend() not in ("jax", "torch"),
    reason="the GPU run benchmarks JAX and PyTorch",
)
def test_gpu_script_dry_run_takes_every_step(tmp_path: Path) -> None:
    """`gpu.sh --dry-run` runs the GPU run's steps at tiny sizes and reports them.

    The GPU run is only ever tried on a lent machine, so the CI runs its dry
    run on the current backend: same script, same benchmarks, same outputs.
    """
    backend = keras.backend.backend()
    out = tmp_path / "out"
    done = subprocess.run(
        ["bash", str(BENCHMARKS / "gpu.sh"), "--dry-run"],
        capture_output=True,
        text=True,
        cwd=tmp_path,
        env={
            **os.environ,
            "KERAS_BACKEND": backend,
            "BACKENDS": backend,
            "PYTHON": sys.executable,
            "OUT": str(out),
        },
        timeout=900,
        check=False,
    )
    assert done.returncode == 0, done.stdout[-3000:] + done.stderr[-3000:]
    report = json.loads((out / "gpu.json").read_text())
    status = {
        (step["step"], step["backend"]): step["status"] for step in report["steps"]
    }
    expected = ["training", "branches", "mining"]
    if (BENCHMARKS / "bench_search.py").exists():
        expected.append("search")
    if importlib.util.find_spec("PIL") is not None:
        expected.append("files")
    for step in expected:
        assert status[(step, backend)] == "ok", status
    if backend == "torch":
        assert status[("training_jit", "torch")] == "skipped (dry run)"
    assert "keras " in report["meta"]["versions"]
    assert report["meta"]["nvidia-smi"]

    results = report["results"]
    training = results[f"training-{backend}/training-{backend}"]
    assert set(training["roofline_fraction"]) == {
        "a_keras",
        "b_package",
        "b_arrays",
        "b_fused",
        "b_separate",
        "c_native",
        "d_matmuls",
    }
    assert training["matmul_flops_per_round"][0] > 0
    branches = results[f"branches-{backend}/branches-{backend}"]
    assert branches["encoders"]["mlp"]["fused_speedup"] > 0
    if "files" in expected:
        files = results[f"files-{backend}/bench_files-{backend}"]
        assert [row[0] for row in files["epochs"]] == [
            "arrays in memory",
            "from_directory",
        ]
    mining = results[f"mining-{backend}/mining-{backend}"]["rows"]
    assert [row["impl"] for row in mining] == ["keras_siamese", "naive", "numpy"]
    np.testing.assert_allclose(
        [row["value"] for row in mining], mining[0]["value"], rtol=1e-4
    )

    log = (out / "gpu.md").read_text()
    assert f"| training | {backend} | ok |" in log
    assert "## Training throughput" in log and "## Summary" in log


@pytest.mark.skipif(
    keras.backend.backend() != "jax", reason="XLA's cost analysis is read on JAX"
)
def test_roofline_flops_match_xla_cost_analysis() -> None:
    """The roofline's matmul FLOPs per pair agree with XLA's count of the step.

    XLA counts every operation of the forward and backward pass of both
    branches; the matmuls are all but a few elementwise FLOPs of it.
    """
    import jax
    import jax.numpy as jnp

    sys.path.insert(0, str(BENCHMARKS))
    try:
        import _native as native
    finally:
        sys.path.remove(str(BENCHMARKS))

    batch, features = 64, 784
    params = [
        tuple(map(jnp.asarray, pair)) for pair in native.initial_weights(features)
    ]

    def objective(params, a, b):
        def encode(h):
            for kernel, bias in params:
                h = jax.nn.relu(h @ kernel + bias)
            return h

        return jnp.sum(jnp.square(encode(a) - encode(b)))

    inputs = jnp.ones((batch, features), "float32")
    compiled = jax.jit(jax.grad(objective)).lower(params, inputs, inputs).compile()
    analysis = compiled.cost_analysis()
    if isinstance(analysis, list):
        analysis = analysis[0]
    expected = native.matmul_flops_per_pair(features) * batch
    assert expected <= analysis["flops"] <= 1.02 * expected


@pytest.mark.slow
def test_bench_search_times_every_engine_and_the_metrics(tmp_path: Path) -> None:
    out = run_script(
        "bench_search.py",
        *("--sizes", "500", "--queries", "20", "--repeats", "1", "--k", "5"),
        *("--metrics-sizes", "300", "--calibration-pairs", "1000", "--no-json"),
        cwd=tmp_path,
    )
    assert "| 500     | keras euclidean" in out
    assert "| 500     | keras cosine" in out
    try:
        import faiss  # noqa: F401
    except ImportError:
        assert "faiss not installed" in out
    else:
        for engine in ("faiss IndexFlatL2", "faiss IndexFlatIP", "faiss HNSW"):
            assert f"| {engine}" in out
        assert "keras euclidean: " in out  # the package / faiss ratio
    assert "300 x 128" in out
    assert "1,000 pairs" in out


@pytest.mark.slow
def test_bench_quantized_tabulates_every_quantization(tmp_path: Path) -> None:
    out = run_script(
        "bench_quantized.py",
        *("--count", "2000", "--dim", "32", "--queries", "20", "--clusters", "10"),
        cwd=tmp_path,
    )
    assert "2,000 x 32 float32" in out
    rows = [line for line in out.splitlines() if line.startswith("| ")][1:]
    names = [line.split("|")[1].strip() for line in rows]
    assert (
        names
        == ["exact", "exact"]
        + ["int8"]
        + ["int8 + rescore"] * 2
        + ["binary"]
        + ["binary + rescore"] * 2
    )
    recalls = [float(line.split("|")[7]) for line in rows]
    assert recalls[:2] == [1.0, 1.0]
    assert all(0.0 <= value <= 1.0 for value in recalls)
    memory = [float(line.split("|")[4]) for line in rows]
    # The codes alone: a quarter and a thirty-second of the float32 rows.
    assert memory[2] < memory[0] / 3 and memory[5] < memory[0] / 30


@pytest.mark.slow
def test_compare_losses_scores_each_kind_of_loss_on_unseen_digits(
    tmp_path: Path, small_mnist: Path
) -> None:
    results = tmp_path / "results"
    out = run_script(
        "compare_losses.py",
        *("--data", str(small_mnist), "--smoke", "--seeds", "0"),
        # One loss of each kind: pairs, labelled, proxies (both
        # initialisations), cross-batch memory.
        *("--losses", "contrastive", "supcon", "arcface", "proxy_anchor"),
        "xbm_multi_similarity",
        cwd=tmp_path,
        results=results,
    )
    rows = table_rows(out, f"| {keras.backend.backend()} ")
    record = json.loads(
        (results / f"compare_losses-{keras.backend.backend()}.json").read_text()
    )
    names = list(record["losses"])
    assert names == [
        "contrastive",
        "supcon",
        "arcface",
        "proxy_anchor",
        "xbm_multi_similarity",
    ]
    assert [row[1] for row in rows] == ["(raw pixels, no training)", *names]
    assert 0.0 <= record["raw_pixels"]["recall_at_1"] <= 1.0
    assert record["protocol"]["eval_digits"] == [6, 7, 8, 9]
    assert record["protocol"]["head"] == "sigmoid"  # the notebook's encoder
    for name, entry in record["losses"].items():
        assert [run["seed"] for run in entry["runs"]] == [0], name
        for run in entry["runs"]:
            # Scores on the unseen digits are fractions (4 classes: chance 25%).
            for metric in ("recall_at_1", "map_at_r", "one_shot_4way"):
                assert 0.0 <= run[metric] <= 1.0, (name, metric, run)
            assert run["seconds_per_epoch"] > 0
    # mean ± std over the seeds in every metric column.
    assert all(row[3].count("±") == 1 and row[5].count("±") == 1 for row in rows[1:])


@pytest.mark.slow
def test_compare_losses_full_trains_on_every_digit(
    tmp_path: Path, small_mnist: Path
) -> None:
    out = run_script(
        "compare_losses.py",
        *("--data", str(small_mnist), "--smoke", "--full", "--no-json"),
        cwd=tmp_path,
    )
    rows = table_rows(out, f"| {keras.backend.backend()} ")
    assert [row[1] for row in rows] == ["circle"]
    assert all(0.0 <= float(row[4]) <= 100.0 for row in rows)
    assert "all ten digits: 200 training images, 100 test images" in out
    assert "last layer linear, one-pixel shifts on, cosine decay on" in out


def _import_benchmark(name: str) -> object:
    """Import `benchmarks/<name>.py` (the scripts import their siblings by name)."""
    sys.path.insert(0, str(BENCHMARKS))
    try:
        return importlib.import_module(name)
    finally:
        sys.path.remove(str(BENCHMARKS))


@pytest.mark.parametrize("distance", ["cosine", "euclidean"])
def test_compare_losses_cnn_leave_one_out_equals_retrieval_metrics(
    distance: str,
) -> None:
    import keras_siamese as ks

    script = _import_benchmark("compare_losses_cnn")
    rng = np.random.default_rng(3)
    x = rng.standard_normal((157, 12)).astype(np.float32)
    y = rng.integers(0, 5, 157)
    # Blocks smaller than the set, so that the diagonal is masked per block.
    ours = script.leave_one_out(x, y, distance, block=40)
    expected = ks.retrieval_metrics(
        x, y, distance=distance, metrics=("recall_at_1", "map_at_r")
    )
    assert ours["recall_at_1"] == pytest.approx(float(expected["recall_at_1"]))
    assert ours["map_at_r"] == pytest.approx(float(expected["map_at_r"]))


def test_compare_losses_cnn_random_shift_moves_whole_images() -> None:
    script = _import_benchmark("compare_losses_cnn")
    rng = np.random.default_rng(0)
    images = np.zeros((30, 12, 12, 1), np.float32)
    # Content away from the border, so that a shift of up to 2 loses none.
    images[:, 2:10, 2:10] = rng.random((30, 8, 8, 1))
    shifted = script.RandomShift(2)(images, seed=5)
    assert shifted.shape == images.shape
    moves = set()
    for before, after in zip(images, shifted):
        found = [
            (dy, dx)
            for dy in range(-2, 3)
            for dx in range(-2, 3)
            if np.array_equal(np.roll(before, (dy, dx), axis=(0, 1)), after)
        ]
        assert len(found) == 1
        moves.add(found[0])
    assert len(moves) > 5  # the shifts vary from image to image
    np.testing.assert_array_equal(script.RandomShift(2)(images, seed=5), shifted)


def test_compare_losses_cnn_random_flip_mirrors_about_half() -> None:
    script = _import_benchmark("compare_losses_cnn")
    rng = np.random.default_rng(1)
    images = rng.random((200, 6, 6, 1)).astype(np.float32)
    flipped = script.RandomFlip()(images, seed=7)
    mirrored = [np.array_equal(a, b[:, ::-1]) for a, b in zip(images, flipped)]
    kept = [np.array_equal(a, b) for a, b in zip(images, flipped)]
    assert all(m != k for m, k in zip(mirrored, kept))  # one or the other
    assert 60 < sum(mirrored) < 140
    np.testing.assert_array_equal(script.RandomFlip()(images, seed=7), flipped)
    # After an inner augmentation: its output, mirrored or not.
    shifted = script.RandomShift(1)(images, seed=7)
    both = script.RandomFlip(script.RandomShift(1))(images, seed=7)
    for a, b in zip(shifted, both):
        assert np.array_equal(a, b) or np.array_equal(a[:, ::-1], b)


@pytest.mark.parametrize("kind", ["center", "standardize", "pca"])
def test_compare_losses_cnn_trunk_transform_is_fitted_on_the_given_features(
    kind: str,
) -> None:
    script = _import_benchmark("compare_losses_cnn")
    rng = np.random.default_rng(2)
    mixing = rng.standard_normal((6, 6))
    fit = rng.standard_normal((500, 6)) @ mixing + rng.standard_normal(6)
    fit[:, 2] = 3.0  # a feature that never varies (a dead unit)
    other = rng.standard_normal((40, 6))
    transform = script.fit_transform(fit, kind, 4)
    mapped = transform(fit)
    if kind == "pca":
        # Whitened: the 4 leading axes, uncorrelated with unit variance.
        assert mapped.shape == (500, 4)
        np.testing.assert_allclose(np.cov(mapped.T, bias=True), np.eye(4), atol=1e-8)
        values = np.linalg.eigvalsh(np.cov(fit.T, bias=True))[::-1]
        kept = np.sum(np.var(mapped * np.sqrt(values[:4]), axis=0))
        assert kept == pytest.approx(np.sum(values[:4]))
    else:
        np.testing.assert_allclose(mapped.mean(axis=0), 0.0, atol=1e-9)
        if kind == "standardize":
            expected = np.where(np.arange(6) == 2, 0.0, 1.0)
            np.testing.assert_allclose(mapped.std(axis=0), expected, atol=1e-9)
        else:
            np.testing.assert_allclose(mapped, fit - fit.mean(axis=0))
    # Other rows get the map fitted on `fit`, not their own statistics.
    np.testing.assert_allclose(
        transform(other)[:3], transform(np.concatenate([other[:3], fit]))[:3]
    )
    assert script.fit_transform(fit, "none", 4)(other) is other


@pytest.mark.parametrize(
    ("features", "blocks", "width", "size"),
    [
        ("flatten", 2, 1, 7 * 7 * 32),
        ("flatten", 3, 2, 3 * 3 * 128),
        ("pooled", 2, 1, 16 + 32 + 7 * 7 * 32),
        ("pooled-norm", 3, 1, 16 + 32 + 64 + 3 * 3 * 64),
    ],
)
def test_compare_losses_cnn_encoder_variants(
    features: str, blocks: int, width: int, size: int
) -> None:
    import argparse

    script = _import_benchmark("compare_losses_cnn")
    args = argparse.Namespace(
        features=features, blocks=blocks, width=width, embedding_dim=8
    )
    encoder = script.build_encoder(args)
    images = np.random.default_rng(0).random((3, 28, 28, 1)).astype(np.float32)
    trunk = script.trunk_of(encoder)
    values = keras.ops.convert_to_numpy(trunk(images))
    assert values.shape == (3, size)
    assert keras.ops.convert_to_numpy(encoder(images)).shape == (3, 8)
    if features == "pooled-norm":
        # Each part (a pool per block, then the flattened maps) has unit length.
        edges = np.cumsum([0, 16, 32, 64, 3 * 3 * 64])
        for start, stop in itertools.pairwise(edges):
            norms = np.linalg.norm(values[:, start:stop], axis=1)
            np.testing.assert_allclose(norms, 1.0, rtol=1e-4)


def test_compare_losses_cnn_instance_term_adds_supcon_on_instance_labels() -> None:
    import keras_siamese as ks

    script = _import_benchmark("compare_losses_cnn")
    rng = np.random.default_rng(4)
    y = np.tile(np.array([0, 0, 1, 1, 2, 2]), 2)  # two views of 6 examples
    z = rng.standard_normal((12, 5)).astype(np.float32)
    base = ks.CircleLoss()
    combined = script.with_instance_term(base, 0.5, 2)
    instance = np.tile(np.arange(6), 2)
    expected = float(base(y, z)) + 0.5 * float(
        ks.SupervisedContrastiveLoss()(instance, z)
    )
    got = float(keras.ops.convert_to_numpy(combined(y, z)))
    assert got == pytest.approx(expected, rel=1e-5)
    assert got != pytest.approx(float(base(y, z)), rel=1e-3)


@pytest.mark.slow
@pytest.mark.parametrize(
    ("protocol", "levers"),
    [
        ("mnist", ()),
        # The levers' code paths: another trunk, flips, two views with the
        # instance term, a whitened trunk.
        (
            "fashion",
            (
                *("--features", "pooled-norm", "--blocks", "3", "--flip"),
                *("--views", "2", "--instance-weight", "0.5"),
                *("--trunk-transform", "pca", "--pca-dim", "8"),
            ),
        ),
    ],
)
def test_compare_losses_cnn_scores_trunk_and_head_on_unseen_classes(
    tmp_path: Path, small_mnist: Path, protocol: str, levers: tuple
) -> None:
    results = tmp_path / "results"
    out = run_script(
        "compare_losses_cnn.py",
        *("--protocol", protocol, "--data", str(small_mnist), "--smoke"),
        *("--seeds", "0", "1", "--losses", "supcon", "arcface", *levers),
        cwd=tmp_path,
        results=results,
    )
    rows = table_rows(out, f"| {keras.backend.backend()} ")
    assert [row[1] for row in rows] == [
        "(raw pixels, no training)",
        "(untrained CNN)",
        "supcon",
        "arcface",
    ]
    # Trunk and head, three metrics each, mean ± std over the two seeds.
    assert all(cell.count("±") == 1 for row in rows[1:] for cell in row[2:8])
    name = f"compare_losses_cnn_{protocol}-{keras.backend.backend()}.json"
    record = json.loads((results / name).read_text())
    unseen = {"mnist": [6, 7, 8, 9], "fashion": [0, 1, 2, 3, 4]}[protocol]
    assert record["protocol"]["eval_classes"] == unseen
    assert record["protocol"]["one_shot_ways"] == min(5, len(unseen))
    assert f"{len(unseen)}-way 1-shot" in out
    if levers:
        assert record["protocol"]["trunk_transform"] == "pca"
        assert record["protocol"]["views"] == 2
    for entry in record["losses"].values():
        assert [run["seed"] for run in entry["runs"]] == [0, 1]
        for run in entry["runs"]:
            for part in ("trunk", "head"):
                for metric in ("recall_at_1", "map_at_r", "one_shot"):
                    assert 0.0 <= run[part][metric] <= 1.0, (part, metric, run)


@pytest.mark.slow
def test_compare_losses_cnn_full_trains_on_every_digit(
    tmp_path: Path, small_mnist: Path
) -> None:
    out = run_script(
        "compare_losses_cnn.py",
        *("--data", str(small_mnist), "--smoke", "--full", "--no-json"),
        cwd=tmp_path,
    )
    rows = table_rows(out, f"| {keras.backend.backend()} ")
    assert [row[1] for row in rows] == ["circle"]
    assert all(0.0 <= float(row[4]) <= 100.0 for row in rows)
    assert "all ten digits: 200 training images, 100 test images" in out


@pytest.mark.slow
def test_bench_matryoshka_scores_every_kept_dimension(
    tmp_path: Path, small_mnist: Path
) -> None:
    out = run_script(
        "bench_matryoshka.py",
        *("--data", str(small_mnist), "--dims", "8", "4", "--epochs", "1"),
        *("--train-size", "100", "--test-size", "100", "--no-json"),
        cwd=tmp_path,
    )
    rows = [line.split("|")[1:-1] for line in out.splitlines() if line.startswith("| ")]
    scored = {(r[0].strip(), r[1].strip()): r[2:] for r in rows if len(r) == 4}
    for name in ("SupCon", "Matryoshka SupCon"):
        for dim in ("8", "4"):
            recall, map_at_r = (float(v) for v in scored[(name, dim)])
            assert 0.0 <= recall <= 100.0 and 0.0 <= map_at_r <= 100.0
    assert ("raw pixels (784)", "") in scored


def test_common_view_augment_crops_flips_and_jitters_by_seed() -> None:
    common = _import_benchmark("_common")
    rng = np.random.default_rng(0)
    images = rng.random((12, 10, 10, 1)).astype(np.float32)
    plain = dict(scale=(1.0, 1.0), ratio=(1.0, 1.0), jitter=0.0)
    np.testing.assert_allclose(
        common.ViewAugment(**plain, flip=0.0)(images, seed=1), images, atol=1e-6
    )
    np.testing.assert_allclose(
        common.ViewAugment(**plain, flip=1.0)(images, seed=1),
        images[:, :, ::-1],
        atol=1e-6,
    )
    augment = common.ViewAugment()
    views = augment(images, seed=4)
    assert views.shape == images.shape and views.dtype == np.float32
    assert views.min() >= 0.0 and views.max() <= 1.0
    np.testing.assert_array_equal(augment(images, seed=4), views)
    assert not np.allclose(augment(images, seed=5), views)
    # A crop of a quarter of the area magnifies: a constant image stays
    # constant, a left-right ramp keeps its direction or mirrors it.
    ramp = np.tile(np.linspace(0.2, 0.8, 10, dtype=np.float32), (4, 10, 1))[..., None]
    cropped = common.ViewAugment(
        scale=(0.25, 0.25), ratio=(1.0, 1.0), flip=0.0, jitter=0.0
    )(ramp, seed=2)
    steps = np.diff(cropped[:, 0, :, 0], axis=1)
    assert np.all(steps >= -1e-6)
    assert np.all(cropped[:, :, -1] - cropped[:, :, 0] < 0.6 * 0.75)


@pytest.mark.slow
def test_compare_ssl_scores_every_method_against_raw_pixels(
    tmp_path: Path, small_mnist: Path
) -> None:
    results = tmp_path / "results"
    out = run_script(
        "compare_ssl.py",
        *("--data", str(small_mnist), "--quick", "--seeds", "0", "1"),
        *("--start-momentum", "0.9", "--method-lr", "simclr=0.002"),
        cwd=tmp_path,
        results=results,
    )
    rows = table_rows(out, f"| {keras.backend.backend()} ")
    methods = ["simsiam", "byol", "barlow_twins", "vicreg", "simclr", "supcon"]
    assert [row[1] for row in rows] == ["(raw pixels)", *methods]
    assert 0.0 <= float(rows[0][2]) <= 100.0
    assert all(row[2].count("±") == 1 for row in rows[1:])
    record = json.loads(
        (results / f"compare_ssl-{keras.backend.backend()}.json").read_text()
    )
    assert record["settings"]["k"] == 200
    for method in methods:
        runs = record["methods"][method]
        assert [run["seed"] for run in runs] == [0, 1]
        for run in runs:
            assert 0.0 <= run["knn_accuracy"] <= 1.0
            assert 0.0 < run["normalized_std"] < 1.0
            assert run["seconds_per_epoch"] > 0
            # The learning rate and BYOL's momentum the models were built with.
            assert run["peak_lr"] == (0.002 if method == "simclr" else 0.001)
            assert run.get("start_momentum") == (0.9 if method == "byol" else None)
    heads = {row[1]: row[5] for row in rows}
    assert heads["byol"].endswith("m 0.9 -> 1")
    assert heads["simclr"].endswith("lr 0.002")


@pytest.mark.slow
def test_bench_ssl_times_keras_and_lightly_on_the_same_views(tmp_path: Path) -> None:
    if keras.backend.backend() != "torch":
        pytest.skip("the comparison with lightly's loop runs on PyTorch")
    from tests import lightly_reference

    if lightly_reference.root() is None:
        pytest.skip("lightly is not installed")
    out = run_script("bench_ssl.py", "--quick", "--no-json", cwd=tmp_path)
    rows = table_rows(out, ("| simsiam", "| byol"))
    assert [row[0] for row in rows] == ["simsiam", "byol"]
    for row in rows:
        keras_ms, first_ms, lightly_ms = (float(cell) for cell in row[2:5])
        assert min(keras_ms, first_ms, lightly_ms) > 0
        assert float(row[5]) == pytest.approx(keras_ms / lightly_ms, rel=0.05)
        assert float(row[6]) == pytest.approx(first_ms / lightly_ms, rel=0.05)


@pytest.mark.slow
def test_ranking_demo_scores_every_row_with_the_ranking_metrics(
    tmp_path: Path, small_mnist: Path
) -> None:
    results = tmp_path / "results"
    out = run_script(
        "ranking_demo.py",
        *("--data", str(small_mnist), "--train-size", "48", "--gallery", "30"),
        *("--epochs", "1", "--mined-epochs", "1", "--batch-size", "16"),
        *("--seeds", "0", "1"),
        cwd=tmp_path,
        results=results,
    )
    rows = table_rows(out, ("| raw", "| untrained", "| MNRL"))
    names = [
        "raw pixels",
        "untrained encoder",
        "MNRL in-batch",
        "MNRL + random negatives",
        "MNRL + mined",
        "MNRL + mined, symmetric",
    ]
    assert [row[0] for row in rows] == names
    for row in rows[1:]:  # mean ± std over the two seeds
        assert all(cell.count("±") == 1 for cell in row[1:7])
    record = json.loads(
        (results / f"ranking_demo-{keras.backend.backend()}.json").read_text()
    )
    assert record["args"]["seeds"] == [0, 1] and len(record["runs"]) == 2
    for scores in [
        record["raw"],
        *(run[n] for run in record["runs"] for n in names[1:]),
    ]:
        for key in ("ndcg_at_10", "mrr_at_10", "recall_at_1", "recall_at_10"):
            assert 0.0 <= scores[key] <= 1.0
        # One relevant row a query: recall@10 is at least recall@1, and
        # MAP@100 equals MRR@100, at least MRR@10.
        assert scores["recall_at_10"] >= scores["recall_at_1"]
        assert scores["map_at_100"] == pytest.approx(scores["mrr_at_100"])
        assert scores["map_at_100"] >= scores["mrr_at_10"] - 1e-12
        assert 0.0 <= scores["class_at_1"] <= 1.0
    for run in record["runs"]:
        assert all(run[n]["seconds"] > 0 for n in names[2:])
