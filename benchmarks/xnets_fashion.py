"""Short Fashion-MNIST run: X-DenseNet-BC vs the dense DenseNet-BC.

python benchmarks/xnets_fashion.py --arch=densenet_bc_40_24 --epochs=2 \
    --train_subset=3000 --test_subset=2000

Same depth, growth, data, seed and recipe for both (`optimizers.L2SGD`:
Nesterov 0.1, coupled L2 1e-4; batch 64; no augmentation). The X-Net is
trained and evaluated in its masked form (the gathered form computes the
same function, tests/test_xnets.py, but its per-channel gather is slow on
CPU). A sanity run on a shared CPU, not a reproduction of the paper's
300-epoch CIFAR numbers.
"""

import os
import time

from absl import app
from absl import flags

os.environ.setdefault("TF_CPP_MIN_LOG_LEVEL", "3")

import keras  # noqa: E402
import numpy as np  # noqa: E402

from keras_compact import data  # noqa: E402
from keras_compact import models  # noqa: E402
from keras_compact import optimizers  # noqa: E402
from keras_compact import profiling  # noqa: E402

flags.DEFINE_string("arch", "densenet_bc_40_24", "DenseNet-BC row.")
flags.DEFINE_integer("epochs", 2, "Epochs for both models.")
flags.DEFINE_integer("train_subset", 3000, "First N training images.")
flags.DEFINE_integer("test_subset", 2000, "First N test images.")
flags.DEFINE_integer("expand_size", 2, "X-Nets ES.")
FLAGS = flags.FLAGS


def _run(name, model, x, y, x_test, y_test):
    model.compile(optimizers.L2SGD(l2=1e-4, learning_rate=0.1, momentum=0.9,
                                   nesterov=True),
                  keras.losses.SparseCategoricalCrossentropy(
                      from_logits=True), metrics=["accuracy"])
    start = time.perf_counter()
    model.fit(x, y, batch_size=64, epochs=FLAGS.epochs, verbose=0,
              shuffle=True)
    seconds = time.perf_counter() - start
    _, accuracy = model.evaluate(x_test, y_test, batch_size=100, verbose=0)
    result = profiling.profile(model)
    print(f"| {name} | {result.params:,} | {result.macs / 1e6:.1f}M | "
          f"{accuracy:.4f} | {seconds:.0f} |", flush=True)


def main(argv):
    del argv
    dataset = data.load("fashion_mnist")
    mean, std = np.array(dataset.mean), np.array(dataset.std)

    def prep(images):
        return ((images.astype("float32") - mean) / std).astype("float32")

    x = prep(dataset.x_train[:FLAGS.train_subset])
    y = dataset.y_train[:FLAGS.train_subset]
    x_test = prep(dataset.x_test[:FLAGS.test_subset])
    y_test = dataset.y_test[:FLAGS.test_subset]
    shape = dataset.input_shape
    print(f"{FLAGS.arch}, Fashion-MNIST {len(x)} train / {len(x_test)} test "
          f"images, {FLAGS.epochs} epochs\n")
    print("| model | params | MACs | test accuracy | train s |")
    print("|---|---:|---:|---:|---:|")
    keras.utils.set_random_seed(0)
    _run("dense", models.build(FLAGS.arch, shape, 10), x, y, x_test, y_test)
    keras.utils.set_random_seed(0)
    _run(f"X (ES={FLAGS.expand_size}, masked)",
         models.build(FLAGS.arch, shape, 10, density=1 / FLAGS.expand_size),
         x, y, x_test, y_test)


if __name__ == "__main__":
    app.run(main)
