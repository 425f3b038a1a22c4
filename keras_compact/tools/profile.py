"""Prints params and MACs per layer of an architecture or a saved model.

  python -m tools.profile --arch=resnet56
  python -m tools.profile --method=baseline --arch=resnet20 --dataset=cifar100
  python -m tools.profile --model=runs/baseline/deployable.keras
  python -m tools.profile --method=baseline --arch=resnet20 --trace
  python -m tools.profile --method=od --arch=resnet56 --block=shift
  python -m tools.profile --method=aps --arch=resnet20 --widths=resnet20_20.6M

The model is built as the trainer builds it: the method's recipe, with
`--config`, `--set` and one flag per recipe field or method option
(`--widths`, `--slim_k`, ...) as in trainers.cifar.

`--trace` instead times a few training steps of the model as the trainer
compiles it (the method's optimizer and train step, batch `--batch_size` of
random data) under the TF profiler and prints where the step's wall time
goes: device-op time per category (convolutions, batch norm, elementwise,
optimizer update, data, ...), the Python/runtime overhead, and the largest
op types (`benchmarking.step_time_breakdown`).

  python -m tools.profile --arch=resnet20 --thread_sweep=0:0,2:1,1:2,1:1

measures training images/s of the model with each `intra:inter` size of
TensorFlow's thread pools (0: TF's choice). Pools are fixed when TF starts,
so each setting runs in its own worker process; the workers take turns for
`--rounds` rounds of `--round_steps` steps and the median is printed.
"""

import os
import statistics
import subprocess
import sys
import time

from absl import flags
from absl import logging

os.environ.setdefault("TF_CPP_MIN_LOG_LEVEL", "2")

import keras  # noqa: E402
import numpy as np  # noqa: E402

from keras_compact import benchmarking  # noqa: E402
from keras_compact import cli  # noqa: E402
from keras_compact import methods  # noqa: E402
from keras_compact import optimizers  # noqa: E402
from keras_compact import profiling  # noqa: E402
from keras_compact.configs import loader  # noqa: E402
from keras_compact.errors import UsageError  # noqa: E402
from keras_compact.trainers import flags_common  # noqa: E402

FLAGS = flags.FLAGS
flags.DEFINE_string("model", "", "A saved .keras model to profile.")
FIELDS = flags_common.define({
    "arch": "Architecture (default: the recipe's).",
})
flags.DEFINE_enum("dataset", "cifar10", list(benchmarking.DATASET_SHAPES),
                  "Sets input shape and classes.")
flags.DEFINE_enum("unknown_layers", "raise", ["raise", "warn"], "A layer "
                  "with weights that the profiler cannot count: fail, or "
                  "warn and count it as 0 MACs.")
flags.DEFINE_bool("trainable", False, "Profile the model as trained (e.g. "
                  "expanded), not its deployable form.")
flags.DEFINE_bool("trace", False, "Break a traced training step down by "
                  "op category instead of counting params and MACs.")
flags.DEFINE_integer("batch_size", 128, "Training batch for --trace.",
                     lower_bound=1)
flags.DEFINE_integer("trace_steps", 3, "Traced steps for --trace.",
                     lower_bound=1)
flags.DEFINE_integer("top", 15, "Op types listed by --trace.",
                     lower_bound=1)
flags.DEFINE_string("threads", "0:0", "intra:inter op threads of this "
                    "process (0: TensorFlow's choice).")
flags.DEFINE_list("thread_sweep", [], "intra:inter settings whose training "
                  "images/s are measured side by side.")
flags.DEFINE_integer("rounds", 5, "Interleaved rounds of --thread_sweep.",
                     lower_bound=1)
flags.DEFINE_integer("round_steps", 5, "Steps per round of --thread_sweep.",
                     lower_bound=1)
flags.DEFINE_bool("serve_steps", False, "Worker of --thread_sweep: runs the "
                  "number of steps read from each stdin line and prints "
                  "images/s.")


def _config_and_shape():
    config = flags_common.build_config(FIELDS, loader.load)
    if "widths" in config and not config.widths:
        # APS builds a found architecture; the search is the trainer's job.
        raise UsageError(f"--method={config.method} builds searched widths:"
                         " pass --widths (a shipped name such as "
                         "resnet20_20.6M, a JSON file or a list).")
    shape, classes = benchmarking.DATASET_SHAPES[FLAGS.dataset]
    return config, shape, classes


