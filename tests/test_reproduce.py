"""tools.reproduce: the tables, the resumable runner, the report, the plots."""

import csv
import json
import os
import signal
import subprocess
import sys
import time

import pytest

from keras_compact import files
from keras_compact.errors import UsageError
from keras_compact.reproduce import report
from keras_compact.reproduce import runner
from keras_compact.reproduce import tables
from tests.test_training import ROOT

TABLE = "expandnets_cifar10"
ROWS = ("smallnet7_compact", "smallnet7_ck_fc")


def _options(tmp_path, **kwargs):
    kwargs.setdefault("seeds", 3)
    return runner.Options(workdir=str(tmp_path), **kwargs)


def _finish(options, table, row, seed, accuracy, **metrics):
    """Writes what the trainer writes at the end of a run."""
    config = runner.row_config(table, table.row(row), options, seed)
    os.makedirs(config.workdir, exist_ok=True)
    files.write_json(os.path.join(config.workdir, "metrics.json"), dict(
        test_accuracy=accuracy, params=66186, macs=4448896,
        epochs=config.epochs, dataset=config.dataset, **metrics))
    return config


def test_unknown_table_and_row_list_the_valid_ones():
    with pytest.raises(UsageError, match="Valid tables: .*evidence.*"
                       "expandnets_cifar10"):
        tables.get("expandnets")
    with pytest.raises(UsageError, match="Valid rows: teacher_resnet20, "
                       "smallnet7_compact"):
        tables.get(TABLE).select(["smallnet7_compact", "smallnet9"])


@pytest.mark.parametrize("smoke", [False, True])
def test_every_row_builds_its_recipe(tmp_path, smoke):
    options = _options(tmp_path, smoke=smoke)
    for name in tables.names():
        table = tables.get(name)
        for row in table.rows:
            config = runner.row_config(table, row, options, seed=2)
            assert config.method == row.method
            assert config.seed == 2
            assert config.workdir == os.path.join(
                str(tmp_path), name, row.name, "seed2")
            assert config.dataset == ("synthetic" if smoke else
                                      table.dataset)


def _config(table, row, **kwargs):
    table = tables.get(table)
    return runner.row_config(table, table.row(row),
                             runner.Options(**kwargs), 0)


def test_rows_are_the_papers_recipes_with_their_overrides():
    ck_fc = _config(TABLE, "smallnet7_ck_fc")
    assert (ck_fc.arch, ck_fc.expand, ck_fc.lr, ck_fc.epochs) == (
        "smallnet7", "ck+fc", 0.01, 150)
    # The dense DenseNet trains with the X-Net recipe, not He et al.'s.
    dense = _config("xnets_cifar10", "densenet_bc_40_24")
    xnet = _config("xnets_cifar10", "x_densenet_bc_40_24_2")
    for field in ("batch_size", "epochs", "nesterov", "lr", "weight_decay",
                  "decay_epochs"):
        assert dense[field] == xnet[field], field
    assert (dense.method, xnet.method, xnet.expand_size) == (
        "baseline", "xnet", 2)
    assert _config("xnets_cifar10", "x_vgg16").arch == "x_vgg16"
    slim = _config("slimconv_cifar100", "sc_resnet50_k8_3")
    assert (slim.arch, slim.slim_k, slim.dataset) == (
        "sc_resnet50_cifar", "8/3", "cifar100")
    imagenet = _config("slimconv_imagenet", "sc_resnext101_32x3d_k2")
    assert (imagenet.image_size, imagenet.batch_size, imagenet.slim_k) == (
        224, 1024, "2")
    shipped = _config("aps_cifar10", "resnet56_60.3M_shipped")
    assert (shipped.phase, shipped.widths, shipped.validation_split) == (
        "train", "resnet56_60.3M", 0.0)
    # APS's recipe has no step decays (cosine); the evidence rows set He et
    # al.'s, typed as ints although the recipe's tuple was empty.
    thin = _config("evidence", "resnet20_thin")
    assert (thin.schedule, thin.decay_epochs, thin.epochs) == (
        "step", (82, 123), 164)
    od = _config("od_cifar10", "dw_students1", sets=("batch_size=64",))
    assert (od.block, od.students, od.batch_size) == ("dw", 1, 64)
    with pytest.raises(UsageError, match="--set nope=1: Unknown config"):
        _config(TABLE, "smallnet7_ck_fc", sets=("nope=1",))


