"""Small nets trained briefly on Fashion-MNIST, cached for the test session.

The int8 and evaluation tests need trained weights and real images: on
random weights or noise inputs, post-training quantization errors say
nothing about the accuracy a user ships. Each net trains once per session
(about a minute on 2 cores) and is kept as a `.keras` file on raw pixels.
"""

import atexit
import dataclasses
import functools
import os
import shutil
import tempfile

import keras
import numpy as np

from keras_compact import data
from keras_compact import export
from keras_compact import layers
from keras_compact.layers.batch_normalization import BatchNormalization
from keras_compact.models import blocks

TRAIN_IMAGES = 60_000


def _conv_bn(x, filters, kernel, strides=1, activation="relu", name=None):
    x = keras.layers.Conv2D(filters, kernel, strides, padding="same",
                            use_bias=False, name=f"{name}_conv")(x)
    x = BatchNormalization(name=f"{name}_bn")(x)
    return keras.layers.Activation(activation, name=f"{name}_act")(x)


def _plain(inputs):
    """Plain, strided, depthwise and 1x1 convs, BN, ReLU and ReLU6."""
    x = _conv_bn(inputs, 16, 3, name="stem")
    x = _conv_bn(x, 32, 3, 2, name="down")
    x = keras.layers.DepthwiseConv2D(3, padding="same", use_bias=False,
                                     name="dw")(x)
    x = BatchNormalization(name="dw_bn")(x)
    x = keras.layers.ReLU(6.0, name="dw_relu6")(x)
    x = _conv_bn(x, 64, 1, 2, activation="relu6", name="pw")
    return blocks.classifier(x, 10)


def _slimconv(inputs):
    """A conv stem and SlimConv2D (k = 4/3), the paper's folded graph."""
    x = _conv_bn(inputs, 32, 3, 2, name="stem")
    x = layers.SlimConv2D(k="4/3", strides=2, name="slim")(x)
    x = keras.layers.ReLU(name="slim_relu")(x)
    return blocks.classifier(x, 10)


NETS = {"plain": _plain, "slimconv": _slimconv}


@dataclasses.dataclass
class Trained:
    """A trained net: `deployable` on normalised inputs, `servable` on raw
    pixels (both `.keras` paths), the dataset and a scratch folder."""

    deployable: str
    servable: str
    dataset: object
    folder: str

    def load(self, which="servable"):
        return keras.models.load_model(getattr(self, which))


@functools.lru_cache(maxsize=1)
def fashion_mnist():
    return data.load("fashion_mnist")


@functools.lru_cache(maxsize=None)
def trained(name):
    """The net `name` of `NETS` after one epoch on 20k training images."""
    dataset = fashion_mnist()
    keras.utils.set_random_seed(0)
    inputs = keras.Input(dataset.input_shape)
    model = keras.Model(inputs, NETS[name](inputs), name=name)
    model.compile(keras.optimizers.Adam(2e-3),
                  keras.losses.SparseCategoricalCrossentropy(True))
    x = normalized(dataset, dataset.x_train[:TRAIN_IMAGES])
    model.fit(x, dataset.y_train[:TRAIN_IMAGES], batch_size=128, epochs=1,
              verbose=0)
    folder = tempfile.mkdtemp(prefix=f"keras_compact_{name}_")
    atexit.register(shutil.rmtree, folder, ignore_errors=True)
    deployable = os.path.join(folder, "deployable.keras")
    servable = os.path.join(folder, "servable.keras")
    model.save(deployable)
    export.with_raw_input(model, dataset.mean, dataset.std).save(servable)
    return Trained(deployable, servable, dataset, folder)


def normalized(dataset, pixels):
    """What the training pipeline feeds the deployable."""
    return ((pixels.astype("float32") - np.float32(dataset.mean))
            / np.float32(dataset.std))


def calibration(dataset, count=200):
    """Raw training pixels for int8 calibration, as the trainer takes."""
    return dataset.x_train[-count:].astype("float32")
