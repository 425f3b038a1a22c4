"""Sc-ResNets and Sc-ResNeXt: ResNets whose 3x3 convs are SlimConv2D.

Reference: Qiu et al., "SlimConv: Reducing Channel Redundancy in
Convolutional Neural Networks by Features Recombining", IEEE TIP 2021,
https://arxiv.org/abs/2003.07469 (code: github.com/JiaxiongQ/SlimConv).

ImageNet shape (`models.resnet`'s backbone, torchvision v1.5 layout): the
bottleneck's 3x3 conv + BN becomes SlimConv2D + ReLU and the last 1x1 takes
its `width / k` channels, as in the reference `SC-ResNet.py`. At 224x224
with 1000 classes: Sc-ResNet-50 k=4/3 16,758,740 params / 2.652 G MACs,
k=8/3 12.098 M / 1.880 G; Sc-ResNet-101 k=4/3 27.957 M; Sc-ResNeXt-101 32x3d
k=2 (depths 4-8-18-3, top/bottom groups 32/16) 23.699 M / 4.581 G.

CIFAR shape: the same bottleneck nets with a 3x3 stem and no max-pool
(`sc_resnet50_cifar`, the paper's CIFAR-100 network, baseline
`resnet50_cifar`), and He et al.'s basic-block CIFAR ResNets
(`sc_resnet20` ... `sc_resnet110`, baselines `resnet20` ...) whose first
3x3 conv + BN of each block is SlimConv2D + ReLU, the second 3x3 restoring
the width (the author's advice, issue #2). Their 16-channel first stage is
narrower than the reference's squeeze reduction of 32, so those use a
reduction of 8 (the paper gives no CIFAR basic-block recipe): 2 hidden units
at 16 channels. (A single hidden unit that is zero on every calibration
image made LiteRT's XNNPACK delegate refuse the int8 model; `export.to_litert`
now repairs such degenerate scales, and 8 stays so trained checkpoints keep
their shapes.)

Every builder takes `k` (`"4/3"`, `"2"`, `"8/3"`, ...).
"""

import fractions
import functools

import keras

from keras_compact import layers
from keras_compact.layers.slim_conv import fold_factor
from keras_compact.models import blocks
from keras_compact.models import resnet
from keras_compact.models import resnet_cifar
from keras_compact.models.registry import register

SC_ARCHS = []  # the registered names; builders accept `k=`.

# The basic-block CIFAR nets start at 16 channels: 16 // 8 = 2 hidden units.
CIFAR_BASIC_REDUCTION = 8


def slim_mid(x, width, strides, groups, name, k="4/3", bottom_groups=None,
             reduction=32):
    """SlimConv2D + ReLU as a bottleneck's 3x3 unit (`bottleneck_block`)."""
    return layers.SlimConv2D(k=k, strides=strides, groups=groups,
                             bottom_groups=bottom_groups, reduction=reduction,
                             activation="relu", name=f"{name}_slimconv")(x)


def sc_bottleneck_block(x, filters, strides, name, k="4/3", groups=1,
                        base_width=64, bottom_groups=None, reduction=32):
    """The Sc bottleneck: 1x1, SlimConv2D + ReLU, 1x1 (no `bn2`)."""
    mid = functools.partial(slim_mid, k=k, bottom_groups=bottom_groups,
                            reduction=reduction)
    return resnet.bottleneck_block(x, filters, strides, name, mid=mid,
                                   groups=groups, base_width=base_width)


def sc_basic_block(x, filters, strides, name, k="4/3",
                   reduction=CIFAR_BASIC_REDUCTION, conv=blocks.conv2d):
    """A basic block whose first 3x3 conv + BN is SlimConv2D + ReLU.

    The second 3x3 conv takes SlimConv's `C_in / k` channels back to
    `filters`, so the residual add is unchanged.
    """
    shortcut = blocks.projection_shortcut(x, filters, strides,
                                          f"{name}_shortcut")
    y = layers.SlimConv2D(k=k, strides=strides, reduction=reduction,
                          activation="relu", name=f"{name}_slimconv")(x)
    y = conv(y, filters, 3, 1, name=f"{name}_conv2")
    y = blocks.batch_norm(y, f"{name}_bn2")
    y = keras.layers.Add(name=f"{name}_add")([y, shortcut])
    return keras.layers.ReLU(name=f"{name}_out")(y)


def _suffix(k):
    return str(fractions.Fraction(2 * fold_factor(k), 3)).replace("/", "_")


def sc_resnet(depths, input_shape, num_classes, k="4/3", groups=1,
              base_width=64, bottom_groups=None, stem="imagenet", name=None):
    """A bottleneck Sc-ResNet / Sc-ResNeXt on `models.resnet.resnet`.

    Args:
        depths: blocks per stage, `(3, 4, 6, 3)` for Sc-ResNet-50.
        input_shape: `(height, width, channels)`.
        num_classes: number of logits.
        k: SlimConv's compression, `"4/3"`, `"2"`, `"8/3"`, ...
        groups, base_width: ResNeXt cardinality and width per group.
        bottom_groups: groups of SlimConv's bottom 3x3 (default `groups`).
        stem: `"imagenet"` or `"cifar"` (see `models.resnet.STEMS`).
        name: model name.

    Example:

    >>> model = sc_resnet((1, 1, 1, 1), (64, 64, 3), 10, k="4/3")
    >>> keras_compact.profiling.profile(model).params
    5600326
    """
    block = functools.partial(sc_bottleneck_block, k=k, groups=groups,
                              base_width=base_width,
                              bottom_groups=bottom_groups)
    return resnet.resnet(depths, input_shape, num_classes, block=block,
                         stem=stem, name=name)


# name: (depths, groups, width per group, bottom groups, default k).
SC_RESNETS = {
    "sc_resnet50": ((3, 4, 6, 3), 1, 64, None, "4/3"),
    "sc_resnet101": ((3, 4, 23, 3), 1, 64, None, "4/3"),
    # Reconstructed (the reference's cannot be built): spec section 2.4.
    "sc_resnext101_32x3d": ((4, 8, 18, 3), 32, 3, 16, "2"),
}


def _build(arch, stem, input_shape, num_classes, k=None, name=None):
    depths, groups, base_width, bottom_groups, default_k = SC_RESNETS[arch]
    k = k or default_k
    suffix = "" if stem == "imagenet" else f"_{stem}"
    return sc_resnet(depths, input_shape, num_classes, k=k, groups=groups,
                     base_width=base_width, bottom_groups=bottom_groups,
                     stem=stem, name=name or f"{arch}{suffix}_k{_suffix(k)}")


def _build_cifar_basic(depth, input_shape, num_classes, k="4/3", name=None):
    block = functools.partial(sc_basic_block, k=k)
    return resnet_cifar.resnet_cifar(
        depth, input_shape, num_classes, block=block,
        name=name or f"sc_resnet{depth}_k{_suffix(k)}",
    )


def _register(name, builder):
    SC_ARCHS.append(name)
    register(name, builder)


for _arch in SC_RESNETS:
    _register(_arch, functools.partial(_build, _arch, "imagenet"))
    _register(f"{_arch}_cifar", functools.partial(_build, _arch, "cifar"))
for _depth in (20, 32, 44, 56, 110):
    _register(f"sc_resnet{_depth}",
              functools.partial(_build_cifar_basic, _depth))
