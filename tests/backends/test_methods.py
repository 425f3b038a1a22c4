"""The TensorFlow-only train steps refuse other backends in one line."""

import keras
import pytest

from keras_compact.errors import UsageError
from keras_compact.methods.aps.search import ChannelSearchModel
from keras_compact.methods.knowledge_distillation import (
    TeacherDistillationModel,
)
from keras_compact.methods.od import OnlineDistillationModel


@pytest.mark.parametrize("make", [
    lambda: OnlineDistillationModel([]),
    lambda: TeacherDistillationModel(None, None),
    lambda: ChannelSearchModel(None, max_macs=1),
], ids=["od", "kd", "aps"])
def test_custom_train_step_names_the_backend(make):
    backend = keras.backend.backend()
    with pytest.raises(UsageError, match=f"KERAS_BACKEND is '{backend}'"):
        make()
