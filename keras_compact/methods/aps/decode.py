"""Decoding searched widths into plain networks (spec sections 2.7, 4)."""


import keras
import tensorflow as tf

from keras_compact import files
from keras_compact import profiling
from keras_compact.methods.aps.flops import table_macs
from keras_compact.models import blocks
from keras_compact.models import mobilenet
from keras_compact.models import resnet
from keras_compact.registry import Registry

# The searched configurations shipped with the reference
# (scripts/train/start_train_*.sh; spec section 4.3).
SEARCHED_WIDTHS = {
    "resnet20_20.6M": (8, 8, 8, 8, 8, 8, 8, 16, 16, 16, 16, 32, 32, 32,
                       64, 64, 64, 64, 64),
    "resnet56_60.3M": (16, 16, 16) + (8,) * 20 + (16,) * 10 + (32,) * 10
    + (64,) * 12,
    "resnet18_1.83G": (48, 64, 64, 64, 48, 160, 128, 96, 96, 320, 256, 256,
                       256, 512, 512, 640, 640),
    "resnet18_1.05G": (32, 48, 48, 48, 64, 96, 64, 96, 96, 192, 192, 192,
                       192, 384, 384, 384, 640),
    "mobilenet_v2_314M": (
        40, 40, 20, 60, 60, 30, 72, 72, 30, 90, 90, 40, 120, 120, 40, 120,
        120, 40, 96, 96, 80, 192, 192, 80, 144, 144, 80, 240, 240, 80, 480,
        480, 120, 432, 432, 120, 576, 576, 120, 432, 432, 200, 1200, 1200,
        200, 960, 960, 200, 1200, 1200, 400, 1600),
    "mobilenet_v2_156M": (
        24, 24, 12, 36, 36, 24, 54, 54, 24, 90, 90, 24, 72, 72, 24, 72, 72,
        24, 72, 72, 64, 192, 192, 64, 96, 96, 64, 96, 96, 64, 192, 192, 48,
        288, 288, 48, 576, 576, 48, 576, 576, 160, 960, 960, 160, 720, 720,
        160, 960, 960, 240, 1280),
}

# (expand ratio t, blocks, stride) of the MobileNetV2 supernet: t = 3 in
# stages 2-4 instead of 6 (nets/mobilenet_v2_width.py, `expansions`).
MBV2_STAGES = ((1, 1, 1), (3, 2, 2), (3, 3, 2), (3, 4, 2), (6, 3, 1),
               (6, 3, 2), (6, 1, 1))


SHORTCUTS = Registry("shortcut")


@SHORTCUTS.register("paper")
def paper_shortcut(x, filters, strides, name):
    """The decoded nets' rule (spec 4.1): identity if the shape is kept;
    1x1 conv + BN if only the width changes; 2x2 average pool + 1x1 conv
    (no BN) at stride 2."""
    if strides > 1:
        x = keras.layers.AveragePooling2D(strides, name=f"{name}_pool")(x)
        return blocks.conv2d(x, filters, 1, name=f"{name}_conv")
    return blocks.projection_shortcut(x, filters, 1, name)


@SHORTCUTS.register("supernet")
def supernet_shortcut(x, filters, strides, name):
    """The supernet's branch: always a strided 1x1 conv + BN (spec 1.4)."""
    x = blocks.conv2d(x, filters, 1, strides, name=f"{name}_conv")
    return blocks.batch_norm(x, f"{name}_bn")


def _decoded_block(x, mid, out, strides, name, shortcut):
    residual = SHORTCUTS.get(shortcut)(x, out, strides, f"{name}_shortcut")
    y = blocks.conv2d(x, mid, 3, strides, name=f"{name}_conv1")
    y = blocks.batch_norm(y, f"{name}_bn1")
    y = keras.layers.ReLU(name=f"{name}_relu1")(y)
    y = blocks.conv2d(y, out, 3, 1, name=f"{name}_conv2")
    y = blocks.batch_norm(y, f"{name}_bn2")
    y = keras.layers.Add(name=f"{name}_add")([y, residual])
    return keras.layers.ReLU(name=f"{name}_out")(y)


