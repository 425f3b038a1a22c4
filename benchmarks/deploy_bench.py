"""Each method's deployable on Fashion-MNIST: f32, f16, int8 (issue 19).

nice -n 10 python -m benchmarks.deploy_bench [--rows=baseline,expandnet,
    xnet,slimconv,od,aps] [--dir=/tmp/deploy/bench] [--report_only]

For each row (one method's default deployable, small arch), with the same
budget for every row: `trainers.cifar` trains it (`--train_subset`,
`--epochs`, seed 0) and writes `deployable.keras` (raw pixels in). Then
this script converts it to `.tflite` float32, float16 and int8 PTQ
(`export.to_litert`, calibrated on the first 200 training images),
fine-tunes a copy with `qat.fine_tune` (`--qat_epochs` over the same
training images, Adam 1e-4) and converts that to int8 (QAT), evaluates
every file and the Keras model on the 10,000 test images
(`evaluation.evaluate_on`), records the largest difference between the QAT
twin's output and the QAT file's (in output quantization steps, 256 test
images), the int8 file's ops that stay float, and times float32, float16
and int8 interleaved (benchmarks/latency.py's protocol: batch 1, 1 thread,
XNNPACK, `--repeats` rounds of `--invokes` calls, process CPU time).

Each stage's result is kept in `<dir>/<row>/result.json`; a rerun skips
what is finished (a killed training resumes from its checkpoint), so the
command resumes. Writes the Markdown table to `--output`.
"""

import os
import subprocess
import sys

from absl import app
from absl import flags

os.environ.setdefault("TF_CPP_MIN_LOG_LEVEL", "3")

import keras  # noqa: E402
import numpy as np  # noqa: E402
import tensorflow as tf  # noqa: E402

from benchmarks import latency  # noqa: E402  (timing protocol and flags)
from keras_compact import data  # noqa: E402
from keras_compact import evaluation  # noqa: E402
from keras_compact import export  # noqa: E402
from keras_compact import files  # noqa: E402
from keras_compact import qat  # noqa: E402
from keras_compact.errors import UsageError  # noqa: E402

# row -> (label, trainer flags): each method's default deployable.
ROWS = {
    "baseline": ("ResNet-20", ["--method=baseline", "--arch=resnet20"]),
    "expandnet": ("SmallNet-7 trained as ExpandNet-CK+FC, contracted",
                  ["--method=expandnet", "--arch=smallnet7",
                   "--expand=ck+fc"]),
    # X-DenseNet-BC-40-24 (120M MACs at 28x28) does not fit this budget.
    "xnet": ("X-MobileNet-v1-0.5, G=4 (masked dense form)",
             ["--method=xnet", "--arch=x_mobilenet_v1_0.5",
              "--expand_size=4"]),
    "slimconv": ("Sc-ResNet-20 k=4/3", ["--method=slimconv",
                                        "--arch=sc_resnet20"]),
    "od": ("OD Shift-ResNet-20, best of 2 students",
           ["--method=od", "--arch=resnet20", "--block=shift",
            "--students=2"]),
    "aps": ("APS ResNet-20 at the shipped 20.6M widths (decoded)",
            ["--method=aps", "--arch=resnet20", "--phase=train",
             "--widths=resnet20_20.6M"]),
}
FILES = {"float32": "model.tflite", "float16": "model_float16.tflite",
         "int8_ptq": "model_int8.tflite", "int8_qat": "model_int8_qat.tflite"}
CALIBRATION_IMAGES = 200

flags.DEFINE_list("rows", list(ROWS), f"Rows to run: {list(ROWS)}.")
flags.DEFINE_string("dir", "/tmp/deploy/bench", "Workdirs and results.")
flags.DEFINE_string("output", "benchmarks/deploy.md", "Markdown table.")
flags.DEFINE_integer("train_subset", 3000, "Training images.")
flags.DEFINE_integer("epochs", 3, "Training epochs.")
flags.DEFINE_integer("qat_epochs", 1, "QAT epochs over the same images.")
flags.DEFINE_bool("report_only", False, "Only write the table.")
FLAGS = flags.FLAGS


def _train(row, workdir):
    deployable = os.path.join(workdir, "deployable.keras")
    if os.path.exists(os.path.join(workdir, "metrics.json")):
        return deployable
    command = [sys.executable, "-m", "trainers.cifar", *ROWS[row][1],
               "--dataset=fashion_mnist", f"--epochs={FLAGS.epochs}",
               f"--train_subset={FLAGS.train_subset}", "--seed=0",
               "--validation_split=0.1", "--export=", "--set=verbose=0",
               f"--workdir={workdir}"]
    with open(os.path.join(workdir, "train.log"), "a") as log:
        subprocess.run(command, stdout=log, stderr=subprocess.STDOUT,
                       check=True)
    return deployable


def _evaluate(runner, dataset, reference=None):
    return evaluation.evaluate_on(runner, dataset, reference=reference,
                                  progress=False)


def _float_ops(path):
    """Ops of an int8 file whose output is float32: not quantized."""
    from ai_edge_litert import interpreter as litert

    runner = litert.Interpreter(
        model_path=path, experimental_op_resolver_type=(
            litert.OpResolverType.BUILTIN_WITHOUT_DEFAULT_DELEGATES))
    runner.allocate_tensors()
    types = {t["index"]: t["dtype"] for t in runner.get_tensor_details()}
    return sorted({op["op_name"] for op in runner._get_ops_details()
                   if any(types[i] == np.float32 for i in op["outputs"])})


