"""X-Nets: expander graphs, masked == gathered, models' counts, the method."""

import os
import tempfile

import keras
import numpy as np
import pytest
import tensorflow as tf

from configs import xnet as xnet_config
from keras_compact import benchmarking
from keras_compact import layers
from keras_compact import methods
from keras_compact import models
from keras_compact import profiling
from keras_compact.layers import expander
from tests import testing

_random_bn = benchmarking.randomize_bn_statistics


def _numpy(x):
    return keras.ops.convert_to_numpy(x)


def _laplacian_connectivity(mask):
    """Algebraic connectivity of the bipartite graph (0: disconnected)."""
    c_in, c_out = mask.shape
    adjacency = np.zeros((c_in + c_out,) * 2)
    adjacency[:c_in, c_in:] = mask
    adjacency += adjacency.T
    laplacian = np.diag(adjacency.sum(1)) - adjacency
    return np.sort(np.linalg.eigvalsh(laplacian))[1]


# --- the graph ------------------------------------------------------------

@pytest.mark.parametrize("c_in,c_out,ratio", [(96, 24, 2), (240, 96, 2),
                                              (64, 128, 4), (256, 256, 16)])
def test_output_regular_graph(c_in, c_out, ratio):
    layer = layers.ExpanderConv2D(c_out, 1, density=1 / ratio, seed=7)
    layer.build((None, 4, 4, c_in))
    mask = layer.get_mask()
    assert set(np.unique(mask)) == {0.0, 1.0}
    # Every output channel has the same in-degree c_in // ES.
    np.testing.assert_array_equal(mask.sum(0), c_in // ratio)
    assert _laplacian_connectivity(mask) > 1e-6
    # A good expander: far from the disconnected value 1.0.
    assert expander.singular_value_ratio(mask) < 0.6


def test_input_regular_and_block_graphs():
    mask = expander.expander_mask(32, 64, 16, regular_side="in", seed=1)
    np.testing.assert_array_equal(mask.sum(1), 16)
    assert len(set(mask.sum(0))) > 1  # outputs' degrees vary
    block = expander.expander_mask(64, 64, 32, groups=8, seed=1)
    for g in range(8):
        cols = block[:, 8 * g:8 * g + 8]
        assert (cols == cols[:, :1]).all()
    assert _laplacian_connectivity(block) > 1e-6
    # A plain grouped conv (block-diagonal) is a disconnected graph.
    grouped = np.kron(np.eye(2), np.ones((32, 32)))
    assert expander.singular_value_ratio(grouped) == pytest.approx(1.0)
    assert _laplacian_connectivity(grouped) < 1e-9


def test_seed_determines_graph():
    def mask(seed):
        layer = layers.ExpanderConv2D(48, 3, density=1 / 2, seed=seed)
        layer.build((None, 8, 8, 96))
        return layer.get_mask()

    np.testing.assert_array_equal(mask(3), mask(3))
    assert not np.array_equal(mask(3), mask(4))
    # The drawn seed is recorded, so the config rebuilds the same graph.
    drawn = layers.ExpanderConv2D(48, 3)
    drawn.build((None, 8, 8, 96))
    again = layers.ExpanderConv2D.from_config(drawn.get_config())
    again.build((None, 8, 8, 96))
    np.testing.assert_array_equal(drawn.get_mask(), again.get_mask())
    assert expander.layer_seed(0, "a") != expander.layer_seed(0, "b")


def test_bad_arguments_fail_clearly():
    with pytest.raises(ValueError, match="impl must be one of"):
        layers.ExpanderConv2D(8, 1, impl="sparse")
    with pytest.raises(ValueError, match="degree must be in"):
        layers.ExpanderConv2D(8, 1, degree=20)(np.zeros((1, 2, 2, 4)))
    with pytest.raises(ValueError, match="no groups"):
        layers.expander_conv2d(keras.Input((4, 4, 8)), 8, 3, groups=2,
                               name="c")


# --- masked semantics ------------------------------------------------------

def test_masked_matches_numpy_reference():
    """y = conv(x, W * M) with M repeated over k x k (reference semantics)."""
    x = np.random.randn(2, 5, 5, 12).astype("float32")
    layer = layers.ExpanderConv2D(6, 3, density=1 / 3, padding="valid",
                                  seed=5)
    y = _numpy(layer(x))
    w = _numpy(layer.kernel) * layer.get_mask()[None, None]
    ref = np.zeros((2, 3, 3, 6))
    for i in range(3):
        for j in range(3):
            ref[:, i, j] = np.einsum("bhwc,hwco->bo",
                                     x[:, i:i + 3, j:j + 3], w)
    # ref is float64: only y's rounding counts (the bound's factor 2 is slack).
    testing.assert_float32_sums_agree(y, ref, testing.absolute_twin_output(
        layer, x), terms=3 * 3 * 12)
    # Masked entries start at zero; the rest keep the fan-out He init.
    assert (_numpy(layer.kernel)[:, :, layer.get_mask() == 0] == 0).all()


def test_masked_gradient_is_zero_off_graph():
    layer = layers.ExpanderConv2D(16, 3, density=1 / 4, seed=2)
    x = tf.random.normal((2, 6, 6, 32))
    with tf.GradientTape() as tape:
        loss = tf.reduce_sum(layer(x) ** 2)
    grad = _numpy(tape.gradient(loss, layer.kernel))
    off = layer.get_mask() == 0
    assert (grad[:, :, off] == 0).all()
    assert (grad[:, :, ~off] != 0).mean() > 0.99


def test_masked_weights_stay_zero_after_training():
    inputs = keras.Input((8, 8, 16))
    x = layers.ExpanderConv2D(
        32, 3, density=1 / 4, seed=0,
        kernel_regularizer=keras.regularizers.L2(5e-4), name="x1")(inputs)
    x = layers.BatchNormalization()(x)
    x = keras.layers.ReLU()(x)
    x = keras.layers.GlobalAveragePooling2D()(x)
    x = layers.ExpanderDense(10, density=1 / 2, seed=0, name="x2")(x)
    model = keras.Model(inputs, x)
    before = {layer.name: _numpy(layer.kernel).copy()
              for layer in expander.expander_layers(model)}
    model.compile(keras.optimizers.SGD(0.1, momentum=0.9, nesterov=True,
                                       weight_decay=1e-4),
                  keras.losses.SparseCategoricalCrossentropy(
                      from_logits=True))
    model.fit(np.random.randn(64, 8, 8, 16).astype("float32"),
              np.random.randint(0, 10, 64), batch_size=16, epochs=2,
              verbose=0)
    for layer in expander.expander_layers(model):
        kernel = _numpy(layer.kernel)
        off = np.broadcast_to(np.reshape(layer.get_mask() == 0,
                                         layer._mask_shape()), kernel.shape)
        assert (kernel[off] == 0).all(), layer.name
        assert not np.allclose(kernel[~off], before[layer.name][~off])


# --- gathered == masked ------------------------------------------------------

@pytest.mark.parametrize("kernel_size", [1, 3])
@pytest.mark.parametrize("strides", [1, 2])
@pytest.mark.parametrize("ratio", [2, 3, 4, 8, 16])
def test_gathered_equals_masked_conv(kernel_size, strides, ratio):
    x = np.random.randn(2, 9, 9, 48).astype("float32")
    masked = layers.ExpanderConv2D(32, kernel_size, strides=strides,
                                   density=1 / ratio, seed=ratio)
    expected = _numpy(masked(x))
    gathered = masked.gathered(x.shape)
    assert gathered.impl == "gather"
    assert tuple(gathered.grouped_conv.kernel.shape) == (
        kernel_size, kernel_size, 48 // ratio, 32)
    testing.assert_float32_sums_agree(
        _numpy(gathered(x)), expected, testing.absolute_twin_output(
            masked, x), terms=kernel_size**2 * 48)
    np.testing.assert_array_equal(gathered.get_mask(), masked.get_mask())


@pytest.mark.parametrize("options", [
    dict(regular_side="in", density=1 / 4),
    dict(groups=8, density=1 / 2),
    dict(groups=4, degree=5, use_bias=True),
])
def test_gathered_equals_masked_variants(options):
    x = np.random.randn(2, 7, 7, 24).astype("float32")
    masked = layers.ExpanderConv2D(32, 3, seed=11, **options)
    masked.build(x.shape)
    if masked.use_bias:
        masked.bias.assign(np.random.randn(32))
    gathered = masked.gathered(x.shape)
    # 3 * 3 * 24 products, and the bias.
    testing.assert_float32_sums_agree(
        _numpy(gathered(x)), _numpy(masked(x)),
        testing.absolute_twin_output(masked, x), terms=3 * 3 * 24 + 1)


@pytest.mark.parametrize("options", [dict(density=1 / 4),
                                     dict(degree=16, groups=8),
                                     dict(regular_side="in", degree=6)])
def test_gathered_equals_masked_dense(options):
    x = np.random.randn(5, 64).astype("float32")
    masked = layers.ExpanderDense(48, seed=3, **options)
    expected = _numpy(masked(x))
    gathered = masked.gathered(x.shape)
    testing.assert_float32_sums_agree(
        _numpy(gathered(x)), expected, testing.absolute_twin_output(
            masked, x), terms=64)


def test_gather_form_trains_like_masked():
    """Gradients of the compact kernel are the masked gradients on-graph."""
    rng = np.random.default_rng(9)
    x = rng.normal(size=(2, 6, 6, 16)).astype("float32")
    masked = layers.ExpanderConv2D(8, 3, density=1 / 2, seed=9)
    masked.build(x.shape)
    gathered = masked.gathered(x.shape)
    # A loss linear in the outputs: each kernel gradient entry is then a
    # sum over the 2 * 6 * 6 output positions of x * weights, the same
    # products in both forms (no output rounding enters it).
    weights = rng.normal(size=(2, 6, 6, 8)).astype("float32")

    def kernel_gradient(layer, kernel, inputs, weights):
        with tf.GradientTape() as tape:
            loss = tf.reduce_sum(layer(inputs) * weights)
        return _numpy(tape.gradient(loss, kernel))

    table = _numpy(gathered.indices)
    actual = kernel_gradient(gathered, gathered.grouped_conv.kernel, x,
                             weights)
    expected = masked._compact(
        kernel_gradient(masked, masked.kernel, x, weights), table)
    # The magnitudes: the same gradient with |kernel|, |x| and |weights|.
    kernel = _numpy(masked.kernel)
    masked.kernel.assign(np.abs(kernel))
    magnitude = masked._compact(kernel_gradient(
        masked, masked.kernel, np.abs(x), np.abs(weights)), table)
    masked.kernel.assign(kernel)
    testing.assert_float32_sums_agree(actual, expected, magnitude,
                                      terms=2 * 6 * 6)


# --- Keras contract, saving, export -----------------------------------------

@pytest.mark.parametrize("impl", ["masked", "gather"])
def test_layer_contract(impl):
    testing.run_layer_test(
        layers.ExpanderConv2D,
        dict(filters=16, kernel_size=3, strides=2, density=1 / 4, seed=1,
             impl=impl),
        (2, 8, 8, 32), (2, 4, 4, 16), expected_num_trainable_weights=1,
        expected_num_non_trainable_weights=1)  # a kernel; the mask/indices
    testing.run_layer_test(
        layers.ExpanderDense, dict(units=12, degree=4, seed=1, impl=impl),
        (3, 20), (3, 12), expected_num_trainable_weights=1,
        expected_num_non_trainable_weights=1)


def _small_x_model(impl="masked"):
    inputs = keras.Input((8, 8, 16))
    x = layers.expander_conv2d(inputs, 32, 3, strides=2, name="x1",
                               density=1 / 4, seed=1, impl=impl)
    x = layers.BatchNormalization(name="bn")(x)
    x = keras.layers.ReLU()(x)
    x = layers.expander_conv2d(x, 32, 1, name="x2", density=1 / 2, seed=2,
                               impl=impl)
    x = keras.layers.GlobalAveragePooling2D()(x)
    x = layers.ExpanderDense(10, degree=8, seed=3, name="x3", impl=impl)(x)
    return keras.Model(inputs, x)


def test_mask_survives_keras_save_load():
    model = _small_x_model()
    # Replace one mask by hand: the saved weights, not only the seed, carry
    # the graph.
    layer = model.get_layer("x2")
    new_mask = expander.expander_mask(32, 32, 16, seed=99)
    layer.mask.assign(new_mask)
    layer.kernel.assign(_numpy(layer.kernel) * new_mask[None, None])
    x = np.random.randn(4, 8, 8, 16).astype("float32")
    restored = testing.run_model_saving_test(model, x)
    np.testing.assert_array_equal(restored.get_layer("x2").get_mask(),
                                  new_mask)
    for name in ("x1", "x3"):
        np.testing.assert_array_equal(restored.get_layer(name).get_mask(),
                                      model.get_layer(name).get_mask())
    testing.run_model_saving_test(layers.gathered_model(_small_x_model()), x)


@pytest.mark.parametrize("impl", ["masked", "gather"])
def test_saved_model_export(impl):
    model = _small_x_model(impl)
    x = np.random.randn(3, 8, 8, 16).astype("float32")
    from keras_compact import export

    with tempfile.TemporaryDirectory() as tmp:
        path = export.to_saved_model(model, os.path.join(tmp, "sm"))
        loaded = tf.saved_model.load(path)
        served = loaded.serve(x)
        variables = " ".join(v.name for v in loaded.variables)
    # The served graph is Grappler-optimised (conv + BN + ReLU fused): the
    # same products summed in another order. Per conv output (n <= 3 * 3 *
    # 16 terms, outputs ~1) that is ~sqrt(n) u = 7e-7, and 3 layers do not
    # grow it past ~2e-6 (as in _check_deployable); a lost BN or bias is ~1e-1.
    np.testing.assert_allclose(_numpy(served), _numpy(model(x)), atol=1e-5)
    assert ("mask" if impl == "masked" else "indices") in variables


def test_litert_export_of_gathered_model():
    model = layers.gathered_model(_small_x_model())
    x = np.random.randn(2, 8, 8, 16).astype("float32")
    testing.run_litert_export_test(model, x)
    # A small X-DenseNet: BN -> ReLU -> gathered conv on concatenations.
    from keras_compact.models import densenet

    dense_net = layers.gathered_model(densenet.densenet_bc_cifar(
        10, 4, (8, 8, 3), 10, density=1 / 2))
    testing.run_litert_export_test(
        dense_net, np.random.randn(2, 8, 8, 3).astype("float32"))
    # Chunked block expanders: slab gather + grouped CONV_2D.
    chunked = layers.gathered_model(densenet.densenet_bc_cifar(
        10, 8, (8, 8, 3), 10, density=1 / 2, expander_groups=4,
        expander_chunks=2))
    assert all(layer._chunk > 1
               for layer in expander.expander_layers(chunked))
    testing.run_litert_export_test(
        chunked, np.random.randn(2, 8, 8, 3).astype("float32"))


# --- models and counts -------------------------------------------------------

def _counts(name, num_classes=10, **kwargs):
    result = profiling.profile(models.build(name, (32, 32, 3), num_classes,
                                            **kwargs))
    return result.params, result.macs


@pytest.mark.parametrize("name,params,macs", [
    ("densenet_bc_40_24", 690_346, 288_131_664),
    ("x_densenet_bc_40_24", 375_850, 157_854_288),
    ("densenet_bc_40_36", 1_542_682, 647_298_936),
    ("x_densenet_bc_40_36", 835_066, 354_174_840),
])
def test_densenet_counts(name, params, macs):
    """Spec 3.2: dense 690,346 / X 0.376M params and 157.9M MACs (k=24)."""
    assert _counts(name) == (params, macs)


def test_densenet_counts_cifar100():
    assert _counts("densenet_bc_40_24", 100)[0] == 714_196


def test_vgg16_counts():
    """Spec 3.2 counts conv/FC weights and biases, not BN (8,448 here)."""
    dense = profiling.profile(models.build("vgg16", (32, 32, 3), 10))
    sparse = profiling.profile(models.build("x_vgg16", (32, 32, 3), 10))

    def without_bn(result):
        return result.params - sum(
            p.params for p in result.layers
            if p.class_name == "BatchNormalization")

    assert (without_bn(dense), dense.macs) == (14_982_474, 313_463_808)
    assert (without_bn(sparse), sparse.macs) == (809_930, 88_839_168)
    names = [p.name for p in sparse.layers if p.class_name.startswith(
        "Expander")]
    assert names == [f"conv{i}" for i in range(4, 14)] + ["fc1"]


def test_x_densenet_gathered_equals_masked():
    model = _random_bn(models.build("x_densenet_bc_40_24",
                                               (32, 32, 3), 10))
    fast = layers.gathered_model(model)
    x = np.random.randn(2, 32, 32, 3).astype("float32")
    expected = _numpy(model(x, training=False))
    # The analysis of _check_deployable: masked and gathered convs sum the
    # same products in another order (~sqrt(n) u per dot product), and the
    # BN-normalised layers do not amplify it over the 40 layers.
    np.testing.assert_allclose(_numpy(fast(x, training=False)), expected,
                               rtol=1e-5, atol=1e-5)
    gathered = expander.expander_layers(fast)
    assert len(gathered) == 36
    assert all(layer.impl == "gather" for layer in gathered)
    assert profiling.profile(fast).macs == 157_854_288


# --- method and config ------------------------------------------------------

def test_xnet_method_deploys_each_layer_in_its_fastest_form():
    config = xnet_config.get_config("arch=x_vgg16,expand_size=8")
    method = methods.get("xnet")
    model = method.build_model(config, (32, 32, 3), 10)
    deployed = method.deployable(model, None)
    # The paper's random graphs: every gathered form needs a GATHER, so
    # every layer deploys as its masked dense conv.
    assert [layer.impl for layer in expander.expander_layers(deployed)] == [
        "masked"] * 11
    notes = method.deployment_notes()
    assert notes["expander_deploy_counts"] == {"masked": 11}
    assert "GATHER" in notes["expander_deploy_forms"]["conv4"]["reason"]
    x = np.random.randn(2, 32, 32, 3).astype("float32")
    np.testing.assert_array_equal(_numpy(deployed(x, training=False)),
                                  _numpy(model(x, training=False)))
    # x_vgg16's graph is the paper's degree table: expand_size is unused.
    assert profiling.profile(deployed).macs == 88_839_168
    with pytest.raises(ValueError, match="auto, masked, gather"):
        method.build_model(xnet_config.get_config(
            "arch=x_vgg16,expander_deploy=grouped"), (32, 32, 3), 10)


@pytest.mark.slow
def test_xnet_method_trains_and_deploys():
    config = xnet_config.get_config("smoke,arch=densenet_bc_40_24")
    method = methods.get("xnet")
    model = method.build_model(config, (8, 8, 3), 10)
    assert len(expander.expander_layers(model)) == 36
    method.compile_model(model, keras.optimizers.SGD(0.1, momentum=0.9),
                         config)
    x = np.random.randn(16, 8, 8, 3).astype("float32")
    model.fit(x, np.random.randint(0, 10, 16), batch_size=8, epochs=1,
              verbose=0)
    deployed = method.deployable(model, None)
    np.testing.assert_array_equal(_numpy(deployed(x, training=False)),
                                  _numpy(model(x, training=False)))
    assert profiling.profile(deployed).macs < 0.6 * profiling.profile(
        models.build("densenet_bc_40_24", (8, 8, 3), 10)).macs


def test_xnet_method_rejects_dense_archs():
    config = xnet_config.get_config("arch=resnet20")
    with pytest.raises(ValueError, match="no expander layers"):
        methods.get("xnet").build_model(config, (32, 32, 3), 10)


def test_config_recipes():
    config = xnet_config.get_config()
    assert (config.arch, config.epochs, config.batch_size, config.lr,
            config.nesterov, config.weight_decay, tuple(config.decay_epochs),
            config.expand_size) == ("densenet_bc_40_24", 300, 64, 0.1, True,
                                    1e-4, (150, 225), 2)
    for option in methods.get("xnet").options:
        assert option in config
    vgg = xnet_config.get_config("vgg,expander_impl=gather")
    assert (vgg.arch, vgg.lr, vgg.batch_size, vgg.weight_decay,
            vgg.decay_rate, vgg.expander_impl) == ("x_vgg16", 0.05, 128,
                                                   5e-4, 0.5, "gather")


# --- ImageNet-shape X-ResNet / X-MobileNet (shared backbones) ---------------

# ImageNet-size graphs take ~10 s each to build on a shared CPU: slow.
@pytest.mark.slow
@pytest.mark.parametrize("name,macs", [("x_resnet34", 1_900_777_472),
                                       ("x_resnet50", 2_284_453_888)])
def test_x_resnet_macs(name, macs):
    """Spec 3.3: X-ResNet-34-2 1.90 G, X-ResNet-50-2 2.28 G MACs (conv. A)."""
    result = profiling.profile(models.build(name, (224, 224, 3), 1000))
    assert result.macs == macs
    # Stem, shortcuts and classifier are dense; every block conv is sparse.
    assert sum(p.class_name == "ExpanderConv2D" for p in result.layers) == (
        16 * 3 if name == "x_resnet50" else 16 * 2)


@pytest.mark.slow
def test_x_mobilenet_macs():
    """Spec 3.3: standard 0.5 net, G = 2/4/8/16 -> 85.3/53.2/37.1/29.1M."""
    macs = [profiling.profile(models.build(
        "x_mobilenet_v1_0.5", (224, 224, 3), 1000, density=1 / g)).macs
        for g in (2, 4, 8, 16)]
    assert macs == [85_271_808, 53_159_168, 37_102_848, 29_074_688]


@pytest.mark.slow
@pytest.mark.parametrize("name", ["x_resnet18", "x_mobilenet_v1_0.5"])
def test_x_imagenet_gathered_equals_masked(name):
    model = models.build(name, (64, 64, 3), 10)
    x = np.random.randn(2, 64, 64, 3).astype("float32")
    fast = layers.gathered_model(model)
    # As in test_x_densenet_gathered_equals_masked (_check_deployable).
    np.testing.assert_allclose(_numpy(fast(x, training=False)),
                               _numpy(model(x, training=False)),
                               rtol=1e-5, atol=1e-5)
    if name.startswith("x_mobilenet"):
        masks = [layer.get_mask() for layer in expander.expander_layers(fast)]
        assert len(masks) == 12
        # Input-regular: every input channel feeds C_out // 2 outputs.
        assert all((m.sum(1) == m.shape[1] // 2).all() for m in masks)


@pytest.mark.parametrize("kernel_size,chunks,groups", [(1, 8, 4), (3, 12, 8),
                                                       (1, 6, 24)])
def test_chunk_expander_gathers_slabs_exactly(kernel_size, chunks, groups):
    x = np.random.randn(2, 6, 6, 48).astype("float32")
    masked = layers.ExpanderConv2D(24, kernel_size, density=1 / 2,
                                   groups=groups, chunks=chunks, seed=4)
    expected = _numpy(masked(x))
    mask = masked.get_mask()
    np.testing.assert_array_equal(mask.sum(0), 24)
    assert _laplacian_connectivity(mask) > 1e-6
    gathered = masked.gathered(x.shape)
    assert gathered._chunk == 48 // chunks  # slabs, not channels
    testing.assert_float32_sums_agree(
        _numpy(gathered(x)), expected, testing.absolute_twin_output(
            masked, x), terms=kernel_size**2 * 48)
    with pytest.raises(ValueError, match="whole number of chunks"):
        expander.expander_mask(48, 24, 20, groups=4, chunks=8)


def test_chunk_x_densenet_from_method():
    config = xnet_config.get_config(
        "expander_groups=4,expander_chunks=8,expander_impl=gather")
    model = methods.get("xnet").build_model(config, (32, 32, 3), 10)
    result = profiling.profile(model)
    assert result.macs == 157_854_288  # same density as channel-level
    assert all(layer._chunk > 1
               for layer in expander.expander_layers(model))


# --- deployable forms and imported masks (issue 14) -------------------------

def _relative_error(actual, expected):
    expected = np.asarray(expected, "float64")
    return np.linalg.norm(actual - expected) / np.linalg.norm(expected)


def _tflite_ops(path):
    from ai_edge_litert import interpreter as litert

    runner = litert.Interpreter(
        model_path=path, experimental_op_resolver_type=(
            litert.OpResolverType.BUILTIN_WITHOUT_DEFAULT_DELEGATES))
    return {op["op_name"] for op in runner._get_ops_details()}


def _check_deployable(model, x):
    """Deployable == masked model in Keras, after .keras and after .tflite.

    Tolerance: rel <= 1e-5 on the output norm. The Keras forms run the same
    ops on the same weights (0 difference, asserted exactly when every layer
    stays masked). A grouped conv and the LiteRT kernels sum in another
    order: each dot product of n <= 2,400 terms then differs by about
    sqrt(n) u (u = 6e-8), ~3e-6, and the BN-normalised layers do not
    amplify it, so 1e-5 leaves room for ~40 layers of random-walk growth.
    """
    from keras_compact import export

    expected = _numpy(model(x, training=False))
    deployed, report = layers.deployable_model(model)
    for name, choice in report.items():
        # The selection's own rule: never a form costlier than masked.
        costs = choice["lane_macs"]
        assert costs[choice["form"]] <= costs["masked"], name
    actual = _numpy(deployed(x, training=False))
    if all(c["form"] == "masked" for c in report.values()):
        np.testing.assert_array_equal(actual, expected)
    assert _relative_error(actual, expected) <= 1e-5
    restored = testing.run_model_saving_test(deployed, x)
    assert _relative_error(_numpy(restored(x, training=False)),
                           expected) <= 1e-5
    with tempfile.TemporaryDirectory() as tmp:
        path = export.to_litert(restored, os.path.join(tmp, "m.tflite"))
        assert _relative_error(testing.run_litert(path, x), expected) <= 1e-5
        ops = _tflite_ops(path)
    # The rule's premise: no deployed form leaves a GATHER in the graph.
    assert "GATHER" not in ops, ops
    return report


def _one_layer_model(layer, shape):
    inputs = keras.Input(shape)
    return keras.Model(inputs, layer(inputs))


def _block_diagonal(c_in, c_out, groups):
    rows = np.arange(c_in)[:, None] * groups // c_in
    return (rows == np.arange(c_out)[None] * groups // c_out).astype(
        "float32")


def test_selection_picks_grouped_conv_only_when_cheaper():
    x = np.random.randn(2, 16, 16, 64).astype("float32")
    paper = layers.ExpanderConv2D(64, 3, density=1 / 8, seed=0, name="p")
    report = _check_deployable(_one_layer_model(paper, x.shape[1:]), x)
    assert report["p"]["form"] == "masked"
    assert report["p"]["lane_macs"]["gather"] is None
    # A graph of 8 contiguous groups is one grouped CONV_2D: 8 outputs per
    # group cost 16 lanes, so 1/4 of the dense conv's lane MACs.
    grouped = layers.ExpanderConv2D(64, 3, density=1 / 8, seed=0, name="g")
    model = _one_layer_model(grouped, x.shape[1:])
    grouped.set_mask(_block_diagonal(64, 64, 8))
    report = _check_deployable(model, x)
    costs = report["g"]["lane_macs"]
    assert report["g"]["form"] == "gather"
    assert costs["gather"] * 4 == costs["masked"]
    # 16 groups of one output: lane rounding makes it cost what the dense
    # 64->16 conv does, and a tie stays masked.
    narrow = layers.ExpanderConv2D(16, 3, density=1 / 16, seed=0, name="n")
    model = _one_layer_model(narrow, x.shape[1:])
    narrow.set_mask(_block_diagonal(64, 16, 16))
    report = _check_deployable(model, x)
    assert report["n"]["form"] == "masked"
    assert report["n"]["lane_macs"]["gather"] == report["n"]["lane_macs"][
        "masked"]


def test_x_densenet_deployable_equals_masked():
    model = _random_bn(models.build("x_densenet_bc_40_24",
                                               (32, 32, 3), 10))
    x = np.random.default_rng(1).normal(size=(2, 32, 32, 3)).astype(
        "float32")
    report = _check_deployable(model, x)
    assert len(report) == 36
    assert {c["form"] for c in report.values()} == {"masked"}


@pytest.mark.slow
@pytest.mark.ci_slow
@pytest.mark.parametrize("name,kwargs,shape", [
    ("x_vgg16", {}, (32, 32, 3)),
    ("x_mobilenet_v1_0.5", {"density": 1 / 4}, (64, 64, 3)),
])
def test_x_vgg_and_mobilenet_deployables_equal_masked(name, kwargs, shape):
    model = _random_bn(models.build(name, shape, 10, **kwargs))
    x = np.random.default_rng(1).normal(size=(2, *shape)).astype("float32")
    report = _check_deployable(model, x)
    assert len(report) == (11 if name == "x_vgg16" else 12)


def _official_head_mask(c_in, c_out, ratio, seed):
    """The official code's HEAD rule (spec 1.2 convention B), its layout.

    D = c_in // ES; C_in > C_out: each output picks D inputs, otherwise
    each input picks D outputs. Returned as the checkpoint stores it,
    `(C_out, C_in, 1, 1)`.
    """
    rng = np.random.default_rng(seed)
    degree = c_in // ratio
    mask = np.zeros((c_out, c_in), "float32")
    if c_in > c_out:
        for o in range(c_out):
            mask[o, rng.permutation(c_in)[:degree]] = 1
    else:
        for i in range(c_in):
            mask[rng.permutation(c_out)[:degree], i] = 1
    return mask[:, :, None, None]


@pytest.mark.parametrize("rule", ["out", "in", "official"])
@pytest.mark.parametrize("kernel_size", [1, 3])
def test_any_mask_converts_to_the_deployable_forms(rule, kernel_size):
    x = np.random.default_rng(2).normal(size=(2, 6, 6, 48)).astype(
        "float32")
    layer = layers.ExpanderConv2D(
        96, kernel_size, density=1 / 2, seed=3, name="x",
        regular_side="in" if rule == "in" else "out")
    model = _one_layer_model(layer, x.shape[1:])
    if rule == "official":
        mask = _official_head_mask(48, 96, 2, seed=5)
        layer.set_mask(expander.reference_mask(
            np.tile(mask, (1, 1, kernel_size, kernel_size))))
        np.testing.assert_array_equal(layer.get_mask().sum(1), 24)
    expected = _numpy(model(x))
    gathered = layers.gathered_model(model)
    assert _relative_error(_numpy(gathered(x)), expected) <= 1e-5
    # The reloaded gathered layer has the table of the mask, not the seed's.
    restored = testing.run_model_saving_test(gathered, x, atol=1e-5)
    np.testing.assert_array_equal(restored.get_layer("x").get_mask(),
                                  layer.get_mask())
    _check_deployable(model, x)


def test_imported_dense_mask_converts():
    x = np.random.default_rng(2).normal(size=(3, 40)).astype("float32")
    layer = layers.ExpanderDense(20, degree=10, seed=0, name="d")
    model = _one_layer_model(layer, x.shape[1:])
    # The reference's (out, in) layout, uneven in-degrees (padded slots).
    linear_mask = (np.random.default_rng(3).random((20, 40)) < 0.3).astype(
        "float32")
    layer.set_mask(expander.reference_mask(linear_mask))
    gathered = layers.gathered_model(model)
    # One dense layer, <= 40 products per output of ~1: two orders differ
    # by ~sqrt(40) u = 4e-7 (worst case 2 * 40 u = 5e-6 of sum|x w|).
    np.testing.assert_allclose(_numpy(gathered(x)), _numpy(model(x)),
                               rtol=1e-5, atol=1e-6)
    testing.run_model_saving_test(gathered, x, atol=1e-6)
    with pytest.raises(ValueError, match="must be 0/1 of shape"):
        layer.set_mask(linear_mask)
    with pytest.raises(ValueError, match="constant over"):
        expander.reference_mask(np.random.rand(4, 4, 3, 3) > 0.5)


@pytest.mark.slow
def test_xnet_run_reports_deploy_forms(tmp_path, caplog):
    import json
    import logging

    from keras_compact import training

    config = xnet_config.get_config("smoke,arch=x_vgg16")
    config.update(dataset="synthetic", workdir=str(tmp_path), verbose=0,
                  export="")
    with caplog.at_level(logging.INFO, logger="keras_compact"):
        training.run(config)
    with open(tmp_path / "metrics.json") as f:
        saved = json.load(f)
    assert saved["expander_deploy_counts"] == {"masked": 11}
    forms = saved["expander_deploy_forms"]
    assert sorted(forms) == sorted([f"conv{i}" for i in range(4, 14)]
                                   + ["fc1"])
    assert forms["fc1"]["lane_macs"]["masked"] == 512 * 512
    assert "xnet: conv4 deploys masked" in caplog.text


def test_shuffle_graph_is_regular_and_connects_in_two_layers():
    first = expander.expander_mask(32, 32, 8, "shuffle", groups=4)
    second = expander.expander_mask(32, 32, 8, "shuffle", groups=4)
    np.testing.assert_array_equal(first.sum(0), 8)
    np.testing.assert_array_equal(first.sum(1), 8)
    assert expander.singular_value_ratio(first) == pytest.approx(1.0)
    assert (first @ second > 0).all()  # every input reaches every output
    with pytest.raises(ValueError, match="shuffle graph needs groups"):
        expander.expander_mask(32, 32, 8, "shuffle")


def test_shuffle_layer_deploys_as_transpose_and_grouped_conv():
    x = np.random.default_rng(4).normal(size=(2, 14, 14, 64)).astype(
        "float32")
    layer = layers.ExpanderConv2D(128, 1, regular_side="shuffle", groups=4,
                                  seed=0, name="s")
    model = _one_layer_model(layer, x.shape[1:])
    report = _check_deployable(model, x)
    assert report["s"]["form"] == "gather"
    assert "shuffle" in report["s"]["reason"]
    deployed, _ = layers.deployable_model(model)
    assert deployed.get_layer("s")._shuffle


@pytest.mark.slow
@pytest.mark.ci_slow
def test_x_mobilenet_shuffle_variant_deploys_without_gather():
    model = _random_bn(models.build(
        "x_mobilenet_v1_0.5_shuffle", (64, 64, 3), 10, density=1 / 4))
    x = np.random.default_rng(1).normal(size=(2, 64, 64, 3)).astype(
        "float32")
    report = _check_deployable(model, x)
    assert {c["form"] for c in report.values()} == {"gather"}
    assert profiling.profile(model).macs == profiling.profile(
        models.build("x_mobilenet_v1_0.5", (64, 64, 3), 10,
                     density=1 / 4)).macs
