"""Composed methods: OD students of other methods' layers, APS then OD."""

import inspect

import keras
import numpy as np
import pytest

from keras_compact import data
from keras_compact import distribute
from keras_compact import files
from keras_compact import layers
from keras_compact import methods
from keras_compact import profiling
from keras_compact import training
from keras_compact.configs import aps_od as aps_od_config
from keras_compact.configs import od as od_config
from keras_compact.errors import UsageError
from keras_compact.methods import compose
from keras_compact.methods import expandnet
from keras_compact.methods import od
from keras_compact.models.resnet_cifar import resnet_cifar

# Tiny students (ResNet-8 on 8x8 inputs) keep the default tier fast; the
# CIFAR ResNets the flags build differ only in depth.
SHAPE = (8, 8, 3)


def _context(config, workdir, seed=0):
    rng = np.random.default_rng(seed)
    x = rng.integers(0, 256, (64, *SHAPE), dtype=np.uint8)
    y = rng.integers(0, 10, 64).astype(np.int32)
    dataset = data.ImageDataset(x, y, x, y, 10, (127.5,) * 3, (64.0,) * 3)
    splits = data.make_splits(dataset, 16, validation_split=0.25)
    return training.Context(config, distribute.get("default"), str(workdir),
                            splits)


def _train(model, method, config, context):
    method.compile_model(model, keras.optimizers.SGD(0.01, momentum=0.9),
                         config)
    # Two steps of tiny nets: tracing a tf.function would cost more.
    model.run_eagerly = True
    model.fit(context.data.train, epochs=1, steps_per_epoch=2, verbose=0,
              shuffle=False)
    return model


def _chosen(context, model):
    record = files.read_json(f"{context.workdir}/{od.SELECTION}")
    return model.students[record["student"]]


def _relative_error(expected_model, actual_model, x):
    expected = keras.ops.convert_to_numpy(expected_model(x, training=False))
    actual = keras.ops.convert_to_numpy(actual_model(x, training=False))
    return float(np.max(np.abs(expected - actual))
                 / np.max(np.abs(expected)))


def _counts(model):
    report = profiling.profile(model)
    return report.params, report.macs


# The contraction multiplies out each expanded chain in float32: the
# ExpandNets equivalence bound (test_expandnets.py, 1e-5 relative). The
# other transforms keep the student's kernels (a copy; X-Nets folds a 0/1
# mask into them), so their outputs are the same numbers.
TOLERANCE = {"expanded": 1e-5}


# Each student conv's transform, as its method defines it (None: the
# student deploys as trained, SlimConv has no transform).
TRANSFORMS = {"slimconv": None, "expander": (layers, "deployable_model"),
              "expanded": (expandnet, "contract")}


# OD's own blocks (shift, dw, group) deploy as trained (test_od.py); the
# slow end-to-end runs below cover them through the trainer too.
@pytest.mark.parametrize("name", sorted(TRANSFORMS))
def test_od_students_train_then_deploy_as_the_plain_compact_net(
        tmp_path, monkeypatch, name):
    calls = []
    if TRANSFORMS[name]:
        # The composition must go through the method's own transform.
        owner, attribute = TRANSFORMS[name]
        original = getattr(owner, attribute)

        def spy(model, *args, **kwargs):
            calls.append(model.name)
            return original(model, *args, **kwargs)

        monkeypatch.setattr(owner, attribute, spy)
    config = od_config.get_config(f"students=2,student_conv={name}")
    kind = od.STUDENT_CONVS.get(name)
    method = methods.get("od")
    model = method.train_together(
        lambda student: resnet_cifar(8, SHAPE, 10, block=kind.block(config),
                                     name=student), config, name)
    context = _context(config, tmp_path)
    _train(model, method, config, context)

    deployable = method.deployable(model, context)
    student = _chosen(context, model)
    assert calls == ([student.name] if TRANSFORMS[name] else [])
    x = np.random.default_rng(1).normal(size=(8, *SHAPE)).astype("float32")
    assert _relative_error(student, deployable, x) <= TOLERANCE.get(name, 0)
    compact = resnet_cifar(8, SHAPE, 10, block=(kind.compact_block
                                                or kind.block)(config))
    assert _counts(deployable) == _counts(compact)
    assert [type(layer) for layer in deployable.layers] == [
        type(layer) for layer in compact.layers]
    if name == "expanded":  # CL at rate 4 over-parameterised the students
        assert _counts(student)[0] > 2 * _counts(compact)[0]


