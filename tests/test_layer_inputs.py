"""A fuzz corpus of invalid arguments and inputs for every public layer.

Each case must raise a ValueError or TypeError whose message names the
argument (or the input property) at fault: never an opaque TensorFlow
error, a silent acceptance or a crash. Some of these inputs used to abort
the Python process inside a TensorFlow C++ check, so the corpus runs in a
child process (`python -m tests.test_layer_inputs ID...`, one JSON line per
case); a case that kills the child is reported as a crash and the rest run
in a new child.
"""

import json
import subprocess
import sys

import pytest

from tests import testing


def _make(cls, *args, **kwargs):
    def make():
        from keras_compact import layers

        return getattr(layers, cls)(*args, **kwargs)

    return make


def _tensor(shape, dtype="float32"):
    def tensor():
        import numpy as np

        return np.ones(shape, dtype)

    return tensor


def _call(make, inputs):
    def run():
        import keras

        make()(keras.ops.convert_to_tensor(inputs()))

    return run


def _build(make, shape):
    return lambda: make().build(shape)


# Constructor arguments: (id, make, the name the message must contain).
_CONV = {"filters": 8, "kernel_size": 3}
_BAD_CONSTRUCTORS = [
    # GroupedConv2D
    ("grouped-filters-0", "GroupedConv2D", "filters", {"filters": 0}),
    ("grouped-filters-neg", "GroupedConv2D", "filters", {"filters": -4}),
    ("grouped-filters-float", "GroupedConv2D", "filters", {"filters": 2.5}),
    ("grouped-filters-str", "GroupedConv2D", "filters", {"filters": "8"}),
    ("grouped-filters-bool", "GroupedConv2D", "filters", {"filters": True}),
    ("grouped-filters-none", "GroupedConv2D", "filters", {"filters": None}),
    ("grouped-kernel-0", "GroupedConv2D", "kernel_size", {"kernel_size": 0}),
    ("grouped-kernel-1tuple", "GroupedConv2D", "kernel_size",
     {"kernel_size": (3,)}),
    ("grouped-kernel-3tuple", "GroupedConv2D", "kernel_size",
     {"kernel_size": (3, 3, 3)}),
    ("grouped-kernel-str", "GroupedConv2D", "kernel_size",
     {"kernel_size": "3"}),
    ("grouped-kernel-float", "GroupedConv2D", "kernel_size",
     {"kernel_size": 2.0}),
    ("grouped-kernel-neg", "GroupedConv2D", "kernel_size",
     {"kernel_size": (3, -1)}),
    ("grouped-kernel-floats", "GroupedConv2D", "kernel_size",
     {"kernel_size": (1.5, 3)}),
    ("grouped-strides-0", "GroupedConv2D", "strides", {"strides": 0}),
    ("grouped-strides-pair0", "GroupedConv2D", "strides",
     {"strides": (1, 0)}),
    ("grouped-strides-str", "GroupedConv2D", "strides", {"strides": "2"}),
    ("grouped-strides-none", "GroupedConv2D", "strides", {"strides": None}),
    ("grouped-padding-full", "GroupedConv2D", "padding",
     {"padding": "full"}),
    ("grouped-padding-int", "GroupedConv2D", "padding", {"padding": 1}),
    ("grouped-padding-none", "GroupedConv2D", "padding", {"padding": None}),
    ("grouped-groups-0", "GroupedConv2D", "groups", {"groups": 0}),
    ("grouped-groups-neg", "GroupedConv2D", "groups", {"groups": -2}),
    ("grouped-groups-mismatch", "GroupedConv2D", "groups", {"groups": 3}),
    ("grouped-groups-float", "GroupedConv2D", "groups", {"groups": 2.0}),
    ("grouped-groups-str", "GroupedConv2D", "groups", {"groups": "2"}),
    ("grouped-groups-bool", "GroupedConv2D", "groups", {"groups": True}),
    ("grouped-bias-str", "GroupedConv2D", "use_bias", {"use_bias": "yes"}),
    ("grouped-kinit-name", "GroupedConv2D", "kernel_initializer",
     {"kernel_initializer": "nope"}),
    ("grouped-binit-int", "GroupedConv2D", "bias_initializer",
     {"bias_initializer": 5}),
    ("grouped-kreg-name", "GroupedConv2D", "kernel_regularizer",
     {"kernel_regularizer": "nope"}),
    ("grouped-breg-list", "GroupedConv2D", "bias_regularizer",
     {"bias_regularizer": [1]}),
    # ExpandedConv2D
    ("expconv-filters-0", "ExpandedConv2D", "filters", {"filters": 0}),
    ("expconv-filters-str", "ExpandedConv2D", "filters", {"filters": "8"}),
    ("expconv-filters-float", "ExpandedConv2D", "filters",
     {"filters": 1.5}),
    ("expconv-kernel-0", "ExpandedConv2D", "kernel_size",
     {"kernel_size": 0}),
    ("expconv-strides-0", "ExpandedConv2D", "strides", {"strides": 0}),
    ("expconv-padding-x", "ExpandedConv2D", "padding", {"padding": "x"}),
    ("expconv-strategy-x", "ExpandedConv2D", "strategy",
     {"strategy": "zz"}),
    ("expconv-strategy-none", "ExpandedConv2D", "strategy",
     {"strategy": None}),
    ("expconv-ck-3x3", "ExpandedConv2D", "kernel_size", {"strategy": "ck"}),
    ("expconv-rate-0", "ExpandedConv2D", "expansion_rate",
     {"expansion_rate": 0}),
    ("expconv-rate-neg", "ExpandedConv2D", "expansion_rate",
     {"expansion_rate": -1}),
    ("expconv-rate-str", "ExpandedConv2D", "expansion_rate",
     {"expansion_rate": "4"}),
    ("expconv-rate-none", "ExpandedConv2D", "expansion_rate",
     {"expansion_rate": None}),
    ("expconv-rate-nan", "ExpandedConv2D", "expansion_rate",
     {"expansion_rate": float("nan")}),
    ("expconv-rate-inf", "ExpandedConv2D", "expansion_rate",
     {"expansion_rate": float("inf")}),
    ("expconv-groups-0", "ExpandedConv2D", "groups", {"groups": 0}),
    ("expconv-groups-mismatch", "ExpandedConv2D", "groups", {"groups": 3}),
    ("expconv-expand-input-str", "ExpandedConv2D", "expand_input",
     {"expand_input": "no"}),
    ("expconv-bias-int", "ExpandedConv2D", "use_bias", {"use_bias": 2}),
    ("expconv-kinit-name", "ExpandedConv2D", "kernel_initializer",
     {"kernel_initializer": "nope"}),
    # ExpandedDense
    ("expdense-units-0", "ExpandedDense", "units", {"units": 0}),
    ("expdense-units-neg", "ExpandedDense", "units", {"units": -1}),
    ("expdense-units-float", "ExpandedDense", "units", {"units": 2.5}),
    ("expdense-units-str", "ExpandedDense", "units", {"units": "10"}),
    ("expdense-units-none", "ExpandedDense", "units", {"units": None}),
    ("expdense-rate-0", "ExpandedDense", "expansion_rate",
     {"units": 4, "expansion_rate": 0}),
    ("expdense-rate-str", "ExpandedDense", "expansion_rate",
     {"units": 4, "expansion_rate": "x"}),
    ("expdense-hidden-zero", "ExpandedDense", "hidden_units",
     {"units": 4, "hidden_units": (0, 8)}),
    ("expdense-hidden-str", "ExpandedDense", "hidden_units",
     {"units": 4, "hidden_units": "ab"}),
    ("expdense-hidden-int", "ExpandedDense", "hidden_units",
     {"units": 4, "hidden_units": 8}),
    ("expdense-hidden-empty", "ExpandedDense", "hidden_units",
     {"units": 4, "hidden_units": ()}),
    ("expdense-hidden-float", "ExpandedDense", "hidden_units",
     {"units": 4, "hidden_units": (8.5, 8)}),
    ("expdense-bias-str", "ExpandedDense", "use_bias",
     {"units": 4, "use_bias": "x"}),
    ("expdense-breg-name", "ExpandedDense", "bias_regularizer",
     {"units": 4, "bias_regularizer": "nope"}),
    # SlimConv2D
    ("slim-k-1", "SlimConv2D", "k", {"k": "1"}),
    ("slim-k-5/3", "SlimConv2D", "k", {"k": "5/3"}),
    ("slim-k-word", "SlimConv2D", "k", {"k": "abc"}),
    ("slim-k-0", "SlimConv2D", "k", {"k": 0}),
    ("slim-k-none", "SlimConv2D", "k", {"k": None}),
    ("slim-k-neg", "SlimConv2D", "k", {"k": -2}),
    ("slim-k-div0", "SlimConv2D", "k", {"k": "4/0"}),
    ("slim-strides-3", "SlimConv2D", "strides", {"strides": 3}),
    ("slim-strides-bool", "SlimConv2D", "strides", {"strides": True}),
    ("slim-strides-pair", "SlimConv2D", "strides", {"strides": (1, 1)}),
    ("slim-groups-0", "SlimConv2D", "groups", {"groups": 0}),
    ("slim-groups-float", "SlimConv2D", "groups", {"groups": 1.5}),
    ("slim-groups-bool", "SlimConv2D", "groups", {"groups": True}),
    ("slim-reduction-0", "SlimConv2D", "reduction", {"reduction": 0}),
    ("slim-reduction-str", "SlimConv2D", "reduction", {"reduction": "32"}),
    ("slim-bottom-groups-0", "SlimConv2D", "bottom_groups",
     {"bottom_groups": 0}),
    ("slim-activation-name", "SlimConv2D", "activation",
     {"activation": "nope"}),
    ("slim-kinit-name", "SlimConv2D", "kernel_initializer",
     {"kernel_initializer": "nope"}),
    # The cheap blocks
    ("shiftblock-filters-0", "ShiftBlock", "filters", {"filters": 0}),
    ("shiftblock-filters-str", "ShiftBlock", "filters", {"filters": "16"}),
    ("shiftblock-filters-float", "ShiftBlock", "filters",
     {"filters": 2.5}),
    ("shiftblock-filters-bool", "ShiftBlock", "filters", {"filters": True}),
    ("shiftblock-strides-3", "ShiftBlock", "strides",
     {"filters": 16, "strides": 3}),
    ("shiftblock-strides-bool", "ShiftBlock", "strides",
     {"filters": 16, "strides": True}),
    ("dwblock-filters-neg", "DepthwiseBlock", "filters", {"filters": -16}),
    ("dwblock-strides-pair", "DepthwiseBlock", "strides",
     {"filters": 16, "strides": (2, 2)}),
    ("groupblock-groups-0", "GroupBlock", "groups",
     {"filters": 16, "groups": 0}),
    ("groupblock-groups-3", "GroupBlock", "groups",
     {"filters": 16, "groups": 3}),
    ("groupblock-groups-str", "GroupBlock", "groups",
     {"filters": 16, "groups": "4"}),
    ("groupblock-groups-float", "GroupBlock", "groups",
     {"filters": 16, "groups": 2.5}),
    ("groupblock-groups-bool", "GroupBlock", "groups",
     {"filters": 16, "groups": True}),
    # BatchNormalization
    ("bn-momentum-big", "BatchNormalization", "momentum", {"momentum": 1.5}),
    ("bn-momentum-neg", "BatchNormalization", "momentum",
     {"momentum": -0.1}),
    ("bn-momentum-str", "BatchNormalization", "momentum",
     {"momentum": "0.9"}),
    ("bn-epsilon-0", "BatchNormalization", "epsilon", {"epsilon": 0}),
    ("bn-epsilon-neg", "BatchNormalization", "epsilon", {"epsilon": -1.0}),
    ("bn-epsilon-str", "BatchNormalization", "epsilon", {"epsilon": "1e-5"}),
    # X-Net expanders (argument checks of their own)
    ("xconv-impl-x", "ExpanderConv2D", "impl", {"impl": "x"}),
    ("xconv-side-x", "ExpanderConv2D", "regular_side",
     {"regular_side": "x"}),
    ("xconv-ratio-half", "ExpanderConv2D", "expand_ratio",
     {"expand_ratio": 0.5}),
    ("xconv-density-2", "ExpanderConv2D", "density", {"density": 2}),
    ("xconv-density-0", "ExpanderConv2D", "density", {"density": 0}),
    ("xconv-density-str", "ExpanderConv2D", "density", {"density": "1/4"}),
    ("xconv-dilation-0", "ExpanderConv2D", "dilation_rate",
     {"dilation_rate": 0}),
    ("xconv-dilation-stride", "ExpanderConv2D", "dilation_rate",
     {"dilation_rate": 2, "strides": 2}),
    ("xconv-channels-first", "ExpanderConv2D", "data_format",
     {"data_format": "channels_first"}),
    ("grouped-activation-x", "GroupedConv2D", "activation",
     {"activation": "no_such_activation"}),
    ("grouped-constraint-x", "GroupedConv2D", "kernel_constraint",
     {"kernel_constraint": "no_such_constraint"}),
    ("grouped-dilation-stride", "GroupedConv2D", "dilation_rate",
     {"dilation_rate": 2, "strides": 2}),
    ("expconv-dilation-pair", "ExpandedConv2D", "dilation_rate",
     {"dilation_rate": (2, 0)}),
    ("xconv-kernel-0", "ExpanderConv2D", "kernel_size", {"kernel_size": 0}),
    ("xconv-padding-x", "ExpanderConv2D", "padding", {"padding": "x"}),
]

