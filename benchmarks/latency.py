"""LiteRT latency against MACs of the compact nets (issue 9, target 3).

python -m benchmarks.latency [--groups=cifar,trained_int8,pad,attribution,
                              ops,xnet,imagenet] [--repeats=15] [--invokes=40]

Each group's models are exported first, then timed interleaved in one run
(batch 1, 1 thread, XNNPACK unless it refuses the graph): every repeat
times `invokes` calls of each model in turn; the table gives the median and
the minimum of the per-repeat means and their ratios to the group's first
row. Next to the MAC ratio it gives the ratio of "16-lane MACs": conv and
dense MACs with output channels rounded up to a multiple of 16, the width of
XNNPACK's float32 GEMM tiles on this AVX-512 CPU (a conv with 8 output
channels costs as much as one with 16), the number of non-conv ops and of
XNNPACK partitions. Groups:

- cifar: ResNet-20, Sc-ResNet-20 k=4/3 with the graph of SlimConv2D before
  this change ("legacy": channel flip of the data, ReLU after the concat)
  and the current one, APS's ResNet-20 at the shipped 20.6M widths.
- trained_int8: Sc-ResNet-20 after 5 SGD steps at learning rate 0.1 (some
  squeeze units die), int8 without and with
  `export.widen_degenerate_scales`, and ResNet-20.
- pad: ResNet-20 with its explicit PAD before the two strided 3x3 convs vs
  TF "same" padding (a cost probe: not PyTorch's padding).
- xnet: DenseNet-BC-40-24, X-DenseNet masked, masked with sparse-encoded
  weights (`tf.lite.Optimize.EXPERIMENTAL_SPARSITY`), gathered.
- imagenet: ResNet-50 and Sc-ResNet-50 k=4/3 (legacy and current graph) at
  224x224.
- ops: single ops repeated 10 times in a row at 32x32 (per-op cost: the
  difference to the first row, over 10).
- attribution (imagenet_attribution: the same at 224x224 for Sc-ResNet-50):
  Sc-ResNet-20 with SlimConv's re-weighting, then also its folds, replaced
  by cheap stand-ins (cost probes, not the same function).
"""

import collections
import contextlib
import functools
import math
import os
import statistics
import tempfile
import time

from absl import app
from absl import flags

os.environ.setdefault("TF_CPP_MIN_LOG_LEVEL", "3")

import keras  # noqa: E402
import numpy as np  # noqa: E402
from keras import ops  # noqa: E402

from keras_compact import export  # noqa: E402
from keras_compact import layers  # noqa: E402
from keras_compact import models  # noqa: E402
from keras_compact.methods import aps  # noqa: E402
from keras_compact.models import blocks  # noqa: E402

flags.DEFINE_list("groups", ["cifar", "trained_int8", "pad", "attribution",
                             "ops", "xnet"],
                  "Groups to run (see the module docstring).")
flags.DEFINE_integer("repeats", 15, "Interleaved timing rounds.")
flags.DEFINE_integer("invokes", 40, "Invokes per model per round.")
FLAGS = flags.FLAGS

LANES = 16


def _legacy_slimconv_call(self, inputs, training=None):
    """`SlimConv2D.call` before the export-friendly rewrite (same math)."""
    pooled = ops.mean(inputs, axis=(1, 2))
    h = ops.relu(self._squeeze_norm(self.squeeze(pooled), training))
    weights = ops.sigmoid(self.excite(h))[:, None, None, :]
    top = self._fold(inputs * weights)
    bottom = self._fold(inputs * ops.flip(weights, axis=-1))
    top = self.top_bn(self.top_conv(self._pad(top)), training=training)
    bottom = self.bottom_reduce_bn(self.bottom_reduce(bottom),
                                   training=training)
    bottom = self.bottom_conv(self._pad(ops.relu(bottom)))
    bottom = self.bottom_bn(bottom, training=training)
    outputs = ops.concatenate([top, bottom], axis=-1)
    return outputs if self.activation is None else self.activation(outputs)


def _branches(self, top, bottom, training):
    """SlimConv2D's convs on given folds (for the cost probes below)."""
    top = self.top_bn(self.top_conv(self._pad(top)), training=training)
    bottom = self.bottom_reduce_bn(self.bottom_reduce(bottom),
                                   training=training)
    bottom = self.bottom_conv(self._pad(ops.relu(bottom)))
    bottom = self.bottom_bn(bottom, training=training)
    top, bottom = self.activation(top), self.activation(bottom)
    return ops.concatenate([top, bottom], axis=-1)


