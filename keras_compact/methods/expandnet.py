"""ExpandNets: train a linearly expanded net, deploy the contracted one.

`--method=expandnet --arch=smallnet7 --expand=ck+fc` builds SmallNet-7x7 with
every conv replaced by an `ExpandedConv2D` (CK: three 3x3 convs) and fc1 by
an `ExpandedDense`, trains it like the compact net, and hands the trainer
`contract(model)`: the compact SmallNet with the multiplied-out weights,
whose outputs equal the trained model's (about 1e-7 relative in float32).

Which layers are expanded follows the reference code (spec section 3):
SmallNet expands its three convs (not the RGB layer's first width) and fc1
(never the logits); MobileNetV1 the stem and all 13 depthwise convs;
MobileNetV2 the stem and the depthwise conv of the first block of each
stride-2 stage. 1x1 convs and classifiers are never expanded.

Knowledge distillation (the paper's "w/ KD" rows, `--teacher`) is
`methods.knowledge_distillation`, shared by every single-net method.

Reference: Guo, Alvarez, Salzmann, "ExpandNets: Linear Over-parameterization
to Train Compact Convolutional Networks", NeurIPS 2020,
https://arxiv.org/abs/1811.10495
"""

import dataclasses

import keras
import numpy as np

from keras_compact import models
from keras_compact.errors import UsageError
from keras_compact.layers.expansion import ExpandedConv2D
from keras_compact.layers.expansion import ExpandedDense
from keras_compact.methods import knowledge_distillation
from keras_compact.methods.base import Method
from keras_compact.methods.base import check_option
from keras_compact.methods.registry import register
from keras_compact.models import mobilenet
from keras_compact.registry import Registry

EXPANDED_LAYERS = (ExpandedConv2D, ExpandedDense)
EXPANSIONS = ("none", "cl", "ck", "fc", "cl+fc", "ck+fc")


@dataclasses.dataclass(frozen=True)
class Policy:
    """Which layers of a backbone are expanded (the reference code's choice).

    Attributes:
        expand_rgb: widen the image-input conv's first layer to `r * 3`
            (the ImageNet models) or keep it at 3 (CIFAR SmallNet).
        depthwise: `"all"`, `"strided"` (only stride-2 depthwise convs,
            MobileNetV2) or `"none"`.
        hidden_fc: the builder has a hidden FC layer (`dense=` factory).
    """

    expand_rgb: bool
    depthwise: str = "none"
    hidden_fc: bool = False

    def expands(self, kernel_size, strides, groups):
        if kernel_size == 1:
            return False
        if groups == 1:
            return True
        return self.depthwise == "all" or (
            self.depthwise == "strided" and strides > 1)


POLICIES = Registry("arch supported by expandnet")
for _arch in ("smallnet3", "smallnet7"):
    POLICIES.register(_arch, Policy(expand_rgb=False, hidden_fc=True))
for _suffix in ("", "_cifar"):
    POLICIES.register(f"mobilenet_v1{_suffix}",
                      Policy(expand_rgb=True, depthwise="all"))
    POLICIES.register(f"mobilenet_v2{_suffix}",
                      Policy(expand_rgb=True, depthwise="strided"))


def parse_expansion(expand):
    """`"ck+fc"` / `"fc,ck"` -> `("ck", True)`: conv strategy, FC flag.

    `"none"` gives `(None, False)`: the compact net, trained with the same
    recipe (the tables' baseline row).
    """
    parts = [p.strip() for p in expand.replace(",", "+").split("+")]
    convs = [p for p in parts if p != "fc"]
    key = "+".join(convs + ["fc"] * ("fc" in parts))
    if key not in EXPANSIONS or len(parts) != len(set(parts)):
        raise ValueError(f"expand must be one of {', '.join(EXPANSIONS)} "
                         f"('+' or ',' separated). Received: expand={expand}")
    strategy = convs[0] if convs and convs[0] != "none" else None
    return strategy, "fc" in parts


def expanded_conv(strategy, expansion_rate, policy):
    """A conv factory (see `models.mobilenet`) that expands per `policy`."""

    def conv(x, filters, kernel_size, *, strides=1, padding="valid",
             groups=1, use_bias=False, kernel_initializer=None, name):
        if not policy.expands(kernel_size, strides, groups):
            return mobilenet.conv2d(
                x, filters, kernel_size, strides=strides, padding=padding,
                groups=groups, use_bias=use_bias,
                kernel_initializer=kernel_initializer, name=name)
        return ExpandedConv2D(
            filters, kernel_size, strides=strides, padding=padding,
            strategy=strategy, expansion_rate=expansion_rate, groups=groups,
            expand_input=policy.expand_rgb or x.shape[-1] > 3,
            use_bias=use_bias, kernel_initializer=kernel_initializer,
            name=name)(x)

    return conv


