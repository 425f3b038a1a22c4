"""Parameters and multiply-accumulates (MACs) per layer.

Keras 3 has no FLOPs counter (keras-team/keras#18391), so this one counts
analytically from each layer's configuration and shapes.

Convention (the one the papers use): MACs are the multiply-accumulates of
convolutions and dense layers; bias adds, batch norm, activations, pooling
and residual adds count 0. Params are trainable weights (BN gamma and beta
included, moving statistics excluded). A layer can report its own numbers
(e.g. only the connections that exist, a parameter-free shift) by defining
`profile(input_shape, output_shape) -> {"params": int, "macs": int}`.
"""

import dataclasses
import math

import keras

from keras_compact.registry import Registry

CONVENTION = (
    "MACs = multiply-accumulates of conv and dense layers (bias, BN, "
    "activations, pooling, adds: 0); params = trainable weights"
)

_COUNTERS = Registry("layer counter")


@dataclasses.dataclass
class LayerProfile:
    name: str
    class_name: str
    output_shape: tuple
    params: int
    macs: int


@dataclasses.dataclass
class Profile:
    """The per-layer table and totals of `profile(model)`."""

    layers: list
    params: int
    macs: int
    convention: str = CONVENTION

    def table(self):
        """The profile as a Markdown table with a total row."""
        rows = ["| layer | type | output | params | MACs |",
                "|---|---|---|---:|---:|"]
        for p in self.layers:
            if p.params or p.macs:
                rows.append(f"| {p.name} | {p.class_name} | "
                            f"{p.output_shape} | {p.params:,} | {p.macs:,} |")
        rows.append(f"| total | | | {self.params:,} | {self.macs:,} |")
        return "\n".join(rows)


def trainable_params(layer):
    return sum(math.prod(w.shape) for w in layer.trainable_weights)


@_COUNTERS.register("Conv2D")
def _conv(layer, input_shape, output_shape):
    kh, kw = layer.kernel_size
    positions = math.prod(output_shape[1:-1])
    return positions * output_shape[-1] * kh * kw * (
        input_shape[-1] // layer.groups)


@_COUNTERS.register("DepthwiseConv2D")
def _depthwise(layer, input_shape, output_shape):
    kh, kw = layer.kernel_size
    return math.prod(output_shape[1:]) * kh * kw


@_COUNTERS.register("Dense")
def _dense(layer, input_shape, output_shape):
    return math.prod(input_shape[1:]) * output_shape[-1]


def _shape(tensors):
    if isinstance(tensors, (list, tuple)):
        return [tuple(t.shape) for t in tensors]
    return tuple(tensors.shape)


def _profile_layers(model):
    for layer in model.layers:
        if isinstance(layer, keras.Model) and not hasattr(layer, "profile"):
            yield from _profile_layers(layer)
            continue
        input_shape, output_shape = _shape(layer.input), _shape(layer.output)
        if hasattr(layer, "profile"):
            counts = layer.profile(input_shape, output_shape)
            params, macs = counts["params"], counts["macs"]
        else:
            params = trainable_params(layer)
            class_name = type(layer).__name__
            macs = 0
            if class_name in _COUNTERS:
                macs = _COUNTERS.get(class_name)(layer, input_shape,
                                                 output_shape)
        yield LayerProfile(layer.name, type(layer).__name__, output_shape,
                           int(params), int(macs))


def profile(model):
    """Counts params and MACs of every layer of a built functional model.

    Args:
        model: a functional or sequential `keras.Model` (nested models are
            walked). Batch dimension is ignored: numbers are per image.

    Returns:
        A `Profile` with `.layers`, `.params`, `.macs` and `.table()`.

    Example:

    >>> model = keras_compact.models.build("resnet20", (32, 32, 3), 10)
    >>> result = keras_compact.profiling.profile(model)
    >>> result.params, result.macs
    (272474, 40813184)
    """
    layers = list(_profile_layers(model))
    return Profile(layers, sum(p.params for p in layers),
                   sum(p.macs for p in layers))
