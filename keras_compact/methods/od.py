"""Cheap convolutions trained by online distillation (`--method=od`).

Reference: Xie et al., "Training convolutional neural networks with cheap
convolutions and online distillation", https://arxiv.org/abs/1909.13063,
official code github.com/EthanZhangYC/OD-cheap-convolution
(`main_teacher.py`, `model/cifar10/shiftresnet.py`).
"""

import logging
import os

import keras
import numpy as np
import tensorflow as tf
from keras import ops

from keras_compact import api
from keras_compact import distribute
from keras_compact import files
from keras_compact import layers
from keras_compact import losses
from keras_compact import models
from keras_compact.errors import UsageError
from keras_compact.methods.base import Method
from keras_compact.methods.base import check_option
from keras_compact.methods.registry import register
from keras_compact.registry import Registry

log = logging.getLogger("keras_compact")


@api.serializable
class OnlineDistillationModel(keras.Model):
    """Several students and the teacher built online from their features.

    Every student sees the same batch. The teacher concatenates the
    students' final feature maps (in student order), then BN -> ReLU ->
    global average pooling -> a new dense classifier. Training minimises

        CE(teacher) + sum_i [CE(student_i) + T^2 KL(p_t^T || p_i^T) / K]

    (`losses.DistillationLoss`: the KL is averaged over batch and classes as
    the reference's `F.kl_div`), with nothing detached: the teacher CE and
    every KL term also train all students through the concatenation, which
    is the paper's mutual learning. Losses are `keras.losses` objects, so
    under `tf.distribute` each replica's loss is scaled by the global batch;
    under `mixed_float16` the loss goes through `optimizer.scale_loss`.

    Only one student is deployed: `select_student(validation_data)` picks the
    most accurate one on held-out data and `export_student(k)` copies it to
    a plain model with only that student's weights.

    Args:
        students: functional models mapping images to logits, each ending in
            `GlobalAveragePooling2D` + dense (e.g. `models.resnet_cifar` with
            a cheap block); the input of the last pooling layer is the
            student's feature map. Give them distinct names.
        temperature: distillation temperature `T` (4 in the paper).
        **kwargs: `keras.Model` arguments (`name`, ...).

    Example:

    >>> from keras_compact.models.resnet_cifar import resnet_cifar
    >>> students = [
    ...     resnet_cifar(56, (32, 32, 3), 10, name=f"student{i + 1}",
    ...                  block=keras_compact.layers.ShiftBlock.as_block())
    ...     for i in range(4)]
    >>> model = OnlineDistillationModel(students)
    >>> model.compile(optimizer=keras.optimizers.SGD(0.1, momentum=0.9))
    >>> model.fit(train, epochs=300)
    >>> best = model.export_student(model.select_student(validation))

    Reference:
        Xie et al., https://arxiv.org/abs/1909.13063.
    """

    def __init__(self, students, temperature=4.0, **kwargs):
        super().__init__(**kwargs)
        distribute.require_tensorflow_backend(self)
        students = list(students)
        if not students:
            raise ValueError("OnlineDistillationModel needs at least one "
                             "student model.")
        names = [student.name for student in students]
        if len(set(names)) != len(names):
            raise ValueError(f"Students need distinct names (their layers "
                             f"share names otherwise). Received: {names}.")
        self.students = students
        self.temperature = float(temperature)
        self.branches = [_features_and_logits(s) for s in students]
        feature_shapes = [b.outputs[0].shape for b in self.branches]
        num_classes = {s.outputs[0].shape[-1] for s in students}
        if len({shape[1:-1] for shape in feature_shapes}) != 1 or len(
                num_classes) != 1:
            raise ValueError(
                "Students must share the feature map size and number of "
                f"classes. Received feature shapes {feature_shapes} and "
                f"classes {sorted(num_classes)}.")
        channels = sum(shape[-1] for shape in feature_shapes)
        self.teacher_bn = layers.BatchNormalization(name="teacher_bn")
        self.teacher_bn.build((None, *feature_shapes[0][1:-1], channels))
        self.teacher_fc = keras.layers.Dense(num_classes.pop(),
                                             dtype="float32",
                                             name="teacher_fc")
        self.teacher_fc.build((None, channels))

        self.cross_entropy = keras.losses.SparseCategoricalCrossentropy(
            from_logits=True)
        self.distillation = losses.DistillationLoss(self.temperature)
        self.loss_tracker = keras.metrics.Mean(name="loss")
        self.student_accuracy = [
            keras.metrics.SparseCategoricalAccuracy(f"{s.name}_accuracy")
            for s in students
        ]
        self.teacher_accuracy = keras.metrics.SparseCategoricalAccuracy(
            "teacher_accuracy")
        self.built = True

    def call(self, inputs, training=None):
        features, logits = [], []
        for branch in self.branches:
            feature, logit = branch(inputs, training=training)
            features.append(feature)
            logits.append(logit)
        x = features[0] if len(features) == 1 else ops.concatenate(
            features, axis=-1)
        x = ops.relu(self.teacher_bn(x, training=training))
        teacher = self.teacher_fc(ops.mean(x, axis=(1, 2)))
        return logits, teacher

    def od_loss(self, y, student_logits, teacher_logits, sample_weight=None):
        """The OD objective of one replica's batch (already replica-scaled).

        Adds the layers' regularization losses, scaled like Keras does.
        """
        loss = self.cross_entropy(y, teacher_logits, sample_weight)
        for logits in student_logits:
            loss += self.cross_entropy(y, logits, sample_weight)
            loss += self.distillation(teacher_logits, logits, sample_weight)
        if self.losses:
            loss += ops.sum(self.losses) / distribute.num_replicas()
        return loss

    def train_step(self, data):
        x, y, sample_weight = keras.utils.unpack_x_y_sample_weight(data)
        with tf.GradientTape() as tape:
            student_logits, teacher_logits = self(x, training=True)
            loss = self.od_loss(y, student_logits, teacher_logits,
                                sample_weight)
            scaled = self.optimizer.scale_loss(loss)
        variables = self.trainable_variables
        gradients = tape.gradient(scaled, variables)
        self.optimizer.apply(gradients, variables)
        return self._update_metrics(loss, y, student_logits, teacher_logits,
                                    sample_weight)

    def test_step(self, data):
        x, y, sample_weight = keras.utils.unpack_x_y_sample_weight(data)
        student_logits, teacher_logits = self(x, training=False)
        loss = self.od_loss(y, student_logits, teacher_logits, sample_weight)
        return self._update_metrics(loss, y, student_logits, teacher_logits,
                                    sample_weight)

    def _update_metrics(self, loss, y, student_logits, teacher_logits,
                        sample_weight):
        # The tracker sums over replicas: log the unscaled replica loss,
        # weighted by the replica's batch size.
        self.loss_tracker.update_state(loss * distribute.num_replicas(),
                                       sample_weight=ops.shape(y)[0])
        for metric, logits in zip(self.student_accuracy, student_logits):
            metric.update_state(y, logits, sample_weight)
        self.teacher_accuracy.update_state(y, teacher_logits, sample_weight)
        return {m.name: m.result() for m in self.metrics}

    @property
    def metrics(self):
        return [self.loss_tracker, *self.student_accuracy,
                self.teacher_accuracy]

    def select_student(self, data):
        """Index of the most accurate student on `data` (first wins ties).

        Args:
            data: a `tf.data.Dataset` of `(images, labels)` batches held out
                of training (a validation split, never the test set).
        """
        results = self.evaluate(data, return_dict=True, verbose=0)
        accuracy = [results[m.name] for m in self.student_accuracy]
        return int(np.argmax(accuracy))

    def export_student(self, index):
        """A standalone copy of student `index`: a plain functional model.

        Its variables are new (created under the current strategy, not the
        training one) and hold only that student's weights.
        """
        student = self.students[index]
        copy = keras.models.clone_model(student)
        copy.set_weights(student.get_weights())
        return copy

    def get_config(self):
        config = super().get_config()
        config.update(
            students=[keras.saving.serialize_keras_object(s)
                      for s in self.students],
            temperature=self.temperature,
        )
        return config

    @classmethod
    def from_config(cls, config):
        config = dict(config)
        config["students"] = [keras.saving.deserialize_keras_object(s)
                              for s in config["students"]]
        return cls(**config)


