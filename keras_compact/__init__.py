"""keras_compact: compact convolutional networks for Keras 3.

The layers, losses, models, optimizers and profiling are written in
`keras.ops` and run on any Keras 3 backend (JAX, PyTorch, TensorFlow); the
data pipelines, methods, training and export need TensorFlow 2.21.
`import keras_compact` imports the first (registering their `.keras`
classes); the TensorFlow parts import with it on the TensorFlow backend,
as they always did, and on first use otherwise (PEP 562), so that
`import keras_compact.layers` never imports TensorFlow on JAX or PyTorch:

>>> import keras_compact
>>> sorted(keras_compact.BACKEND_AGNOSTIC)
['layers', 'losses', 'models', 'optimizers', 'profiling']
"""

import importlib
import importlib.util

import keras

from keras_compact import layers
from keras_compact import losses
from keras_compact import models
from keras_compact import optimizers
from keras_compact import profiling

__version__ = "0.1.0"

BACKEND_AGNOSTIC = frozenset(
    {"layers", "losses", "models", "optimizers", "profiling"})
TENSORFLOW_ONLY = frozenset({"data", "export", "methods"})


def __getattr__(name):
    module = f"keras_compact.{name}"
    if name.startswith("_") or importlib.util.find_spec(module) is None:
        raise AttributeError(
            f"module 'keras_compact' has no attribute {name!r}")
    try:
        return importlib.import_module(module)
    except ModuleNotFoundError as error:
        if error.name != "tensorflow":
            raise
        importlib.import_module("keras_compact.needs_tensorflow")
        raise


if keras.backend.backend() == "tensorflow":
    # Registers their `.keras` classes (OD, KD, APS models, the input
    # normalisation of exported models) for `keras.models.load_model`.
    from keras_compact import data
    from keras_compact import export
    from keras_compact import methods


def __dir__():
    return sorted(set(globals()) | BACKEND_AGNOSTIC | TENSORFLOW_ONLY)
