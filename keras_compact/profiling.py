"""Parameters and multiply-accumulates (MACs) per layer.

Keras 3 has no FLOPs counter (keras-team/keras#18391), so this one counts
analytically from each layer's configuration and shapes.

Convention (the one the papers use): MACs are the multiply-accumulates of
convolutions and dense layers; bias adds, batch norm, activations, pooling
and residual adds count 0. Params are trainable weights (BN gamma and beta
included, moving statistics excluded). A layer can report its own numbers
(e.g. only the connections that exist, a parameter-free shift) by defining
`profile(input_shape, output_shape) -> {"params": int, "macs": int}`.

Counted through `isinstance`, so subclasses count too: convolutions 1D-3D
(grouped, depthwise, separable, transposed), Dense, EinsumDense, LSTM / GRU /
SimpleRNN (every time step) and MultiHeadAttention (its projections and its
two attention matmuls). A layer without a counter that wraps other layers is
run on zeros to find its sublayers' shapes, and they are counted. A layer
with weights that nothing counts raises `UncountedLayerError` (or warns with
`unknown="warn"`): a MAC count that silently misses layers is wrong.
"""

import dataclasses
import inspect
import math
import warnings

import keras
import numpy as np

from keras_compact.errors import UsageError

CONVENTION = (
    "MACs = multiply-accumulates of conv and dense layers (bias, BN, "
    "activations, pooling, adds: 0); params = trainable weights"
)


class UncountedLayerError(ValueError):
    """A layer has weights, but no MAC counter and no `profile` method."""


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


def _channels_last(layer):
    return getattr(layer, "data_format", "channels_last") == "channels_last"


def _positions(layer, shape):
    """Spatial positions and channels of a conv activation shape."""
    if _channels_last(layer):
        return math.prod(shape[1:-1]), shape[-1]
    return math.prod(shape[2:]), shape[1]


