"""ImageNet-shape ResNets and ResNeXts (torchvision's v1.5 layout).

References:
    He et al., "Deep Residual Learning for Image Recognition",
    https://arxiv.org/abs/1512.03385; Xie et al., "Aggregated Residual
    Transformations for Deep Neural Networks" (ResNeXt),
    https://arxiv.org/abs/1611.05431.

The stride of a downsampling bottleneck sits on its 3x3 conv (v1.5), the
shortcut is a 1x1 conv + BN when the shape changes, and every padding is
PyTorch's (explicit for stride 2), so ResNet-50 has 25,557,032 params and
4.089 G MACs at 224x224 with 1000 classes, as torchvision's.

How other methods plug in (one backbone, no copies):

- `block(x, filters, strides, name) -> y` is the residual block of every
  stage (`blocks.basic_block` for ResNet-18/34, `bottleneck_block` for 50+).
  `filters` is `widths[stage]`, or `widths[stage][index]` when a stage's
  entry is a sequence, so per-block widths (a channel search's decoded
  widths) pass through to a block that understands them.
- `conv(x, filters, kernel_size, strides, name=, groups=)` is the
  convolution of the blocks (`blocks.conv2d`); pass
  `functools.partial(bottleneck_block, conv=my_conv)` (or
  `functools.partial(blocks.basic_block, conv=my_conv)`) to change every
  block conv, e.g. into a sparse expander conv. `groups` is only passed when
  it is not 1. The stem, shortcuts and classifier stay dense.
- `mid(x, width, strides, groups, name) -> y` is the whole 3x3 unit of a
  bottleneck (conv + BN + ReLU by default); SlimConv replaces it.
- `stem` is a name in `STEMS` ("imagenet": 7x7/2 conv + 3x3/2 max-pool;
  "cifar": one 3x3 conv, no pooling) or a function `stem(x, name) -> y`.
"""

import functools

import keras

from keras_compact.models import blocks
from keras_compact.models.registry import register
from keras_compact.registry import Registry

STAGE_WIDTHS = (64, 128, 256, 512)
STEMS = Registry("stem")


@STEMS.register("imagenet")
def imagenet_stem(x, name="stem", filters=64):
    """7x7/2 conv + BN + ReLU, then a 3x3/2 max-pool, padded like PyTorch.

    Zero padding is exact for the max-pool: its input is >= 0 after ReLU.
    """
    x = blocks.conv_bn_relu(x, filters, 7, strides=2, name=name)
    x = keras.layers.ZeroPadding2D(1, name=f"{name}_pool_pad")(x)
    return keras.layers.MaxPooling2D(3, 2, name=f"{name}_pool")(x)


@STEMS.register("cifar")
def cifar_stem(x, name="stem", filters=64):
    """A 3x3 conv + BN + ReLU at full resolution, for 32x32 images."""
    return blocks.conv_bn_relu(x, filters, 3, name=name)


def conv_bn_relu_mid(x, width, strides, groups, name, conv=blocks.conv2d):
    """The default 3x3 unit of a bottleneck: (grouped) conv, BN, ReLU."""
    kwargs = {"groups": groups} if groups != 1 else {}
    x = conv(x, width, 3, strides, name=f"{name}_conv2", **kwargs)
    x = blocks.batch_norm(x, f"{name}_bn2")
    return keras.layers.ReLU(name=f"{name}_relu2")(x)


def bottleneck_block(x, filters, strides, name, conv=blocks.conv2d, mid=None,
                     groups=1, base_width=64, expansion=4):
    """The ResNet v1.5 / ResNeXt bottleneck: 1x1, 3x3 (strided), 1x1.

    Args:
        x: input tensor (NHWC).
        filters: "planes"; the block outputs `expansion * filters` channels.
        strides: stride of the 3x3 unit and of the projection shortcut.
        name: prefix of every layer name.
        conv: `conv(x, filters, kernel_size, strides, name=, groups=)`, the
            block's convolutions (default `blocks.conv2d`).
        mid: `mid(x, width, strides, groups, name) -> y`, the 3x3 unit
            including its normalisation and activation; its output may have
            any width (the last 1x1 takes whatever it gets). Default: conv +
            BN + ReLU through `conv`.
        groups: cardinality of the 3x3 unit (ResNeXt).
        base_width: width per group; the 3x3 unit is
            `int(filters * base_width / 64) * groups` channels wide.
        expansion: output channels per plane.

    Example:

    >>> x = keras.Input((56, 56, 64))
    >>> y = bottleneck_block(x, 64, 1, name="block")  # 256 channels out
    """
    width = int(filters * base_width / 64) * groups
    outputs = filters * expansion
    shortcut = blocks.projection_shortcut(x, outputs, strides,
                                          f"{name}_shortcut")
    y = conv(x, width, 1, 1, name=f"{name}_conv1")
    y = blocks.batch_norm(y, f"{name}_bn1")
    y = keras.layers.ReLU(name=f"{name}_relu1")(y)
    if mid is None:
        mid = functools.partial(conv_bn_relu_mid, conv=conv)
    y = mid(y, width, strides, groups, name)
    y = conv(y, outputs, 1, 1, name=f"{name}_conv3")
    y = blocks.batch_norm(y, f"{name}_bn3")
    y = keras.layers.Add(name=f"{name}_add")([y, shortcut])
    return keras.layers.ReLU(name=f"{name}_out")(y)


