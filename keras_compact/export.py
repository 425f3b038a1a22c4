"""Export to TensorFlow SavedModel and LiteRT (`.tflite`).

LiteRT files are converted with builtin ops only, so a layer that would need
the TF "flex" delegate fails at conversion instead of silently depending on
a runtime that phones do not ship. Quantization is post-training: float16
weights, or full int8 calibrated on a representative set of inputs.

The input contract: `with_raw_input` puts the training set's per-channel
normalisation inside the model, so the exported files take what a camera
gives, raw pixels in [0, 255] (float32 files: float 0-255; int8 files:
uint8 with scale 1 and zero point 0, the pixel values themselves). The
contract is recorded in the `.tflite` metadata (`read_input_contract`), in
a SavedModel's `assets.extra/` and in the trainer's metrics.json.

Every writer goes through `tf.io.gfile`, so paths may be `gs://`, `ram://`
or any other filesystem TensorFlow knows.
"""

import json
import logging
import os
import tempfile

import keras
import numpy as np
from keras import ops

from keras_compact import api
from keras_compact import files
from keras_compact.errors import UsageError
from keras_compact.layers import grouped_conv
from keras_compact.registry import Registry

log = logging.getLogger("keras_compact")

LITERT_FORMATS = Registry("LiteRT quantization")

# XNNPACK refuses a quantized conv or dense layer whose requantization scale
# `input_scale * filter_scale / output_scale` is 256 or more, and then the
# whole graph fails to prepare ("failed to create XNNPACK runtime").
_XNNPACK_MAX_REQUANTIZATION = 256.0
_WEIGHTED_OPS = ("CONV_2D", "DEPTHWISE_CONV_2D", "FULLY_CONNECTED")

# Where the input contract is stored: a `.tflite` metadata entry, and a
# file in a SavedModel's `assets.extra/` (the folder TF leaves to users).
CONTRACT_METADATA = "keras_compact_input"
CONTRACT_FILE = "assets.extra/keras_compact_input.json"


@api.serializable
class InputNormalization(keras.layers.Layer):
    """`(pixels - mean) / std` per channel: a model that takes raw pixels.

    The same arithmetic as the training pipeline's normalisation, so the
    wrapped model on raw pixels computes what the trained model computes on
    normalised inputs.

    Args:
        mean, std: per-channel statistics of the training images in
            [0, 255] (`ImageDataset.mean`, `.std`).

    Example:

    >>> layer = keras_compact.export.InputNormalization([127.5], [64.0])
    >>> y = layer(np.full((1, 2, 2, 1), 191.5))
    >>> keras.ops.convert_to_numpy(y)[0, 0, 0]
    array([1.], dtype=float32)
    """

    def __init__(self, mean, std, **kwargs):
        super().__init__(**kwargs)
        self.mean = [float(m) for m in mean]
        self.std = [float(v) for v in std]
        if len(self.mean) != len(self.std) or min(self.std) <= 0:
            raise UsageError(
                f"InputNormalization needs one positive std per mean; got "
                f"mean={self.mean}, std={self.std}.")

    def call(self, inputs):
        x = ops.cast(inputs, self.compute_dtype)
        mean = ops.convert_to_tensor(self.mean, self.compute_dtype)
        std = ops.convert_to_tensor(self.std, self.compute_dtype)
        return (x - mean) / std

    def compute_output_shape(self, input_shape):
        return input_shape

    def get_config(self):
        config = super().get_config()
        config.update(mean=self.mean, std=self.std)
        return config


