"""A table's results: our mean +- std over seeds beside the paper's number.

`collect` reads `WORKDIR/<table>/<row>/seed<k>/metrics.json` (what the
trainer writes) into one entry per row; rows without a finished seed are
kept and shown as missing. `markdown` and `write` turn the entries into
`<table>.md`, `<table>.json` and the Pareto plots.

Example:

>>> mean, std, n = summary([0.91, 0.93])
>>> round(mean, 6), round(std, 4), n
(92.0, 1.4142, 2)
"""

import math
import os
import statistics

import tensorflow as tf

from keras_compact import files
from keras_compact.reproduce import runner

# Seed-folder files: the trainer's results, the runner's failure record.
METRICS = "metrics.json"
ERROR = "error.txt"
# Row-folder file: LiteRT size and latency of the first finished seed.
LATENCY = "latency.json"


def summary(accuracies):
    """`(mean, sample std, n)` in % of accuracies in [0, 1]; std is None
    below two seeds."""
    values = [100 * a for a in accuracies]
    if not values:
        return None, None, 0
    std = statistics.stdev(values) if len(values) > 1 else None
    return statistics.fmean(values), std, len(values)


def _read(path):
    return files.read_json(path) if tf.io.gfile.exists(path) else None


def _error(directory):
    path = os.path.join(directory, ERROR)
    if not tf.io.gfile.exists(path):
        return None
    with tf.io.gfile.GFile(path) as f:
        return f.read().strip().splitlines()[0]


def _export_accuracy(metrics, name):
    """Test accuracy of an exported file, as the trainer records it in
    `metrics["exports"][name]` (issue 19); None if not exported."""
    exported = (metrics.get("exports") or {}).get(name)
    return exported.get("test_accuracy") if isinstance(exported,
                                                       dict) else None


def collect(table, options):
    """One dict per selected row: ours, the paper's, size and speed."""
    entries = []
    for row in table.select(options.rows):
        runs, errors = [], []
        for seed in range(options.seeds):
            directory = runner.seed_dir(options, table, row, seed)
            metrics = _read(os.path.join(directory, METRICS))
            if metrics is not None:
                runs.append(metrics)
            elif _error(directory):
                errors.append(f"seed{seed}: {_error(directory)}")
        mean, std, count = summary([m["test_accuracy"] for m in runs])
        int8_mean, _, _ = summary([a for a in (
            _export_accuracy(m, "tflite_int8") for m in runs)
            if a is not None])
        entry = {
            "row": row.name, "label": row.label, "method": row.method,
            "status": ("missing" if not runs else
                       "done" if count == options.seeds else "partial"),
            "seeds": count, "seeds_wanted": options.seeds,
            "accuracy_mean": mean, "accuracy_std": std,
            "accuracies": [100 * m["test_accuracy"] for m in runs],
            "paper": row.paper, "paper_std": row.paper_std,
            "paper_note": row.note,
            "params": runs[0]["params"] if runs else None,
            "macs": runs[0]["macs"] if runs else None,
            "epochs": runs[0]["epochs"] if runs else None,
            "dataset": runs[0]["dataset"] if runs else None,
            "int8_accuracy": int8_mean,
            "errors": errors,
        }
        entry.update(_read(os.path.join(runner.row_dir(options, table, row),
                                        LATENCY)) or {})
        entries.append(entry)
    return entries


# Two-sided 95% quantiles of Student's t by degrees of freedom (1..10); a
# paired difference over n seeds has n - 1.
_T95 = (12.706, 4.303, 3.182, 2.776, 2.571, 2.447, 2.365, 2.306, 2.262,
        2.228)


def claims(table, options):
    """Each claim's paired difference (row - baseline, % points, same
    seeds), its 95% confidence interval and the verdict: "supports" if
    the interval is above 0, "contradicts" if below, else "cannot
    resolve". With `options.rows`, only the claims between those rows."""
    selected = {row.name for row in table.select(options.rows)}
    results = []
    for claim in table.claims:
        if not {claim.row, claim.baseline} <= selected:
            continue
        pairs = []
        for seed in range(options.seeds):
            a, b = (_read(os.path.join(runner.seed_dir(
                options, table, table.row(name), seed), METRICS))
                for name in (claim.row, claim.baseline))
            if a and b:
                pairs.append(100 * (a["test_accuracy"] - b["test_accuracy"]))
        result = {"claim": claim.text, "row": claim.row,
                  "baseline": claim.baseline, "seeds": len(pairs),
                  "difference": None, "ci95": None,
                  "verdict": "not run yet" if not pairs else
                  "cannot resolve (one seed)"}
        if pairs:
            result["difference"] = statistics.fmean(pairs)
        if len(pairs) > 1:
            half = (_T95[min(len(pairs), len(_T95) + 1) - 2]
                    * statistics.stdev(pairs) / math.sqrt(len(pairs)))
            low, high = result["difference"] - half, result[
                "difference"] + half
            result["ci95"] = [low, high]
            result["verdict"] = ("supports" if low > 0 else "contradicts"
                                 if high < 0 else "cannot resolve")
        results.append(result)
    return results


def claims_markdown(results):
    lines = ["| claim | seeds | difference (% points) | 95% CI | verdict |",
             "|---|---:|---:|---|---|"]
    for r in results:
        ci = "—" if r["ci95"] is None else (
            f"[{r['ci95'][0]:+.2f}, {r['ci95'][1]:+.2f}]")
        difference = ("—" if r["difference"] is None else
                      f"{r['difference']:+.2f}")
        lines.append(f"| {r['claim']} ({r['row']} − {r['baseline']}) | "
                     f"{r['seeds']} | {difference} | {ci} | {r['verdict']} |")
    return "\n".join(lines) + "\n"


