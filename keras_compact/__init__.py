"""keras_compact: compact convolutional networks for Keras 3.

The layers, losses, models, optimizers and profiling are written in
`keras.ops` and run on any Keras 3 backend (JAX, PyTorch, TensorFlow); the
data pipelines, methods, training and export need TensorFlow 2.21.
Submodules import on first use (PEP 562), so `import keras_compact.layers`
never imports TensorFlow, and `keras_compact.training` works after a bare
`import keras_compact`:

>>> import keras_compact
>>> sorted(keras_compact.BACKEND_AGNOSTIC)
['layers', 'losses', 'models', 'optimizers', 'profiling']
"""

import importlib
import importlib.util

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


def __dir__():
    return sorted(set(globals()) | BACKEND_AGNOSTIC | TENSORFLOW_ONLY)
