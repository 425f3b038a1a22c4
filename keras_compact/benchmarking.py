"""Measurements behind tools.benchmark: LiteRT latency, training speed.

Timings on shared machines are noisy: report medians of repeats and compare
models as ratios measured in the same run.
"""

import collections
import dataclasses
import glob
import logging
import math
import os
import re
import statistics
import tempfile
import time

import keras
import numpy as np
import tensorflow as tf

from keras_compact import data
from keras_compact import distribute
from keras_compact import export
from keras_compact import training

# Input shape and classes of each dataset, known without loading it.
DATASET_SHAPES = {
    "cifar10": ((32, 32, 3), 10), "cifar100": ((32, 32, 3), 100),
    "fashion_mnist": ((28, 28, 1), 10), "synthetic": ((32, 32, 3), 10),
    "imagenet": ((224, 224, 3), 1000),
}


def synthetic_context(config, input_shape, num_classes, images=64):
    """A `training.Context` on random images of the model's input shape.

    For `method.deployable` outside a run: OD, for one, picks its deployed
    student on the validation split, so it needs one. The data is random:
    the choice is arbitrary, the model's shape and size are what count.
    """
    rng = np.random.default_rng(0)
    x = rng.integers(0, 256, (images, *input_shape), dtype=np.uint8)
    y = rng.integers(0, num_classes, images).astype(np.int32)
    channels = input_shape[-1]
    dataset = data.ImageDataset(x, y, x, y, num_classes, (127.5,) * channels,
                                (64.0,) * channels)
    splits = data.make_splits(dataset, images // 4, validation_split=0.25)
    return training.Context(config, distribute.get("default"), "", splits)

log = logging.getLogger("keras_compact")


def litert_latency(model, quantization="float32", repeats=7, invokes=50,
                   threads=1, representative_data=None):
    """Median batch-1 LiteRT latency in ms, and the `.tflite` size in bytes.

    Args:
        model: a Keras model with a fixed input shape (batch excluded).
        quantization: `"float32"`, `"float16"` or `"int8"`.
        repeats, invokes: the median is over `repeats` means of `invokes`.
        threads: interpreter threads (1 is what phone numbers usually use).
        representative_data: calibration inputs for int8 (random if None).
    """
    from ai_edge_litert import interpreter as litert

    shape = tuple(model.inputs[0].shape[1:])
    if representative_data is None and quantization == "int8":
        representative_data = np.random.default_rng(0).normal(
            size=(32, *shape)).astype("float32")
    with tempfile.TemporaryDirectory() as tmp:
        path = export.to_litert(model, os.path.join(tmp, "m.tflite"),
                                quantization, representative_data)
        size = os.path.getsize(path)
        try:
            interpreter = _ready_interpreter(litert, path, threads, shape)
        except RuntimeError as error:
            # XNNPACK refuses some int8 graphs (e.g. an int8 op it lacks); time
            # LiteRT's builtin kernels instead, as a deployment would.
            log.warning("XNNPACK failed (%s); timing builtin kernels.",
                        str(error).splitlines()[0])
            interpreter = _ready_interpreter(
                litert, path, threads, shape,
                litert.OpResolverType.BUILTIN_WITHOUT_DEFAULT_DELEGATES)
    means = []
    for _ in range(repeats):
        start = time.perf_counter()
        for _ in range(invokes):
            interpreter.invoke()
        means.append((time.perf_counter() - start) / invokes * 1e3)
    return statistics.median(means), size


def randomize_bn_statistics(model, seed=0):
    """Non-trivial BN moving statistics, as a trained model would have.

    Equality checks and latency runs of untrained models then do not test
    zeros: means ~ N(0, 0.1), variances ~ U(0.5, 1.5).
    """
    rng = np.random.default_rng(seed)
    for layer in model.layers:
        if isinstance(layer, keras.layers.BatchNormalization):
            layer.moving_mean.assign(rng.normal(
                size=layer.moving_mean.shape) * 0.1)
            layer.moving_variance.assign(rng.uniform(
                0.5, 1.5, layer.moving_variance.shape))
    return model


def _ready_interpreter(litert, path, threads, shape, resolver=None):
    kwargs = {} if resolver is None else {
        "experimental_op_resolver_type": resolver}
    interpreter = litert.Interpreter(model_path=path, num_threads=threads,
                                     **kwargs)
    interpreter.allocate_tensors()
    (inp,) = interpreter.get_input_details()
    interpreter.set_tensor(inp["index"], np.zeros((1, *shape), inp["dtype"]))
    for _ in range(5):
        interpreter.invoke()
    return interpreter


def set_threads(intra_op, inter_op):
    """Sizes TensorFlow's intra-op and inter-op thread pools (0: TF's choice).

    TensorFlow fixes its pools when it runs its first op, so this must come
    before; asking for other sizes afterwards raises a `RuntimeError` that
    says so (asking for the current ones is a no-op).
    """
    threading = tf.config.threading
    if (threading.get_intra_op_parallelism_threads(),
            threading.get_inter_op_parallelism_threads()) == (intra_op,
                                                              inter_op):
        return
    try:
        threading.set_intra_op_parallelism_threads(intra_op)
        threading.set_inter_op_parallelism_threads(inter_op)
    except RuntimeError as error:
        raise RuntimeError(
            f"Cannot size TensorFlow's thread pools to intra_op={intra_op}, "
            f"inter_op={inter_op}: TensorFlow has already run ops in this "
            "process. Set them before anything else runs, or in a new "
            "process.") from error


def _synthetic_batches(shape, num_classes, batch_size):
    rng = np.random.default_rng(0)
    x = rng.normal(size=(batch_size, *shape)).astype("float32")
    y = rng.integers(0, num_classes, batch_size).astype("int32")
    return tf.data.Dataset.from_tensors((x, y)).repeat()


class _StepTimer(keras.callbacks.Callback):
    def __init__(self, warmup):
        super().__init__()
        self.warmup = warmup
        self.times = []

    def on_train_batch_begin(self, batch, logs=None):
        self._start = time.perf_counter()

    def on_train_batch_end(self, batch, logs=None):
        if batch >= self.warmup:
            # Reading the loss waits for the step: nothing is left pending.
            float(logs["loss"])
            self.times.append(time.perf_counter() - self._start)


def training_throughput(model, shape, num_classes, batch_size=128, steps=20,
                        warmup=3):
    """Training images/s of a compiled model on random data (median step).

    The model must be compiled (with its method's optimizer and train step);
    `shape` is one input image's shape.
    """
    timer = _StepTimer(warmup)
    model.fit(_synthetic_batches(shape, num_classes, batch_size),
              steps_per_epoch=steps + warmup, epochs=1, verbose=0,
              shuffle=False, callbacks=[timer])
    return batch_size / statistics.median(timer.times)


def input_throughput(dataset, epochs=2):
    """Images/s of a batched `tf.data` pipeline (median of full passes)."""
    rates = []
    for _ in range(epochs):
        start, count = time.perf_counter(), 0
        for images, _ in dataset:
            count += int(images.shape[0])
        rates.append(count / (time.perf_counter() - start))
    return statistics.median(rates)


def matmul_peak_flops(size=2048, repeats=10):
    """Measured fp32 FLOP/s of a large TF matmul: the CPU's practical peak."""
    a = tf.random.normal((size, size))
    b = tf.random.normal((size, size))
    matmul = tf.function(lambda a, b: tf.reduce_sum(tf.matmul(a, b)))
    float(matmul(a, b))
    best = 0.0
    for _ in range(repeats):
        start = time.perf_counter()
        float(matmul(a, b))
        best = max(best, 2 * size**3 / (time.perf_counter() - start))
    return best


def interleaved_rates(steps, batch_size, rounds, steps_per_round, warmup=3):
    """Images/s of several training-step callables, measured in turns.

    Args:
        steps: `{name: step}`; each call runs one training step and returns
            its loss as a Python float.
        rounds: each round times `steps_per_round` steps of every entry in
            turn, so machine noise hits all of them alike.

    Returns:
        `{name: median images/s over the rounds}`.
    """
    for step in steps.values():
        for _ in range(warmup):
            step()
    samples = {name: [] for name in steps}
    for _ in range(rounds):
        for name, step in steps.items():
            start = time.perf_counter()
            for _ in range(steps_per_round):
                step()
            samples[name].append(batch_size * steps_per_round
                                 / (time.perf_counter() - start))
    return {name: statistics.median(v) for name, v in samples.items()}


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


# Categories of `step_time_breakdown`, first match wins: each pattern is
# searched in "op/name/scope:OpType" of a traced device op, after
# `{optimizer}` is replaced by the optimizer's name scope. oneDNN renames
# kernels (`_MklNativeConv2D`, `_MklNativeFusedBatchNormV3`, ...), so the
# patterns allow a `_Mkl(Native)?` prefix or a fused variant.
_ELEMENTWISE = (
    "Relu|Relu6|Elu|Selu|LeakyRelu|Sigmoid|Tanh|Softplus|Mish|Gelu|Add|AddV2|"
    "AddN|Sub|Mul|RealDiv|Div|DivNoNan|Neg|Abs|Sign|Exp|Log|Pow|Square|"
    "SquaredDifference|Sqrt|Rsqrt|Reciprocal|Maximum|Minimum|Select|SelectV2|"
    "BiasAdd|Cast|ZerosLike|OnesLike|Fill|ClipByValue|Floor|Round|Equal|"
    "Greater|GreaterEqual|Less|LessEqual|LogicalAnd|LogicalNot")
OP_CATEGORIES = (
    ("optimizer update", r"(^|/){optimizer}/|:ResourceApply\w+$"),
    ("conv backprop filter", r":\w*Conv\w*BackpropFilter\w*$"),
    ("conv backprop input", r":\w*Conv\w*BackpropInput\w*$"),
    ("conv forward", r":\w*(Conv2D|Conv3D|DepthwiseConv2dNative)\w*$"),
    ("batch norm", r":\w*BatchNorm\w*$"),
    ("matmul", r":\w*MatMul\w*$"),
    ("reduction / loss", r":(Sum|Mean|Max|Min|Prod|ArgMax|ArgMin|BiasAddGrad"
                         r"|\w*Softmax\w*)$"),
    ("elementwise", rf":(_Mkl(Native)?|_Fused)?({_ELEMENTWISE})(Grad)?$"),
    ("pooling", r":\w*(MaxPool|AvgPool)\w*$"),
    ("data / copy / layout",
     r":(IteratorGetNext\w*|_Send|_Recv|_HostSend|_HostRecv|Identity\w*|"
     r"Copy\w*|Pad|PadV2|MirrorPad|Slice|StridedSlice\w*|Concat\w*|Split\w*|"
     r"Reshape|Transpose|Tile|Gather\w*|Pack|Unpack|Squeeze|ExpandDims|"
     r"Shape\w*|\w*MklToTf|\w*TfToMkl)$"),
    ("variables", r":(ReadVariableOp|AssignVariableOp|Assign(Add|Sub)"
                  r"VariableOp|VarHandleOp)$"),
)
OTHER = "other"
OVERHEAD = "Python / runtime overhead"
# A traced device op is named "op/name/scope:OpType"; other trace events
# (executor, thread pool, eager runtime) have no such name.
_OP_EVENT = re.compile(r"([^:]+):(\w+)")


def _categorizer(optimizer_name):
    patterns = [(category, re.compile(pattern.replace(
        "{optimizer}", re.escape(optimizer_name))))
        for category, pattern in OP_CATEGORIES]

    def categorize(full_name):
        return next((category for category, pattern in patterns
                     if pattern.search(full_name)), OTHER)

    return categorize


@dataclasses.dataclass
class StepBreakdown:
    """Where one training step's wall time goes, from a profiler trace.

    All times are milliseconds per step. Ops that run at the same time on
    different executor threads share that time equally, so the categories
    (with `OVERHEAD`, the time no op ran: Python, Keras's loop, the eager
    runtime, waiting) add up to `wall_ms`.

    Attributes:
        wall_ms: step wall time while traced.
        untraced_wall_ms: median wall time of the warm-up steps after the
            first (the profiler's own cost is the difference).
        categories: category -> ms, largest first, `OVERHEAD` included.
        op_types: `(op type, category, ms, thread ms, calls)` per op type
            and category, largest first; thread ms is the ops' summed
            durations (more than their wall share when ops overlap).
        top_ops: `(op name, op type, category, ms)`, the largest ops.
    """

    wall_ms: float
    untraced_wall_ms: float
    categories: dict
    op_types: list
    top_ops: list

    def table(self, top=10):
        """Categories and the `top` op types as Markdown tables."""
        rows = ["| category | ms / step | share |", "|---|---:|---:|"]
        for category, ms in self.categories.items():
            rows.append(f"| {category} | {ms:.2f} | "
                        f"{ms / self.wall_ms:.1%} |")
        rows.append(f"| step wall time (traced) | {self.wall_ms:.2f} | |")
        rows.append(f"| step wall time (untraced) | "
                    f"{self.untraced_wall_ms:.2f} | |")
        rows += ["", "| op type | category | ms / step | thread ms / step "
                 "| calls / step |", "|---|---|---:|---:|---:|"]
        for op_type, category, ms, thread_ms, calls in self.op_types[:top]:
            rows.append(f"| {op_type} | {category} | {ms:.2f} | "
                        f"{thread_ms:.2f} | {calls:g} |")
        return "\n".join(rows)


class _TracedSteps(keras.callbacks.Callback):
    """Times every step; traces the steps after `warmup` with the profiler."""

    def __init__(self, warmup, logdir):
        super().__init__()
        self.warmup = warmup
        self.logdir = logdir
        self.untraced = []
        self.window_ns = None

    def on_train_batch_begin(self, batch, logs=None):
        if batch == self.warmup:
            tf.profiler.experimental.start(self.logdir)
            self.window_ns = [time.time_ns(), None]
        self._start = time.perf_counter()

    def on_train_batch_end(self, batch, logs=None):
        float(logs["loss"])  # waits for the step's ops
        if batch < self.warmup:
            self.untraced.append(time.perf_counter() - self._start)

    def on_train_end(self, logs=None):
        self.window_ns[1] = time.time_ns()
        tf.profiler.experimental.stop()


def step_time_breakdown(model, x, y, steps=3, warmup=3, top=15):
    """Traces `steps` training steps of a compiled model; see `StepBreakdown`.

    The steps run through `model.fit` (the trainer's path, with its data
    iterator) on the batch `(x, y)` repeated, after `warmup` untraced steps
    (the first one traces and compiles the step function). The TF profiler
    records every device op; each op's self time is clipped to the traced
    window, shared with ops running at the same moment, and summed per
    category of `OP_CATEGORIES`.

    Args:
        model: a compiled Keras model (TensorFlow backend).
        x, y: one batch of inputs and labels.
        steps: traced steps; the result is per step.
        warmup: untraced steps before (at least 2, so the step function is
            compiled and warm).
        top: how many of the largest single ops `top_ops` keeps.

    Returns:
        a `StepBreakdown`.

    Usage (traces training steps; not run as a doctest)::

        breakdown = step_time_breakdown(model, x[:128], y[:128])
        print(breakdown.table())
    """
    if steps < 1 or warmup < 2:
        raise ValueError(f"Need steps >= 1 and warmup >= 2 (the first step "
                         f"compiles); got steps={steps}, warmup={warmup}.")
    if getattr(model, "optimizer", None) is None:
        raise ValueError("step_time_breakdown needs a compiled model: call "
                         "model.compile(optimizer=..., loss=...) first.")
    from tensorflow.tsl.profiler.protobuf import xplane_pb2

    dataset = tf.data.Dataset.from_tensors((x, y)).repeat()
    with tempfile.TemporaryDirectory() as logdir:
        traced = _TracedSteps(warmup, logdir)
        try:
            model.fit(dataset, steps_per_epoch=warmup + steps, epochs=1,
                      verbose=0, shuffle=False, callbacks=[traced])
        finally:
            if traced.window_ns and traced.window_ns[1] is None:
                tf.profiler.experimental.stop()  # fit failed while tracing
        (path,) = glob.glob(os.path.join(logdir, "**", "*.xplane.pb"),
                            recursive=True)
        space = xplane_pb2.XSpace()
        with open(path, "rb") as f:
            space.ParseFromString(f.read())
    start_ns, stop_ns = traced.window_ns
    segments, calls = _op_self_segments(space, start_ns, stop_ns)
    wall_ms = (stop_ns - start_ns) / 1e6 / steps
    shares = _wall_shares(segments)
    categorize = _categorizer(model.optimizer.name)
    by_category, by_type, by_name = {}, {}, {}
    for (name, op_type), (share_ps, thread_ps) in shares.items():
        category = categorize(f"{name}:{op_type}")
        ms = share_ps / 1e9 / steps
        by_category[category] = by_category.get(category, 0.0) + ms
        entry = by_type.setdefault((op_type, category),
                                   [op_type, category, 0, 0, 0])
        entry[2] += ms
        entry[3] += thread_ps / 1e9 / steps
        entry[4] += calls[name, op_type] / steps
        by_name[name] = (name, op_type, category, ms)
    by_category[OVERHEAD] = max(0.0, wall_ms - sum(by_category.values()))
    return StepBreakdown(
        wall_ms=wall_ms,
        untraced_wall_ms=statistics.median(traced.untraced[1:]) * 1e3,
        categories=dict(sorted(by_category.items(), key=lambda kv: -kv[1])),
        op_types=sorted((tuple(v) for v in by_type.values()),
                        key=lambda row: -row[2]),
        top_ops=sorted(by_name.values(), key=lambda row: -row[3])[:top],
    )


def _op_self_segments(space, start_ns, stop_ns):
    """Self-time segments of every traced op, and its calls.

    Times are picoseconds from `start_ns`, clipped to `stop_ns`. An op
    event that encloses others on its thread (a function call) keeps only
    the time none of them ran: its self time.

    Returns:
        `([(begin_ps, end_ps, key)], {key: calls})` with
        `key = (op name, op type)`.
    """
    (environment,) = [p for p in space.planes if p.name == "Task Environment"]
    profile_start_ns = next(
        s.uint64_value for s in environment.stats
        if environment.stat_metadata[s.metadata_id].name
        == "profile_start_time")
    window_ps = (stop_ns - start_ns) * 1000
    segments, calls = [], collections.Counter()
    for plane in space.planes:
        for line in plane.lines:
            # Event times are offsets from the line's start, which is
            # relative to the profile's start.
            origin_ps = (profile_start_ns + line.timestamp_ns
                         - start_ns) * 1000
            events = []
            for event in line.events:
                match = _OP_EVENT.fullmatch(
                    plane.event_metadata[event.metadata_id].name)
                if match:
                    begin = origin_ps + event.offset_ps
                    events.append((begin, begin + event.duration_ps,
                                   match.groups()))
                    calls[match.groups()] += 0 <= begin < window_ps
            events.sort(key=lambda e: (e[0], -e[1]))
            segments += [(max(b, 0), min(e, window_ps), key)
                         for b, e, key in _self_time(events)
                         if e > 0 and b < window_ps]
    return segments, calls


def _self_time(events):
    """Splits properly nested `(begin, end, key)` events into self time."""
    segments, stack = [], []  # stack: [key, end, covered until]
    for begin, end, key in events + [(math.inf, math.inf, None)]:
        while stack and stack[-1][1] <= begin:
            top_key, top_end, cursor = stack.pop()
            segments.append((cursor, top_end, top_key))
            if stack:
                stack[-1][2] = top_end
        if key is None:
            break
        if stack:
            segments.append((stack[-1][2], begin, stack[-1][0]))
        stack.append([key, end, begin])
    return [s for s in segments if s[1] > s[0]]


def _wall_shares(segments):
    """`{key: [wall share, summed duration]}` of self-time segments.

    At each moment the ops running share it equally, so the shares add up
    to the time at least one op ran.
    """
    totals = {}
    boundaries = []
    for begin, end, key in segments:
        boundaries += [(begin, 1, key), (end, -1, key)]
        entry = totals.setdefault(key, [0.0, 0])
        entry[1] += end - begin
    boundaries.sort(key=lambda b: (b[0], b[1]))
    running, last = {}, 0
    for time_ps, change, key in boundaries:
        if running:
            share = (time_ps - last) / sum(running.values())
            for active, count in running.items():
                totals[active][0] += share * count
        last = time_ps
        running[key] = running.get(key, 0) + change
        if not running[key]:
            del running[key]
    return totals
