"""Per-epoch backups that a kill at any instant leaves resumable.

`Backup` replaces `keras.callbacks.BackupAndRestore`, which rewrites
`latest.weights.h5` and `training_metadata.json` in place: a kill during
that write leaves a truncated file and no older copy. Here every epoch's
weights go to a new file, `epoch-<N>.weights.h5`, written under a temporary
name and renamed once complete; then the record `training_metadata.json`
(written the same way) is replaced. The record's rename is the commit: before
it the previous record and its weights are intact, after it the new ones
are. The record keeps the last two checkpoints, so that the workers of a
multi-worker run, which save independently, can always agree on an epoch
that all of them hold (they differ by at most one: no worker can finish an
epoch the others have not trained). Epoch 0, the initial weights, counts as
a checkpoint until two real ones exist.

Usage (a training run; not run as a doctest)::

    backup = Backup("/tmp/run/backup")
    model.fit(data, epochs=10, callbacks=[backup])  # killed, started again
    model.fit(data, epochs=10, callbacks=[backup])  # resumes
"""

import json
import os
import re

import keras
import numpy as np
import tensorflow as tf

from keras_compact import distribute
from keras_compact import files
from keras_compact.errors import UsageError

RECORD = "training_metadata.json"
# What Keras's BackupAndRestore (and keras_compact before this module) wrote.
LEGACY_WEIGHTS = "latest.weights.h5"
_WEIGHTS = re.compile(r"epoch-\d+\.weights\.h5")
_INITIAL = {"epoch": 0, "weights": None}


def _fault_point(point, path, epoch):
    """Does nothing: the seam where tests kill the process during a save.

    `point` is one of "weights" (the temporary weights file is complete,
    not yet renamed), "record" (the same for the record) and "committed"
    (the record is renamed, the old weights not yet removed); `path` is the
    file concerned and `epoch` the number of epochs being saved.
    """
    del point, path, epoch


def directory_name(task):
    """The backup folder of cluster task `task` (0: the chief's)."""
    return "backup" if task == 0 else f"backup_worker{task}"


def read_checkpoints(directory):
    """The checkpoints `[{"epoch", "weights"}, ...]` of `directory`, newest
    first; `[_INITIAL]` when there is none yet.

    Raises:
        UsageError: the record is unreadable, naming it and the fix.
    """
    path = os.path.join(directory, RECORD)
    if not tf.io.gfile.exists(path):
        return [_INITIAL]
    try:
        record = files.read_json(path)
        if "checkpoints" not in record:  # the in-place layout of old runs
            return [{"epoch": int(record["epoch"]),
                     "weights": LEGACY_WEIGHTS}]
        return [{"epoch": int(c["epoch"]), "weights": c["weights"]}
                for c in record["checkpoints"]]
    except (ValueError, KeyError, TypeError) as error:
        raise _corrupt(path, directory, error) from None


def _corrupt(path, directory, error):
    reason = str(error).strip().splitlines()[0] if str(error) else type(
        error).__name__
    return UsageError(
        f"{path} is missing, truncated or corrupt ({reason}); an older "
        "keras_compact wrote backups in place, so a kill during a save "
        "could do this. "
        f"Delete {directory} to train again from epoch 0, or use a new "
        "--workdir.")


def agree(checkpoints_by_task):
    """The newest epoch every task holds a checkpoint of.

    Args:
        checkpoints_by_task: one list of checkpoint epochs per cluster task
            (task 0 is the chief).

    Raises:
        UsageError: no epoch is common; names every task's backup folder
            with its epochs, and the fix.
    """
    common = set.intersection(*map(set, checkpoints_by_task))
    if common:
        return max(common)
    held = "; ".join(
        f"{directory_name(task)}/ holds epochs "
        f"{', '.join(map(str, epochs))}"
        for task, epochs in enumerate(checkpoints_by_task))
    raise UsageError(
        f"The workers' backups are inconsistent ({held}): no epoch is held "
        "by every worker, so they cannot resume with identical weights. "
        "Restore the missing backup folders or start again with a new "
        "--workdir.")


def _gather_epochs(strategy, epochs):
    """Every cluster task's checkpoint epochs, by an all-reduce."""
    tasks, task = distribute.num_tasks(), distribute.task_position()
    # Each task fills its own row with epoch + 1 (0: no checkpoint); every
    # local replica adds the same table, so the sum counts it that often.
    table = np.zeros((tasks, 2), "float32")
    table[task, :len(epochs)] = np.asarray(epochs) + 1
    total = strategy.reduce("SUM", strategy.run(lambda: tf.constant(table)),
                            axis=None)
    total = total.numpy() / (strategy.num_replicas_in_sync // tasks) - 1
    return [[round(e) for e in row if e >= 0] for row in total]


class Backup(keras.callbacks.Callback):
    """Saves the model and optimizer after every epoch; restores at start.

    Args:
        directory: this task's backup folder (`directory_name(task)` under
            the workdir).
    """

    def __init__(self, directory):
        super().__init__()
        self.directory = directory
        self._record_path = os.path.join(directory, RECORD)
        self._previous = _INITIAL

    def on_train_begin(self, logs=None):
        checkpoints = read_checkpoints(self.directory)
        epochs = [c["epoch"] for c in checkpoints]
        strategy = self.model.distribute_strategy
        if isinstance(strategy, tf.distribute.MultiWorkerMirroredStrategy):
            epoch = agree(_gather_epochs(strategy, epochs))
        else:
            epoch = epochs[0]
        checkpoint = checkpoints[epochs.index(epoch)]
        if checkpoint["weights"]:
            self._load(os.path.join(self.directory, checkpoint["weights"]))
        self._previous = checkpoint
        self.model._initial_epoch = epoch

    def _load(self, path):
        optimizer = self.model.optimizer
        if optimizer is not None and not optimizer.built:
            optimizer.build(self.model.trainable_variables)
        try:
            self.model.load_weights(path)
        except (OSError, ValueError) as error:
            raise _corrupt(path, self.directory, error) from None

    def on_epoch_end(self, epoch, logs=None):
        tf.io.gfile.makedirs(self.directory)
        name = f"epoch-{epoch + 1}.weights.h5"
        path = os.path.join(self.directory, name)
        with files.atomic_write(path) as temporary:
            self.model.save_weights(temporary)
            _fault_point("weights", temporary, epoch + 1)
        current = {"epoch": epoch + 1, "weights": name}
        with files.atomic_write(self._record_path) as temporary:
            with tf.io.gfile.GFile(temporary, "w") as f:
                json.dump({"checkpoints": [current, self._previous]}, f,
                          indent=2)
            _fault_point("record", temporary, epoch + 1)
        _fault_point("committed", self._record_path, epoch + 1)
        self._remove_unreferenced({name, self._previous["weights"]})
        self._previous = current

    def _remove_unreferenced(self, kept):
        """Deletes older weights, the legacy file and leftover temporaries."""
        for name in tf.io.gfile.listdir(self.directory):
            stale = (_WEIGHTS.fullmatch(name) or name == LEGACY_WEIGHTS
                     or name.startswith(".tmp-"))
            if stale and name not in kept:
                tf.io.gfile.remove(os.path.join(self.directory, name))
