"""The command line's error path: every user error is one line, exit 2.

Each bad invocation runs in its own process, forked from one server that
imported TensorFlow and keras_compact once (importing them takes most of a
run's start-up; a fresh interpreter per case would take minutes). A child
runs the entry point as `python -m` does (`runpy`, `__main__`), with
stdout and stderr going to files. The flags are defined in the child
only, as in a real run. Two cases also run as plain subprocesses.
"""

import gzip
import json
import os
import subprocess
import sys
import textwrap

import pytest

ROOT = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))

# Reads `[module, args, timeout]` JSON lines; forks a child per line that
# runs `module` as __main__ with `args`; answers `{"code", "stderr"}`.
_SERVER = textwrap.dedent("""
    import json, os, runpy, sys, tempfile, time, traceback
    import keras_compact
    import keras_compact.benchmarking
    import keras_compact.configs.loader
    import keras_compact.trainers.flags_common
    print("ready", flush=True)
    for line in sys.stdin:
        module, args, timeout = json.loads(line)
        err = tempfile.TemporaryFile()
        pid = os.fork()
        if pid == 0:
            out = os.open(os.devnull, os.O_WRONLY)
            os.dup2(out, 1)
            os.dup2(err.fileno(), 2)
            sys.argv = [module] + args
            code = 0
            try:
                runpy.run_module(module, run_name="__main__", alter_sys=True)
            except SystemExit as error:
                code = error.code if isinstance(error.code, int) else 1
            except BaseException:
                traceback.print_exc()
                code = 1
            sys.stdout.flush()
            sys.stderr.flush()
            os._exit(code)
        deadline = time.monotonic() + timeout
        while True:
            done, status = os.waitpid(pid, os.WNOHANG)
            if done:
                code = os.waitstatus_to_exitcode(status)
                break
            if time.monotonic() > deadline:
                os.kill(pid, 9)
                os.waitpid(pid, 0)
                code = "timeout"
                break
            time.sleep(0.05)
        err.seek(0)
        text = err.read().decode(errors="replace")
        print(json.dumps({"code": code, "stderr": text}), flush=True)
""")


@pytest.fixture(scope="module")
def server():
    process = subprocess.Popen(
        [sys.executable, "-c", _SERVER], cwd=ROOT, text=True,
        stdin=subprocess.PIPE, stdout=subprocess.PIPE,
        env={**os.environ, "TF_CPP_MIN_LOG_LEVEL": "2"})
    assert process.stdout.readline().strip() == "ready"

    def run(module, args, timeout=120):
        process.stdin.write(json.dumps([module, args, timeout]) + "\n")
        process.stdin.flush()
        return json.loads(process.stdout.readline())

    yield run
    process.stdin.close()
    process.wait(timeout=60)


@pytest.fixture(scope="module")
def bad_data(tmp_path_factory):
    """Folders of missing and corrupt data files."""
    root = tmp_path_factory.mktemp("data")
    (root / "empty").mkdir()
    corrupt = root / "corrupt_fashion"
    corrupt.mkdir()
    for name in ("train-images-idx3-ubyte", "train-labels-idx1-ubyte",
                 "t10k-images-idx3-ubyte", "t10k-labels-idx1-ubyte"):
        (corrupt / f"{name}.gz").write_bytes(b"not gzip")
    truncated = root / "truncated_fashion"
    truncated.mkdir()
    for name, magic, shape in (
            ("train-images-idx3-ubyte", 2051, (60000, 28, 28)),
            ("train-labels-idx1-ubyte", 2049, (60000,)),
            ("t10k-images-idx3-ubyte", 2051, (10000, 28, 28)),
            ("t10k-labels-idx1-ubyte", 2049, (10000,))):
        header = b"".join(v.to_bytes(4, "big") for v in (magic, *shape))
        (truncated / f"{name}.gz").write_bytes(
            gzip.compress(header + b"\0" * 10))
    cifar = root / "cifar"
    (cifar / "cifar-10-batches-py").mkdir(parents=True)
    for name in [f"data_batch_{i}" for i in range(1, 6)] + ["test_batch"]:
        (cifar / "cifar-10-batches-py" / name).write_bytes(b"garbage")
    (root / "recipe.py").write_text("raise SyntaxError(\n")
    return root


