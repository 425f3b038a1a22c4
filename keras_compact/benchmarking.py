"""Measurements behind `tools/benchmark.py`: LiteRT latency, training speed.

Timings on shared machines are noisy: report medians of repeats and compare
models as ratios measured in the same run.
"""

import logging
import os
import statistics
import tempfile
import time

import keras
import numpy as np
import tensorflow as tf

from keras_compact import export

log = logging.getLogger("keras_compact")


def litert_latency(model, quantization="float32", repeats=7, invokes=50,
                   threads=1, representative_data=None):
    """Median batch-1 LiteRT latency in ms, and the `.tflite` size in bytes.

    Args:
        model: a Keras model with a fixed input shape (batch excluded).
        quantization: `"float32"`, `"float16"` or `"int8"`.
        repeats, invokes: the median is over `repeats` means of `invokes`.
        threads: interpreter threads (1 is what phone numbers usually use).
        representative_data: calibration inputs for int8 (random if None).
    """
    from ai_edge_litert import interpreter as litert

    shape = tuple(model.inputs[0].shape[1:])
    if representative_data is None and quantization == "int8":
        representative_data = np.random.default_rng(0).normal(
            size=(32, *shape)).astype("float32")
    with tempfile.TemporaryDirectory() as tmp:
        path = export.to_litert(model, os.path.join(tmp, "m.tflite"),
                                quantization, representative_data)
        size = os.path.getsize(path)
        try:
            interpreter = _ready_interpreter(litert, path, threads, shape)
        except RuntimeError as error:
            # XNNPACK refuses some int8 graphs (seen with SlimConv); time
            # LiteRT's builtin kernels instead, as a deployment would.
            log.warning("XNNPACK failed (%s); timing builtin kernels.",
                        str(error).splitlines()[0])
            interpreter = _ready_interpreter(
                litert, path, threads, shape,
                litert.OpResolverType.BUILTIN_WITHOUT_DEFAULT_DELEGATES)
    means = []
    for _ in range(repeats):
        start = time.perf_counter()
        for _ in range(invokes):
            interpreter.invoke()
        means.append((time.perf_counter() - start) / invokes * 1e3)
    return statistics.median(means), size


def _ready_interpreter(litert, path, threads, shape, resolver=None):
    kwargs = {} if resolver is None else {
        "experimental_op_resolver_type": resolver}
    interpreter = litert.Interpreter(model_path=path, num_threads=threads,
                                     **kwargs)
    interpreter.allocate_tensors()
    (inp,) = interpreter.get_input_details()
    interpreter.set_tensor(inp["index"], np.zeros((1, *shape), inp["dtype"]))
    for _ in range(5):
        interpreter.invoke()
    return interpreter


def _synthetic_batches(shape, num_classes, batch_size):
    rng = np.random.default_rng(0)
    x = rng.normal(size=(batch_size, *shape)).astype("float32")
    y = rng.integers(0, num_classes, batch_size).astype("int32")
    return tf.data.Dataset.from_tensors((x, y)).repeat()


class _StepTimer(keras.callbacks.Callback):
    def __init__(self, warmup):
        super().__init__()
        self.warmup = warmup
        self.times = []

    def on_train_batch_begin(self, batch, logs=None):
        self._start = time.perf_counter()

    def on_train_batch_end(self, batch, logs=None):
        if batch >= self.warmup:
            # Reading the loss waits for the step: nothing is left pending.
            float(logs["loss"])
            self.times.append(time.perf_counter() - self._start)


def training_throughput(model, shape, num_classes, batch_size=128, steps=20,
                        warmup=3):
    """Training images/s of a compiled model on random data (median step).

    The model must be compiled (with its method's optimizer and train step);
    `shape` is one input image's shape.
    """
    timer = _StepTimer(warmup)
    model.fit(_synthetic_batches(shape, num_classes, batch_size),
              steps_per_epoch=steps + warmup, epochs=1, verbose=0,
              callbacks=[timer])
    return batch_size / statistics.median(timer.times)


def input_throughput(dataset, epochs=2):
    """Images/s of a batched `tf.data` pipeline (median of full passes)."""
    rates = []
    for _ in range(epochs):
        start, count = time.perf_counter(), 0
        for images, _ in dataset:
            count += int(images.shape[0])
        rates.append(count / (time.perf_counter() - start))
    return statistics.median(rates)


def matmul_peak_flops(size=2048, repeats=10):
    """Measured fp32 FLOP/s of a large TF matmul: the CPU's practical peak."""
    a = tf.random.normal((size, size))
    b = tf.random.normal((size, size))
    matmul = tf.function(lambda a, b: tf.reduce_sum(tf.matmul(a, b)))
    float(matmul(a, b))
    best = 0.0
    for _ in range(repeats):
        start = time.perf_counter()
        float(matmul(a, b))
        best = max(best, 2 * size**3 / (time.perf_counter() - start))
    return best


def interleaved_rates(steps, batch_size, rounds, steps_per_round, warmup=3):
    """Images/s of several training-step callables, measured in turns.

    Args:
        steps: `{name: step}`; each call runs one training step and returns
            its loss as a Python float.
        rounds: each round times `steps_per_round` steps of every entry in
            turn, so machine noise hits all of them alike.

    Returns:
        `{name: median images/s over the rounds}`.
    """
    for step in steps.values():
        for _ in range(warmup):
            step()
    samples = {name: [] for name in steps}
    for _ in range(rounds):
        for name, step in steps.items():
            start = time.perf_counter()
            for _ in range(steps_per_round):
                step()
            samples[name].append(batch_size * steps_per_round
                                 / (time.perf_counter() - start))
    return {name: statistics.median(v) for name, v in samples.items()}


_COLUMNS = [("method", "method"), ("arch", "arch"), ("params", "params"),
            ("macs", "MACs"), ("tflite_bytes", ".tflite bytes"),
            ("latency_ms_float32", "LiteRT f32 ms"),
            ("latency_ms_int8", "LiteRT int8 ms"),
            ("mac_ratio", "MACs / first row"),
            ("latency_ratio", "f32 latency / first row"),
            ("train_images_per_second", "train img/s"),
            ("accuracy", "accuracy")]


def _cell(value):
    if isinstance(value, float):
        return f"{value:.3f}"
    if isinstance(value, int):
        return f"{value:,}"
    return "" if value is None else str(value)


def add_ratios(rows):
    """MACs and float32 latency of each row relative to the first row."""
    for row in rows:
        row["mac_ratio"] = row["macs"] / rows[0]["macs"]
        row["latency_ratio"] = (row["latency_ms_float32"]
                                / rows[0]["latency_ms_float32"])
    return rows


def markdown(rows):
    header = "| " + " | ".join(t for _, t in _COLUMNS) + " |"
    lines = [header, "|" + "---|" * len(_COLUMNS)]
    for row in rows:
        lines.append("| " + " | ".join(_cell(row.get(k)) for k, _ in
                                       _COLUMNS) + " |")
    return "\n".join(lines)
