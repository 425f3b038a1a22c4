"""DenseNet-BC for CIFAR (Huang et al., 2017) and X-DenseNet-BC (X-Nets).

Reference: "Densely Connected Convolutional Networks",
https://arxiv.org/abs/1608.06993 (DenseNet-BC: bottleneck units and
compression 0.5), and "Deep Expander Networks", https://arxiv.org/abs/1711.08757
for X-DenseNet-BC-L-k-ES: both convs of every bottleneck unit are expander
convs (1x1 with `c_in // ES` inputs per output, 3x3 with `4k // ES`); the
stem, the transitions and the classifier stay dense, as in the model that
produced the paper's logs. DenseNet-BC-40-24 has 690,346 parameters with 10
classes; X-DenseNet-BC-40-24-2 has 375,850 and 157,854,288 MACs (connections
that exist only).
"""

import functools

import keras

from keras_compact import layers
from keras_compact.layers import expander
from keras_compact.models import blocks
from keras_compact.models.registry import register

ROWS = (24, 36, 48, 60)  # growth rates of the paper's depth-40 rows


def fan_out_normal():
    """The reference's conv init N(0, 2 / (k * k * C_out)), untruncated."""
    return keras.initializers.VarianceScaling(2.0, "fan_out",
                                              "untruncated_normal")


def torch_linear_head(x, num_classes, name="classifier"):
    """Global average pool + Linear with PyTorch's default U(+-1/sqrt(in))."""
    x = keras.layers.GlobalAveragePooling2D(name=f"{name}_pool")(x)
    return keras.layers.Dense(
        num_classes, dtype="float32", name=name,
        kernel_initializer=keras.initializers.VarianceScaling(
            1.0 / 3.0, "fan_in", "uniform"))(x)


def conv_factory(density=None, impl="masked", groups=None, seed=0,
                 chunks=None):
    """The conv of the layers that X-Nets make expanders.

    Returns `conv(x, filters, kernel_size, strides=1, name=None) -> y` with
    PyTorch padding: a dense He fan-out conv when `density` is None,
    else `layers.expander_conv_factory`'s seeded expander conv.
    """
    if density is not None:
        return layers.expander_conv_factory(density, impl, groups, seed,
                                            chunks=chunks)

    def dense(x, filters, kernel_size, strides=1, name=None):
        pad = kernel_size // 2
        padding = "same"
        if strides > 1 and pad:
            x = keras.layers.ZeroPadding2D(pad, name=f"{name}_pad")(x)
            padding = "valid"
        return keras.layers.Conv2D(
            filters, kernel_size, strides=strides, padding=padding,
            use_bias=False, kernel_initializer=fan_out_normal(),
            name=name)(x)

    return dense


def bn_relu(x, name):
    x = blocks.batch_norm(x, f"{name}_bn")
    return keras.layers.ReLU(name=f"{name}_relu")(x)


def bottleneck_unit(x, growth, name, conv):
    """BN-ReLU-conv1x1(4k)-BN-ReLU-conv3x3(k), concatenated to the input."""
    y = bn_relu(x, f"{name}_1")
    y = conv(y, 4 * growth, 1, name=f"{name}_conv1")
    y = bn_relu(y, f"{name}_2")
    y = conv(y, growth, 3, name=f"{name}_conv2")
    return keras.layers.Concatenate(name=f"{name}_concat")([x, y])


def transition(x, name, reduction=0.5):
    """BN-ReLU-dense conv1x1 (channels * reduction)-AvgPool 2."""
    x = bn_relu(x, name)
    x = keras.layers.Conv2D(
        int(x.shape[-1] * reduction), 1, use_bias=False,
        kernel_initializer=fan_out_normal(), name=f"{name}_conv")(x)
    return keras.layers.AveragePooling2D(2, name=f"{name}_pool")(x)


def densenet_bc_cifar(depth, growth, input_shape, num_classes,
                      density=None, expander_impl="masked",
                      expander_groups=None, expander_seed=0,
                      expander_chunks=None, reduction=0.5, name=None,
                      expand_ratio=None):
    """DenseNet-BC-depth-growth for 32x32 images; X-DenseNet with ES given.

    Args:
        depth: 6n + 4 (40, 100, ...): three dense blocks of n bottleneck
            units.
        growth: growth rate k; the stem has 2k channels.
        input_shape: `(height, width, channels)`.
        num_classes: number of logits.
        density: None for the dense net, or `1 / ES` for X-Nets'
            compression factor ES: the two convs of every unit become
            `ExpanderConv2D`s (the name ends in ES).
        expander_impl: `"masked"` (train, the paper's semantics) or
            `"gather"` (deploy; `layers.gathered_model` converts).
        expander_groups: None (channel-level graph) or output blocks per
            expander conv (block expander, see `ExpanderConv2D`).
        expander_seed: model seed of the expander graphs.
        expander_chunks: None, or C: block expanders whose inputs are C
            contiguous chunks (with `expander_groups`; fast gather).
        reduction: transition compression (0.5 in DenseNet-BC).
        name: the model's name (default from the arguments).
        expand_ratio: deprecated, ES (use `density=1 / ES`).

    Example:

    >>> model = densenet_bc_cifar(40, 24, (32, 32, 3), 10)
    >>> keras_compact.profiling.profile(model).params
    690346
    """
    if (depth - 4) % 6 or depth < 10:
        raise ValueError(f"DenseNet-BC depth must be 6n + 4 (40, 100, ...). "
                         f"Received: depth={depth}.")
    if expand_ratio is not None:
        density = expander.deprecated_density(expand_ratio)
    units = (depth - 4) // 6
    conv = conv_factory(density, expander_impl, expander_groups,
                        expander_seed, expander_chunks)
    inputs = keras.Input(input_shape, name="image")
    x = keras.layers.Conv2D(
        2 * growth, 3, padding="same", use_bias=False,
        kernel_initializer=fan_out_normal(), name="stem_conv")(inputs)
    for stage in range(3):
        if stage:
            x = transition(x, f"transition{stage}", reduction)
        for unit in range(units):
            x = bottleneck_unit(x, growth, f"block{stage + 1}_unit"
                                f"{unit + 1}", conv)
    x = bn_relu(x, "final")
    outputs = torch_linear_head(x, num_classes)
    prefix = "x_" if density else ""
    suffix = f"_{expander.compression_factor(density)}" if density else ""
    return keras.Model(inputs, outputs, name=name or
                       f"{prefix}densenet_bc_{depth}_{growth}{suffix}")


for _growth in ROWS:
    register(f"densenet_bc_40_{_growth}",
             functools.partial(densenet_bc_cifar, 40, _growth))
    register(f"x_densenet_bc_40_{_growth}",
             functools.partial(densenet_bc_cifar, 40, _growth,
                               density=0.5))
register("densenet_bc_100_12", functools.partial(densenet_bc_cifar, 100, 12))
# Uniformly thinned to X-DenseNet-BC-40-24-2's MACs (162M vs 158M at
# 32x32), the dense baseline of the same cost.
register("densenet_bc_40_18", functools.partial(densenet_bc_cifar, 40, 18))