CIFAR = "keras_compact.trainers.cifar"
IMAGENET = "keras_compact.trainers.imagenet"
PROFILE = "keras_compact.tools.profile"
EXPORT = "keras_compact.tools.export"
BENCHMARK = "keras_compact.tools.benchmark"
CONTRACT = "keras_compact.tools.contract"

# (entry point, arguments, text the one line must contain: the fix or
# the valid choices). `{data}` is the bad_data folder.
CASES = [
    # names
    (CIFAR, ["--method=no_such_method"],
     "Valid methods: aps, aps_od, baseline"),
    (CIFAR, ["--arch=resnet21"], "Valid archs: "),
    (CIFAR, ["--dataset=svhn"], "Valid datasets: cifar10, cifar100"),
    (CIFAR, ["--strategy=gpu"], "mirrored, multi_worker"),
    (CIFAR, ["--export=onnx"], "saved_model, tflite"),
    (CIFAR, ["--config=no_such_recipe"],
     "packaged recipes: aps, aps_od, baseline"),
    (CIFAR, ["--config=/no/such/recipe.py"], "does not exist"),
    (CIFAR, ["--set=lrr=0.1"], "Unknown config field 'lrr'. Valid fields"),
    (CIFAR, ["--no_such_flag=1"], "Unknown command line flag"),
    (IMAGENET, ["--method=no_such_method"],
     "Valid methods: aps, aps_od, baseline"),
    (CIFAR, ["--method=aps", "--then=expandnet"],
     "expandnet cannot train aps's architecture"),
    # types
    (CIFAR, ["--lr=abc"], "lr expects a number, got 'abc'"),
    (CIFAR, ["--epochs=1.5"], "epochs expects an integer, got '1.5'"),
    (CIFAR, ["--set=nesterov=maybe"], "nesterov expects true or false"),
    (CIFAR, ["--smoke=maybe"], "smoke"),
    (CIFAR, ["--set=epochs"], "--set item 'epochs' is not key=value"),
    (CIFAR, ["stray"], "Unexpected arguments stray"),
    # ranges
    (CIFAR, ["--epochs=0"], "epochs=0: must be a positive integer"),
    (CIFAR, ["--epochs=-1"], "epochs=-1: must be a positive integer"),
    (CIFAR, ["--batch_size=0"], "batch_size=0: must be a positive"),
    (CIFAR, ["--steps_per_epoch=-1"], "steps_per_epoch=-1: must be 0"),
    (CIFAR, ["--train_subset=-100"], "train_subset=-100: must be 0"),
    (CIFAR, ["--lr=-0.1"], "lr=-0.1: must be a positive number"),
    (CIFAR, ["--validation_split=1.5"], "validation_split=1.5: must be in"),
    # the last of several --set flags used to win alone
    (CIFAR, ["--set=lr=0.05", "--set=epochs=0"], "epochs=0: must be"),
    (CIFAR, ["--mixed_precision=fp8"], "mixed_float16"),
    # missing or corrupt data
    (CIFAR, ["--dataset=fashion_mnist", "--data_dir={data}/empty"],
     "apt-get install dataset-fashion-mnist"),
    (CIFAR, ["--dataset=fashion_mnist", "--data_dir={data}/corrupt_fashion",
             "--smoke"], "is not a readable gzip file"),
    (CIFAR, ["--dataset=fashion_mnist",
             "--data_dir={data}/truncated_fashion", "--smoke"],
     "is truncated"),
    (CIFAR, ["--data_dir={data}/cifar", "--smoke"],
     "is not a valid CIFAR batch"),
    (CIFAR, ["--data_dir={data}/no_such_folder"], "does not exist"),
    (CIFAR, ["--dataset=fashion_mnist", "--train_subset=70000"],
     "at most the 60000 training images"),
    (IMAGENET, ["--smoke"], "needs --data_dir"),
    # bad combinations
    (CIFAR, ["--method=baseline", "--slim_k=2"],
     "--slim_k does not apply to --method=baseline"),
    # the tools
    (PROFILE, ["--method=aps", "--arch=resnet20"], "pass --widths"),
    (PROFILE, ["--model={data}/none.keras"], "does not exist"),
    (PROFILE, ["--threads=a:b"], "two integers"),
    (PROFILE, ["--batch_size=0"], "batch_size"),
    (EXPORT, [], "--model must have a value"),
    (EXPORT, ["--model=m.keras", "--formats=onnx"], "valid: saved_model"),
    (BENCHMARK, ["--runs={data}/empty"], "finished training"),
    (BENCHMARK, ["--pairs=nope:resnet20"], "Valid methods"),
    (BENCHMARK, ["--dataset=svhn"], "cifar10"),
    (BENCHMARK, ["--output={data}/no/such/out"], "does not exist"),
    (CONTRACT, ["--input={data}/none.keras", "--output=x.keras"],
     "does not exist"),
]


