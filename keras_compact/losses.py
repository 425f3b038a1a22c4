"""Losses shared by the methods: knowledge distillation with temperature."""

import keras
from keras import ops

from keras_compact import api


def distillation(teacher_logits, student_logits, temperature=4.0,
                 average_over_classes=True):
    """Per-example `T^2 * KL(softmax(t / T) || softmax(s / T))`.

    The teacher's softened distribution is the target and the student's the
    input, as `F.kl_div(log_softmax(s / T), softmax(t / T))`. Nothing is
    detached: the gradient reaches both sets of logits (stop it on the
    teacher's side for classic offline distillation).

    Args:
        teacher_logits: `(batch, classes)`.
        student_logits: `(batch, classes)`.
        temperature: softening temperature `T`; the result carries `T^2`.
        average_over_classes: divide by the number of classes, which is what
            PyTorch's default `F.kl_div` reduction (mean over all
            `batch * classes` elements) does; the OD reference uses it, so its
            effective weight is `T^2 / K`. False gives the textbook
            `reduction="batchmean"` value once averaged over the batch.

    Returns:
        `(batch,)` loss values.
    """
    log_teacher = ops.log_softmax(teacher_logits / temperature, axis=-1)
    log_student = ops.log_softmax(student_logits / temperature, axis=-1)
    kl = ops.sum(ops.exp(log_teacher) * (log_teacher - log_student), axis=-1)
    if average_over_classes:
        kl = kl / ops.cast(ops.shape(teacher_logits)[-1], kl.dtype)
    return kl * (temperature**2)


@api.serializable
class DistillationLoss(keras.losses.Loss):
    """`T^2 * KL(teacher || student)` on logits, a `keras.losses.Loss`.

    Call it as `loss(teacher_logits, student_logits)`: the teacher's logits
    take the place of `y_true`. With the default `"sum_over_batch_size"`
    reduction the per-example values of `losses.distillation` are averaged
    over the batch and, under `tf.distribute`, scaled by the number of
    replicas, so summed replica gradients equal the global-batch mean.

    Args:
        temperature: softening temperature `T` (4 in the OD paper).
        average_over_classes: also divide by the number of classes, as the
            OD reference's `F.kl_div` default reduction does (its KL is a mean
            over `batch * classes` elements). False: the batch-mean KL.
        reduction, name, dtype: as `keras.losses.Loss`.

    Example:

    >>> loss = keras_compact.losses.DistillationLoss(temperature=4.0)
    >>> teacher = keras.ops.convert_to_tensor([[2.0, 0.0, -1.0]])
    >>> float(loss(teacher, teacher))  # the student agrees: no loss
    0.0
    >>> float(loss(teacher, -teacher)) > 0
    True

    Reference:
        Hinton et al., "Distilling the Knowledge in a Neural Network",
        https://arxiv.org/abs/1503.02531; the reduction of Xie et al.,
        https://arxiv.org/abs/1909.13063 (official code, `utils/common.py`).
    """

    def __init__(self, temperature=4.0, average_over_classes=True,
                 reduction="sum_over_batch_size", name="distillation",
                 dtype=None):
        super().__init__(name=name, reduction=reduction, dtype=dtype)
        if not temperature > 0:
            raise ValueError(f"temperature must be positive. Received: "
                             f"temperature={temperature}.")
        self.temperature = float(temperature)
        self.average_over_classes = bool(average_over_classes)

    def call(self, y_true, y_pred):
        return distillation(y_true, y_pred, self.temperature,
                            self.average_over_classes)

    def get_config(self):
        config = super().get_config()
        config.update(temperature=self.temperature,
                      average_over_classes=self.average_over_classes)
        return config
