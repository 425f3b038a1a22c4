"""The flags and `main` the trainers share (trainers.cifar, .imagenet).

A trainer defines its flags with `define(fields)`, where `fields` maps its
shortcut flags to their help, and runs `app.run(functools.partial(main,
recipe=...))`. Every shortcut flag and method option is a string flag that
defaults to the recipe's value and is typed like the config field.
"""

import logging as std_logging

from absl import flags
from absl import logging

from keras_compact import data
from keras_compact import distribute
from keras_compact import methods
from keras_compact import models
from keras_compact import training
from keras_compact.configs import common
from keras_compact.configs import loader
from keras_compact.errors import UsageError

FLAGS = flags.FLAGS

# Shortcut flags for the fields people change most, in every trainer.
FIELDS = {
    "arch": f"Architecture: {', '.join(models.names())}.",
    "workdir": "Output folder; an existing one is resumed.",
    "epochs": "Training epochs.",
    "batch_size": "Global batch size (split over replicas).",
    "lr": "Peak learning rate.",
    "weight_decay": "L2 weight decay.",
    "seed": "Random seed of data order, augmentation and init.",
    "strategy": f"Distribution: {', '.join(distribute.names())}.",
    "tpu": "TPU name or grpc:// address for --strategy=tpu.",
    "export": "Comma list of saved_model, tflite, tflite_float16, "
              "tflite_int8.",
    "qat_epochs": "Epochs of int8 quantization-aware fine-tuning of the "
                  "deployable, exported as model_int8_qat.tflite (0: none).",
    "jit_compile": "XLA compilation (faster on GPU/TPU, slower on CPU).",
    "mixed_precision": "'', mixed_float16 (GPU) or mixed_bfloat16 (TPU).",
    "train_subset": "Use only the first N training images (0: all).",
    "steps_per_epoch": "Steps per epoch (0: one pass over the data).",
    "validation_split": "Share of the training images held out for model "
                        "selection and search rewards (0: none).",
}


def define(fields):
    """Defines --method, --then, --config, --smoke, --set and one flag per
    field.

    Args:
        fields: `{name: help}` of the trainer's shortcut flags; the methods'
            options are added after them.

    Returns:
        The names of all shortcut flags (fields and method options).
    """
    flags.DEFINE_string("method", "baseline",
                        f"Compaction method: {', '.join(methods.names())}.")
    flags.DEFINE_string("then", "", "Compose: train --method's architecture "
                        "with this method, e.g. --method=aps --then=od "
                        "(declared: "
                        f"{', '.join(methods.compose.composed_names())}).")
    flags.DEFINE_string("config", "", "Another recipe: a packaged one by "
                        f"name ({', '.join(loader.names())}) or a file, "
                        "NAME[:ARG] or path.py[:ARG], e.g. xnet:vgg.")
    flags.DEFINE_bool("smoke", False, "Shrink the recipe to a few CPU steps.")
    flags.DEFINE_multi_string("set", [], "More overrides: key=value,"
                              "key=value (any config field; lists use ';'); "
                              "may be repeated.")
    fields = dict(fields)
    for name, (default, text) in methods.all_options().items():
        fields.setdefault(name, f"[method option] {text} (recipe default "
                                f"{default}).")
    for name, text in fields.items():
        flags.DEFINE_string(name, None, text)
    return list(fields)


def build_config(fields, recipe):
    """The recipe's config with the flags applied.

    Args:
        fields: the shortcut flag names `define` returned.
        recipe: `recipe(method, config_file, arg) -> ConfigDict`, e.g.
            `configs.loader.load`.
    """
    method = methods.compose.resolve(FLAGS.method, FLAGS.then)
    config = recipe(method, FLAGS.config, "smoke" if FLAGS.smoke else "")
    for name in fields:
        if FLAGS[name].value is not None:
            if name not in config:
                raise UsageError(
                    f"--{name} does not apply to --method={FLAGS.method}.")
            common.set_field(config, name, FLAGS[name].value)
    for item in ",".join(FLAGS.set).split(","):
        if item:
            key, equals, value = item.partition("=")
            if not equals:
                raise UsageError(f"--set item '{item}' is not key=value.")
            common.set_field(config, key, value)
    check(config)
    return config


def check(config):
    """Refuses, before any data is read, a config that cannot run.

    Checks the field ranges (`configs.common.check`) and that the arch,
    dataset, strategy and export formats are registered names.
    """
    common.check(config)
    models.registry.ARCHITECTURES.get(config.arch)
    if config.dataset not in training.STREAMED:
        data.registry.DATASETS.get(config.dataset)
    distribute.STRATEGIES.get(config.strategy)
    for name in filter(None, config.export.split(",")):
        training.EXPORTS.get(name)


def main(argv, fields, recipe):
    """Builds the config from the flags, runs it and prints the result."""
    if len(argv) > 1:
        raise UsageError(f"Unexpected arguments {' '.join(argv[1:])}; "
                         "flags are --name=value.")
    # TensorFlow's INFO chatter hides the progress; keep keras_compact's.
    logging.set_verbosity(logging.WARNING)
    std_logging.getLogger("keras_compact").setLevel(std_logging.INFO)
    config = build_config(fields, recipe)
    std_logging.getLogger("keras_compact").info("config:\n%s", config)
    metrics = training.run(config)
    if metrics:
        print(f"{config.method} {config.arch} on {config.dataset}: "
              f"test accuracy {metrics['test_accuracy']:.4f}, "
              f"{metrics['params']:,} params, {metrics['macs']:,} MACs, "
              f"{metrics['train_images_per_second']:.0f} images/s; "
              f"results in {config.workdir}")
