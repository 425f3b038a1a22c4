"""Imported first by every TensorFlow-only part: says how to install TF.

TensorFlow is not a hard requirement of keras_compact (so that pip never
swaps the user's TF build), and `keras_compact.layers`, `losses`, `models`,
`optimizers` and `profiling` run on any Keras backend without it. The data
pipelines, methods, training, export and trainers need it; importing them
without TensorFlow raises this module's one ImportError instead of a bare
"No module named 'tensorflow'" from deep inside.
"""

try:
    import tensorflow  # noqa: F401
except ImportError as error:
    raise ImportError(
        "this part of keras_compact (data, methods, training, export, the "
        "trainers) needs TensorFlow 2.21, which keras_compact does not "
        "install by itself: pip install 'keras_compact[cpu]' (CPU), "
        "'keras_compact[and-cuda]' (NVIDIA GPU), or keep the TensorFlow of "
        "your TPU VM (README, Install); keras_compact.layers, losses, "
        "models, optimizers and profiling run on any Keras backend "
        "without it.") from error
