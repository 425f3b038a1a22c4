"""Benchmarks methods side by side: size, MACs, LiteRT latency, speed.

  python -m tools.benchmark --pairs=baseline:resnet20,baseline:resnet56
  python -m tools.benchmark --pairs=baseline:resnet20 --runs=runs/baseline
  python -m tools.benchmark --pairs=aps:resnet20:widths=resnet20_20.6M

Each `method:arch` pair is built with its recipe (keras_compact/configs),
transformed to its deployable form and measured: params and MACs of the
deployable model, `.tflite` size, LiteRT batch-1 latency (float32 and int8,
median of repeats), and training images/s of the trainable model. `--runs`
adds workdirs of finished trainings (their deployable.keras and test
accuracy). Writes <output>.md, <output>.json and, with accuracies, a PNG of
accuracy vs MACs.

  python -m tools.benchmark --compare=pytorch --archs=resnet20,resnet56
  python -m tools.benchmark --compare=pytorch \
      --pairs=slimconv:sc_resnet20,od:resnet56,aps:resnet20
  python -m tools.benchmark --compare=grouped_conv

`--compare=pytorch` trains each pair's trainable model (built and compiled
by its method's hooks, with the method's train step) and its PyTorch twin
(`torch_models.py` beside this file, eager channels_last) with the same
batch, SGD momentum and L2, interleaving rounds of steps, and prints
images/s of each, their ratio and the model-FLOP utilisation against a
measured fp32 matmul peak; it fails if the two sides differ in trainable
params or MACs. `--archs` are `baseline:<arch>` pairs.
`--compare=grouped_conv` times forward+backward of the group block's
grouped conv and X-Nets' gathered expander conv against PyTorch's
`nn.Conv2d(groups=g)` of the same shape.
Both need `pip install -e .[bench]`.
"""

import dataclasses
import json
import math
import os

from absl import flags
from absl import logging

os.environ.setdefault("TF_CPP_MIN_LOG_LEVEL", "2")

import keras  # noqa: E402
import numpy as np  # noqa: E402

from keras_compact import benchmarking  # noqa: E402
from keras_compact import cli  # noqa: E402
from keras_compact import data  # noqa: E402
from keras_compact import layers  # noqa: E402
from keras_compact import methods  # noqa: E402
from keras_compact import models  # noqa: E402
from keras_compact import optimizers  # noqa: E402
from keras_compact import profiling  # noqa: E402
from keras_compact.configs import loader  # noqa: E402
from keras_compact.errors import UsageError  # noqa: E402
from keras_compact.registry import Registry  # noqa: E402

FLAGS = flags.FLAGS
flags.DEFINE_list("pairs", ["baseline:resnet20"], "method:arch pairs; "
                  "method:arch:key=value;key=value sets recipe fields.")
flags.DEFINE_list("runs", [], "Workdirs of finished trainings to include.")
flags.DEFINE_enum("dataset", "cifar10", list(benchmarking.DATASET_SHAPES),
                  "Sets input shape and classes; synthetic data of that "
                  "shape is used.")
flags.DEFINE_integer("batch_size", 128, "Training batch for images/s.",
                     lower_bound=1)
flags.DEFINE_integer("train_steps", 15, "Timed training steps.",
                     lower_bound=1)
flags.DEFINE_integer("threads", 1, "LiteRT interpreter threads.",
                     lower_bound=1)
flags.DEFINE_bool("int8", True, "Also measure int8 LiteRT latency.")
flags.DEFINE_string("output", "benchmark", "Output path prefix.")
flags.DEFINE_bool("jit_compile", False, "Train with XLA for the images/s "
                  "column.")
flags.DEFINE_bool("input_pipeline", False, "Also measure the training "
                  "tf.data pipeline of --dataset (images/s).")
flags.DEFINE_enum("compare", "", ["", "pytorch", "grouped_conv"],
                  "Compare speed with PyTorch instead of the method table: "
                  "pytorch (training of --archs / --pairs twins) or "
                  "grouped_conv (grouped layers, forward+backward).")
flags.DEFINE_list("archs", ["resnet20", "resnet56"], "CIFAR ResNets for "
                  "--compare=pytorch (baseline:<arch> pairs; --pairs "
                  "given alone replaces them).")
flags.DEFINE_integer("rounds", 5, "Interleaved rounds for --compare.",
                     lower_bound=1)

