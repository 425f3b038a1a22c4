"""keras_compact: compact convolutional networks for Keras 3."""

from keras_compact import data
from keras_compact import export
from keras_compact import layers
from keras_compact import methods
from keras_compact import models
from keras_compact import optimizers
from keras_compact import profiling

__version__ = "0.1.0"
