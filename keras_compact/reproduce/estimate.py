"""Expected training time of a table on one accelerator: an estimate.

Training one image costs about 3x the forward pass (forward, input and
weight gradients), i.e. `6 * MACs` FLOPs. A row's cost is that times the
images it trains on over its epochs (and, for an APS search, the search's
epochs on the full-width supernet, an upper bound). Time is cost over an
assumed effective accelerator throughput (`ASSUMED_TFLOPS`, or the
caller's), scaled down by how much less of the peak the row's ops reach
than a plain ResNet's: that factor is the model-FLOP utilisation measured
on this CPU (BENCHMARKS.md, "Training speed against PyTorch", quiet
machine). No row goes faster than the input pipeline measured here
(`PIPELINE_IMAGES_PER_SECOND`). These are estimates, not measurements.

Example:

>>> from keras_compact.reproduce import estimate, tables
>>> rows = estimate.table_hours(tables.get("od_cifar10"), seeds=1,
...                             tflops=25)  # doctest: +SKIP
"""

import dataclasses
import math

from keras_compact.reproduce import runner

# Model-FLOP utilisation (%) of each method's training on this CPU
# (BENCHMARKS.md, quiet machine, 2026-11-22); "densenet" is the dense
# DenseNet-BC-40-24 of the baseline method. Divided by the plain
# ResNet's 75.9% it scales the assumed throughput down.
UTILISATION = {"baseline": 75.9, "slimconv": 33.2, "aps": 58.7, "od": 29.7,
               "expandnet": 62.2, "xnet": 56.5, "densenet": 56.6}


def relative_utilisation(config):
    key = ("densenet" if config.method == "baseline"
           and config.arch.startswith("densenet") else config.method)
    return UTILISATION[key] / UTILISATION["baseline"]


# Effective TFLOP/s assumed for one A100 in mixed precision: CIFAR-sized
# convs (16-64 channels at 8-32 px) keep it far from its 312 TFLOP/s
# tensor peak (8: ResNet-56 at ~10k images/s), ImageNet ResNets get closer
# (60: ResNet-50 at ~2.4k images/s).
ASSUMED_TFLOPS = {"cifar10": 8.0, "cifar100": 8.0, "fashion_mnist": 8.0,
                  "imagenet": 60.0}
# Batch-level crop + flip measured on this CPU (DESIGN.md): a ceiling.
PIPELINE_IMAGES_PER_SECOND = 54_000
TRAIN_IMAGES = {"cifar10": 50_000, "cifar100": 50_000,
                "fashion_mnist": 60_000, "imagenet": 1_281_167}
INPUT_SHAPES = {"cifar10": ((32, 32, 3), 10), "cifar100": ((32, 32, 3), 100),
                "fashion_mnist": ((28, 28, 1), 10),
                "imagenet": ((224, 224, 3), 1000)}


@dataclasses.dataclass(frozen=True)
class Estimate:
    row: str
    training_macs: int  # forward MACs of one image through what trains
    epochs: int
    images: int  # training images per epoch
    petaflops: float  # total training FLOPs of one seed, 1e15
    hours: float  # per seed on the assumed accelerator


def training_macs(config):
    """Forward MACs per image that training `config` executes (expanded
    nets, all OD students, masked X-Nets as dense; a KD row's teacher is
    added by the caller)."""
    from keras_compact import methods
    from keras_compact import profiling

    shape, classes = INPUT_SHAPES[config.dataset]
    config = config.copy_and_resolve_references()
    if config.method == "xnet" and config.expander_impl == "masked":
        # The masked form runs the dense convolutions (zeros included).
        config.method = "baseline"
        config.arch = config.arch.removeprefix("x_")
    model = methods.get(config.method).build_model(config, shape, classes)
    parts = getattr(model, "students", None) or [model]
    return sum(profiling.profile(part).macs for part in parts)


def row_estimate(table, row, options, tflops, teacher_macs=0):
    config = runner.row_config(table, row, options, 0)
    dataset = config.dataset
    images = round((config.train_subset or TRAIN_IMAGES[dataset])
                   * (1 - config.validation_split))
    if config.steps_per_epoch:
        images = config.steps_per_epoch * config.batch_size
    search = 0.0
    if row.method == "aps" and config.phase != "train":
        # The decoded net is about the budget; the search trains the
        # full-width net (upper bound) on the training part of the split.
        macs = int(config.max_macs)
        full = config.copy_and_resolve_references()
        full.method, full.phase = "baseline", "train"
        search = 6 * training_macs(full) * images * config.search_epochs
        images = TRAIN_IMAGES[dataset]  # trained from scratch on all
    else:
        # The teacher runs forward only: a third of a training step's FLOPs.
        macs = training_macs(config) + teacher_macs // 3
    flops = 6 * macs * images * config.epochs + search
    rate = ((tflops or ASSUMED_TFLOPS[dataset]) * 1e12
            * relative_utilisation(config))
    seconds = max(flops / rate, (images * config.epochs + search / 6 / macs)
                  / PIPELINE_IMAGES_PER_SECOND)
    return Estimate(row.name, macs, config.epochs, images, flops / 1e15,
                    seconds / 3600)


def table_hours(table, options, tflops):
    """`Estimate`s of every selected row (per seed)."""
    rows = table.select(options.rows)
    teachers = {}
    estimates = []
    for row in rows:
        teacher = 0
        if row.teacher:
            if row.teacher not in teachers:
                config = runner.row_config(table, table.row(row.teacher),
                                           options, 0)
                teachers[row.teacher] = training_macs(config)
            teacher = teachers[row.teacher]
        estimates.append(row_estimate(table, row, options, tflops, teacher))
    return estimates


def markdown(table, estimates, seeds, tflops):
    total = sum(e.hours for e in estimates) * seeds
    rate = tflops or ASSUMED_TFLOPS[table.dataset]
    lines = [f"### {table.name}: about {_duration(total)} for {seeds} "
             f"seeds (estimate, {rate:g} TFLOP/s effective)", "",
             "| row | training MACs/image (M) | epochs | images/epoch | "
             "PFLOP per seed | hours per seed |", "|---|---:|---:|---:|---:|"
             "---:|"]
    for e in estimates:
        lines.append(f"| {e.row} | {e.training_macs / 1e6:,.1f} | {e.epochs}"
                     f" | {e.images:,} | {e.petaflops:,.1f} | {e.hours:.2f} "
                     "|")
    return "\n".join(lines) + "\n"


def _duration(hours):
    if hours < 1:
        return f"{math.ceil(hours * 60)} min"
    return f"{hours:.1f} h"
