"""Kills during the backup save, restarts, corrupt backups, divergence.

The kills are injected at named points of the save (`tests/faults.py`,
`keras_compact.backup._fault_point`), not timed: each case dies at exactly
one instant, then resumes and checks the epoch and the weights it restored.
"""

import csv
import json
import os
import subprocess
import sys

import keras
import numpy as np
import pytest

from configs import baseline
from keras_compact import backup
from keras_compact import methods
from keras_compact import models
from keras_compact import training
from keras_compact.errors import UsageError
from tests import faults
from tests import testing

# Two epochs of two steps: the kill hits the second epoch's save. The
# backup code is the same for any net; SmallNet-3 (15k params) halves the
# ResNet-20 run (259 s -> 123 s for mid-weights-write, loaded 2 cores).
FIELDS = {"arch": "smallnet3", "steps_per_epoch": 2, "verbose": 0}
CLI = ["--method=baseline", "--smoke", "--dataset=synthetic",
       "--set=" + ",".join(f"{k}={v}" for k, v in FIELDS.items())]


def _config(workdir, **fields):
    config = baseline.get_config("smoke")
    config.dataset = "synthetic"
    config.workdir = str(workdir)
    config.update(FIELDS, **fields)
    return config


class _Restored(keras.callbacks.Callback):
    """Records the epoch and weights a run starts from (after restore)."""

    def on_train_begin(self, logs=None):
        self.epoch = self.model._initial_epoch or 0
        self.weights = [w.numpy() for w in self.model.weights]


def _resume(config, monkeypatch):
    restored = _Restored()
    monkeypatch.setattr(methods.get("baseline"), "callbacks",
                        lambda context: [restored])
    training.run(config)
    return restored


def _epochs_logged(workdir):
    with open(os.path.join(workdir, "log.csv")) as f:
        return [int(row["epoch"]) for row in csv.DictReader(f)]


def _assert_restored(restored, workdir, task, epoch):
    assert restored.epoch == epoch
    with np.load(faults.probe_path(str(workdir), task, epoch)) as probe:
        expected = [probe[f"arr_{i}"] for i in range(len(probe.files))]
    assert len(expected) == len(restored.weights)
    for a, b in zip(restored.weights, expected):
        np.testing.assert_array_equal(a, b)


# (point, truncate, epochs committed when the kill hits the save of 2).
KILLS = [
    pytest.param("weights", True, 1, id="mid-weights-write"),
    pytest.param("record", True, 1, id="mid-record-write",
                 marks=[pytest.mark.slow, pytest.mark.ci_slow]),
    pytest.param("committed", False, 2, id="after-commit",
                 marks=[pytest.mark.slow, pytest.mark.ci_slow]),
]


@pytest.mark.parametrize("point, truncate, committed", KILLS)
def test_kill_during_save_resumes(tmp_path, monkeypatch, point, truncate,
                                  committed):
    fault = f"0:{point}:2" + (":truncate" if truncate else "")
    killed = subprocess.run(
        [sys.executable, "-m", "tests.faults", "trainers.cifar", *CLI,
         f"--workdir={tmp_path}"], cwd=testing.ROOT, capture_output=True,
        text=True, timeout=300,
        env=dict(os.environ, KERAS_COMPACT_FAULT=fault))
    assert killed.returncode == faults.EXIT, killed.stderr[-3000:]
    restored = _resume(_config(tmp_path), monkeypatch)
    _assert_restored(restored, tmp_path, 0, committed)
    model = keras.models.load_model(tmp_path / "model.keras")
    assert int(model.optimizer.iterations) == 2 * FIELDS["steps_per_epoch"]
    # The save that was cut off left no temporary file behind.
    names = set(os.listdir(tmp_path / "backup"))
    assert names == {backup.RECORD, "epoch-1.weights.h5",
                     "epoch-2.weights.h5"}, names


def _legacy_backup(workdir, weights_bytes, record):
    directory = workdir / "backup"
    directory.mkdir(parents=True)
    (directory / backup.LEGACY_WEIGHTS).write_bytes(weights_bytes)
    (directory / backup.RECORD).write_text(record)
    return directory


