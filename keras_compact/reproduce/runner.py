"""Runs a table's rows as ordinary trainer runs, resumably.

Row `r` of table `t` with seed `k` is `keras_compact.training.run(config)`
in `WORKDIR/t/r/seed<k>`. A run with `metrics.json` is finished and is
skipped (after `workdir.check_config` checks that it was run with the
same config); any other run is started, and the trainer resumes it from
its `backup/`.

Example (a smoke run of two rows, two seeds, on synthetic data):

>>> from keras_compact.reproduce import runner, tables
>>> options = runner.Options(workdir="/tmp/reproduce", seeds=2, smoke=True,
...                          rows=("smallnet7_compact", "smallnet7_ck_fc"))
>>> runner.run(tables.get("expandnets_cifar10"), options)  # doctest: +SKIP
"""

import dataclasses
import logging
import math
import os
import re

import tensorflow as tf

from configs import common
from configs import loader
from keras_compact import files
from keras_compact import workdir
from keras_compact.errors import UsageError
from keras_compact.registry import Registry

log = logging.getLogger("keras_compact")

# Recipe files of `Row.recipe`: "" is the method's `configs/<method>.py`.
RECIPES = Registry("recipe")
RECIPES.register("cifar", "")
RECIPES.register("imagenet", os.path.join(
    os.path.dirname(os.path.dirname(os.path.dirname(
        os.path.abspath(__file__)))), "configs", "imagenet.py"))

# Epoch-valued fields scaled with `epochs` by an epoch budget, so a short run
# keeps the recipe's schedule shape: `{field: the field bounding it}`.
SCHEDULE_FIELDS = {"decay_epochs": "epochs", "warmup_epochs": "epochs",
                   "search_warmup_epochs": "search_epochs",
                   "search_decay_epochs": "search_epochs"}

_TIME = re.compile(r"^(\d+(?:\.\d+)?)(s|m|h)$")
_SECONDS = {"s": 1, "m": 60, "h": 3600}


@dataclasses.dataclass(frozen=True)
class Options:
    """How to run a table.

    Attributes:
        workdir: root of `<table>/<row>/seed<k>`.
        seeds: seeds 0 .. seeds-1 of every row.
        dataset: a proxy dataset instead of the table's ("" keeps it).
        data_dir: the dataset's folder.
        budget: "" (the recipe's epochs), "N" epochs, or a wall time per
            run such as "90s", "20m", "2h" (turned into epochs once, from
            the measured training speed and each epoch's evaluation, and
            recorded in the row folder; graph tracing and the final test
            evaluation are not counted).
        smoke: each recipe's smoke variant on synthetic data (unless
            `dataset` is given).
        rows: row names to run (empty: all, plus the teachers they need).
        sets: more `key=value` config overrides for every row.
    """

    workdir: str = "runs/reproduce"
    seeds: int = 3
    dataset: str = ""
    data_dir: str = ""
    budget: str = ""
    smoke: bool = False
    rows: tuple = ()
    sets: tuple = ()


def row_dir(options, table, row):
    return os.path.join(options.workdir, table.name, row.name)


def seed_dir(options, table, row, seed):
    return os.path.join(row_dir(options, table, row), f"seed{seed}")


def parse_budget(text):
    """`"12"` -> `("epochs", 12)`; `"20m"` -> `("seconds", 1200.0)`."""
    text = text.strip()
    if text.isdigit() and int(text) > 0:
        return "epochs", int(text)
    match = _TIME.match(text)
    if match and float(match.group(1)) > 0:
        return "seconds", float(match.group(1)) * _SECONDS[match.group(2)]
    raise UsageError(f"--budget={text}: give epochs (e.g. 5) or a time per "
                     "run (e.g. 90s, 20m, 2h).")


def scale_schedule(config, epochs):
    """Sets `config.epochs = epochs`, scaling the schedule's epoch fields."""
    factor = epochs / config.epochs
    config.epochs = epochs
    if "search_epochs" in config:
        config.search_epochs = max(1, round(config.search_epochs * factor))
    for name, bound in SCHEDULE_FIELDS.items():
        if name not in config:
            continue
        limit = config[bound]
        value = config[name]
        if isinstance(value, (tuple, list)):
            scaled = sorted({round(v * factor) for v in value})
            config[name] = tuple(v for v in scaled if 0 < v < limit)
        else:
            config[name] = min(round(value * factor), limit - 1)
    return config


def base_config(table, row, options, seed):
    """The row's recipe with its overrides, dataset, seed and workdir."""
    arg = ",".join(filter(None, (
        f"method={row.method}" if row.recipe == "imagenet" else "",
        row.recipe_arg, "smoke" if options.smoke else "")))
    config = loader.load(row.method, RECIPES.get(row.recipe), arg)
    for key, text in row.overrides:
        common.set_field(config, key, text)
    config.dataset = options.dataset or (
        "synthetic" if options.smoke else table.dataset)
    if options.data_dir:
        config.data_dir = options.data_dir
    config.seed = seed
    config.workdir = seed_dir(options, table, row, seed)
    if row.teacher:
        config.teacher = os.path.join(
            seed_dir(options, table, table.row(row.teacher), seed),
            "deployable.keras")
    for item in options.sets:
        key, _, value = item.partition("=")
        try:
            common.set_field(config, key.strip(), value)
        except ValueError as error:
            raise UsageError(f"--set {item}: {error}") from error
    return config


