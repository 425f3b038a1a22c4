"""Mutation check: plants plausible bugs one at a time, runs the tests.

Each entry of `MUTATIONS` names a library file, an exact snippet of it, the
buggy replacement and the tests that should catch it. The work happens in a
temporary copy of the tree (git's tracked and untracked files), so the tree
you work in is never touched, even by a `kill -9`, and a test run elsewhere
never imports a mutant. For each mutation the copied file is rewritten, the
named tests run in a fresh pytest process (markers ignored, stopping at the
first failure) and the file is restored, always (also on Ctrl-C or SIGTERM),
before the next one. A mutant is *caught* when the tests fail, *missed*
when they pass; a snippet no longer in the file (the code moved) is
reported as *stale*, to be re-pointed. Runs on demand, not in CI; the last
result is recorded in docs/testing.md.

    python -m tools.mutate                  # every mutation
    python -m tools.mutate --only=kd_temperature,shift_direction
    python -m tools.mutate --list

Exit status: 0 when every mutant was caught, 1 otherwise.
"""

import argparse
import dataclasses
import os
import shutil
import signal
import subprocess
import sys
import tempfile
import time

ROOT = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))


@dataclasses.dataclass(frozen=True)
class Mutation:
    name: str
    path: str  # relative to the repository root
    original: str  # must occur exactly once in the file
    replacement: str
    tests: tuple  # pytest node ids or files (and options, e.g. -m)
    bug: str  # the bug, in words


MUTATIONS = (
    Mutation(
        "contraction_bias",
        "keras_compact/layers/expansion.py",
        'bias = bias2 + np.einsum("ghwjo,gj->go", kernel2, bias1)',
        "bias = bias2",
        ("tests/test_expandnets.py",),
        "ExpandNets contraction drops the first conv's bias (b2 + K2^T b1)"),
    Mutation(
        "shift_direction",
        "keras_compact/layers/cheap.py",
        "kernel[dh + 1, dw + 1, channel, 0] = 1.0",
        "kernel[1 - dh, 1 - dw, channel, 0] = 1.0",
        ("tests/test_od.py", "-k", "shift"),
        "OD Shift2D moves every channel the opposite way"),
    Mutation(
        "slimconv_flip",
        "keras_compact/layers/slim_conv.py",
        "ops.matmul(h, ops.flip(self.excite.kernel, axis=1))\n"
        "            + ops.flip(self.excite.bias, axis=0)",
        "ops.matmul(h, self.excite.kernel)\n            + self.excite.bias",
        ("tests/test_slimconv.py", "-m", "not slow"),
        "SlimConv's lower path folds by w instead of flip(w)"),
    Mutation(
        "kd_temperature",
        "keras_compact/losses.py",
        "return kl * (temperature**2)",
        "return kl * temperature",
        ("tests/test_knowledge_distillation.py", "tests/test_od.py", "-k",
         "distillation or od_loss"),
        "distillation loss scaled by T instead of T^2"),
    Mutation(
        "od_replica_scaling_log",
        "keras_compact/methods/od.py",
        "self.loss_tracker.update_state(loss * distribute.num_replicas(),",
        "self.loss_tracker.update_state(loss,",
        ("tests/test_od.py::test_od_mirrored_strategy_matches_default",),
        "OD logs the replica-scaled loss (1/replicas of the real one)"),
    Mutation(
        "od_replica_scaling_regularizer",
        "keras_compact/methods/od.py",
        "loss += ops.sum(self.losses) / distribute.num_replicas()",
        "loss += ops.sum(self.losses)",
        ("tests/test_od.py::test_od_mirrored_strategy_matches_default",
         "tests/test_od.py::test_od_loss_adds_regularization_of_any_student"),
        "OD adds the weight penalty once per replica (summed, not averaged)"),
    Mutation(
        "reinforce_sign",
        "keras_compact/methods/aps/search.py",
        "loss = -log_prob * advantage - self.entropy_coeff * entropy",
        "loss = log_prob * advantage - self.entropy_coeff * entropy",
        ("tests/test_aps_controller.py", "-k", "reinforce"),
        "APS controller descends the reward (REINFORCE sign flipped)"),
    Mutation(
        "mirrored_gradient_sum",
        "keras_compact/optimizers.py",
        "    def update_step(self, gradient, variable, learning_rate):\n",
        "    def update_step(self, gradient, variable, learning_rate):\n"
        "        from keras_compact import distribute\n"
        "        gradient = gradient * distribute.num_replicas()\n",
        ("tests/test_training.py::"
         "test_mirrored_on_identical_halves_equals_default_strategy",
         "tests/test_step_breakdown.py::"
         "test_fused_sgd_update_trains_like_keras_sgd", "tests/test_od.py::"
         "test_od_mirrored_strategy_matches_default"),
        "gradients summed instead of averaged over the replicas"),
    Mutation(
        "momentum_lost_on_resume",
        "keras_compact/training.py",
        "        callbacks=callbacks,\n",
        "        callbacks=callbacks + [keras.callbacks.LambdaCallback(\n"
        "            on_train_begin=lambda logs: [\n"
        "                m.assign(ops.zeros_like(m))\n"
        "                for m in optimizer.momentums])],\n",
        ("tests/test_training.py::test_interrupted_run_resumes",),
        "momentum buffers zeroed right after a resume restored them"),
)


