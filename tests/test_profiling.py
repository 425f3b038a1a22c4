"""profiling.profile against TensorFlow's own count of the same graph.

`tf.compat.v1.profiler` counts float ops per graph op from its shapes
(2 per multiply-accumulate for matmuls and convolutions). The reference is
the sum over the model's matmul and convolution ops / 2; the Einsum ops
(multi-head attention's two matmuls), which that profiler does not count,
are counted from the graph's shapes. All counts are integers: exact.
"""

import math
import string

import keras
import numpy as np
import pytest
import tensorflow as tf
from tensorflow.python.framework import convert_to_constants

from keras_compact import profiling
from keras_compact.errors import UsageError

L = keras.layers
# Ops whose float ops are multiply-accumulates (x2) in tf.profiler.
_MAC_OPS = {"Conv2D", "Conv3D", "DepthwiseConv2dNative", "MatMul",
            "BatchMatMulV2", "Conv2DBackpropInput"}


class WideConv(L.Conv2D):
    """A Conv2D subclass: counted through isinstance."""


class ConvPair(L.Layer):
    """A custom layer that wraps two convs and has no counter itself."""

    def __init__(self, filters, **kwargs):
        super().__init__(**kwargs)
        self.first = L.Conv2D(filters, 3, padding="same", use_bias=False)
        self.second = L.DepthwiseConv2D(3, padding="same", use_bias=False)

    def call(self, x):
        return self.second(self.first(x))


def _every_layer_type():
    image = keras.Input((8, 8, 4))
    x = WideConv(6, 3, padding="same", use_bias=False)(image)
    x = ConvPair(6)(x)
    x = L.SeparableConv2D(8, 3, depth_multiplier=2, padding="same",
                          use_bias=False)(x)
    # "same" padding: tf.profiler's transposed-conv formula (output
    # positions / stride^2) is then the exact count.
    x = L.Conv2DTranspose(4, 3, strides=2, padding="same",
                          use_bias=False)(x)  # 16x16x4
    volume = L.Reshape((8, 8, 16, 1))(x)
    volume = L.Conv3D(2, 3, use_bias=False)(volume)  # 6x6x14x2
    sequence = L.Reshape((72, 14))(volume)
    sequence = L.Conv1D(8, 3, use_bias=False)(sequence)  # 70x8
    sequence = L.SeparableConv1D(8, 3, padding="same", use_bias=False)(
        sequence)
    sequence = L.Conv1DTranspose(6, 3, strides=2, padding="same",
                                 use_bias=False)(sequence)  # 140x6
    sequence = L.DepthwiseConv1D(5, strides=8, use_bias=False)(
        sequence)  # 17x6
    # unroll: every time step is its own op in the graph, as it runs.
    sequence = L.LSTM(5, return_sequences=True, unroll=True)(sequence)
    sequence = L.GRU(4, return_sequences=True, unroll=True)(sequence)
    sequence = L.SimpleRNN(6, return_sequences=True, unroll=True)(sequence)
    sequence = L.EinsumDense("abc,cd->abd", output_shape=(17, 8),
                             bias_axes="d")(sequence)
    sequence = L.MultiHeadAttention(2, 3, value_dim=4)(sequence, sequence)
    sequence = L.LayerNormalization()(sequence)
    outputs = L.Dense(3)(L.Flatten()(sequence))
    return keras.Model(image, outputs)


def _graph(model):
    function = tf.function(lambda x: model(x, training=False))
    concrete = function.get_concrete_function(
        tf.TensorSpec((1, *model.input_shape[1:]), tf.float32))
    return convert_to_constants.convert_variables_to_constants_v2(
        concrete).graph


def _einsum_macs(op):
    inputs, output = op.get_attr("equation").decode().split("->")
    sizes = {}
    for operand, tensor in zip(inputs.split(","), op.inputs):
        sizes.update(zip(operand, tensor.shape))
    assert set("".join(inputs.split(","))) <= set(string.ascii_letters)
    return math.prod(sizes.values())


def _nodes(report):
    # The scope view nests an op under an op whose name is its prefix.
    for child in report.children:
        yield child
        yield from _nodes(child)