def with_raw_input(model, mean, std, input_shape=None):
    """`model` behind an `InputNormalization`: it takes raw 0-255 pixels.

    The trained model's maths is unchanged: the result on raw pixels equals
    `model` on `(pixels - mean) / std`. Folding the normalisation into the
    first conv instead would be exact only without zero padding (a padded
    border of a raw image is 0, of a normalised one `-mean / std`), which
    no stem of the library's models has but SmallNet-3's; the separate
    layer is one elementwise op in LiteRT.

    Args:
        model: the deployable model, on normalised inputs.
        mean, std: the training set's per-channel statistics in [0, 255].
        input_shape: (H, W, C), for a subclassed `model` without `inputs`.

    Example:

    >>> inputs = keras.Input((4, 4, 1))
    >>> flatten = keras.layers.Flatten(name="flatten")
    >>> deployable = keras.Model(inputs, flatten(inputs))
    >>> servable = keras_compact.export.with_raw_input(deployable, [127.5],
    ...                                                [64.0])
    >>> [layer.name for layer in servable.layers]
    ['pixels', 'input_normalization', 'flatten']
    """
    shape = input_shape or tuple(model.inputs[0].shape[1:])
    pixels = keras.Input(tuple(shape), name="pixels")
    # float32 under any mixed-precision policy, as the data pipeline.
    normalized = InputNormalization(mean, std, dtype="float32",
                                    name="input_normalization")(pixels)
    if not getattr(model, "inputs", None):  # subclassed: nest it
        return keras.Model(pixels, model(normalized), name=model.name)

    def call_function(layer, *args, **kwargs):
        args = keras.tree.map_structure(
            lambda t: normalized if t is pixels else t, args)
        return layer(*args, **kwargs)

    # A flat copy (not `model` nested in a wrapper): every layer stays
    # visible to the profiler and to quantization-aware training.
    servable = keras.models.clone_model(model, input_tensors=pixels,
                                        call_function=call_function)
    servable.set_weights(model.get_weights())
    return servable


def input_contract(model):
    """The input contract of a Keras model: a dict, or None if it takes
    inputs that are already normalised (no `InputNormalization` first).

    Example:

    >>> inputs = keras.Input((4, 4, 1))
    >>> model = keras.Model(inputs, keras.layers.Flatten()(inputs))
    >>> servable = keras_compact.export.with_raw_input(model, [127.5], [64.0])
    >>> keras_compact.export.input_contract(servable)["dtype"]
    'uint8'
    >>> keras_compact.export.input_contract(model) is None
    True
    """
    first = [layer for layer in model.layers
             if not isinstance(layer, keras.layers.InputLayer)][:1]
    if not first or not isinstance(first[0], InputNormalization):
        return None
    return {
        "shape": list(model.inputs[0].shape[1:]),
        "layout": "NHWC",
        "dtype": "uint8",
        "range": [0, 255],
        "mean": first[0].mean,
        "std": first[0].std,
        "normalization": "inside the model: (pixels - mean) / std",
    }


def calibration_inputs(model, normalized, mean, std):
    """int8 calibration inputs in the form `model` takes them.

    Args:
        model: the model to convert.
        normalized: training inputs normalised with `mean` and `std` (what
            `Splits.representative()` gives).
        mean, std: the dataset's per-channel statistics in [0, 255].

    Returns:
        `normalized`, or for a model on raw pixels (`with_raw_input`) the
        pixels they came from (uint8 sources: rounding makes them exact).
    """
    if input_contract(model) is None:
        return normalized
    pixels = (np.asarray(normalized, np.float32) * np.float32(std)
              + np.float32(mean))
    return np.clip(np.round(pixels), 0, 255).astype(np.float32)


def _file_contract(contract, quantization):
    """The contract as it holds for one file: int8 files take uint8."""
    contract = dict(contract, file_input_dtype=(
        "uint8" if quantization == "int8" else "float32"))
    if quantization == "int8":
        contract["file_input_quantization"] = {"scale": 1.0,
                                               "zero_point": 0}
    return contract


def _ops():
    import tensorflow as tf

    return tf


@LITERT_FORMATS.register("float32")
def _float32(representative_data, raw_pixels=False):
    del representative_data, raw_pixels
    return {"target_spec": {"supported_ops": [
        _ops().lite.OpsSet.TFLITE_BUILTINS]}}


