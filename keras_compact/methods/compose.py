"""Methods that compose: OD students made of another method's layers, and
one method's architecture trained by another.

Two ways to combine, each declared in a few lines:

- `student_conv(name, method, block, ...)` adds `--method=od
  --student_conv=name`: OD trains students whose residual blocks are
  `block(config)`, picks the best one on the validation split, then hands
  it to `method`'s own `deployable` (ExpandNets' contraction, X-Nets'
  deploy forms), so the deployable is the plain compact net. Shipped:
  `slimconv` (SlimConv2D blocks, Sc-ResNet students), `expander` (X-Net
  expander convs), `expanded` (ExpandNets' CL expansion, contracted to the
  plain ResNet after training), next to OD's own `shift`, `dw`, `group`.
- `compose(first, then)` registers `--method=first --then=then` (the
  method `first_then`): `first` prepares and builds the architecture (APS
  searches and decodes widths), `then` trains copies of it together (OD)
  and picks one; `first`'s transform comes last. Shipped: `aps_od`.

Combinations that make no sense fail in `check`, before any data is read,
with one line naming the conflict.

Example:

>>> from keras_compact.methods import compose
>>> sorted(compose.STUDENT_CONVS.names())
['dw', 'expanded', 'expander', 'group', 'shift', 'slimconv']
>>> compose.method_name("aps", "od")
'aps_od'

References: the methods' own (Xie et al. arXiv 1909.13063 for OD; Guo et
al. NeurIPS 2020 for ExpandNets; Prabhu et al. ECCV 2018 for X-Nets; Qiu
et al. IEEE TIP 2021 for SlimConv; Wang et al. NeurIPS 2020 for APS).
"""

import functools

import keras

from keras_compact import layers
from keras_compact.errors import UsageError
from keras_compact.layers.slim_conv import fold_factor
from keras_compact.methods import aps  # noqa: F401 (registers aps)
from keras_compact.methods import expandnet
from keras_compact.methods import registry
from keras_compact.methods import slimconv  # noqa: F401 (registers it)
from keras_compact.methods import xnet  # noqa: F401 (registers xnet)
from keras_compact.methods.base import Method
from keras_compact.methods.base import check_option
from keras_compact.methods.od import STUDENT_CONVS
from keras_compact.methods.od import StudentConv
from keras_compact.models import blocks
from keras_compact.models import sc_resnet


def student_conv(name, method, block, compact_block=None, check=None,
                 options=None):
    """Declares `--method=od --student_conv=name`.

    Args:
        name: the flag value.
        method: the registered method whose `deployable(student, context)`
            turns the chosen student into its deployable form.
        block: `block(config)` -> a `models.resnet_cifar` residual block
            `block(x, filters, strides, name)` made of `method`'s layers.
        compact_block: `block(config)` of the net `method`'s transform
            gives, when that changes the architecture (ExpandNets).
        check: `check(config)`, raising `UsageError` for a conflict.
        options: `{config field: default}` that `block` reads (the OD
            recipe carries them).

    Returns:
        The registered `od.StudentConv`.
    """
    registry.get(method)  # fails with the valid methods
    kind = StudentConv(block, method, compact_block, check,
                       dict(options or {}))
    STUDENT_CONVS.register(name, kind)
    return kind


def student_options():
    """`{field: default}` of every student conv, for the OD recipes."""
    options = {}
    for name in STUDENT_CONVS.names():
        options.update(STUDENT_CONVS.get(name).options)
    return options


# --- slimconv: Sc-ResNet basic blocks ---------------------------------------

def _check_slimconv(config):
    try:
        fold_factor(config.slim_k)
    except ValueError as error:
        raise UsageError(f"--slim_k: {error}") from None


student_conv(
    "slimconv", "slimconv",
    lambda config: functools.partial(sc_resnet.sc_basic_block,
                                     k=config.slim_k),
    check=_check_slimconv, options={"slim_k": "4/3"})


# --- expander: X-Net expander convs in the basic block ----------------------

def _check_expander(config):
    # ES must leave every stage's 16, 32, 64 inputs a whole degree.
    check_option(config, "expand_size", lambda v: isinstance(v, int)
                 and v >= 1 and 16 % v == 0, "1, 2, 4, 8 or 16")
    check_option(config, "expander_impl",
                 lambda v: v in layers.expander.IMPLEMENTATIONS,
                 " or ".join(layers.expander.IMPLEMENTATIONS))


def _expander_block(config):
    conv = layers.expander_conv_factory(
        density=1 / config.expand_size, impl=config.expander_impl,
        expander_groups=config.expander_groups or None, seed=config.seed)
    return functools.partial(blocks.basic_block, conv=conv)


student_conv(
    "expander", "xnet", _expander_block, check=_check_expander,
    options={"expand_size": 2, "expander_impl": "masked",
             "expander_groups": 0, "expander_deploy": "auto"})


# --- expanded: ExpandNets' linear expansion, contracted after training ------

def _check_expanded(config):
    try:
        strategy, fc = expandnet.parse_expansion(config.expand)
    except ValueError as error:
        raise UsageError(f"--expand: {error}") from None
    if fc:
        raise UsageError(
            f"--student_conv=expanded --expand={config.expand}: a CIFAR "
            "ResNet has no hidden fully-connected layer to expand (its "
            "classifier never is); drop '+fc'.")
    if strategy == "ck":
        raise UsageError(
            f"--student_conv=expanded --expand={config.expand}: Expand-CK "
            "replaces k x k kernels with k > 3 and the ResNet's convs are "
            "3x3; use --expand=cl.")
    check_option(config, "expand_rate", lambda v: v > 0, "> 0")


