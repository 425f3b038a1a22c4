"""ExpandNets benchmarks: LiteRT latency, training throughput, Fashion-MNIST.

python -m benchmarks.expandnets_bench --mode=latency
python -m benchmarks.expandnets_bench --mode=throughput
python -m benchmarks.expandnets_bench --mode=fashion --epochs=3 \
    --train_subset=20000

Each mode prints one JSON line per measurement; the numbers go to
benchmarks/expandnets.md with the command that produced them.
"""

import gzip
import json
import os
import tempfile
import time

import numpy as np
from absl import app
from absl import flags

_MODE = flags.DEFINE_enum("mode", "latency",
                          ["latency", "throughput", "fashion"], "what to run")
_EPOCHS = flags.DEFINE_integer("epochs", 3, "fashion: training epochs")
_TRAIN_SUBSET = flags.DEFINE_integer(
    "train_subset", 0, "fashion: first N training images (0: all 60k)")
_RUNS = flags.DEFINE_integer("runs", 300, "latency: timed invocations")
_FASHION_DIR = flags.DEFINE_string(
    "fashion_dir", "/usr/share/datasets/fashion-mnist", "IDX .gz files")


def _report(**row):
    print(json.dumps(row), flush=True)


def _litert_latency(paths, runs):
    """Median ms per batch-1 call of each file, interleaved, 1 thread."""
    from ai_edge_litert.interpreter import Interpreter

    interpreters = []
    for path in paths:
        interpreter = Interpreter(model_path=path, num_threads=1)
        interpreter.allocate_tensors()
        detail = interpreter.get_input_details()[0]
        x = np.random.default_rng(0).normal(size=detail["shape"]).astype(
            "float32")
        interpreter.set_tensor(detail["index"], x)
        for _ in range(20):
            interpreter.invoke()
        interpreters.append(interpreter)
    times = [[] for _ in paths]
    for _ in range(runs):
        for interpreter, samples in zip(interpreters, times):
            start = time.perf_counter()
            interpreter.invoke()
            samples.append(time.perf_counter() - start)
    return [1e3 * float(np.median(t)) for t in times]


def latency():
    from keras_compact import export
    from keras_compact import models
    from keras_compact.methods import expandnet

    for arch, shape, classes, expand in (
            ("smallnet7", (32, 32, 3), 10, "ck+fc"),
            ("mobilenet_v2", (224, 224, 3), 1000, "cl")):
        expanded = expandnet.build_expanded(arch, shape, classes, expand)
        nets = {"contracted": expandnet.contract(expanded),
                "native": models.build(arch, shape, classes),
                "expanded": expanded}
        with tempfile.TemporaryDirectory() as tmp:
            paths = {name: export.to_litert(net, os.path.join(
                tmp, f"{name}.tflite")) for name, net in nets.items()}
            ms = _litert_latency(list(paths.values()), _RUNS.value)
            sizes = {n: os.path.getsize(p) for n, p in paths.items()}
        result = dict(zip(paths, ms))
        _report(bench="litert_latency_ms", arch=arch, expand=expand,
                **result, ratio_contracted_native=result["contracted"]
                / result["native"], bytes=sizes)


def throughput():
    import keras

    from keras_compact import models
    from keras_compact.methods import expandnet

    rng = np.random.default_rng(0)
    x = rng.normal(size=(128 * 30, 32, 32, 3)).astype("float32")
    y = rng.integers(0, 10, len(x)).astype("int32")
    rates = {}
    for expand in ("none", "fc", "ck", "ck+fc", "cl+fc"):
        model = (models.build("smallnet7", (32, 32, 3), 10)
                 if expand == "none" else
                 expandnet.build_expanded("smallnet7", (32, 32, 3), 10,
                                          expand))
        model.compile(keras.optimizers.SGD(0.01, momentum=0.9),
                      keras.losses.SparseCategoricalCrossentropy(
                          from_logits=True))
        model.fit(x[:128 * 5], y[:128 * 5], batch_size=128, verbose=0)
        start = time.perf_counter()
        model.fit(x, y, batch_size=128, verbose=0)
        rates[expand] = len(x) / (time.perf_counter() - start)
        _report(bench="train_images_per_s", arch="smallnet7", expand=expand,
                images_per_s=round(rates[expand], 1),
                relative_to_compact=round(rates[expand] / rates["none"], 3))


def _read_idx(path):
    with gzip.open(path, "rb") as f:
        raw = f.read()
    ndim = raw[3]
    shape = [int.from_bytes(raw[4 + 4 * i:8 + 4 * i], "big")
             for i in range(ndim)]
    return np.frombuffer(raw, np.uint8, offset=4 + 4 * ndim).reshape(shape)


def fashion():
    import keras

    from keras_compact import models
    from keras_compact.methods import expandnet

    def load(prefix):
        images = _read_idx(os.path.join(
            _FASHION_DIR.value, f"{prefix}-images-idx3-ubyte.gz"))
        labels = _read_idx(os.path.join(
            _FASHION_DIR.value, f"{prefix}-labels-idx1-ubyte.gz"))
        return images[..., None].astype("float32"), labels.astype("int32")

    x_train, y_train = load("train")
    if _TRAIN_SUBSET.value:
        x_train = x_train[:_TRAIN_SUBSET.value]
        y_train = y_train[:_TRAIN_SUBSET.value]
    x_test, y_test = load("t10k")
    mean, std = x_train.mean(), x_train.std()
    x_train, x_test = (x_train - mean) / std, (x_test - mean) / std
    for expand in ("none", "ck+fc", "cl+fc"):
        keras.utils.set_random_seed(0)
        if expand == "none":
            model = models.build("smallnet7", (28, 28, 1), 10)
        else:
            model = expandnet.build_expanded("smallnet7", (28, 28, 1), 10,
                                             expand)
        # The paper's CIFAR recipe: SGD 0.01, momentum 0.9, no decay.
        model.compile(keras.optimizers.SGD(0.01, momentum=0.9),
                      keras.losses.SparseCategoricalCrossentropy(
                          from_logits=True), metrics=["accuracy"])
        start = time.perf_counter()
        model.fit(x_train, y_train, batch_size=128, epochs=_EPOCHS.value,
                  verbose=2)
        seconds = time.perf_counter() - start
        deployed = (model if expand == "none"
                    else expandnet.contract(model))
        deployed.compile(loss=keras.losses.SparseCategoricalCrossentropy(
            from_logits=True), metrics=["accuracy"])
        _, accuracy = deployed.evaluate(x_test, y_test, verbose=0)
        _, trained_accuracy = model.evaluate(x_test, y_test, verbose=0)
        _report(bench="fashion_mnist", arch="smallnet7", expand=expand,
                epochs=_EPOCHS.value, train_images=len(x_train), seed=0,
                test_accuracy_deployed=round(float(accuracy), 4),
                test_accuracy_as_trained=round(float(trained_accuracy), 4),
                train_seconds=round(seconds, 1))


def main(argv):
    del argv
    {"latency": latency, "throughput": throughput,
     "fashion": fashion}[_MODE.value]()


if __name__ == "__main__":
    app.run(main)
