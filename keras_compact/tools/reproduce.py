"""Runs a paper's table and prints it beside the paper's numbers.

  python -m tools.reproduce --list
  python -m tools.reproduce --table=expandnets_cifar10 --seeds=5
  python -m tools.reproduce --table=evidence --dataset=fashion_mnist \
      --budget=3 --seeds=3 --train_subset=4000
  python -m tools.reproduce --table=xnets_cifar10 --budget=30m \
      --strategy=mirrored --rows=x_densenet_bc_40_24_2,densenet_bc_40_24
  python -m tools.reproduce --table=expandnets_cifar10 --smoke --seeds=2
  python -m tools.reproduce --table=all --smoke --seeds=1   # CI: every row
  python -m tools.reproduce --table=xnets_cifar10 --estimate --seeds=5

Each row runs as `trainers.cifar` would run it (the row's recipe, then its
overrides, then these flags) in WORKDIR/<table>/<row>/seed<k>. Started
again, the command skips finished runs and resumes the unfinished one.
At the end it writes WORKDIR/<table>.md, .json, _macs.png and
_latency.png (docs/reproduce.md).
"""

import logging as std_logging
import os

from absl import app
from absl import flags
from absl import logging

os.environ.setdefault("TF_CPP_MIN_LOG_LEVEL", "2")

from keras_compact import cli  # noqa: E402
from keras_compact import distribute  # noqa: E402
from keras_compact import reproduce  # noqa: E402
from keras_compact.errors import UsageError  # noqa: E402

FLAGS = flags.FLAGS
flags.DEFINE_list("table", [], "Tables to run (--list shows them; all: "
                  "every table).")
flags.DEFINE_list("rows", [], "Only these rows (and the teachers they "
                  "need); empty: every row.")
flags.DEFINE_bool("list", False, "Print the tables and their rows.")
flags.DEFINE_integer("seeds", 3, "Seeds 0..N-1 of every row.")
flags.DEFINE_string("dataset", "", "A proxy dataset (e.g. fashion_mnist) "
                    "instead of the paper's.")
flags.DEFINE_string("data_dir", "", "The dataset's folder.")
flags.DEFINE_string("budget", "", "Epochs per run (e.g. 5; the schedule is "
                    "scaled to it) or a wall time per run (90s, 20m, 2h); "
                    "empty: the paper's epochs.")
flags.DEFINE_bool("smoke", False, "Smoke recipes on synthetic data (CI).")
flags.DEFINE_string("workdir", "runs/reproduce", "Root of the runs.")
flags.DEFINE_bool("latency", True, "Measure LiteRT latency and .tflite "
                  "size of every finished row.")
flags.DEFINE_bool("report_only", False, "Only write the table from the "
                  "finished runs (e.g. on one host after a multi-host run).")
flags.DEFINE_bool("estimate", False, "Print each row's training FLOPs and "
                  "the expected time on one accelerator instead of "
                  "training (docs/reproduce.md).")
flags.DEFINE_float("tflops", 0.0, "Effective accelerator TFLOP/s for "
                   "--estimate (0: an A100's assumed 8 on CIFAR, 60 on "
                   "ImageNet).")
flags.DEFINE_list("set", [], "More config overrides for every row: "
                  "key=value,key=value (lists use ';').")
# Trainer flags passed to every row (empty: the recipe's value).
TRAINER_FLAGS = {
    "strategy": "default | one_device | mirrored | multi_worker | tpu.",
    "tpu": "TPU name or grpc:// address for --strategy=tpu.",
    "batch_size": "Global batch size (split over replicas).",
    "train_subset": "Use only the first N training images (0: all).",
    "export": "Comma list of saved_model, tflite, tflite_float16, "
              "tflite_int8.",
    "jit_compile": "XLA compilation (faster on GPU/TPU, slower on CPU).",
    "mixed_precision": "'', mixed_float16 (GPU) or mixed_bfloat16 (TPU).",
    "steps_per_execution": "Steps per tf.function call (TPU: 100).",
}
for _name, _help in TRAINER_FLAGS.items():
    flags.DEFINE_string(_name, None, _help)


def _list():
    for name in reproduce.tables.names():
        table = reproduce.tables.get(name)
        print(f"{name}: {table.title} [{table.dataset}]")
        for row in table.rows:
            paper = "—" if row.paper is None else f"{row.paper:.2f}"
            print(f"  {row.name:28s} {row.method:10s} paper {paper:>6s}  "
                  f"{row.label}")


def _options():
    sets = [f"{name}={FLAGS[name].value}" for name in TRAINER_FLAGS
            if FLAGS[name].value is not None]
    sets += ["verbose=2", *FLAGS.set]  # one log line per epoch
    return reproduce.Options(
        workdir=FLAGS.workdir, seeds=FLAGS.seeds, dataset=FLAGS.dataset,
        data_dir=FLAGS.data_dir, budget=FLAGS.budget, smoke=FLAGS.smoke,
        rows=tuple(FLAGS.rows), sets=tuple(sets))


def _estimate(names, options):
    from keras_compact.reproduce import estimate

    for name in names:
        table = reproduce.tables.get(name)
        estimates = estimate.table_hours(table, options, FLAGS.tflops)
        print(estimate.markdown(table, estimates, options.seeds,
                                FLAGS.tflops))


def run_tables(names, options, latency=True, train=True):
    """Runs (unless `train` is False) and reports each table; prints the
    Markdown and returns the files written."""
    if "all" in names:
        names = reproduce.tables.names()
    tables = [reproduce.tables.get(name) for name in names]
    for table in tables:
        table.select(options.rows)  # unknown rows fail before any training
    written = []
    for table in tables:
        if train:
            reproduce.runner.run(table, options)
        if distribute.task_position():  # several hosts: the first reports
            continue
        if latency:
            reproduce.report.measure_latency(table, options)
        entries = reproduce.report.collect(table, options)
        print(reproduce.report.markdown(table, entries, options))
        written += reproduce.report.write(table, options, entries)
    return written


def main(argv):
    if len(argv) > 1:
        raise app.UsageError(f"Unexpected arguments: {argv[1:]}")
    logging.set_verbosity(logging.WARNING)
    std_logging.getLogger("keras_compact").setLevel(std_logging.INFO)
    if FLAGS.list:
        _list()
        return
    if not FLAGS.table:
        raise UsageError("Give --table=NAME (or --list). Valid tables: "
                         f"{', '.join(reproduce.tables.names())}.")
    if FLAGS.estimate:
        _estimate(FLAGS.table, _options())
        return
    for path in run_tables(FLAGS.table, _options(), FLAGS.latency,
                           train=not FLAGS.report_only):
        print(f"wrote {path}")


def run():
    cli.run(main)


if __name__ == "__main__":
    run()
