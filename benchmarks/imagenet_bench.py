"""ImageNet input-pipeline and training-step benchmarks on this machine.

python -m benchmarks.imagenet_bench --mode=pipeline
python -m benchmarks.imagenet_bench --mode=training --batch_size=16

pipeline: writes Fashion-MNIST images as JPEG TFRecord shards (inception
layout) at the test fixture's size (80x64, cropped to 64) and at ImageNet's
typical size (500x375, cropped to 224), then times the training pipeline
(decode + random-resized-crop + flip + shuffle + batch + normalise) and the
evaluation pipeline (decode + resize + center crop) in images/s, after a
warmup, using every core tf.data gets; and, for the cost of the per-file
checks that name a corrupt file, the same training preprocessing on a plain
`TFRecordDataset(num_parallel_reads) -> parse -> map` reader.
training: ResNet-50 vs Sc-ResNet-50 (k=4/3) training steps at 224x224
(median step, random data), as images/s and their ratio.

Each measurement is one JSON line; the numbers go to benchmarks/imagenet.md.
"""

import json
import os
import tempfile
import time

from absl import app
from absl import flags

os.environ.setdefault("TF_CPP_MIN_LOG_LEVEL", "2")

import ml_collections  # noqa: E402
import numpy as np  # noqa: E402
import tensorflow as tf  # noqa: E402

from keras_compact import data  # noqa: E402
from keras_compact.data import imagenet  # noqa: E402

_MODE = flags.DEFINE_enum("mode", "pipeline", ["pipeline", "training"],
                          "what to measure")
_IMAGES = flags.DEFINE_integer("images", 512, "pipeline: images written")
_SECONDS = flags.DEFINE_float("seconds", 20.0, "pipeline: timed seconds")
_BATCH = flags.DEFINE_integer("batch_size", 64, "batch size")
_STEPS = flags.DEFINE_integer("steps", 3, "training: timed steps")

# (source height, width) -> crop size
_SIZES = {"fixture": ((80, 64), 64), "imagenet": ((375, 500), 224)}


def _report(**row):
    print(json.dumps(row), flush=True)


def _write(folder, shape, count):
    source = data.load("fashion_mnist")
    x = np.repeat(source.x_train[:count], 3, axis=-1)
    x = tf.image.resize(x, shape).numpy().round().astype(np.uint8)
    imagenet.write_shards(x, source.y_train[:count], folder, "train", 8)
    return imagenet.LAYOUTS.get("inception").files(folder, "train")


def _images_per_second(dataset, seconds):
    iterator = iter(dataset)
    for _ in range(3):  # warmup: build, fill the shuffle buffer
        next(iterator)
    count, start = 0, time.perf_counter()
    while time.perf_counter() - start < seconds:
        count += int(next(iterator)[0].shape[0])
    return count / (time.perf_counter() - start)


def _plain_train(files, layout, config, batch_size):
    """The training pipeline without the checked per-file reader."""
    features = {layout.image_key: tf.io.FixedLenFeature([], tf.string),
                layout.label_key: tf.io.FixedLenFeature([], tf.int64)}

    def decode(record):
        example = tf.io.parse_single_example(record, features)
        image = imagenet.random_resized_crop(example[layout.image_key],
                                             config.image_size)
        image = tf.cast(tf.clip_by_value(tf.math.round(image), 0, 255),
                        tf.uint8)
        return image, tf.cast(example[layout.label_key], tf.int32) - 1

    dataset = tf.data.TFRecordDataset(files, num_parallel_reads=8).repeat()
    dataset = dataset.map(decode, num_parallel_calls=tf.data.AUTOTUNE,
                          deterministic=False)
    dataset = dataset.shuffle(config.shuffle_buffer).batch(batch_size)
    return dataset.map(imagenet.normalise).prefetch(tf.data.AUTOTUNE)


def _pipeline():
    layout = imagenet.LAYOUTS.get("inception")
    for name, (shape, size) in _SIZES.items():
        with tempfile.TemporaryDirectory() as folder:
            files = _write(folder, shape, _IMAGES.value)
            config = ml_collections.ConfigDict(dict(
                image_size=size, num_classes=10, first_label=-1,
                shuffle_buffer=256, train_subset=0))
            train = imagenet.train_dataset(files, layout, config,
                                           _BATCH.value)
            evaluation = imagenet.eval_dataset(files, layout, config,
                                               _BATCH.value).repeat()
            plain = _plain_train(files, layout, config, _BATCH.value)
            _report(mode="pipeline", images=name, source=list(shape),
                    crop=size, cores=os.cpu_count(),
                    load_average=os.getloadavg()[0],
                    train_images_per_second=round(_images_per_second(
                        train, _SECONDS.value), 1),
                    eval_images_per_second=round(_images_per_second(
                        evaluation, _SECONDS.value), 1),
                    unchecked_train_images_per_second=round(
                        _images_per_second(plain, _SECONDS.value), 1))


def _training():
    import keras

    from keras_compact import benchmarking
    from keras_compact import models

    speeds = {}
    for arch in ("resnet50", "sc_resnet50"):
        keras.utils.set_random_seed(0)
        model = models.build(arch, (224, 224, 3), 1000)
        model.compile(
            optimizer=keras.optimizers.SGD(0.1, momentum=0.9),
            loss=keras.losses.SparseCategoricalCrossentropy(from_logits=True))
        speeds[arch] = benchmarking.training_throughput(
            model, (224, 224, 3), 1000, batch_size=_BATCH.value,
            steps=_STEPS.value, warmup=1)
        _report(mode="training", arch=arch, batch_size=_BATCH.value,
                load_average=os.getloadavg()[0],
                images_per_second=round(speeds[arch], 2))
    _report(mode="training", ratio_sc_resnet50_over_resnet50=round(
        speeds["sc_resnet50"] / speeds["resnet50"], 3))


def main(argv):
    del argv
    {"pipeline": _pipeline, "training": _training}[_MODE.value]()


if __name__ == "__main__":
    app.run(main)
