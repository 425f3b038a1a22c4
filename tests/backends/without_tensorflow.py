"""Runs a Python snippet as if TensorFlow were not installed.

`python -m tests.backends.without_tensorflow CODE`: every finder on
`sys.meta_path` is wrapped so that `tensorflow` (and its submodules) is not
found, just as on a machine without it: `import tensorflow` raises
ModuleNotFoundError and `importlib.util.find_spec` returns None (PyTorch
probes for TensorFlow that way).
"""

import sys


class _HideTensorFlow:
    def __init__(self, finder):
        self.finder = finder

    def find_spec(self, name, path=None, target=None):
        if name.partition(".")[0] == "tensorflow":
            return None
        find_spec = getattr(self.finder, "find_spec", None)
        return find_spec(name, path, target) if find_spec else None

    def __getattr__(self, name):
        return getattr(self.finder, name)


if __name__ == "__main__":
    sys.meta_path[:] = [_HideTensorFlow(f) for f in sys.meta_path]
    exec(compile(sys.argv[1], "<snippet>", "exec"), {"__name__": "snippet"})