def _error_lines(stderr, module):
    """The lines of the error message: from `<module>: error:` on.

    What the run logged before (TensorFlow's start-up lines, the config
    the run resolved) comes first and is not part of the error.
    """
    lines = stderr.rstrip().splitlines()
    starts = [i for i, line in enumerate(lines)
              if line.startswith(f"{module}: error: ")]
    return lines[starts[0]:] if starts else lines[-1:]


@pytest.mark.parametrize(
    "module,args,expected", CASES,
    ids=[f"{m.rsplit('.', 1)[1]}:{' '.join(a) or 'no args'}"
         for m, a, _ in CASES])
def test_user_error_is_one_line_and_exit_2(server, bad_data, module, args,
                                           expected):
    args = [a.replace("{data}", str(bad_data)) for a in args]
    result = server(module, args)
    lines = _error_lines(result["stderr"], module)
    assert result["code"] == 2, result["stderr"][-3000:]
    assert "Traceback" not in result["stderr"]
    assert len(lines) == 1, lines
    assert lines[0].startswith(f"{module}: error: "), lines[0]
    assert expected in lines[0], lines[0]


def test_verbosity_shows_the_traceback(server):
    result = server(CIFAR, ["--epochs=0", "--verbosity=1"])
    assert result["code"] == 2
    assert "Traceback" in result["stderr"]
    assert result["stderr"].rstrip().splitlines()[-1].endswith(
        "epochs=0: must be a positive integer.")


def test_a_bug_keeps_its_traceback(server, bad_data):
    # A recipe file that does not parse is the recipe author's bug.
    result = server(CIFAR, [f"--config={bad_data}/recipe.py"])
    assert result["code"] == 1
    assert "Traceback" in result["stderr"]
    assert "SyntaxError" in result["stderr"]


@pytest.mark.parametrize("command", [
    [sys.executable, "-m", "trainers.cifar", "--method=no_such_method"],
    [sys.executable, "-c", "from keras_compact.trainers import cifar; "
     "cifar.run()", "--method=no_such_method"],
], ids=["repo wrapper", "console script target"])
def test_real_process(command):
    result = subprocess.run(command, cwd=ROOT, capture_output=True,
                            text=True, timeout=300)
    lines = _error_lines(result.stderr, "trainers.cifar")
    assert result.returncode == 2, result.stderr[-3000:]
    assert "Traceback" not in result.stderr
    assert len(lines) == 1
    assert "Valid methods: aps, aps_od, baseline" in lines[0]
