"""tools/benchmark.py's PyTorch comparisons and tools/torch_models.py twins.

The Keras-side tests run everywhere; the twin tests need torch (the
optional `.[bench]` extra) and are skipped without it.
"""

import dataclasses
import math

import keras
import numpy as np
import pytest

from keras_compact import losses
from keras_compact import profiling
from tools import benchmark

INPUT = (32, 32, 3)

# The default trainable model of every method (and the baselines they are
# measured against); other registered twins run with -m slow.
DEFAULT_PAIRS = ("baseline:resnet20", "slimconv:sc_resnet20", "od:resnet56",
                 "od:resnet20:block=dw;students=1",
                 "od:resnet20:block=group;students=1", "aps:resnet20",
                 "expandnet:smallnet7", "xnet:densenet_bc_40_24",
                 "baseline:densenet_bc_40_24")

TINY = dict(batch=2, size=8)


def _data(batch, classes=10):
    rng = np.random.default_rng(0)
    return (rng.normal(size=(batch, *INPUT)).astype("float32"),
            rng.integers(0, classes, batch).astype("int32"))


def _trainable(model):
    return sum(math.prod(w.shape) for w in model.trainable_weights)


def test_pair_config_defaults_come_before_the_pair_settings():
    config = benchmark.pair_config("aps:resnet20",
                                   defaults="widths=resnet20_20.6M")
    assert config.widths == "resnet20_20.6M" and config.arch == "resnet20"
    config = benchmark.pair_config("aps:resnet20:widths=resnet56_60.3M",
                                   defaults="widths=resnet20_20.6M")
    assert config.widths == "resnet56_60.3M"


def test_keras_trainer_runs_the_methods_train_step():
    """OD trains through its own train step (no compiled loss)."""
    config = benchmark.pair_config("od:resnet20:students=2")
    x, y = _data(4)
    model, step = benchmark.keras_trainer(config, INPUT, 10, x, y)
    before = model.teacher_fc.kernel.numpy().copy()
    losses_seen = [step(), step()]
    assert all(np.isfinite(losses_seen)) and losses_seen[0] > 0
    assert not np.allclose(before, model.teacher_fc.kernel.numpy())
    # Two students of 34,906 params (ResNet-20 of shift blocks) and the
    # teacher's BN (2 x 128) and classifier (128 x 10 + 10).
    assert _trainable(model) == 2 * 34906 + 256 + 1290
    student = profiling.profile(model.students[0]).macs
    assert benchmark.keras_macs("od", model) == 2 * student + 1280


def test_keras_macs_of_plain_models_is_the_profile():
    config = benchmark.pair_config("slimconv:sc_resnet20")
    model, _ = benchmark.keras_trainer(config, INPUT, 10, *_data(2))
    assert benchmark.keras_macs("slimconv", model) == 20688512


def test_every_grouped_case_has_a_keras_form_that_trains():
    forms = {case.form for case in benchmark.GROUPED_CASES}
    assert forms == set(benchmark.GROUPED_FORMS.names())
    for form in sorted(forms):
        case = next(c for c in benchmark.GROUPED_CASES if c.form == form)
        step = benchmark.keras_grouped_step(dataclasses.replace(case, **TINY))
        first = step()
        assert np.isfinite(first) and first > 0
        assert step() == pytest.approx(first)  # nothing is updated


def test_gathered_form_has_the_grouped_convs_macs():
    """X-Nets' gathered layer with ES = g computes what groups=g would."""
    case = benchmark.GroupedCase("t", "xnet_gather_block", 2, 8, 48, 96, 3,
                                 2)
    for form in ("xnet_gather", "xnet_gather_block"):
        layer = benchmark.GROUPED_FORMS.get(form)(
            dataclasses.replace(case, form=form))
        layer.build((None, 8, 8, 48))
        counts = layer.profile((None, 8, 8, 48), (None, 8, 8, 96))
        assert counts["macs"] == 8 * 8 * 96 * 9 * 48 // 2


# -- With torch ------------------------------------------------------------


def _torch_models():
    from tools import torch_models

    return torch_models


def _twin(pair):
    torch_models = _torch_models()
    method, arch, _ = benchmark.split_pair(pair)
    twin = torch_models.TWINS.get(f"{method}:{arch}")
    config = benchmark.pair_config(pair, defaults=twin.recipe)
    return config, twin.build(config, INPUT, 10)