# Calls and builds: (id, run, the text the message must contain).
_BAD_INPUTS = [
    ("grouped-rank2", _call(_make("GroupedConv2D", 8, 3, groups=2),
                            _tensor((2, 4))), "ndim=4"),
    ("grouped-rank3", _call(_make("GroupedConv2D", 8, 3, groups=2),
                            _tensor((2, 4, 4))), "ndim=4"),
    ("grouped-rank5", _call(_make("GroupedConv2D", 8, 3),
                            _tensor((1, 2, 4, 4, 4))), "ndim=4"),
    ("grouped-int32", _call(_make("GroupedConv2D", 8, 3),
                            _tensor((1, 4, 4, 4), "int32")), "inputs.dtype"),
    ("grouped-int64", _call(_make("GroupedConv2D", 8, 3),
                            _tensor((1, 4, 4, 4), "int64")), "inputs.dtype"),
    ("grouped-bool", _call(_make("GroupedConv2D", 8, 3),
                           _tensor((1, 4, 4, 4), "bool")), "inputs.dtype"),
    ("grouped-too-small", _call(_make("GroupedConv2D", 8, 3),
                                _tensor((1, 1, 1, 4))), "kernel_size"),
    ("grouped-build-rank2", _build(_make("GroupedConv2D", 8, 3), (2, 4)),
     "rank 4"),
    ("grouped-build-channels-none", _build(_make("GroupedConv2D", 8, 3),
                                           (None, 8, 8, None)), "channels"),
    ("grouped-build-groups", _build(_make("GroupedConv2D", 8, 3, groups=4),
                                    (None, 8, 8, 6)), "groups"),
    ("expconv-rank3", _call(_make("ExpandedConv2D", 8, 3),
                            _tensor((2, 8, 8))), "ndim=4"),
    ("expconv-rank2", _call(_make("ExpandedConv2D", 8, 3),
                            _tensor((2, 8))), "ndim=4"),
    ("expconv-int", _call(_make("ExpandedConv2D", 8, 3),
                          _tensor((1, 8, 8, 4), "int32")), "inputs.dtype"),
    ("expconv-too-small", _call(_make("ExpandedConv2D", 8, 5),
                                _tensor((1, 3, 3, 4))), "kernel_size"),
    ("expconv-build-groups", _build(_make("ExpandedConv2D", 8, 3, groups=2),
                                    (None, 8, 8, 3)), "groups"),
    ("expdense-rank1", _call(_make("ExpandedDense", 4), _tensor((8,))),
     "min_ndim=2"),
    ("expdense-int", _call(_make("ExpandedDense", 4),
                           _tensor((2, 8), "int32")), "inputs.dtype"),
    ("expdense-build-none", _build(_make("ExpandedDense", 4), (None, None)),
     "channels"),
    ("slim-rank2", _call(_make("SlimConv2D"), _tensor((2, 64))), "ndim=4"),
    ("slim-rank3", _call(_make("SlimConv2D"), _tensor((2, 8, 64))),
     "ndim=4"),
    ("slim-int", _call(_make("SlimConv2D"), _tensor((1, 8, 8, 64),
                                                    "int32")),
     "inputs.dtype"),
    ("slim-narrow", _call(_make("SlimConv2D"), _tensor((1, 8, 8, 8))),
     "reduction"),
    ("slim-build-groups", _build(_make("SlimConv2D", groups=5),
                                 (None, 8, 8, 64)), "groups"),
    ("slim-build-none", _build(_make("SlimConv2D"), (None, 8, 8, None)),
     "channels"),
    ("shift-rank2", _call(_make("Shift2D"), _tensor((2, 9))), "ndim=4"),
    ("shift-rank3", _call(_make("Shift2D"), _tensor((2, 4, 9))), "ndim=4"),
    ("shift-rank5", _call(_make("Shift2D"), _tensor((1, 2, 4, 4, 9))),
     "ndim=4"),
    ("shift-int", _call(_make("Shift2D"), _tensor((1, 4, 4, 9), "int32")),
     "inputs.dtype"),
    ("shift-build-none", _build(_make("Shift2D"), (None, 4, 4, None)),
     "channels"),
    ("shiftblock-rank2", _call(_make("ShiftBlock", 16), _tensor((2, 16))),
     "ndim=4"),
    ("shiftblock-int", _call(_make("ShiftBlock", 16),
                             _tensor((1, 4, 4, 16), "int32")),
     "inputs.dtype"),
    ("dwblock-rank3", _call(_make("DepthwiseBlock", 16),
                            _tensor((2, 4, 16))), "ndim=4"),
    ("groupblock-rank3", _call(_make("GroupBlock", 16),
                               _tensor((2, 4, 16))), "ndim=4"),
    ("groupblock-build-channels", _build(_make("GroupBlock", 16),
                                         (None, 4, 4, 6)), "groups"),
    ("groupblock-build-none", _build(_make("GroupBlock", 16),
                                     (None, 4, 4, None)), "channels"),
    ("bn-int", _call(_make("BatchNormalization"),
                     _tensor((2, 4, 4, 8), "int32")), "inputs.dtype"),
    ("bn-bool", _call(_make("BatchNormalization"),
                      _tensor((2, 8), "bool")), "inputs.dtype"),
    ("xconv-rank2", _call(_make("ExpanderConv2D", 8, 3, seed=0),
                          _tensor((2, 8))), "ndim=4"),
    ("xconv-rank3", _call(_make("ExpanderConv2D", 8, 3, seed=0),
                          _tensor((2, 8, 8))), "ndim=4"),
    ("xconv-filters-0", _call(_make("ExpanderConv2D", 0, 3, seed=0),
                              _tensor((1, 4, 4, 8))), "filters"),
    ("xconv-build-none", _build(_make("ExpanderConv2D", 8, 3, seed=0),
                                (None, 4, 4, None)), "channels"),
    ("xdense-rank4", _call(_make("ExpanderDense", 8, seed=0),
                           _tensor((1, 4, 4, 8))), "ndim=2"),
    ("xdense-units-0", _call(_make("ExpanderDense", 0, seed=0),
                             _tensor((2, 8))), "units"),
    ("xdense-build-none", _build(_make("ExpanderDense", 8, seed=0),
                                 (None, None)), "channels"),
]


