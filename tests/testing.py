"""Shared test helpers in the keras-hub style (`keras.testing` is private)."""

import json
import os
import socket
import subprocess
import sys
import tempfile

import keras
import numpy as np
from ai_edge_litert import interpreter as litert


def run_layer_test(layer_cls, init_kwargs, input_shape, expected_output_shape,
                   fit=True, expected_num_trainable_weights=None,
                   expected_num_non_trainable_weights=None):
    """Builds, calls, round-trips the config and trains a layer one step.

    Returns the built layer. Checks: `get_config`/`from_config` and
    serialize/deserialize give a layer with the same config; symbolic and
    eager calls agree on the output shape with `compute_output_shape`; the
    built layer has the expected numbers of trainable and non-trainable
    weights (Keras's `run_layer_test` arguments; None skips a check); a
    one-step `fit` of a model around the layer runs and gives a finite loss.
    """
    layer = layer_cls(**init_kwargs)
    config = layer.get_config()
    assert layer_cls.from_config(config).get_config() == config
    restored = keras.saving.deserialize_keras_object(
        keras.saving.serialize_keras_object(layer)
    )
    assert type(restored) is layer_cls
    assert restored.get_config() == config

    symbolic = layer(keras.KerasTensor(input_shape))
    assert tuple(symbolic.shape) == tuple(expected_output_shape)
    assert tuple(layer.compute_output_shape(input_shape)) == tuple(
        expected_output_shape
    )
    eager = layer(np.random.uniform(size=input_shape).astype("float32"))
    assert tuple(eager.shape) == tuple(expected_output_shape)
    for expected, weights in (
            (expected_num_trainable_weights, layer.trainable_weights),
            (expected_num_non_trainable_weights,
             layer.non_trainable_weights)):
        if expected is not None:
            assert len(weights) == expected, [w.path for w in weights]

    if fit:
        inputs = keras.Input(input_shape[1:])
        outputs = layer_cls(**init_kwargs)(inputs)
        model = keras.Model(inputs, outputs)
        model.compile(optimizer="sgd", loss="mse")
        x = np.random.uniform(size=input_shape).astype("float32")
        y = np.random.uniform(size=expected_output_shape).astype("float32")
        history = model.fit(x, y, epochs=1, verbose=0)
        assert np.isfinite(history.history["loss"][0])
    return layer


def run_precision_test(layer_cls, init_kwargs, input_shape,
                       policy="mixed_float16", inputs=None):
    """Every sublayer of a layer built under a per-layer `policy` computes
    in the policy's compute dtype and keeps float variables in its variable
    dtype (keras-hub's `run_precision_test`); the output has the compute
    dtype and is finite. `inputs` default to uniform [0, 1) values of
    `input_shape`. Returns the built layer."""
    policy = keras.dtype_policies.get(policy)
    layer = layer_cls(**init_kwargs, dtype=policy)
    if inputs is None:
        inputs = np.random.uniform(size=input_shape).astype("float32")
    output = layer(inputs)
    assert keras.backend.standardize_dtype(output.dtype) == (
        policy.compute_dtype)
    assert np.isfinite(keras.ops.convert_to_numpy(
        keras.ops.cast(output, "float32"))).all()
    for sublayer in layer._flatten_layers():
        assert sublayer.compute_dtype == policy.compute_dtype, sublayer.name
        assert sublayer.variable_dtype == policy.variable_dtype, (
            sublayer.name)
    for weight in layer.weights:
        if "float" in weight.dtype:
            assert weight.dtype == policy.variable_dtype, weight.path
        else:  # graph tables and masks
            assert weight.dtype in ("int32", "bool"), weight.path
    return layer


def run_model_saving_test(model, input_data, atol=1e-6):
    """Saves `model` as `.keras`, loads it and compares outputs."""
    expected = model(input_data, training=False)
    with tempfile.TemporaryDirectory() as tmp:
        path = os.path.join(tmp, "model.keras")
        model.save(path)
        restored = keras.models.load_model(path)
    assert type(restored) is type(model)
    np.testing.assert_allclose(
        keras.ops.convert_to_numpy(restored(input_data, training=False)),
        keras.ops.convert_to_numpy(expected),
        atol=atol,
    )
    return restored


