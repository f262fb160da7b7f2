"""The demo: argument parsing, data loading, and short end-to-end runs."""

import os
import subprocess
import sys

import keras
import numpy as np
import pytest

import keras_siamese
from keras_siamese import TrunkHead, Verifier, demo
from keras_siamese import __main__ as cli


def test_parser_defaults():
    args = cli.build_parser().parse_args([])
    assert args.dataset == "digits"
    assert args.data is None
    assert args.loss == "contrastive"
    assert args.backend is None
    assert (args.epochs, args.batch_size, args.seed) == (20, 128, 0)
    assert args.unseen_classes == 5
    assert args.steps_per_epoch == 15


@pytest.mark.parametrize("loss", cli.LOSSES)
def test_parser_accepts_every_loss_and_build_training_makes_it(loss):
    assert cli.build_parser().parse_args(["--loss", loss]).loss == loss
    x = np.random.default_rng(0).random((40, 16)).astype("float32")
    y = np.arange(40) % 4
    encoder = demo.build_encoder(16, 4)
    model, dataset = demo.build_training(loss, encoder, x, y, 16, steps_per_epoch=3)
    assert len(dataset) == 3
    expected = {
        "contrastive": keras_siamese.ContrastiveLoss,
        "triplet": keras_siamese.TripletLoss,
        "batch-hard": keras_siamese.OnlineTripletLoss,
        "semi-hard": keras_siamese.OnlineTripletLoss,
        "supcon": keras_siamese.SupervisedContrastiveLoss,
        "multi-similarity": keras_siamese.MultiSimilarityLoss,
        "circle": keras_siamese.CircleLoss,
        "ntxent": keras_siamese.NTXentLoss,
    }[loss]
    assert type(model.loss) is expected
    if loss in ("contrastive", "triplet"):
        assert model is not encoder
    else:
        assert model is encoder
    if loss == "batch-hard":
        assert model.loss.get_config()["soft"] is True


def test_build_encoder_is_a_cnn_trunk_with_a_head():
    keras.utils.set_random_seed(0)
    encoder = demo.build_encoder(64, 8)
    assert isinstance(encoder, TrunkHead)
    kinds = {type(layer).__name__ for layer in encoder.trunk.layers}
    assert {"Reshape", "Conv2D", "Flatten"} <= kinds
    x = np.random.default_rng(0).random((5, 64)).astype("float32")
    assert encoder.trunk.predict(x, verbose=0).shape == (5, 4 * 4 * 32)
    assert encoder.predict(x, verbose=0).shape == (5, 8)
    # 28x28 images pool twice; other sizes get an MLP trunk.
    assert demo.build_encoder(784, 8).trunk.output_shape == (None, 7 * 7 * 32)
    mlp = demo.build_encoder(5, 8)
    assert "Conv2D" not in {type(layer).__name__ for layer in mlp.trunk.layers}
    assert mlp.trunk.output_shape == (None, 128)


def test_shifted_copies_match_a_loop_reference():
    rng = np.random.default_rng(0)
    x = rng.random((3, 16)).astype("float32")
    x_aug, y_aug = demo.shifted_copies(x, np.array([4, 5, 6]))
    assert x_aug.shape == (15, 16)
    np.testing.assert_array_equal(y_aug, np.tile([4, 5, 6], 5))
    images = x.reshape(3, 4, 4)
    for k, (dy, dx) in enumerate([(0, 0), (-1, 0), (1, 0), (0, -1), (0, 1)]):
        want = np.zeros_like(images)
        for i in range(4):
            for j in range(4):
                if 0 <= i - dy < 4 and 0 <= j - dx < 4:
                    want[:, i, j] = images[:, i - dy, j - dx]
        got = x_aug[3 * k : 3 * k + 3].reshape(3, 4, 4)
        np.testing.assert_array_equal(got, want)
    with pytest.raises(ValueError, match="square"):
        demo.shifted_copies(np.zeros((2, 5)), np.zeros(2))


