"""Per-op LiteRT cost, float32 against int8 (issue 19: why int8 is slower).

nice -n 10 python -m benchmarks.int8_op_probe [--repeats=9 --invokes=100]

For a 3x3 depthwise conv and a 1x1 conv 16 -> 16 at 28x28x16 (the ops of
OD's Shift-ResNet-20 at Fashion-MNIST size): a chain of 1 and of 11 such
ops, random weights, int8 calibrated on 16 random inputs, all files timed
interleaved (benchmarks/latency.py's protocol, process CPU time); prints
the per-op cost, (min of the 11-op chain - min of the 1-op one) / 10.
"""

import os
import tempfile
import time

from absl import app

os.environ.setdefault("TF_CPP_MIN_LOG_LEVEL", "3")

import keras  # noqa: E402
import numpy as np  # noqa: E402

from benchmarks import latency  # noqa: E402  (timing protocol and flags)
from keras_compact import export  # noqa: E402

SHAPE = (28, 28, 16)
OPS = {"depthwise 3x3": lambda: keras.layers.DepthwiseConv2D(
           3, padding="same"),
       "conv 1x1 16->16": lambda: keras.layers.Conv2D(16, 1)}


def _chain(make, count):
    inputs = keras.Input(SHAPE)
    x = inputs
    for _ in range(count):
        x = make()(x)
    return keras.Model(inputs, x)


def main(argv):
    del argv
    calibration = np.random.default_rng(0).normal(
        size=(16, *SHAPE)).astype("float32")
    rows = []
    with tempfile.TemporaryDirectory() as tmp:
        for name, make in OPS.items():
            for count in (1, 11):
                model = _chain(make, count)
                for quantization in ("float32", "int8"):
                    path = export.to_litert(
                        model, os.path.join(tmp, f"{len(rows)}.tflite"),
                        quantization, calibration)
                    rows.append({"path": path, "key": (name, count,
                                                       quantization)})
        latency._time(rows, time.process_time)
    best = {row["key"]: row["min"] for row in rows}
    print("| op | float32 us | int8 us |\n|---|---:|---:|")
    for name in OPS:
        cost = [(best[name, 11, q] - best[name, 1, q]) / 10 * 1e3
                for q in ("float32", "int8")]
        print(f"| {name} | {cost[0]:.2f} | {cost[1]:.2f} |")


if __name__ == "__main__":
    app.run(main)