def _probe_no_squeeze(self, inputs, training=None):
    """Cost probe: the folds without the squeeze and re-weighting."""
    return _branches(self, self._fold(inputs), self._fold(inputs * 0.5),
                     training)


def _probe_convs_only(self, inputs, training=None):
    """Cost probe: channel slices instead of re-weighting and folds."""
    width = inputs.shape[-1] // self.n
    return _branches(self, inputs[..., :width],
                     inputs[..., width:2 * width], training)


@contextlib.contextmanager
def _patched(owner, name, value):
    old = getattr(owner, name)
    setattr(owner, name, value)
    try:
        yield
    finally:
        setattr(owner, name, old)


def _same_padding_conv(x, filters, kernel_size, strides=1, groups=1,
                       use_bias=False, name=None):
    del groups
    return keras.layers.Conv2D(filters, kernel_size, strides=strides,
                               padding="same", use_bias=use_bias,
                               name=name)(x)


def _calibration(shape):
    return np.random.default_rng(0).normal(size=(32, *shape)).astype(
        "float32")


def _tflite(model, path, quantization, widen=True):
    if widen or quantization != "int8":
        return export.to_litert(model, path, quantization,
                                _calibration(model.inputs[0].shape[1:]))
    kwargs = export.LITERT_FORMATS.get("int8")(
        _calibration(model.inputs[0].shape[1:]))
    model.export(path, format="litert", verbose=False, **kwargs)
    return path


def _interpreter(path):
    from ai_edge_litert import interpreter as litert

    try:
        runner = litert.Interpreter(model_path=path, num_threads=1)
        runner.allocate_tensors()
        xnnpack = True
    except RuntimeError:
        runner = litert.Interpreter(
            model_path=path, num_threads=1, experimental_op_resolver_type=(
                litert.OpResolverType.BUILTIN_WITHOUT_DEFAULT_DELEGATES))
        runner.allocate_tensors()
        xnnpack = False
    (inp,) = runner.get_input_details()
    runner.set_tensor(inp["index"], np.zeros(inp["shape"], inp["dtype"]))
    for _ in range(3):
        runner.invoke()
    return runner, xnnpack


def graph_stats(path):
    """MACs, 16-lane MACs and non-conv op count of a `.tflite` graph."""
    from ai_edge_litert import interpreter as litert

    runner = litert.Interpreter(
        model_path=path, experimental_op_resolver_type=(
            litert.OpResolverType.BUILTIN_WITHOUT_DEFAULT_DELEGATES))
    runner.allocate_tensors()
    shapes = {t["index"]: [int(d) for d in t["shape"]]
              for t in runner.get_tensor_details()}
    macs = lane_macs = other = 0
    for op in runner._get_ops_details():
        if op["op_name"] not in ("CONV_2D", "FULLY_CONNECTED"):
            other += 1
            continue
        filters = shapes[op["inputs"][1]]
        positions = math.prod(shapes[op["outputs"][0]][:-1])
        per_output = positions * math.prod(filters[1:])
        macs += per_output * filters[0]
        lane_macs += per_output * math.ceil(filters[0] / LANES) * LANES
    return macs, lane_macs, other


def _time(rows, clock=time.perf_counter):
    """Interleaved timing; adds median/min ms and XNNPACK use to rows.

    `clock=time.process_time` counts only this process's CPU time: on a
    shared machine it leaves out the time other jobs hold the cores.
    """
    runners = []
    for row in rows:
        runner, row["xnnpack"] = _interpreter(row["path"])
        runners.append(runner)
        partitions = collections.Counter(
            op["op_name"] for op in runner._get_ops_details())["DELEGATE"]
        row["partitions"] = partitions if row["xnnpack"] else 0
    means = [[] for _ in rows]
    for _ in range(FLAGS.repeats):
        for runner, samples in zip(runners, means):
            start = clock()
            for _ in range(FLAGS.invokes):
                runner.invoke()
            samples.append((clock() - start) / FLAGS.invokes * 1e3)
    for row, samples in zip(rows, means):
        row["median"] = statistics.median(samples)
        row["min"] = min(samples)


