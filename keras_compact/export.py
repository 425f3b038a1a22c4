"""Export to TensorFlow SavedModel and LiteRT (`.tflite`).

LiteRT files are converted with builtin ops only, so a layer that would need
the TF "flex" delegate fails at conversion instead of silently depending on
a runtime that phones do not ship. Quantization is post-training: float16
weights, or full int8 calibrated on a representative set of inputs.
"""

import os

import numpy as np

from keras_compact.registry import Registry

LITERT_FORMATS = Registry("LiteRT quantization")


def _ops():
    import tensorflow as tf

    return tf


@LITERT_FORMATS.register("float32")
def _float32(representative_data):
    del representative_data
    return {"target_spec": {"supported_ops": [
        _ops().lite.OpsSet.TFLITE_BUILTINS]}}


@LITERT_FORMATS.register("float16")
def _float16(representative_data):
    del representative_data
    tf = _ops()
    return {
        "optimizations": [tf.lite.Optimize.DEFAULT],
        "target_spec": {
            "supported_ops": [tf.lite.OpsSet.TFLITE_BUILTINS],
            "supported_types": [tf.float16],
        },
    }


@LITERT_FORMATS.register("int8")
def _int8(representative_data):
    if representative_data is None:
        raise ValueError(
            "int8 export needs representative_data: a few hundred training "
            "inputs, shaped like the model's input, for calibration."
        )
    tf = _ops()
    samples = np.asarray(representative_data, dtype="float32")

    def representative_dataset():
        for sample in samples:
            yield [sample[None]]

    return {
        "optimizations": [tf.lite.Optimize.DEFAULT],
        "representative_dataset": representative_dataset,
        "target_spec": {"supported_ops": [
            tf.lite.OpsSet.TFLITE_BUILTINS_INT8]},
        "inference_input_type": tf.int8,
        "inference_output_type": tf.int8,
    }


def to_saved_model(model, path):
    """Writes a SavedModel with a `serve` endpoint; returns `path`."""
    model.export(path, format="tf_saved_model", verbose=False)
    return path


def to_litert(model, path, quantization="float32", representative_data=None):
    """Converts `model` to a `.tflite` file with builtin ops only.

    Args:
        model: a Keras model (the deployable one: contracted, gathered...).
        path: output file; must end in `.tflite`.
        quantization: `"float32"`, `"float16"` or `"int8"` (full integer,
            int8 input and output).
        representative_data: array of inputs for int8 calibration.

    Returns:
        `path`.

    Example:

    >>> keras_compact.export.to_litert(model, "/tmp/model.tflite", "int8",
    ...                                representative_data=x_train[:200])
    """
    if not str(path).endswith(".tflite"):
        raise ValueError(f"LiteRT files must end in '.tflite'. Received: "
                         f"path={path}.")
    kwargs = LITERT_FORMATS.get(quantization)(representative_data)
    os.makedirs(os.path.dirname(os.path.abspath(path)), exist_ok=True)
    model.export(str(path), format="litert", verbose=False, **kwargs)
    return path
