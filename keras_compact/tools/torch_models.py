"""PyTorch twins of keras_compact's trainable models, for speed comparisons.

Only `tools/benchmark.py --compare=pytorch` uses this (`pip install -e
.[bench]`); the library never imports torch. A twin trains the same work
as the Keras model a method's `build_model` returns: same layers, widths,
strides, padding and BN, so both frameworks have the same trainable
parameters and MACs per image (the benchmark asserts both). Weights are
not copied: only speed is compared.

`TWINS` maps a `method:arch` pair (the benchmark's method-table syntax) to
a `Twin`: `build(config, input_shape, num_classes)` reads the method's
recipe fields (`slim_k`, `block`, `students`, `widths`, `expand`, ...) and
`loss(outputs, labels)` is the method's training objective.

Known differences, none of which changes the work per step: SmallNet's
flatten reads NCHW here and NHWC in Keras (the same fc1, other feature
order); X-Net masks are drawn by torch's generator (same degree per output
channel, other graph); weights are PyTorch-initialised.
"""

import dataclasses
import fractions
import math

import torch
from torch import nn
from torch.nn import functional

from keras_compact.registry import Registry


def conv(cin, cout, kernel_size, stride=1, groups=1, bias=False,
         padding=None):
    """`k x k` conv padded like PyTorch's `k // 2` (Keras `blocks.conv2d`)."""
    padding = kernel_size // 2 if padding is None else padding
    return nn.Conv2d(cin, cout, kernel_size, stride, padding, groups=groups,
                     bias=bias)


def conv_bn(cin, cout, kernel_size, stride=1):
    return nn.Sequential(conv(cin, cout, kernel_size, stride),
                         nn.BatchNorm2d(cout))


def projection(cin, cout, stride):
    """Identity, or 1x1 conv + BN when the shape changes ("option B")."""
    if stride == 1 and cin == cout:
        return nn.Identity()
    return conv_bn(cin, cout, 1, stride)


class BasicBlock(nn.Module):
    """He et al.'s basic block; `mid` and `shortcut` as APS decodes them."""

    def __init__(self, cin, cout, stride, mid=None, shortcut=projection):
        super().__init__()
        mid = mid or cout
        self.conv1 = conv_bn(cin, mid, 3, stride)
        self.conv2 = conv_bn(mid, cout, 3)
        self.shortcut = shortcut(cin, cout, stride)

    def forward(self, x):
        y = self.conv2(torch.relu(self.conv1(x)))
        return torch.relu(y + self.shortcut(x))


class CifarResNet(nn.Module):
    """Stem conv-BN-ReLU, `blocks`, global average pool, linear logits."""

    def __init__(self, stem_width, blocks, num_classes, in_channels=3):
        super().__init__()
        self.stem = nn.Sequential(conv_bn(in_channels, stem_width, 3),
                                  nn.ReLU())
        self.blocks = nn.Sequential(*blocks)
        self.fc = nn.Linear(_out_channels(blocks, stem_width), num_classes)

    def features(self, x):
        return self.blocks(self.stem(x))

    def forward(self, x):
        return self.fc(self.features(x).mean((2, 3)))


def _out_channels(blocks, default):
    return blocks[-1].out_channels if blocks else default


def resnet_cifar(depth, num_classes=10, block=BasicBlock,
                 widths=(16, 32, 64), in_channels=3):
    """The CIFAR ResNet of `models.resnet_cifar` with any `block(cin, cout,
    stride)`."""
    n = (depth - 2) // 6
    blocks, cin = [], widths[0]
    for stage, cout in enumerate(widths):
        for index in range(n):
            blocks.append(block(cin, cout, 2 if stage and not index else 1))
            blocks[-1].out_channels = cin = cout
    return CifarResNet(widths[0], blocks, num_classes, in_channels)


# -- SlimConv ----------------------------------------------------------------


def fold_factor(k):
    """`n` of `k = 2n / 3` (the recipe validated it on the Keras side)."""
    return round(1.5 * fractions.Fraction(str(k)))