def _table(title, rows):
    base = rows[0]
    print(f"\n### {title}\n")
    print("| model | quant | MACs | MAC ratio | 16-lane MAC ratio | non-conv "
          "ops | XNNPACK partitions | ms median / min | latency ratio "
          "median / min |")
    print("|---|---|---:|---:|---:|---:|---:|---:|---:|")
    for row in rows:
        macs, lanes, other = graph_stats(row["path"])
        base_macs, base_lanes, _ = graph_stats(base["path"])
        print(f"| {row['name']} | {row['quant']} | {macs:,} | "
              f"{macs / base_macs:.3f} | {lanes / base_lanes:.3f} | {other} "
              f"| {row['partitions'] or 'refused: builtin kernels'} | "
              f"{row['median']:.3f} / {row['min']:.3f} | "
              f"{row['median'] / base['median']:.3f} / "
              f"{row['min'] / base['min']:.3f} |", flush=True)


def _run(title, entries, tmp, quantizations=("float32", "int8")):
    """entries: (name, model builder, export kwargs); one table per quant."""
    built = [(name, build(), kwargs) for name, build, kwargs in entries]
    for quantization in quantizations:
        rows = []
        for index, (name, model, kwargs) in enumerate(built):
            path = os.path.join(tmp, f"{title}_{index}_{quantization}.tflite")
            exporter = kwargs.get("exporter", _tflite)
            exporter(model, path, quantization,
                     **{k: v for k, v in kwargs.items() if k != "exporter"})
            rows.append({"name": name, "quant": quantization, "path": path})
        _time(rows)
        _table(f"{title}, {quantization}", rows)


def _build(arch, shape=(32, 32, 3), classes=10, **kwargs):
    def builder():
        keras.utils.set_random_seed(0)
        return models.build(arch, shape, classes, **kwargs)

    return builder


def _legacy_export(model, path, quantization):
    # Export traces every layer's call: the patch decides the graph.
    with _patched(layers.SlimConv2D, "call", _legacy_slimconv_call):
        _tflite(model, path, quantization)


LEGACY = {"exporter": _legacy_export}


def _probe(call):
    def exporter(model, path, quantization):
        with _patched(layers.SlimConv2D, "call", call):
            _tflite(model, path, quantization)

    return {"exporter": exporter}


def _chain(make_layer, channels, repeats=10, side=32):
    """`repeats` copies of one op in a row (per-op cost = slope)."""

    def builder():
        inputs = x = keras.Input((side, side, channels))
        for _ in range(repeats):
            x = make_layer()(x)
        return keras.Model(inputs, x)

    return builder


def _conv(channels, kernel=3):
    return _chain(lambda: keras.layers.Conv2D(
        channels, kernel, padding="same", activation="relu"), channels)


class _Reweight(keras.layers.Layer):
    """A squeeze-style re-weighting: mean, sigmoid, multiply."""

    def call(self, x):
        return x * ops.sigmoid(ops.mean(x, axis=(1, 2), keepdims=True))


class _SplitAddConcat(keras.layers.Layer):
    """A two-chunk fold and a concat back to the input width."""

    def call(self, x):
        a, b = ops.split(x, 2, axis=-1)
        return ops.concatenate([a + b, b], axis=-1)


@functools.cache
def _trained_sc_resnet20():
    keras.utils.set_random_seed(1)
    model = models.build("sc_resnet20", (32, 32, 3), 10)
    model.compile(keras.optimizers.SGD(0.1, momentum=0.9),
                  keras.losses.SparseCategoricalCrossentropy(
                      from_logits=True))
    rng = np.random.default_rng(1)
    model.fit(rng.normal(size=(128, 32, 32, 3)).astype("float32"),
              rng.integers(0, 10, 128), batch_size=128, epochs=5, verbose=0)
    return model


def _no_pad_resnet20():
    with _patched(blocks.basic_block, "__defaults__", (_same_padding_conv,)):
        return _build("resnet20")()


def _sparse_export(model, path, quantization):
    import tensorflow as tf

    kwargs = export.LITERT_FORMATS.get(quantization)(
        _calibration(model.inputs[0].shape[1:]))
    kwargs["optimizations"] = [*kwargs.get("optimizations", []),
                               tf.lite.Optimize.EXPERIMENTAL_SPARSITY]
    model.export(path, format="litert", verbose=False, **kwargs)