def test_the_kd_rows_learn_from_their_teacher_row(tmp_path):
    options = _options(tmp_path)
    table = tables.get(TABLE)
    config = runner.row_config(table, table.row("smallnet7_ck_fc_kd"),
                               options, seed=1)
    assert config.teacher == os.path.join(
        str(tmp_path), TABLE, "teacher_resnet20", "seed1", "deployable.keras")
    # Selecting a KD row runs its teacher first.
    names = [r.name for r in table.select(["smallnet7_ck_fc_kd"])]
    assert names == ["teacher_resnet20", "smallnet7_ck_fc_kd"]


def test_an_epoch_budget_scales_the_schedule(tmp_path):
    table = tables.get("aps_cifar10")
    options = _options(tmp_path, budget="4")
    baseline = runner.row_config(table, table.row("resnet20"), options, 0)
    # He et al.: 164 epochs, /10 at 82 and 123 -> 4 epochs, /10 at 2 and 3.
    assert (baseline.epochs, baseline.decay_epochs) == (4, (2, 3))
    searched = runner.row_config(
        table, table.row("resnet20_20.6M_searched"), options, 0)
    # APS: 300 train epochs; search 600 with 200 warm-up, /10 at 300, 450.
    assert (searched.epochs, searched.search_epochs,
            searched.search_warmup_epochs,
            searched.search_decay_epochs) == (4, 8, 3, (4, 6))
    for bad in ("0", "-3", "5 epochs", "20min"):
        with pytest.raises(UsageError, match="--budget"):
            runner.parse_budget(bad)
    assert runner.parse_budget("20m") == ("seconds", 1200.0)


