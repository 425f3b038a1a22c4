"""Fashion-MNIST: APS-searched vs uniformly thinned ResNet-20, paired seeds.

    python benchmarks/aps_fashion.py run [ROOT]     # resumable, row by row
    python benchmarks/aps_fashion.py report [ROOT]  # table + search curves
    python benchmarks/aps_fashion.py pace           # one path's pace

For each seed k: search ResNet-20 widths (candidates 8/16/32) at 50% of
ResNet-20's table MACs on a 2,000/2,000 split of the first 4,000 training
images, downsampled to 12x12 (2x2 means, the outer pixel cropped: 0.18x
the compute), then
train the searched net and the uniformly thinned ResNet-20 at the same
budget from scratch (seed k, the 4,000 images), both tested on the 10,000
test images at 12x12. The warm-up runs until the supernet's paths stop
improving: after every epoch `PathProbe` measures the held-out accuracy
of fixed paths (all-8, all-16, all-32 and two fixed mixed ones) as the
reward sees them (batch statistics, search batch), and the warm-up ends
once their mean gained less than `PLATEAU` points over the last two
epochs (between `WARMUP` epochs). Every finished search or training is a
row file `ROOT/rows/<name>.json`; a rerun skips those, and a killed run
resumes inside the row (the search's `aps_search.npz`, the trainer's
backup). See benchmarks/aps.md ("Fashion-MNIST").
"""

import json
import os
import sys

import keras
import numpy as np
import tensorflow as tf

from keras_compact import files
from keras_compact import training
from keras_compact.configs import aps as aps_config
from keras_compact.data.fashion_mnist import load_fashion_mnist
from keras_compact.data.registry import ImageDataset
from keras_compact.data.registry import channel_stats
from keras_compact.data.registry import register
from keras_compact.methods import aps

SEEDS = (0, 1, 2)
# 12 = 4 x 3: the decoded nets' stride-2 shortcuts (2x2 average pool)
# need even sizes at both strides (14 -> 7 fails).
SHAPE = (12, 12, 1)
WARMUP = (3, 8)  # fewest, most warm-up epochs
PLATEAU = 1.0  # points of mean probe accuracy gained over two epochs
SEARCH_EPOCHS = 6  # after the warm-up: 6 x 31 controller steps
DATA = "dataset=fashion_mnist_12,train_subset=4000,verbose=2,"
SEARCH = ("phase=search,validation_split=0.5,candidates=8;16;32,"
          "max_macs=0,search_decay_epochs=,batch_size=64,"
          "search_batch_size=0,projection_lr=0.01,arch_lr=0.003,"
          "beam_width=4")
TRAIN = "phase=train,validation_split=0,epochs=8,batch_size=128"
PROBE_IMAGES = 1024
# Fixed paths: every layer at one candidate, and two mixed architectures.
PROBES = [[c] * 19 for c in range(3)] + np.random.default_rng(
    2026).integers(0, 3, (2, 19)).tolist()


def _fashion_mnist_12(data_dir=""):
    full = load_fashion_mnist(data_dir)

    def halve(x):  # 2x2 means, then the outer pixel (mostly background)
        n, h, w, c = x.shape
        return np.round(x.reshape(n, h // 2, 2, w // 2, 2, c).astype(
            "float32").mean((2, 4))[:, 1:-1, 1:-1]).astype(np.uint8)

    x_train = halve(full.x_train)
    return ImageDataset(x_train, full.y_train, halve(full.x_test),
                        full.y_test, 10, *channel_stats(x_train))


register("fashion_mnist_12", _fashion_mnist_12)


class PathProbe(keras.callbacks.Callback):
    """Held-out top-1 of fixed supernet paths after every epoch.

    Batch statistics on search-sized batches, as the controller's reward
    sees a path; the BN running statistics are put back afterwards, so the
    probe changes nothing. In the warm-up it stops `fit` once the mean
    over the paths gained less than `PLATEAU` points in two epochs.
    """

    def __init__(self, held_out, path):
        super().__init__()
        self.batches = list(held_out.unbatch().take(PROBE_IMAGES).batch(64))
        self.path = path
        self.rows = (files.read_json(path) if tf.io.gfile.exists(path)
                     else [])

    def on_epoch_end(self, epoch, logs=None):
        supernet = self.model.supernet
        saved = [v.numpy() for v in supernet.non_trainable_variables]
        forward = getattr(self, "forward", None) or tf.function(
            lambda x, a: supernet((x, a), training=True))
        self.forward = forward
        accuracy = []
        for arch in PROBES:
            arch = tf.constant(arch, tf.int32)
            hits = sum(int(tf.reduce_sum(tf.cast(tf.equal(tf.argmax(
                forward(x, arch), -1, output_type=tf.int32), y), tf.int32)))
                for x, y in self.batches)
            accuracy.append(100 * hits / PROBE_IMAGES)
        for v, value in zip(supernet.non_trainable_variables, saved):
            v.assign(value)
        self.rows = [r for r in self.rows if r["epoch"] <= epoch] + [dict(
            epoch=epoch + 1, searching=self.model.searching,
            accuracy=accuracy)]
        files.write_json(self.path, self.rows)
        print(f"probe epoch {epoch + 1}: {np.round(accuracy, 1).tolist()}",
              flush=True)
        if not self.model.searching and plateaued(self.rows):
            self.model.stop_training = True


