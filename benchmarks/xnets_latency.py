"""Inference latency of X-DenseNet-BC-40-24: gathered vs masked vs dense.

python -m benchmarks.xnets_latency [--threads=1] [--repeats=30]

Prints a Markdown table: TF (tf.function, batch 1 and 32) and LiteRT float32
(batch 1) median latency per model, with the MACs of each form. Models:
dense DenseNet-BC-40-24, X-DenseNet-BC-40-24-2 masked (the training form),
gathered channel-level (the deployable form) and gathered block expanders
(G output blocks per layer, inputs in C contiguous chunks: the structured
variant of spec 7.3, whose gather moves slabs; the large batch uses
repeats / 5).
"""

import os
import tempfile
import time

from absl import app
from absl import flags

os.environ.setdefault("TF_CPP_MIN_LOG_LEVEL", "3")

import numpy as np  # noqa: E402
import tensorflow as tf  # noqa: E402

from keras_compact import export  # noqa: E402
from keras_compact import layers  # noqa: E402
from keras_compact import models  # noqa: E402
from keras_compact import profiling  # noqa: E402

flags.DEFINE_integer("threads", 1, "CPU threads for TF and LiteRT.")
flags.DEFINE_integer("repeats", 30, "Timed runs per measurement.")
flags.DEFINE_integer("batch", 32, "The larger TF batch.")
flags.DEFINE_string("arch", "densenet_bc_40_24", "DenseNet-BC row.")
flags.DEFINE_list("blocks", ["4:8", "8:8"],
                  "Block expanders G:C (G output blocks, C input chunks).")
FLAGS = flags.FLAGS


def _tf_runner(model, batch):
    x = tf.random.normal((batch, 32, 32, 3))
    call = tf.function(lambda x: model(x, training=False))
    return lambda: call(x).numpy()


def _litert_runner(model, tmp, name):
    from ai_edge_litert.interpreter import Interpreter

    try:
        path = export.to_litert(model, os.path.join(tmp, f"{name}.tflite"))
    except Exception as error:  # reported in the table, not fatal
        return None, [f"conversion failed: "
                      f"{str(error).splitlines()[0][:120]}"]
    interpreter = Interpreter(model_path=path, num_threads=FLAGS.threads)
    ops = sorted({d["op_name"] for d in interpreter._get_ops_details()})
    interpreter.allocate_tensors()
    (inp,) = interpreter.get_input_details()
    interpreter.set_tensor(inp["index"],
                           np.random.randn(1, 32, 32, 3).astype("float32"))
    return interpreter.invoke, ops


def _interleaved_ms(runners, repeats):
    """Median ms per runner, timing them in rotation.

    The machine's load drifts by 2-3x within minutes; rotating puts every
    model under the same drift, so ratios stay meaningful.
    """
    for run in runners.values():
        if run:
            run()
            run()
    times = {key: [] for key in runners}
    for _ in range(repeats):
        for key, run in runners.items():
            if run:
                start = time.perf_counter()
                run()
                times[key].append(time.perf_counter() - start)
    return {key: 1e3 * float(np.median(t)) if t else float("nan")
            for key, t in times.items()}


def main(argv):
    del argv
    tf.config.threading.set_intra_op_parallelism_threads(FLAGS.threads)
    tf.config.threading.set_inter_op_parallelism_threads(1)
    shape = (32, 32, 3)
    masked = models.build(FLAGS.arch, shape, 10, density=0.5)
    rows = [
        ("dense", models.build(FLAGS.arch, shape, 10)),
        ("X masked", masked),
        ("X gathered (channel-level)", layers.gathered_model(masked)),
    ]
    for spec in FLAGS.blocks:
        groups, chunks = map(int, spec.split(":"))
        block = models.build(FLAGS.arch, shape, 10, density=0.5,
                             expander_groups=groups, expander_chunks=chunks)
        rows.append((f"X gathered (block G={groups}, chunks={chunks})",
                     layers.gathered_model(block)))
    dense_macs = profiling.profile(rows[0][1]).macs
    with tempfile.TemporaryDirectory() as tmp:
        small, large, lite, ops = {}, {}, {}, {}
        for index, (name, model) in enumerate(rows):
            small[name] = _tf_runner(model, 1)
            large[name] = _tf_runner(model, FLAGS.batch)
            lite[name], ops[name] = _litert_runner(model, tmp, f"m{index}")
        small = _interleaved_ms(small, FLAGS.repeats)
        lite = _interleaved_ms(lite, FLAGS.repeats)
        large = _interleaved_ms(large, max(3, FLAGS.repeats // 5))
    results = [(name, profiling.profile(model).macs, small[name],
                large[name], lite[name], ops[name]) for name, model in rows]
    dense = results[0]
    print(f"\n{FLAGS.arch}, {FLAGS.threads} thread(s), median of "
          f"{FLAGS.repeats}\n")
    big = f"b{FLAGS.batch}"
    print(f"| model | MACs | MAC ratio | TF b1 ms | TF {big} ms | LiteRT b1 "
          f"ms | speedup vs dense (TF b1 / TF {big} / LiteRT) |")
    print("|---|---:|---:|---:|---:|---:|---|")
    for name, macs, tf1, tf32, lite, _ in results:
        print(f"| {name} | {macs / 1e6:.1f}M | {dense_macs / macs:.2f}x | "
              f"{tf1:.2f} | {tf32:.1f} | {lite:.2f} | "
              f"{dense[2] / tf1:.2f}x / {dense[3] / tf32:.2f}x / "
              f"{dense[4] / lite:.2f}x |")
    print("\nLiteRT ops:")
    for name, *_, ops in results:
        print(f"- {name}: {', '.join(ops)}")


if __name__ == "__main__":
    app.run(main)