def _pytorch_padded(conv):
    """A `models.mobilenet`-style conv factory in `blocks.conv2d`'s form.

    The stride-2 convs get `blocks.conv2d`'s explicit padding layer, so the
    contracted student has exactly the plain ResNet's layers.
    """

    def padded(x, filters, kernel_size, strides=1, name=None):
        padding = "same"
        if strides > 1:
            x = keras.layers.ZeroPadding2D(kernel_size // 2,
                                           name=f"{name}_pad")(x)
            padding = "valid"
        return conv(x, filters, kernel_size, strides=strides,
                    padding=padding, name=name)

    return padded


def _expanded_block(config):
    strategy, _ = expandnet.parse_expansion(config.expand)
    if strategy is None:  # --expand=none: the plain students
        return blocks.basic_block
    conv = expandnet.expanded_conv(strategy, config.expand_rate,
                                   expandnet.Policy(expand_rgb=False))
    return functools.partial(blocks.basic_block, conv=_pytorch_padded(conv))


student_conv(
    "expanded", "expandnet", _expanded_block,
    compact_block=lambda config: blocks.basic_block,
    check=_check_expanded, options={"expand": "cl", "expand_rate": 4.0})


# --- one method's architecture, trained by another ---------------------------

# Why a method cannot train another method's architecture after it.
CANNOT_FOLLOW = {
    "baseline": "it trains --arch as it is",
    "expandnet": "it contracts its own linear expansions, and another "
                 "method's net has none (a ReLU, attention or searched "
                 "block is not linear, so it cannot be contracted)",
    "xnet": "its expander graphs are the convs of its own backbones",
    "slimconv": "SlimConv2D is part of its Sc archs, not a training method",
    "aps": "it searches widths from its own supernet",
}


class Composition(Method):
    """`first`'s architecture trained by `then` (`compose(first, then)`).

    The trainer's hooks run as: `first.prepare` (e.g. APS's search) ->
    `then.train_together` of copies of `first.build_model`'s net ->
    `then`'s compile and fit -> `then.best_student` -> `first.deployable`.
    """

    def __init__(self, first, then):
        self.first = registry.get(first)
        self.then = registry.get(then)
        self.name = method_name(first, then)
        self.options = {**self.first.options, **self.then.options}

    def check(self, config):
        if config.get("student_conv"):
            raise UsageError(
                f"--student_conv does not apply to --method={self.first.name}"
                f" --then={self.then.name}: the students are "
                f"{self.first.name}'s nets.")
        self.first.check(config)
        self.then.check(config)

    def prepare(self, context):
        return self.first.prepare(context)

    def compact_student(self, config, input_shape, num_classes):
        """The deployable's architecture, built directly."""
        return self.first.build_model(config, input_shape, num_classes)

    def build_model(self, config, input_shape, num_classes):
        def build_student(name):
            net = self.first.build_model(config, input_shape, num_classes)
            return keras.Model(net.input, net.output, name=name)

        return self.then.train_together(
            build_student, config, f"{self.first.name}_{config.arch}")

    def compile_model(self, model, optimizer, config):
        self.then.compile_model(model, optimizer, config)

    def callbacks(self, context):
        return self.first.callbacks(context) + self.then.callbacks(context)

    def deployable(self, model, context):
        return self.first.deployable(self.then.best_student(model, context),
                                     context)

    def deployment_notes(self):
        return {**self.then.deployment_notes(),
                **self.first.deployment_notes()}


def method_name(first, then):
    """The registered name of `--method=first --then=then`."""
    return f"{first}_{then}"


def compose(first, then):
    """Registers `--method=first --then=then` as the method `first_then`.

    `then` must train several copies of a net together and deploy one (it
    has `train_together` and `best_student`, like OD); `first` gives the
    net (`prepare` + `build_model`) and the final transform.

    Returns:
        The registered `Composition`.
    """
    check_composable(first, then)
    method = Composition(first, then)
    registry.METHODS.register(method.name, method)
    return method


def check_composable(first, then):
    """Raises `UsageError` naming why `then` cannot follow `first`."""
    registry.get(first)
    method = registry.get(then)
    if not (hasattr(method, "train_together")
            and hasattr(method, "best_student")):
        why = CANNOT_FOLLOW.get(then, "it trains no other method's net")
        raise UsageError(f"--method={first} --then={then}: {then} cannot "
                         f"train {first}'s architecture: {why}.")
    if first == then or isinstance(registry.get(first), Composition):
        raise UsageError(f"--method={first} --then={then}: compose two "
                         "different single methods.")


def resolve(first, then):
    """The method the trainer runs for `--method=first --then=then`."""
    if not then:
        return first
    check_composable(first, then)
    name = method_name(first, then)
    if name not in registry.METHODS:
        raise UsageError(
            f"--method={first} --then={then} is not declared; declared: "
            f"{', '.join(composed_names())}, or add it with "
            f"keras_compact.methods.compose.compose('{first}', '{then}').")
    return name


def composed_names():
    """The registered compositions, e.g. `["aps_od"]`."""
    return [name for name in registry.names()
            if isinstance(registry.get(name), Composition)]


compose("aps", "od")