def test_truncated_legacy_backup_names_the_file_and_the_fix(tmp_path):
    # What a kill during the old in-place save left: 96 bytes of HDF5.
    directory = _legacy_backup(tmp_path, b"\x89HDF\r\n\x1a\n" + bytes(88),
                               json.dumps({"epoch": 1, "batch": 0}))
    with pytest.raises(UsageError) as error:
        training.run(_config(tmp_path))
    message = str(error.value)
    assert "\n" not in message
    assert str(directory / backup.LEGACY_WEIGHTS) in message
    assert f"Delete {directory}" in message


def test_corrupt_record_names_the_file(tmp_path):
    directory = _legacy_backup(tmp_path, b"", '{"epoch": ')
    with pytest.raises(UsageError, match="training_metadata.json is missing,"
                                         " truncated or corrupt"):
        backup.read_checkpoints(str(directory))


@pytest.mark.slow
@pytest.mark.ci_slow
def test_legacy_backup_resumes_and_is_replaced(tmp_path, monkeypatch):
    first = _config(tmp_path / "first", epochs=1)
    training.run(first)
    trained = keras.models.load_model(tmp_path / "first" / "model.keras")
    weights_file = tmp_path / "first.weights.h5"
    trained.save_weights(weights_file)
    workdir = tmp_path / "second"
    _legacy_backup(workdir, weights_file.read_bytes(),
                   json.dumps({"epoch": 1, "batch": 0}))
    restored = _resume(_config(workdir), monkeypatch)
    assert restored.epoch == 1
    for a, b in zip(restored.weights, trained.weights):
        np.testing.assert_array_equal(a, b.numpy())
    # The legacy file stays as the previous checkpoint until the next save.
    assert backup.read_checkpoints(str(workdir / "backup")) == [
        {"epoch": 2, "weights": "epoch-2.weights.h5"},
        {"epoch": 1, "weights": backup.LEGACY_WEIGHTS}]


def test_workers_agree_on_the_newest_common_epoch():
    assert backup.agree([[2, 1], [1, 0]]) == 1
    assert backup.agree([[3, 2], [3, 2], [2, 1]]) == 2
    assert backup.agree([[1, 0], [0]]) == 0
    with pytest.raises(UsageError) as error:
        backup.agree([[5, 4], [0]])
    assert ("backup/ holds epochs 5, 4; backup_worker1/ holds epochs 0"
            in str(error.value))
    assert "new --workdir" in str(error.value)


def _records(workdir):
    return [[c["epoch"] for c in backup.read_checkpoints(
        str(workdir / backup.directory_name(task)))] for task in (0, 1)]


@pytest.mark.slow
@pytest.mark.ci_slow
def test_worker_killed_during_its_save_restarts_in_step(tmp_path):
    """Worker 1 dies saving epoch 2, after the chief saved it; both restart.

    This is the kill that desynchronised the workers: the chief holds
    epoch 2 and worker 1 only epoch 1. On restart both resume from epoch 1
    (the newest both hold) and end with identical weights.
    """
    args = ["tests.faults", "trainers.cifar", *CLI, "--epochs=3",
            f"--workdir={tmp_path}", "--strategy=multi_worker"]
    workers = testing.start_local_workers(
        args, env={"KERAS_COMPACT_FAULT": "1:weights:2"})
    output = workers[1].communicate(timeout=300)[0]
    assert workers[1].returncode == faults.EXIT, output[-3000:]
    try:  # the chief fails on its next collective, or waits for it forever
        workers[0].communicate(timeout=60)
    except subprocess.TimeoutExpired:
        workers[0].kill()
        workers[0].communicate()
    assert _records(tmp_path) == [[2, 1], [1, 0]]

    testing.run_local_workers(args, timeout=300)
    assert _records(tmp_path) == [[3, 2], [3, 2]]
    # The chief trained epoch 2 (index 1) again, in step with worker 1.
    assert _epochs_logged(tmp_path) == [0, 1, 1, 2]
    testing.assert_workers_agree(
        str(tmp_path), lambda: models.build(FIELDS["arch"], (32, 32, 3), 10))


def _feed(callback, losses):
    for step, loss in enumerate(losses):
        callback.on_train_batch_end(step, {"loss": loss})