def _conv(layer, input_shape, output_shape):
    positions, filters = _positions(layer, output_shape)
    channels = _positions(layer, input_shape)[1]
    return (positions * filters * math.prod(layer.kernel_size) * channels
            // layer.groups)


def _depthwise(layer, input_shape, output_shape):
    positions, channels = _positions(layer, output_shape)
    return positions * channels * math.prod(layer.kernel_size)


def _separable(layer, input_shape, output_shape):
    positions, filters = _positions(layer, output_shape)
    middle = _positions(layer, input_shape)[1] * layer.depth_multiplier
    return positions * middle * (math.prod(layer.kernel_size) + filters)


def _transposed(layer, input_shape, output_shape):
    # Every input position meets the whole kernel once.
    positions, channels = _positions(layer, input_shape)
    filters = _positions(layer, output_shape)[1]
    return positions * channels * filters * math.prod(layer.kernel_size)


def _dense(layer, input_shape, output_shape):
    return math.prod(input_shape[1:]) * output_shape[-1]


def _einsum_dense(layer, input_shape, output_shape):
    # Each output element sums over the kernel axes missing in the output.
    _, rest = layer.equation.split(",")
    kernel, output = rest.split("->")
    summed = [size for axis, size in zip(kernel, layer.kernel.shape)
              if axis not in output]
    return math.prod(output_shape[1:]) * math.prod(summed)


def _recurrent(gates):
    def count(layer, input_shape, output_shape):
        steps, features = input_shape[1], input_shape[-1]
        return steps * gates * layer.units * (features + layer.units)

    return count


def _attention(layer, input_shape, output_shape):
    # Only the two matmuls; the projections are EinsumDense sublayers.
    shapes = input_shape if isinstance(input_shape, list) else [input_shape]
    query, value = shapes[0], shapes[min(1, len(shapes) - 1)]
    targets, sources = math.prod(query[1:-1]), math.prod(value[1:-1])
    return targets * sources * layer.num_heads * (layer.key_dim +
                                                  layer.value_dim)


L = keras.layers
# `(classes, counter)`, most specific first; matched with isinstance.
_COUNTERS = (
    ((L.SeparableConv1D, L.SeparableConv2D), _separable),
    ((L.DepthwiseConv1D, L.DepthwiseConv2D), _depthwise),
    ((L.Conv1DTranspose, L.Conv2DTranspose, L.Conv3DTranspose), _transposed),
    ((L.Conv1D, L.Conv2D, L.Conv3D), _conv),
    ((L.Dense,), _dense),
    ((L.EinsumDense,), _einsum_dense),
    ((L.LSTM,), _recurrent(4)),
    ((L.GRU,), _recurrent(3)),
    ((L.SimpleRNN,), _recurrent(1)),
    ((L.MultiHeadAttention,), _attention),
)
# Counted, and their sublayers too (they hold the weights).
_WITH_SUBLAYERS = (L.MultiHeadAttention,)
# Weights but no MACs in the convention.
_NO_MACS = (L.BatchNormalization, L.LayerNormalization, L.GroupNormalization,
            L.Embedding, L.PReLU)
del L


def _counter(layer):
    for classes, count in _COUNTERS:
        if isinstance(layer, classes):
            return count
    return None


def _shape(tensors):
    if isinstance(tensors, (list, tuple)):
        return [tuple(t.shape) for t in tensors]
    return tuple(tensors.shape)


def _sublayers(layer):
    # Keras has no public list of a plain layer's direct sublayers.
    return list(layer._flatten_layers(include_self=False, recursive=False))


def _traced_calls(layer, input_shape):
    """`[(sublayer, input_shape, output_shape)]` of one call on zeros.

    The direct sublayers' `call` is wrapped for the call; the batch is 1.
    """
    calls = []
    children = _sublayers(layer)

    def wrap(child, call):
        def recorded(*args, **kwargs):
            outputs = call(*args, **kwargs)
            tensors = [a for a in args if hasattr(a, "shape")]
            calls.append((child, _shape(tensors[0] if len(tensors) == 1
                                        else tensors), _shape(outputs)))
            return outputs

        return recorded

    for child in children:
        object.__setattr__(child, "call", wrap(child, child.call))
    shapes = input_shape if isinstance(input_shape, list) else [input_shape]
    zeros = [np.zeros((1, *s[1:]), "float32") for s in shapes]
    try:
        layer(*zeros, training=False) if _takes_training(layer) else layer(
            *zeros)
    finally:
        for child in children:
            object.__delattr__(child, "call")
    return calls


def _takes_training(layer):
    return "training" in inspect.signature(layer.call).parameters


def _own_weights(layer):
    """Weights of `layer` that none of its sublayers holds."""
    held = {id(w) for child in _sublayers(layer) for w in child.weights}
    return [w for w in layer.weights if id(w) not in held]


def _uncounted(layer, unknown):
    message = (f"Layer {layer.name} ({type(layer).__name__}) has weights but"
               " no MAC counter: give it a `profile(input_shape, "
               "output_shape)` method, or pass unknown='warn' to count it "
               "as 0 MACs.")
    if unknown == "raise":
        raise UncountedLayerError(message)
    warnings.warn(message, stacklevel=4)


def _rows(layer, input_shape, output_shape, unknown, seen, prefix=""):
    """The rows of one call of `layer`; a layer called again (shared) adds
    its MACs again but not its params."""
    name = prefix + layer.name
    first = id(layer) not in seen
    seen.add(id(layer))
    if hasattr(layer, "profile"):
        counts = layer.profile(input_shape, output_shape)
        yield LayerProfile(name, type(layer).__name__, output_shape,
                           int(counts["params"]) if first else 0,
                           int(counts["macs"]))
        return
    count = _counter(layer)
    descend = _sublayers(layer) and (count is None or isinstance(
        layer, _WITH_SUBLAYERS))
    params = trainable_params(layer)
    if descend:
        own = _own_weights(layer)
        if own and count is None:
            _uncounted(layer, unknown)
        params = sum(math.prod(w.shape) for w in own if w.trainable)
    elif count is None and layer.weights and not isinstance(layer, _NO_MACS):
        _uncounted(layer, unknown)
    macs = count(layer, input_shape, output_shape) if count else 0
    yield LayerProfile(name, type(layer).__name__, output_shape,
                       int(params) if first else 0, int(macs))
    if descend:
        for child, child_in, child_out in _traced_calls(layer, input_shape):
            yield from _rows(child, child_in, child_out, unknown, seen,
                             name + "/")


def _functional_rows(model, unknown, seen, prefix=""):
    for layer in model.layers:
        if (isinstance(layer, keras.Model) and not hasattr(layer, "profile")
                and getattr(layer, "inputs", None)):
            yield from _functional_rows(layer, unknown, seen,
                                        prefix + layer.name + "/")
            continue
        yield from _rows(layer, _shape(layer.input), _shape(layer.output),
                         unknown, seen, prefix)


def profile(model, input_shape=None, unknown="raise"):
    """Counts params and MACs of every layer of a built model.

    Args:
        model: a `keras.Model`: functional or sequential (nested models
            are walked), or subclassed (then give `input_shape`).
        input_shape: `(height, width, channels)` (any shape without the
            batch) for a subclassed model; a functional model has its own.
        unknown: "raise" (`UncountedLayerError`) or "warn" on a layer with
            weights that nothing can count.

    Returns:
        A `Profile` with `.layers`, `.params`, `.macs` and `.table()`;
        numbers are per image.

    Example:

    >>> model = keras_compact.models.build("resnet20", (32, 32, 3), 10)
    >>> result = keras_compact.profiling.profile(model)
    >>> result.params, result.macs
    (272474, 40813184)
    """
    if unknown not in ("raise", "warn"):
        raise UsageError(f"unknown={unknown!r}: must be 'raise' or 'warn'.")
    seen = set()
    if getattr(model, "inputs", None):
        layers = list(_functional_rows(model, unknown, seen))
    elif input_shape is None:
        raise UsageError(f"{model.name} is a subclassed model: pass "
                         "input_shape, e.g. profile(model, (32, 32, 3)).")
    else:
        layers = [row for child, child_in, child_out in _traced_calls(
            model, (None, *input_shape))
            for row in _rows(child, child_in, child_out, unknown, seen)]
    return Profile(layers, sum(p.params for p in layers),
                   sum(p.macs for p in layers))