def run_litert(path, input_data):
    """Runs a `.tflite` file with the LiteRT interpreter, one image a call."""
    interpreter = litert.Interpreter(model_path=path)
    interpreter.allocate_tensors()
    (inp,) = interpreter.get_input_details()
    (out,) = interpreter.get_output_details()
    results = []
    for sample in input_data:
        x = sample[None]
        scale, zero_point = inp["quantization"]
        if inp["dtype"] != np.float32:
            x = np.round(x / scale + zero_point).astype(inp["dtype"])
        interpreter.set_tensor(inp["index"], x)
        interpreter.invoke()
        y = interpreter.get_tensor(out["index"])[0]
        scale, zero_point = out["quantization"]
        if out["dtype"] != np.float32:
            y = (y.astype("float32") - zero_point) * scale
        results.append(y)
    return np.stack(results)


def run_litert_export_test(model, input_data, atol=1e-4):
    """Exports float32 `.tflite` with builtin ops only and compares outputs."""
    from keras_compact import export

    expected = keras.ops.convert_to_numpy(model(input_data, training=False))
    with tempfile.TemporaryDirectory() as tmp:
        path = export.to_litert(model, os.path.join(tmp, "model.tflite"))
        actual = run_litert(path, input_data)
    np.testing.assert_allclose(actual, expected, atol=atol)


ROOT = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))


def _free_port():
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


def start_local_workers(trainer_args, count=2, env=None):
    """Starts `python -m <trainer_args>` as `count` workers of one cluster.

    Each process gets the same localhost cluster in TF_CONFIG (free ports
    chosen now), its own task index and `env` on top of os.environ; returns
    the `subprocess.Popen`s, output piped.
    """
    cluster = {"worker": [f"127.0.0.1:{_free_port()}" for _ in range(count)]}
    workers = []
    for index in range(count):
        worker_env = dict(os.environ, TF_CPP_MIN_LOG_LEVEL="2", **(env or {}),
                          TF_CONFIG=json.dumps({"cluster": cluster, "task": {
                              "type": "worker", "index": index}}))
        workers.append(subprocess.Popen(
            [sys.executable, "-m", *trainer_args], cwd=ROOT, env=worker_env,
            stdout=subprocess.PIPE, stderr=subprocess.STDOUT, text=True))
    return workers


def run_local_workers(trainer_args, count=2, timeout=600):
    """Runs `start_local_workers`; fails with a worker's output tail if any
    exits non-zero."""
    for worker in start_local_workers(trainer_args, count):
        output = worker.communicate(timeout=timeout)[0]
        assert worker.returncode == 0, output[-3000:]


def assert_workers_agree(workdir, build_model):
    """Both workers' resume checkpoints hold identical trainable weights.

    `build_model()` returns a fresh model of the trained architecture.
    """
    from keras_compact import backup

    weights = []
    for task in (0, 1):
        directory = os.path.join(workdir, backup.directory_name(task))
        newest = backup.read_checkpoints(directory)[0]["weights"]
        model = build_model()
        model.load_weights(os.path.join(directory, newest))
        weights.append([w.numpy() for w in model.trainable_weights])
    for a, b in zip(*weights):
        np.testing.assert_array_equal(a, b)


def assert_float32_sums_agree(actual, expected, magnitude, terms):
    """Two float32 evaluations of the same sums agree within their bound.

    Each entry is a sum of at most `terms` products; in any order (blocked,
    FMA) float32 gets within gamma_n = n u / (1 - n u) of the exact sum
    times the sum of the products' magnitudes (Higham, "Accuracy and
    Stability of Numerical Algorithms", 3.1), so two evaluations differ by
    at most twice that. `magnitude` is that sum of magnitudes per entry:
    the same layer run on |inputs| with |weights| (`absolute_twin_output`).
    """
    unit = 2.0**-24
    gamma = terms * unit / (1 - terms * unit)
    error = np.abs(np.asarray(actual, "float64") - np.asarray(expected))
    bound = 2 * gamma * np.asarray(magnitude, "float64")
    assert np.all(error <= bound), float(np.max(error - bound))


def absolute_twin_output(layer, inputs):
    """`layer(|inputs|)` with every weight replaced by its absolute value."""
    weights = layer.get_weights()
    layer.set_weights([np.abs(w) for w in weights])
    try:
        return keras.ops.convert_to_numpy(layer(np.abs(inputs)))
    finally:
        layer.set_weights(weights)