def plateaued(rows):
    means = [np.mean(r["accuracy"]) for r in rows]
    return len(means) >= WARMUP[0] and means[-1] - means[-3] < PLATEAU


def _search(seed, workdir):
    config = aps_config.get_config(DATA + SEARCH + f",seed={seed}")
    keras.utils.set_random_seed(seed)
    data = training.load_data(config, tf.distribute.get_strategy())
    model, pairs, steps = aps.build_search(config, data)
    probe = PathProbe(data.validation, f"{workdir}/probe.json")
    marker = f"{workdir}/warmup.json"
    if not tf.io.gfile.exists(marker):
        aps.run_search(model, pairs, WARMUP[1], WARMUP[1], steps, workdir,
                       2, callbacks=[probe])
        files.write_json(marker, {"epochs": probe.rows[-1]["epoch"]})
    warmup = files.read_json(marker)["epochs"]
    aps.run_search(model, pairs, warmup + SEARCH_EPOCHS, warmup, steps,
                   workdir, 2, callbacks=[probe])
    found = aps.select_architecture(model, data.validation,
                                    config.num_test_archs, config.beam_width)
    return dict(found, max_macs=model.max_macs, seed=seed,
                warmup_epochs=warmup, probe=probe.rows,
                curve=files.read_json(f"{workdir}/aps_sharing_level.json"))


def _row(root, name, compute):
    path = os.path.join(root, "rows", f"{name}.json")
    if tf.io.gfile.exists(path):
        return files.read_json(path)
    result = compute()
    tf.io.gfile.makedirs(os.path.dirname(path))
    files.write_json(path, result)
    brief = {k: v for k, v in result.items()
             if k not in ("curve", "probe", "candidates")}
    print(f"row {name}: {json.dumps(brief)}", flush=True)
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
        found = _row(root, f"search{seed}", lambda s=seed: _search(
            s, f"{root}/search{s}"))
        _row(root, f"searched{seed}", lambda s=seed, w=found["widths"]:
             _train(root, f"searched{s}", s, w))
        _row(root, f"uniform{seed}", lambda s=seed, b=found["max_macs"]:
             _train(root, f"uniform{s}", s, uniform_widths(b)))


class _Path(keras.Model):
    """One fixed path of a fresh supernet, trained as a plain model."""

    def __init__(self, arch):
        super().__init__()
        self.supernet = aps.APSResNetCifar(20, (8, 16, 32), None, 10, SHAPE)
        self.arch = tf.constant(arch, tf.int32)

    def call(self, x, training=None):
        return self.supernet((x, self.arch), training=training)


def pace(root, epochs=3):
    """Training accuracy per epoch of one path: the decoded all-16 net and
    the supernet trained on its fixed all-16 path (SGD 0.1, momentum 0.9,
    seed 0's split); the supernet under path sampling is the search's
    warm-up (`run`)."""
    del root  # nothing is stored
    config = aps_config.get_config(DATA + SEARCH + ",seed=0")
    keras.utils.set_random_seed(0)
    data = training.load_data(config, tf.distribute.get_strategy())
    for name, model in (("decoded", aps.decode([16] * 18 + [32], SHAPE, 10,
                                               "paper")),
                        ("supernet path", _Path([1] * 19))):
        model.compile(keras.optimizers.SGD(0.1, momentum=0.9),
                      keras.losses.SparseCategoricalCrossentropy(
                          from_logits=True), metrics=["accuracy"])
        history = model.fit(data.train, epochs=epochs, verbose=2).history
        print(name, "training accuracy per epoch",
              np.round(history["accuracy"], 4).tolist())


