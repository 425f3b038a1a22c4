"""Fashion-MNIST: APS-searched vs uniformly thinned ResNet-20, paired seeds.

    python benchmarks/aps_fashion.py run [ROOT]     # resumable, row by row
    python benchmarks/aps_fashion.py report [ROOT]  # table + search curves

For each seed k: search ResNet-20 widths (candidates 4/8/16/32) at 50% of
ResNet-20's table MACs on a 2,000/2,000 split of the first 4,000 training
images, then train the searched net and the uniformly thinned ResNet-20
at the same budget from scratch (seed k, the 4,000 images), both tested on
the 10,000 test images. Every finished search or training is a row file
`ROOT/rows/<name>.json`; a rerun skips those, and a killed run resumes
inside the row (the search's `aps_search.npz`, the trainer's backup).
"""

import json
import os
import sys

import numpy as np
import tensorflow as tf

from keras_compact import files
from keras_compact import training
from keras_compact.configs import aps as aps_config
from keras_compact.methods import aps

SEEDS = (0, 1, 2)
SHAPE = (28, 28, 1)
DATA = "dataset=fashion_mnist,train_subset=4000,verbose=2,"
# Warm-up 4 of 9 epochs: see benchmarks/aps.md ("warm-up").
SEARCH = ("phase=search,validation_split=0.5,candidates=4;8;16;32,"
          "max_macs=0,search_epochs=9,search_warmup_epochs=4,"
          "search_decay_epochs=,batch_size=64,search_batch_size=0,"
          "projection_lr=0.01,arch_lr=0.002,beam_width=4")
TRAIN = "phase=train,validation_split=0,epochs=6,batch_size=128"


def _row(root, name, compute):
    path = os.path.join(root, "rows", f"{name}.json")
    if tf.io.gfile.exists(path):
        return files.read_json(path)
    result = compute()
    tf.io.gfile.makedirs(os.path.dirname(path))
    files.write_json(path, result)
    print(f"row {name}: {json.dumps(result)}", flush=True)
    return result


def uniform_widths(budget):
    """ResNet-20 scaled by the largest s/64 whose table MACs fit."""
    standard = aps.standard_widths(20)
    scale = max(s / 64 for s in range(8, 65) if aps.table_macs(
        [round(w * s / 64) for w in standard], SHAPE) <= budget)
    return [round(w * scale) for w in standard]


def _train(root, name, seed, widths):
    metrics = training.run(aps_config.get_config(
        DATA + TRAIN + f",seed={seed},workdir={root}/{name},widths="
        + ";".join(map(str, widths))))
    return dict(widths=list(widths), seed=seed,
                table_macs=int(aps.table_macs(widths, SHAPE)),
                **{k: metrics[k] for k in ("test_accuracy", "params",
                                           "macs")})


def run(root):
    for seed in SEEDS:
        search_dir = f"{root}/search{seed}"

        def search(seed=seed, search_dir=search_dir):
            training.run(aps_config.get_config(
                DATA + SEARCH + f",seed={seed},workdir={search_dir}"))
            found = files.read_json(f"{search_dir}/aps_widths.json")
            curve = files.read_json(f"{search_dir}/aps_sharing_level.json")
            return dict(found, seed=seed, curve=curve)

        found = _row(root, f"search{seed}", search)
        _row(root, f"searched{seed}", lambda s=seed, w=found["widths"]:
             _train(root, f"searched{s}", s, w))
        _row(root, f"uniform{seed}", lambda s=seed, b=found["max_macs"]:
             _train(root, f"uniform{s}", s, uniform_widths(b)))


def paired_interval(differences):
    """Mean and 95% t-interval half-width of paired differences."""
    from scipy import stats

    d = np.asarray(differences, "float64")
    half = stats.t.ppf(0.975, len(d) - 1) * d.std(ddof=1) / len(d) ** 0.5
    return d.mean(), half


def report(root, plot="benchmarks/aps_fashion.png"):
    rows = {os.path.splitext(n)[0]: files.read_json(f"{root}/rows/{n}")
            for n in sorted(tf.io.gfile.listdir(f"{root}/rows"))}
    for name, row in rows.items():
        print(name, {k: v for k, v in row.items()
                     if k not in ("curve", "candidates")})
    seeds = [s for s in SEEDS if f"uniform{s}" in rows]
    for kind in ("searched", "uniform"):
        acc = [100 * rows[f"{kind}{s}"]["test_accuracy"] for s in seeds]
        if acc:
            print(f"{kind}: {np.mean(acc):.2f} +- {np.std(acc, ddof=1):.2f}"
                  f" ({len(acc)} seeds)" if len(acc) > 1 else acc)
    if len(seeds) > 1:
        mean, half = paired_interval(
            [100 * (rows[f"searched{s}"]["test_accuracy"]
                    - rows[f"uniform{s}"]["test_accuracy"]) for s in seeds])
        print(f"searched - uniform: {mean:+.2f} [{mean - half:+.2f}, "
              f"{mean + half:+.2f}] (95%, {len(seeds)} paired seeds)")
    import matplotlib

    matplotlib.use("Agg")
    from matplotlib import pyplot

    figure, axes = pyplot.subplots(1, 3, figsize=(12, 3.4))
    for seed in SEEDS:
        if f"search{seed}" not in rows:
            continue
        curve = rows[f"search{seed}"]["curve"]
        epochs = [r["epoch"] for r in curve if r["searching"]]
        for axis, key in zip(axes, ("entropy", "reward", "budget")):
            axis.plot(epochs, [r[key] for r in curve if r["searching"]],
                      marker="o", label=f"search seed {seed}")
        axes[2].plot([r["epoch"] for r in curve],
                     [r["budget"] for r in curve], color="grey", lw=0.5)
    for axis, label in zip(axes, ("policy entropy (nats)",
                                  "mean reward (held-out batch)",
                                  "mean sampled MACs / budget")):
        axis.set_xlabel("epoch (warm-up: 1-4, uniform sampling)")
        axis.set_ylabel(label)
        axis.grid(alpha=0.3)
    axes[2].axhline(1.0, color="black", ls="--", lw=0.8)
    axes[0].legend(fontsize=8)
    figure.suptitle("APS search, ResNet-20 on Fashion-MNIST (2,000/2,000 "
                    "split), budget 50% of ResNet-20's table MACs")
    figure.tight_layout()
    figure.savefig(plot, dpi=110)
    print("wrote", plot)


if __name__ == "__main__":
    root = sys.argv[2] if len(sys.argv) > 2 else "/tmp/aps/fashion"
    {"run": run, "report": report}[sys.argv[1]](root)
