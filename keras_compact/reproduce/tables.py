"""The papers' tables as rows of trainer runs, with the papers' numbers.

A `Row` is a recipe (`configs/<method>.py`, or `configs/imagenet.py` for
ImageNet rows) plus field overrides, and the paper's top-1 accuracy (%) for
that row when the specs record one. A `Table` is a named list of rows on
one dataset. `TABLES` holds them all; `python -m tools.reproduce --list`
prints them.

Example:

>>> from keras_compact.reproduce import tables
>>> table = tables.get("expandnets_cifar10")
>>> table.row("smallnet7_ck_fc").paper
80.31
"""

import dataclasses

from keras_compact.errors import UsageError
from keras_compact.registry import Registry


@dataclasses.dataclass(frozen=True)
class Row:
    """One line of a paper's table: a trainer run and the paper's number.

    Attributes:
        name: the row's folder name under `WORKDIR/<table>/`.
        label: how plots and tables name it.
        method: the registered method that trains it.
        overrides: `{field: text}` set on the recipe like `--set`.
        recipe: "cifar" (`configs/<method>.py`) or "imagenet".
        recipe_arg: the recipe's own argument (e.g. "vgg" for X-VGG16).
        paper: the paper's top-1 accuracy in %, or None if not recorded.
        paper_std: its std over seeds where the paper gives one.
        note: where the paper number comes from, or why it is missing.
        teacher: a row of the same table whose same-seed deployable model
            is this row's distillation teacher (the "w/ KD" rows).
    """

    name: str
    label: str
    method: str
    overrides: tuple = ()
    recipe: str = "cifar"
    recipe_arg: str = ""
    paper: float = None
    paper_std: float = None
    note: str = ""
    teacher: str = ""


@dataclasses.dataclass(frozen=True)
class Claim:
    """A paper's claim that row `row` is more accurate than `baseline`."""

    row: str
    baseline: str
    text: str


@dataclasses.dataclass(frozen=True)
class Table:
    """A paper's table: its rows on `dataset` (the paper's dataset), and
    the claims its rows test (`Claim`s)."""

    name: str
    title: str
    dataset: str
    rows: tuple
    source: str
    claims: tuple = ()

    def row(self, name):
        for row in self.rows:
            if row.name == name:
                return row
        raise UsageError(f"Unknown row '{name}' of table {self.name}. Valid "
                         f"rows: {', '.join(self.row_names())}.")

    def row_names(self):
        return [row.name for row in self.rows]

    def select(self, names):
        """The rows named in `names` (all if empty), in table order, with
        the teachers they need."""
        if not names:
            return self.rows
        wanted = {self.row(name).name for name in names}
        wanted |= {self.row(name).teacher for name in names} - {""}
        return tuple(row for row in self.rows if row.name in wanted)


TABLES = Registry("table")


def get(name):
    """The registered table `name` (UsageError listing the valid ones)."""
    if name not in TABLES:
        raise UsageError(f"Unknown table '{name}'. Valid tables: "
                         f"{', '.join(names())}.")
    return TABLES.get(name)


def names():
    return TABLES.names()


def register(table):
    TABLES.register(table.name, table)
    return table


def _options(**fields):
    return tuple(sorted(fields.items()))


# -- ExpandNets (Guo et al., NeurIPS 2020), Table 1 and supplement S1/S3 ----

_EXPANSIONS = (("compact", "none"), ("cl", "cl"), ("ck", "ck"),
               ("cl_fc", "cl+fc"), ("ck_fc", "ck+fc"))
