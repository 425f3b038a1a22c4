"""What a run logs: the learning rate each epoch used, one line per epoch
when stdout is a file, and a deployable.keras without a stray optimizer."""

import csv
import glob
import os
import warnings

import keras
import pytest
import tensorflow as tf

from configs import baseline
from configs import expandnet
from keras_compact import training


def _smoke(recipe, workdir, **fields):
    config = recipe.get_config("smoke")
    config.dataset = "synthetic"
    config.workdir = str(workdir)
    for key, value in fields.items():
        config[key] = value
    return config


def _tensorboard_scalars(folder, tag):
    values = {}
    for path in glob.glob(os.path.join(folder, "events.out.tfevents.*")):
        for event in tf.compat.v1.train.summary_iterator(path):
            for value in event.summary.value:
                if value.tag == tag:
                    values[event.step] = float(
                        tf.make_ndarray(value.tensor))
    return values


@pytest.fixture(scope="module")
def baseline_run(tmp_path_factory):
    # Step schedule: 0.1 in epoch 0, x0.1 from epoch 1 on (smoke decays at 1).
    workdir = tmp_path_factory.mktemp("baseline")
    training.run(_smoke(baseline, workdir, lr=0.1, decay_rate=0.1,
                        verbose=1))
    return workdir


def test_log_csv_has_the_learning_rate_of_each_epoch(baseline_run):
    with open(baseline_run / "log.csv") as f:
        rows = list(csv.DictReader(f))
    # float32 schedule values: one rounding, relative error <= 2^-24.
    assert [float(r["lr"]) for r in rows] == pytest.approx([0.1, 0.01],
                                                           rel=1e-6)


def test_tensorboard_has_the_rate_the_epoch_used(baseline_run):
    train = str(baseline_run / "tensorboard" / "train")
    lr = _tensorboard_scalars(train, "epoch_lr")
    assert lr == pytest.approx({0: 0.1, 1: 0.01}, rel=1e-6)
    # Keras's own tag held the next epoch's rate; it is not written.
    assert _tensorboard_scalars(train, "epoch_learning_rate") == {}


def test_progress_is_one_line_per_epoch_when_stdout_is_a_file(tmp_path,
                                                             capfd):
    training.run(_smoke(baseline, tmp_path, verbose=1, epochs=1))
    out = capfd.readouterr().out
    assert "\r" not in out and "\x08" not in out
    assert sum(line.startswith("4/4") for line in out.splitlines()) == 1


def test_deployable_copy_carries_no_optimizer(tmp_path):
    # ExpandNet deploys the contracted copy, evaluated but never trained.
    training.run(_smoke(expandnet, tmp_path, verbose=0))
    with warnings.catch_warnings():
        warnings.simplefilter("error")
        model = keras.models.load_model(tmp_path / "deployable.keras")
    assert getattr(model, "optimizer", None) is None and not model.compiled
