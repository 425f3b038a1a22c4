"""Export to TensorFlow SavedModel and LiteRT (`.tflite`).

LiteRT files are converted with builtin ops only, so a layer that would need
the TF "flex" delegate fails at conversion instead of silently depending on
a runtime that phones do not ship. Quantization is post-training: float16
weights, or full int8 calibrated on a representative set of inputs.
"""

import logging
import os

import numpy as np

from keras_compact.registry import Registry

log = logging.getLogger("keras_compact")

LITERT_FORMATS = Registry("LiteRT quantization")

# XNNPACK refuses a quantized conv or dense layer whose requantization scale
# `input_scale * filter_scale / output_scale` is 256 or more, and then the
# whole graph fails to prepare ("failed to create XNNPACK runtime").
_XNNPACK_MAX_REQUANTIZATION = 256.0
_WEIGHTED_OPS = ("CONV_2D", "DEPTHWISE_CONV_2D", "FULLY_CONNECTED")


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


def widen_degenerate_scales(path):
    """Makes an int8 `.tflite` file acceptable to XNNPACK; returns a count.

    Calibration gives a tensor that is (nearly) zero on every calibration
    input, such as a dead unit of a squeeze layer after training, an output
    scale near 1e-8, so the requantization scale of the conv or dense layer
    that produces it exceeds XNNPACK's limit of 256. This raises such output
    scales to `input_scale * max(filter_scale) / 255` and requantizes the
    int32 biases of the convs and dense layers that read the tensor (their
    scale is the input scale times the filter scale). Values below the old
    range still round to the zero point, so results move by at most a
    quantization step, and XNNPACK can run the graph.

    Args:
        path: an int8 `.tflite` file, rewritten in place.

    Returns:
        The number of output scales raised.
    """
    from ai_edge_litert import schema_py_generated as schema
    from ai_edge_litert.tools import flatbuffer_utils

    model = flatbuffer_utils.read_model(path)
    codes = {getattr(schema.BuiltinOperator, op) for op in _WEIGHTED_OPS}
    raised = 0
    for subgraph in model.subgraphs:
        weighted = [op for op in subgraph.operators
                    if flatbuffer_utils.get_builtin_code_from_operator_code(
                        model.operatorCodes[op.opcodeIndex]) in codes]
        factors = {}  # tensor index -> old scale / new scale
        for op in weighted:
            inputs, filters, outputs = (
                subgraph.tensors[i].quantization
                for i in (*op.inputs[:2], op.outputs[0]))
            if any(q is None or q.scale is None or not len(q.scale)
                   for q in (inputs, filters, outputs)):
                continue  # a float op
            product = float(inputs.scale[0]) * float(np.max(filters.scale))
            old = float(outputs.scale[0])
            if product / old >= _XNNPACK_MAX_REQUANTIZATION:
                outputs.scale = np.full_like(outputs.scale, product / 255.0)
                factors[op.outputs[0]] = old / float(outputs.scale[0])
        for op in weighted:
            if (op.inputs[0] in factors and len(op.inputs) > 2
                    and op.inputs[2] >= 0):
                _rescale_bias(model, subgraph.tensors[op.inputs[2]],
                              factors[op.inputs[0]], schema)
        raised += len(factors)
    if raised:
        flatbuffer_utils.write_model(model, path)
        log.info("int8 export: raised %d degenerate output scales so "
                 "XNNPACK accepts %s.", raised, path)
    return raised


def _rescale_bias(model, tensor, factor, schema):
    """Multiplies an int32 bias by `factor`, its scale by `1 / factor`."""
    values = np.frombuffer(
        np.asarray(model.buffers[tensor.buffer].data, np.uint8).tobytes(),
        "<i4")
    info = np.iinfo(np.int32)
    buffer = schema.BufferT()
    buffer.data = np.clip(np.round(values * factor), info.min,
                          info.max).astype("<i4").view(np.uint8)
    # A new buffer: the converter may share one between identical biases.
    model.buffers.append(buffer)
    tensor.buffer = len(model.buffers) - 1
    tensor.quantization.scale = tensor.quantization.scale / factor


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
            int8 input and output; `widen_degenerate_scales` is applied).
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
    if quantization == "int8":
        widen_degenerate_scales(str(path))
    return path
