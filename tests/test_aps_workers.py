"""An APS search on two local workers (MultiWorkerMirroredStrategy).

Also the workers' entry point: `python -m tests.test_aps_workers
trainers.cifar ...` runs the trainer with every `tf.io.gfile` write
printed as a `WRITE <path>` line, so the test sees which worker wrote.
"""

import os
import re
import runpy
import signal
import sys
import time

import numpy as np
import pytest
import tensorflow as tf

from keras_compact import files
from tests import testing

WRITES = ("makedirs", "rename", "remove", "copy")


def _audit_writes():
    opened = tf.io.gfile.GFile

    class Audited(opened):
        def __init__(self, name, mode="r"):
            if "w" in mode or "a" in mode:
                print(f"WRITE GFile {name}", flush=True)
            super().__init__(name, mode)

    def audited(name, function):
        def call(path, *args, **kwargs):
            print(f"WRITE {name} {path}", flush=True)
            return function(path, *args, **kwargs)
        return call

    tf.io.gfile.GFile = Audited
    for name in WRITES:
        setattr(tf.io.gfile, name, audited(name, getattr(tf.io.gfile, name)))


def _args(workdir):
    return ["tests.test_aps_workers", "trainers.cifar", "--method=aps",
            "--smoke", "--dataset=synthetic", "--strategy=multi_worker",
            "--phase=search", f"--workdir={workdir}",
            "--set=verbose=0,search_epochs=3,candidates=4;8,max_macs=3e6"]


def _epochs_run(output):
    return [int(e) for e in re.findall(r"APS epoch (\d+) ", output)]


@pytest.mark.slow
def test_two_workers_search_alike_write_on_the_chief_and_resume(tmp_path):
    state = tmp_path / "aps_search.npz"
    workers = testing.start_local_workers(_args(tmp_path))
    deadline = time.time() + 1200
    while (not state.exists() and time.time() < deadline
           and all(w.poll() is None for w in workers)):
        time.sleep(0.5)
    for worker in workers:  # SIGKILL: no cleanup, as a preemption
        worker.send_signal(signal.SIGKILL)
    first = [w.communicate()[0] for w in workers]
    assert state.exists(), first[0][-3000:]
    killed_at = int(np.load(state)["epoch"])
    assert 1 <= killed_at < 3
    assert not (tmp_path / "aps_widths.json").exists()

    workers = testing.start_local_workers(_args(tmp_path))
    outputs = [w.communicate(timeout=1200)[0] for w in workers]
    for worker, output in zip(workers, outputs):
        assert worker.returncode == 0, output[-3000:]
    # Both resumed after the chief's last epoch, from its files.
    for output in outputs:
        assert _epochs_run(output) == list(range(killed_at + 1, 4)), output[
            -3000:]
    curve = files.read_json(str(tmp_path / "aps_sharing_level.json"))
    assert [r["epoch"] for r in curve] == [1, 2, 3]
    chosen = [re.findall(r"APS search chose widths (\S+) ", o) for o in
              outputs]
    found = files.read_json(str(tmp_path / "aps_widths.json"))
    assert chosen[0] == chosen[1] == [",".join(map(str, found["widths"]))]
    # Only the chief (worker 0) wrote, in both runs; every worker makes
    # the (shared) workdir, as the trainer does for any method.
    writes = [re.findall(r"^WRITE (\w+) (.*)$", o, re.M) for o in
              (first[0], outputs[0], first[1], outputs[1])]
    assert any("aps_search.npz" in p for _, p in writes[0]), first[0][-3000:]
    assert any("aps_widths.json" in p for _, p in writes[1])
    assert [(f, p) for f, p in writes[2] + writes[3] if str(tmp_path) in p
            and (f, p) != ("makedirs", str(tmp_path))] == []


if __name__ == "__main__":
    _audit_writes()
    module, *arguments = sys.argv[1:]
    sys.argv = [module, *arguments]
    os.environ.setdefault("TF_CPP_MIN_LOG_LEVEL", "2")
    runpy.run_module(module, run_name="__main__", alter_sys=True)
