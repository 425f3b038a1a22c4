"""`--method=aps`: the search and train phases, the families."""

import dataclasses
import logging
import os

import keras
import tensorflow as tf

from keras_compact import distribute
from keras_compact import files
from keras_compact import profiling
from keras_compact.data import pipeline
from keras_compact.methods.aps.decode import SEARCHED_WIDTHS
from keras_compact.methods.aps.decode import decode
from keras_compact.methods.aps.decode import decode_mobilenet_v2
from keras_compact.methods.aps.decode import decode_resnet18
from keras_compact.methods.aps.decode import parse_widths
from keras_compact.methods.aps.flops import standard_widths
from keras_compact.methods.aps.flops import table_macs
from keras_compact.methods.aps.search import ChannelSearchModel
from keras_compact.methods.aps.search import run_search
from keras_compact.methods.aps.search import select_architecture
from keras_compact.methods.aps.supernets import APSMobileNetV2
from keras_compact.methods.aps.supernets import APSResNet
from keras_compact.methods.aps.supernets import APSResNetCifar
from keras_compact.methods.base import Method
from keras_compact.methods.registry import register
from keras_compact.registry import Registry

PHASES = ("search", "train", "both")
log = logging.getLogger("keras_compact")


def _depth(arch):
    prefix = "resnet"
    if not arch.startswith(prefix) or not arch[len(prefix):].isdigit():
        raise ValueError(
            f"APS searches {', '.join(FAMILIES.names())} or CIFAR ResNets "
            f"(resnet20, resnet56, ...). Received: arch='{arch}'.")
    return int(arch[len(prefix):])


def _ints(text):
    return tuple(int(c) for c in str(text).replace(";", ",").split(",")
                 if c.strip())


@dataclasses.dataclass(frozen=True)
class Family:
    """How APS searches and decodes one kind of network.

    Attributes:
        supernet: `supernet(arch, config, input_shape, num_classes)`.
        decode: `decode(widths, input_shape, num_classes, shortcut)`.
        num_widths: `num_widths(arch)`, the length of a width list.
        budget: `budget(arch, input_shape)`, the default `max_macs`.
        reward_source: `"held_out"` (CIFAR) or `"train"` (ImageNet).
    """

    supernet: object
    decode: object
    num_widths: object
    budget: object
    reward_source: str


FAMILIES = Registry("APS architecture")


def _cifar_supernet(arch, config, input_shape, num_classes):
    return APSResNetCifar(
        _depth(arch), _ints(config.candidates) or (4, 8, 16, 32, 64),
        config.meta_width or None, num_classes, tuple(input_shape),
        config.overlap, config.projection_noise, name="supernet")


FAMILIES.register("resnet_cifar", Family(
    _cifar_supernet,
    lambda widths, shape, classes, shortcut: decode(widths, shape, classes,
                                                    shortcut),
    lambda arch: _depth(arch) - 1,
    lambda arch, shape: 0.5 * table_macs(standard_widths(_depth(arch)),
                                         shape),
    "held_out"))
FAMILIES.register("resnet18", Family(
    lambda arch, config, shape, classes: APSResNet(
        (2, 2, 2, 2), _ints(config.candidates) or (32, 48, 64, 80),
        config.meta_width or 128, 2, classes, tuple(shape), config.overlap,
        config.projection_noise, name="supernet"),
    lambda widths, shape, classes, shortcut: decode_resnet18(
        widths, shape, classes, shortcut),
    lambda arch: 17,
    lambda arch, shape: 1.9e9,  # scripts/search/..._resnet_ilsvrc.sh
    "train"))
FAMILIES.register("mobilenet_v2", Family(
    lambda arch, config, shape, classes: APSMobileNetV2(
        _ints(config.candidates) or (8, 12, 16, 20), config.meta_width or 32,
        classes, tuple(shape), config.overlap, config.projection_noise,
        name="supernet"),
    lambda widths, shape, classes, shortcut: decode_mobilenet_v2(
        widths, shape, classes, shortcut),
    lambda arch: 52,
    lambda arch, shape: 3.2e8,  # scripts/search/..._mbnetv2_ilsvrc.sh
    "train"))


def family(arch):
    """The `Family` of `arch`: "resnet18", "mobilenet_v2" or "resnet<6n+2>"
    (CIFAR)."""
    if arch in FAMILIES.names():
        return FAMILIES.get(arch)
    _depth(arch)  # fails with the list of valid names
    return FAMILIES.get("resnet_cifar")


