"""keras_compact: compact convolutional networks for Keras 3."""

try:
    import tensorflow  # noqa: F401
except ImportError as error:
    # Not a hard requirement, so that pip never swaps the user's TF build.
    raise ImportError(
        "keras_compact needs TensorFlow 2.21, which it does not install by "
        "itself: pip install 'keras_compact[cpu]' (CPU), 'keras_compact"
        "[and-cuda]' (NVIDIA GPU), or keep the TensorFlow of your TPU VM "
        "(README, Install).") from error

from keras_compact import data
from keras_compact import export
from keras_compact import layers
from keras_compact import losses
from keras_compact import methods
from keras_compact import models
from keras_compact import optimizers
from keras_compact import profiling

__version__ = "0.1.0"