@pytest.mark.parametrize(
    "argv",
    [
        ["--loss", "hinge"],
        ["--backend", "numpy"],
        ["--epochs", "0"],
        ["--dataset", "x"],
        ["--unseen-classes", "1"],
    ],
)
def test_parser_rejects_bad_values(argv, capsys):
    with pytest.raises(SystemExit) as raised:
        cli.build_parser().parse_args(argv)
    assert raised.value.code == 2
    assert argv[0] in capsys.readouterr().err


def test_stratified_split_keeps_class_proportions():
    y = np.repeat(np.arange(4), [40, 20, 8, 3])
    x = np.arange(len(y))[:, None]
    x_train, y_train, x_test, y_test = demo.stratified_split(x, y, 0.25, seed=1)
    np.testing.assert_array_equal(np.bincount(y_test), [10, 5, 2, 1])
    np.testing.assert_array_equal(np.bincount(y_train), [30, 15, 6, 2])
    # Disjoint, complete, and rows still carry their own labels.
    rows = np.concatenate([x_train[:, 0], x_test[:, 0]])
    np.testing.assert_array_equal(np.sort(rows), np.arange(len(y)))
    np.testing.assert_array_equal(y[x_test[:, 0]], y_test)
    again = demo.stratified_split(x, y, 0.25, seed=1)
    np.testing.assert_array_equal(again[2], x_test)


def test_stratified_split_rejects_bad_input():
    with pytest.raises(ValueError, match="test_fraction"):
        demo.stratified_split(np.zeros((4, 1)), np.array([0, 0, 1, 1]), 1.0)
    with pytest.raises(ValueError, match="at least two"):
        demo.stratified_split(np.zeros((3, 1)), np.array([0, 0, 1]), 0.5)


def test_load_digits_is_stratified_and_scaled():
    x_train, y_train, x_test, y_test = demo.load_data("digits", seed=0)
    assert x_train.shape == (1347, 64) and x_test.shape == (450, 64)
    assert x_train.dtype == np.float32
    assert 0.0 <= x_train.min() and x_train.max() == 1.0
    ratio = np.bincount(y_test) / np.bincount(y_train)
    np.testing.assert_allclose(ratio, 1 / 3, atol=0.03)


def test_load_npz_in_keras_layout(tmp_path):
    rng = np.random.default_rng(0)
    path = tmp_path / "tiny.npz"
    images = rng.integers(0, 256, size=(12, 4, 4), dtype=np.uint8)
    images[0, 0, 0] = 255
    np.savez(
        path,
        x_train=images,
        y_train=np.arange(12) % 3,
        x_test=images[:6],
        y_test=np.arange(6) % 3,
    )
    x_train, y_train, x_test, _ = demo.load_data(path=str(path))
    assert x_train.shape == (12, 16) and x_test.shape == (6, 16)
    np.testing.assert_allclose(x_train, images.reshape(12, 16) / 255.0, rtol=1e-6)
    np.testing.assert_array_equal(y_train, np.arange(12) % 3)

    np.savez(tmp_path / "bad.npz", x=images)
    with pytest.raises(ValueError, match="x_train"):
        demo.load_data(path=str(tmp_path / "bad.npz"))


def test_held_out_classes_are_the_largest_labels():
    y = np.repeat(np.arange(10), 3)
    assert demo.held_out_classes(y, 5).tolist() == [5, 6, 7, 8, 9]
    assert demo.held_out_classes(y, 0).tolist() == []
    with pytest.raises(ValueError, match="fewer than two"):
        demo.held_out_classes(y, 9)
    with pytest.raises(ValueError, match="at least 2"):
        demo.held_out_classes(y, 1)


