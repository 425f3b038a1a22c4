"""Benchmark measurements and the command-line tools."""

import os
import subprocess
import sys

import keras
import numpy as np

from keras_compact import benchmarking
from tests.test_training import ROOT


def _tiny_model():
    inputs = keras.Input((8, 8, 3))
    x = keras.layers.Conv2D(4, 3, padding="same")(inputs)
    x = keras.layers.GlobalAveragePooling2D()(x)
    return keras.Model(inputs, keras.layers.Dense(10)(x))


def test_litert_latency_and_size():
    model = _tiny_model()
    latency, size = benchmarking.litert_latency(model, repeats=2, invokes=5)
    assert 0 < latency < 100
    latency8, size8 = benchmarking.litert_latency(model, "int8", repeats=2,
                                                  invokes=5)
    assert 0 < latency8 and 0 < size8 < size


def test_training_throughput_consumes_the_loss():
    model = _tiny_model()
    model.compile("sgd", keras.losses.SparseCategoricalCrossentropy(True))
    before = [w.numpy() for w in model.trainable_weights]
    rate = benchmarking.training_throughput(model, (8, 8, 3), 10,
                                            batch_size=16, steps=3, warmup=1)
    assert rate > 0
    after = model.trainable_weights
    assert any(not np.allclose(a, b.numpy()) for a, b in zip(before, after))


def test_benchmark_table_ratios():
    rows = benchmarking.add_ratios([
        {"method": "baseline", "arch": "a", "macs": 100,
         "latency_ms_float32": 2.0},
        {"method": "m", "arch": "b", "macs": 25, "latency_ms_float32": 1.0,
         "accuracy": 0.5}])
    table = benchmarking.markdown(rows)
    assert "| m | b |" in table and "0.250" in table and "0.500" in table


def test_profile_tool_prints_the_total():
    result = subprocess.run(
        [sys.executable, "-m", "tools.profile", "--arch=resnet56"], cwd=ROOT,
        capture_output=True, text=True, timeout=300,
        env=dict(os.environ, TF_CPP_MIN_LOG_LEVEL="3"))
    assert result.returncode == 0, result.stderr[-2000:]
    assert "| total | | | 855,770 | 125,747,840 |" in result.stdout
