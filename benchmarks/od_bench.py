"""Benchmarks of `--method=od`; the results are in benchmarks/od.md.

Training speed of the OD model (N students + online teacher) against one
student trained alone, same batch, synthetic in-memory data, measured in
alternating epochs so both see the same machine load:

    python benchmarks/od_bench.py speed --arch=resnet56 --block=shift

Accuracy on Fashion-MNIST: one cheap student trained alone with
cross-entropy vs the best OD student (picked on the validation split), same
recipe and epochs, both evaluated on the test set:

    python benchmarks/od_bench.py fashion --epochs=3 --train_subset=10000
"""

import argparse
import time

import keras
import numpy as np
import tensorflow as tf

from configs import od as od_config
from keras_compact import methods
from keras_compact import models
from keras_compact.methods import od


def _config(args, **fields):
    config = od_config.get_config()
    config.update(arch=args.arch, block=args.block, students=args.students,
                  batch_size=args.batch, **fields)
    return config


def _student_alone(config, input_shape, num_classes):
    """One student of the OD recipe, trained by plain cross-entropy."""
    block = od.BLOCKS.get(config.block)(config)
    return models.registry.ARCHITECTURES.get(config.arch)(
        input_shape=input_shape, num_classes=num_classes, block=block,
        name="alone")


def _compile_alone(model, optimizer):
    model.compile(
        optimizer=optimizer,
        loss=keras.losses.SparseCategoricalCrossentropy(from_logits=True),
        metrics=["accuracy"])


def speed(args):
    config = _config(args)
    shape, steps = (32, 32, 3), args.steps
    rng = np.random.default_rng(0)
    x = rng.normal(size=(args.batch * steps, *shape)).astype("float32")
    y = rng.integers(0, 10, len(x)).astype("int32")
    data = tf.data.Dataset.from_tensor_slices((x, y)).batch(
        args.batch, drop_remainder=True).cache()

    keras.utils.set_random_seed(0)
    alone = _student_alone(config, shape, 10)
    _compile_alone(alone, keras.optimizers.SGD(0.1, momentum=0.9))
    ensemble = methods.get("od").build_model(config, shape, 10)
    methods.get("od").compile_model(
        ensemble, keras.optimizers.SGD(0.1, momentum=0.9), config)
    seconds = {"alone": [], "od": []}
    for repeat in range(args.repeats + 1):  # the first epoch traces
        for name, model in (("alone", alone), ("od", ensemble)):
            start = time.perf_counter()
            model.fit(data, epochs=1, verbose=0)
            if repeat:
                seconds[name].append(time.perf_counter() - start)
    rate = {k: args.batch * steps / np.median(v) for k, v in seconds.items()}
    print(f"| {config.arch} {config.block} | {config.students} | "
          f"{args.batch} | {rate['alone']:.1f} | {rate['od']:.1f} | "
          f"{rate['alone'] / rate['od']:.2f}x |")


def fashion(args):
    from keras_compact import data as data_lib
    from keras_compact import optimizers

    config = _config(args, dataset="fashion_mnist", epochs=args.epochs,
                     decay_epochs=tuple(args.decay_epochs),
                     train_subset=args.train_subset)
    dataset = data_lib.load("fashion_mnist", "")
    splits = data_lib.make_splits(
        dataset, config.batch_size, validation_split=config.validation_split,
        train_subset=config.train_subset, augment=config.augment, seed=0)
    steps = splits.train_size // config.batch_size

    def train(model, compile_fn):
        compile_fn(model, optimizers.make_optimizer(config, steps))
        start = time.perf_counter()
        model.fit(splits.train, epochs=config.epochs, steps_per_epoch=steps,
                  verbose=2)
        return time.perf_counter() - start

    keras.utils.set_random_seed(0)
    alone = _student_alone(config, splits.input_shape, splits.num_classes)
    alone_seconds = train(alone, _compile_alone)
    alone_accuracy = alone.evaluate(splits.test, return_dict=True,
                                    verbose=0)["accuracy"]

    keras.utils.set_random_seed(0)
    method = methods.get("od")
    ensemble = method.build_model(config, splits.input_shape,
                                  splits.num_classes)
    od_seconds = train(ensemble, lambda model, optimizer:
                       method.compile_model(model, optimizer, config))
    test = ensemble.evaluate(splits.test, return_dict=True, verbose=0)
    best = ensemble.select_student(splits.validation)
    student_test = [test[m.name] for m in ensemble.student_accuracy]
    print(f"| {config.arch} {config.block} | {config.epochs} | "
          f"{splits.train_size} | {alone_accuracy:.4f} | "
          f"{student_test[best]:.4f} (student {best + 1}) | "
          f"{' / '.join(f'{a:.4f}' for a in student_test)} | "
          f"{test['teacher_accuracy']:.4f} | {alone_seconds:.0f} s | "
          f"{od_seconds:.0f} s |")


def main():
    parser = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    parser.add_argument("what", choices=("speed", "fashion"))
    parser.add_argument("--arch", default="resnet56")
    parser.add_argument("--block", default="shift")
    parser.add_argument("--students", type=int, default=4)
    parser.add_argument("--batch", type=int, default=128)
    parser.add_argument("--steps", type=int, default=8,
                        help="speed: steps per timed epoch")
    parser.add_argument("--repeats", type=int, default=3,
                        help="speed: timed epochs per model (median)")
    parser.add_argument("--epochs", type=int, default=3)
    parser.add_argument("--decay_epochs", type=int, nargs="*", default=[2])
    parser.add_argument("--train_subset", type=int, default=10000)
    args = parser.parse_args()
    {"speed": speed, "fashion": fashion}[args.what](args)


if __name__ == "__main__":
    main()
