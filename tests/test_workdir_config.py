"""WORKDIR/config.json: written at the first start, checked on every rerun."""

import os

import pytest

from configs import baseline
from keras_compact import files
from keras_compact import training
from keras_compact import workdir
from keras_compact.errors import UsageError


def _config(path, **fields):
    config = baseline.get_config("smoke")
    config.update({"dataset": "synthetic", "workdir": str(path),
                   "verbose": 0, "epochs": 1, **fields})
    return config


def _no_data(config, strategy):
    raise AssertionError("the data was read before the config was checked")


def test_first_run_records_its_config(tmp_path):
    config = _config(tmp_path)
    training.run(config)
    recorded = files.read_json(os.path.join(tmp_path, workdir.CONFIG))
    assert recorded == workdir._as_json(config)
    assert recorded["decay_epochs"] == [1]


@pytest.mark.parametrize("fields, named", [
    ({"arch": "resnet32"}, "arch: 'resnet20' -> 'resnet32'"),
    ({"lr": 0.5, "seed": 3}, "lr: 0.1 -> 0.5, seed: 0 -> 3"),
    ({"method": "od", "arch": "resnet20"}, "method: 'baseline' -> 'od'"),
    ({"epochs": 1}, "epochs: 2 -> 1"),
    ({"epochs": 3, "schedule": "cosine"}, "epochs: 2 -> 3, schedule:"),
])
def test_rerun_with_another_config_is_refused_before_training(
        tmp_path, monkeypatch, fields, named):
    workdir.record_config(_config(tmp_path, epochs=2))
    monkeypatch.setattr(training, "load_data", _no_data)
    changed = _config(tmp_path, epochs=2)
    if fields.get("method") == "od":
        from configs import od

        changed = od.get_config("smoke")
        changed.update(dataset="synthetic", workdir=str(tmp_path),
                       verbose=0, epochs=2)
    changed.update(fields)
    with pytest.raises(UsageError) as error:
        training.run(changed)
    message = str(error.value)
    assert named in message and "Use a new --workdir" in message
    assert "\n" not in message and len(message) < 1000


def test_resumable_fields_and_more_epochs_are_accepted(tmp_path):
    workdir.record_config(_config(tmp_path, epochs=2))
    workdir.check_config(_config(tmp_path, epochs=5, verbose=2,
                                 export="tflite", data_dir="/elsewhere",
                                 steps_per_execution=4))


def test_long_values_are_shortened():
    recorded = {"widths": list(range(1000))}
    assert workdir.differing_fields(recorded, {"widths": [1]}) == ["widths"]
    assert len(workdir._short(recorded["widths"])) == 40


def test_a_corrupt_config_json_names_the_file(tmp_path):
    (tmp_path / workdir.CONFIG).write_text("{")
    with pytest.raises(UsageError, match="config.json is not valid JSON"):
        workdir.check_config(_config(tmp_path))