# specs/expandnets.md 4.1, mean +- std over 5 runs, r = 4, without KD:
# {(dataset, arch, expansion): (mean, std)}.
_EXPANDNETS_PAPER = {
    ("cifar10", "smallnet7", "compact"): (78.63, 0.41),
    ("cifar10", "smallnet7", "cl"): (78.47, 0.20),
    ("cifar10", "smallnet7", "ck"): (80.27, 0.24),
    ("cifar10", "smallnet7", "cl_fc"): (79.11, 0.23),
    ("cifar10", "smallnet7", "ck_fc"): (80.31, 0.27),
    ("cifar10", "smallnet3", "compact"): (73.32, 0.20),
    ("cifar10", "smallnet3", "cl"): (73.96, 0.30),
    ("cifar10", "smallnet3", "cl_fc"): (74.45, 0.29),
    ("cifar100", "smallnet7", "compact"): (46.63, 0.27),
    ("cifar100", "smallnet7", "cl"): (46.90, 0.66),
    ("cifar100", "smallnet7", "ck"): (48.55, 0.51),
    ("cifar100", "smallnet7", "cl_fc"): (46.66, 0.43),
    ("cifar100", "smallnet7", "ck_fc"): (48.62, 0.47),
    ("cifar100", "smallnet3", "compact"): (40.40, 0.60),
    ("cifar100", "smallnet3", "cl"): (40.91, 0.47),
    ("cifar100", "smallnet3", "cl_fc"): (41.12, 0.49),
}
# The "w/ KD" numbers only a third-party summary gives (spec 4.1).
_EXPANDNETS_KD = {("cifar10", "smallnet7", "compact"): 79.72,
                  ("cifar10", "smallnet7", "ck_fc"): 80.63}
_KD_TEACHER = "teacher_resnet20"


def _expandnets_rows(dataset):
    rows = [Row(_KD_TEACHER, "ResNet-20 teacher", "baseline",
                note="the KD teacher; the spec does not name the paper's")]
    for arch, kernel in (("smallnet7", "7x7"), ("smallnet3", "3x3")):
        for suffix, expand in _EXPANSIONS:
            if expand.startswith("ck") and arch == "smallnet3":
                continue  # CK expands k > 3 kernels only
            name = f"{arch}_{suffix}"
            label = (f"SmallNet {kernel}" if expand == "none" else
                     f"ExpandNet-{expand.upper()} {kernel}")
            paper, std = _EXPANDNETS_PAPER.get((dataset, arch, suffix),
                                               (None, None))
            options = _options(arch=arch, expand=expand)
            rows.append(Row(name, label, "expandnet", options, paper=paper,
                            paper_std=std, note="exp_cifar README, 5 runs"))
            kd = _EXPANDNETS_KD.get((dataset, arch, suffix))
            rows.append(Row(
                f"{name}_kd", f"{label} w/ KD", "expandnet", options,
                paper=kd, teacher=_KD_TEACHER,
                note="third-party summary [unverified]" if kd else
                "not recorded in the spec"))
    return tuple(rows)


def _register_cifar(prefix, title, rows, source):
    """`<prefix>_cifar10` and `<prefix>_cifar100`; `rows(dataset)`."""
    for dataset, classes in (("cifar10", "10"), ("cifar100", "100")):
        register(Table(f"{prefix}_cifar{classes}",
                       f"{title}, CIFAR-{classes}", dataset, rows(dataset),
                       source))


_register_cifar("expandnets", "ExpandNets: SmallNet vs ExpandNets (r=4)",
                _expandnets_rows,
                "Guo et al., ExpandNets, NeurIPS 2020, Table 1 / S1 / S3")


# -- X-Nets (Prabhu et al., ECCV 2018), README "Results on CIFAR" ----------

# specs/xnets.md 3.2: best-epoch test top-1.
_XNETS_PAPER = {"cifar10": (94.83, 94.98, 95.48, 95.71),
                "cifar100": (74.37, 76.69, 77.7, 78.53)}
# The dense DenseNet-BC baselines of the reference logs (best epoch).
_DENSE_LOGS = {"cifar10": (94.79, 95.26, 95.64, 95.91),
               "cifar100": (None, 77.84, 79.03, 79.87)}
