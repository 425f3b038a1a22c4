"""Quantization-aware training that matches LiteRT's full-integer int8.

tensorflow-model-optimization's QAT works only with legacy tf_keras
models, so this is the Keras 3 version, written against what the LiteRT
converter does for full-integer int8 (`export.to_litert(..., "int8")`):

- BatchNormalization after a conv or dense layer is folded into it
  (`w * gamma / sqrt(var + eps)`, bias likewise), and the input
  normalisation's `1 / std` into the first conv when it is one scalar
  (1-channel inputs); per-channel stds that differ stay a quantized MUL
  after the SUB of the mean, as the converter keeps them;
- weights are int8 per output channel, symmetric in [-127, 127] with
  scale `max|w| / 127`;
- every op output is int8 per tensor, asymmetric, with the range
  `[min(lo, 0), max(hi, 0)]` seen on the calibration data, scale
  `range / 255` and zero point `round(-128 - lo / scale)`; the operand
  of an ADD computed last gets the union of its range and the ADD's
  (measured on the converter's files, see `_join_add_ranges`);
- ReLU / ReLU6 after a conv, dense or add are fused: one quantization
  point after the activation; padding, pooling by max, reshapes and
  dropout keep their input's quantization.

`quantize_model(model)` builds the fake-quantized twin of a functional
model: it shares the model's variables (BN statistics stay frozen, as in
Jacob et al.'s fine-tuning), so fitting the twin fine-tunes `model`, which
is then exported through the converter as usual. `fine_tune` does the
whole job (`fine_tune(servable, train, calibration, epochs=1)`, then
`export.to_litert(servable, path, "int8", calibration)`). Rounding goes
through a straight-through estimator.

Covered layers: `Conv2D`, `DepthwiseConv2D`, `Dense`,
`keras_compact.layers.GroupedConv2D`, X-Nets' masked `ExpanderConv2D` and
`ExpanderDense` (each with or without BN and ReLU / ReLU6), `Add`,
pooling, padding, reshapes, `InputNormalization`, and any other weightless
layer (quantized at its output). Refused in one line (`REFUSALS` says
why): SlimConv2D, the gathered expander form, and any other weighted
layer.

Example:

>>> import keras_compact
>>> inputs = keras.Input((8, 8, 1))
>>> x = keras.layers.Conv2D(4, 3, use_bias=False, name="conv")(inputs)
>>> x = keras.layers.BatchNormalization(name="bn")(x)
>>> outputs = keras.layers.ReLU(name="relu")(x)
>>> twin = keras_compact.qat.quantize_model(keras.Model(inputs, outputs))
>>> [layer.name for layer in twin.layers[1:]]  # BN folded, ReLU fused
['qat_conv']

Reference: Jacob et al., "Quantization and Training of Neural Networks for
Efficient Integer-Arithmetic-Only Inference", CVPR 2018,
https://arxiv.org/abs/1712.05877
"""

import collections
import dataclasses

import keras
import numpy as np
from keras import ops

from keras_compact.errors import UsageError
from keras_compact.export import InputNormalization
from keras_compact.layers import grouped_conv
from keras_compact.layers.cheap import CheapBlock
from keras_compact.layers.expander import ExpanderConv2D
from keras_compact.layers.expander import ExpanderDense
from keras_compact.layers.grouped_conv import GroupedConv2D
from keras_compact.layers.slim_conv import SlimConv2D

INT8_MIN, INT8_MAX = -128, 127
WEIGHT_MAX = 127  # symmetric weights use [-127, 127]


def _straight_through(x, y):
    """`y` forward, identity backward."""
    return x + ops.stop_gradient(y - x)


def activation_params(low, high):
    """Scale and zero point of an int8 tensor seen in `[low, high]`."""
    low, high = min(float(low), 0.0), max(float(high), 0.0)
    scale = (high - low) / (INT8_MAX - INT8_MIN) or 1.0
    zero = int(np.clip(np.round(INT8_MIN - low / scale), INT8_MIN, INT8_MAX))
    return scale, zero


