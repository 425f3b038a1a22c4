"""Compaction methods, one module each, looked up by name."""

from keras_compact import needs_tensorflow
from keras_compact.methods import aps
from keras_compact.methods import baseline
from keras_compact.methods import compose
from keras_compact.methods import expandnet
from keras_compact.methods import od
from keras_compact.methods import slimconv
from keras_compact.methods import xnet
from keras_compact.methods.base import Method
from keras_compact.methods.registry import all_options
from keras_compact.methods.registry import get
from keras_compact.methods.registry import names
from keras_compact.methods.registry import register
