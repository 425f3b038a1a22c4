"""Benchmarks methods side by side: size, MACs, LiteRT latency, speed.

  python -m tools.benchmark --pairs=baseline:resnet20,baseline:resnet56
  python -m tools.benchmark --pairs=baseline:resnet20 --runs=runs/baseline

Each `method:arch` pair is built with its recipe (`configs/<method>.py`),
transformed to its deployable form and measured: params and MACs of the
deployable model, `.tflite` size, LiteRT batch-1 latency (float32 and int8,
median of repeats), and training images/s of the trainable model. `--runs`
adds workdirs of finished trainings (their deployable.keras and test
accuracy). Writes <output>.md, <output>.json and, with accuracies, a PNG of
accuracy vs MACs.
"""

import json
import os

from absl import app
from absl import flags
from absl import logging

os.environ.setdefault("TF_CPP_MIN_LOG_LEVEL", "2")

import keras  # noqa: E402

from configs import loader  # noqa: E402
from keras_compact import benchmarking  # noqa: E402
from keras_compact import data  # noqa: E402
from keras_compact import distribute  # noqa: E402
from keras_compact import methods  # noqa: E402
from keras_compact import optimizers  # noqa: E402
from keras_compact import profiling  # noqa: E402
from keras_compact import training  # noqa: E402

FLAGS = flags.FLAGS
flags.DEFINE_list("pairs", ["baseline:resnet20"], "method:arch pairs.")
flags.DEFINE_list("runs", [], "Workdirs of finished trainings to include.")
flags.DEFINE_string("dataset", "cifar10", "Sets input shape and classes; "
                    "synthetic data of that shape is used.")
flags.DEFINE_integer("batch_size", 128, "Training batch for images/s.")
flags.DEFINE_integer("train_steps", 15, "Timed training steps.")
flags.DEFINE_integer("threads", 1, "LiteRT interpreter threads.")
flags.DEFINE_bool("int8", True, "Also measure int8 LiteRT latency.")
flags.DEFINE_string("output", "benchmark", "Output path prefix.")

_SHAPES = {"cifar10": ((32, 32, 3), 10), "cifar100": ((32, 32, 3), 100),
           "fashion_mnist": ((28, 28, 1), 10), "synthetic": ((32, 32, 3), 10)}


def _context(config):
    splits = data.make_splits(data.load("synthetic"), 64,
                              validation_split=0.25)
    return training.Context(config, distribute.get("default"), "", splits)


def _measure_pair(pair):
    method_name, _, arch = pair.partition(":")
    config = loader.load(method_name, arg=f"arch={arch}" if arch else "")
    config.dataset = FLAGS.dataset
    input_shape, num_classes = _SHAPES[FLAGS.dataset]
    method = methods.get(method_name)
    model = method.build_model(config, input_shape, num_classes)
    method.compile_model(model, optimizers.make_optimizer(config, 100),
                         config)
    images_per_second = benchmarking.training_throughput(
        model, FLAGS.batch_size, FLAGS.train_steps)
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


def main(argv):
    del argv
    logging.set_verbosity(logging.WARNING)
    rows = [_measure_pair(p) for p in FLAGS.pairs]
    rows = add_ratios(rows + [_measure_run(w) for w in FLAGS.runs])
    table = markdown(rows)
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