def split_pair(pair):
    """`"method:arch:k=v;k=v"` -> `(method, arch, "k=v,k=v")`."""
    method_name, _, rest = pair.partition(":")
    arch, _, recipe_arg = rest.partition(":")
    return method_name, arch, recipe_arg.replace(";", ",")


def pair_config(pair, dataset="cifar10", jit_compile=False, defaults=""):
    """The recipe of a `method:arch[:key=value;...]` pair.

    `defaults` (`key=value;...`) come before the pair's own settings.
    """
    method_name, arch, recipe_arg = split_pair(pair)
    config = loader.load(method_name, arg=",".join(filter(None, (
        f"arch={arch}" if arch else "", defaults.replace(";", ","),
        recipe_arg))))
    config.dataset = dataset
    config.jit_compile = jit_compile
    return config


def _measure_pair(pair):
    config = pair_config(pair, FLAGS.dataset, FLAGS.jit_compile)
    input_shape, num_classes = benchmarking.DATASET_SHAPES[FLAGS.dataset]
    method = methods.get(config.method)
    model = method.build_model(config, input_shape, num_classes)
    method.compile_model(model, optimizers.make_optimizer(config, 100),
                         config)
    images_per_second = benchmarking.training_throughput(
        model, input_shape, num_classes, FLAGS.batch_size, FLAGS.train_steps)
    deployable = method.deployable(model, benchmarking.synthetic_context(
        config, input_shape, num_classes))
    row = _measure_deployable(deployable)
    row.update(method=config.method, arch=config.arch,
               train_images_per_second=round(images_per_second, 1))
    return row


def _measure_deployable(model):
    report = profiling.profile(model)
    # The deployable's own name: the X-Net of `--arch=densenet_bc_40_24` is
    # x_densenet_bc_40_24_2, not the dense arch it was built from.
    row = {"model": model.name, "params": report.params,
           "macs": report.macs}
    row["latency_ms_float32"], row["tflite_bytes"] = (
        benchmarking.litert_latency(model, threads=FLAGS.threads))
    if FLAGS.int8:
        row["latency_ms_int8"], row["tflite_bytes_int8"] = (
            benchmarking.litert_latency(model, "int8",
                                        threads=FLAGS.threads))
    return row


def _read_run(workdir):
    """The metrics of a finished training; fails before anything is timed."""
    needed = ("metrics.json", "deployable.keras")
    missing = [n for n in needed
               if not os.path.isfile(os.path.join(workdir, n))]
    if missing:
        raise UsageError(f"--runs={workdir} has no {' or '.join(missing)}; "
                         "give the --workdir of a finished training.")
    try:
        with open(os.path.join(workdir, "metrics.json")) as f:
            metrics = json.load(f)
        return {key: metrics[key] for key in _RUN_METRICS}
    except (ValueError, KeyError, TypeError) as error:
        raise UsageError(f"--runs={workdir}: metrics.json is not the file of "
                         f"a finished training ({error!r}).") from None


_RUN_METRICS = ("method", "arch", "test_accuracy", "train_images_per_second")


def _measure_run(workdir, metrics):
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
        axes.annotate(f"{row['method']}:{row['model']}",
                      (row["macs"] / 1e6, row["accuracy"] * 100), fontsize=7)
    axes.set_xlabel("MACs (millions)")
    axes.set_ylabel("test accuracy (%)")
    figure.tight_layout()
    figure.savefig(path, dpi=120, bbox_inches="tight")  # no clipped labels


# -- Training speed against PyTorch (--compare=pytorch) ---------------------

# The optimizer of every compared training: SGD momentum 0.9, coupled L2.
LEARNING_RATE, MOMENTUM, L2 = 0.01, 0.9, 1e-4


def _trainable_params(model):
    return sum(math.prod(w.shape) for w in model.trainable_weights)


def _od_macs(model):
    # The OD model is subclassed (profiling walks functional models): its
    # students plus the online teacher's classifier.
    students = sum(profiling.profile(s).macs for s in model.students)
    return students + math.prod(model.teacher_fc.kernel.shape)


# Forward MACs of a method's trainable model as `profiling` counts them.
KERAS_MACS = Registry("Keras MAC counter")
KERAS_MACS.register("od", _od_macs)


def keras_macs(method_name, model):
    if method_name in KERAS_MACS:
        return KERAS_MACS.get(method_name)(model)
    return profiling.profile(model).macs


