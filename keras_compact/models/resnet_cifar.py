"""CIFAR ResNets (He et al., 2016): depth 6n + 2, widths 16-32-64.

Reference: "Deep Residual Learning for Image Recognition",
https://arxiv.org/abs/1512.03385 (section 4.2). The shortcut is the
projection ("option B") used by the compact-net papers' reference code, so
ResNet-20 has 272,474 parameters and 40,813,184 MACs on 32x32 inputs.
"""

import functools

import keras

from keras_compact.models import blocks
from keras_compact.models.registry import register

STAGE_WIDTHS = (16, 32, 64)


def resnet_cifar(depth, input_shape, num_classes, block=blocks.basic_block,
                 widths=STAGE_WIDTHS, name=None):
    """Builds a CIFAR ResNet of `depth = 6n + 2` layers.

    Args:
        depth: 20, 32, 44, 56, 110, ... (6n + 2).
        input_shape: `(height, width, channels)`.
        num_classes: number of logits.
        block: `block(x, filters, strides, name) -> y`; the residual block of
            every stage (default: `blocks.basic_block`). Methods pass their
            own (cheap blocks, SlimConv blocks) to reuse this backbone.
        widths: channels of the stem/first stage and the three stages.

    Example:

    >>> model = resnet_cifar(20, (32, 32, 3), 10)
    >>> keras_compact.profiling.profile(model).params
    272474
    """
    if (depth - 2) % 6 or depth < 8:
        raise ValueError(f"CIFAR ResNet depth must be 6n + 2 (20, 32, 56, "
                         f"110, ...). Received: depth={depth}.")
    blocks_per_stage = (depth - 2) // 6
    inputs = keras.Input(input_shape, name="image")
    x = blocks.conv_bn_relu(inputs, widths[0], 3, name="stem")
    for stage, filters in enumerate(widths):
        for index in range(blocks_per_stage):
            strides = 2 if stage > 0 and index == 0 else 1
            x = block(x, filters, strides, name=f"stage{stage + 1}_block"
                      f"{index + 1}")
    outputs = blocks.classifier(x, num_classes)
    return keras.Model(inputs, outputs, name=name or f"resnet{depth}")


for _depth in (20, 32, 44, 56, 110):
    register(f"resnet{_depth}", functools.partial(resnet_cifar, _depth))