def _both(pair):
    from keras_compact import methods

    config, twin_model = _twin(pair)
    keras_model = methods.get(config.method).build_model(config, INPUT, 10)
    return config, keras_model, twin_model


@pytest.mark.parametrize("pair", DEFAULT_PAIRS)
def test_twin_has_the_params_and_macs_of_the_keras_model(pair):
    _, keras_model, twin_model = _both(pair)
    params, macs, executed = benchmark._checked_counts(
        pair, keras_model, twin_model, pair.split(":")[0], INPUT)
    assert params == _trainable(keras_model) and macs <= executed


def _other_twins():
    try:
        from tools import torch_models
    except ImportError:
        return []
    defaults = {p.rsplit(":", 1)[0] if p.count(":") > 1 else p
                for p in DEFAULT_PAIRS}
    return [n for n in torch_models.TWINS.names() if n not in defaults]


@pytest.mark.slow
@pytest.mark.parametrize("pair", _other_twins())
def test_every_other_twin_matches(pair):
    test_twin_has_the_params_and_macs_of_the_keras_model(pair)


def test_counts_that_differ_fail_loudly():
    torch_models = _torch_models()
    _, keras_model, _ = _both("baseline:resnet20")
    wrong = torch_models.resnet_cifar(32)
    with pytest.raises(RuntimeError, match="not the trained model"):
        benchmark._checked_counts("baseline:resnet20", keras_model, wrong,
                                  "baseline", INPUT)


def test_xnet_twin_counts_only_existing_connections():
    """Counted MACs follow the paper; executed ones are the dense convs
    (DenseNet-BC-40-24's, as `profiling` counts the dense net)."""
    _, twin_model = _twin("xnet:densenet_bc_40_24")
    macs, executed = _torch_models().count_macs(twin_model, INPUT)
    assert (macs, executed) == (157854288, 288131664)


def test_shift_twin_equals_keras_shift():
    torch = _torch_models().torch
    from keras_compact import layers

    x = np.random.default_rng(0).normal(size=(2, 5, 6, 20)).astype("float32")
    expected = keras.ops.convert_to_numpy(layers.Shift2D()(x))
    twin = _torch_models().Shift2d(20)
    actual = twin(torch.from_numpy(x.transpose(0, 3, 1, 2).copy()))
    np.testing.assert_array_equal(actual.numpy().transpose(0, 2, 3, 1),
                                  expected)


def test_od_twin_loss_equals_the_keras_objective():
    torch_models = _torch_models()
    torch = torch_models.torch
    rng = np.random.default_rng(0)
    students = [rng.normal(size=(8, 10)).astype("float32") for _ in range(3)]
    teacher = rng.normal(size=(8, 10)).astype("float32")
    y = rng.integers(0, 10, 8)
    cross_entropy = keras.losses.SparseCategoricalCrossentropy(True)
    distillation = losses.DistillationLoss(4.0)
    expected = float(cross_entropy(y, teacher)) + sum(
        float(cross_entropy(y, s)) + float(distillation(teacher, s))
        for s in students)
    actual = torch_models.od_loss(4.0)(
        ([torch.from_numpy(s) for s in students], torch.from_numpy(teacher)),
        torch.from_numpy(y))
    assert float(actual) == pytest.approx(expected, rel=1e-5)


def test_tiny_compare_run_returns_finite_ratios():
    _torch_models()
    rows = benchmark.compare_pytorch(["aps:resnet20"], batch_size=4,
                                     rounds=1, steps=1, warmup=1)
    assert [r["pair"] for r in rows] == ["aps:resnet20"]
    for row in rows:
        for key in ("params", "forward_macs", "executed_macs", "peak_gflops",
                    "keras_compact_images_per_second",
                    "pytorch_images_per_second", "keras_compact_mfu",
                    "pytorch_mfu", "ratio"):
            assert np.isfinite(row[key]) and row[key] > 0, key
        assert row["keras_compact_mfu"] < 1 and row["pytorch_mfu"] < 1
    assert rows[0]["params"] == 205138


def test_tiny_grouped_conv_comparison():
    _torch_models()
    cases = [dataclasses.replace(c, **TINY) for c in
             benchmark.GROUPED_CASES[:1]]
    (row,) = benchmark.compare_grouped_conv(cases, rounds=1, steps=1,
                                            warmup=1)
    assert row["form"] == "group_block" and row["groups"] == 4
    assert np.isfinite(row["speedup"]) and row["speedup"] > 0