def test_a_time_budget_is_measured_once_per_row(tmp_path):
    table = tables.get(TABLE)
    options = _options(tmp_path, budget="1m", smoke=True)
    row = table.row("smallnet7_compact")
    # Smoke: 4 steps of 32 images per epoch, then the 512 synthetic test
    # images at a third of the cost: 128 + 512 / 3 = 298.7 per epoch.
    config = runner.row_config(table, row, options, 0,
                               measure=lambda config: 640.0)
    assert config.epochs == int(60 * 640 // (128 + 512 / 3)) == 128

    def fail(config):
        raise AssertionError("measured again")

    for seed in (0, 1):
        again = runner.row_config(table, row, options, seed, measure=fail)
        assert again.epochs == config.epochs


def test_the_table_from_synthetic_metrics_files(tmp_path):
    table = tables.get(TABLE)
    options = _options(tmp_path, rows=ROWS + ("smallnet7_cl",
                                              "smallnet3_compact"))
    for seed, accuracy in enumerate((0.90, 0.92, 0.94)):
        _finish(options, table, "smallnet7_compact", seed, accuracy,
                exports={"tflite_int8": {"path": "m.tflite", "bytes": 9,
                                         "test_accuracy": accuracy - 0.01}})
    _finish(options, table, "smallnet7_ck_fc", 1, 0.5)
    failed = runner.seed_dir(options, table, table.row("smallnet3_compact"),
                             0)
    os.makedirs(failed)
    with open(os.path.join(failed, "error.txt"), "w") as f:
        f.write("NonFiniteLossError: the loss became nan\n")

    entries = {e["row"]: e for e in report.collect(table, options)}
    done = entries["smallnet7_compact"]
    # 90, 92, 94: mean 92, sample std 2 (exact in binary up to 1 ulp).
    assert done["status"] == "done" and done["seeds"] == 3
    assert done["accuracy_mean"] == pytest.approx(92.0, abs=1e-12)
    assert done["accuracy_std"] == pytest.approx(2.0, abs=1e-12)
    assert done["int8_accuracy"] == pytest.approx(91.0, abs=1e-12)
    assert (done["paper"], done["paper_std"]) == (78.63, 0.41)
    partial = entries["smallnet7_ck_fc"]
    assert partial["status"] == "partial" and partial["accuracy_std"] is None
    assert entries["smallnet7_cl"]["status"] == "missing"
    assert entries["smallnet3_compact"]["errors"] == [
        "seed0: NonFiniteLossError: the loss became nan"]

    text = report.markdown(table, list(entries.values()), options)
    lines = {line.split(" | ")[0]: line for line in text.splitlines()
             if line.startswith("| ")}
    assert "| 92.00 ± 2.00 (n=3/3) | 78.63 ± 0.41 | 0.066 | 4.45 |" in lines[
        "| SmallNet 7x7"]
    assert "| 91.00 |" in lines["| SmallNet 7x7"]
    assert "| 50.00 (n=1/3) | 80.31 ± 0.27 |" in lines[
        "| ExpandNet-CK+FC 7x7"]
    assert "| missing | 78.47 ± 0.20 | — | — |" in lines[
        "| ExpandNet-CL 7x7"]
    assert "| failed | 73.32 ± 0.20 |" in lines["| SmallNet 3x3"]
    assert "SmallNet 3x3: seed0: NonFiniteLossError" in text

    written = report.write(table, options, list(entries.values()))
    assert [os.path.basename(p) for p in written] == [
        f"{TABLE}.md", f"{TABLE}.json", f"{TABLE}_macs.png"]
    with open(written[1]) as f:
        rows = json.load(f)["rows"]
    # In table order.
    assert [(r["row"], r["status"]) for r in rows] == [
        ("smallnet7_compact", "done"), ("smallnet7_cl", "missing"),
        ("smallnet7_ck_fc", "partial"), ("smallnet3_compact", "missing")]
    with open(written[2], "rb") as f:
        assert f.read(8) == b"\x89PNG\r\n\x1a\n"


def test_finished_runs_are_skipped_and_failures_recorded(tmp_path):
    table = tables.get(TABLE)
    options = _options(tmp_path, seeds=2, rows=ROWS, smoke=True)
    trained = []
    broken = runner.seed_dir(options, table, table.row(ROWS[1]), 0)
    failures = [broken]  # fails once

    def train(config):
        trained.append(config.workdir)
        if config.workdir in failures:
            failures.remove(config.workdir)
            raise RuntimeError("out of memory")
        _finish(options, table, os.path.basename(
            os.path.dirname(config.workdir)), config.seed, 0.5)

    outcome = runner.run(table, options, train=train)
    assert len(trained) == 4 and len(outcome["failed"]) == 1
    with open(os.path.join(outcome["failed"][0], "error.txt")) as f:
        assert f.read() == "RuntimeError: out of memory\n"
    trained.clear()
    outcome = runner.run(table, options, train=train)
    # Only the failed run is tried again.
    assert trained == outcome["trained"] == [broken]
    assert len(outcome["skipped"]) == 3


def test_a_finished_run_with_another_config_is_refused(tmp_path):
    table = tables.get(TABLE)
    options = _options(tmp_path, seeds=1, rows=ROWS[:1], smoke=True)
    config = _finish(options, table, ROWS[0], 0, 0.5)
    # What the trainer records (issue 20): the run's config.
    config.lr = 0.5
    config.epochs = 7
    files.write_json(os.path.join(config.workdir, "config.json"),
                     json.loads(config.to_json()))

    def train(config):
        raise AssertionError("a finished run was trained again")

    with pytest.raises(UsageError, match=r"finished run with another "
                       r"config \(epochs: 7 -> \d+, lr: 0.5 -> "):
        runner.run(table, options, train=train)
    same = runner.row_config(table, table.row(ROWS[0]), options, 0)
    # Fewer epochs than asked for: a finished run is not extended (the
    # trainer would extend an unfinished one), so it is refused too.
    same.epochs -= 1
    files.write_json(os.path.join(config.workdir, "config.json"),
                     json.loads(same.to_json()))
    with pytest.raises(UsageError, match=r"\(epochs: \d+ -> \d+\)"):
        runner.run(table, options, train=train)
    same.epochs += 1
    same.verbose = 0  # what is printed does not change the run
    files.write_json(os.path.join(config.workdir, "config.json"),
                     json.loads(same.to_json()))
    assert runner.run(table, options, train=train)["skipped"] == [
        config.workdir]


# -- End to end: the command line ------------------------------------------

def _reproduce(*flags, timeout=900):
    return subprocess.run(
        [sys.executable, "-m", "tools.reproduce", *flags], cwd=ROOT,
        capture_output=True, text=True, timeout=timeout,
        env=dict(os.environ, TF_CPP_MIN_LOG_LEVEL="3"))


@pytest.mark.slow
@pytest.mark.ci_slow
def test_smoke_runs_a_table_end_to_end_and_a_rerun_trains_nothing(tmp_path):
    flags = (f"--table={TABLE}", "--smoke", "--seeds=2",
             f"--rows={','.join(ROWS)}", f"--workdir={tmp_path}")
    result = _reproduce(*flags)
    assert result.returncode == 0, result.stderr[-3000:]
    assert result.stderr.count(": training expandnet smallnet7") == 4
    for suffix in (".md", ".json", "_macs.png", "_latency.png"):
        assert os.path.getsize(tmp_path / f"{TABLE}{suffix}") > 0
    with open(tmp_path / f"{TABLE}.json") as f:
        rows = json.load(f)["rows"]
    assert [(r["row"], r["seeds"]) for r in rows] == [(ROWS[0], 2),
                                                      (ROWS[1], 2)]
    # Contracted CK+FC is the compact SmallNet-7 again.
    assert rows[0]["params"] == rows[1]["params"] == 66186
    assert all(r["tflite_bytes_float32"] > r["tflite_bytes_int8"] > 0
               for r in rows)
    metrics = tmp_path / TABLE / ROWS[1] / "seed1" / "metrics.json"
    before = metrics.stat().st_mtime_ns

    again = _reproduce(*flags)
    assert again.returncode == 0, again.stderr[-3000:]
    assert ": training" not in again.stderr
    assert again.stderr.count("finished, skipped") == 4
    assert metrics.stat().st_mtime_ns == before


def _epochs_logged(workdir):
    path = os.path.join(workdir, "log.csv")
    if not os.path.exists(path):
        return []
    with open(path) as f:
        return [int(r["epoch"]) for r in csv.DictReader(f)]


@pytest.mark.slow
@pytest.mark.ci_slow
def test_a_killed_row_resumes_from_its_last_epoch(tmp_path):
    flags = (f"--table={TABLE}", "--smoke", "--seeds=1",
             f"--rows={ROWS[0]}", f"--workdir={tmp_path}", "--budget=6",
             "--set=steps_per_epoch=20", "--nolatency")
    workdir = str(tmp_path / TABLE / ROWS[0] / "seed0")
    process = subprocess.Popen(
        [sys.executable, "-m", "tools.reproduce", *flags], cwd=ROOT,
        stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL,
        env=dict(os.environ, TF_CPP_MIN_LOG_LEVEL="3"))
    deadline = time.monotonic() + 600
    while not _epochs_logged(workdir) and time.monotonic() < deadline:
        time.sleep(0.1)
    process.send_signal(signal.SIGKILL)
    process.wait()
    killed_at = _epochs_logged(workdir)
    assert killed_at and killed_at[-1] < 5, "finished before the kill"
    assert not os.path.exists(os.path.join(workdir, "metrics.json"))

    result = _reproduce(*flags)
    assert result.returncode == 0, result.stderr[-3000:]
    # The rerun goes on from the epoch after the last one logged.
    assert _epochs_logged(workdir) == list(range(6))
    assert os.path.exists(os.path.join(workdir, "metrics.json"))


@pytest.mark.slow
@pytest.mark.ci_slow
def test_an_unfinished_run_with_another_config_is_refused(tmp_path):
    """The trainer's own check (issue 20) on a row the runner hands it."""
    flags = (f"--table={TABLE}", "--smoke", "--seeds=1",
             f"--rows={ROWS[0]}", f"--workdir={tmp_path}", "--nolatency")
    assert _reproduce(*flags).returncode == 0
    workdir = tmp_path / TABLE / ROWS[0] / "seed0"
    assert (workdir / "config.json").exists()
    os.remove(workdir / "metrics.json")  # as if killed before the end
    result = _reproduce(*flags, "--set=lr=0.5")
    assert result.returncode == 2
    assert "lr" in result.stderr.splitlines()[-1]


def test_the_time_estimate_is_flops_over_the_assumed_rate(tmp_path):
    from keras_compact.reproduce import estimate

    table = tables.get("od_cifar10")
    options = _options(tmp_path, seeds=5, rows=("resnet56",
                                                "shift_students4"))
    resnet56, shift4 = estimate.table_hours(table, options, tflops=8)
    # ResNet-56: 125,747,840 MACs x 6 x 50k images x 164 epochs.
    flops = 6 * 125_747_840 * 50_000 * 164
    assert (resnet56.training_macs, resnet56.epochs) == (125_747_840, 164)
    assert resnet56.petaflops == pytest.approx(flops / 1e15, rel=1e-12)
    assert resnet56.hours == pytest.approx(flops / 8e12 / 3600, rel=1e-12)
    # Four Shift-ResNet-56 students (15,385,216 MACs each) on the 90% of
    # the training set left by the validation split, at OD's measured
    # utilisation relative to the ResNet's.
    assert (shift4.training_macs, shift4.images) == (4 * 15_385_216, 45_000)
    assert shift4.hours == pytest.approx(
        6 * 4 * 15_385_216 * 45_000 * 300
        / (8e12 * 29.7 / 75.9) / 3600, rel=1e-12)
    text = estimate.markdown(table, [resnet56, shift4], 5, 8)
    assert text.startswith("### od_cifar10: about 3.3 h for 5 seeds")


def test_claims_are_judged_on_paired_seeds(tmp_path):
    table = tables.get("evidence")
    options = _options(tmp_path)
    for seed, (ck_fc, cl_fc, compact) in enumerate(
            ((0.80, 0.69, 0.70), (0.82, 0.62, 0.71), (0.84, 0.76, 0.72))):
        _finish(options, table, "smallnet7_ck_fc", seed, ck_fc)
        _finish(options, table, "smallnet7_cl_fc", seed, cl_fc)
        _finish(options, table, "smallnet7_compact", seed, compact)
    _finish(options, table, "sc_resnet20", 0, 0.9)
    _finish(options, table, "resnet20", 0, 0.8)
    _finish(options, table, "od_shift_resnet20_x4", 1, 0.9)
    _finish(options, table, "od_shift_resnet20_x1", 2, 0.8)
    results = {(r["row"], r["baseline"]): r
               for r in report.claims(table, options)}
    ck_fc = results["smallnet7_ck_fc", "smallnet7_compact"]
    # Differences 10, 11, 12: mean 11, sd 1, t(0.975, 2) = 4.303.
    assert ck_fc["seeds"] == 3
    assert ck_fc["difference"] == pytest.approx(11.0, abs=1e-9)
    half = 4.303 / 3 ** 0.5
    assert ck_fc["ci95"] == pytest.approx([11 - half, 11 + half], abs=1e-9)
    assert ck_fc["verdict"] == "supports"
    # -1, -9, +4: the interval holds 0.
    assert results["smallnet7_cl_fc", "smallnet7_compact"]["verdict"] == (
        "cannot resolve")
    assert results["sc_resnet20", "resnet20"]["verdict"] == (
        "cannot resolve (one seed)")
    # Seeds 1 and 2 are not a pair.
    assert results["od_shift_resnet20_x4", "od_shift_resnet20_x1"][
        "verdict"] == "not run yet"
    text = report.markdown(table, report.collect(table, options), options)
    assert ("| ExpandNets: CK+FC training beats the compact net "
            "(smallnet7_ck_fc − smallnet7_compact) | 3 | +11.00 | "
            "[+8.52, +13.48] | supports |") in text


def test_a_claim_the_data_contradicts(tmp_path):
    table = tables.get("evidence")
    options = _options(tmp_path, seeds=2)
    for seed, (aps, thin) in enumerate(((0.80, 0.85), (0.81, 0.87))):
        _finish(options, table, "aps_resnet20_20.6M", seed, aps)
        _finish(options, table, "resnet20_thin", seed, thin)
    (result,) = [r for r in report.claims(table, options)
                 if r["row"] == "aps_resnet20_20.6M"]
    # -5 and -6: mean -5.5, sd 0.707, t(0.975, 1) = 12.706 -> [-11.9, 0.85].
    assert result["verdict"] == "cannot resolve"
    for seed, (aps, thin) in enumerate(((0.80, 0.85), (0.80, 0.85))):
        _finish(options, table, "aps_resnet20_20.6M", seed, aps + seed / 1e3)
        _finish(options, table, "resnet20_thin", seed, thin + seed / 1e3)
    (result,) = [r for r in report.claims(table, options)
                 if r["row"] == "aps_resnet20_20.6M"]
    assert result["verdict"] == "contradicts"
    # A run of some rows judges only the claims between them.
    options = _options(tmp_path, seeds=2, rows=("aps_resnet20_20.6M",
                                                "resnet20_thin", "resnet20"))
    assert [r["row"] for r in report.claims(table, options)] == [
        "aps_resnet20_20.6M"]
