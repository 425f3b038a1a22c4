"""APS search step cost vs a plain step, two code versions interleaved.

    python benchmarks/aps_step_cost.py --before=TREE [--rounds=1] [--log=F]
        [--shapes=cifar,imagenet] [--imagenet_steps=2]

TREE is a checkout of an older commit (`git worktree add --detach TREE
8617912`: before the parity fixes). Each run is a subprocess that imports
`keras_compact` from one tree (PYTHONPATH) and times, at CIFAR shape
(ResNet-20 supernet, candidates 4..64, batch 64) and ImageNet shape
(ResNet-18 supernet, 224x224, batch 4): a plain step of the full-width
net, a warm-up step and a search step. The trees run alternately, in the
order before, after, after, before, ... so that a drift of the machine's
load falls on both; each run appends one JSON line to the log. Only
`keras_compact.methods.aps` names that both versions have are used.
"""

import argparse
import json
import os
import subprocess
import sys
import time

import keras

HERE = os.path.dirname(os.path.abspath(__file__))
AFTER = os.path.dirname(HERE)


class _EpochTimer(keras.callbacks.Callback):
    def on_epoch_begin(self, epoch, logs=None):
        self.start = time.perf_counter()

    def on_epoch_end(self, epoch, logs=None):
        self.seconds = time.perf_counter() - self.start


def _timed(model, data, steps):
    """Seconds per step of `fit`'s second epoch (the first one traces)."""
    timer = _EpochTimer()
    model.fit(data, epochs=2, steps_per_epoch=steps, verbose=0,
              callbacks=[timer])
    return timer.seconds / steps


def _search_model(aps, keras, net, budget, **kwargs):
    model = aps.ChannelSearchModel(net, budget, **kwargs)
    model.compile(keras.optimizers.SGD(0.1, momentum=0.9),
                  keras.optimizers.SGD(1e-3, momentum=0.9),
                  keras.optimizers.Adam(1.6e-4, beta_1=0.5))
    return model


def measure(shapes=("cifar", "imagenet"), cifar_steps=4, imagenet_steps=2):
    """One run in this process: seconds per step of each net."""
    import numpy as np
    import tensorflow as tf

    import keras_compact
    from keras_compact import models
    from keras_compact.methods import aps

    def random(batch, shape):
        x = np.random.normal(size=(batch,) + shape).astype("float32")
        y = np.random.randint(0, 10, batch).astype("int32")
        return tf.data.Dataset.from_tensors((x, y)).repeat()

    def plain(model, data, steps):
        model.compile(keras.optimizers.SGD(0.1, momentum=0.9),
                      keras.losses.SparseCategoricalCrossentropy(
                          from_logits=True))
        return _timed(model, data, steps)

    keras.utils.set_random_seed(0)
    row = {"tree": os.path.dirname(os.path.dirname(keras_compact.__file__))}
    if "cifar" in shapes:
        row.update(_cifar(aps, keras, tf, random, plain, cifar_steps))
    if "imagenet" in shapes:
        row.update(_imagenet(aps, keras, models, random, plain,
                             imagenet_steps))
    return row


def _cifar(aps, keras, tf, random, plain, steps):
    row = {}
    data = random(64, (32, 32, 3))
    row["cifar_full_width"] = plain(aps.decode([64] * 19), data, steps)
    search = _search_model(aps, keras, aps.APSResNetCifar(
        20, (4, 8, 16, 32, 64)), 2.05e7)
    pairs = tf.data.Dataset.zip((data, data))
    row["cifar_warmup"] = _timed(search, pairs, steps)
    search.start_search()
    row["cifar_search"] = _timed(search, pairs, steps)
    return row


def _imagenet(aps, keras, models, random, plain, steps):
    row = {}
    data = random(4, (224, 224, 3))
    row["imagenet_resnet18"] = plain(
        models.build("resnet18", (224, 224, 3), 10), data, steps)
    search = _search_model(aps, keras, aps.APSResNet(num_classes=10), 1.9e9,
                           reward_source="train", projection_interval=1)
    search.start_search()
    row["imagenet_search"] = _timed(search, data, steps)
    return row


def main():
    parser = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    parser.add_argument("--before", required=True)
    parser.add_argument("--rounds", type=int, default=1)
    parser.add_argument("--log", default="/tmp/aps/step_cost.jsonl")
    parser.add_argument("--shapes", default="cifar,imagenet")
    parser.add_argument("--imagenet_steps", type=int, default=2,
                        help="timed steps at ImageNet shape, after as many "
                             "traced ones")
    parser.add_argument("--measure", action="store_true",
                        help=argparse.SUPPRESS)  # one run (a subprocess)
    args = parser.parse_args()
    if args.measure:
        print("ROW " + json.dumps(measure(args.shapes.split(","),
                                          imagenet_steps=args.imagenet_steps)),
              flush=True)
        return
    order = []
    for k in range(args.rounds):
        pair = [("before", args.before), ("after", AFTER)]
        order += pair if k % 2 == 0 else pair[::-1]
    for name, tree in order:
        env = dict(os.environ, PYTHONPATH=tree)
        started = time.time()
        result = subprocess.run(
            [sys.executable, os.path.abspath(__file__), "--before=-",
             "--measure", f"--shapes={args.shapes}",
             f"--imagenet_steps={args.imagenet_steps}"], cwd=tree, env=env,
            capture_output=True, text=True)
        rows = [line[4:] for line in result.stdout.splitlines()
                if line.startswith("ROW ")]
        if not rows:
            sys.exit(f"{name} run failed:\n{result.stderr[-3000:]}")
        row = dict(json.loads(rows[0]), version=name, started=started,
                   load=os.getloadavg()[0])
        with open(args.log, "a") as f:
            f.write(json.dumps(row) + "\n")
        print(json.dumps(row), flush=True)


if __name__ == "__main__":
    main()