def _restore_on_signals():
    """Turns SIGTERM / SIGHUP into KeyboardInterrupt, so `finally` runs."""
    def interrupt(signum, frame):
        del frame
        raise KeyboardInterrupt(f"signal {signum}")

    for signum in (signal.SIGTERM, signal.SIGHUP):
        signal.signal(signum, interrupt)


def _write(path, text):
    temporary = path + ".mutate-tmp"
    with open(temporary, "w") as f:
        f.write(text)
    os.replace(temporary, path)  # never a half-written library file


def copy_tree(destination):
    """Copies the tree's tracked and untracked (not ignored) files."""
    listed = subprocess.run(
        ["git", "ls-files", "-z", "--cached", "--others",
         "--exclude-standard"], cwd=ROOT, capture_output=True, check=True)
    for relative in filter(None, listed.stdout.decode().split("\0")):
        source = os.path.join(ROOT, relative)
        if os.path.isfile(source):  # a deleted, uncommitted file is skipped
            target = os.path.join(destination, relative)
            os.makedirs(os.path.dirname(target), exist_ok=True)
            shutil.copy2(source, target)


def run_one(mutation, tree, timeout):
    """Returns `(outcome, seconds, detail)` for one mutant in `tree`."""
    path = os.path.join(tree, mutation.path)
    with open(path) as f:
        original = f.read()
    count = original.count(mutation.original)
    if count != 1:
        return "stale", 0.0, f"snippet found {count} times in {mutation.path}"
    start = time.perf_counter()
    try:
        _write(path, original.replace(mutation.original,
                                      mutation.replacement))
        code, tail = _pytest(mutation.tests, tree, timeout)
    finally:
        _write(path, original)
    seconds = time.perf_counter() - start
    if code is None:
        return "caught", seconds, tail
    # pytest: 0 all passed, 1 some failed; anything else is not a verdict.
    outcome = {0: "missed", 1: "caught"}.get(code, "error")
    if outcome == "error":
        tail = f"pytest exit {code}: {tail}"
    return outcome, seconds, tail


def _pytest(tests, tree, timeout):
    """`(exit code, last output line)`; the code is None on a timeout."""
    # -m "": the named tests run whatever their markers; -x: the first
    # failure is enough.
    command = [sys.executable, "-m", "pytest", "-q", "-x", "-m", "",
               "-p", "no:cacheprovider", *tests]
    try:
        result = subprocess.run(command, cwd=tree, capture_output=True,
                                text=True, timeout=timeout)
    except subprocess.TimeoutExpired:
        return None, f"tests timed out after {timeout:.0f} s"
    return result.returncode, (result.stdout.strip().splitlines()
                               or [""])[-1]


def main(argv=None):
    parser = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    parser.add_argument("--only", default="",
                        help="comma-separated mutation names (default all)")
    parser.add_argument("--list", action="store_true",
                        help="list the mutations and exit")
    parser.add_argument("--timeout", type=float, default=1800,
                        help="seconds per mutant's test run")
    args = parser.parse_args(argv)
    by_name = {m.name: m for m in MUTATIONS}
    if args.list:
        for m in MUTATIONS:
            print(f"{m.name}: {m.bug} ({m.path}; {' '.join(m.tests)})")
        return 0
    names = [n for n in args.only.split(",") if n] or list(by_name)
    unknown = sorted(set(names) - set(by_name))
    if unknown:
        parser.error(f"unknown mutation {', '.join(unknown)}. Valid: "
                     f"{', '.join(by_name)}")
    _restore_on_signals()
    try:
        rows = _run(names, by_name, args.timeout)
    except KeyboardInterrupt:
        print("interrupted: the copy was restored and removed",
              file=sys.stderr)
        return 130
    _report(rows, by_name)
    caught = sum(outcome == "caught" for _, outcome, _, _ in rows)
    return 0 if caught == len(rows) else 1


def _run(names, by_name, timeout):
    rows = []
    with tempfile.TemporaryDirectory(prefix="keras_compact_mutate_") as tree:
        copy_tree(tree)
        passing = {}  # tests -> whether they pass unmutated
        for name in names:
            mutation = by_name[name]
            if mutation.tests not in passing:
                print(f"{name}: its tests, unmutated ...", file=sys.stderr,
                      flush=True)
                code, tail = _pytest(mutation.tests, tree, timeout)
                passing[mutation.tests] = (code == 0, tail)
            if not passing[mutation.tests][0]:
                # A failure would prove nothing about the mutant.
                rows.append((name, "error", 0.0, "fails unmutated: "
                             + passing[mutation.tests][1]))
                print(f"{name}: error, its tests fail unmutated",
                      file=sys.stderr, flush=True)
                continue
            print(f"{name}: running ...", file=sys.stderr, flush=True)
            outcome, seconds, detail = run_one(mutation, tree, timeout)
            print(f"{name}: {outcome} ({seconds:.0f} s) {detail}",
                  file=sys.stderr, flush=True)
            rows.append((name, outcome, seconds, detail))
    return rows


def _report(rows, by_name):
    print("| mutation | bug | result | seconds | last line of pytest |")
    print("|---|---|---|---|---|")
    for name, outcome, seconds, detail in rows:
        print(f"| {name} | {by_name[name].bug} | {outcome} | {seconds:.0f} "
              f"| {detail.replace('|', '/')} |")
    caught = sum(outcome == "caught" for _, outcome, _, _ in rows)
    print(f"\n{caught} of {len(rows)} mutants caught")


if __name__ == "__main__":
    sys.exit(main())
