"""Building blocks shared by the backbones: padded convs, BN, the ResNet block.

Blocks are plain functions `block(x, filters, strides, name) -> y` that name
every layer, so a method changes a backbone by passing another block (or a
`functools.partial` of `basic_block` with another `conv`) instead of copying
the backbone.
"""

import keras

from keras_compact import layers


def conv2d(x, filters, kernel_size, strides=1, groups=1, use_bias=False,
           name=None):
    """A `k x k` convolution padded like PyTorch's `padding=k // 2`.

    Stride 1 uses `"same"` (symmetric for odd k); stride > 1 pads explicitly,
    since TF's `"same"` pads asymmetrically there. Grouped convs go through
    `layers.GroupedConv2D` (fast on TF); dense ones through Keras's Conv2D.
    """
    pad = kernel_size // 2
    padding = "same"
    if strides > 1 and pad:
        x = keras.layers.ZeroPadding2D(pad, name=f"{name}_pad")(x)
        padding = "valid"
    if groups > 1:
        conv = layers.GroupedConv2D(
            filters, kernel_size, strides=strides, padding=padding,
            groups=groups, use_bias=use_bias, name=name,
        )
    else:
        conv = keras.layers.Conv2D(
            filters, kernel_size, strides=strides, padding=padding,
            use_bias=use_bias, kernel_initializer=layers.kaiming_normal(),
            name=name,
        )
    return conv(x)


def batch_norm(x, name):
    return layers.BatchNormalization(name=name)(x)


def conv_bn_relu(x, filters, kernel_size, strides=1, name=None):
    x = conv2d(x, filters, kernel_size, strides, name=f"{name}_conv")
    x = batch_norm(x, f"{name}_bn")
    return keras.layers.ReLU(name=f"{name}_relu")(x)


def projection_shortcut(x, filters, strides, name):
    """Identity, or 1x1 conv + BN when the shape changes ("option B")."""
    if strides == 1 and x.shape[-1] == filters:
        return x
    x = keras.layers.Conv2D(
        filters, 1, strides=strides, use_bias=False,
        kernel_initializer=layers.kaiming_normal(), name=f"{name}_conv",
    )(x)
    return batch_norm(x, f"{name}_bn")


def basic_block(x, filters, strides, name, conv=conv2d):
    """He et al.'s basic block: two 3x3 convs with BN, shortcut, ReLU.

    Args:
        conv: `conv(x, filters, kernel_size, strides, name=) -> y`, the
            convolution of the two 3x3 units; swap it to change the conv.
    """
    shortcut = projection_shortcut(x, filters, strides, f"{name}_shortcut")
    y = conv(x, filters, 3, strides, name=f"{name}_conv1")
    y = batch_norm(y, f"{name}_bn1")
    y = keras.layers.ReLU(name=f"{name}_relu1")(y)
    y = conv(y, filters, 3, 1, name=f"{name}_conv2")
    y = batch_norm(y, f"{name}_bn2")
    y = keras.layers.Add(name=f"{name}_add")([y, shortcut])
    return keras.layers.ReLU(name=f"{name}_out")(y)


def classifier(x, num_classes, name="classifier"):
    """Global average pooling + dense logits (float32 under mixed precision)."""
    x = keras.layers.GlobalAveragePooling2D(name=f"{name}_pool")(x)
    return keras.layers.Dense(num_classes, dtype="float32", name=name)(x)
