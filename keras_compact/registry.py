"""Name -> object registries for methods, models, datasets and strategies."""

from keras_compact.errors import UsageError


class Registry:
    """A named collection that fails on unknown names with the valid ones.

    Example:

    >>> models = Registry("model")
    >>> @models.register("tiny")
    ... def tiny(**kwargs): ...
    >>> models.get("tiny") is tiny
    True
    """

    def __init__(self, kind):
        self.kind = kind
        self._entries = {}

    def register(self, name, obj=None):
        """Registers `obj` under `name`; usable as a decorator."""

        def add(obj):
            if name in self._entries:
                raise ValueError(f"{self.kind} '{name}' is already registered.")
            self._entries[name] = obj
            return obj

        return add if obj is None else add(obj)

    def get(self, name):
        if name not in self._entries:
            raise UsageError(
                f"Unknown {self.kind} '{name}'. Valid {self.kind}s: "
                f"{', '.join(self.names())}."
            )
        return self._entries[name]

    def names(self):
        return sorted(self._entries)

    def __contains__(self, name):
        return name in self._entries
