"""Test accuracy of the file that ships: `.tflite`, `.keras` or SavedModel.

`open_model(path)` gives a runner that takes raw pixels in [0, 255],
whatever the file takes: float32 inputs, raw or normalised with the
dataset's statistics (files without an input contract are assumed to take
normalised inputs, as exports before the contract did), or a quantized
uint8 / int8 input at the file's own scale and zero point. `evaluate` runs
it over a test set for top-1 (top-5 from 100 classes on) and, given a
reference runner, the share of images where both predict the same class.

Usage (an exported model and its dataset; not run as a doctest)::

    runner = keras_compact.evaluation.open_model("export/model_int8.tflite")
    dataset = keras_compact.data.load("fashion_mnist")
    keras_compact.evaluation.evaluate_on(runner, dataset)["top1"]  # 0.9012
"""

import logging
import os

import keras
import numpy as np

from keras_compact import export
from keras_compact.errors import UsageError
from keras_compact.registry import Registry

log = logging.getLogger("keras_compact")

TOP5_FROM_CLASSES = 100


class Runner:
    """A loaded model file: `predict(pixels)` on raw pixels, NHWC.

    Subclasses set `path`, `input_shape` (H, W, C), `contract` (the input
    contract dict, None if the file takes normalised inputs) and implement
    `_run(inputs)` on inputs already in the form the file takes.
    """

    kind = None

    def normalization(self, mean, std):
        """Sets the statistics for a file that takes normalised inputs."""
        self._mean = np.asarray(mean, np.float32)
        self._std = np.asarray(std, np.float32)

    def predict(self, pixels):
        """Logits (float32) of a batch of raw pixels in [0, 255]."""
        x = np.asarray(pixels, np.float32)
        if self.contract is None:
            x = (x - self._mean) / self._std
        return self._run(x)


class LiteRTRunner(Runner):
    """A `.tflite` file in ai-edge-litert's interpreter, any batch size."""

    kind = "LiteRT"

    def __init__(self, path):
        import tensorflow as tf
        from ai_edge_litert import interpreter as litert

        self.path = path
        with tf.io.gfile.GFile(path, "rb") as f:
            content = f.read()
        self._interpreter = litert.Interpreter(model_content=content)
        (self._input,) = self._interpreter.get_input_details()
        (self._output,) = self._interpreter.get_output_details()
        self.input_shape = tuple(int(d) for d in self._input["shape"][1:])
        self.input_dtype = np.dtype(self._input["dtype"]).name
        if self.input_dtype not in ("float32", "uint8", "int8"):
            raise UsageError(
                f"{path} takes {self.input_dtype} inputs; evaluation "
                "supports float32, uint8 and int8 inputs.")
        self.contract = export.read_input_contract(path)
        self._batch = None

    @property
    def output_step(self):
        """The output's quantization step (0.0 for a float output)."""
        return float(self._output["quantization"][0])

    def _run(self, x):
        if self._batch != len(x):
            self._interpreter.resize_tensor_input(
                self._input["index"], (len(x), *self.input_shape))
            self._interpreter.allocate_tensors()
            self._batch = len(x)
        scale, zero = self._input["quantization"]
        if self.input_dtype != "float32":
            info = np.iinfo(self.input_dtype)
            x = np.clip(np.round(x / scale + zero), info.min, info.max)
        self._interpreter.set_tensor(self._input["index"],
                                     x.astype(self.input_dtype))
        self._interpreter.invoke()
        y = self._interpreter.get_tensor(self._output["index"])
        scale, zero = self._output["quantization"]
        if np.issubdtype(y.dtype, np.integer):
            return (y.astype(np.float32) - zero) * np.float32(scale)
        return y.astype(np.float32)


class KerasRunner(Runner):
    """A `.keras` file (or an in-memory Keras model).

    `raw_pixels=True` declares that `model` takes raw pixels although it
    does not start with an `InputNormalization` (e.g. a `qat` twin).
    """

    kind = "Keras"

    def __init__(self, path=None, model=None, raw_pixels=False):
        self.path = path or getattr(model, "name", "model")
        self.model = model if model is not None else keras.models.load_model(
            path, compile=False)
        self.input_shape = tuple(self.model.inputs[0].shape[1:])
        self.input_dtype = "float32"
        self.contract = export.input_contract(self.model)
        if raw_pixels and self.contract is None:
            self.contract = {"dtype": "uint8", "range": [0, 255]}

    def _run(self, x):
        # A traced function, not an eager call: eager evaluation of a
        # QAT twin took minutes per 10,000 images on 2 loaded cores.
        return np.asarray(self.model.predict_on_batch(x), np.float32)


class SavedModelRunner(Runner):
    """A SavedModel folder, through its `serve` endpoint."""

    kind = "SavedModel"

    def __init__(self, path):
        import tensorflow as tf

        self.path = path
        self._serve = tf.saved_model.load(path).signatures["serving_default"]
        ((self._name, spec),) = (
            self._serve.structured_input_signature[1].items())
        self.input_shape = tuple(spec.shape[1:])
        self.input_dtype = spec.dtype.name
        self.contract = export.read_input_contract(path)

    def _run(self, x):
        import tensorflow as tf

        (y,) = self._serve(**{self._name: tf.constant(x)}).values()
        return y.numpy().astype(np.float32)