def _exports(servable_path, workdir, dataset, calibration, result):
    servable = keras.models.load_model(servable_path)
    result["keras_float32"] = _evaluate(evaluation.open_model(servable_path),
                                        dataset)
    for name, quantization in (("float32", "float32"),
                               ("float16", "float16"), ("int8_ptq", "int8")):
        path = export.to_litert(servable, os.path.join(workdir, FILES[name]),
                                quantization, calibration)
        result[name] = dict(_evaluate(evaluation.open_model(path), dataset),
                            bytes=os.path.getsize(path))
    result["int8_ptq"]["float_ops"] = _float_ops(
        os.path.join(workdir, FILES["int8_ptq"]))


def _quantization_aware(servable_path, workdir, dataset, calibration,
                        result):
    servable = keras.models.load_model(servable_path)
    count = FLAGS.train_subset
    train = tf.data.Dataset.from_tensor_slices(
        (dataset.x_train[:count].astype("float32"), dataset.y_train[:count])
    ).shuffle(count, seed=0).batch(128)
    try:
        twin = qat.fine_tune(servable, train, calibration,
                             epochs=FLAGS.qat_epochs, verbose=0)
    except UsageError as error:
        result["int8_qat"] = {"refused": str(error)}
        return
    path = export.to_litert(servable, os.path.join(workdir,
                                                   FILES["int8_qat"]),
                            "int8", calibration)
    runner = evaluation.open_model(path)
    twin_runner = evaluation.KerasRunner(model=twin, raw_pixels=True)
    scores = _evaluate(runner, dataset, reference=twin_runner)
    pixels = dataset.x_test[:256]
    steps = np.abs(runner.predict(pixels) - keras.ops.convert_to_numpy(
        twin(pixels.astype("float32")))).max() / runner.output_step
    result["int8_qat"] = dict(scores, bytes=os.path.getsize(path),
                              twin_max_steps=float(steps))


def _latency(workdir, result):
    rows = [{"name": name, "path": os.path.join(workdir, FILES[name])}
            for name in ("float32", "float16", "int8_ptq")]
    latency._time(rows, latency.time.process_time)
    result["latency_ms"] = {row["name"]: row["median"] for row in rows}
    result["xnnpack"] = {row["name"]: row["xnnpack"] for row in rows}


STAGES = (("exports", _exports), ("qat", _quantization_aware))


def run_row(row, dataset):
    workdir = os.path.join(FLAGS.dir, row)
    os.makedirs(workdir, exist_ok=True)
    record = os.path.join(workdir, "result.json")
    result = files.read_json(record) if os.path.exists(record) else {}
    servable = _train(row, workdir)
    calibration = dataset.x_train[:CALIBRATION_IMAGES].astype("float32")
    for stage, function in STAGES:
        if stage not in result.get("done", []):
            function(servable, workdir, dataset, calibration, result)
            result.setdefault("done", []).append(stage)
            files.write_json(record, result)
    if "latency" not in result["done"]:
        _latency(workdir, result)
        result["done"].append("latency")
        files.write_json(record, result)
    print(row, result, flush=True)


def _partitions(path):
    """XNNPACK partitions of a file (0: XNNPACK refused it)."""
    runner, xnnpack = latency._interpreter(path)
    return sum(op["op_name"] == "DELEGATE"
               for op in runner._get_ops_details()) if xnnpack else 0


def _points(value, reference):
    return f"{100 * value:.2f} ({100 * (value - reference):+.2f})"


def _line(row, result):
    f32 = result["float32"]["top1"]
    qat_result = result.get("int8_qat", {})
    qat_cell = (_points(qat_result["top1"], f32) if "top1" in qat_result
                else "refused" if "refused" in qat_result else "-")
    steps = qat_result.get("twin_max_steps")
    ms = result["latency_ms"]
    return (f"| {ROWS[row][0]} | {100 * result['keras_float32']['top1']:.2f}"
            f" | {100 * f32:.2f} | {_points(result['float16']['top1'], f32)}"
            f" | {_points(result['int8_ptq']['top1'], f32)} | {qat_cell} | "
            f"{'-' if steps is None else f'{steps:.2f}'} | "
            f"{result['float32']['bytes']:,} | "
            f"{result['float32']['bytes'] / result['int8_ptq']['bytes']:.2f}x"
            f" | {ms['float32']:.3f} | {ms['int8_ptq']:.3f} | "
            f"{ms['float32'] / ms['int8_ptq']:.2f}x | "
            f"{_partitions(os.path.join(FLAGS.dir, row, FILES['float32']))}"
            f" / {_partitions(os.path.join(FLAGS.dir, row, FILES['int8_ptq']))}"
            f" | {', '.join(result['int8_ptq']['float_ops']) or 'none'} |")


def report():
    lines = ["| row | Keras f32 | .tflite f32 | f16 (diff) | int8 PTQ (diff)"
             " | int8 QAT (diff) | QAT twin vs file, steps | f32 bytes | "
             "int8 smaller | f32 ms | int8 ms | int8 faster | XNNPACK "
             "partitions f32 / int8 | int8 ops left float |",
             "|---|" + "---:|" * 13 + "---|"]
    for row in ROWS:
        record = os.path.join(FLAGS.dir, row, "result.json")
        if not os.path.exists(record):
            lines.append(f"| {ROWS[row][0]} | not run |" + " |" * 13)
            continue
        result = files.read_json(record)
        if "latency" not in result.get("done", []):
            lines.append(f"| {ROWS[row][0]} | unfinished |" + " |" * 13)
            continue
        lines.append(_line(row, result))
    text = "\n".join(lines) + "\n"
    print(text)
    with files.atomic_write(FLAGS.output) as temporary:
        with open(temporary, "w") as f:
            f.write(text)


def main(argv):
    del argv
    if not FLAGS.report_only:
        dataset = data.load("fashion_mnist")
        for row in FLAGS.rows:
            run_row(row, dataset)
    report()


if __name__ == "__main__":
    app.run(main)