def test_compose_holds_no_transform_code():
    # compose only wires: the transforms' code lives in the methods.
    source = inspect.getsource(compose)
    for transform_code in ("to_compact", "clone_model", "set_weights",
                           "deployable_model", "contract("):
        assert transform_code not in source


def test_aps_widths_train_as_od_students(tmp_path):
    config = aps_od_config.get_config(
        "smoke,phase=train,widths=resnet20_20.6M,students=2")
    method = methods.get("aps_od")
    context = _context(config, tmp_path)
    method.check(config)
    assert method.prepare(context)
    model = method.build_model(config, SHAPE, 10)
    assert [s.name for s in model.students] == ["student1", "student2"]
    _train(model, method, config, context)
    deployable = method.deployable(model, context)
    x = np.random.default_rng(1).normal(size=(8, *SHAPE)).astype("float32")
    assert _relative_error(_chosen(context, model), deployable, x) == 0
    assert _counts(deployable) == _counts(
        method.compact_student(config, SHAPE, 10)) == _counts(
        methods.aps.decode(methods.aps.SEARCHED_WIDTHS["resnet20_20.6M"],
                           SHAPE, 10))


def test_a_user_declares_a_student_conv(tmp_path, monkeypatch):
    monkeypatch.setattr(od.STUDENT_CONVS, "_entries",
                        dict(od.STUDENT_CONVS._entries))
    kind = compose.student_conv(
        "slim2", "slimconv",
        lambda config: od.STUDENT_CONVS.get("slimconv").block(config))
    config = od_config.get_config("students=1,student_conv=slim2")
    methods.get("od").check(config)
    assert kind.method == "slimconv" and od.STUDENT_CONVS.get(
        "slim2") is kind


CONFLICTS = [
    ({"arch": "sc_resnet20", "student_conv": "expander"},
     "--student_conv=expander builds its students from a plain CIFAR "
     "ResNet, but --arch=sc_resnet20 is SlimConv's"),
    ({"student_conv": "expanded", "expand": "ck"},
     "Expand-CK replaces k x k kernels with k > 3"),
    ({"student_conv": "expanded", "expand": "cl+fc"},
     "no hidden fully-connected layer"),
    ({"student_conv": "slimconv", "slim_k": "5/3"}, "--slim_k: "),
    ({"student_conv": "expander", "expand_size": 3},
     "expand_size must be 1, 2, 4, 8 or 16"),
    ({"student_conv": "ghost"}, "Unknown OD student conv 'ghost'"),
]


@pytest.mark.parametrize("fields, message", CONFLICTS)
def test_conflicting_od_students_fail_before_any_data_is_read(
        tmp_path, monkeypatch, fields, message):
    def no_data(config, strategy):
        raise AssertionError("the data was read before the checks")

    monkeypatch.setattr(training, "load_data", no_data)
    config = od_config.get_config()
    config.update(workdir=str(tmp_path), **fields)
    with pytest.raises(UsageError, match=message):
        training.run(config)


@pytest.mark.parametrize("first, then, message", [
    ("aps", "expandnet", "expandnet cannot train aps's architecture: it "
                         "contracts its own linear expansions"),
    ("slimconv", "expandnet", "a ReLU, attention or searched block is not "
                              "linear"),
    ("aps", "slimconv", "slimconv cannot train aps's architecture"),
    ("xnet", "od", "--method=xnet --then=od is not declared; declared: "
                   "aps_od"),
    ("od", "od", "compose two different single methods"),
])
def test_undeclared_or_senseless_compositions_name_the_conflict(
        first, then, message):
    with pytest.raises(UsageError, match=message):
        compose.resolve(first, then)


def test_then_od_refuses_student_convs():
    config = aps_od_config.get_config("student_conv=slimconv")
    with pytest.raises(UsageError, match="the students are aps's nets"):
        methods.get("aps_od").check(config)


