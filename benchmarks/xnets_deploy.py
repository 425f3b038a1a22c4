"""X-Net deployables against their dense nets in LiteRT (issue 14).

python -m benchmarks.xnets_deploy [--pairs=densenet,vgg,mobilenet2,
    mobilenet4,mobilenet8,mobilenet16,resnet18] [--quant=float32,int8]
    (also mobilenet{4,8,16}_shuffle: the shuffle variant graph)
    [--repeats=9 --invokes=3] [--train_rounds=0] [--dir=/tmp/xnets_tflite]

For each pair: the dense net, the X-Net's deployable
(`layers.deployable_model`, the forms `--method=xnet` exports) and, in
float32, the same deployable with sparse-encoded weights
(`tf.lite.Optimize.EXPERIMENTAL_SPARSITY`: DENSIFY ops, which make the
XNNPACK delegate hint its sparse NCHW inference). Random weights, random BN
statistics (the selection and the timing do not depend on training).
Each `.tflite` file's conversion time is printed (files and times are kept
in `--dir` and reused by later runs); then the pair's files are timed
interleaved (benchmarks/latency.py's protocol: batch 1, 1 thread, `repeats`
rounds of `invokes` calls each, median and minimum of the round means) in
process CPU time, which leaves out the time other jobs of a shared machine
hold the cores (`--clock=wall` for wall time). MAC ratios are the
profiler's (connections that exist, the paper's count) over the dense
net's. The goal column is issue 14's: latency ratio
<= MAC ratio + 0.2 (1 - MAC ratio).

`--train_rounds=N` also measures training images/s of the masked X-DenseNet
against the dense DenseNet-BC-40-24 (batch 64, CIFAR shape, N interleaved
rounds of `benchmarking.training_throughput`).
"""

import os
import statistics
import time

from absl import app
from absl import flags

os.environ.setdefault("TF_CPP_MIN_LOG_LEVEL", "3")

import keras  # noqa: E402

from benchmarks import latency  # noqa: E402  (timing protocol and flags)
from keras_compact import benchmarking  # noqa: E402
from keras_compact import export  # noqa: E402
from keras_compact import layers  # noqa: E402
from keras_compact import models  # noqa: E402
from keras_compact import profiling  # noqa: E402

CLOCKS = {"cpu": time.process_time, "wall": time.perf_counter}
IMAGENET = ((224, 224, 3), 1000)
CIFAR = ((32, 32, 3), 10)
# name -> (dense arch, dense kwargs, X arch, X kwargs, (shape, classes))
PAIRS = {
    "densenet": ("densenet_bc_40_24", {}, "x_densenet_bc_40_24", {}, CIFAR),
    "vgg": ("vgg16", {}, "x_vgg16", {}, CIFAR),
    **{f"mobilenet{g}": ("mobilenet_v1", {"width_multiplier": 0.5},
                         "x_mobilenet_v1_0.5", {"density": 1 / g}, IMAGENET)
       for g in (2, 4, 8, 16)},
    "resnet18": ("resnet18", {}, "x_resnet18", {}, IMAGENET),
    # The named variant graph (channel shuffle + grouped pointwise convs).
    **{f"mobilenet{g}_shuffle": ("mobilenet_v1", {"width_multiplier": 0.5},
                                 "x_mobilenet_v1_0.5_shuffle",
                                 {"density": 1 / g}, IMAGENET)
       for g in (4, 8, 16)},
}

flags.DEFINE_list("pairs", [p for p in PAIRS if "shuffle" not in p],
                  f"Pairs to run: {list(PAIRS)}.")
flags.DEFINE_list("quant", ["float32", "int8"], "LiteRT quantizations.")
flags.DEFINE_integer("train_rounds", 0, "Training throughput rounds (0: no).")
flags.DEFINE_string("dir", "/tmp/xnets_tflite", "Where .tflite files and "
                    "their conversion times are kept and reused.")
flags.DEFINE_enum("clock", "cpu", ["cpu", "wall"], "Timing clock.")
FLAGS = flags.FLAGS


_random_bn = benchmarking.randomize_bn_statistics


