"""The training run end to end: metrics, resume, bad input, distribution."""

import csv
import dataclasses
import json
import os
import subprocess
import sys

import keras
import numpy as np
import pytest

from configs import baseline
from configs import common
from keras_compact import distribute
from keras_compact import methods
from keras_compact import models
from keras_compact import training
from keras_compact.errors import UsageError
from tests import testing

ROOT = testing.ROOT


def _smoke_config(workdir, **fields):
    config = baseline.get_config("smoke")
    config.dataset = "synthetic"
    config.workdir = str(workdir)
    config.verbose = 0
    for key, value in fields.items():
        config[key] = value
    return config


def _losses(workdir):
    with open(os.path.join(workdir, "log.csv")) as f:
        return [(int(r["epoch"]), float(r["loss"])) for r in csv.DictReader(f)]


def test_run_writes_metrics_and_exports(tmp_path):
    config = _smoke_config(tmp_path, export="tflite")
    metrics = training.run(config)
    with open(tmp_path / "metrics.json") as f:
        saved = json.load(f)
    assert saved["params"] == 272_474 and saved["macs"] == 40_813_184
    assert 0.0 <= saved["test_accuracy"] <= 1.0
    assert saved["train_images_per_second"] > 0
    assert metrics["test_accuracy"] == saved["test_accuracy"]
    assert os.path.isfile(tmp_path / "export" / "model.tflite")
    assert os.path.isdir(tmp_path / "tensorboard")
    assert [e for e, _ in _losses(tmp_path)] == [0, 1]


def _state(model):
    """Every weight and optimizer variable (momentum buffers included)."""
    return [(v.name, keras.ops.convert_to_numpy(v))
            for v in model.weights + model.optimizer.variables]


class _Interrupt(keras.callbacks.Callback):
    """Records the state, then kills the run as epoch 1 begins."""

    def __init__(self, states):
        super().__init__()
        self.states = states

    def on_epoch_begin(self, epoch, logs=None):
        if epoch == 1:
            self.states.append(_state(self.model))
            raise KeyboardInterrupt("simulated preemption")


class _Record(keras.callbacks.Callback):
    """Records the state as the first resumed epoch begins."""

    def __init__(self, states):
        super().__init__()
        self.states = states

    def on_epoch_begin(self, epoch, logs=None):
        if len(self.states) == 1:
            self.states.append(_state(self.model))


def test_interrupted_run_resumes(tmp_path, monkeypatch):
    config = _smoke_config(tmp_path, epochs=3)
    baseline_method = methods.get("baseline")
    states = []
    monkeypatch.setattr(baseline_method, "callbacks",
                        lambda context: [_Interrupt(states)])
    with pytest.raises(KeyboardInterrupt):
        training.run(config)
    assert [e for e, _ in _losses(tmp_path)] == [0]
    monkeypatch.setattr(baseline_method, "callbacks",
                        lambda context: [_Record(states)])
    training.run(config)
    monkeypatch.undo()
    # Epoch 0 is not trained again; the optimizer counted every step once.
    assert [e for e, _ in _losses(tmp_path)] == [0, 1, 2]
    model = keras.models.load_model(tmp_path / "model.keras")
    assert int(model.optimizer.iterations) == 3 * config.steps_per_epoch
    # The restore gives back exactly what the kill interrupted: weights, BN
    # statistics, step count and every momentum buffer (a resume that
    # zeroed them would still count the epochs right).
    killed, restored = states
    momentums = [v for name, v in killed if "momentum" in name]
    assert momentums and all(np.any(v) for v in momentums)
    assert [name for name, _ in restored] == [name for name, _ in killed]
    for (name, before), (_, after) in zip(killed, restored):
        np.testing.assert_array_equal(after, before, name)


def test_non_finite_loss_stops_with_a_clear_error(tmp_path):
    config = _smoke_config(tmp_path, lr=1e30)
    with pytest.raises(training.NonFiniteLossError, match="Lower the learn"):
        training.run(config)


def test_batch_smaller_than_replicas_is_refused(tmp_path):
    config = _smoke_config(tmp_path, strategy="mirrored", batch_size=1)
    with pytest.raises(ValueError, match="multiple of the 2 replicas"):
        training.run(config)


def test_unknown_names_list_the_valid_ones(tmp_path):
    cases = {"method": "Valid methods: .*baseline",
             "arch": "Valid archs: .*resnet20",
             "dataset": "Valid datasets: .*fashion_mnist",
             "strategy": "Valid strategys: .*mirrored",
             "optimizer": "Valid optimizers: adam, sgd",
             "schedule": "Valid schedules: cosine, step"}
    for field, message in cases.items():
        with pytest.raises(ValueError, match=message):
            training.run(_smoke_config(tmp_path, **{field: "nope"}))


def test_config_overrides_are_typed():
    config = baseline.get_config("smoke,lr=0.05,nesterov=true,"
                                 "decay_epochs=3;5")
    assert config.lr == 0.05 and config.nesterov is True
    assert tuple(config.decay_epochs) == (3, 5)
    with pytest.raises(ValueError, match="Unknown config field 'lrr'"):
        common.set_field(config, "lrr", "1")
    with pytest.raises(ValueError, match="expects true or false"):
        common.set_field(config, "nesterov", "maybe")


def test_l2_sgd_matches_torch_sgd_update():
    from keras_compact import optimizers

    w0 = np.array([1.0, -2.0], "float32")
    grads = [np.array([0.5, 0.25], "float32"), np.array([-1.0, 2.0],
                                                         "float32")]
    variable = keras.Variable(w0)
    opt = optimizers.L2SGD(learning_rate=0.1, momentum=0.9, l2=0.01)
    for g in grads:
        opt.apply([g], [variable])
    # torch.optim.SGD: d = g + wd * w; buf = m * buf + d; w -= lr * buf.
    w, buf = w0.astype("float64"), np.zeros(2)
    for g in grads:
        buf = 0.9 * buf + (g + 0.01 * w)
        w = w - 0.1 * buf
    np.testing.assert_allclose(variable.numpy(), w, rtol=1e-6)