class SlimConv2d(nn.Module):
    """`layers.SlimConv2D`: squeeze weights, flip, fold, top/bottom paths."""

    def __init__(self, channels, k="4/3", stride=1, reduction=32):
        super().__init__()
        self.n = fold_factor(k)
        top = channels // self.n
        bottom = top // 2
        hidden = channels // reduction
        self.out_channels = top + bottom
        self.squeeze = nn.Linear(channels, hidden, bias=False)
        self.squeeze_bn = nn.BatchNorm1d(hidden)
        self.excite = nn.Linear(hidden, channels)
        self.top = conv_bn(top, top, 3, stride)
        self.bottom_reduce = conv_bn(top, bottom, 1)
        self.bottom = conv_bn(bottom, bottom, 3, stride)

    def _fold(self, x):
        top = x.shape[1] // self.n
        return sum(x[:, :top * self.n].split(top, dim=1))

    def forward(self, x):
        h = torch.relu(self.squeeze_bn(self.squeeze(x.mean((2, 3)))))
        weights = torch.sigmoid(self.excite(h))[:, :, None, None]
        top = self.top(self._fold(x * weights))
        bottom = self._fold(x * weights.flip(1))
        bottom = self.bottom(torch.relu(self.bottom_reduce(bottom)))
        return torch.cat([top, bottom], 1)


class SlimBasicBlock(nn.Module):
    """`models.sc_resnet.sc_basic_block`: SlimConv + ReLU, 3x3 conv + BN."""

    def __init__(self, cin, cout, stride, k="4/3", reduction=8):
        super().__init__()
        self.slim = SlimConv2d(cin, k, stride, reduction)
        self.conv2 = conv_bn(self.slim.out_channels, cout, 3)
        self.shortcut = projection(cin, cout, stride)

    def forward(self, x):
        y = self.conv2(torch.relu(self.slim(x)))
        return torch.relu(y + self.shortcut(x))


# -- Cheap convolutions + online distillation (OD) ---------------------------