def tensorflow_macs(model):
    """tf.profiler float ops of matmuls and convs / 2, plus Einsum MACs."""
    graph = _graph(model)
    options = tf.compat.v1.profiler.ProfileOptionBuilder.float_operation()
    options["output"] = "none"
    report = tf.compat.v1.profiler.profile(graph=graph, options=options)
    flops = sum(node.float_ops for node in _nodes(report)
                if graph.get_operation_by_name(node.name).type in _MAC_OPS)
    einsums = [op for op in graph.get_operations() if op.type == "Einsum"]
    assert flops % 2 == 0
    return flops // 2 + sum(_einsum_macs(op) for op in einsums)


def test_every_layer_type_matches_tensorflow_profiler():
    model = _every_layer_type()
    result = profiling.profile(model)
    assert result.macs == tensorflow_macs(model)
    assert result.params == sum(math.prod(w.shape)
                                for w in model.trainable_weights)
    counted = {p.class_name for p in result.layers if p.macs}
    assert {"WideConv", "Conv2D", "DepthwiseConv2D", "SeparableConv2D",
            "Conv2DTranspose", "Conv3D", "Conv1D", "SeparableConv1D",
            "Conv1DTranspose", "DepthwiseConv1D", "LSTM", "GRU",
            "SimpleRNN", "EinsumDense", "MultiHeadAttention",
            "Dense"} <= counted


def test_grouped_conv_is_counted_per_group():
    # Keras's grouped conv is not a plain Conv2D op in the graph, so it is
    # checked by hand: 6x6 positions x 8 filters x 3x3 x (6 / 2) channels.
    x = keras.Input((8, 8, 6))
    model = keras.Model(x, L.Conv2D(8, 3, groups=2, use_bias=False)(x))
    assert profiling.profile(model).macs == 6 * 6 * 8 * 9 * 3


def test_conv3d_transpose_counts_each_input_position_once():
    # tf.profiler has no count for Conv3DBackpropInputV2: by hand, every
    # input position (2x3x4) meets the 3x3x3 kernel for 5 -> 6 channels.
    x = keras.Input((2, 3, 4, 5))
    model = keras.Model(x, L.Conv3DTranspose(6, 3, strides=2)(x))
    assert profiling.profile(model).macs == 2 * 3 * 4 * 5 * 6 * 27


class TinyNet(keras.Model):
    """A subclassed model: a shared conv called twice, then a classifier."""

    def __init__(self):
        super().__init__()
        self.conv = L.Conv2D(4, 3, padding="same", use_bias=False)
        self.pair = ConvPair(4)
        self.pool = L.GlobalAveragePooling2D()
        self.head = L.Dense(3)

    def call(self, x):
        return self.head(self.pool(self.pair(self.conv(self.conv(x)))))


def test_subclassed_model_and_shared_layer():
    model = TinyNet()
    model(np.zeros((1, 8, 8, 4), "float32"))
    result = profiling.profile(model, (8, 8, 4))
    conv = 8 * 8 * 4 * 9 * 4
    assert result.macs == 2 * conv + conv + 8 * 8 * 4 * 9 + 4 * 3
    # The shared conv's weights count once.
    assert result.params == sum(math.prod(w.shape)
                                for w in model.trainable_weights)
    with pytest.raises(UsageError, match="pass input_shape"):
        profiling.profile(model)


class Scale(L.Layer):
    """Weights and no way to count them."""

    def build(self, input_shape):
        self.scale = self.add_weight(shape=(input_shape[-1],))

    def call(self, x):
        return x * self.scale


def test_layer_with_weights_it_cannot_count_raises_or_warns():
    x = keras.Input((4, 4, 2))
    model = keras.Model(x, Scale(name="scale")(L.Conv2D(2, 1)(x)))
    with pytest.raises(profiling.UncountedLayerError, match="scale"):
        profiling.profile(model)
    with pytest.warns(UserWarning, match="scale"):
        result = profiling.profile(model, unknown="warn")
    assert result.macs == 4 * 4 * 2 * 2
    with pytest.raises(UsageError, match="'raise' or 'warn'"):
        profiling.profile(model, unknown="ignore")