def test_evaluate_unseen_enrols_half_the_classes_and_rejects_the_rest():
    """With identity embeddings of well-separated classes, everything is right."""
    keras.utils.set_random_seed(0)
    encoder = keras.Sequential([keras.Input((2,)), keras.layers.Identity()])
    rng = np.random.default_rng(0)
    y_enroll, y_query = np.repeat(np.arange(5, 10), 6), np.repeat(np.arange(5, 10), 4)
    centres = rng.normal(size=(10, 2)) * 50
    x_enroll = (centres[y_enroll] + rng.normal(size=(30, 2))).astype("float32")
    x_query = (centres[y_query] + rng.normal(size=(20, 2))).astype("float32")
    verifier = demo.Verifier(encoder, threshold=10.0)
    got = demo.evaluate_unseen(encoder, verifier, x_enroll, y_enroll, x_query, y_query)
    assert got == {
        "one_shot_accuracy": 1.0,
        "one_shot_accuracy_raw_inputs": 1.0,
        "one_shot_ways": 5,
        "enrolled_classes": 3,
        "identification_rate": 1.0,
        "rejection_rate": 1.0,
    }
    assert sorted(set(verifier.index.labels.tolist())) == [5, 6, 7]


def test_unknown_loss_and_dataset_raise():
    encoder = demo.build_encoder(4, 2)
    with pytest.raises(ValueError, match="`loss`"):
        demo.build_training("hinge", encoder, np.zeros((4, 4)), np.array([0, 0, 1, 1]))
    with pytest.raises(ValueError, match="`dataset`"):
        demo.load_data("cifar")


def test_other_backend_restarts_the_interpreter(monkeypatch):
    # main() sets KERAS_BACKEND for the restart; monkeypatch restores it after.
    monkeypatch.setenv("KERAS_BACKEND", keras.backend.backend())
    other = next(name for name in cli.BACKENDS if name != keras.backend.backend())
    calls = []
    monkeypatch.delenv(cli._RESTARTED, raising=False)
    monkeypatch.setattr(
        subprocess, "call", lambda command, env: calls.append((command, env)) or 7
    )
    assert cli.main(["--backend", other, "--epochs", "1"]) == 7
    ((command, env),) = calls
    assert command == [
        sys.executable,
        "-m",
        "keras_siamese",
        "--backend",
        other,
        "--epochs",
        "1",
    ]
    assert env["KERAS_BACKEND"] == other
    assert env[cli._RESTARTED] == "1"


def test_restart_happens_only_once(monkeypatch, capsys):
    # main() sets KERAS_BACKEND for the restart; monkeypatch restores it after.
    monkeypatch.setenv("KERAS_BACKEND", keras.backend.backend())
    other = next(name for name in cli.BACKENDS if name != keras.backend.backend())
    monkeypatch.setenv(cli._RESTARTED, "1")
    monkeypatch.setattr(subprocess, "call", pytest.fail)
    assert cli.main(["--backend", other]) == 2
    assert other in capsys.readouterr().err


@pytest.mark.slow
@pytest.mark.parametrize("loss", cli.LOSSES)
def test_demo_runs_end_to_end(loss, tmp_path, capsys):
    output = tmp_path / "out"
    argv = ["--loss", loss, "--epochs", "2", "--batch-size", "32", "--max-train", "400"]
    argv += ["--output", str(output), "--verbose", "0", "--embedding-dim", "8"]
    argv += ["--steps-per-epoch", "8"]
    assert cli.main(argv) == 0
    printed = capsys.readouterr().out
    assert "Collapse check: no collapse" in printed
    assert "WARNING" not in printed
    for label in ("Test pair accuracy:", "Test ROC AUC:", "Test recall@1:"):
        line = next(line for line in printed.splitlines() if line.startswith(label))
        value = float(line.split(":")[1].split()[0])
        assert 0.0 <= value <= 1.0
    assert "classes [0, 1, 2, 3, 4]" in printed
    assert "Unseen classes [5, 6, 7, 8, 9]: one-shot 5-way accuracy" in printed
    assert "Open-set identification" in printed
    verifier = Verifier.load(output / "index")
    assert verifier.threshold is not None
    assert sorted(set(verifier.index.labels.tolist())) == [5, 6, 7]
    assert verifier.identify(np.zeros((2, 64), "float32")).shape == (2,)
    assert (output / "embeddings.png").read_bytes()[:4] == b"\x89PNG"
    assert (output / "embedding_plots" / "embeddings_grid.png").exists()

    assert isinstance(verifier.encoder, TrunkHead)
    model = keras.saving.load_model(output / "model.keras")
    x = np.random.default_rng(0).random((3, 64)).astype("float32")
    if loss == "contrastive":
        prediction = model.predict([x, x[::-1]], verbose=0)
        assert prediction.shape == (3, 1)
    elif loss == "triplet":
        assert model.predict([x, x, x], verbose=0).shape == (3, 3, 8)
    else:
        assert model.predict(x, verbose=0).shape == (3, 8)