def decode_resnet(widths, depths, input_shape, num_classes, stem="cifar",
                  shortcut="paper", name=None):
    """The plain ResNet of a width list `[stem, (mid, out) per block]`.

    Args:
        widths: `1 + 2 * sum(depths)` channel numbers.
        depths: basic blocks per stage; stride 2 opens every stage but the
            first.
        input_shape: `(H, W, channels)`.
        num_classes: logits.
        stem: `"cifar"` (3x3 conv) or `"imagenet"` (7x7/2 conv + 3x3/2
            max-pool), see `models.resnet.STEMS`.
        shortcut: `"paper"` (the reference decoders' rule) or
            `"supernet"` (1x1 conv + BN in every block, to inherit a
            supernet path's weights with `extract_path`).
        name: model name.
    """
    widths = [int(w) for w in widths]
    expected = 1 + 2 * sum(depths)
    if len(widths) != expected or min(widths) < 1:
        raise ValueError(
            f"widths must hold {expected} positive values ([stem, (mid, out)"
            f" per block] for blocks {tuple(depths)}). Received "
            f"{len(widths)}: {widths}.")
    inputs = keras.Input(input_shape, name="image")
    x = resnet.STEMS.get(stem)(inputs, name="stem", filters=widths[0])
    j = 1
    for stage, count in enumerate(depths):
        for index in range(count):
            x = _decoded_block(x, widths[j], widths[j + 1],
                               2 if stage and not index else 1,
                               f"stage{stage + 1}_block{index + 1}",
                               shortcut)
            j += 2
    outputs = blocks.classifier(x, num_classes)
    return keras.Model(inputs, outputs, name=name)


def decode(widths, input_shape=(32, 32, 3), num_classes=10,
           shortcut="paper", name=None):
    """The plain CIFAR ResNet of a searched width list (spec 4.1).

    Args:
        widths: `[stem, (mid, out) x blocks]`, 6n + 1 values (19 for
            ResNet-20, 55 for ResNet-56), e.g. `SEARCHED_WIDTHS[...]`.
        input_shape: `(H, W, channels)`.
        num_classes: logits.
        shortcut: `"paper"` (the reference decoder's rule) or
            `"supernet"` (the supernet's 1x1 conv + BN in every block, for
            inheriting a supernet path's weights with `extract_path`).

    Example:

    >>> model = decode(SEARCHED_WIDTHS["resnet20_20.6M"])
    >>> keras_compact.profiling.profile(model).params
    205138
    """
    widths = [int(w) for w in widths]
    if (len(widths) - 1) % 6 or len(widths) < 7 or min(widths) < 1:
        raise ValueError(
            f"widths must hold 6n + 1 positive values ([stem, (mid, out) "
            f"per block]; 19 for ResNet-20, 55 for ResNet-56). Received "
            f"{len(widths)}: {widths}.")
    per_stage = (len(widths) - 1) // 6
    return decode_resnet(widths, (per_stage,) * 3, input_shape, num_classes,
                         "cifar", shortcut,
                         name or f"aps_resnet{len(widths) + 1}")


def decode_resnet18(widths, input_shape=(224, 224, 3), num_classes=1000,
                    shortcut="paper", name="aps_resnet18"):
    """The reference's `ResNet18s_Decode` (spec 4.1): 17 widths.

    Example:

    >>> model = decode_resnet18(SEARCHED_WIDTHS["resnet18_1.83G"])
    >>> keras_compact.profiling.profile(model).params
    14109848
    """
    return decode_resnet(widths, (2, 2, 2, 2), input_shape, num_classes,
                         "imagenet", shortcut, name)