class ActivationQuantizer(keras.layers.Layer):
    """Per-tensor asymmetric int8 fake quantization of an op's output.

    `calibrating = True`: passes values through and widens the range to
    every batch seen (what the converter's calibration does); otherwise
    quantizes with the range, which training follows by an exponential
    moving average of batch ranges.
    """

    def __init__(self, momentum=0.99, **kwargs):
        super().__init__(**kwargs)
        self.momentum = momentum
        self.calibrating = False
        self.joined = None  # see `join`

    def build(self, input_shape):
        self.low = self.add_weight(shape=(), initializer="zeros",
                                   trainable=False, name="low")
        self.high = self.add_weight(shape=(), initializer="zeros",
                                    trainable=False, name="high")
        self.seen = self.add_weight(shape=(), initializer="zeros",
                                    trainable=False, name="seen")

    def call(self, x, training=False):
        if self.calibrating:
            first = ops.equal(self.seen, 0.0)
            self.low.assign(ops.where(first, ops.min(x),
                                      ops.minimum(self.low, ops.min(x))))
            self.high.assign(ops.where(first, ops.max(x),
                                       ops.maximum(self.high, ops.max(x))))
            self.seen.assign(1.0)
            return x
        if training:
            m = self.momentum
            self.low.assign(m * self.low + (1 - m) * ops.min(x))
            self.high.assign(m * self.high + (1 - m) * ops.max(x))
        scale, zero = self.scale_and_zero()
        q = ops.clip(ops.round(x / scale) + zero, INT8_MIN, INT8_MAX)
        return _straight_through(x, (q - zero) * scale)

    def scale_and_zero(self):
        """The scale and zero point as tensors (`params` as numbers)."""
        low, high = self._range()
        low, high = ops.minimum(low, 0.0), ops.maximum(high, 0.0)
        scale = ops.maximum((high - low) / (INT8_MAX - INT8_MIN), 1e-12)
        zero = ops.clip(ops.round(INT8_MIN - low / scale), INT8_MIN, INT8_MAX)
        return scale, zero

    def join(self, other):
        """Quantizes with the union of this range and `other`'s (the
        quantizer of an ADD this output feeds: `_join_add_ranges`)."""
        # Not tracked: `other` is a layer of its own in the twin.
        object.__setattr__(self, "joined", other)

    def _range(self):
        if self.joined is None:
            return self.low, self.high
        return (ops.minimum(self.low, self.joined.low),
                ops.maximum(self.high, self.joined.high))

    @property
    def params(self):
        """(scale, zero point) as the converter would store them."""
        low, high = self._range()
        return activation_params(float(low), float(high))


def weight_levels(kernel, reduce_axes):
    """Per-output-channel symmetric int8 levels of a kernel and their
    scales (keepdims)."""
    bound = ops.max(ops.abs(kernel), axis=reduce_axes, keepdims=True)
    scale = ops.maximum(bound, 1e-12) / WEIGHT_MAX
    return ops.clip(ops.round(kernel / scale), -WEIGHT_MAX, WEIGHT_MAX), scale


def quantize_bias(bias, scale):
    """int32 fake quantization of a bias at `scale` (input scale times the
    channel's weight scale, as the converter stores it). The rounding
    moves an output by up to half of `scale`, which is 0.1-1% of an output
    step; unmodelled, it flipped ~0.3% of a layer's int8 values to the
    neighbouring level, and each flip spreads to every output reading it."""
    return _straight_through(bias, ops.round(bias / scale) * scale)


def _conv(layer, x, kernel):
    return ops.conv(x, kernel, strides=layer.strides, padding=layer.padding,
                    dilation_rate=layer.dilation_rate)


def _grouped_conv(layer, x, kernel):
    return grouped_conv.tf_grouped_conv2d(x, kernel, layer.strides,
                                          layer.padding.upper(),
                                          layer.dilation_rate)


