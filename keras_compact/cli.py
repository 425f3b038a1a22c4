"""Runs the command-line entry points: user errors are one line, exit 2.

Every entry point (`keras_compact.trainers.*`, `keras_compact.tools.*`)
ends with

    def run():
        cli.run(main)

    if __name__ == "__main__":
        run()

and `run` is its console script in pyproject.toml. A user error (a bad
flag, an `errors.UsageError` or `FileNotFoundError` raised anywhere below
`main`, an absl flag error or `app.UsageError`) is printed on stderr as
one line, `<program>: error: <message>`, and the process exits with
status 2. `--verbosity=1`
(or higher) shows the traceback too. Any other exception is a bug and keeps
its traceback.

Example (the shell):

    $ keras-compact-cifar --method=no_such_method
    keras-compact-cifar: error: Unknown method 'no_such_method'. Valid \
methods: aps, baseline, expandnet, od, slimconv, xnet.
    $ echo $?
    2
"""

import functools
import os
import sys
import traceback

from absl import app
from absl import flags

from keras_compact import errors

FLAGS = flags.FLAGS
USAGE_EXIT_CODE = 2
# A missing file on the command line (--data_dir, --model, ...) is the
# user's to fix; the loaders' messages say which file and where to get it.
_USER_ERRORS = (errors.UsageError, FileNotFoundError, flags.Error,
                app.UsageError)


def run(main):
    """`absl.app.run(main)` with user errors printed as one line, exit 2."""
    app.run(functools.partial(_guarded, main), flags_parser=_parse_flags)


def _parse_flags(argv):
    try:
        return FLAGS(argv)
    except flags.Error as error:
        _fail(error, show_traceback=False)


def _guarded(main, argv):
    # The trainers lower the logging verbosity in `main`; read it first.
    show_traceback = FLAGS["verbosity"].present and FLAGS.verbosity >= 1
    try:
        return main(argv)
    except _USER_ERRORS as error:
        _fail(error, show_traceback)


def _fail(error, show_traceback):
    if show_traceback:
        traceback.print_exc()
    message = " ".join(str(error).split())
    print(f"{_program()}: error: {message}", file=sys.stderr)
    sys.exit(USAGE_EXIT_CODE)


def _program():
    name = os.path.basename(sys.argv[0])
    if name == "__main__.py" or name.endswith(".py"):
        # `python -m trainers.cifar`: name the module, as the user typed it.
        spec = getattr(sys.modules["__main__"], "__spec__", None)
        return spec.name if spec else name
    return name