def _convert(model, path, quantization, sparse=False):
    """Writes the file as `export.to_litert` does; returns seconds."""
    record = path + ".seconds"
    if os.path.exists(record):
        with open(record) as f:
            return float(f.read())
    start = time.perf_counter()
    calibration = latency._calibration(model.inputs[0].shape[1:])
    if sparse:
        import tensorflow as tf

        kwargs = export.LITERT_FORMATS.get(quantization)(calibration)
        kwargs["optimizations"] = [*kwargs.get("optimizations", []),
                                   tf.lite.Optimize.EXPERIMENTAL_SPARSITY]
        model.export(path, format="litert", verbose=False, **kwargs)
    else:
        export.to_litert(model, path, quantization, calibration)
    seconds = time.perf_counter() - start
    with open(record, "w") as f:
        f.write(str(seconds))
    return seconds


def _pair(name, directory):
    dense_arch, dense_kwargs, x_arch, x_kwargs, (shape, classes) = PAIRS[name]
    dense = _random_bn(models.build(dense_arch, shape, classes,
                                    **dense_kwargs))
    masked = _random_bn(models.build(x_arch, shape, classes, **x_kwargs))
    deployed, report = layers.deployable_model(masked)
    forms = {}
    for choice in report.values():
        forms[choice["form"]] = forms.get(choice["form"], 0) + 1
    base_macs = profiling.profile(dense).macs
    mac_ratio = profiling.profile(deployed).macs / base_macs
    print(f"\n### {name}: {x_arch} {x_kwargs} vs {dense_arch} "
          f"{dense_kwargs}, input {shape}\n\nMAC ratio {mac_ratio:.3f}; "
          f"deployable forms {forms}; goal: latency ratio <= "
          f"{mac_ratio + 0.2 * (1 - mac_ratio):.3f}\n", flush=True)
    for quantization in FLAGS.quant:
        entries = [("dense", dense, False, (dense_arch, dense_kwargs)),
                   ("X deployable", deployed, False, (x_arch, x_kwargs))]
        if quantization == "float32":
            entries.append(("X deployable, sparse-encoded", deployed, True,
                            (x_arch, x_kwargs, "sparse")))
        rows = []
        for label, model, sparse, key in entries:
            # Keyed by what is converted, so pairs share their dense net.
            path = os.path.join(directory, "_".join(
                map(str, key)).replace(" ", "") + f"_{quantization}.tflite")
            seconds = _convert(model, path, quantization, sparse)
            print(f"converted {label} {quantization} in {seconds:.1f} s",
                  flush=True)
            rows.append({"name": label, "quant": quantization,
                         "path": path, "convert": seconds})
        latency._time(rows, CLOCKS[FLAGS.clock])
        print("\n| model | quant | convert s | XNNPACK partitions | ms "
              "median / min | latency ratio median / min |\n"
              "|---|---|---:|---:|---:|---:|")
        base = rows[0]
        for row in rows:
            print(f"| {row['name']} | {quantization} | {row['convert']:.1f} "
                  f"| {row['partitions'] or 'refused'} | {row['median']:.3f}"
                  f" / {row['min']:.3f} | {row['median'] / base['median']:.3f}"
                  f" / {row['min'] / base['min']:.3f} |", flush=True)


def _training(rounds):
    built = {}
    for arch in ("densenet_bc_40_24", "x_densenet_bc_40_24"):
        model = models.build(arch, *CIFAR)
        model.compile(keras.optimizers.SGD(0.1, momentum=0.9),
                      keras.losses.SparseCategoricalCrossentropy(
                          from_logits=True))
        built[arch] = model
    rates = {arch: [] for arch in built}
    for _ in range(rounds):
        for arch, model in built.items():
            rates[arch].append(benchmarking.training_throughput(
                model, CIFAR[0], CIFAR[1], batch_size=64, steps=5))
    base = statistics.median(rates["densenet_bc_40_24"])
    print("\n| model | train images/s (median) | ratio |\n|---|---:|---:|")
    for arch, samples in rates.items():
        rate = statistics.median(samples)
        print(f"| {arch} | {rate:.1f} | {rate / base:.3f} |")


def main(argv):
    del argv
    os.makedirs(FLAGS.dir, exist_ok=True)
    for name in FLAGS.pairs:
        _pair(name, FLAGS.dir)
    if FLAGS.train_rounds:
        _training(FLAGS.train_rounds)


if __name__ == "__main__":
    app.run(main)