def row_config(table, row, options, seed, measure=None):
    """`base_config` with the budget applied.

    A time budget is turned into epochs from the row's training speed,
    measured once by `measure(config) -> images/s` (default: a few steps of
    the method's model on random data) and kept in `<row>/budget.json`, so
    every seed and every rerun gets the same epochs.
    """
    config = base_config(table, row, options, seed)
    if not options.budget:
        return config
    kind, amount = parse_budget(options.budget)
    if kind == "seconds":
        amount = _epochs_for(config, amount, row_dir(options, table, row),
                             options.budget, measure or images_per_second)
    return scale_schedule(config, amount)


def _epochs_for(config, seconds, directory, budget, measure):
    path = os.path.join(directory, "budget.json")
    if tf.io.gfile.exists(path):
        recorded = files.read_json(path)
        if recorded["budget"] == budget:
            return recorded["epochs"]
    rate = measure(config)
    images = _epoch_images(config)
    epochs = max(1, math.floor(seconds * rate / images))
    tf.io.gfile.makedirs(directory)
    files.write_json(path, {"budget": budget, "epochs": epochs,
                            "images_per_second": rate,
                            "images_per_epoch": images})
    log.info("budget %s: %.0f images/s -> %d epochs", budget, rate, epochs)
    return epochs


def _epoch_images(config):
    """Training images of one epoch plus the evaluation after it, counted
    as a third of a training image each (a forward pass of three)."""
    from keras_compact import data

    dataset = data.load(config.dataset, config.data_dir)
    size = min(len(dataset.x_train), config.train_subset or 1 << 62)
    held_out = round(size * config.validation_split)
    evaluated = held_out or len(dataset.x_test)
    trained = (config.steps_per_epoch * config.batch_size
               or size - held_out)
    return trained + evaluated / 3


def images_per_second(config, steps=10):
    """Training images/s of the row's trainable model on random data."""
    from keras_compact import benchmarking
    from keras_compact import data
    from keras_compact import methods
    from keras_compact import optimizers
    from keras_compact.methods import knowledge_distillation

    dataset = data.load(config.dataset, config.data_dir)
    method = methods.get(config.method)
    # A "w/ KD" row trains with its teacher's forward pass: time that too.
    model = knowledge_distillation.with_teacher(method.build_model(
        config, dataset.input_shape, dataset.num_classes), config)
    method.compile_model(model, optimizers.make_optimizer(config, 100),
                         config)
    return benchmarking.training_throughput(
        model, dataset.input_shape, dataset.num_classes, config.batch_size,
        steps)


def finished(directory):
    return tf.io.gfile.exists(os.path.join(directory, "metrics.json"))


def run(table, options, train=None, measure=None):
    """Runs every selected row and seed of `table` that is not finished.

    Args:
        table: a `tables.Table`.
        options: `Options`.
        train: `train(config) -> metrics` (default `training.run`).
        measure: training images/s of a config, for a time budget.

    Returns:
        `{"trained": [...], "skipped": [...], "failed": [...]}` workdirs.
        A run that fails with anything but a `UsageError` is recorded in
        its `error.txt` and the table goes on with the next run.
    """
    if train is None:
        from keras_compact import training

        train = training.run
    rows = table.select(options.rows)
    outcome = {"trained": [], "skipped": [], "failed": []}
    total = len(rows) * options.seeds
    for index, (row, seed) in enumerate(
            ((r, s) for r in rows for s in range(options.seeds)), 1):
        config = row_config(table, row, options, seed, measure)
        directory = config.workdir
        where = f"[{index}/{total}] {table.name}/{row.name}/seed{seed}"
        if finished(directory):
            # Never handed to the trainer again, so its config check is
            # made here.
            workdir.check_config(config, finished=True)
            log.info("%s: finished, skipped", where)
            outcome["skipped"].append(directory)
            continue
        log.info("%s: training %s %s, %d epochs", where, config.method,
                 config.arch, config.epochs)
        try:
            train(config)
        except UsageError:
            raise
        except Exception as error:  # noqa: BLE001 - the table goes on
            log.error("%s failed: %s", where, error)
            tf.io.gfile.makedirs(directory)
            with files.atomic_write(os.path.join(directory,
                                                 "error.txt")) as path:
                with tf.io.gfile.GFile(path, "w") as f:
                    f.write(f"{type(error).__name__}: {error}\n")
            outcome["failed"].append(directory)
            continue
        finally:
            _free_memory()
        outcome["trained"].append(directory)
    return outcome


def _free_memory():
    import keras

    keras.backend.clear_session()