@pytest.mark.slow
def test_module_entry_point_help():
    result = subprocess.run(
        [sys.executable, "-m", "keras_siamese", "--help"],
        capture_output=True,
        text=True,
        env={**os.environ, "KERAS_BACKEND": keras.backend.backend()},
        timeout=300,
        check=False,
    )
    assert result.returncode == 0, result.stderr
    assert "--loss" in result.stdout and "batch-hard" in result.stdout


def _args(tmp_path, *extra):
    argv = ["--output", str(tmp_path / "out"), "--verbose", "0", *extra]
    return cli.build_parser().parse_args(argv)


def test_demo_says_when_the_embeddings_collapse(tmp_path, capsys, monkeypatch):
    """A head that maps every input to one point is reported, not hidden."""

    def constant_head_encoder(input_dim, embedding_dim=32):
        trunk = keras.Sequential([keras.Input((input_dim,)), keras.layers.Dense(8)])
        head = keras.Sequential(
            [
                keras.Input((8,)),
                keras.layers.Dense(embedding_dim, kernel_initializer="zeros"),
            ]
        )
        head.trainable = False
        return TrunkHead(trunk, head)

    monkeypatch.setattr(demo, "build_encoder", constant_head_encoder)
    args = _args(
        tmp_path, "--epochs", "1", "--steps-per-epoch", "2", "--max-train", "100"
    )
    metrics = demo.run(args)
    printed = capsys.readouterr().out
    assert metrics["collapsed"] == 1.0
    assert "WARNING: embedding collapse at the start" in printed
    assert "Collapse check: no collapse" not in printed


@pytest.mark.slow
def test_default_demo_beats_raw_inputs_on_unseen_classes(tmp_path, capsys):
    metrics = demo.run(_args(tmp_path))
    printed = capsys.readouterr().out
    assert metrics["collapsed"] == 0.0
    assert (
        metrics["unseen_one_shot_accuracy"]
        > metrics["unseen_one_shot_accuracy_raw_inputs"]
    )
    assert "better than the raw inputs" in printed
    assert metrics["unseen_identification_rate"] >= 0.9
    assert metrics["unseen_rejection_rate"] >= 0.5


def test_open_set_threshold_turns_away_all_but_far_of_the_strangers():
    """The rehearsal's threshold, checked by a NumPy nearest-neighbour search."""
    rng = np.random.default_rng(0)
    centres = rng.normal(size=(6, 8)) * 3
    y_train = np.repeat(np.arange(6), 30)
    y_test = np.repeat(np.arange(6), 20)
    x_train = (centres[y_train] + rng.normal(size=(180, 8))).astype("float32")
    x_test = (centres[y_test] + rng.normal(size=(120, 8))).astype("float32")
    encoder = keras.Sequential([keras.Input((8,)), keras.layers.Identity()])
    for far in (0.0, 0.05, 0.2):
        verifier = Verifier(encoder)
        calibration = demo.calibrate_open_set(
            verifier, x_train, y_train, x_test, y_test, far=far
        )
        # Classes 0-2 are enrolled; a test example of 3-5 is a stranger.
        gallery = x_train[y_train < 3].astype("float64")
        nearest = np.sqrt(
            ((x_test[:, None].astype("float64") - gallery[None]) ** 2).sum(-1)
        ).min(1)
        strangers = y_test >= 3
        accepted = nearest < verifier.threshold
        assert calibration.target == "far"
        assert np.mean(accepted[strangers]) <= far
        # The largest such threshold: the next stranger's distance is taken.
        next_stranger = np.sort(nearest[strangers & ~accepted])[0]
        assert np.mean(nearest[strangers] <= next_stranger) > far
