"""What a compaction method provides to the trainer."""

import keras

from keras_compact import models
from keras_compact.errors import UsageError
from keras_compact.methods import knowledge_distillation


class Method:
    """Base class of a method: build, compile, then make the deployable model.

    A method is one module in `keras_compact.methods` with a subclass of this
    registered by `@methods.register("name")`. The trainer calls, in order:
    `prepare` -> `build_model` (under the strategy's scope) ->
    `compile_model` -> `fit` with `callbacks` -> `deployable` -> export.
    Override only what the method does differently.

    Attributes:
        options: method-specific config fields, `{name: (default, help)}`.
            They become config entries (paper values in `configs/<name>.py`)
            and `--name=value` flags of the trainers.
        archs: the archs the method can build (None: every registered one),
            described by `arch_kind` ("an Sc arch"); `arch_hint` ends the
            error for another arch.
    """

    name = None
    options = {}
    archs = None
    arch_kind = ""
    arch_hint = ""

    def check(self, config):
        """Raises `UsageError` for a config this method cannot train.

        Runs first, so that a bad arch or option fails in a second, not
        after the training. Override to add the method's own checks
        (calling this one).
        """
        models.registry.ARCHITECTURES.get(config.arch)
        knowledge_distillation.check(config)
        if self.archs is not None and config.arch not in self.archs:
            raise UsageError(
                f"--method={self.name} needs {self.arch_kind}, got --arch="
                f"{config.arch}. Valid: {', '.join(sorted(self.archs))}."
                f"{self.arch_hint}")

    def prepare(self, context):
        """Runs before the model is built (e.g. a channel search).

        Returns False to stop after this step (nothing is trained).
        """
        del context
        return True

    def build_model(self, config, input_shape, num_classes):
        """Returns the trainable model for `config.arch`."""
        return models.build(config.arch, input_shape, num_classes)

    def compile_model(self, model, optimizer, config):
        if isinstance(model,
                      knowledge_distillation.TeacherDistillationModel):
            # Its train_step has the loss and the student's accuracy.
            model.compile(optimizer=optimizer,
                          jit_compile=config.jit_compile,
                          steps_per_execution=config.steps_per_execution)
            return
        model.compile(
            optimizer=optimizer,
            loss=keras.losses.SparseCategoricalCrossentropy(from_logits=True),
            metrics=["accuracy"],
            jit_compile=config.jit_compile,
            steps_per_execution=config.steps_per_execution,
        )

    def callbacks(self, context):
        """Extra Keras callbacks for `fit`."""
        del context
        return []

    def deployable(self, model, context):
        """Returns the plain model to evaluate, profile and export."""
        del context
        return model

    def deployment_notes(self):
        """Extra metrics.json entries about the last `deployable` call."""
        return {}


def check_option(config, name, valid, expected):
    """Raises `UsageError` unless `valid(config[name])`.

    Example:

    >>> try:
    ...     check_option({"students": 0}, "students", lambda v: v >= 1,
    ...                  "an int >= 1")
    ... except UsageError as error:
    ...     print(error)
    students must be an int >= 1. Received: students=0.
    """
    value = config[name]
    if isinstance(value, bool) or not valid(value):
        raise UsageError(f"{name} must be {expected}. Received: "
                         f"{name}={value!r}.")