def test_any_one_net_method_distils_from_a_teacher(tmp_path):
    from keras_compact.configs import loader
    from keras_compact.methods import knowledge_distillation as kd

    teacher = resnet_cifar(8, SHAPE, 10, name="teacher")
    teacher.save(tmp_path / "teacher.keras")
    config = loader.load("slimconv", "", f"teacher={tmp_path}/teacher.keras")
    method = methods.get("slimconv")
    method.check(config)
    model = kd.with_teacher(method.build_model(config, SHAPE, 10), config)
    assert isinstance(model, kd.TeacherDistillationModel)
    before = [w.numpy().copy() for w in model.student.trainable_weights]
    _train(model, method, config, _context(config, tmp_path))
    assert all(not np.array_equal(a, w.numpy()) for a, w in
               zip(before, model.student.trainable_weights))
    deployable = method.deployable(kd.student_of(model), None)
    assert deployable is model.student


@pytest.mark.parametrize("method, message", [
    ("slimconv", "--teacher=t.h5: must be a .keras"),
    ("xnet", "--teacher=t.h5: must be a .keras"),
    ("expandnet", "--teacher=t.h5: must be a .keras"),
])
def test_teacher_checks(method, message):
    from keras_compact.configs import loader

    config = loader.load(method, "", "teacher=t.h5")
    with pytest.raises(UsageError, match=message):
        methods.get(method).check(config)


def _smoke_run(tmp_path, method, **fields):
    from keras_compact.configs import loader

    config = loader.load(method, "", "smoke")
    config.update(dataset="synthetic", arch="resnet20", students=2,
                  export="tflite", workdir=str(tmp_path), **fields)
    metrics = training.run(config)
    compact = methods.get(method).compact_student(config, (32, 32, 3), 10)
    assert (metrics["params"], metrics["macs"]) == _counts(compact)
    assert metrics["exports"]["tflite"]["bytes"] > 0
    assert (tmp_path / "deployable.keras").exists()
    return metrics


@pytest.mark.slow
@pytest.mark.parametrize("name", [
    "shift", "dw", "group", "slimconv", "expander",
    pytest.param("expanded", marks=pytest.mark.ci_slow)])
def test_trainer_runs_od_students_to_an_exported_compact_net(tmp_path, name):
    metrics = _smoke_run(tmp_path, "od", student_conv=name)
    if name == "expanded":
        assert metrics["params"] == 272_474  # the plain ResNet-20


@pytest.mark.slow
def test_trainer_runs_aps_then_od(tmp_path):
    metrics = _smoke_run(tmp_path, "aps_od", phase="train",
                         widths="resnet20_20.6M")
    assert metrics["method"] == "aps_od"


def test_od_students_also_distil_from_a_fixed_teacher(tmp_path):
    teacher = resnet_cifar(8, SHAPE, 10, name="teacher")
    teacher.save(tmp_path / "teacher.keras")
    config = aps_od_config.get_config(
        f"smoke,phase=train,widths=resnet20_20.6M,students=2,"
        f"teacher={tmp_path}/teacher.keras,kd_weight=0.5")
    method = methods.get("aps_od")
    method.check(config)
    context = _context(config, tmp_path)
    method.prepare(context)
    model = method.build_model(config, SHAPE, 10)
    x = np.random.default_rng(2).normal(size=(4, *SHAPE)).astype("float32")
    y = np.array([1, 2, 3, 4])
    students, online = model(x, training=False)
    fixed = model.fixed_teacher(x, training=False)
    without = float(model.od_loss(y, students, online))
    with_fixed = float(model.od_loss(y, students, online, fixed_logits=fixed))
    hinton = sum(float(model.fixed_distillation(fixed, s)) for s in students)
    # Float32 sums of a few terms of size ~1-10: a few ulps.
    assert with_fixed - without == pytest.approx(0.5 * hinton, rel=1e-5)
    teacher_weights = [w.numpy().copy() for w in model.fixed_teacher.weights]
    _train(model, method, config, context)
    for before, after in zip(teacher_weights, model.fixed_teacher.weights):
        np.testing.assert_array_equal(before, after.numpy())
    assert not any(v is w for v in model.trainable_variables
                   for w in model.fixed_teacher.weights)
