"""Saves every case as `.keras` on this backend, or checks saved ones.

`python -m tests.backends.keras_files save DIR` writes DIR/<case>.keras
and DIR/<case>.npz (inputs and outputs); `check DIR` loads each file on
the current backend and compares its outputs with the saved ones, within
`cases.tolerance`, and exits 1 listing the cases that differ.
"""

import os
import sys

import keras
import numpy as np

import keras_compact  # noqa: F401  (registers the layers for load_model)
from tests.backends import cases


def save_all(directory):
    os.makedirs(directory, exist_ok=True)
    for case in cases.CASES:
        keras.utils.set_random_seed(3)
        model = cases.build_model(case)
        x = cases.inputs_for(case)
        model.save(os.path.join(directory, f"{case[0]}.keras"))
        np.savez(os.path.join(directory, f"{case[0]}.npz"), x=x,
                 y=keras.ops.convert_to_numpy(model(x)))


def mismatches(directory):
    """(case id, max error, tolerance) of each case outside its tolerance."""
    bad = []
    for case in cases.CASES:
        model = keras.models.load_model(
            os.path.join(directory, f"{case[0]}.keras"))
        saved = np.load(os.path.join(directory, f"{case[0]}.npz"))
        error = float(np.max(np.abs(
            keras.ops.convert_to_numpy(model(saved["x"])) - saved["y"])))
        if not error <= cases.tolerance(case, saved["y"]):
            bad.append((case[0], error, cases.tolerance(case, saved["y"])))
    return bad


if __name__ == "__main__":
    command, directory = sys.argv[1:]
    if command == "save":
        save_all(directory)
    else:
        bad = mismatches(directory)
        for row in bad:
            print("%s: max error %.3g > tolerance %.3g" % row)
        sys.exit(1 if bad else 0)