def keras_trainer(config, input_shape, num_classes, x, y):
    """The method's trainable model, built and compiled by its hooks.

    Returns `(model, step)`: `step()` runs one `train_on_batch` of the
    method's own train step on `(x, y)` and returns the loss as a float
    (read back, so no part of the step can be pruned). `prepare` is not
    called: it runs searches (APS), not training.
    """
    import tensorflow as tf

    method = methods.get(config.method)
    model = method.build_model(config, input_shape, num_classes)
    method.compile_model(model, optimizers.L2SGD(
        learning_rate=LEARNING_RATE, momentum=MOMENTUM, l2=L2), config)
    x, y = tf.constant(x), tf.constant(y)

    def step():
        return float(model.train_on_batch(x, y, return_dict=True)["loss"])

    return model, step


def torch_trainer(twin, config, input_shape, num_classes, x, y):
    """The twin in eager channels_last with SGD; `(model, step)`."""
    import torch

    model = twin.build(config, input_shape, num_classes)
    model = model.to(memory_format=torch.channels_last).train()
    optimizer = torch.optim.SGD(model.parameters(), lr=LEARNING_RATE,
                                momentum=MOMENTUM, weight_decay=L2)
    loss_fn = twin.loss(config)
    x = torch.from_numpy(x.transpose(0, 3, 1, 2).copy()).contiguous(
        memory_format=torch.channels_last)
    y = torch.from_numpy(y.astype("int64"))

    def step():
        optimizer.zero_grad(set_to_none=True)
        loss = loss_fn(model(x), y)
        loss.backward()
        optimizer.step()
        return loss.item()

    return model, step


def _checked_counts(name, keras_model, twin_model, method_name,
                    input_shape):
    """Params and MACs of both sides; fails loudly if they differ."""
    from keras_compact.tools import torch_models

    ours = _trainable_params(keras_model), keras_macs(method_name,
                                                      keras_model)
    macs, executed = torch_models.count_macs(twin_model, input_shape)
    theirs = torch_models.trainable_params(twin_model), macs
    if ours != theirs:
        raise RuntimeError(
            f"{name}: the PyTorch twin is not the trained model: keras "
            f"(params, MACs) {ours} vs PyTorch {theirs}. Fix the twin in "
            "keras_compact/tools/torch_models.py.")
    return ours[0], macs, executed


def compare_pytorch(pairs, batch_size=128, rounds=5, steps=15,
                    dataset="cifar10", jit_compile=False, warmup=3):
    """Interleaved training-speed comparison with PyTorch twins.

    Args:
        pairs: `method:arch[:key=value;...]` pairs with a twin in
            `tools.torch_models.TWINS`.
        batch_size, rounds, steps: `benchmarking.interleaved_rates`' batch,
            rounds and steps per round (after `warmup` steps).

    Returns:
        One row per pair: params, counted and executed forward MACs,
        images/s and model-FLOP utilisation of each framework (6 x
        executed MACs per image over the best measured matmul rate), and
        `ratio` = keras_compact / PyTorch images/s.
    """
    import torch

    from keras_compact.tools import torch_models

    torch.set_num_threads(os.cpu_count())
    input_shape, num_classes = benchmarking.DATASET_SHAPES[dataset]
    peak = benchmarking.matmul_peak_flops()
    rng = np.random.default_rng(0)
    x = rng.normal(size=(batch_size, *input_shape)).astype("float32")
    y = rng.integers(0, num_classes, batch_size).astype("int32")
    rows = []
    for pair in pairs:
        method_name, arch, _ = split_pair(pair)
        arch = arch or pair_config(pair, dataset).arch
        name = f"{method_name}:{arch}"
        twin = torch_models.TWINS.get(name)
        config = pair_config(pair, dataset, jit_compile, twin.recipe)
        keras_model, keras_step = keras_trainer(config, input_shape,
                                                num_classes, x, y)
        twin_model, torch_step = torch_trainer(twin, config, input_shape,
                                               num_classes, x, y)
        params, macs, executed = _checked_counts(
            name, keras_model, twin_model, method_name, input_shape)
        rates = benchmarking.interleaved_rates(
            {"keras_compact": keras_step, "pytorch": torch_step},
            batch_size, rounds, steps, warmup)
        # The machine may be busier at one time than another: the best
        # matmul rate seen is the peak.
        peak = max(peak, benchmarking.matmul_peak_flops())
        row = {"pair": pair, "method": method_name, "arch": arch,
               "params": params, "forward_macs": macs,
               "executed_macs": executed, "peak_gflops": peak / 1e9}
        for framework, rate in rates.items():
            # Training ~ 3x the forward pass; one MAC is two FLOPs.
            flops = 6 * executed * rate
            if flops > peak:
                raise RuntimeError(
                    f"{framework} {name}: {flops / 1e9:.0f} GFLOP/s exceeds "
                    "the measured peak; the measurement is wrong.")
            row[f"{framework}_images_per_second"] = rate
            row[f"{framework}_mfu"] = flops / peak
        ours = row["keras_compact_images_per_second"]
        theirs = row["pytorch_images_per_second"]
        row["ratio"] = ours / theirs
        print(f"{name}: keras_compact {ours:.0f} img/s, pytorch "
              f"{theirs:.0f} img/s, ratio {row['ratio']:.2f}, MFU "
              f"{row['keras_compact_mfu']:.1%} vs {row['pytorch_mfu']:.1%} "
              f"of {peak / 1e9:.0f} GFLOP/s", flush=True)
        rows.append(row)
    return rows


