"""The dataset registry: `data.load("cifar10", data_dir)`."""

import dataclasses

import numpy as np

from keras_compact.registry import Registry

DATASETS = Registry("dataset")
register = DATASETS.register


@dataclasses.dataclass
class ImageDataset:
    """Images as uint8 NHWC arrays with integer labels, in memory.

    `mean` and `std` are per-channel statistics in [0, 255] of the training
    images, used to normalise the inputs.
    """

    x_train: np.ndarray
    y_train: np.ndarray
    x_test: np.ndarray
    y_test: np.ndarray
    num_classes: int
    mean: tuple
    std: tuple

    @property
    def input_shape(self):
        return tuple(self.x_train.shape[1:])


def load(name, data_dir=""):
    """Loads the registered dataset `name`; `names()` lists them.

    Example:

    >>> dataset = keras_compact.data.load("fashion_mnist")
    >>> dataset.x_train.shape, dataset.num_classes
    ((60000, 28, 28, 1), 10)
    """
    return DATASETS.get(name)(data_dir)


def names():
    return DATASETS.names()


def channel_stats(images):
    """Per-channel mean and std of uint8 NHWC images, in [0, 255]."""
    flat = images.reshape(-1, images.shape[-1]).astype("float64")
    return tuple(map(float, flat.mean(0))), tuple(map(float, flat.std(0)))