def decode_mobilenet_v2(widths, input_shape=(224, 224, 3), num_classes=1000,
                        shortcut="paper", dropout=0.0, name="aps_mobilenet_v2"):
    """The reference's `MobileNetV2_Decode` (spec 4.1): 52 widths.

    Layout: stem, block 1 `(dw, out)` (dw = stem), every other block
    `(pw, dw, out)` with pw = dw, then the last 1x1 conv; the stage
    structure is MobileNetV2's (blocks 1, 2, 3, 4, 3, 3, 1; strides 1, 2, 2,
    2, 1, 2, 1). The non-first blocks of a stage are residual (identity if
    the widths agree, else 1x1 conv + BN; `shortcut="supernet"`: always
    1x1 conv + BN, for `extract_path`). Convs N(0, 2 / fan_out), the
    classifier N(0, 0.01) after `dropout` (the reference trains with 0).

    Example:

    >>> model = decode_mobilenet_v2(SEARCHED_WIDTHS["mobilenet_v2_314M"])
    >>> keras_compact.profiling.profile(model).params
    4530402
    """
    widths = [int(w) for w in widths]
    if len(widths) != 52 or min(widths) < 1 or widths[1] != widths[0] or any(
            widths[j] != widths[j + 1] for j in range(3, 51, 3)):
        raise ValueError(
            "widths must hold 52 positive values: stem, block 1 (dw, out) "
            "with dw = stem, then (pw, dw, out) with pw = dw for blocks "
            f"2..17, then the last conv. Received {len(widths)}: {widths}.")
    initializer = keras.initializers.VarianceScaling(
        2.0, mode="fan_out", distribution="untruncated_normal")

    def unit(x, filters, kernel, strides, name, activation, groups=1):
        return mobilenet.conv_bn_act(
            x, filters, kernel, strides, mobilenet.conv2d, name, activation,
            groups=groups, kernel_initializer=initializer)

    inputs = keras.Input(input_shape, name="image")
    x = unit(inputs, widths[0], 3, 2, "stem", "relu6")
    x = unit(x, widths[1], 3, 1, "block1_dw", "relu6", groups=widths[1])
    x = unit(x, widths[2], 1, 1, "block1_project", None)
    j, index = 3, 1
    for _, repeats, strides in MBV2_STAGES[1:]:
        for repeat in range(repeats):
            index += 1
            name = f"block{index}"
            hidden, out = widths[j], widths[j + 2]
            stride = strides if repeat == 0 else 1
            y = unit(x, hidden, 1, 1, f"{name}_expand", "relu6")
            y = unit(y, hidden, 3, stride, f"{name}_dw", "relu6",
                     groups=hidden)
            y = unit(y, out, 1, 1, f"{name}_project", None)
            if repeat:
                residual = SHORTCUTS.get(shortcut)(x, out, 1,
                                                   f"{name}_shortcut")
                y = keras.layers.Add(name=f"{name}_add")([y, residual])
            x, j = y, j + 3
    x = unit(x, widths[51], 1, 1, "last", "relu6")
    x = keras.layers.GlobalAveragePooling2D(name="pool")(x)
    x = keras.layers.Dropout(dropout, name="dropout")(x)
    outputs = keras.layers.Dense(
        num_classes, dtype="float32", name="classifier",
        kernel_initializer=keras.initializers.RandomNormal(stddev=0.01),
        bias_initializer="zeros")(x)
    return keras.Model(inputs, outputs, name=name)


def extract_path(supernet, arch):
    """The plain network of one supernet path with its weights copied in.

    Kernels are the projected `P^T W Q` of the path's pairs, the BNs get the
    pairs' running statistics (gamma 1, beta 0), the classifier the
    projected `kernel . Q_k`; in inference mode the result computes the
    same function as `supernet((x, arch), training=False)`.
    """
    return supernet.plain_path(arch)


def parse_widths(value):
    """Widths from a shipped name, a JSON file or a comma-separated list.

    A JSON file holds a list or a dict with "widths" (what the search
    writes).
    """
    if isinstance(value, (list, tuple)):
        return [int(w) for w in value]
    text = str(value).strip()
    if text in SEARCHED_WIDTHS:
        return list(SEARCHED_WIDTHS[text])
    if tf.io.gfile.exists(text):
        data = files.read_json(text)
        return [int(w) for w in (data["widths"] if isinstance(data, dict)
                                 else data)]
    try:
        return [int(float(w)) for w in text.replace(";", ",").split(",")
                if w.strip()]
    except ValueError:
        raise ValueError(
            f"widths='{text}' is neither a shipped config ("
            f"{', '.join(SEARCHED_WIDTHS)}), an existing JSON file nor a "
            "comma-separated list of channel numbers.") from None


def width_profile(widths, input_shape=(32, 32, 3), num_classes=10):
    """`{"table_macs", "macs", "params"}` of a decoded width list."""
    counts = profiling.profile(decode(widths, input_shape, num_classes))
    return {"table_macs": table_macs(widths, input_shape),
            "macs": counts.macs, "params": counts.params}