def _compare_pairs():
    """`--pairs` if given; `--archs` are `baseline:<arch>` pairs."""
    pairs = list(FLAGS.pairs) if FLAGS["pairs"].present else []
    if FLAGS["archs"].present or not pairs:
        pairs = [f"baseline:{arch}" for arch in FLAGS.archs] + pairs
    return pairs


# -- Grouped convolutions against PyTorch's (--compare=grouped_conv) ---------


@dataclasses.dataclass(frozen=True)
class GroupedCase:
    """One layer shape: `form` (a `GROUPED_FORMS` name) vs
    `nn.Conv2d(cin, cout, kernel, groups=groups)` on the same input."""

    name: str
    form: str
    batch: int
    size: int
    cin: int
    cout: int
    kernel: int
    groups: int


def _group_block_conv(case):
    """The grouped 3x3 of `layers.GroupBlock` (C -> C, `groups` groups)."""
    block = layers.GroupBlock(case.cout, groups=case.groups)
    return block.spatial(case.cin, "1")


def _xnet_gather(case, **kwargs):
    """X-Nets' gathered expander conv with ES = `groups`: every output sees
    `cin / groups` inputs, the MACs of the grouped conv."""
    return layers.ExpanderConv2D(case.cout, case.kernel, padding="same",
                                 density=1 / case.groups, impl="gather",
                                 seed=0, **kwargs)


# Keras layer of each form, built from a GroupedCase.
GROUPED_FORMS = Registry("grouped-conv form")
GROUPED_FORMS.register("group_block", _group_block_conv)
# The channel-level graph of X-DenseNet (one input list per output).
GROUPED_FORMS.register("xnet_gather", _xnet_gather)
# A block expander: ES output blocks, inputs in contiguous chunks.
GROUPED_FORMS.register("xnet_gather_block", lambda case: _xnet_gather(
    case, groups=case.groups, chunks=4 * case.groups))

# Shapes of the default models (OD's group students g=4 at the CIFAR
# batch 128; X-DenseNet-BC-40-24-2 layers at its batch 64) and
# ImageNet-like ones (ResNeXt-50 32x4d, a g=8 stage; batch 32).
GROUPED_CASES = tuple(
    GroupedCase(f"{prefix} {size}x{size} {cin}->{cout} k{kernel} g{groups}",
                form, batch, size, cin, cout, kernel, groups)
    for prefix, forms, batch, size, cin, cout, kernel, groups in (
        ("od group", ("group_block",), 128, 32, 16, 16, 3, 4),
        ("od group", ("group_block",), 128, 16, 32, 32, 3, 4),
        ("od group", ("group_block",), 128, 8, 64, 64, 3, 4),
        ("x-densenet", ("xnet_gather", "xnet_gather_block"), 64, 32, 48,
         96, 1, 2),
        ("x-densenet", ("xnet_gather", "xnet_gather_block"), 64, 32, 96,
         24, 3, 2),
        ("x-densenet", ("xnet_gather", "xnet_gather_block"), 64, 8, 240,
         96, 1, 2),
        ("imagenet", ("group_block",), 32, 56, 128, 128, 3, 32),
        ("imagenet", ("group_block", "xnet_gather_block"), 32, 28, 256,
         256, 3, 8),
        ("imagenet", ("xnet_gather",), 32, 14, 256, 256, 3, 8),
    )
    for form in forms)


