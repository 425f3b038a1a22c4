"""Runs a trainer with a kill injected into its backup save.

    KERAS_COMPACT_FAULT=TASK:POINT:EPOCH[:truncate] \\
        python -m tests.faults trainers.cifar --workdir=... ...

On cluster task TASK (0 without a cluster), when the save of EPOCH epochs
reaches POINT (see `keras_compact.backup._fault_point`), the process dies
at once with `os._exit(EXIT)` (no cleanup, as under SIGKILL); `truncate`
first cuts the file being written to 96 bytes, which is what a kill in the
middle of the write leaves. Before every save the model's weights are also
written to `WORKDIR/probe/task<TASK>-epoch<N>.npz`, so a test can compare
what a resumed run restores with what the killed one had in memory.
"""

import os
import runpy
import sys

import numpy as np

from keras_compact import backup
from keras_compact import distribute

EXIT = 17


def probe_path(workdir, task, epoch):
    return os.path.join(workdir, "probe", f"task{task}-epoch{epoch}.npz")


def _install(spec, workdir):
    task, point, epoch, *mode = spec.split(":")
    here = distribute.task_position()

    def fault_point(at, path, saving):
        if here == int(task) and at == point and saving == int(epoch):
            if mode == ["truncate"]:
                with open(path, "r+b") as f:
                    f.truncate(96)
            os._exit(EXIT)

    backup._fault_point = fault_point
    save = backup.Backup.on_epoch_end

    def probing_save(self, epoch, logs=None):
        path = probe_path(workdir, here, epoch + 1)
        os.makedirs(os.path.dirname(path), exist_ok=True)
        np.savez(path, *[w.numpy() for w in self.model.weights])
        save(self, epoch, logs)

    backup.Backup.on_epoch_end = probing_save


def main():
    module, *args = sys.argv[1:]
    workdir = next(a.split("=", 1)[1] for a in args
                   if a.startswith("--workdir="))
    if os.environ.get("KERAS_COMPACT_FAULT"):
        _install(os.environ["KERAS_COMPACT_FAULT"], workdir)
    sys.argv = [module, *args]
    runpy.run_module(module, run_name="__main__", alter_sys=True)


if __name__ == "__main__":
    main()