def _depthwise(layer, x, kernel):
    return ops.depthwise_conv(x, kernel, strides=layer.strides,
                              padding=layer.padding,
                              dilation_rate=layer.dilation_rate)


def _dense(layer, x, kernel):
    return ops.matmul(x, kernel)


def _own_kernel(layer):
    return layer.kernel


def _masked_kernel(layer):
    # What the converter folds into one constant: the dense kernel with
    # the missing connections zeroed.
    return layer.kernel * ops.reshape(layer.mask, layer._mask_shape())


def _masked(layer):
    return layer.impl == "masked"


@dataclasses.dataclass(frozen=True)
class KernelOp:
    """How a weighted layer computes with a given kernel, and the kernel's
    axes: output channels last after `flat` (depthwise: `cin * mult`)."""

    compute: object
    reduce_axes: tuple
    input_axis: int
    depthwise: bool = False
    kernel: object = _own_kernel
    accepts: object = lambda layer: True


# Exact types only: a subclass may compute something else with its kernel.
KERNEL_OPS = {
    keras.layers.Conv2D: KernelOp(_conv, (0, 1, 2), 2),
    GroupedConv2D: KernelOp(_grouped_conv, (0, 1, 2), 2),
    keras.layers.DepthwiseConv2D: KernelOp(_depthwise, (0, 1), 2, True),
    keras.layers.Dense: KernelOp(_dense, (0,), 0),
    # X-Nets' masked (deployable) form; the gathered one is refused.
    ExpanderConv2D: KernelOp(_conv, (0, 1, 2), 2,
                             kernel=_masked_kernel, accepts=_masked),
    ExpanderDense: KernelOp(_dense, (0,), 0, kernel=_masked_kernel,
                            accepts=_masked),
}
# Layers that keep their input's quantization in LiteRT int8.
PASS_THROUGH = (keras.layers.ZeroPadding2D, keras.layers.Flatten,
                keras.layers.Reshape, keras.layers.MaxPooling2D,
                keras.layers.Dropout, keras.layers.Identity)


def _activation(layer):
    """'relu' or 'relu6' if `layer` is one that LiteRT fuses, else None."""
    if isinstance(layer, keras.layers.ReLU):
        plain = (not float(layer.negative_slope)
                 and not float(layer.threshold))
        limit = layer.max_value
        if plain and limit is None:
            return "relu"
        if plain and float(limit) == 6.0:
            return "relu6"
        return None
    if isinstance(layer, keras.layers.Activation):
        name = getattr(layer.activation, "__name__", "")
        return name if name in ("relu", "relu6") else None
    return None


def _apply_activation(name, x):
    if name == "relu":
        return ops.relu(x)
    if name == "relu6":
        return ops.relu6(x)
    return x