@LITERT_FORMATS.register("float16")
def _float16(representative_data, raw_pixels=False):
    del representative_data, raw_pixels
    tf = _ops()
    return {
        "optimizations": [tf.lite.Optimize.DEFAULT],
        "target_spec": {
            "supported_ops": [tf.lite.OpsSet.TFLITE_BUILTINS],
            "supported_types": [tf.float16],
        },
    }


@LITERT_FORMATS.register("int8")
def _int8(representative_data, raw_pixels=False):
    """Full int8; a model on raw pixels gets uint8 input (the pixels)."""
    if representative_data is None:
        raise UsageError(
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
        "inference_input_type": tf.uint8 if raw_pixels else tf.int8,
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


def _exact_pixel_input(model):
    """Sets a uint8 input's quantization to scale 1, zero point 0.

    Calibration on images that span [0, 255] gives that already, up to
    float rounding; set exactly, the file's input is the pixel itself (the
    QUANTIZE op behind it requantizes to the calibrated int8 range).
    """
    from ai_edge_litert import schema_py_generated as schema

    for subgraph in model.subgraphs:
        for index in subgraph.inputs:
            tensor = subgraph.tensors[index]
            if tensor.type == schema.TensorType.UINT8:
                tensor.quantization.scale = np.ones(1, np.float32)
                tensor.quantization.zeroPoint = np.zeros(1, np.int64)


def _add_metadata(model, name, value):
    """Stores `value` as JSON in the `.tflite` metadata entry `name`."""
    from ai_edge_litert import schema_py_generated as schema

    buffer = schema.BufferT()
    buffer.data = np.frombuffer(json.dumps(value).encode(), np.uint8)
    model.buffers.append(buffer)
    entry = schema.MetadataT()
    entry.name = name
    entry.buffer = len(model.buffers) - 1
    model.metadata = [m for m in (model.metadata or [])
                      if m.name.decode() != name] + [entry]


def read_input_contract(path):
    """The input contract stored in an exported file, or None.

    Args:
        path: a `.tflite` file or a SavedModel folder written by this module.

    Example:

    See `to_litert`'s example, which reads one back.
    """
    import tensorflow as tf

    path = str(path)
    if tf.io.gfile.isdir(path):
        contract = os.path.join(path, CONTRACT_FILE)
        return (files.read_json(contract) if tf.io.gfile.exists(contract)
                else None)
    from ai_edge_litert.tools import flatbuffer_utils

    with tf.io.gfile.GFile(path, "rb") as f:
        model = flatbuffer_utils.read_model_from_bytearray(bytearray(
            f.read()))
    for entry in model.metadata or []:
        if entry.name.decode() == CONTRACT_METADATA:
            data = model.buffers[entry.buffer].data
            return json.loads(np.asarray(data, np.uint8).tobytes())
    return None


def litert_ops(path):
    """The sorted builtin op names of a `.tflite` file, e.g. to check it
    against a delegate's op list.

    Example:

    See `to_litert`'s example.
    """
    import tensorflow as tf
    from ai_edge_litert import schema_py_generated as schema
    from ai_edge_litert.tools import flatbuffer_utils

    with tf.io.gfile.GFile(str(path), "rb") as f:
        model = flatbuffer_utils.read_model_from_bytearray(bytearray(
            f.read()))
    names = {code: name for name, code in
             vars(schema.BuiltinOperator).items() if not name.startswith("_")}
    return sorted({names[flatbuffer_utils.get_builtin_code_from_operator_code(
        model.operatorCodes[op.opcodeIndex])]
        for subgraph in model.subgraphs for op in subgraph.operators})


def _check_calibration(model, representative_data):
    """Fails in one line on calibration inputs that do not fit `model`."""
    if representative_data is None:
        return
    expected = tuple(model.inputs[0].shape[1:])
    shape = tuple(np.shape(representative_data))
    fits = len(shape) == len(expected) + 1 and all(
        e is None or e == s for e, s in zip(expected, shape[1:]))
    if not fits or not shape[0]:
        raise UsageError(
            f"int8 calibration data has shape {shape}; the model takes "
            f"(N, {', '.join(map(str, expected))}) with N >= 1. Pass "
            "training images shaped like the model's input.")


def to_saved_model(model, path):
    """Writes a SavedModel with a `serve` endpoint; returns `path`.

    `path` may be any `tf.io.gfile` path (`gs://`, `ram://`...). A model
    on raw pixels (`with_raw_input`) gets its input contract in
    `assets.extra/keras_compact_input.json`.
    """
    path = str(path)
    model.export(path, format="tf_saved_model", verbose=False)
    contract = input_contract(model)
    if contract:
        import tensorflow as tf

        tf.io.gfile.makedirs(os.path.dirname(os.path.join(path,
                                                          CONTRACT_FILE)))
        files.write_json(os.path.join(path, CONTRACT_FILE),
                         _file_contract(contract, "float32"))
    return path


def to_litert(model, path, quantization="float32", representative_data=None):
    """Converts `model` to a `.tflite` file with builtin ops only.

    A model on raw pixels (`with_raw_input`) gets its input contract in the
    file's metadata, and as an int8 file takes uint8 pixels (scale 1, zero
    point 0). The file is converted in a local temporary folder and copied
    to `path`, which may be any `tf.io.gfile` path (`gs://`, `ram://`...).

    Args:
        model: a Keras model (the deployable one: contracted, gathered...).
        path: output file; must end in `.tflite`.
        quantization: `"float32"`, `"float16"` or `"int8"` (full integer,
            int8 output; `widen_degenerate_scales` is applied).
        representative_data: array of inputs for int8 calibration, shaped
            like the model's input (raw pixels for a raw-pixel model).

    Returns:
        `path`.

    Example:

    >>> import os, tempfile
    >>> inputs = keras.Input((4, 4, 1))
    >>> model = keras.Model(inputs, keras.layers.Conv2D(2, 3)(inputs))
    >>> servable = keras_compact.export.with_raw_input(model, [127.5], [64.0])
    >>> path = keras_compact.export.to_litert(
    ...     servable, os.path.join(tempfile.mkdtemp(), "model.tflite"))
    >>> keras_compact.export.litert_ops(path)  # normalization folded in
    ['CONV_2D']
    >>> contract = keras_compact.export.read_input_contract(path)
    >>> contract["shape"], contract["dtype"], contract["mean"]
    ([4, 4, 1], 'uint8', [127.5])
    """
    import tensorflow as tf

    path = str(path)
    if not path.endswith(".tflite"):
        raise UsageError(f"LiteRT files must end in '.tflite'. Received: "
                         f"path={path}.")
    contract = input_contract(model)
    make_kwargs = LITERT_FORMATS.get(quantization)
    if quantization == "int8":
        _check_calibration(model, representative_data)
    kwargs = make_kwargs(representative_data, raw_pixels=bool(contract))
    with tempfile.TemporaryDirectory() as tmp:
        local = os.path.join(tmp, "model.tflite")
        # The same file with or without oneDNN: one grouped CONV_2D.
        with grouped_conv.forward_only():
            model.export(local, format="litert", verbose=False, **kwargs)
        if quantization == "int8":
            widen_degenerate_scales(local)
        if contract:
            _finish_raw_pixel_file(local, _file_contract(contract,
                                                         quantization))
        tf.io.gfile.makedirs(os.path.dirname(path) or ".")
        with files.atomic_write(path) as temporary:
            tf.io.gfile.copy(local, temporary, overwrite=True)
    return path


def _finish_raw_pixel_file(path, contract):
    from ai_edge_litert.tools import flatbuffer_utils

    model = flatbuffer_utils.read_model(path)
    _exact_pixel_input(model)
    _add_metadata(model, CONTRACT_METADATA, contract)
    flatbuffer_utils.write_model(model, path)
