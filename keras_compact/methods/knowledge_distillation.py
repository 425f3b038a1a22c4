"""Offline knowledge distillation from a trained teacher (Hinton et al.).

`--teacher=PATH.keras` works with every method that trains one classifier
(baseline, slimconv, xnet, expandnet: its "w/ KD" rows, aps): the trainer
wraps the method's model in `TeacherDistillationModel` (`with_teacher`), so
the net learns from the labels and from the frozen teacher's softened
predictions, with the same `losses.DistillationLoss` that online
distillation uses; the method's transform then gets the trained net
(`student_of`). OD adds the same term per student inside its own model
(`od.OnlineDistillationModel(fixed_teacher=...)`).
"""

import keras
import tensorflow as tf
from keras import ops

from keras_compact import api
from keras_compact import distribute
from keras_compact import losses
from keras_compact.errors import UsageError

# The config fields of every recipe (`configs.common.cifar_recipe`).
OPTIONS = {
    "teacher": ("", "trained teacher .keras to distil from, for any method "
                    "that trains one classifier (empty: no distillation)"),
    "kd_temperature": (4.0, "distillation temperature T"),
    "kd_weight": (1.0, "weight of the T^2 KL term next to the CE"),
}


@api.serializable
class TeacherDistillationModel(keras.Model):
    """Trains `student` on CE + `weight` * T^2 KL(teacher || student).

    The teacher runs in inference mode and gets no gradient. The KL is the
    batch mean (`average_over_classes=False`), Hinton et al.'s form. Calling
    the model returns the student's logits, so evaluation and metrics are
    the student's.

    Args:
        student: the model to train (logits).
        teacher: a trained model with the same inputs and classes (logits).
        temperature: softening temperature `T`.
        weight: weight of the distillation term.
        **kwargs: `keras.Model` arguments.

    Usage (a trained teacher and a training run; not run as a doctest)::

        teacher = keras.models.load_model("runs/baseline/model.keras")
        model = TeacherDistillationModel(student, teacher, temperature=4.0)
        model.compile(optimizer="sgd", metrics=["accuracy"])
        model.fit(train, epochs=10)

    Reference:
        Hinton et al., "Distilling the Knowledge in a Neural Network",
        https://arxiv.org/abs/1503.02531.
    """

    def __init__(self, student, teacher, temperature=4.0, weight=1.0,
                 **kwargs):
        super().__init__(**kwargs)
        distribute.require_tensorflow_backend(self)
        if tuple(student.outputs[0].shape) != tuple(teacher.outputs[0].shape):
            raise ValueError(
                f"Teacher and student must output the same logits shape. "
                f"Received: teacher {teacher.outputs[0].shape}, student "
                f"{student.outputs[0].shape}.")
        self.student = student
        self.teacher = teacher
        self.teacher.trainable = False
        self.temperature = float(temperature)
        self.weight = float(weight)
        self.cross_entropy = keras.losses.SparseCategoricalCrossentropy(
            from_logits=True)
        self.distillation = losses.DistillationLoss(
            self.temperature, average_over_classes=False)
        self.loss_tracker = keras.metrics.Mean(name="loss")
        self.accuracy = keras.metrics.SparseCategoricalAccuracy("accuracy")
        self.built = True

    def call(self, inputs, training=None):
        return self.student(inputs, training=training)

    def train_step(self, data):
        x, y, sample_weight = keras.utils.unpack_x_y_sample_weight(data)
        teacher_logits = ops.stop_gradient(self.teacher(x, training=False))
        with tf.GradientTape() as tape:
            logits = self.student(x, training=True)
            loss = self.cross_entropy(y, logits, sample_weight)
            loss += self.weight * self.distillation(teacher_logits, logits,
                                                    sample_weight)
            if self.student.losses:
                loss += ops.sum(self.student.losses) / distribute.num_replicas()
            scaled = self.optimizer.scale_loss(loss)
        variables = self.student.trainable_variables
        self.optimizer.apply(tape.gradient(scaled, variables), variables)
        return self._update_metrics(loss, y, logits, sample_weight)

    def test_step(self, data):
        x, y, sample_weight = keras.utils.unpack_x_y_sample_weight(data)
        logits = self.student(x, training=False)
        loss = self.cross_entropy(y, logits, sample_weight)
        return self._update_metrics(loss, y, logits, sample_weight)

    def _update_metrics(self, loss, y, logits, sample_weight):
        # Keras losses are divided by the replicas; log the replica's loss.
        self.loss_tracker.update_state(loss * distribute.num_replicas(),
                                       sample_weight=ops.shape(y)[0])
        self.accuracy.update_state(y, logits, sample_weight)
        return {m.name: m.result() for m in self.metrics}

    @property
    def metrics(self):
        return [self.loss_tracker, self.accuracy]

    def get_config(self):
        config = super().get_config()
        config.update(
            student=keras.saving.serialize_keras_object(self.student),
            teacher=keras.saving.serialize_keras_object(self.teacher),
            temperature=self.temperature, weight=self.weight)
        return config

    @classmethod
    def from_config(cls, config):
        config = dict(config)
        for key in ("student", "teacher"):
            config[key] = keras.saving.deserialize_keras_object(config[key])
        return cls(**config)


def load_teacher(path):
    """Loads a trained teacher `.keras` file, with a clear error."""
    if not path.endswith(".keras"):
        raise ValueError(f"--teacher must be a .keras model file. Received: "
                         f"{path}.")
    try:
        return keras.models.load_model(path, compile=False)
    except (OSError, ValueError) as error:
        raise ValueError(f"Could not load the teacher {path} ({error}). "
                         "Train one first, e.g. --method=baseline, and pass "
                         "its workdir's model.keras.") from error


def check(config):
    """Raises `UsageError` for bad distillation fields of `config`."""
    from keras_compact.methods.base import check_option

    if "teacher" not in config:  # a recipe made before distillation
        return
    check_option(config, "kd_temperature", lambda v: v > 0, "> 0")
    check_option(config, "kd_weight", lambda v: v >= 0, ">= 0")
    if config.teacher and not config.teacher.endswith(".keras"):
        raise UsageError(f"--teacher={config.teacher}: must be a .keras "
                         "model file (a workdir's model.keras).")


def with_teacher(model, config):
    """`model` distilled from `config.teacher`, or `model` when unset (or
    already distilled)."""
    if not config.get("teacher") or isinstance(model,
                                               TeacherDistillationModel):
        return model
    return TeacherDistillationModel(
        model, load_teacher(config.teacher),
        temperature=config.kd_temperature, weight=config.kd_weight)


def student_of(model):
    """The trained net inside a `TeacherDistillationModel` (else `model`)."""
    if isinstance(model, TeacherDistillationModel):
        return model.student
    return model