class FoldedKernelLayer(keras.layers.Layer):
    """A conv or dense layer with its BN folded and its ReLU fused, weights
    and output fake-quantized; shares the original layers' variables."""

    def __init__(self, layer, bn=None, activation=None, input_scale=None,
                 **kwargs):
        super().__init__(name=f"qat_{layer.name}", **kwargs)
        self.layer, self.bn, self.activation = layer, bn, activation
        self.op = KERNEL_OPS[type(layer)]
        self.input_scale = input_scale
        self.quantizer = ActivationQuantizer(name=f"qat_{layer.name}_out")
        self.input_quantizer = None  # see `reads`

    def build(self, input_shape):
        # `_integer` reads the output range before the quantizer is called.
        self.quantizer.build(input_shape)

    def reads(self, quantizer):
        """The quantizer of this layer's input: the bias is int32 at its
        scale times the weight scales."""
        # Not tracked: `quantizer` belongs to another layer of the twin.
        object.__setattr__(self, "input_quantizer", quantizer)

    def folded(self):
        """The folded float kernel and bias, as the converter computes."""
        kernel = self.op.kernel(self.layer)
        channels = kernel.shape[-1]
        if self.op.depthwise:
            channels *= kernel.shape[-2]
        bias = (self.layer.bias if self.layer.use_bias
                else ops.zeros((channels,)))
        if self.input_scale is not None:
            shape = [1] * len(kernel.shape)
            shape[self.op.input_axis] = -1
            kernel = kernel * ops.reshape(self.input_scale, shape)
        if self.bn is not None:
            bn = self.bn
            factor = ops.rsqrt(bn.moving_variance + bn.epsilon)
            if bn.scale:
                factor = factor * bn.gamma
            flat = ops.reshape(kernel, (*kernel.shape[:-2], channels)
                               ) if self.op.depthwise else kernel
            flat = flat * factor
            kernel = ops.reshape(flat, kernel.shape)
            bias = (bias - bn.moving_mean) * factor
            if bn.center:
                bias = bias + bn.beta
        return kernel, bias

    def call(self, x, training=False):
        kernel, bias = self.folded()
        if self.quantizer.calibrating:  # the converter calibrates float
            return self.quantizer(_apply_activation(
                self.activation, self.op.compute(self.layer, x, kernel)
                + bias), training=False)
        if not training and self.input_quantizer is not None:
            return self._integer(x, kernel, bias)
        kernel, _, scales = self._quantized(kernel)
        if self.input_quantizer is not None:
            bias = quantize_bias(
                bias, self.input_quantizer.scale_and_zero()[0] * scales)
        y = self.op.compute(self.layer, x, kernel) + bias
        y = _apply_activation(self.activation, y)
        return self.quantizer(y, training=training)

    def _integer(self, x, kernel, bias):
        """The int8 op as XNNPACK computes it: an int32 sum of int8
        products and the int32 bias, times the float32 requantization
        scale `input_scale * weight_scale / output_scale`, rounded half to
        even. The float form (training) differs from it by the rounding of
        each product and sum, enough to put ~0.2% of the values of each
        layer on the neighbouring level; through the 27 layers of
        X-MobileNet those flips grew to 7 output steps. The sums are of
        integers below 2**24 (|int8 - zero point| <= 255 times 127, over
        fewer than 518 products per output here), so float32 holds them
        exactly, in any order."""
        # x is dequantized, (q - zero) * scale: x / scale is q - zero.
        in_scale = self.input_quantizer.scale_and_zero()[0]
        out_scale, out_zero = self.quantizer.scale_and_zero()
        _, levels, scales = self._quantized(kernel)
        total = self.op.compute(self.layer, ops.round(x / in_scale), levels)
        total = total + ops.round(bias / (in_scale * scales))
        q = ops.round(total * (in_scale * scales / out_scale)) + out_zero
        low = out_zero if self.activation else INT8_MIN
        high = INT8_MAX
        if self.activation == "relu6":
            high = ops.minimum(high, out_zero + ops.round(6.0 / out_scale))
        return (ops.clip(q, low, high) - out_zero) * out_scale

    def _quantized(self, kernel):
        """The fake-quantized kernel, its int8 levels (both shaped as the
        kernel) and its per-output-channel scales, flat."""
        shape = kernel.shape
        flat = ops.reshape(kernel, (*shape[:-2], shape[-2] * shape[-1])
                           ) if self.op.depthwise else kernel
        levels, scale = weight_levels(flat, self.op.reduce_axes)
        return (ops.reshape(_straight_through(flat, levels * scale), shape),
                ops.reshape(levels, shape), ops.reshape(scale, (-1,)))


class QuantizedOutput(keras.layers.Layer):
    """A weightless layer (or an add with its fused ReLU) whose output is
    fake-quantized."""

    def __init__(self, layer, activation=None, **kwargs):
        super().__init__(name=f"qat_{layer.name}", **kwargs)
        self.layer, self.activation = layer, activation
        self.quantizer = ActivationQuantizer(name=f"qat_{layer.name}_out")
        self.input_quantizer = None

    reads = FoldedKernelLayer.reads

    def call(self, inputs, training=False):
        integer = INTEGER_OPS.get(type(self.layer))
        if (integer and not training and not self.quantizer.calibrating
                and self.input_quantizer is not None
                and self.quantizer.built):
            return integer(self.layer, inputs, self.input_quantizer,
                           self.quantizer)
        # training=False: BN statistics stay frozen, dropout is off.
        y = _apply_activation(self.activation,
                              self.layer(inputs, training=False))
        return self.quantizer(y, training=training)