def keras_grouped_step(case):
    """Forward + backward (input and weight gradients) of the case's Keras
    layer on a fixed random batch; `step()` returns the loss."""
    import tensorflow as tf

    layer = GROUPED_FORMS.get(case.form)(case)
    x = tf.random.stateless_normal(
        (case.batch, case.size, case.size, case.cin), seed=(0, 0))
    layer(x)

    @tf.function
    def forward_backward():
        with tf.GradientTape() as tape:
            tape.watch(x)
            loss = tf.reduce_mean(tf.square(layer(x)))
        # The gradients are outputs, so TF computes them all.
        return loss, tape.gradient(loss, [x, *layer.trainable_weights])

    return lambda: float(forward_backward()[0])


def torch_grouped_step(case):
    """The same for PyTorch's `nn.Conv2d(groups=g)`, channels_last."""
    import torch

    conv = torch.nn.Conv2d(case.cin, case.cout, case.kernel,
                           padding=case.kernel // 2, groups=case.groups,
                           bias=False).to(memory_format=torch.channels_last)
    x = torch.randn(case.batch, case.cin, case.size, case.size).contiguous(
        memory_format=torch.channels_last).requires_grad_()

    def step():
        x.grad = conv.weight.grad = None
        loss = conv(x).square().mean()
        loss.backward()
        return loss.item()

    return step


def compare_grouped_conv(cases=GROUPED_CASES, rounds=5, steps=10, warmup=3):
    """Interleaved forward+backward speed of grouped layers vs PyTorch.

    Returns one row per case with images/s of both and `speedup` =
    keras_compact / PyTorch (the target is >= 1.5).
    """
    import torch

    torch.set_num_threads(os.cpu_count())
    rows = []
    for case in cases:
        rates = benchmarking.interleaved_rates(
            {"keras_compact": keras_grouped_step(case),
             "pytorch": torch_grouped_step(case)},
            case.batch, rounds, steps, warmup)
        row = dict(dataclasses.asdict(case), **{
            f"{name}_images_per_second": rate
            for name, rate in rates.items()})
        row["speedup"] = rates["keras_compact"] / rates["pytorch"]
        print(f"{case.name} {case.form} (batch {case.batch}): keras_compact "
              f"{rates['keras_compact']:.0f} img/s, pytorch "
              f"{rates['pytorch']:.0f} img/s, speedup "
              f"{row['speedup']:.2f}", flush=True)
        rows.append(row)
    return rows


# --compare=NAME: each returns JSON rows (options from the flags).
COMPARISONS = Registry("comparison")
COMPARISONS.register("pytorch", lambda: compare_pytorch(
    _compare_pairs(), FLAGS.batch_size, FLAGS.rounds, FLAGS.train_steps,
    FLAGS.dataset, FLAGS.jit_compile))
COMPARISONS.register("grouped_conv", lambda: compare_grouped_conv(
    rounds=FLAGS.rounds, steps=FLAGS.train_steps))


def _check_flags():
    folder = os.path.dirname(FLAGS.output) or "."
    if not os.path.isdir(folder):
        raise UsageError(f"--output={FLAGS.output}: folder {folder} does not "
                         "exist.")
    for pair in FLAGS.pairs:
        method_name, arch, _ = split_pair(pair)
        methods.get(method_name)
        if arch:
            models.registry.ARCHITECTURES.get(arch)
    return {workdir: _read_run(workdir) for workdir in FLAGS.runs}


def main(argv):
    del argv
    logging.set_verbosity(logging.WARNING)
    runs = _check_flags()
    if FLAGS.compare:
        rows = COMPARISONS.get(FLAGS.compare)()
        with open(f"{FLAGS.output}.json", "w") as f:
            json.dump(rows, f, indent=2)
        return
    if FLAGS.input_pipeline:
        splits = data.make_splits(data.load(FLAGS.dataset), FLAGS.batch_size)
        rate = benchmarking.input_throughput(splits.train)
        print(f"{FLAGS.dataset} training pipeline: {rate:.0f} images/s")
    rows = [_measure_pair(p) for p in FLAGS.pairs]
    rows = benchmarking.add_ratios(
        rows + [_measure_run(w, m) for w, m in runs.items()])
    table = benchmarking.markdown(rows)
    print(table)
    with open(f"{FLAGS.output}.md", "w") as f:
        f.write(table + "\n")
    with open(f"{FLAGS.output}.json", "w") as f:
        json.dump(rows, f, indent=2)
    with_accuracy = [r for r in rows if "accuracy" in r]
    if with_accuracy:
        _plot(with_accuracy, f"{FLAGS.output}.png")


def run():
    """The `keras-compact-benchmark` console script."""
    cli.run(main)


if __name__ == "__main__":
    run()
