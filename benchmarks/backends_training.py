"""Training images/s of the same nets on TensorFlow, JAX and PyTorch.

python -m benchmarks.backends_training [--rounds=2] [--steps=10]
    [--batch_size=64] [--log=/tmp/backends_training.jsonl]

Each measurement is a fresh process with KERAS_BACKEND set, so the
backends never share a process; the rounds interleave them (the order of
the backends rotates every round), so that a loaded machine slows all of
them alike. A process builds the net, compiles it with Keras's defaults
(SGD, sparse cross-entropy, `jit_compile="auto"`: XLA on JAX, none on TF
on a CPU-only machine nor on torch), runs one untimed epoch of `--steps`
steps (tracing, compilation) and times a second one on random CIFAR-shaped
data. Results append to `--log` as JSON lines; a rerun skips the ones it
already has. Prints a Markdown table of the median images/s per backend.
"""

import json
import os
import subprocess
import sys
import time

from absl import app
from absl import flags

ARCHS = {
    "sc_resnet20": {},
    # The training (masked) form of X-DenseNet-BC-40-24-2.
    "x_densenet_bc_40_24": {},
}
BACKENDS = ("tensorflow", "jax", "torch")

flags.DEFINE_integer("rounds", 2, "Interleaved rounds per (arch, backend).")
flags.DEFINE_integer("steps", 10, "Timed training steps per measurement.")
flags.DEFINE_integer("batch_size", 64, "Images per step.")
flags.DEFINE_string("log", "/tmp/backends_training.jsonl",
                    "JSON-lines results, appended; a rerun resumes.")
flags.DEFINE_string("child", "", "Internal: measure this arch here.")
FLAGS = flags.FLAGS


def measure(arch, steps, batch_size):
    """Images/s of the second of two `fit` epochs of `steps` steps."""
    import keras
    import numpy as np

    from keras_compact import models

    keras.utils.set_random_seed(0)
    model = models.build(arch, (32, 32, 3), 10, **ARCHS[arch])
    model.compile(optimizer=keras.optimizers.SGD(0.01, momentum=0.9),
                  loss=keras.losses.SparseCategoricalCrossentropy(
                      from_logits=True))
    rng = np.random.default_rng(0)
    x = rng.normal(size=(steps * batch_size, 32, 32, 3)).astype("float32")
    y = rng.integers(0, 10, steps * batch_size)
    model.fit(x, y, batch_size=batch_size, epochs=1, verbose=0,
              shuffle=False)
    start = time.perf_counter()
    model.fit(x, y, batch_size=batch_size, epochs=1, verbose=0,
              shuffle=False)
    return steps * batch_size / (time.perf_counter() - start)


def _done(path):
    if not os.path.exists(path):
        return []
    with open(path) as f:
        return [json.loads(line) for line in f if line.strip()]


def main(argv):
    del argv
    if FLAGS.child:
        print(json.dumps({"images_per_second": measure(
            FLAGS.child, FLAGS.steps, FLAGS.batch_size)}))
        return
    results = _done(FLAGS.log)
    have = {(r["round"], r["arch"], r["backend"]) for r in results}
    for round_ in range(FLAGS.rounds):
        shift = round_ % len(BACKENDS)
        order = BACKENDS[shift:] + BACKENDS[:shift]
        for arch in ARCHS:
            for backend in order:
                if (round_, arch, backend) in have:
                    continue
                env = dict(os.environ, KERAS_BACKEND=backend,
                           TF_CPP_MIN_LOG_LEVEL="3")
                out = subprocess.run(
                    [sys.executable, "-m", "benchmarks.backends_training",
                     f"--child={arch}", f"--steps={FLAGS.steps}",
                     f"--batch_size={FLAGS.batch_size}"],
                    env=env, capture_output=True, text=True, check=True)
                row = dict(json.loads(out.stdout.strip().splitlines()[-1]),
                           round=round_, arch=arch, backend=backend)
                results.append(row)
                with open(FLAGS.log, "a") as f:
                    f.write(json.dumps(row) + "\n")
                print(row, flush=True)
    print("| net | " + " | ".join(BACKENDS) + " |")
    print("|---|" + "---|" * len(BACKENDS))
    for arch in ARCHS:
        cells = []
        for backend in BACKENDS:
            rates = sorted(r["images_per_second"] for r in results
                           if r["arch"] == arch and r["backend"] == backend)
            cells.append("%.0f (n=%d)" % (rates[len(rates) // 2], len(rates))
                         if rates else "-")
        print(f"| {arch} | " + " | ".join(cells) + " |")


if __name__ == "__main__":
    app.run(main)