def _compiled():
    """The method's model as the trainer compiles it, and its input shape."""
    config, shape, classes = _config_and_shape()
    method = methods.get(config.method)
    model = method.build_model(config, shape, classes)
    method.compile_model(model, optimizers.make_optimizer(config, 100),
                         config)
    return config, method, model, shape, classes


def _build():
    config, method, model, shape, classes = _compiled()
    if FLAGS.trainable:
        return model
    # OD's deployable form evaluates the (compiled) students on data.
    return method.deployable(model, benchmarking.synthetic_context(
        config, shape, classes))


def _random_batch(shape, classes):
    rng = np.random.default_rng(0)
    x = rng.normal(size=(FLAGS.batch_size, *shape)).astype("float32")
    y = rng.integers(0, classes, FLAGS.batch_size).astype("int32")
    return x, y


def _trace():
    config, _, model, shape, classes = _compiled()
    x, y = _random_batch(shape, classes)
    breakdown = benchmarking.step_time_breakdown(model, x, y,
                                                 FLAGS.trace_steps)
    print(f"{config.method}:{config.arch}, batch {FLAGS.batch_size}, "
          f"{FLAGS.trace_steps} traced steps, threads {FLAGS.threads}\n")
    print(breakdown.table(FLAGS.top))


def _serve_steps():
    _, _, model, shape, classes = _compiled()
    x, y = _random_batch(shape, classes)

    def step():
        # Reading the loss waits for the whole step.
        return float(keras.tree.flatten(model.train_on_batch(x, y))[0])

    for _ in range(3):
        step()
    print("ready", flush=True)
    for line in sys.stdin:
        start = time.perf_counter()
        for _ in range(int(line)):
            step()
        rate = FLAGS.batch_size * int(line) / (time.perf_counter() - start)
        print(rate, flush=True)


def _parse_threads(text):
    intra, _, inter = text.partition(":")
    if not (intra.isdigit() and inter.isdigit()):
        raise UsageError(f"Thread setting {text!r} is not intra:inter "
                             "with two integers >= 0, e.g. 2:1.")
    return int(intra), int(inter)


def _thread_sweep():
    for setting in FLAGS.thread_sweep:
        _parse_threads(setting)
    args = [a for a in sys.argv[1:]
            if not a.startswith(("--thread_sweep", "--threads"))]
    workers = {}
    for setting in FLAGS.thread_sweep:
        workers[setting] = subprocess.Popen(
            [sys.executable, "-m", "keras_compact.tools.profile", *args,
             "--serve_steps",
             f"--threads={setting}"],
            stdin=subprocess.PIPE, stdout=subprocess.PIPE, text=True)
        # One at a time: start-up and warm-up would disturb the others.
        if workers[setting].stdout.readline().strip() != "ready":
            raise RuntimeError(f"The worker for --threads={setting} failed; "
                               "run it alone to see why.")
    rates = {setting: [] for setting in workers}
    for _ in range(FLAGS.rounds):
        for setting, worker in workers.items():
            worker.stdin.write(f"{FLAGS.round_steps}\n")
            worker.stdin.flush()
            rates[setting].append(float(worker.stdout.readline()))
    for worker in workers.values():
        worker.stdin.close()
        worker.wait()
    print(f"{FLAGS.method}:{FLAGS.arch or 'recipe arch'}, batch "
          f"{FLAGS.batch_size}, {FLAGS.rounds} rounds x {FLAGS.round_steps} "
          "steps, median (min-max) training images/s\n")
    print("| intra:inter threads | images/s | min | max |")
    print("|---|---:|---:|---:|")
    for setting, values in rates.items():
        print(f"| {setting} | {statistics.median(values):.1f} | "
              f"{min(values):.1f} | {max(values):.1f} |")


def main(argv):
    del argv
    logging.set_verbosity(logging.WARNING)
    if FLAGS.thread_sweep:
        _thread_sweep()
        return
    benchmarking.set_threads(*_parse_threads(FLAGS.threads))
    if FLAGS.serve_steps:
        _serve_steps()
        return
    if FLAGS.trace:
        _trace()
        return
    if FLAGS.model and not os.path.isfile(FLAGS.model):
        raise UsageError(f"--model={FLAGS.model} does not exist; give a "
                         ".keras file, e.g. <workdir>/deployable.keras.")
    model = keras.models.load_model(FLAGS.model) if FLAGS.model else _build()
    result = profiling.profile(model, unknown=FLAGS.unknown_layers)
    print(result.table())
    print(f"\n{result.convention}")


def run():
    """The `keras-compact-profile` console script."""
    cli.run(main)


if __name__ == "__main__":
    run()