_XNET_RECIPE = _options(batch_size="64", epochs="300", nesterov="true",
                        lr="0.1", weight_decay="1e-4",
                        decay_epochs="150;225")


def _xnets_rows(dataset):
    rows = []
    for growth, paper, dense in zip((24, 36, 48, 60), _XNETS_PAPER[dataset],
                                    _DENSE_LOGS[dataset]):
        arch = f"densenet_bc_40_{growth}"
        rows.append(Row(f"x_densenet_bc_40_{growth}_2",
                        f"X-DenseNet-BC-40-{growth}-2", "xnet",
                        _options(arch=arch, expand_size="2"), paper=paper,
                        note="reference README, best epoch"))
        rows.append(Row(arch, f"DenseNet-BC-40-{growth}", "baseline",
                        _XNET_RECIPE + (("arch", arch),), paper=dense,
                        note="reference logs, best epoch" if dense else
                        "no reference log"))
    if dataset == "cifar10":
        rows.append(Row("x_vgg16", "X-VGG16", "xnet", recipe_arg="vgg",
                        paper=93.07, note="reference log, best epoch"))
    return tuple(rows)


_register_cifar(
    "xnets", "X-Nets: X-DenseNet-BC-40-k-2 vs dense", _xnets_rows,
    "Prabhu et al., Deep Expander Networks, ECCV 2018, CIFAR results")


# -- SlimConv (Qiu et al., IEEE TIP 2021) ------------------------------------

# specs/slimconv.md 3.4: the CIFAR-100 compression figure, digitised.
_SLIMCONV_CURVE = (("4/3", 78.50), ("2", 77.61), ("8/3", 78.08),
                   ("10/3", 76.17), ("4", 75.85), ("14/3", 76.27),
                   ("16/3", 75.44))

register(Table(
    "slimconv_cifar100",
    "SlimConv: Sc-ResNet-50 compression curve (k), CIFAR-100",
    "cifar100",
    (Row("resnet50_cifar", "ResNet-50", "baseline",
         _options(arch="resnet50_cifar"), paper=77.13,
         note="compression figure, digitised"),)
    + tuple(Row(f"sc_resnet50_k{k.replace('/', '_')}",
                f"Sc-ResNet-50 k={k}", "slimconv",
                _options(arch="sc_resnet50_cifar", slim_k=k), paper=acc,
                note="compression figure, digitised")
            for k, acc in _SLIMCONV_CURVE),
    "Qiu et al., SlimConv, IEEE TIP 2021, CIFAR-100 compression figure"))

# specs/slimconv.md 3.2: the README's ImageNet table (100 - top-1 error).
register(Table(
    "slimconv_imagenet",
    "SlimConv: Sc-ResNets on ImageNet (224x224)",
    "imagenet",
    (Row("resnet50", "ResNet-50", "baseline", recipe="imagenet",
         paper=76.1, note="torchvision recipe, not the paper"),
     Row("sc_resnet50_k4_3", "Sc-ResNet-50 k=4/3", "slimconv",
         _options(arch="sc_resnet50", slim_k="4/3"), recipe="imagenet",
         paper=77.23, note="README, 22.77% error"),
     Row("sc_resnet50_k8_3", "Sc-ResNet-50 k=8/3", "slimconv",
         _options(arch="sc_resnet50", slim_k="8/3"), recipe="imagenet",
         paper=75.52, note="README, 24.48% error"),
     Row("sc_resnet101_k4_3", "Sc-ResNet-101 k=4/3", "slimconv",
         _options(arch="sc_resnet101", slim_k="4/3"), recipe="imagenet",
         paper=77.84, note="abstract"),
     Row("sc_resnext101_32x3d_k2", "Sc-ResNeXt-101 32x3d k=2", "slimconv",
         _options(arch="sc_resnext101_32x3d", slim_k="2"),
         recipe="imagenet", paper=78.82, note="README, 21.18% error")),
    "Qiu et al., SlimConv, IEEE TIP 2021, README ImageNet table"))