def expanded_dense(expansion_rate):
    """A dense factory (see `models.smallnet`) of `ExpandedDense` layers."""

    def dense(x, units, *, name):
        return ExpandedDense(units, expansion_rate=expansion_rate,
                             name=name)(x)

    return dense


def build_expanded(arch, input_shape, num_classes, expand="ck+fc",
                   expansion_rate=4):
    """Builds the ExpandNet of a registered compact architecture.

    Args:
        arch: one of `POLICIES.names()` (smallnet3/7, mobilenet_v1/v2 and
            their `_cifar` variants).
        input_shape: `(height, width, channels)`.
        num_classes: number of logits.
        expand: `"none"`, `"cl"`, `"ck"`, `"fc"`, `"cl+fc"` or `"ck+fc"`.
        expansion_rate: `r` (4 in the paper).

    Returns:
        The expanded model; `contract(model)` gives `models.build(arch, ...)`
        with the multiplied-out weights.

    Example:

    >>> model = build_expanded("smallnet7", (32, 32, 3), 10, "ck+fc")
    >>> keras_compact.profiling.profile(model).params
    1745766
    """
    policy = POLICIES.get(arch)
    strategy, fc = parse_expansion(expand)
    if fc and not policy.hidden_fc:
        raise ValueError(f"{arch} has no hidden fully-connected layer to "
                         "expand (classifiers are never expanded); use "
                         "expand='cl'.")
    factories = {}
    if strategy:
        factories["conv"] = expanded_conv(strategy, expansion_rate, policy)
    if fc:
        factories["dense"] = expanded_dense(expansion_rate)
    return models.build(arch, input_shape, num_classes, **factories)


def contract(model):
    """Contracts every expanded layer of `model` into its compact layer.

    Args:
        model: a functional or sequential Keras model (nested models are
            contracted too) with `ExpandedConv2D` / `ExpandedDense` layers.

    Returns:
        A new model of the compact architecture: each expanded layer
        becomes the `Conv2D`, `DepthwiseConv2D`, `GroupedConv2D` or `Dense`
        of the same name holding the contracted kernel and bias; every other
        weight (BN moving statistics included) is copied bit for bit. In
        inference mode its outputs equal `model`'s.

    Example:

    >>> expanded = build_expanded("smallnet7", (32, 32, 3), 10, "ck+fc")
    >>> compact = contract(expanded)
    >>> keras_compact.profiling.profile(compact).params
    66186
    """
    contracted = set()

    def clone(layer):
        if isinstance(layer, EXPANDED_LAYERS):
            contracted.add(layer.name)
            return layer.to_compact()
        if isinstance(layer, keras.Model):
            contracted.add(layer.name)
            return contract(layer)
        return layer.__class__.from_config(layer.get_config())

    try:
        compact = keras.models.clone_model(model, clone_function=clone)
    except ValueError as error:
        raise ValueError(
            "contract() rebuilds the model's graph, so it needs a functional "
            f"or sequential Keras model. Received: {type(model).__name__}."
        ) from error
    for layer in model.layers:
        if layer.name not in contracted and layer.weights:
            compact.get_layer(layer.name).set_weights(layer.get_weights())
    return compact


def max_relative_error(expanded, contracted, inputs):
    """`max|expanded(x) - contracted(x)| / max|expanded(x)|`, inference."""
    expected = keras.ops.convert_to_numpy(expanded(inputs, training=False))
    actual = keras.ops.convert_to_numpy(contracted(inputs, training=False))
    return float(np.max(np.abs(expected - actual)) / np.max(np.abs(expected)))


@register("expandnet")
class ExpandNet(Method):
    """Trains `config.arch` linearly expanded; deploys it contracted."""

    options = {
        "expand": ("ck+fc", "expansion: none, cl, ck, fc, cl+fc or ck+fc "
                            "('+' or ',' separated); CK needs k > 3"),
        "expand_rate": (4.0, "expansion rate r of every expanded layer"),
    }

    def check(self, config):
        super().check(config)
        POLICIES.get(config.arch)
        try:
            _, fc = parse_expansion(config.expand)
        except ValueError as error:
            raise UsageError(f"--expand: {error}") from None
        if fc and not POLICIES.get(config.arch).hidden_fc:
            raise UsageError(f"--expand={config.expand}: {config.arch} has "
                             "no hidden fully-connected layer to expand; "
                             "drop '+fc'.")
        check_option(config, "expand_rate", lambda v: v > 0, "> 0")

    def build_model(self, config, input_shape, num_classes):
        return build_expanded(config.arch, input_shape, num_classes,
                              config.expand, config.expand_rate)

    def deployable(self, model, context):
        del context
        return contract(knowledge_distillation.student_of(model))