def _constructor_case(cls, kwargs):
    convs = ("GroupedConv2D", "ExpandedConv2D", "ExpanderConv2D")
    defaults = _CONV if cls in convs else {}
    return _make(cls, **{**defaults, **kwargs})


CASES = {case_id: (_constructor_case(cls, kwargs), argument)
         for case_id, cls, argument, kwargs in _BAD_CONSTRUCTORS}
CASES.update({case_id: (run, text) for case_id, run, text in _BAD_INPUTS})


def _outcome(case_id):
    run, expected = CASES[case_id]
    try:
        run()
    except (ValueError, TypeError) as error:
        message = str(error)
        named = expected in message
        return {"id": case_id, "outcome": "named" if named else "unnamed",
                "error": f"{type(error).__name__}: {message[:300]}"}
    except Exception as error:  # noqa: BLE001 - the corpus reports it
        return {"id": case_id, "outcome": "opaque",
                "error": f"{type(error).__name__}: {str(error)[:300]}"}
    return {"id": case_id, "outcome": "accepted", "error": ""}


def _run_all():
    """Every case's outcome, from children; a crash skips one case."""
    results, pending = {}, list(CASES)
    while pending:
        child = subprocess.run(
            [sys.executable, "-m", "tests.test_layer_inputs", *pending],
            cwd=testing.ROOT, capture_output=True, text=True, timeout=600)
        for line in child.stdout.splitlines():
            if line.startswith("{"):
                outcome = json.loads(line)
                results[outcome["id"]] = outcome
        pending = [c for c in pending if c not in results]
        if pending:  # the child died in pending[0]
            results[pending[0]] = {
                "id": pending[0], "outcome": "crashed",
                "error": f"exit {child.returncode}: {child.stderr[-300:]}"}
            pending = pending[1:]
    return results


@pytest.fixture(scope="module")
def outcomes():
    return _run_all()


def test_the_corpus_is_large():
    assert len(CASES) >= 140, len(CASES)


@pytest.mark.parametrize("case_id", list(CASES))
def test_invalid_layer_argument_fails_clearly(outcomes, case_id):
    outcome = outcomes[case_id]
    assert outcome["outcome"] == "named", (
        f"expected a ValueError/TypeError naming {CASES[case_id][1]!r}: "
        f"{outcome}")


if __name__ == "__main__":
    import os

    os.environ.setdefault("TF_CPP_MIN_LOG_LEVEL", "3")
    for case_id in sys.argv[1:]:
        print(json.dumps(_outcome(case_id)), flush=True)
