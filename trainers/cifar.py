"""Trains a compact network on CIFAR-10/100, Fashion-MNIST or synthetic data.

The recipe comes from `configs/<method>.py` (the paper's); flags override
single fields. Examples:

  python -m trainers.cifar --method=baseline --arch=resnet20
  python -m trainers.cifar --method=baseline --dataset=fashion_mnist --epochs=3
  python -m trainers.cifar --method=baseline --smoke --dataset=synthetic
  python -m trainers.cifar --method=baseline --set=nesterov=true,lr=0.05

Started again with the same --workdir, a run resumes from its last finished
epoch. Results: <workdir>/metrics.json, log.csv, tensorboard/, export/.
"""

import logging as std_logging
import os

from absl import app
from absl import flags
from absl import logging

os.environ.setdefault("TF_CPP_MIN_LOG_LEVEL", "2")

from configs import common  # noqa: E402
from configs import loader  # noqa: E402
from keras_compact import data  # noqa: E402
from keras_compact import distribute  # noqa: E402
from keras_compact import methods  # noqa: E402
from keras_compact import models  # noqa: E402
from keras_compact import training  # noqa: E402

FLAGS = flags.FLAGS
flags.DEFINE_string("method", "baseline",
                    f"Compaction method: {', '.join(methods.names())}.")
flags.DEFINE_string("config", "", "Recipe file `path.py[:arg]` instead of "
                    "configs/<method>.py.")
flags.DEFINE_bool("smoke", False, "Shrink the recipe to a few CPU steps.")
flags.DEFINE_list("set", [], "More overrides: key=value,key=value (any "
                  "config field; lists use ';').")

# Shortcut flags for the fields people change most; all default to the
# recipe's value.
_FIELDS = {
    "arch": f"Architecture: {', '.join(models.names())}.",
    "dataset": f"Dataset: {', '.join(data.names())}.",
    "data_dir": "Dataset folder (CIFAR: cifar-10-batches-py / the "
                ".tar.gz; Fashion-MNIST: the IDX .gz files).",
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
    "jit_compile": "XLA compilation (faster on GPU/TPU, slower on CPU).",
    "mixed_precision": "'', mixed_float16 (GPU) or mixed_bfloat16 (TPU).",
    "train_subset": "Use only the first N training images (0: all).",
    "steps_per_epoch": "Steps per epoch (0: one pass over the data).",
}
for _name, (_default, _help) in methods.all_options().items():
    _FIELDS.setdefault(_name, f"[method option] {_help} (recipe default "
                              f"{_default}).")
for _name, _help in _FIELDS.items():
    flags.DEFINE_string(_name, None, _help)


def build_config():
    config = loader.load(FLAGS.method, FLAGS.config,
                         "smoke" if FLAGS.smoke else "")
    for name in _FIELDS:
        if FLAGS[name].value is not None:
            if name not in config:
                raise ValueError(
                    f"--{name} does not apply to --method={FLAGS.method}.")
            common.set_field(config, name, FLAGS[name].value)
    for item in FLAGS.set:
        key, _, value = item.partition("=")
        common.set_field(config, key, value)
    return config


def main(argv):
    if len(argv) > 1:
        raise app.UsageError(f"Unexpected arguments: {argv[1:]}")
    # TensorFlow's INFO chatter hides the progress; keep keras_compact's.
    logging.set_verbosity(logging.WARNING)
    std_logging.getLogger("keras_compact").setLevel(std_logging.INFO)
    config = build_config()
    std_logging.getLogger("keras_compact").info("config:\n%s", config)
    metrics = training.run(config)
    if metrics:
        print(f"{config.method} {config.arch} on {config.dataset}: "
              f"test accuracy {metrics['test_accuracy']:.4f}, "
              f"{metrics['params']:,} params, {metrics['macs']:,} MACs, "
              f"{metrics['train_images_per_second']:.0f} images/s; "
              f"results in {config.workdir}")


if __name__ == "__main__":
    app.run(main)