def measure_latency(table, options, threads=1):
    """Writes `<row>/latency.json` (LiteRT float32 and int8 batch-1 latency
    in ms and `.tflite` sizes) for rows with a finished seed and none yet.
    """
    import keras

    from keras_compact import benchmarking

    for row in table.select(options.rows):
        path = os.path.join(runner.row_dir(options, table, row), LATENCY)
        if tf.io.gfile.exists(path):
            continue
        for seed in range(options.seeds):
            directory = runner.seed_dir(options, table, row, seed)
            if runner.finished(directory):
                break
        else:
            continue
        model = keras.models.load_model(
            os.path.join(directory, "deployable.keras"), compile=False)
        latency = {}
        for quantization in ("float32", "int8"):
            ms, size = benchmarking.litert_latency(model, quantization,
                                                   threads=threads)
            latency[f"latency_ms_{quantization}"] = ms
            latency[f"tflite_bytes_{quantization}"] = size
        files.write_json(path, latency)


def _number(value, digits=2):
    return "—" if value is None else f"{value:.{digits}f}"


def _accuracy(entry):
    if entry["status"] == "missing":
        return "failed" if entry["errors"] else "missing"
    text = _number(entry["accuracy_mean"])
    if entry["accuracy_std"] is not None:
        text += f" ± {entry['accuracy_std']:.2f}"
    return f"{text} (n={entry['seeds']}/{entry['seeds_wanted']})"


def _paper(entry):
    if entry["paper"] is None:
        return "—"
    text = _number(entry["paper"])
    if entry["paper_std"] is not None:
        text += f" ± {entry['paper_std']:.2f}"
    return text


def _count(value, scale, digits):
    return "—" if value is None else f"{value / scale:.{digits}f}"


COLUMNS = (
    ("row", lambda e: e["label"]),
    ("ours top-1 % (mean ± std)", _accuracy),
    ("paper top-1 %", _paper),
    ("params (M)", lambda e: _count(e["params"], 1e6, 3)),
    ("MACs (M)", lambda e: _count(e["macs"], 1e6, 2)),
    (".tflite (KB)", lambda e: _count(e.get("tflite_bytes_float32"), 1e3,
                                      0)),
    ("LiteRT f32 ms", lambda e: _number(e.get("latency_ms_float32"), 3)),
    ("LiteRT int8 ms", lambda e: _number(e.get("latency_ms_int8"), 3)),
    ("int8 top-1 %", lambda e: _number(e["int8_accuracy"])),
    ("paper source", lambda e: e["paper_note"]),
)


def markdown(table, entries, options):
    """The table as Markdown, with what was run and how."""
    datasets = sorted({e["dataset"] for e in entries if e["dataset"]})
    epochs = sorted({e["epochs"] for e in entries if e["epochs"]})
    columns = COLUMNS
    source = f"Paper: {table.source}; its numbers are on {table.dataset}."
    if all(e["paper"] is None for e in entries):
        columns = [c for c in COLUMNS if not c[0].startswith("paper")]
        source = f"Source: {table.source}; no paper numbers."
    lines = [
        f"## {table.title}",
        "",
        f"{source} Ours: "
        f"{', '.join(datasets) or 'nothing finished yet'}, "
        f"{options.seeds} seed{'s' if options.seeds > 1 else ''} "
        f"(0..{options.seeds - 1}), epochs "
        f"{', '.join(map(str, epochs)) or '—'}"
        f"{', budget ' + options.budget if options.budget else ''}"
        f"{', smoke recipes' if options.smoke else ''}. Ours is the last "
        "epoch's test top-1 of the deployable model, mean ± sample std "
        "over the finished seeds; LiteRT latency is batch 1, 1 thread, on "
        "this machine.",
        "",
        "| " + " | ".join(name for name, _ in columns) + " |",
        "|" + "---|" * len(columns),
    ]
    for entry in entries:
        lines.append("| " + " | ".join(cell(entry) for _, cell in columns)
                     + " |")
    failures = [f"- {e['label']}: {error}" for e in entries
                for error in e["errors"]]
    if failures:
        lines += ["", "Failed runs (rerun the command to retry):", *failures]
    if table.claims:
        lines += ["", "Claims (paired by seed; 95% CI of the mean "
                  "difference, Student's t):", "",
                  claims_markdown(claims(table, options)).rstrip()]
    return "\n".join(lines) + "\n"


def write(table, options, entries):
    """Writes `<workdir>/<table>.md`, `.json` and the two Pareto PNGs;
    returns their paths."""
    from keras_compact.reproduce import plots

    prefix = os.path.join(options.workdir, table.name)
    tf.io.gfile.makedirs(options.workdir)
    written = [f"{prefix}.md", f"{prefix}.json"]
    with files.atomic_write(written[0]) as path:
        with tf.io.gfile.GFile(path, "w") as f:
            f.write(markdown(table, entries, options))
    files.write_json(written[1], {
        "table": table.name, "title": table.title, "source": table.source,
        "paper_dataset": table.dataset, "seeds": options.seeds,
        "budget": options.budget, "smoke": options.smoke,
        "rows": [{k: _finite(v) for k, v in e.items()} for e in entries],
        "claims": claims(table, options)})
    written += plots.pareto(table, entries, prefix)
    return written


def _finite(value):
    return None if isinstance(value, float) and not math.isfinite(value) \
        else value