def reward_batches(held_out, batch_size, buffer=10_000, seed=0):
    """The held-out split as the CIFAR reference's reward batches: images
    reshuffled every epoch (a 10k-image buffer), pad-4 crop and flip, in
    batches of `batch_size`. The selection keeps the plain split. The pad
    is the mean colour here (the images are normalised), black there."""
    return (held_out.unbatch()
            .shuffle(buffer, seed=seed, reshuffle_each_iteration=True)
            .batch(batch_size, drop_remainder=True)
            .map(lambda x, y: (pipeline._augment_batch(x, seed), y),
                 num_parallel_calls=tf.data.AUTOTUNE))


def build_search(config, data):
    """The compiled search model of `config` and what it fits on.

    `data` needs `.train`, `.validation` (held out of train), `.input_shape`
    and `.num_classes`. Returns `(model, pairs, steps)`: `pairs` are the
    (train, reward) batches, `steps` the steps per epoch to pass to `fit`
    (None: one pass of the training set).
    """
    if data.validation is None:
        raise ValueError(
            "APS selects the final architecture (and on CIFAR rewards the "
            "controller) on data held out of the training set, never the "
            "test set: set validation_split > 0 (the CIFAR reference holds "
            "out 0.5).")
    kind = family(config.arch)
    source = config.get("reward_source") or kind.reward_source
    supernet = kind.supernet(config.arch, config, data.input_shape,
                             data.num_classes)
    max_macs = config.max_macs or kind.budget(config.arch, data.input_shape)
    model = ChannelSearchModel(
        supernet, max_macs, config.controller_hidden, config.entropy_coeff,
        config.baseline_decay, config.reward_alpha, config.reward_beta,
        config.orthogonal_weight, config.search_weight_decay,
        config.arch_weight_decay, source,
        config.get("projection_interval") or 1)
    batch = config.get("search_batch_size") or config.batch_size
    train = data.train
    if batch != config.batch_size:  # the reference searches with 256
        train = train.rebatch(batch, drop_remainder=True)
    cardinality = int(train.cardinality())
    # A streamed (endless) or re-batched training set has no length: use
    # train_size.
    steps = config.steps_per_epoch or (
        cardinality if cardinality > 0 else data.train_size // batch)
    if steps <= 0:
        raise ValueError("The training set has unknown size: set "
                         "steps_per_epoch.")
    fixed_steps = bool(config.steps_per_epoch) or cardinality <= 0
    boundaries = [int(e) * steps for e in config.search_decay_epochs]
    values = [config.search_lr * 0.1 ** k
              for k in range(len(boundaries) + 1)]
    weights_lr = (keras.optimizers.schedules.PiecewiseConstantDecay(
        boundaries, values) if boundaries else config.search_lr)
    model.compile(
        keras.optimizers.SGD(weights_lr, momentum=0.9),
        keras.optimizers.SGD(config.projection_lr, momentum=0.9),
        keras.optimizers.Adam(config.arch_lr, beta_1=0.5, beta_2=0.999,
                              epsilon=1e-8))
    train = train.repeat() if fixed_steps else train
    pairs = (train if source == "train" else tf.data.Dataset.zip(
        (train, reward_batches(data.validation, batch).repeat())))
    return model, pairs, steps if fixed_steps else None


def search_from_config(config, data, workdir, verbose=1, chief=True):
    """Builds the supernet and controller from `config`, searches, selects.

    `data` as in `build_search`. Only a `chief` writes the search state to
    `workdir`. Returns the selection dict of `select_architecture` plus the
    budget.
    """
    model, pairs, steps = build_search(config, data)
    run_search(model, pairs, config.search_epochs,
               config.search_warmup_epochs, steps, workdir, verbose,
               writes=chief)
    result = select_architecture(model, data.validation,
                                 config.num_test_archs, config.beam_width)
    result["max_macs"] = model.max_macs
    return result


@register("aps")
class APS(Method):
    """Searches channel numbers, then trains the decoded net from scratch.

    `--phase=search` runs the search and writes `aps_widths.json` (widths,
    table MACs, held-out accuracy of the path) and `aps_sharing_level.json`
    to the workdir; `--phase=train` trains `--widths` (a shipped name such
    as `resnet20_20.6M` or `resnet18_1.83G`, a JSON file or a list);
    `--phase=both` does both. `--arch` picks the family (`FAMILIES`):
    CIFAR ResNets (`resnet20`, `resnet56`, ...; reward on a held-out
    split), `resnet18` or `mobilenet_v2` (ImageNet supernets; reward on the
    training batch). The final architecture is always selected on data held
    out of the training set.
    """

    options = {
        "phase": ("both", "search | train | both"),
        "max_macs": (0.0, "FLOPs budget in table MACs (spec 6); 0: half of "
                          "the standard CIFAR ResNet's, ResNet-18 1.9e9, "
                          "MobileNetV2 3.2e8"),
        "widths": ("", "widths to train: shipped name, JSON file or list"),
        "candidates": ("", "CIFAR: widths of every layer (4,8,16,32,64); "
                           "ImageNet: stage-1 widths (32,48,64,80 / "
                           "8,12,16,20); empty: those"),
        "meta_width": (0, "meta width C (stage 1 on ImageNet); 0: the sum "
                          "of the candidates / 128 / 32"),
        "reward_source": ("", "held_out | train (empty: CIFAR held_out, "
                              "ImageNet train)"),
        "overlap": (1.0, "1: ordinal (strong) .. 0: independent sharing"),
        "projection_noise": (1e-3, "noise on the identity init of P, Q"),
        "shortcut": ("paper", "decoded shortcuts: paper | supernet"),
        "search_epochs": (600, "search epochs, warm-up included"),
        "search_warmup_epochs": (200, "uniform-sampling warm-up epochs"),
        "search_lr": (0.1, "supernet SGD learning rate"),
        "search_batch_size": (0, "search batch (CIFAR reference: 256); "
                                 "0: --batch_size"),
        "search_weight_decay": (2e-4, "coupled L2 of supernet weights"),
        "search_decay_epochs": ((300, 450), "x0.1 supernet lr at these"),
        "projection_lr": (1e-3, "SGD lr of P, Q after the warm-up"),
        "orthogonal_weight": (5e-3, "weight of the orthogonality loss"),
        "projection_interval": (1, "search steps per projection step "
                                   "(ImageNet reference: 10)"),
        "arch_lr": (1.6e-4, "controller Adam learning rate"),
        "arch_weight_decay": (1e-3, "controller coupled L2"),
        "entropy_coeff": (4e-3, "controller entropy bonus"),
        "baseline_decay": (0.99, "reward moving-average decay"),
        "reward_alpha": (0.0, "reward exponent of F/T within budget"),
        "reward_beta": (-0.1, "reward exponent of F/T over budget"),
        "controller_hidden": (100, "controller LSTM width"),
        "num_test_archs": (10, "policy samples evaluated at the end"),
        "beam_width": (0, "also evaluate the beam's top-k (0: off)"),
    }

    def prepare(self, context):
        config = context.config
        if config.phase not in PHASES:
            raise ValueError(f"phase must be one of {', '.join(PHASES)}. "
                             f"Received: '{config.phase}'.")
        if config.phase == "train":
            if not config.widths:
                raise ValueError("phase=train needs --widths (a shipped "
                                 f"name: {', '.join(SEARCHED_WIDTHS)}; a "
                                 "JSON file; or a list).")
            config.widths = ",".join(map(str, parse_widths(config.widths)))
            return True
        path = os.path.join(context.workdir, "aps_widths.json")
        if tf.io.gfile.exists(path):  # the search finished before: resume
            result = files.read_json(path)
        else:
            chief = distribute.is_chief(context.strategy)
            with context.strategy.scope():
                # Only the chief writes; every worker resumes from its
                # files, so a multi-worker search needs a shared workdir.
                result = search_from_config(config, context.data,
                                            context.workdir,
                                            config.get("verbose", 1), chief)
            model = family(config.arch).decode(
                result["widths"], context.data.input_shape,
                context.data.num_classes, config.shortcut)
            counts = profiling.profile(model)
            result.update(params=counts.params, profiled_macs=counts.macs)
            if chief:
                tf.io.gfile.makedirs(context.workdir)
                files.write_json(path, result)
        config.widths = ",".join(map(str, result["widths"]))
        log.info("APS search chose widths %s (%d charged MACs, held-out "
                 "top-1 %.4f)", config.widths, result["charged_macs"],
                 result["accuracy"])
        return config.phase == "both"

    def build_model(self, config, input_shape, num_classes):
        widths = parse_widths(config.widths) if config.widths else []
        if not widths:
            raise ValueError("No widths to train: run --phase=search or "
                             "both, or pass --widths.")
        kind = family(config.arch)
        if len(widths) != kind.num_widths(config.arch):
            owner = {17: "resnet18", 52: "mobilenet_v2"}.get(
                len(widths), f"resnet{len(widths) + 1}")
            raise ValueError(
                f"arch={config.arch} decodes {kind.num_widths(config.arch)} "
                f"widths, but {len(widths)} were given. Pass --arch={owner}"
                " (19 widths: resnet20, 55: resnet56, 17: resnet18, 52: "
                "mobilenet_v2).")
        return kind.decode(widths, input_shape, num_classes, config.shortcut)
