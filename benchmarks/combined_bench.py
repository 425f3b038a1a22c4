"""Benchmark of composed methods; the results are in benchmarks/combined.md.

Fashion-MNIST, every row at the same budget (images, epochs, batch, recipe),
several seeds: OD with SlimConv students vs the same Sc-ResNet trained alone
vs OD with shift students; OD with ExpandNets (CL) students, contracted
after training, vs OD with the plain students they contract to. Each run
trains, picks the deployable (`OnlineDistillation.deployable`: best student
on the validation split, then the student conv's method's transform) and
tests it; one finished run is one JSON file in --out (a rerun skips it).

    nice -n 10 python benchmarks/combined_bench.py run --out=/tmp/combined
    python benchmarks/combined_bench.py latency --out=/tmp/combined
    python benchmarks/combined_bench.py table --out=/tmp/combined

The backbone is a CIFAR ResNet of `--depth` (8 by default, registered here
as `resnet8` for the budget: `models.resnet_cifar.resnet_cifar(8, ...)`).
"""

import argparse
import functools
import json
import os
import statistics
import time

import keras
import numpy as np

from keras_compact import benchmarking
from keras_compact import data
from keras_compact import distribute
from keras_compact import files
from keras_compact import methods
from keras_compact import models
from keras_compact import optimizers
from keras_compact import profiling
from keras_compact import training
from keras_compact.configs import od as od_config

# row: (OD student conv fields, trained alone instead of by OD).
ROWS = {
    "od_slimconv": ({"student_conv": "slimconv"}, False),
    "slimconv_alone": ({"student_conv": "slimconv"}, True),
    "od_shift": ({"student_conv": "shift"}, False),
    "od_expanded": ({"student_conv": "expanded", "expand": "cl"}, False),
    "od_plain": ({"student_conv": "expanded", "expand": "none"}, False),
}


def _config(args, row, seed):
    fields, _ = ROWS[row]
    config = od_config.get_config()
    config.update(arch=f"resnet{args.depth}", students=args.students,
                  batch_size=args.batch, epochs=args.epochs, lr=args.lr,
                  schedule="cosine", decay_epochs=(), seed=seed,
                  validation_split=0.2, train_subset=args.train_subset,
                  expand_rate=args.expand_rate, dataset="fashion_mnist",
                  **fields)
    return config


def _splits(args, config):
    full = data.load("fashion_mnist")
    dataset = data.ImageDataset(
        full.x_train, full.y_train, full.x_test[:args.test_subset],
        full.y_test[:args.test_subset], full.num_classes, full.mean,
        full.std)
    return data.make_splits(dataset, config.batch_size, 0.2,
                            config.train_subset, seed=config.seed)


def train_row(args, row, seed):
    config = _config(args, row, seed)
    alone = ROWS[row][1]
    keras.utils.set_random_seed(seed)
    splits = _splits(args, config)
    od = methods.get("od")
    steps = splits.train_size // config.batch_size
    optimizer = optimizers.make_optimizer(config, steps)
    if alone:
        model = od.compact_student(config, splits.input_shape,
                                   splits.num_classes)
        methods.get("baseline").compile_model(model, optimizer, config)
    else:
        model = od.build_model(config, splits.input_shape,
                               splits.num_classes)
        od.compile_model(model, optimizer, config)
    start = time.perf_counter()
    model.fit(splits.train, epochs=config.epochs, verbose=2,
              validation_data=splits.validation)
    seconds = time.perf_counter() - start
    workdir = os.path.join(args.out, f"{row}_{seed}")
    os.makedirs(workdir, exist_ok=True)
    context = training.Context(config, distribute.get("default"), workdir,
                               splits)
    deployable = model if alone else od.deployable(model, context)
    view = keras.Model(deployable.inputs, deployable.outputs)
    view.compile(loss=keras.losses.SparseCategoricalCrossentropy(
        from_logits=True), metrics=["accuracy"])
    accuracy = view.evaluate(splits.test, verbose=0, return_dict=True)[
        "accuracy"]
    counts = profiling.profile(deployable)
    deployable.save(os.path.join(workdir, "deployable.keras"))
    return {"row": row, "seed": seed, "test_accuracy": float(accuracy),
            "params": counts.params, "macs": counts.macs,
            "train_seconds": seconds, "train_images": splits.train_size,
            "epochs": config.epochs, "students": 1 if alone else
            config.students}


