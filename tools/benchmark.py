"""Benchmarks methods side by side: size, MACs, LiteRT latency, speed.

  python -m tools.benchmark --pairs=baseline:resnet20,baseline:resnet56
  python -m tools.benchmark --pairs=baseline:resnet20 --runs=runs/baseline
  python -m tools.benchmark --pairs=aps:resnet20:widths=resnet20_20.6M

Each `method:arch` pair is built with its recipe (`configs/<method>.py`),
transformed to its deployable form and measured: params and MACs of the
deployable model, `.tflite` size, LiteRT batch-1 latency (float32 and int8,
median of repeats), and training images/s of the trainable model. `--runs`
adds workdirs of finished trainings (their deployable.keras and test
accuracy). Writes <output>.md, <output>.json and, with accuracies, a PNG of
accuracy vs MACs.

  python -m tools.benchmark --compare=pytorch --archs=resnet20,resnet56

trains the same CIFAR ResNet (same widths, batch, SGD momentum, L2) in
keras_compact and in PyTorch eager (channels_last), interleaving rounds of
steps, and prints images/s of each, their ratio and the model-FLOP
utilisation against a measured fp32 matmul peak (`pip install -e .[bench]`).
"""

import json
import os

from absl import app
from absl import flags
from absl import logging

os.environ.setdefault("TF_CPP_MIN_LOG_LEVEL", "2")

import keras  # noqa: E402
import numpy as np  # noqa: E402

from configs import loader  # noqa: E402
from keras_compact import benchmarking  # noqa: E402
from keras_compact import data  # noqa: E402
from keras_compact import distribute  # noqa: E402
from keras_compact import methods  # noqa: E402
from keras_compact import models  # noqa: E402
from keras_compact import optimizers  # noqa: E402
from keras_compact import profiling  # noqa: E402
from keras_compact import training  # noqa: E402

FLAGS = flags.FLAGS
flags.DEFINE_list("pairs", ["baseline:resnet20"], "method:arch pairs; "
                  "method:arch:key=value;key=value sets recipe fields.")
flags.DEFINE_list("runs", [], "Workdirs of finished trainings to include.")
flags.DEFINE_string("dataset", "cifar10", "Sets input shape and classes; "
                    "synthetic data of that shape is used.")
flags.DEFINE_integer("batch_size", 128, "Training batch for images/s.")
flags.DEFINE_integer("train_steps", 15, "Timed training steps.")
flags.DEFINE_integer("threads", 1, "LiteRT interpreter threads.")
flags.DEFINE_bool("int8", True, "Also measure int8 LiteRT latency.")
flags.DEFINE_string("output", "benchmark", "Output path prefix.")
flags.DEFINE_bool("jit_compile", False, "Train with XLA for the images/s "
                  "column.")
flags.DEFINE_bool("input_pipeline", False, "Also measure the training "
                  "tf.data pipeline of --dataset (images/s).")
flags.DEFINE_enum("compare", "", ["", "pytorch"], "Compare training speed "
                  "with another framework instead of the method table.")
flags.DEFINE_list("archs", ["resnet20", "resnet56"], "CIFAR ResNets for "
                  "--compare.")
flags.DEFINE_integer("rounds", 5, "Interleaved rounds for --compare.")

_SHAPES = {"cifar10": ((32, 32, 3), 10), "cifar100": ((32, 32, 3), 100),
           "fashion_mnist": ((28, 28, 1), 10), "synthetic": ((32, 32, 3), 10)}


def _context(config):
    splits = data.make_splits(data.load("synthetic"), 64,
                              validation_split=0.25)
    return training.Context(config, distribute.get("default"), "", splits)


def _measure_pair(pair):
    method_name, _, rest = pair.partition(":")
    arch, _, recipe_arg = rest.partition(":")
    config = loader.load(method_name, arg=",".join(
        filter(None, (f"arch={arch}" if arch else "",
                      recipe_arg.replace(";", ",")))))
    config.dataset = FLAGS.dataset
    config.jit_compile = FLAGS.jit_compile
    input_shape, num_classes = _SHAPES[FLAGS.dataset]
    method = methods.get(method_name)
    model = method.build_model(config, input_shape, num_classes)
    method.compile_model(model, optimizers.make_optimizer(config, 100),
                         config)
    images_per_second = benchmarking.training_throughput(
        model, input_shape, num_classes, FLAGS.batch_size, FLAGS.train_steps)
    deployable = method.deployable(model, _context(config))
    row = _measure_deployable(deployable)
    row.update(method=method_name, arch=config.arch,
               train_images_per_second=round(images_per_second, 1))
    return row


def _measure_deployable(model):
    report = profiling.profile(model)
    row = {"params": report.params, "macs": report.macs}
    row["latency_ms_float32"], row["tflite_bytes"] = (
        benchmarking.litert_latency(model, threads=FLAGS.threads))
    if FLAGS.int8:
        row["latency_ms_int8"], row["tflite_bytes_int8"] = (
            benchmarking.litert_latency(model, "int8",
                                        threads=FLAGS.threads))
    return row