def test_divergence_stops_like_nan():
    # 10 classes: the floor of the starting loss is log(10) = 2.30.
    _feed(training.StopOnDivergence(10), [2.3, 40.0, 229.0])
    with pytest.raises(training.NonFiniteLossError,
                       match=r"became 231 .*the bound 230.3 = 100 x"):
        _feed(training.StopOnDivergence(10), [2.3, 231.0])
    with pytest.raises(training.NonFiniteLossError, match="became 7e\\+22"):
        _feed(training.StopOnDivergence(10), [9.0, 7e22])
    with pytest.raises(training.NonFiniteLossError, match="became nan at "
                                                          "epoch 1, step 1"):
        _feed(training.StopOnDivergence(10), [float("nan")])


def test_a_resumed_run_keeps_the_fresh_runs_bound():
    # Resumed at a loss of 0.01: the bound stays 100 x log(10), not 1.
    callback = training.StopOnDivergence(10)
    _feed(callback, [0.01, 1.5, 200.0])
    assert callback.bound == pytest.approx(100 * np.log(10))


def _recipe(method, **fields):
    from configs import loader

    config = loader.load(method, arg="smoke")
    config.update({"dataset": "synthetic", "verbose": 0, **fields})
    return config


BAD_CONFIGS = [
    ("od", {"arch": "sc_resnet20"}, "needs a CIFAR ResNet .* Valid: resnet"),
    ("od", {"validation_split": 0.0}, "validation_split=0.0: OD deploys"),
    ("od", {"students": 0}, "students must be an int >= 1"),
    ("od", {"group_num": 3}, "group_num must be 1, 2, 4, 8 or 16"),
    ("od", {"temperature": -1.0}, "temperature must be > 0"),
    ("od", {"block": "ghost"}, "Unknown OD block 'ghost'. Valid OD blocks"),
    ("expandnet", {"expand": "ck+xx"}, "--expand: expand must be one of"),
    ("expandnet", {"expand_rate": 0.0}, "expand_rate must be > 0"),
    ("expandnet", {"arch": "resnet20"}, "Unknown arch supported by expandnet"
                                        " 'resnet20'"),
    ("expandnet", {"arch": "mobilenet_v1_cifar", "expand": "ck+fc"},
     "no hidden fully-connected layer"),
    ("expandnet", {"teacher": "t.h5"}, "--teacher=t.h5: must be a .keras"),
    ("expandnet", {"kd_weight": -1.0}, "kd_weight must be >= 0"),
    ("slimconv", {"arch": "resnet20"}, "needs an Sc arch"),
    ("slimconv", {"slim_k": "5/3"}, "--slim_k: "),
    ("baseline", {"arch": "resnet21"}, "Unknown arch 'resnet21'"),
]


@pytest.mark.parametrize("method, fields, message", BAD_CONFIGS)
def test_bad_method_options_fail_before_any_data_is_read(
        tmp_path, monkeypatch, method, fields, message):
    def no_data(config, strategy):
        raise AssertionError("the data was read before the checks")

    monkeypatch.setattr(training, "load_data", no_data)
    with pytest.raises(UsageError, match=message):
        training.run(_recipe(method, workdir=str(tmp_path), **fields))


class _Students:
    """Stands in for an `OnlineDistillationModel`: counts selections."""

    def __init__(self, best):
        self.students = [keras.layers.Identity(name=f"student{i + 1}")
                         for i in range(3)]
        self.best, self.selections = best, 0

    def select_student(self, data):
        self.selections += 1
        return self.best

    def export_student(self, index):
        return self.students[index]


def test_od_student_selection_is_recorded_and_reused(tmp_path):
    import tensorflow as tf

    from configs import od as od_config
    from keras_compact.methods import od

    config = od_config.get_config("smoke")
    context = training.Context(config, tf.distribute.get_strategy(),
                               str(tmp_path), data=None)
    context.data = type("Splits", (), {"validation": object()})()
    method = methods.get("od")
    model = _Students(best=2)
    assert method.deployable(model, context).name == "student3"
    recorded = json.loads((tmp_path / od.SELECTION).read_text())
    assert recorded == {"epochs": config.epochs, "student": 2,
                        "name": "student3"}
    # A rerun of the finished workdir deploys the recorded student.
    model.best = 0
    assert method.deployable(model, context).name == "student3"
    assert model.selections == 1
    # More epochs trained: a new selection.
    config.epochs += 1
    assert method.deployable(model, context).name == "student1"
    assert model.selections == 2