def _features_and_logits(student):
    """The student as a model returning (last feature map, logits)."""
    pools = [layer for layer in student.layers
             if isinstance(layer, keras.layers.GlobalAveragePooling2D)]
    if not pools:
        raise ValueError(
            f"Student '{student.name}' has no GlobalAveragePooling2D: the "
            "online teacher is built from the feature map that a student "
            "pools before its classifier.")
    return keras.Model(student.inputs, [pools[-1].input, student.outputs[0]],
                       name=f"{student.name}_branch")


# Each --block builds the students' residual block from the config.
BLOCKS = Registry("OD block")
BLOCKS.register("shift", lambda config: layers.ShiftBlock.as_block())
BLOCKS.register("dw", lambda config: layers.DepthwiseBlock.as_block())
BLOCKS.register(
    "group",
    lambda config: layers.GroupBlock.as_block(groups=config.group_num))

def _check_options(config):
    """The option checks that `build_model` needs too."""
    BLOCKS.get(config.block)
    check_option(config, "students",
                 lambda v: isinstance(v, int) and v >= 1, "an int >= 1")
    # The group block splits the 16, 32 and 64 channels of every stage.
    check_option(config, "group_num", lambda v: isinstance(v, int)
                 and v >= 1 and 16 % v == 0, "1, 2, 4, 8 or 16")
    check_option(config, "temperature", lambda v: v > 0, "> 0")


