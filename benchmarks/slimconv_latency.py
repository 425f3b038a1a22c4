"""LiteRT float32 batch-1 CPU latency: Sc-ResNet-50 (k=4/3, 8/3) vs ResNet-50.

python benchmarks/slimconv_latency.py [--threads=1] [--runs=30]

Exports each 224x224, 1000-class model to a float32 `.tflite` (builtin ops),
runs it with the LiteRT interpreter (XNNPACK) on one image and prints the
median latency with the latency and MAC ratios against ResNet-50.
"""

import argparse
import os
import tempfile
import time

import numpy as np

from keras_compact import export
from keras_compact import models
from keras_compact import profiling

MODELS = (("resnet50", {}), ("sc_resnet50", {"k": "4/3"}),
          ("sc_resnet50", {"k": "8/3"}))


def latency_ms(path, threads, runs):
    from ai_edge_litert.interpreter import Interpreter

    interpreter = Interpreter(model_path=path, num_threads=threads)
    interpreter.allocate_tensors()
    (inp,) = interpreter.get_input_details()
    interpreter.set_tensor(inp["index"], np.random.default_rng(0).normal(
        size=inp["shape"]).astype("float32"))
    for _ in range(5):
        interpreter.invoke()
    times = []
    for _ in range(runs):
        start = time.perf_counter()
        interpreter.invoke()
        times.append(time.perf_counter() - start)
    return 1e3 * float(np.median(times)), 1e3 * float(np.min(times))


def main():
    parser = argparse.ArgumentParser()
    parser.add_argument("--threads", type=int, default=1)
    parser.add_argument("--runs", type=int, default=30)
    args = parser.parse_args()
    rows = []
    with tempfile.TemporaryDirectory() as tmp:
        for arch, kwargs in MODELS:
            model = models.build(arch, (224, 224, 3), 1000, **kwargs)
            macs = profiling.profile(model).macs
            path = export.to_litert(model, os.path.join(tmp, "m.tflite"))
            median, best = latency_ms(path, args.threads, args.runs)
            rows.append((model.name, macs, median, best))
            print(f"{model.name}: {median:.1f} ms median, {best:.1f} ms "
                  f"min, {macs / 1e9:.3f} G MACs", flush=True)
    base = rows[0]
    print("\n| model | G MACs | MAC ratio | latency ms (median / min) | "
          "latency ratio (median / min) | saving captured |")
    print("|---|---:|---:|---:|---:|---:|")
    for name, macs, median, best in rows:
        mac_ratio, lat_ratio = macs / base[1], median / base[2]
        captured = ((1 - lat_ratio) / (1 - mac_ratio)
                    if mac_ratio < 1 else float("nan"))
        print(f"| {name} | {macs / 1e9:.3f} | {mac_ratio:.3f} | "
              f"{median:.1f} / {best:.1f} | {lat_ratio:.3f} / "
              f"{best / base[3]:.3f} | {captured:.0%} |")


if __name__ == "__main__":
    main()