# -- The CIFAR-10 ResNet baselines (He et al., 2016, Table 6) ---------------

_HE_TOP1 = {20: 91.25, 56: 93.03}


def _resnet(depth):
    return Row(f"resnet{depth}", f"ResNet-{depth}", "baseline",
               _options(arch=f"resnet{depth}"), paper=_HE_TOP1[depth],
               note="He et al. 2016")


# -- Cheap convolutions + online distillation (Xie et al.) ------------------

# Looked for on 2026-12-02 and not found: specs/od_cheap.md 4 (the spec's
# author saw only the abstract), the official repo
# EthanZhangYC/OD-cheap-convolution (README of all 22 commits to a405c9e,
# no logs) and the abstract pages indexed by the search tool.
_OD_NOTE = ("paper table not retrieved: not in specs/od_cheap.md 4 nor the "
            "official repo (a405c9e)")
register(Table(
    "od_cifar10",
    "OD: ResNet-56 cheap-conv students, 1 vs 4, CIFAR-10",
    "cifar10",
    (_resnet(56),) + tuple(Row(f"{block}_students{count}",
                f"{title}-ResNet-56 x{count}", "od",
                _options(block=block, students=str(count)),
                note=_OD_NOTE)
            for block, title in (("shift", "Shift"), ("dw", "DW"),
                                 ("group", "Group"))
            for count in (1, 4)),
    "Xie et al., Training convolutional networks with cheap convolutions "
    "and online distillation, arXiv:1909.13063"))


# -- APS channel search (Wang et al., NeurIPS 2020) -------------------------

# Looked for on 2026-12-02 and not found: specs/aps.md 5, the official
# repo haolibai/APS-channel-search at 99fd261 (README, scripts/: widths
# and FLOPs only; its logs are on an external share) and the abstract and
# proceedings pages indexed by the search tool.
_APS_NOTE = ("paper table not retrieved: not in specs/aps.md 5 nor the "
             "official repo (99fd261)")
register(Table(
    "aps_cifar10",
    "APS: searched ResNet widths at 20.6M / 60.3M MACs, CIFAR-10",
    "cifar10",
    (_resnet(20),
     Row("resnet20_20.6M_searched", "APS ResNet-20 20.6M (searched)", "aps",
         _options(arch="resnet20", max_macs="2.06e7"), note=_APS_NOTE),
     Row("resnet20_20.6M_shipped", "APS ResNet-20 20.6M (shipped)", "aps",
         _options(arch="resnet20", phase="train", widths="resnet20_20.6M",
                  validation_split="0"), note=_APS_NOTE),
     _resnet(56),
     Row("resnet56_60.3M_searched", "APS ResNet-56 60.3M (searched)", "aps",
         _options(arch="resnet56", max_macs="6.03e7"), note=_APS_NOTE),
     Row("resnet56_60.3M_shipped", "APS ResNet-56 60.3M (shipped)", "aps",
         _options(arch="resnet56", phase="train", widths="resnet56_60.3M",
                  validation_split="0"), note=_APS_NOTE)),
    "Wang et al., Revisiting parameter sharing for automatic neural "
    "channel number search, NeurIPS 2020"))


# -- The evidence study: each method against its own baseline ---------------

def _uniform_resnet20(widths):
    """A uniformly thinned ResNet-20 as APS widths: stem + 18 convs."""
    stem, *stages = widths
    return ";".join(str(w) for w in (stem, *(w for w in stages
                                               for _ in range(6))))


_EVIDENCE_NOTE = "evidence study; the paper's table is on CIFAR"
# The ResNet-20 rows all train with He et al.'s recipe (configs/baseline.py),
# the APS-width ones included, so that only the widths differ.
_HE_RECIPE = _options(nesterov="false", weight_decay="1e-4",
                      schedule="step", decay_epochs="82;123", epochs="164",
                      phase="train", validation_split="0")
