"""Prints params and MACs per layer of an architecture or a saved model.

  python -m tools.profile --arch=resnet56
  python -m tools.profile --method=baseline --arch=resnet20 --dataset=cifar100
  python -m tools.profile --model=runs/baseline/deployable.keras
"""

import os

from absl import app
from absl import flags
from absl import logging

os.environ.setdefault("TF_CPP_MIN_LOG_LEVEL", "2")

import keras  # noqa: E402

from configs import loader  # noqa: E402
from keras_compact import data  # noqa: E402
from keras_compact import methods  # noqa: E402
from keras_compact import profiling  # noqa: E402

FLAGS = flags.FLAGS
flags.DEFINE_string("model", "", "A saved .keras model to profile.")
flags.DEFINE_string("method", "baseline", "Method whose model is built.")
flags.DEFINE_string("arch", "", "Architecture (default: the recipe's).")
flags.DEFINE_string("dataset", "cifar10", "Sets input shape and classes.")
flags.DEFINE_bool("trainable", False, "Profile the model as trained (e.g. "
                  "expanded), not its deployable form.")


def _build():
    config = loader.load(FLAGS.method,
                         arg=f"arch={FLAGS.arch}" if FLAGS.arch else "")
    dataset = data.load(FLAGS.dataset) if FLAGS.dataset != "cifar10" else None
    shape, classes = ((dataset.input_shape, dataset.num_classes) if dataset
                      else ((32, 32, 3), 10))
    method = methods.get(FLAGS.method)
    model = method.build_model(config, shape, classes)
    if FLAGS.trainable:
        return model
    return method.deployable(model, None)


def main(argv):
    del argv
    logging.set_verbosity(logging.WARNING)
    model = keras.models.load_model(FLAGS.model) if FLAGS.model else _build()
    result = profiling.profile(model)
    print(result.table())
    print(f"\n{result.convention}")


if __name__ == "__main__":
    app.run(main)
