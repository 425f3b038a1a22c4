"""The flags and `main` the trainers share (trainers.cifar, .imagenet).

A trainer defines its flags with `define(fields)`, where `fields` maps its
shortcut flags to their help, and runs `app.run(functools.partial(main,
recipe=...))`. Every shortcut flag and method option is a string flag that
defaults to the recipe's value and is typed like the config field.
"""

import logging as std_logging

from absl import app
from absl import flags
from absl import logging

from configs import common
from keras_compact import distribute
from keras_compact import methods
from keras_compact import models
from keras_compact import training

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
}


def define(fields):
    """Defines --method, --config, --smoke, --set and one flag per field.

    Args:
        fields: `{name: help}` of the trainer's shortcut flags; the methods'
            options are added after them.

    Returns:
        The names of all shortcut flags (fields and method options).
    """
    flags.DEFINE_string("method", "baseline",
                        f"Compaction method: {', '.join(methods.names())}.")
    flags.DEFINE_string("config", "", "Recipe file `path.py[:arg]` instead "
                        "of the trainer's recipe.")
    flags.DEFINE_bool("smoke", False, "Shrink the recipe to a few CPU steps.")
    flags.DEFINE_list("set", [], "More overrides: key=value,key=value (any "
                      "config field; lists use ';').")
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
    config = recipe(FLAGS.method, FLAGS.config,
                    "smoke" if FLAGS.smoke else "")
    for name in fields:
        if FLAGS[name].value is not None:
            if name not in config:
                raise ValueError(
                    f"--{name} does not apply to --method={FLAGS.method}.")
            common.set_field(config, name, FLAGS[name].value)
    for item in FLAGS.set:
        key, _, value = item.partition("=")
        common.set_field(config, key, value)
    return config


def main(argv, fields, recipe):
    """Builds the config from the flags, runs it and prints the result."""
    if len(argv) > 1:
        raise app.UsageError(f"Unexpected arguments: {argv[1:]}")
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