# The student `OnlineDistillation.deployable` picked, after how many epochs.
SELECTION = "od_selection.json"


@register("od")
class OnlineDistillation(Method):
    """Students made of cheap blocks, trained with an online teacher.

    `build_model` makes `config.students` copies of `config.arch` (a CIFAR
    ResNet) with `config.block` residual blocks in one
    `OnlineDistillationModel`; `deployable` returns the student that is most
    accurate on the validation split (`config.validation_split > 0`).
    """

    archs = tuple(name for name in models.names() if getattr(
        models.registry.ARCHITECTURES.get(name), "func",
        None) is models.resnet_cifar.resnet_cifar)
    arch_kind = "a CIFAR ResNet (its students' blocks are replaced)"

    options = {
        "block": ("shift", "cheap block of the students: "
                  + " | ".join(BLOCKS.names())),
        "students": (4, "number of students trained together (>= 1)"),
        "group_num": (4, "channel groups of the 3x3 convs of --block=group"),
        "temperature": (4.0, "distillation temperature T"),
    }

    def check(self, config):
        super().check(config)
        _check_options(config)
        if not 0 < config.validation_split < 1:
            raise UsageError(
                f"validation_split={config.validation_split}: OD deploys the "
                "best student on a split held out of the training set; set "
                "it in (0, 1), e.g. --set=validation_split=0.1.")

    def build_model(self, config, input_shape, num_classes):
        _check_options(config)
        block = BLOCKS.get(config.block)(config)
        students = [
            models.build(config.arch, input_shape, num_classes, block=block,
                         name=f"student{index + 1}")
            for index in range(config.students)
        ]
        return OnlineDistillationModel(
            students, temperature=config.temperature,
            name=f"od_{config.block}_{config.arch}")

    def compile_model(self, model, optimizer, config):
        model.compile(optimizer=optimizer, jit_compile=config.jit_compile,
                      steps_per_execution=config.steps_per_execution)

    def deployable(self, model, context):
        if context.data.validation is None:
            raise ValueError(
                "OD deploys the best student on a validation split held out "
                "of the training set; set validation_split > 0 (e.g. "
                "--set=validation_split=0.1).")
        index = self._selection(model, context)
        log.info("OD: deploying %s, the best of %d students on the "
                 "validation split.", model.students[index].name,
                 len(model.students))
        return model.export_student(index)

    def _selection(self, model, context):
        """The chosen student's index, recorded in `SELECTION` (atomically)
        so a rerun of the finished workdir deploys the same one."""
        path = os.path.join(context.workdir, SELECTION)
        epochs = context.config.epochs
        if tf.io.gfile.exists(path):
            recorded = files.read_json(path)
            if recorded.get("epochs") == epochs:
                return recorded["student"]
        index = model.select_student(context.data.validation)
        if distribute.is_chief(context.strategy):
            files.write_json(path, {"epochs": epochs, "student": index,
                                    "name": model.students[index].name})
        return index
