"""The CIFAR recipe every method config starts from, and argument parsing.

A config file is a module `configs/<method>.py` with `get_config(arg=None)`
returning an `ml_collections.ConfigDict` (big_vision's convention). `arg` is
a comma-separated list: `"smoke"` shrinks the run to a CPU smoke test, and
`key=value` entries set fields, e.g. `get_config("smoke,arch=resnet56")`.
"""

import ml_collections

from keras_compact.errors import UsageError


def cifar_recipe(method, arch="resnet20"):
    """He et al.'s CIFAR ResNet recipe (164 epochs, 0.1, /10 at 82 and 123)."""
    config = ml_collections.ConfigDict()
    config.method = method
    config.arch = arch
    config.dataset = "cifar10"
    config.data_dir = ""
    config.workdir = f"runs/{method}"
    config.seed = 0

    config.batch_size = 128  # global batch, split over the replicas
    config.epochs = 164
    config.steps_per_epoch = 0  # 0: one pass over the training set
    config.train_subset = 0  # 0: every training image; N: the first N
    config.validation_split = 0.0  # share of train held out for selection
    config.augment = True  # pad-4 random crop + horizontal flip
    config.label_smoothing = 0.0

    config.optimizer = "sgd"
    config.lr = 0.1  # for batch_size; scaled linearly if that changes
    config.momentum = 0.9
    config.nesterov = False
    config.weight_decay = 1e-4  # coupled L2, as torch.optim.SGD
    config.decay_bn_and_bias = True
    config.schedule = "step"  # step | cosine
    config.decay_epochs = (82, 123)
    config.decay_rate = 0.1
    config.warmup_epochs = 0

    config.strategy = "default"
    config.tpu = ""
    config.jit_compile = False  # XLA slows CPU training 2-3x; use on GPU/TPU
    config.steps_per_execution = 1
    config.mixed_precision = ""  # "", mixed_float16 (GPU), mixed_bfloat16
    config.export = ""  # any of saved_model,tflite,tflite_float16,tflite_int8
    config.qat_epochs = 0  # >0: int8 QAT fine-tuning -> model_int8_qat.tflite
    config.teacher = ""  # a trained .keras to distil from (any one-net method)
    config.kd_temperature = 4.0
    config.kd_weight = 1.0
    config.verbose = 1
    return config


def smoke(config):
    """Shrinks a recipe to a run of a few steps on CPU."""
    config.epochs = 2
    config.steps_per_epoch = 4
    config.train_subset = 512
    config.batch_size = 32
    config.decay_epochs = (1,)
    return config


def parse_arg(config, arg):
    """Applies `"smoke,key=value,..."` to `config` (values typed by field)."""
    for item in filter(None, (arg or "").split(",")):
        if item == "smoke":
            smoke(config)
        elif "=" in item:
            key, value = item.split("=", 1)
            set_field(config, key, value)
        else:
            raise UsageError(f"Config argument '{item}' is neither 'smoke' "
                             "nor 'key=value'.")
    return config


def set_field(config, key, text):
    """Sets `config[key]` from a command-line string, typed like the field."""
    if key not in config:
        raise UsageError(f"Unknown config field '{key}'. Valid fields: "
                         f"{', '.join(sorted(config.keys()))}.")
    config[key] = _parse(text, config[key], key)


def _parse(text, current, key):
    if isinstance(current, bool):
        if text.lower() not in ("true", "false", "1", "0"):
            raise UsageError(f"{key} expects true or false, got '{text}'.")
        return text.lower() in ("true", "1")
    if isinstance(current, (tuple, list)):
        items = [s for s in text.replace(";", ",").split(",") if s]
        kind = type(current[0]) if current else _kind(items)
        return tuple(_parse(s, kind(), key) for s in items)
    if isinstance(current, int):
        return _integer(text, key)
    if isinstance(current, float):
        try:
            return float(text)
        except ValueError:
            raise UsageError(f"{key} expects a number, got '{text}'.") from None
    return text


def _integer(text, key):
    try:
        return int(text)
    except ValueError:
        pass
    try:
        value = float(text)
    except ValueError:
        value = None
    if value is None or not value.is_integer():
        raise UsageError(f"{key} expects an integer, got '{text}'.")
    return int(value)


# `field: (lowest, highest, what)`: the ranges `check` enforces.
_RANGES = {
    "epochs": (1, None, "a positive integer"),
    "batch_size": (1, None, "a positive integer"),
    "steps_per_epoch": (0, None, "0 (one pass over the data) or a positive "
                                 "integer"),
    "steps_per_execution": (1, None, "a positive integer"),
    "train_subset": (0, None, "0 (all images) or a positive integer"),
    "warmup_epochs": (0, None, "0 or more"),
    "lr": (0.0, None, "a positive number"),
    "weight_decay": (0.0, None, "0 or more"),
    "momentum": (0.0, 1.0, "in [0, 1)"),
    "label_smoothing": (0.0, 1.0, "in [0, 1)"),
    "validation_split": (0.0, 1.0, "in [0, 1): the share of training "
                                   "images held out"),
}
_MIXED_PRECISION = ("", "float32", "mixed_float16", "mixed_bfloat16")


def check(config):
    """Raises `UsageError` naming the first field of `config` out of range.

    Example:

    >>> config = cifar_recipe("baseline")
    >>> config.epochs = 0
    >>> check(config)
    Traceback (most recent call last):
    ...
    keras_compact.errors.UsageError: epochs=0: must be a positive integer.
    """
    for key, (lowest, highest, what) in _RANGES.items():
        value = config.get(key)
        if value is None:
            continue
        # lr 0 and momentum 1 are excluded: the run would not learn.
        below = value <= lowest if key == "lr" else value < lowest
        if below or (highest is not None and value >= highest):
            raise UsageError(f"{key}={value}: must be {what}.")
    if config.get("mixed_precision", "") not in _MIXED_PRECISION:
        raise UsageError(f"mixed_precision={config.mixed_precision}: must be "
                         f"one of {', '.join(map(repr, _MIXED_PRECISION))}.")


def _kind(items):
    """The type of an empty tuple field's new items: int, float or str."""
    for kind in (int, float):
        try:
            [kind(s) for s in items]
            return kind
        except ValueError:
            continue
    return str