def _integer_mean(layer, x, in_quantizer, out_quantizer):
    """XNNPACK's int8 MEAN: the int32 sum of the input levels times the
    float32 scale `input_scale / (count * output_scale)`, rounded."""
    in_scale = in_quantizer.scale_and_zero()[0]
    out_scale, out_zero = out_quantizer.scale_and_zero()
    count = x.shape[1] * x.shape[2]
    total = ops.sum(ops.round(x / in_scale), axis=(1, 2),
                    keepdims=layer.keepdims)
    q = ops.round(total * (in_scale / (count * out_scale))) + out_zero
    return (ops.clip(q, INT8_MIN, INT8_MAX) - out_zero) * out_scale


# Weightless layers the twin computes in integers at inference.
INTEGER_OPS = {keras.layers.GlobalAveragePooling2D: _integer_mean}


class InputQuantizer(keras.layers.Layer):
    """`pixels - mean`, quantized: the SUB the converter keeps of an
    `InputNormalization`. `1 / std` is folded into the next kernel, or
    (`divide`) kept as a quantized MUL, as the converter does for
    per-channel stds that differ (measured: 3-channel inputs)."""

    def __init__(self, layer, divide, **kwargs):
        super().__init__(name=f"qat_{layer.name}", **kwargs)
        self.layer, self.divide = layer, divide
        self.quantizer = ActivationQuantizer(name=f"qat_{layer.name}_sub")
        self.divided = ActivationQuantizer(name=f"qat_{layer.name}_mul"
                                           ) if divide else None

    def call(self, x, training=False):
        mean = ops.convert_to_tensor(self.layer.mean, "float32")
        y = self.quantizer(ops.cast(x, "float32") - mean, training=training)
        if self.divide:
            std = ops.convert_to_tensor(self.layer.std, "float32")
            y = self.divided(y * (1.0 / std), training=training)
        return y


@dataclasses.dataclass
class _Node:
    layer: object
    inputs: object  # structure of tensor ids
    output: int


def _nodes(model):
    """The layers of the functional `model` with their input and output
    tensors as ids."""
    for layer in model.layers:
        if isinstance(layer, keras.layers.InputLayer):
            continue
        if isinstance(layer, keras.Model):
            raise UsageError(
                f"Quantization-aware training needs one flat functional "
                f"model; '{layer.name}' is a model nested in "
                f"'{model.name}'.")
        yield _Node(layer, keras.tree.map_structure(id, layer.input),
                    id(layer.output))


# Why a known layer (or a subclass) is refused, for the one-line error.
REFUSALS = {
    CheapBlock: "a residual block (OD's shift, depthwise or group student) "
                "is one Keras layer with its convs, BNs and ADD inside; "
                "the twin needs them as layers of the functional graph",
    SlimConv2D: "its int8 graph quantizes about 12 tensors inside the "
                "layer (MEAN, two FULLY_CONNECTED, LOGISTIC at the fixed "
                "scale 1/256, MUL, SPLIT, the fold's ADDs, CONCATENATION) "
                "that the twin does not model yet",
    **dict.fromkeys((ExpanderConv2D, ExpanderDense),
                    "only the masked form (the deployable default) is "
                    "modelled, not the gathered one"),
}