register(Table(
    "evidence",
    "Each method vs its own baseline at a matched budget",
    "fashion_mnist",
    (Row("smallnet7_compact", "SmallNet 7x7", "expandnet",
         _options(arch="smallnet7", expand="none"), note=_EVIDENCE_NOTE),
     Row("smallnet7_ck_fc", "ExpandNet-CK+FC 7x7", "expandnet",
         _options(arch="smallnet7", expand="ck+fc"), note=_EVIDENCE_NOTE),
     Row("smallnet7_cl_fc", "ExpandNet-CL+FC 7x7", "expandnet",
         _options(arch="smallnet7", expand="cl+fc"), note=_EVIDENCE_NOTE),
     Row("resnet20", "ResNet-20", "baseline", _options(arch="resnet20"),
         note=_EVIDENCE_NOTE),
     Row("sc_resnet20", "Sc-ResNet-20 k=4/3", "slimconv",
         _options(arch="sc_resnet20"), note=_EVIDENCE_NOTE),
     Row("aps_resnet20_20.6M", "APS ResNet-20 20.6M (shipped)", "aps",
         _HE_RECIPE + _options(arch="resnet20", widths="resnet20_20.6M"),
         note=_EVIDENCE_NOTE),
     # 11-24-45 channels: 20.83M MACs at 32x32 (profiled), level with
     # Sc-ResNet-20's 20.69M and APS's 20.87M.
     Row("resnet20_thin", "ResNet-20 thinned uniformly", "aps",
         _HE_RECIPE + _options(
             arch="resnet20", widths=_uniform_resnet20((11, 11, 24, 45))),
         note=_EVIDENCE_NOTE),
     Row("od_shift_resnet20_x4", "OD best of 4 Shift-ResNet-20", "od",
         _options(arch="resnet20", block="shift", students="4"),
         note=_EVIDENCE_NOTE),
     Row("od_shift_resnet20_x1", "Shift-ResNet-20 alone", "od",
         _options(arch="resnet20", block="shift", students="1"),
         note=_EVIDENCE_NOTE),
     Row("densenet_bc_40_24", "DenseNet-BC-40-24", "baseline",
         _XNET_RECIPE + (("arch", "densenet_bc_40_24"),),
         note=_EVIDENCE_NOTE),
     Row("x_densenet_bc_40_24_2", "X-DenseNet-BC-40-24-2", "xnet",
         _options(arch="densenet_bc_40_24", expand_size="2"),
         note=_EVIDENCE_NOTE),
     Row("densenet_bc_40_18", "DenseNet-BC-40-18 (thinned)", "baseline",
         _XNET_RECIPE + (("arch", "densenet_bc_40_18"),),
         note=_EVIDENCE_NOTE)),
    "benchmarks/evidence.md",
    (Claim("smallnet7_ck_fc", "smallnet7_compact",
           "ExpandNets: CK+FC training beats the compact net"),
     Claim("smallnet7_cl_fc", "smallnet7_compact",
           "ExpandNets: CL+FC training beats the compact net"),
     Claim("sc_resnet20", "resnet20",
           "SlimConv: Sc-ResNet-20 beats ResNet-20 at half the MACs"),
     Claim("sc_resnet20", "resnet20_thin",
           "SlimConv beats uniform thinning at the same MACs"),
     Claim("aps_resnet20_20.6M", "resnet20_thin",
           "APS widths beat uniform thinning at the same MACs"),
     Claim("od_shift_resnet20_x4", "od_shift_resnet20_x1",
           "OD: the best of 4 students beats one trained alone"),
     Claim("x_densenet_bc_40_24_2", "densenet_bc_40_18",
           "X-Nets beat a uniformly thinned DenseNet at the same MACs"),
     Claim("x_densenet_bc_40_24_2", "densenet_bc_40_24",
           "X-Nets: X-DenseNet-BC-40-24-2 beats the dense net (paper: "
           "+0.04, level)"))))
