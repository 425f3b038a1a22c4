"""Prints params and MACs per layer of an architecture or a saved model.

  python -m tools.profile --arch=resnet56
  python -m tools.profile --method=baseline --arch=resnet20 --dataset=cifar100
  python -m tools.profile --model=runs/baseline/deployable.keras
  python -m tools.profile --method=baseline --arch=resnet20 --trace

`--trace` instead times a few training steps of the model as the trainer
compiles it (the method's optimizer and train step, batch `--batch_size` of
random data) under the TF profiler and prints where the step's wall time
goes: device-op time per category (convolutions, batch norm, elementwise,
optimizer update, data, ...), the Python/runtime overhead, and the largest
op types (`benchmarking.step_time_breakdown`).
"""

import os

from absl import app
from absl import flags
from absl import logging

os.environ.setdefault("TF_CPP_MIN_LOG_LEVEL", "2")

import keras  # noqa: E402
import numpy as np  # noqa: E402

from configs import loader  # noqa: E402
from keras_compact import benchmarking  # noqa: E402
from keras_compact import data  # noqa: E402
from keras_compact import methods  # noqa: E402
from keras_compact import optimizers  # noqa: E402
from keras_compact import profiling  # noqa: E402

FLAGS = flags.FLAGS
flags.DEFINE_string("model", "", "A saved .keras model to profile.")
flags.DEFINE_string("method", "baseline", "Method whose model is built.")
flags.DEFINE_string("arch", "", "Architecture (default: the recipe's).")
flags.DEFINE_string("dataset", "cifar10", "Sets input shape and classes.")
flags.DEFINE_bool("trainable", False, "Profile the model as trained (e.g. "
                  "expanded), not its deployable form.")
flags.DEFINE_bool("trace", False, "Break a traced training step down by "
                  "op category instead of counting params and MACs.")
flags.DEFINE_integer("batch_size", 128, "Training batch for --trace.")
flags.DEFINE_integer("trace_steps", 3, "Traced steps for --trace.")
flags.DEFINE_integer("top", 15, "Op types listed by --trace.")


def _config_and_shape():
    config = loader.load(FLAGS.method,
                         arg=f"arch={FLAGS.arch}" if FLAGS.arch else "")
    dataset = data.load(FLAGS.dataset) if FLAGS.dataset != "cifar10" else None
    shape, classes = ((dataset.input_shape, dataset.num_classes) if dataset
                      else ((32, 32, 3), 10))
    return config, shape, classes


def _build():
    config, shape, classes = _config_and_shape()
    method = methods.get(FLAGS.method)
    model = method.build_model(config, shape, classes)
    if FLAGS.trainable:
        return model
    return method.deployable(model, None)


def _trace():
    config, shape, classes = _config_and_shape()
    method = methods.get(FLAGS.method)
    model = method.build_model(config, shape, classes)
    method.compile_model(model, optimizers.make_optimizer(config, 100),
                         config)
    rng = np.random.default_rng(0)
    x = rng.normal(size=(FLAGS.batch_size, *shape)).astype("float32")
    y = rng.integers(0, classes, FLAGS.batch_size).astype("int32")
    breakdown = benchmarking.step_time_breakdown(model, x, y,
                                                 FLAGS.trace_steps)
    print(f"{FLAGS.method}:{config.arch}, batch {FLAGS.batch_size}, "
          f"{FLAGS.trace_steps} traced steps\n")
    print(breakdown.table(FLAGS.top))


def main(argv):
    del argv
    logging.set_verbosity(logging.WARNING)
    if FLAGS.trace:
        _trace()
        return
    model = keras.models.load_model(FLAGS.model) if FLAGS.model else _build()
    result = profiling.profile(model)
    print(result.table())
    print(f"\n{result.convention}")


if __name__ == "__main__":
    app.run(main)