def _check_supported(layer):
    op = KERNEL_OPS.get(type(layer))
    if op is not None and op.accepts(layer) or isinstance(
            layer, (keras.layers.BatchNormalization, InputNormalization)):
        return
    if layer.weights:
        known = [why for kind, why in REFUSALS.items()
                 if isinstance(layer, kind)]
        reason = (known or ["it supports the weighted layers " + ", ".join(
            t.__name__ for t in KERNEL_OPS) + " and BatchNormalization"])[0]
        raise UsageError(
            f"Quantization-aware training cannot model layer "
            f"'{layer.name}' ({type(layer).__name__}): {reason}. Export "
            "this model with post-training int8 instead.")


def _plan(nodes):
    """Which BN / activation nodes fuse into which producer."""
    consumers = collections.defaultdict(list)
    for node in nodes:
        for tensor in keras.tree.flatten(node.inputs):
            consumers[tensor].append(node)

    def sole(node):
        users = consumers[node.output]
        return users[0] if len(users) == 1 else None

    fused = {}  # absorbed node id -> node that absorbed it
    extras = {}  # producer node id -> (fusions, id of its last output)
    for node in nodes:
        layer = node.layer
        if id(node) in fused:
            continue
        extra = {"bn": None, "activation": None}
        kernel = type(layer) in KERNEL_OPS
        own = getattr(layer, "activation", None)
        linear = not kernel or own is None or own is keras.activations.linear
        if kernel and not linear:
            name = getattr(own, "__name__", "")
            if name not in ("relu", "relu6"):
                raise UsageError(
                    f"Layer '{layer.name}' has activation {name}; "
                    "quantization-aware training fuses only relu and "
                    "relu6. Use a separate activation layer.")
            extra["activation"] = name
        tail = node
        if kernel and linear:
            nxt = sole(tail)
            if nxt is not None and isinstance(
                    nxt.layer, keras.layers.BatchNormalization):
                extra["bn"] = nxt.layer
                fused[id(nxt)] = node
                tail = nxt
        if (kernel and linear) or isinstance(
                layer, (keras.layers.Add, keras.layers.BatchNormalization)):
            nxt = sole(tail)
            if nxt is not None and _activation(nxt.layer):
                extra["activation"] = _activation(nxt.layer)
                fused[id(nxt)] = node
                tail = nxt
        extras[id(node)] = (extra, tail.output)
    return consumers, fused, extras


def quantize_model(model):
    """The fake-quantized twin of the functional `model`, sharing its
    variables. Calibrate it (`calibrate`) before use.

    Raises:
        UsageError: a layer the int8 conversion cannot be modelled for.
    """
    if not getattr(model, "inputs", None):
        raise UsageError(f"Quantization-aware training needs a functional "
                         f"model; '{model.name}' is subclassed.")
    nodes = list(_nodes(model))
    for node in nodes:
        _check_supported(node.layer)
    consumers, fused, extras = _plan(nodes)
    if len(model.inputs) != 1 or len(model.outputs) != 1:
        raise UsageError(f"Quantization-aware training takes a model with "
                         f"one input and one output; '{model.name}' has "
                         f"{len(model.inputs)} and {len(model.outputs)}.")
    (source,) = model.inputs
    inputs = keras.Input(source.shape[1:], dtype=source.dtype,
                         name="qat_input")
    values = {id(source): inputs}
    pending_scale = {}  # tensor id -> 1 / std to fold into the next kernel
    built = {}  # id of a twin layer -> its position in the twin
    quantizer_of = {}  # tensor id -> the quantizer of its int8 values
    for node in nodes:
        if id(node) in fused:
            continue
        layer = node.layer
        args = keras.tree.map_structure(lambda t: values[t], node.inputs)
        extra, output = extras[id(node)]
        if isinstance(layer, InputNormalization):
            users = consumers[node.output]
            # The converter folds a MUL by one scalar into the conv after
            # it, not one by per-channel factors.
            fold = len(users) == 1 and type(users[0].layer) in (
                keras.layers.Conv2D, keras.layers.DepthwiseConv2D
            ) and len(set(layer.std)) == 1
            if fold:
                pending_scale[node.output] = 1.0 / np.asarray(layer.std,
                                                              "float32")
            twin = InputQuantizer(layer, divide=not fold)
            quantizer_of[output] = twin.divided or twin.quantizer
        elif type(layer) in KERNEL_OPS:
            twin = FoldedKernelLayer(layer, extra["bn"], extra["activation"],
                                     pending_scale.get(node.inputs))
            twin.reads(quantizer_of.get(node.inputs))
        elif isinstance(layer, PASS_THROUGH):
            twin = layer
            quantizer_of[output] = quantizer_of.get(node.inputs)
        else:
            twin = QuantizedOutput(layer, extra["activation"])
            if isinstance(node.inputs, int):  # one input, e.g. a MEAN
                twin.reads(quantizer_of.get(node.inputs))
        quantizer_of.setdefault(output, getattr(twin, "quantizer", None))
        y = twin(args)
        values[output] = y
        built[id(y._keras_history.operation)] = len(built)
        if isinstance(layer, keras.layers.Add):
            _join_add_ranges(args, y, built)
    return keras.Model(inputs, values[id(model.outputs[0])],
                       name=f"qat_{model.name}")


