"""Writing files so that a kill at any instant leaves the old or the new one.

Every file a run resumes from (checkpoints, search state, metadata) goes
through `atomic_write`: it is written under a temporary name in the same
folder and renamed over the target only once complete. Paths go through
`tf.io.gfile`, so `gs://` and `ram://` work too (on object stores a rename
is a copy, so there the guarantee is the store's).

Example:

>>> import os, tempfile
>>> path = os.path.join(tempfile.mkdtemp(), "state.json")
>>> write_json(path, {"epoch": 3})
>>> read_json(path)
{'epoch': 3}
"""

import contextlib
import json
import os
import uuid

import tensorflow as tf


@contextlib.contextmanager
def atomic_write(path):
    """Yields a temporary path beside `path`, renamed onto it on success.

    The temporary name keeps `path`'s file name as its suffix, so writers
    that check the extension (Keras's `.weights.h5`) accept it. On an
    exception the temporary file is removed and `path` is left as it was.
    """
    directory, name = os.path.split(path)
    temporary = os.path.join(directory, f".tmp-{uuid.uuid4().hex}-{name}")
    try:
        yield temporary
        tf.io.gfile.rename(temporary, path, overwrite=True)
    finally:
        if tf.io.gfile.exists(temporary):
            tf.io.gfile.remove(temporary)


def write_json(path, value):
    """Writes `value` as indented JSON to `path`, atomically."""
    with atomic_write(path) as temporary:
        with tf.io.gfile.GFile(temporary, "w") as f:
            json.dump(value, f, indent=2)


def read_json(path):
    """The JSON value stored at `path`."""
    with tf.io.gfile.GFile(path) as f:
        return json.load(f)