# The reference's interleaved shift: channel c moves by DIRECTIONS[c % 9].
DIRECTIONS = tuple((d // 3 - 1, d % 3 - 1) for d in range(9))


class Shift2d(nn.Module):
    """`layers.Shift2D`: a depthwise 3x3 conv with a fixed one-hot kernel."""

    def __init__(self, channels):
        super().__init__()
        kernel = torch.zeros(channels, 1, 3, 3)
        for c in range(9 * (channels // 9)):
            dh, dw = DIRECTIONS[c % 9]
            kernel[c, 0, dh + 1, dw + 1] = 1.0
        for c in range(9 * (channels // 9), channels):
            kernel[c, 0, 1, 1] = 1.0
        self.register_buffer("kernel", kernel)

    def forward(self, x):
        return functional.conv2d(x, self.kernel, padding=1,
                                 groups=x.shape[1])


# The spatial op of each OD `--block` (methods/od.py BLOCKS).
SPATIAL = Registry("OD block twin")
SPATIAL.register("shift", lambda config: Shift2d)
SPATIAL.register("dw", lambda config: lambda c: conv(c, c, 3, groups=c))
SPATIAL.register("group", lambda config: lambda c: conv(
    c, c, 3, groups=config.group_num))


class CheapBlock(nn.Module):
    """`layers.CheapBlock`: (spatial, 1x1, BN, ReLU) x 2 + shortcut.

    The second 1x1 carries the stride; no ReLU after the addition.
    """

    def __init__(self, cin, cout, stride, spatial):
        super().__init__()
        self.branch = nn.Sequential(
            spatial(cin), conv_bn(cin, cout, 1), nn.ReLU(),
            spatial(cout), conv_bn(cout, cout, 1, stride), nn.ReLU())
        self.shortcut = projection(cin, cout, stride)

    def forward(self, x):
        return self.branch(x) + self.shortcut(x)


class OnlineDistillation(nn.Module):
    """`methods.od.OnlineDistillationModel`: students + online teacher.

    The teacher is BN -> ReLU -> average pool -> linear on the students'
    concatenated feature maps; `od_loss` is the same objective.
    """

    def __init__(self, students, num_classes):
        super().__init__()
        self.students = nn.ModuleList(students)
        channels = sum(s.fc.in_features for s in students)
        self.teacher_bn = nn.BatchNorm2d(channels)
        self.teacher_fc = nn.Linear(channels, num_classes)

    def forward(self, x):
        features = [s.features(x) for s in self.students]
        logits = [s.fc(f.mean((2, 3))) for s, f in zip(self.students,
                                                         features)]
        teacher = torch.relu(self.teacher_bn(torch.cat(features, 1)))
        return logits, self.teacher_fc(teacher.mean((2, 3)))


def od_loss(temperature):
    """CE(teacher) + sum_i [CE(s_i) + T^2 KL(p_t^T || p_i^T) / K]."""

    def loss(outputs, y):
        students, teacher = outputs
        total = functional.cross_entropy(teacher, y)
        soft_teacher = functional.softmax(teacher / temperature, 1)
        for logits in students:
            total = total + functional.cross_entropy(logits, y)
            # Mean over batch and classes, as Keras (F.kl_div's "mean").
            total = total + temperature**2 / logits.shape[1] * (
                functional.kl_div(
                    functional.log_softmax(logits / temperature, 1),
                    soft_teacher, reduction="batchmean"))
        return total

    return loss


# -- ExpandNets --------------------------------------------------------------


def _width(rate, channels):
    return max(1, int(round(rate * channels)))


def expanded_conv(cin, cout, kernel_size, padding, strategy, rate,
                  expand_input):
    """`layers.ExpandedConv2D` (stride 1): pad once, then a linear chain.

    CL: 1x1 -> k x k -> 1x1; CK: (k - 1) / 2 3x3 convs. Widths `r*m` (or
    `m` for the RGB input), `r*n`, ..., `n`; every conv has a bias.
    """
    if strategy == "ck" and kernel_size <= 3:
        raise ValueError(f"Expand-CK needs an odd kernel > 3; use 'cl' for "
                         f"kernel_size={kernel_size}.")
    first = _width(rate, cin) if expand_input else cin
    middle = _width(rate, cout)
    if strategy == "cl":
        plan = [(first, 1), (middle, kernel_size), (cout, 1)]
    else:
        depth = (kernel_size - 1) // 2
        plan = [(w, 3) for w in [first] + [middle] * (depth - 2) + [cout]]
    layers = [nn.ZeroPad2d(padding)]
    for width, kernel in plan:
        layers.append(nn.Conv2d(cin, width, kernel, bias=True))
        cin = width
    return nn.Sequential(*layers)


def expanded_linear(units_in, units, rate):
    """`layers.ExpandedDense`: `m -> r*m -> r*n -> n`, biases, linear."""
    widths = [units_in, _width(rate, units_in), _width(rate, units), units]
    return nn.Sequential(*(nn.Linear(a, b) for a, b in zip(widths,
                                                            widths[1:])))


def smallnet(kernel_size, padding, num_classes=10, in_channels=3, size=32,
             strategy=None, fc=False, rate=4.0, widths=(8, 16, 32),
             hidden_units=64):
    """`models.smallnet` (ExpandNets), compact or expanded as trained."""
    pad = kernel_size // 2 if padding == "same" else 0
    layers, cin = [], in_channels
    for filters in widths:
        if strategy:
            # SmallNet keeps the RGB layer's first width (policy.expand_rgb).
            layers.append(expanded_conv(cin, filters, kernel_size, pad,
                                        strategy, rate, cin > 3))
        else:
            layers.append(conv(cin, filters, kernel_size, bias=True,
                               padding=pad))
        layers += [nn.BatchNorm2d(filters), nn.ReLU(), nn.MaxPool2d(2)]
        size = (size + 2 * pad - kernel_size + 1) // 2
        cin = filters
    features = cin * size * size
    fc1 = (expanded_linear(features, hidden_units, rate) if fc
           else nn.Linear(features, hidden_units))
    layers += [nn.Flatten(), fc1, nn.ReLU(),
               nn.Linear(hidden_units, num_classes)]
    return nn.Sequential(*layers)


# -- X-Nets ------------------------------------------------------------------


class MaskedConv2d(nn.Conv2d):
    """An expander conv as X-Nets train it: a dense kernel times a 0/1 mask.

    Each output channel sees `max(in // expand_ratio, 1)` random inputs;
    masked weights start at zero and get zero gradient, as in Keras.
    """

    def __init__(self, cin, cout, kernel_size, expand_ratio, seed=0):
        super().__init__(cin, cout, kernel_size, padding=kernel_size // 2,
                         bias=False)
        generator = torch.Generator().manual_seed(seed)
        degree = max(cin // expand_ratio, 1)
        mask = torch.zeros(cout, cin, 1, 1)
        for o in range(cout):
            mask[o, torch.randperm(cin, generator=generator)[:degree]] = 1.0
        self.register_buffer("mask", mask)
        with torch.no_grad():
            self.weight.mul_(mask)

    def forward(self, x):
        return self._conv_forward(x, self.weight * self.mask, None)


def bn_relu(channels):
    return [nn.BatchNorm2d(channels), nn.ReLU()]


class DenseUnit(nn.Module):
    """BN-ReLU-conv1x1(4k)-BN-ReLU-conv3x3(k), concatenated to the input."""

    def __init__(self, cin, growth, make_conv):
        super().__init__()
        self.branch = nn.Sequential(
            *bn_relu(cin), make_conv(cin, 4 * growth, 1),
            *bn_relu(4 * growth), make_conv(4 * growth, growth, 3))

    def forward(self, x):
        return torch.cat([x, self.branch(x)], 1)


def densenet_bc(depth, growth, num_classes=10, expand_ratio=None,
                reduction=0.5, in_channels=3):
    """`models.densenet.densenet_bc_cifar`: DenseNet-BC or masked X-DenseNet.

    With `expand_ratio` both convs of every unit are `MaskedConv2d`; the
    stem, transitions and classifier stay dense.
    """
    seeds = iter(range(10**6))

    def make_conv(cin, cout, kernel_size):
        if expand_ratio:
            return MaskedConv2d(cin, cout, kernel_size, expand_ratio,
                                next(seeds))
        return conv(cin, cout, kernel_size)

    channels = 2 * growth
    layers = [conv(in_channels, channels, 3)]
    for stage in range(3):
        if stage:
            out = int(channels * reduction)
            layers += [*bn_relu(channels), conv(channels, out, 1),
                       nn.AvgPool2d(2)]
            channels = out
        for _ in range((depth - 4) // 6):
            layers.append(DenseUnit(channels, growth, make_conv))
            channels += growth
    layers += [*bn_relu(channels), nn.AdaptiveAvgPool2d(1), nn.Flatten(),
               nn.Linear(channels, num_classes)]
    return nn.Sequential(*layers)


# -- The registry --------------------------------------------------------------


def cross_entropy(outputs, y):
    return functional.cross_entropy(outputs, y)


@dataclasses.dataclass(frozen=True)
class Twin:
    """How to build one `method:arch` pair's twin and train it.

    Attributes:
        build: `build(config, input_shape, num_classes) -> nn.Module`.
        loss: `loss(config) -> loss(outputs, labels)`, the method's
            objective (cross-entropy unless the method trains otherwise).
        recipe: recipe arguments the pair needs by default (`key=value;...`,
            e.g. APS's searched widths); the command line's win.
    """

    build: object
    loss: object = lambda config: cross_entropy
    recipe: str = ""


TWINS = Registry("PyTorch twin (method:arch)")


def _arch_depth(config):
    return int(config.arch.removeprefix("sc_").removeprefix("resnet"))


for _arch in ("resnet20", "resnet32", "resnet44", "resnet56", "resnet110"):
    TWINS.register(f"baseline:{_arch}", Twin(
        lambda config, shape, classes: resnet_cifar(
            _arch_depth(config), classes, in_channels=shape[-1])))
    TWINS.register(f"slimconv:sc_{_arch}", Twin(
        lambda config, shape, classes: resnet_cifar(
            _arch_depth(config), classes, in_channels=shape[-1],
            block=lambda cin, cout, stride: SlimBasicBlock(
                cin, cout, stride, config.slim_k))))


def _od(config, shape, classes):
    spatial = SPATIAL.get(config.block)(config)
    students = [resnet_cifar(
        _arch_depth(config), classes, in_channels=shape[-1],
        block=lambda cin, cout, stride: CheapBlock(cin, cout, stride,
                                                   spatial))
        for _ in range(config.students)]
    return OnlineDistillation(students, classes)


for _arch in ("resnet20", "resnet32", "resnet44", "resnet56", "resnet110"):
    TWINS.register(f"od:{_arch}", Twin(
        _od, loss=lambda config: od_loss(config.temperature)))


def aps_shortcut(cin, cout, stride):
    """`methods.aps.paper_shortcut`: 2x2 average pool + 1x1 conv (no BN) at
    stride 2, else identity or 1x1 conv + BN."""
    if stride > 1:
        return nn.Sequential(nn.AvgPool2d(stride), conv(cin, cout, 1))
    return projection(cin, cout, 1)


def _aps(config, shape, classes):
    from keras_compact.methods import aps

    if config.shortcut != "paper":
        raise ValueError(f"The APS twin decodes shortcut='paper' only. "
                         f"Received: shortcut={config.shortcut!r}.")
    widths = aps.parse_widths(config.widths)
    per_stage = (len(widths) - 1) // 6
    blocks, cin = [], widths[0]
    for index in range(3 * per_stage):
        mid, out = widths[1 + 2 * index:3 + 2 * index]
        stride = 2 if index and index % per_stage == 0 else 1
        blocks.append(BasicBlock(cin, out, stride, mid, aps_shortcut))
        blocks[-1].out_channels = cin = out
    return CifarResNet(widths[0], blocks, classes, shape[-1])


for _name, _depth in (("resnet20", "20.6M"), ("resnet56", "60.3M")):
    TWINS.register(f"aps:{_name}", Twin(
        _aps, recipe=f"widths={_name}_{_depth}"))


def _expandnet(config, shape, classes):
    from keras_compact.methods import expandnet

    if config.teacher:
        raise ValueError("The ExpandNets twin trains without a teacher; "
                         "drop --teacher (teacher=) for --compare.")
    strategy, fc = expandnet.parse_expansion(config.expand)
    kernel_size, padding = {"smallnet3": (3, "valid"),
                            "smallnet7": (7, "same")}[config.arch]
    return smallnet(kernel_size, padding, classes, shape[-1], shape[0],
                    strategy, fc, config.expand_rate)


TWINS.register("expandnet:smallnet7", Twin(_expandnet))
# Expand-CK needs k > 3: SmallNet-3's expansion is the paper's CL+FC.
TWINS.register("expandnet:smallnet3", Twin(_expandnet,
                                           recipe="expand=cl+fc"))


def _densenet(config, shape, classes):
    depth, growth = map(int, config.arch.split("_")[-2:])
    expand_ratio = None
    if config.method == "xnet":
        if config.expander_impl != "masked" or config.expander_groups:
            raise ValueError("The X-Net twin is the masked channel-level "
                             "expander (expander_impl=masked, "
                             "expander_groups=0).")
        expand_ratio = config.expand_size
    return densenet_bc(depth, growth, classes, expand_ratio,
                       in_channels=shape[-1])


for _growth in (24, 36, 48, 60):
    TWINS.register(f"baseline:densenet_bc_40_{_growth}", Twin(_densenet))
    for _prefix in ("", "x_"):
        TWINS.register(f"xnet:{_prefix}densenet_bc_40_{_growth}",
                       Twin(_densenet))


# -- Counting --------------------------------------------------------------


def trainable_params(model):
    return sum(p.numel() for p in model.parameters() if p.requires_grad)


def _conv_macs(module, output):
    per_output = module.in_channels // module.groups * math.prod(
        module.kernel_size)
    return output[0].numel() * per_output


def _masked_macs(module, output):
    # Only existing connections count (layers.expander's convention).
    taps = math.prod(module.kernel_size)
    return output.shape[2] * output.shape[3] * taps * int(module.mask.sum())


def _linear_macs(module, output):
    return output[0].numel() * module.in_features


def _shift_macs(module, output):
    return 0


# type -> (counted MACs as keras_compact.profiling counts them, executed
# MACs: the multiply-adds both frameworks actually run).
MAC_RULES = {
    nn.Conv2d: (_conv_macs, _conv_macs),
    MaskedConv2d: (_masked_macs, _conv_macs),
    nn.Linear: (_linear_macs, _linear_macs),
    Shift2d: (_shift_macs, lambda m, out: 9 * out[0].numel()),
}


def count_macs(model, input_shape):
    """`(counted, executed)` MACs per image of one forward pass.

    Args:
        model: a twin (a batch of 2 runs: BN in training mode needs two).
        input_shape: one image's `(height, width, channels)`.
    """
    totals = [0, 0]

    def hook(module, inputs, output):
        rules = MAC_RULES[type(module)]
        for index, rule in enumerate(rules):
            totals[index] += rule(module, output)

    handles = [m.register_forward_hook(hook) for m in model.modules()
               if type(m) in MAC_RULES]
    height, width, channels = input_shape
    try:
        with torch.no_grad():
            model(torch.zeros(2, channels, height, width))
    finally:
        for handle in handles:
            handle.remove()
    return tuple(totals)