def test_step_schedule_with_warmup():
    from keras_compact import optimizers

    schedule = optimizers.WarmupStepDecay(0.1, [10, 20], 0.1, warmup_steps=4)
    rates = [float(schedule(s)) for s in (0, 3, 9, 10, 25)]
    np.testing.assert_allclose(rates, [0.025, 0.1, 0.1, 0.01, 0.001],
                               rtol=1e-5)


def _train_on_halves(monkeypatch, workdir, strategy, copies):
    """`training.run` on 4 fixed half batches, each repeated `copies` times.

    Returns the losses of log.csv and the saved model.
    """
    import tensorflow as tf

    rng = np.random.default_rng(0)
    halves = [(rng.normal(size=(8, 32, 32, 3)).astype("float32"),
               rng.integers(0, 10, 8)) for _ in range(4)]
    x = np.concatenate([np.concatenate([h[0]] * copies) for h in halves])
    y = np.concatenate([np.concatenate([h[1]] * copies) for h in halves])
    load_data = training.load_data

    def fixed_batches(config, strategy):
        splits = load_data(config, strategy)
        train = tf.data.Dataset.from_tensor_slices((x, y)).batch(8 * copies)
        return dataclasses.replace(splits, train=train)

    monkeypatch.setattr(training, "load_data", fixed_batches)
    training.run(_smoke_config(workdir, arch="smallnet3", strategy=strategy,
                               batch_size=8 * copies, steps_per_epoch=2))
    monkeypatch.undo()
    return ([loss for _, loss in _losses(workdir)],
            keras.models.load_model(workdir / "model.keras"))


def test_mirrored_on_identical_halves_equals_default_strategy(
        tmp_path, monkeypatch):
    """2 replicas, each given the same half batch, vs one device on it.

    Each replica then runs the same kernels on the same values as the
    single-device step, BN included (its batch statistics are the half's),
    and the cross-replica mean of two equal gradients (g/2 + g/2) is exact
    in binary floating point: the runs are bit for bit equal (measured with
    oneDNN on and off, 1 and 2 threads). The tolerances only admit a few
    ulp, should a kernel's reduction order ever depend on thread
    scheduling; a gradient summed instead of averaged over the replicas
    doubles every update and fails by far.
    """
    assert distribute.get("mirrored").num_replicas_in_sync == 2
    default_losses, default = _train_on_halves(
        monkeypatch, tmp_path / "default", "default", copies=1)
    mirrored_losses, mirrored = _train_on_halves(
        monkeypatch, tmp_path / "mirrored", "mirrored", copies=2)
    np.testing.assert_allclose(mirrored_losses, default_losses, rtol=1e-6)
    assert int(mirrored.optimizer.iterations) == 4
    pairs = list(zip(default.weights + default.optimizer.variables,
                     mirrored.weights + mirrored.optimizer.variables))
    assert len(pairs) > len(default.weights)  # momentum buffers compared
    for a, b in pairs:
        a, b = keras.ops.convert_to_numpy(a), keras.ops.convert_to_numpy(b)
        np.testing.assert_allclose(b, a, rtol=0,
                                   atol=1e-6 * max(np.abs(a).max(), 1e-3))


@pytest.mark.parametrize("tpu", ["", "no-such-tpu"])
def test_tpu_without_a_tpu_fails_clearly(tpu):
    # A name goes through the GCE metadata server: a URLError off Cloud.
    with pytest.raises(UsageError, match="No TPU reachable"):
        distribute.get("tpu", tpu=tpu)


def test_multi_worker_needs_tf_config(monkeypatch):
    monkeypatch.delenv("TF_CONFIG", raising=False)
    with pytest.raises(ValueError, match="TF_CONFIG"):
        distribute.get("multi_worker")


@pytest.mark.slow
@pytest.mark.ci_slow
def test_two_workers_on_localhost_end_with_identical_weights(tmp_path):
    testing.run_local_workers(
        ["trainers.cifar", "--method=baseline", "--smoke",
         "--dataset=synthetic", "--strategy=multi_worker",
         f"--workdir={tmp_path}", "--set=verbose=0"], timeout=300)
    testing.assert_workers_agree(
        str(tmp_path), lambda: models.build("resnet20", (32, 32, 3), 10))
    # Only the chief writes the final model and metrics.
    assert os.path.isfile(tmp_path / "metrics.json")
    assert not os.path.isdir(tmp_path / "backup_worker0")


def test_trainer_cli_help_lists_registries():
    result = subprocess.run(
        [sys.executable, "-m", "trainers.cifar", "--helpshort"], cwd=ROOT,
        capture_output=True, text=True, timeout=120)
    # absl exits with 1 after printing the help.
    assert "resnet56" in result.stdout, result.stderr[-2000:]
    assert "fashion_mnist" in result.stdout
    assert "--workdir" in result.stdout


def test_real_data_fashion_mnist_reaches_70_percent(tmp_path):
    if not os.path.isdir("/usr/share/datasets/fashion-mnist"):
        pytest.skip("apt-get install dataset-fashion-mnist")
    config = baseline.get_config(
        "dataset=fashion_mnist,epochs=2,train_subset=12800,"
        f"decay_epochs=1,workdir={tmp_path}")
    config.verbose = 0
    metrics = training.run(config)
    losses = [loss for _, loss in _losses(tmp_path)]
    assert losses[1] < losses[0]
    assert metrics["test_accuracy"] >= 0.70, metrics
