"""`.keras` files move between TensorFlow and this backend unchanged."""

import os
import subprocess
import sys

import keras
import numpy as np
import pytest

import keras_compact  # noqa: F401  (registers the layers for load_model)
from tests.backends import cases
from tests.backends import keras_files

ROOT = os.path.dirname(os.path.dirname(os.path.dirname(
    os.path.abspath(__file__))))


def on_tensorflow(command, directory):
    env = dict(os.environ, KERAS_BACKEND="tensorflow",
               TF_CPP_MIN_LOG_LEVEL="2")
    return subprocess.run(
        [sys.executable, "-m", "tests.backends.keras_files", command,
         directory], cwd=ROOT, env=env, capture_output=True, text=True,
        timeout=600)


@pytest.fixture(scope="module")
def tensorflow_files(tmp_path_factory):
    directory = str(tmp_path_factory.mktemp("saved_on_tensorflow"))
    result = on_tensorflow("save", directory)
    assert result.returncode == 0, result.stderr[-2000:]
    return directory


@pytest.mark.parametrize("case", cases.CASES, ids=cases.IDS)
def test_file_saved_on_tensorflow_gives_its_outputs_here(
        tensorflow_files, case):
    model = keras.models.load_model(
        os.path.join(tensorflow_files, f"{case[0]}.keras"))
    saved = np.load(os.path.join(tensorflow_files, f"{case[0]}.npz"))
    np.testing.assert_allclose(
        keras.ops.convert_to_numpy(model(saved["x"])), saved["y"], rtol=0,
        atol=cases.tolerance(case, saved["y"]))


def test_files_saved_here_give_their_outputs_on_tensorflow(tmp_path):
    keras_files.save_all(str(tmp_path))
    result = on_tensorflow("check", str(tmp_path))
    assert result.returncode == 0, result.stdout + result.stderr[-2000:]
