"""The error type for mistakes a user can fix by changing the input.

Raise `UsageError` (a `ValueError`) with one line that says what was wrong
and the fix or the valid choices. The command-line entry points print such
an error's message alone and exit with status 2; every other exception is
a bug and keeps its traceback.

Example:

>>> from keras_compact.errors import UsageError
>>> try:
...     raise UsageError("--epochs=0: must be a positive integer.")
... except ValueError as error:
...     print(error)
--epochs=0: must be a positive integer.
"""


class UsageError(ValueError):
    """A user error: bad flag, config field, argument or input file."""
