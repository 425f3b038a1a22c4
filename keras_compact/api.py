"""The decorator that registers public layers for `.keras` serialization."""

import keras

PACKAGE = "keras_compact"


def serializable(cls):
    """Registers `cls` with Keras under the `keras_compact` package.

    Every public layer and model class of the library goes through this, so
    `.keras` files that contain them load with `keras.models.load_model`.
    """
    return keras.saving.register_keras_serializable(package=PACKAGE)(cls)
