"""With only Keras and this backend, the layers work and TF parts say so."""

import os
import subprocess
import sys

import keras

ROOT = os.path.dirname(os.path.dirname(os.path.dirname(
    os.path.abspath(__file__))))

SNIPPET = """
import sys
import numpy as np
import keras_compact
import keras_compact.layers
import keras_compact.losses
import keras_compact.profiling
from keras_compact import models
assert "tensorflow" not in sys.modules, "TensorFlow imported"
model = models.build("sc_resnet20", (8, 8, 3), 4)
print(tuple(model(np.zeros((1, 8, 8, 3), "float32")).shape))
for name in ("data", "methods", "export", "training"):
    try:
        getattr(keras_compact, name)
    except ImportError as error:
        print(name, "->", error)
    else:
        print(name, "imported without TensorFlow")
"""


def test_layers_import_and_run_without_tensorflow():
    env = dict(os.environ, KERAS_BACKEND=keras.backend.backend())
    result = subprocess.run(
        [sys.executable, "-m", "tests.backends.without_tensorflow", SNIPPET],
        cwd=ROOT, env=env, capture_output=True, text=True, timeout=300)
    assert result.returncode == 0, result.stderr[-3000:]
    shape, *tensorflow_parts = result.stdout.splitlines()
    assert shape == "(1, 4)"
    assert len(tensorflow_parts) == 4
    assert all("needs TensorFlow 2.21" in line
               for line in tensorflow_parts), result.stdout
