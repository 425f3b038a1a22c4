"""Datasets (CIFAR-10/100, Fashion-MNIST, synthetic) and tf.data pipelines."""

from keras_compact import needs_tensorflow
from keras_compact.data import cifar
from keras_compact.data import fashion_mnist
from keras_compact.data import imagenet
from keras_compact.data import synthetic
from keras_compact.data.pipeline import Splits
from keras_compact.data.pipeline import make_dataset
from keras_compact.data.pipeline import make_splits
from keras_compact.data.registry import ImageDataset
from keras_compact.data.registry import load
from keras_compact.data.registry import names
