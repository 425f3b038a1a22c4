"""The method registry: `methods.get("slimconv")`."""

from keras_compact.registry import Registry

METHODS = Registry("method")


def register(name):
    """Class decorator: registers an instance of a `Method` subclass."""

    def add(cls):
        cls.name = name
        METHODS.register(name, cls())
        return cls

    return add


def get(name):
    return METHODS.get(name)


def names():
    return METHODS.names()


def all_options():
    """`{option: (default, help)}` over every registered method, and the
    distillation options every method takes."""
    from keras_compact.methods import knowledge_distillation

    options = dict(knowledge_distillation.OPTIONS)
    for name in names():
        options.update(get(name).options)
    return options
