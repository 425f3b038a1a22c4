"""APS benchmarks: search step time, and a short Fashion-MNIST search.

    python benchmarks/aps_bench.py steps     # step times (random data)
    python benchmarks/aps_bench.py toy [SEEDS LR EPOCHS WARMUP CLASSES]
                                             # tiny CPU search (spec 8.2)
    python benchmarks/aps_bench.py imagenet_counts  # ResNet-18 / MBv2
    python benchmarks/aps_bench.py imagenet_steps   # 224x224 step times

Results go to benchmarks/aps.md by hand; this prints them.
"""

import json
import sys
import time

import keras
import numpy as np
import tensorflow as tf

from keras_compact.methods import aps


class EpochTimer(keras.callbacks.Callback):
    def on_epoch_begin(self, epoch, logs=None):
        self.start = time.perf_counter()

    def on_epoch_end(self, epoch, logs=None):
        self.seconds = time.perf_counter() - self.start


def _random(batch, shape=(32, 32, 3)):
    x = np.random.normal(size=(batch,) + shape).astype("float32")
    y = np.random.randint(0, 10, batch).astype("int32")
    return tf.data.Dataset.from_tensors((x, y)).repeat()


def _timed_fit(model, data, steps):
    timer = EpochTimer()
    model.fit(data, epochs=2, steps_per_epoch=steps, verbose=0,
              callbacks=[timer])  # epoch 1 traces; epoch 2 is timed
    return timer.seconds / steps


def steps(batch=128, count=20):
    data = _random(batch)
    rows = {}
    for name, widths in (("resnet20 (16-32-64)", aps.standard_widths(20)),
                         ("full width (all 64)", [64] * 19)):
        model = aps.decode(widths)
        model.compile(keras.optimizers.SGD(0.1, momentum=0.9),
                      keras.losses.SparseCategoricalCrossentropy(
                          from_logits=True))
        rows[name] = _timed_fit(model, data, count)
    net = aps.APSResNetCifar(20, (4, 8, 16, 32, 64))
    search = aps.ChannelSearchModel(net, 2.05e7)
    search.compile(keras.optimizers.SGD(0.1, momentum=0.9),
                   keras.optimizers.SGD(1e-3, momentum=0.9),
                   keras.optimizers.Adam(1.6e-4, beta_1=0.5))
    pairs = tf.data.Dataset.zip((data, data))
    rows["supernet warm-up step"] = _timed_fit(search, pairs, count)
    search.start_search()
    rows["supernet search step"] = _timed_fit(search, pairs, count)
    base = rows["full width (all 64)"]
    for name, seconds in rows.items():
        print(f"| {name} | {seconds * 1000:.0f} ms | {seconds / base:.2f} |")


def toy(seeds="0,1,2", arch_lr="3e-3", epochs="8", warmup="4",
        classes="2"):
    """The slow test's tiny search (spec 8.2) at several seeds.

    ResNet-8 supernet (candidates 4/8/16) on 1,024 synthetic 16x16 images
    split 512/512, batch 32, budget 50% of the all-16 net, the paper's
    reward (beta -0.1, baseline decay 0.99, entropy 4e-3). One JSON line
    per seed: entropy, mean reward and mean sampled MACs / budget per
    search epoch, the selection.
    """
    from keras_compact import data as data_lib

    shape, classes = (16, 16, 3), int(classes)
    for seed in map(int, seeds.split(",")):
        keras.utils.set_random_seed(seed)
        dataset = data_lib.synthetic.make_synthetic(
            1024, 256, shape, num_classes=classes)
        splits = data_lib.make_splits(dataset, 32, validation_split=0.5,
                                      augment=False)
        net = aps.APSResNetCifar(8, (4, 8, 16), num_classes=classes,
                                 input_shape=shape)
        budget = 0.5 * aps.table_macs([16] * 7, shape)
        model = aps.ChannelSearchModel(net, budget)
        model.compile(keras.optimizers.SGD(0.1, momentum=0.9),
                      keras.optimizers.SGD(1e-2, momentum=0.9),
                      keras.optimizers.Adam(float(arch_lr), beta_1=0.5))
        pairs = tf.data.Dataset.zip((splits.train,
                                     splits.validation.repeat()))
        start = time.perf_counter()
        history = aps.run_search(model, pairs, int(epochs), int(warmup),
                                 verbose=0)
        result = aps.select_architecture(model, splits.validation, 10)
        search = slice(int(warmup), None)
        print(json.dumps(dict(
            seed=seed, classes=classes, arch_lr=float(arch_lr),
            seconds=round(time.perf_counter() - start),
            entropy=[round(e, 2) for e in history["entropy"][search]],
            reward=[round(r, 3) for r in history["reward"][search]],
            budget=[round(b, 3) for b in history["budget"][search]],
            shrunk=result["shrunk"], accuracy=result["accuracy"],
            chosen=result["charged_macs"] / budget)), flush=True)


