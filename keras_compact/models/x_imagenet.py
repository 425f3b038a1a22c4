"""X-ResNet and X-MobileNet (X-Nets) on the shared ImageNet backbones.

Reference: Prabhu et al., "Deep Expander Networks", ECCV 2018,
https://arxiv.org/abs/1711.08757. Both are the library's `models.resnet` and
`models.mobilenet` backbones with another conv factory, no copies:

- X-ResNet-18/34/50: every conv of every residual block is an expander conv
  with `C_in // ES` inputs per output (output-regular, the rule of the
  logged runs); stem, projection shortcuts and classifier stay dense.
  X-ResNet-50-2 has 2.28 G MACs over existing connections (dense 4.09 G).
- X-MobileNet-0.5-G (the standard width-0.5 MobileNetV1 the paper's FLOPs
  were counted on: 16-channel stem, 512-wide last block): pointwise convs
  2-13 are expander convs where each *input* channel feeds `C_out // G`
  outputs (input-regular, density 1/G); stem, depthwise convs, the first
  pointwise conv and the classifier stay dense. 85.3 / 53.2 / 37.1 / 29.1 M
  MACs for G = 2 / 4 / 8 / 16 (dense 149.5 M).
- `x_mobilenet_v1_0.5_shuffle` (a variant graph, not the paper's): the same
  pointwise convs as a channel shuffle then G contiguous groups (same
  density and MACs), so they deploy as TRANSPOSE + one grouped CONV_2D.
"""

import functools

from keras_compact import layers
from keras_compact.layers import expander
from keras_compact.models import mobilenet
from keras_compact.models import resnet
from keras_compact.models.registry import register

X_RESNETS = ("resnet18", "resnet34", "resnet50")


def x_resnet(arch, input_shape, num_classes, density=0.5,
             expander_impl="masked", expander_groups=None, expander_seed=0,
             stem="imagenet", expand_ratio=None):
    """X-ResNet: `models.resnet`'s `arch` with expander block convs.

    Args:
        arch: "resnet18", "resnet34" or "resnet50".
        input_shape, num_classes: as for every model builder.
        density: `1 / ES` for the compression factor ES (the name ends in
            ES: `x_resnet18_2`).
        expander_impl, expander_groups, expander_seed: as in
            `densenet_bc_cifar`.
        stem: "imagenet" (7x7/2 + max-pool) or "cifar".
        expand_ratio: deprecated, ES (use `density=1 / ES`).

    Example:

    >>> model = keras_compact.models.build("x_resnet18", (32, 32, 3), 10)
    >>> model.name  # ES = 2
    'x_resnet18_2'
    """
    if arch not in X_RESNETS:
        raise ValueError(f"X-ResNet arch must be one of {X_RESNETS}. "
                         f"Received: arch={arch!r}.")
    if expand_ratio is not None:
        density = expander.deprecated_density(expand_ratio)
    depths, block, _, _ = resnet.RESNETS[arch]
    conv = layers.expander_conv_factory(density, expander_impl,
                                        expander_groups, expander_seed)
    return resnet.resnet(depths, input_shape, num_classes,
                         block=functools.partial(block, conv=conv),
                         stem=stem, name=f"x_{arch}_"
                         f"{expander.compression_factor(density)}")


def _is_x_pointwise(name, kernel_size, groups):
    # Pointwise convs of blocks 2-13 ("block{i}_pw_conv"); block 1's stays
    # dense, as in the reference.
    return (kernel_size == 1 and groups == 1 and name.endswith("_pw_conv")
            and not name.startswith("block1_"))


def x_mobilenet_v1(input_shape, num_classes, density=0.5,
                   expander_impl="masked", expander_groups=None,
                   expander_seed=0, width_multiplier=0.5, stem_strides=2,
                   pointwise_graph="in", expand_ratio=None):
    """X-MobileNet-width-G: MobileNetV1 with input-regular expander
    pointwise convs (each input feeds `C_out // G` outputs).

    Args:
        input_shape, num_classes: as for every model builder.
        density: `1 / G` for the paper's G (the name ends in G).
        expander_impl, expander_seed: as in `densenet_bc_cifar`.
        expander_groups: must be None (input-regular graphs have no block
            form).
        width_multiplier: 0.5 in the paper.
        stem_strides: 2 on ImageNet, 1 for 32x32 inputs.
        pointwise_graph: `"in"` (the paper's random input-regular graphs)
            or `"shuffle"` (the named variant `x_mobilenet_v1_0.5_shuffle`:
            a channel shuffle then G contiguous groups, same density; it
            deploys as TRANSPOSE + grouped CONV_2D).
        expand_ratio: deprecated, G (use `density=1 / G`).

    Example:

    >>> model = keras_compact.models.build("x_mobilenet_v1_0.5",
    ...                                    (32, 32, 3), 10, density=1 / 4)
    >>> model.name
    'x_mobilenet_v1_0.5_4'
    """
    if expand_ratio is not None:
        density = expander.deprecated_density(expand_ratio)
    factor = expander.compression_factor(density)

    def conv(x, filters, kernel_size, *, strides=1, padding="valid",
             groups=1, use_bias=False, kernel_initializer=None, name):
        if not _is_x_pointwise(name, kernel_size, groups):
            return mobilenet.conv2d(
                x, filters, kernel_size, strides=strides, padding=padding,
                groups=groups, use_bias=use_bias,
                kernel_initializer=kernel_initializer, name=name)
        shuffle = pointwise_graph == "shuffle"
        return layers.ExpanderConv2D(
            filters, 1, strides=strides, padding=padding,
            density=density, regular_side=pointwise_graph,
            groups=factor if shuffle else expander_groups,
            impl=expander_impl, use_bias=use_bias,
            seed=expander.layer_seed(expander_seed, name), name=name)(x)

    return mobilenet.mobilenet_v1(
        input_shape, num_classes, conv=conv,
        width_multiplier=width_multiplier, stem_strides=stem_strides,
        name=f"x_mobilenet_v1_{width_multiplier}_{factor}"
        + ("_shuffle" if pointwise_graph == "shuffle" else ""))


for _arch in X_RESNETS:
    register(f"x_{_arch}", functools.partial(x_resnet, _arch))
register("x_mobilenet_v1_0.5", x_mobilenet_v1)
register("x_mobilenet_v1_0.5_shuffle", functools.partial(
    x_mobilenet_v1, pointwise_graph="shuffle"))
