"""Cheap convolutions trained by online distillation (`--method=od`).

Reference: Xie et al., "Training convolutional neural networks with cheap
convolutions and online distillation", https://arxiv.org/abs/1909.13063,
official code github.com/EthanZhangYC/OD-cheap-convolution
(`main_teacher.py`, `model/cifar10/shiftresnet.py`).
"""

import dataclasses
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
from keras_compact.methods import knowledge_distillation
from keras_compact.methods import registry
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
        fixed_teacher: optional trained classifier (`--teacher`): each
            student also learns `kd_weight * T_kd^2 KL(fixed || student)`
            (Hinton's batch-mean form, as `TeacherDistillationModel`); it
            gets no gradient.
        kd_temperature, kd_weight: `T_kd` and the weight of that term.
        **kwargs: `keras.Model` arguments (`name`, ...).

    Usage (a 300-epoch training run; not run as a doctest)::

        from keras_compact.models.resnet_cifar import resnet_cifar
        students = [
            resnet_cifar(56, (32, 32, 3), 10, name=f"student{i + 1}",
                         block=keras_compact.layers.ShiftBlock.as_block())
            for i in range(4)]
        model = OnlineDistillationModel(students)
        model.compile(optimizer=keras.optimizers.SGD(0.1, momentum=0.9))
        model.fit(train, epochs=300)
        best = model.export_student(model.select_student(validation))

    Reference:
        Xie et al., https://arxiv.org/abs/1909.13063.
    """

    def __init__(self, students, temperature=4.0, fixed_teacher=None,
                 kd_temperature=4.0, kd_weight=1.0, **kwargs):
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
        self.fixed_teacher = fixed_teacher
        self.kd_temperature = float(kd_temperature)
        self.kd_weight = float(kd_weight)
        if fixed_teacher is not None:
            classes = fixed_teacher.outputs[0].shape[-1]
            if classes != self.teacher_fc.units:
                raise ValueError(f"The fixed teacher has {classes} classes, "
                                 f"the students {self.teacher_fc.units}.")
            fixed_teacher.trainable = False
            self.fixed_distillation = losses.DistillationLoss(
                self.kd_temperature, average_over_classes=False)
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

    def od_loss(self, y, student_logits, teacher_logits, sample_weight=None,
                fixed_logits=None):
        """The OD objective of one replica's batch (already replica-scaled).

        Adds the layers' regularization losses, scaled like Keras does, and
        the fixed teacher's term when `fixed_logits` are given.
        """
        loss = self.cross_entropy(y, teacher_logits, sample_weight)
        for logits in student_logits:
            loss += self.cross_entropy(y, logits, sample_weight)
            loss += self.distillation(teacher_logits, logits, sample_weight)
            if fixed_logits is not None:
                loss += self.kd_weight * self.fixed_distillation(
                    fixed_logits, logits, sample_weight)
        if self.losses:
            loss += ops.sum(self.losses) / distribute.num_replicas()
        return loss

    def train_step(self, data):
        x, y, sample_weight = keras.utils.unpack_x_y_sample_weight(data)
        fixed_logits = self._fixed_logits(x)
        with tf.GradientTape() as tape:
            student_logits, teacher_logits = self(x, training=True)
            loss = self.od_loss(y, student_logits, teacher_logits,
                                sample_weight, fixed_logits)
            scaled = self.optimizer.scale_loss(loss)
        variables = self.trainable_variables
        gradients = tape.gradient(scaled, variables)
        self.optimizer.apply(gradients, variables)
        return self._update_metrics(loss, y, student_logits, teacher_logits,
                                    sample_weight)

    def test_step(self, data):
        x, y, sample_weight = keras.utils.unpack_x_y_sample_weight(data)
        student_logits, teacher_logits = self(x, training=False)
        loss = self.od_loss(y, student_logits, teacher_logits, sample_weight,
                            self._fixed_logits(x))
        return self._update_metrics(loss, y, student_logits, teacher_logits,
                                    sample_weight)

    def _fixed_logits(self, x):
        if self.fixed_teacher is None:
            return None
        return ops.stop_gradient(self.fixed_teacher(x, training=False))

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
            fixed_teacher=None if self.fixed_teacher is None else
            keras.saving.serialize_keras_object(self.fixed_teacher),
            kd_temperature=self.kd_temperature,
            kd_weight=self.kd_weight,
        )
        return config

    @classmethod
    def from_config(cls, config):
        config = dict(config)
        config["students"] = [keras.saving.deserialize_keras_object(s)
                              for s in config["students"]]
        if config.get("fixed_teacher") is not None:
            config["fixed_teacher"] = keras.saving.deserialize_keras_object(
                config["fixed_teacher"])
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


@dataclasses.dataclass(frozen=True)
class StudentConv:
    """What `--student_conv=NAME` builds the students from.

    Attributes:
        block: `block(config)`, the residual block of every student (a
            `models.resnet_cifar` block).
        method: the registered method whose `deployable` maps the chosen
            student to its deployable form ("": deployed as trained).
        compact_block: `block(config)` of the net that transform gives,
            to build it directly (None: `block`, the transform keeps the
            architecture).
        check: `check(config)` raising `UsageError` for a conflict.
        options: `{field: default}`, the config fields `block` reads.
    """

    block: object
    method: str = ""
    compact_block: object = None
    check: object = None
    options: dict = dataclasses.field(default_factory=dict)


# --student_conv: the cheap blocks, and the other methods' layers
# (`methods.compose.student_conv` adds those).
STUDENT_CONVS = Registry("OD student conv")
for _name in BLOCKS.names():
    STUDENT_CONVS.register(_name, StudentConv(BLOCKS.get(_name)))


def student_conv_name(config):
    """`--student_conv`, or `--block` when it is not set."""
    return config.get("student_conv") or config.block


def _check_options(config):
    """The option checks that `build_model` needs too."""
    BLOCKS.get(config.block)
    kind = STUDENT_CONVS.get(student_conv_name(config))
    if kind.check is not None:
        kind.check(config)
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
    ResNet) whose residual blocks come from `--student_conv` (or
    `--block`) in one `OnlineDistillationModel`; `deployable` takes the
    student that is most accurate on the validation split
    (`config.validation_split > 0`), then applies the transform of the
    method whose layer the students use (`StudentConv.method`).
    """

    archs = tuple(name for name in models.names() if getattr(
        models.registry.ARCHITECTURES.get(name), "func",
        None) is models.resnet_cifar.resnet_cifar)
    arch_kind = "a CIFAR ResNet (its students' blocks are replaced)"

    options = {
        "block": ("shift", "cheap block of the students: "
                  + " | ".join(BLOCKS.names())),
        "student_conv": ("", "students' convs: a cheap block (as --block) "
                         "or another method's layer: slimconv | expander | "
                         "expanded (contracted after training); empty: "
                         "--block"),
        "students": (4, "number of students trained together (>= 1)"),
        "group_num": (4, "channel groups of the 3x3 convs of --block=group"),
        "temperature": (4.0, "distillation temperature T"),
    }

    def __init__(self):
        self.transform_method = None

    def check(self, config):
        if (config.get("student_conv")
                and config.arch in models.sc_resnet.SC_ARCHS):
            raise UsageError(
                f"--student_conv={config.student_conv} "
                f"builds its students from a plain CIFAR ResNet, but --arch="
                f"{config.arch} is SlimConv's (its convs are SlimConv2D "
                "already): pass --arch=resnet20 (or 32, 44, 56, 110), and "
                "--student_conv=slimconv for SlimConv students.")
        super().check(config)
        _check_options(config)
        if not 0 < config.validation_split < 1:
            raise UsageError(
                f"validation_split={config.validation_split}: OD deploys the "
                "best student on a split held out of the training set; set "
                "it in (0, 1), e.g. --set=validation_split=0.1.")

    def build_model(self, config, input_shape, num_classes):
        _check_options(config)
        name = student_conv_name(config)
        block = STUDENT_CONVS.get(name).block(config)
        return self.train_together(
            lambda student: models.build(config.arch, input_shape,
                                         num_classes, block=block,
                                         name=student),
            config, f"{name}_{config.arch}")

    def compact_student(self, config, input_shape, num_classes):
        """The deployable's architecture, built directly (untrained)."""
        kind = STUDENT_CONVS.get(student_conv_name(config))
        block = (kind.compact_block or kind.block)(config)
        return models.build(config.arch, input_shape, num_classes,
                            block=block)

    def train_together(self, build_student, config, label):
        """The `OnlineDistillationModel` of `config.students` students.

        Args:
            build_student: `build_student(name)`, a functional classifier
                ending in global average pooling + dense.
            config: the run's config (`students`, `temperature`).
            label: names the model, `od_<label>`.
        """
        students = [build_student(f"student{index + 1}")
                    for index in range(config.students)]
        fixed_teacher = None
        if config.get("teacher"):
            fixed_teacher = knowledge_distillation.load_teacher(
                config.teacher)
        return OnlineDistillationModel(
            students, temperature=config.temperature,
            fixed_teacher=fixed_teacher,
            kd_temperature=config.get("kd_temperature", 4.0),
            kd_weight=config.get("kd_weight", 1.0), name=f"od_{label}")

    def compile_model(self, model, optimizer, config):
        model.compile(optimizer=optimizer, jit_compile=config.jit_compile,
                      steps_per_execution=config.steps_per_execution)

    def deployable(self, model, context):
        """The best student, then its layer's method's transform."""
        student = self.best_student(model, context)
        kind = STUDENT_CONVS.get(student_conv_name(context.config))
        self.transform_method = kind.method or None
        if not kind.method:
            return student
        log.info("OD: %s students deploy through --method=%s's transform.",
                 student_conv_name(context.config), kind.method)
        return registry.get(kind.method).deployable(student, context)

    def deployment_notes(self):
        if self.transform_method is None:
            return {}
        return {"od_student_transform": self.transform_method,
                **registry.get(self.transform_method).deployment_notes()}

    def best_student(self, model, context):
        """A plain copy of the student most accurate on the validation
        split, as trained."""
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
