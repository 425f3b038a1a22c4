"""The config a workdir was made with, and the refusal to resume another.

The first run that reaches training writes `WORKDIR/config.json`. A later
run in that workdir must match it in every field that changes the result;
only the fields of `RESUMABLE` (and `--epochs` upwards) may differ, and the
file is then updated. A run refused here names the differing fields.

Usage (inside a trainer, with its config; not run as a doctest)::

    check_config(config)   # UsageError if config.json differs
    record_config(config)  # before the first training step
"""

import json
import os

import tensorflow as tf

from keras_compact import files
from keras_compact.errors import UsageError

CONFIG = "config.json"

# Fields that do not change what is trained: where files are, what is
# printed or exported, how steps are grouped on the device.
RESUMABLE = frozenset({"data_dir", "export", "tpu", "verbose", "workdir",
                       "steps_per_execution"})


def _as_json(config):
    return json.loads(json.dumps(config.to_dict()))


def _epochs_may_grow(recorded, current):
    # A step schedule's boundaries are epochs, so more epochs extend the
    # run; a cosine schedule spans all epochs, so its whole curve changes.
    return (current["epochs"] > recorded["epochs"]
            and current.get("schedule") != "cosine")


def differing_fields(recorded, current, finished=False):
    """Names of the fields whose change would alter the result.

    A `finished` run cannot take more epochs (its backup is gone when
    training ends), so there a change of `epochs` always counts.
    """
    names = sorted(set(recorded) | set(current))
    differ = [n for n in names if n not in RESUMABLE
              and recorded.get(n) != current.get(n)]
    if ("epochs" in differ and not finished
            and _epochs_may_grow(recorded, current)):
        differ.remove("epochs")
    return differ


def check_config(config, finished=False):
    """Refuses `config` if `config.workdir` was made with another one.

    `finished`: the workdir holds a finished run that would be reused as
    it is (tools.reproduce's rerun), not resumed.

    Raises:
        UsageError: naming each differing field (recorded -> now) and
            suggesting a new --workdir.
    """
    path = os.path.join(config.workdir, CONFIG)
    if not tf.io.gfile.exists(path):
        return
    try:
        recorded = files.read_json(path)
    except ValueError as error:
        raise UsageError(f"{path} is not valid JSON ({error}); restore it or "
                         "use a new --workdir.") from None
    current = _as_json(config)
    differ = differing_fields(recorded, current, finished)
    if not differ:
        return
    changes = ", ".join(
        f"{n}: {_short(recorded.get(n))} -> {_short(current.get(n))}"
        for n in differ)
    if finished:
        raise UsageError(
            f"{config.workdir} holds a finished run with another config "
            f"({changes}); it is not reused. Use another --workdir, or "
            "delete that folder to run it again.")
    raise UsageError(
        f"--workdir={config.workdir} was made with another config "
        f"({changes}); resuming it would mix two runs. Use a new "
        f"--workdir, or the recorded values (in {path}). Only "
        f"{', '.join(sorted(RESUMABLE))} and more epochs (step "
        "schedule) may change on resume.")


def _short(value, width=40):
    text = repr(value)
    return text if len(text) <= width else text[:width - 3] + "..."


def record_config(config):
    """Writes `config` to `config.workdir/config.json`, atomically."""
    files.write_json(os.path.join(config.workdir, CONFIG), _as_json(config))