def _join_add_ranges(operands, result, built):
    """Models the converter's calibration of an ADD's operand.

    Measured on residual nets (plain and grouped convs, with or without BN,
    with a fused ReLU6 or none): the operand computed last (here: built
    last) gets the union of its own calibrated range and the ADD output's;
    the other operands keep their own.
    """
    producers = [t._keras_history.operation for t in operands]
    last = max(producers, key=lambda op: built.get(id(op), -1))
    if hasattr(last, "quantizer"):
        last.quantizer.join(result._keras_history.operation.quantizer)


def quantizers(qat_model):
    """The activation quantizers of a `quantize_model` twin, in order."""
    found = []
    for layer in qat_model.layers:
        found += [q for q in (getattr(layer, "quantizer", None),
                              getattr(layer, "divided", None)) if q]
    return found


def calibrate(qat_model, inputs, batch_size=50):
    """Sets every activation range to the min / max over `inputs`, as the
    converter calibrates (float forward; the converter feeds one sample at
    a time, but with BN frozen a min / max over batches is the same)."""
    found = quantizers(qat_model)
    for quantizer in found:
        quantizer.seen.assign(0.0)
        quantizer.calibrating = True
    try:
        for start in range(0, len(inputs), batch_size):
            qat_model(np.asarray(inputs[start:start + batch_size],
                                 "float32"), training=False)
    finally:
        for quantizer in found:
            quantizer.calibrating = False
    return qat_model


def fine_tune(model, train, calibration, epochs=1, optimizer=None,
              steps_per_epoch=None, verbose=1):
    """Fine-tunes `model` in place with int8 fake quantization.

    Args:
        model: a functional model (e.g. the servable on raw pixels).
        train: a dataset of `(inputs, integer labels)` batches in the form
            `model` takes.
        calibration: the int8 calibration inputs (the ones given to
            `export.to_litert`); ranges start from them and are reset to
            them after training, so the returned twin computes what the
            int8 file computes.
        epochs, steps_per_epoch: of the fine-tuning.
        optimizer: defaults to Adam at 1e-4. With BN frozen, a change of
            a conv's kernel is no longer renormalised by batch statistics:
            SGD at the float training's 1e-3 (momentum 0.9) took a
            Fashion-MNIST net from 77% to 39% top-1 in 16 steps, Adam at
            1e-4 to 82% (an epoch of 4,096 images).

    Returns:
        The calibrated fake-quantized twin (`quantize_model`).
    """
    qat_model = calibrate(quantize_model(model), calibration)
    qat_model.compile(
        optimizer or keras.optimizers.Adam(1e-4),
        keras.losses.SparseCategoricalCrossentropy(from_logits=True),
        metrics=["accuracy"])
    qat_model.fit(train, epochs=epochs, steps_per_epoch=steps_per_epoch,
                  shuffle=False, verbose=verbose)
    return calibrate(qat_model, calibration)