def paired_interval(differences):
    """Mean and 95% t-interval half-width of paired differences."""
    from scipy import stats

    d = np.asarray(differences, "float64")
    half = stats.t.ppf(0.975, len(d) - 1) * d.std(ddof=1) / len(d) ** 0.5
    return d.mean(), half


def report(root, plot="benchmarks/aps_fashion.png"):
    rows = {os.path.splitext(n)[0]: files.read_json(f"{root}/rows/{n}")
            for n in sorted(tf.io.gfile.listdir(f"{root}/rows"))}
    budget = 0.5 * aps.table_macs(aps.standard_widths(20), SHAPE)
    print("| seed | net | widths | table MACs (/ T) | conv+fc MACs | params "
          "| test top-1 |\n|---|---|---|---:|---:|---:|---:|")
    for seed in SEEDS:
        for kind in ("searched", "uniform"):
            row = rows.get(f"{kind}{seed}")
            if row:
                widths = ",".join(map(str, row["widths"]))
                share = row["table_macs"] / budget
                print(f"| {seed} | {kind} | `{widths}` | "
                      f"{row['table_macs']:,} ({share:.2f}) | "
                      f"{row['macs']:,} | {row['params']:,} | "
                      f"{100 * row['test_accuracy']:.2f}% |")
    for seed in SEEDS:
        row = rows.get(f"search{seed}")
        if row:
            curve = [r for r in row["curve"] if r["searching"]]
            print(f"search {seed}: warm-up {row['warmup_epochs']}, probe "
                  "means", [round(float(np.mean(r["accuracy"])), 1)
                            for r in row["probe"]],
                  "entropy", [round(r["entropy"], 2) for r in curve],
                  "reward", [round(r["reward"], 3) for r in curve],
                  "MACs/T", [round(r["budget"], 2) for r in curve],
                  "chosen", row["widths"], row["charged_macs"],
                  row["accuracy"], "shrunk", row["shrunk"])
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

    figure, axes = pyplot.subplots(1, 4, figsize=(16, 3.6))
    for seed in SEEDS:
        if f"search{seed}" not in rows:
            continue
        row = rows[f"search{seed}"]
        curve = [r for r in row["curve"] if r["searching"]]
        for axis, key in zip(axes, ("entropy", "reward", "budget")):
            line, = axis.plot([r["epoch"] for r in curve],
                              [r[key] for r in curve], marker="o",
                              label=f"seed {seed}")
            axis.axvline(row["warmup_epochs"] + 0.5, color=line.get_color(),
                         ls=":", lw=0.8)
        axes[2].plot([r["epoch"] for r in row["curve"]],
                     [r["budget"] for r in row["curve"]],
                     color=line.get_color(), lw=0.5)
        probe = row["probe"]
        axes[3].plot([r["epoch"] for r in probe],
                     [np.mean(r["accuracy"]) for r in probe],
                     color=line.get_color(), marker="o", label=f"seed {seed}")
        axes[3].fill_between([r["epoch"] for r in probe],
                             [min(r["accuracy"]) for r in probe],
                             [max(r["accuracy"]) for r in probe],
                             color=line.get_color(), alpha=0.15)
        axes[3].axvline(row["warmup_epochs"] + 0.5, color=line.get_color(),
                        ls=":", lw=0.8)
    for axis, label in zip(axes, ("policy entropy (nats)",
                                  "mean reward (held-out batch)",
                                  "mean sampled MACs / budget",
                                  "fixed paths' held-out top-1 (%)")):
        axis.set_xlabel("epoch (dotted: end of the warm-up)")
        axis.set_ylabel(label)
        axis.grid(alpha=0.3)
    axes[2].axhline(1.0, color="black", ls="--", lw=0.8)
    axes[0].axhline(19 * np.log(3), color="grey", ls="--", lw=0.8)
    axes[0].legend(fontsize=8)
    axes[3].legend(fontsize=8, title="mean, band: min-max of 5 paths",
                   title_fontsize=7)
    figure.suptitle("APS search, ResNet-20 on Fashion-MNIST 12x12 (2,000/"
                    "2,000 split), budget 50% of ResNet-20's table MACs")
    figure.tight_layout()
    figure.savefig(plot, dpi=110)
    print("wrote", plot)


if __name__ == "__main__":
    root = sys.argv[2] if len(sys.argv) > 2 else "/tmp/aps/fashion"
    {"run": run, "report": report, "pace": pace}[sys.argv[1]](root)