def run(args):
    os.makedirs(args.out, exist_ok=True)
    for seed in args.seeds:
        for row in args.rows:
            path = os.path.join(args.out, f"{row}_{seed}.json")
            if os.path.exists(path):
                continue
            result = train_row(args, row, seed)
            files.write_json(path, result)
            print(json.dumps(result), flush=True)


def latency(args):
    """Batch-1 LiteRT float32 latency of each row's seed-0 deployable,
    rows interleaved over --rounds so they share the machine's load."""
    loaded = {row: keras.models.load_model(
        os.path.join(args.out, f"{row}_0", "deployable.keras"))
        for row in args.rows}
    times = {row: [] for row in loaded}
    for _ in range(args.rounds):
        for row, model in loaded.items():
            ms, _ = benchmarking.litert_latency(model, repeats=3)
            times[row].append(ms)
    result = {row: statistics.median(t) for row, t in times.items()}
    files.write_json(os.path.join(args.out, "latency.json"), result)
    print(json.dumps(result))


def table(args):
    lat_path = os.path.join(args.out, "latency.json")
    lat = files.read_json(lat_path) if os.path.exists(lat_path) else {}
    print("| row | seeds | test accuracy % (mean +- std) | params | MACs | "
          "LiteRT fp32 ms | train s (mean) |\n|---|---|---|---|---|---|---|")
    for row in args.rows:
        runs = [files.read_json(os.path.join(args.out, f"{row}_{s}.json"))
                for s in args.seeds
                if os.path.exists(os.path.join(args.out, f"{row}_{s}.json"))]
        if not runs:
            continue
        acc = [100 * r["test_accuracy"] for r in runs]
        std = statistics.stdev(acc) if len(acc) > 1 else float("nan")
        ms = f"{lat[row]:.3f}" if row in lat else "-"
        print(f"| {row} | {len(runs)} | {statistics.mean(acc):.2f} +- "
              f"{std:.2f} | {runs[0]['params']:,} | {runs[0]['macs']:,} | "
              f"{ms} | {statistics.mean(r['train_seconds'] for r in runs):.0f}"
              " |")


def main():
    parser = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    parser.add_argument("command", choices=("run", "latency", "table"))
    parser.add_argument("--out", default="/tmp/combined")
    parser.add_argument("--rows", default=",".join(ROWS),
                        type=lambda s: s.split(","))
    parser.add_argument("--seeds", default="0,1,2",
                        type=lambda s: [int(v) for v in s.split(",")])
    parser.add_argument("--depth", type=int, default=8)
    parser.add_argument("--students", type=int, default=2)
    parser.add_argument("--epochs", type=int, default=3)
    parser.add_argument("--batch", type=int, default=64)
    parser.add_argument("--lr", type=float, default=0.05)
    parser.add_argument("--expand_rate", type=float, default=2.0)
    parser.add_argument("--train_subset", type=int, default=3000)
    parser.add_argument("--test_subset", type=int, default=2000)
    parser.add_argument("--rounds", type=int, default=5)
    args = parser.parse_args()
    name = f"resnet{args.depth}"
    if name not in models.names():
        models.register(name, functools.partial(
            models.resnet_cifar.resnet_cifar, args.depth))
    np.set_printoptions(precision=4)
    {"run": run, "latency": latency, "table": table}[args.command](args)


if __name__ == "__main__":
    main()
