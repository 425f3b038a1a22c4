"""Offline distillation from a teacher: ExpandNets' "w/ KD" rows."""

import keras
import numpy as np
import pytest

from configs import expandnet as expandnet_config
from keras_compact import methods
from keras_compact import models
from keras_compact.methods import knowledge_distillation


@pytest.fixture()
def teacher_path(tmp_path):
    teacher = models.build("smallnet3", (32, 32, 3), 10)
    path = str(tmp_path / "teacher.keras")
    teacher.save(path)
    return path


def _data(count=16):
    rng = np.random.default_rng(0)
    return (rng.normal(size=(count, 32, 32, 3)).astype("float32"),
            rng.integers(0, 10, count).astype("int32"))


def test_loss_is_ce_plus_t2_kl_and_teacher_is_frozen(teacher_path):
    teacher = knowledge_distillation.load_teacher(teacher_path)
    student = models.build("smallnet3", (32, 32, 3), 10)
    model = knowledge_distillation.TeacherDistillationModel(
        student, teacher, temperature=4.0, weight=0.5)
    model.compile(optimizer=keras.optimizers.SGD(0.0))
    x, y = _data()
    teacher_before = [w.numpy() for w in teacher.weights]
    logs = model.train_on_batch(x, y, return_dict=True)

    # The student trains in training mode (batch statistics in its BN).
    s = keras.ops.convert_to_numpy(student(x, training=True)).astype(
        "float64")
    t = teacher.predict(x, verbose=0).astype("float64")

    def log_softmax(z):
        z = z - z.max(1, keepdims=True)
        return z - np.log(np.exp(z).sum(1, keepdims=True))

    ce = -log_softmax(s)[np.arange(len(y)), y].mean()
    lt, ls = log_softmax(t / 4), log_softmax(s / 4)
    kl = (np.exp(lt) * (lt - ls)).sum(1).mean()
    np.testing.assert_allclose(logs["loss"], ce + 0.5 * 16 * kl, rtol=1e-5)
    for before, after in zip(teacher_before, teacher.weights):
        np.testing.assert_array_equal(before, after.numpy())


def test_expandnet_with_teacher_trains_and_contracts(teacher_path):
    config = expandnet_config.get_config(
        f"arch=smallnet3,expand=cl+fc,teacher={teacher_path}")
    method = methods.get("expandnet")
    model = knowledge_distillation.with_teacher(
        method.build_model(config, (32, 32, 3), 10), config)
    assert isinstance(model, knowledge_distillation.TeacherDistillationModel)
    method.compile_model(model, keras.optimizers.SGD(0.01, momentum=0.9),
                         config)
    x, y = _data(32)
    history = model.fit(x, y, batch_size=16, epochs=2, verbose=0)
    assert np.all(np.isfinite(history.history["loss"]))
    compact = method.deployable(model, None)
    assert compact.count_params() == models.build(
        "smallnet3", (32, 32, 3), 10).count_params()
    np.testing.assert_allclose(compact.predict(x, verbose=0),
                               model.predict(x, verbose=0), atol=1e-4)


def test_bad_teacher_paths(tmp_path):
    with pytest.raises(ValueError, match="must be a .keras"):
        knowledge_distillation.load_teacher("teacher.h5")
    with pytest.raises(ValueError, match="Could not load the teacher"):
        knowledge_distillation.load_teacher(str(tmp_path / "none.keras"))
    student = models.build("smallnet3", (32, 32, 3), 10)
    teacher = models.build("smallnet3", (32, 32, 3), 100)
    with pytest.raises(ValueError, match="same logits shape"):
        knowledge_distillation.TeacherDistillationModel(student, teacher)