def _count(variables):
    return int(sum(np.prod(v.shape) for v in variables))


def imagenet_counts():
    """Decoded conv+fc MACs / params of the shipped ImageNet configs and
    the full-width supernets' parameter groups and table MACs."""
    from keras_compact import models
    from keras_compact import profiling

    rows = {}
    for name, decoder in (("resnet18_1.83G", aps.decode_resnet18),
                          ("resnet18_1.05G", aps.decode_resnet18),
                          ("mobilenet_v2_314M", aps.decode_mobilenet_v2),
                          ("mobilenet_v2_156M", aps.decode_mobilenet_v2)):
        counts = profiling.profile(decoder(aps.SEARCHED_WIDTHS[name]))
        rows[name] = (counts.macs, counts.params)
    for name in ("resnet18", "mobilenet_v2"):
        counts = profiling.profile(models.build(name, (224, 224, 3), 1000))
        rows[name] = (counts.macs, counts.params)
    for net in (aps.APSResNet(), aps.APSMobileNetV2()):
        n = net.num_decisions
        rows[net.__class__.__name__] = dict(
            decisions=n, meta=_count(net.meta_variables),
            projections=_count(net.projection_variables),
            table_min=net.macs(np.zeros(n, "int64")),
            table_standard=net.macs(np.full(n, 2)),
            table_max=net.macs(np.full(n, 3)),
            standard_widths=net.widths(np.full(n, 2)))
        del net
    print(json.dumps(rows, indent=1))


def imagenet_steps(batch=8, count=10):
    """One ImageNet search step (ResNet-18 supernet, 224x224, training-batch
    reward) vs a plain ResNet-18 training step, same batch."""
    from keras_compact import models

    data = _random(batch, (224, 224, 3))
    model = models.build("resnet18", (224, 224, 3), 1000)
    model.compile(keras.optimizers.SGD(0.1, momentum=0.9),
                  keras.losses.SparseCategoricalCrossentropy(
                      from_logits=True))
    rows = {"resnet18": _timed_fit(model, data, count)}
    net = aps.APSResNet()
    for interval in (10, 1):  # the ImageNet reference's, then CIFAR's
        search = aps.ChannelSearchModel(net, 1.9e9, entropy_coeff=0.5,
                                        reward_source="train",
                                        projection_interval=interval)
        search.compile(keras.optimizers.SGD(0.1, momentum=0.9),
                       keras.optimizers.SGD(1e-3, momentum=0.9),
                       keras.optimizers.Adam(1.6e-4, beta_1=0.5))
        if interval == 10:
            rows["warmup"] = _timed_fit(search, data, count)
        search.start_search()
        rows[f"search_interval_{interval}"] = _timed_fit(search, data,
                                                          count)
        rows[f"traces_{interval}"] = search.traces
    print(json.dumps(dict(batch=batch, **rows), indent=1))


if __name__ == "__main__":
    {"steps": steps, "toy": toy, "imagenet_counts": imagenet_counts,
     "imagenet_steps": imagenet_steps}[sys.argv[1]](*sys.argv[2:])