def _gathered_x_densenet():
    return layers.gathered_model(_build("x_densenet_bc_40_24")())


GROUPS = {
    "ops": lambda tmp: _run("One op repeated 10 times at 32x32 (minus the "
                            "first row, / 10 = one op)", [
        ("one 1x1 conv 16->16 (overhead)", _chain(
            lambda: keras.layers.Conv2D(16, 1), 16, repeats=1), {}),
        ("3x3 conv 16->16", _conv(16), {}),
        ("3x3 conv 8->8", _conv(8), {}),
        ("3x3 conv 4->4", _conv(4), {}),
        ("1x1 conv 16->16", _conv(16, 1), {}),
        ("re-weighting (mean, sigmoid, mul), 16 ch", _chain(_Reweight, 16),
         {}),
        ("split, add, concat, 16 ch", _chain(_SplitAddConcat, 16), {}),
    ], tmp),
    "attribution": lambda tmp: _run("Where Sc-ResNet-20's time goes", [
        ("resnet20", _build("resnet20"), {}),
        ("sc_resnet20 k=4/3", _build("sc_resnet20"), {}),
        ("probe: no squeeze / re-weighting", _build("sc_resnet20"),
         _probe(_probe_no_squeeze)),
        ("probe: convs only (no re-weighting, no folds)",
         _build("sc_resnet20"), _probe(_probe_convs_only)),
    ], tmp),
    "cifar": lambda tmp: _run("CIFAR ResNet-20 family", [
        ("resnet20", _build("resnet20"), {}),
        ("sc_resnet20 k=4/3, legacy graph", _build("sc_resnet20"), LEGACY),
        ("sc_resnet20 k=4/3", _build("sc_resnet20"), {}),
        ("aps resnet20 20.6M widths", lambda: aps.decode(
            aps.SEARCHED_WIDTHS["resnet20_20.6M"]), {}),
    ], tmp),
    "trained_int8": lambda tmp: _run("Sc-ResNet-20 after 5 steps at lr 0.1", [
        ("resnet20", _build("resnet20"), {}),
        ("sc_resnet20, int8 scales as calibrated", _trained_sc_resnet20,
         {"widen": False}),
        ("sc_resnet20, degenerate scales widened", _trained_sc_resnet20, {}),
    ], tmp, ("int8",)),
    "pad": lambda tmp: _run("PAD before strided convs", [
        ("resnet20 (explicit PAD, PyTorch padding)", _build("resnet20"), {}),
        ("resnet20 with TF 'same' (probe only)", _no_pad_resnet20, {}),
    ], tmp),
    "xnet": lambda tmp: _run("X-DenseNet-BC-40-24 forms", [
        ("densenet_bc_40_24", _build("densenet_bc_40_24"), {}),
        ("x_densenet masked", _build("x_densenet_bc_40_24"), {}),
        ("x_densenet masked, sparse-encoded", _build("x_densenet_bc_40_24"),
         {"exporter": _sparse_export}),
        ("x_densenet gathered", _gathered_x_densenet, {}),
    ], tmp, ("float32",)),
    "imagenet_attribution": lambda tmp: _run(
        "Where Sc-ResNet-50's time goes, 224x224", [
            ("resnet50", _build("resnet50", (224, 224, 3), 1000), {}),
            ("sc_resnet50 k=4/3", _build("sc_resnet50", (224, 224, 3), 1000),
             {}),
            ("probe: no squeeze / re-weighting",
             _build("sc_resnet50", (224, 224, 3), 1000),
             _probe(_probe_no_squeeze)),
            ("probe: convs only (no re-weighting, no folds)",
             _build("sc_resnet50", (224, 224, 3), 1000),
             _probe(_probe_convs_only)),
        ], tmp),
    "imagenet": lambda tmp: _run("ImageNet 224x224", [
        ("resnet50", _build("resnet50", (224, 224, 3), 1000), {}),
        ("sc_resnet50 k=4/3, legacy graph",
         _build("sc_resnet50", (224, 224, 3), 1000), LEGACY),
        ("sc_resnet50 k=4/3", _build("sc_resnet50", (224, 224, 3), 1000),
         {}),
    ], tmp),
}


def main(argv):
    del argv
    with tempfile.TemporaryDirectory() as tmp:
        for group in FLAGS.groups:
            GROUPS[group](tmp)


if __name__ == "__main__":
    app.run(main)