# How a path's kind is recognised: `name -> (matches(path), Runner)`.
FILE_KINDS = Registry("model file kind")
FILE_KINDS.register("tflite", (lambda p: p.endswith(".tflite"),
                               LiteRTRunner))
FILE_KINDS.register("keras", (lambda p: p.endswith(".keras"), KerasRunner))
FILE_KINDS.register("saved_model", (
    lambda p: _exists(os.path.join(p, "saved_model.pb")),
    SavedModelRunner))


def _exists(path):
    import tensorflow as tf

    return tf.io.gfile.exists(path)


def open_model(path):
    """A `Runner` for a `.tflite` file, a `.keras` file or a SavedModel.

    `path` may be any `tf.io.gfile` path (`gs://`...).

    Raises:
        UsageError: the path does not exist, is not one of those kinds, or
            does not load as one.
    """
    path = str(path).rstrip("/")
    if not _exists(path):
        raise UsageError(f"--model={path}: no such file or folder. Pass a "
                         ".tflite file, a .keras file or a SavedModel folder.")
    for name in FILE_KINDS.names():
        matches, runner = FILE_KINDS.get(name)
        if matches(path):
            try:
                return runner(path)
            except UsageError:
                raise
            except Exception as error:  # any loader's failure: not a model
                first = (str(error).strip().splitlines() or [""])[0]
                raise UsageError(f"--model={path} is not a readable "
                                 f"{runner.kind} model ({first[:200]}).")
    raise UsageError(f"--model={path} is not a model: expected a .tflite "
                     "file, a .keras file or a SavedModel folder (with "
                     "saved_model.pb).")


def check_fits(runner, input_shape):
    """Fails in one line when `runner` does not take `input_shape` images."""
    if tuple(runner.input_shape) != tuple(input_shape):
        raise UsageError(
            f"{runner.path} takes inputs of shape {runner.input_shape}, but "
            f"the dataset's images are {tuple(input_shape)}. Evaluate it "
            "on the dataset it was trained on.")


def _hits(logits, labels, k):
    top = np.argsort(-logits, axis=1)[:, :k]
    return (top == labels[:, None]).any(axis=1)


def test_batches(dataset, batch_size=100):
    """`(pixels, labels)` batches of an `ImageDataset`'s test set."""
    for start in range(0, len(dataset.x_test), batch_size):
        yield (dataset.x_test[start:start + batch_size],
               np.asarray(dataset.y_test[start:start + batch_size]))


def pixel_batches(splits):
    """`(pixels, labels)` batches of a trainer's normalised test pipeline.

    Undoes the normalisation and rounds: the sources are uint8 images, so
    this gives back their exact pixel values.
    """
    mean = np.asarray(splits.mean, np.float32)
    std = np.asarray(splits.std, np.float32)
    for x, y in splits.test.as_numpy_iterator():
        yield (np.clip(np.round(x * std + mean), 0, 255).astype(np.uint8),
               np.asarray(y).reshape(-1))


def evaluate(runner, batches, num_classes, input_shape, mean, std,
             reference=None, total=None, progress=True):
    """Top-1 (top-5 from 100 classes) of `runner` on `(pixels, labels)`.

    Args:
        runner: from `open_model` (or `KerasRunner(model=...)`).
        batches: iterable of `(uint8 NHWC pixels, int labels)`, e.g.
            `test_batches(dataset)` or `pixel_batches(splits)`.
        num_classes, input_shape: of the dataset.
        mean, std: the dataset's statistics, to normalise the inputs of
            files without an input contract.
        reference: another runner; then `agreement` is the share of images
            on which both predict the same class.
        total: number of images, for the progress bar.
        progress: show a progress bar.

    Returns:
        `{"images", "top1", ["top5",] ["agreement"]}`.
    """
    runners = [runner] + ([reference] if reference is not None else [])
    for each in runners:
        check_fits(each, input_shape)
        each.normalization(mean, std)
    bar = keras.utils.Progbar(total, verbose=int(progress),
                              unit_name="image")
    top1, top5, agree, count = 0, 0, 0, 0
    for pixels, labels in batches:
        logits = runner.predict(pixels)
        predicted = logits.argmax(1)
        top1 += int(np.sum(predicted == labels))
        if num_classes >= TOP5_FROM_CLASSES:
            top5 += int(np.sum(_hits(logits, labels, 5)))
        if reference is not None:
            agree += int(np.sum(
                reference.predict(pixels).argmax(1) == predicted))
        count += len(labels)
        bar.add(len(labels))
    if not count:
        raise UsageError("The test set is empty: nothing to evaluate.")
    result = {"images": count, "top1": top1 / count}
    if num_classes >= TOP5_FROM_CLASSES:
        result["top5"] = top5 / count
    if reference is not None:
        result["agreement"] = agree / count
    return result


def evaluate_on(runner, dataset, reference=None, batch_size=100,
                progress=True):
    """`evaluate` on the test set of an `ImageDataset`."""
    return evaluate(runner, test_batches(dataset, batch_size),
                    dataset.num_classes, dataset.input_shape, dataset.mean,
                    dataset.std, reference=reference,
                    total=len(dataset.x_test), progress=progress)