def _measure_run(workdir):
    with open(os.path.join(workdir, "metrics.json")) as f:
        metrics = json.load(f)
    model = keras.models.load_model(os.path.join(workdir,
                                                 "deployable.keras"))
    row = _measure_deployable(model)
    row.update(method=metrics["method"], arch=metrics["arch"],
               accuracy=metrics["test_accuracy"],
               train_images_per_second=round(
                   metrics["train_images_per_second"], 1))
    return row


def _plot(rows, path):
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    figure, axes = plt.subplots(figsize=(6, 4))
    for row in rows:
        axes.scatter(row["macs"] / 1e6, row["accuracy"] * 100)
        axes.annotate(f"{row['method']}:{row['arch']}",
                      (row["macs"] / 1e6, row["accuracy"] * 100), fontsize=7)
    axes.set_xlabel("MACs (millions)")
    axes.set_ylabel("test accuracy (%)")
    figure.tight_layout()
    figure.savefig(path, dpi=120)


def _keras_trainer(arch, x, y):
    import tensorflow as tf

    model = models.build(arch, (32, 32, 3), 10)
    model.compile(
        optimizer=optimizers.L2SGD(learning_rate=0.01, momentum=0.9,
                                   l2=1e-4),
        loss=keras.losses.SparseCategoricalCrossentropy(from_logits=True))
    x, y = tf.constant(x), tf.constant(y)

    def step():
        # The returned loss is read, so no part of the step can be pruned.
        return float(model.train_on_batch(x, y))

    return step


def _torch_trainer(arch, x, y):
    import torch

    from tools import torch_models

    model = torch_models.resnet_cifar(int(arch.removeprefix("resnet")))
    model = model.to(memory_format=torch.channels_last).train()
    optimizer = torch.optim.SGD(model.parameters(), lr=0.01, momentum=0.9,
                                weight_decay=1e-4)
    x = torch.from_numpy(x.transpose(0, 3, 1, 2).copy()).contiguous(
        memory_format=torch.channels_last)
    y = torch.from_numpy(y.astype("int64"))

    def step():
        optimizer.zero_grad(set_to_none=True)
        loss = torch.nn.functional.cross_entropy(model(x), y)
        loss.backward()
        optimizer.step()
        return loss.item()

    return step


def compare_pytorch():
    """Interleaved training-speed comparison with PyTorch; returns rows."""
    import torch

    torch.set_num_threads(os.cpu_count())
    peak = benchmarking.matmul_peak_flops()
    rng = np.random.default_rng(0)
    x = rng.normal(size=(FLAGS.batch_size, 32, 32, 3)).astype("float32")
    y = rng.integers(0, 10, FLAGS.batch_size).astype("int32")
    rows = []
    for arch in FLAGS.archs:
        macs = profiling.profile(models.build(arch, (32, 32, 3), 10)).macs
        steps = {"keras_compact": _keras_trainer(arch, x, y),
                 "pytorch": _torch_trainer(arch, x, y)}
        rates = benchmarking.interleaved_rates(
            steps, FLAGS.batch_size, FLAGS.rounds, FLAGS.train_steps)
        # The machine may be busier at one time than another: the best
        # matmul rate seen is the peak.
        peak = max(peak, benchmarking.matmul_peak_flops())
        row = {"arch": arch, "peak_gflops": peak / 1e9,
               "forward_macs": macs}
        for name, rate in rates.items():
            # Training ~ 3x the forward pass; one MAC is two FLOPs.
            flops = 6 * macs * rate
            if flops > peak:
                raise RuntimeError(f"{name} {arch}: {flops / 1e9:.0f} GFLOP/s "
                                   f"exceeds the measured peak; the "
                                   "measurement is wrong.")
            row[f"{name}_images_per_second"] = rate
            row[f"{name}_mfu"] = flops / peak
        ours = row["keras_compact_images_per_second"]
        theirs = row["pytorch_images_per_second"]
        row["ratio"] = ours / theirs
        print(f"{arch}: keras_compact {ours:.0f} img/s, pytorch "
              f"{theirs:.0f} img/s, ratio {row['ratio']:.2f}, MFU "
              f"{row['keras_compact_mfu']:.1%} vs {row['pytorch_mfu']:.1%} "
              f"of {peak / 1e9:.0f} GFLOP/s")
        rows.append(row)
    return rows


def main(argv):
    del argv
    logging.set_verbosity(logging.WARNING)
    if FLAGS.compare:
        rows = compare_pytorch()
        with open(f"{FLAGS.output}.json", "w") as f:
            json.dump(rows, f, indent=2)
        return
    if FLAGS.input_pipeline:
        splits = data.make_splits(data.load(FLAGS.dataset), FLAGS.batch_size)
        rate = benchmarking.input_throughput(splits.train)
        print(f"{FLAGS.dataset} training pipeline: {rate:.0f} images/s")
    rows = [_measure_pair(p) for p in FLAGS.pairs]
    rows = benchmarking.add_ratios(
        rows + [_measure_run(w) for w in FLAGS.runs])
    table = benchmarking.markdown(rows)
    print(table)
    with open(f"{FLAGS.output}.md", "w") as f:
        f.write(table + "\n")
    with open(f"{FLAGS.output}.json", "w") as f:
        json.dump(rows, f, indent=2)
    with_accuracy = [r for r in rows if "accuracy" in r]
    if with_accuracy:
        _plot(with_accuracy, f"{FLAGS.output}.png")


if __name__ == "__main__":
    app.run(main)
