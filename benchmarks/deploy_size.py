"""Where the bytes of a `.tflite` file go (issue 19: int8 files < 3.5x).

nice -n 10 python -m benchmarks.deploy_size [--dir=/tmp/deploy/bench]

For each row of `benchmarks.deploy_bench`, its float32 and int8 PTQ files
split into: weights (the constant buffers of conv, depthwise and dense
filters), biases, other constants (shift kernels, the input mean, shapes),
quantization parameters (per-tensor and per-channel scales and zero
points: float32 + int64 each), metadata (the input contract) and the
rest, the flatbuffer's structure (tensor and op tables, names, padding).
"""

import os

import numpy as np
from absl import app
from absl import flags

from benchmarks import deploy_bench

flags.DEFINE_string("size_output", "", "Also write the Markdown table here.")
FLAGS = flags.FLAGS
_WEIGHTED = ("CONV_2D", "DEPTHWISE_CONV_2D", "FULLY_CONNECTED")
PARTS = ("weights", "biases", "other constants", "quantization params",
         "metadata", "structure")


def breakdown(path):
    """Bytes of `path` by part (`PARTS`), as a dict."""
    from ai_edge_litert import schema_py_generated as schema
    from ai_edge_litert.tools import flatbuffer_utils

    model = flatbuffer_utils.read_model(path)
    names = {code: name for name, code in vars(schema.BuiltinOperator).items()
             if not name.startswith("_")}
    parts = dict.fromkeys(PARTS, 0)
    counted = set()

    def size(buffer):
        data = model.buffers[buffer].data
        return 0 if data is None else len(data)

    for subgraph in model.subgraphs:
        role = {}
        for op in subgraph.operators:
            name = names[flatbuffer_utils.get_builtin_code_from_operator_code(
                model.operatorCodes[op.opcodeIndex])]
            if name in _WEIGHTED:
                role[op.inputs[1]] = "weights"
                if len(op.inputs) > 2 and op.inputs[2] >= 0:
                    role[op.inputs[2]] = "biases"
        for index, tensor in enumerate(subgraph.tensors):
            q = tensor.quantization
            if q is not None:
                for field in (q.scale, q.zeroPoint, q.min, q.max):
                    if field is not None:
                        parts["quantization params"] += np.asarray(
                            field).nbytes
            if tensor.buffer and tensor.buffer not in counted:
                counted.add(tensor.buffer)
                parts[role.get(index, "other constants")] += size(
                    tensor.buffer)
    for entry in model.metadata or []:
        if entry.buffer not in counted:
            counted.add(entry.buffer)
            parts["metadata"] += size(entry.buffer)
    parts["structure"] = os.path.getsize(path) - sum(parts.values())
    return parts


def main(argv):
    del argv
    lines = ["| row | file | bytes | " + " | ".join(PARTS) + " |",
             "|---|---|" + "---:|" * (len(PARTS) + 1)]
    for row in deploy_bench.ROWS:
        for name in ("float32", "int8_ptq"):
            path = os.path.join(FLAGS.dir, row, deploy_bench.FILES[name])
            if not os.path.exists(path):
                continue
            parts = breakdown(path)
            lines.append(f"| {row} | {name} | {os.path.getsize(path):,} | "
                         + " | ".join(f"{parts[p]:,}" for p in PARTS) + " |")
    text = "\n".join(lines) + "\n"
    print(text)
    if FLAGS.size_output:
        with open(FLAGS.size_output, "w") as f:
            f.write(text)


if __name__ == "__main__":
    app.run(main)