def resnet(depths, input_shape, num_classes, block=bottleneck_block,
           widths=STAGE_WIDTHS, stem="imagenet", name=None):
    """Builds a four-stage ResNet from a block and the blocks per stage.

    Args:
        depths: blocks per stage, e.g. `(3, 4, 6, 3)` for ResNet-50.
        input_shape: `(height, width, channels)` of one image.
        num_classes: number of logits.
        block: `block(x, filters, strides, name) -> y` (module docstring);
            use `functools.partial` to set its `conv`, `mid` or `groups`.
        widths: per stage, the `filters` of its blocks (an int), or a
            sequence with one entry per block.
        stem: a name in `STEMS` or `stem(x, name) -> y`.
        name: model name.

    Returns:
        A functional `keras.Model` from images to logits.

    Example:

    >>> model = resnet((1, 1, 1, 1), (64, 64, 3), 10)  # (3, 4, 6, 3): R-50
    >>> keras_compact.profiling.profile(model).params
    8036426
    """
    if len(depths) != len(widths):
        raise ValueError(f"depths and widths need one entry per stage. "
                         f"Received: depths={depths}, widths={widths}.")
    stem_fn = STEMS.get(stem) if isinstance(stem, str) else stem
    inputs = keras.Input(input_shape, name="image")
    x = stem_fn(inputs, name="stem")
    for stage, (depth, stage_widths) in enumerate(zip(depths, widths)):
        per_block = isinstance(stage_widths, (list, tuple))
        if per_block and len(stage_widths) != depth:
            raise ValueError(
                f"Stage {stage + 1} has {depth} blocks but {len(stage_widths)}"
                f" widths. Received: widths[{stage}]={stage_widths}."
            )
        for index in range(depth):
            strides = 2 if stage > 0 and index == 0 else 1
            filters = stage_widths[index] if per_block else stage_widths
            x = block(x, filters, strides,
                      name=f"stage{stage + 1}_block{index + 1}")
    outputs = blocks.classifier(x, num_classes)
    return keras.Model(inputs, outputs, name=name or "resnet")


# name: (depths, block, groups, width per group).
RESNETS = {
    "resnet18": ((2, 2, 2, 2), blocks.basic_block, 1, 64),
    "resnet34": ((3, 4, 6, 3), blocks.basic_block, 1, 64),
    "resnet50": ((3, 4, 6, 3), bottleneck_block, 1, 64),
    "resnet101": ((3, 4, 23, 3), bottleneck_block, 1, 64),
    "resnet152": ((3, 8, 36, 3), bottleneck_block, 1, 64),
    "resnext50_32x4d": ((3, 4, 6, 3), bottleneck_block, 32, 4),
    "resnext101_32x8d": ((3, 4, 23, 3), bottleneck_block, 32, 8),
    # SlimConv's ResNeXt-101 baseline: same 33 blocks, other depths.
    "resnext101_32x3d": ((4, 8, 18, 3), bottleneck_block, 32, 3),
}


def _build(arch, stem, input_shape, num_classes, **kwargs):
    depths, block, groups, base_width = RESNETS[arch]
    if groups != 1 or base_width != 64:
        block = functools.partial(block, groups=groups, base_width=base_width)
    kwargs.setdefault("name", arch if stem == "imagenet" else f"{arch}_{stem}")
    kwargs.setdefault("block", block)  # a method may pass its own block
    return resnet(depths, input_shape, num_classes, stem=stem, **kwargs)


for _arch in RESNETS:
    register(_arch, functools.partial(_build, _arch, "imagenet"))
    register(f"{_arch}_cifar", functools.partial(_build, _arch, "cifar"))
