"""APS on ImageNet shapes: ResNet-18 / MobileNetV2 supernets and decoders."""

import math
import types

import keras
import numpy as np
import pytest
import tensorflow as tf

from configs import aps as aps_config
from configs import imagenet as imagenet_config
from keras_compact import layers
from keras_compact import models
from keras_compact import profiling
from keras_compact.methods import aps
from tests import test_aps
from tests import testing

# Width-reduced supernets (same structure, candidates 1/8 of the paper's)
# keep the default tests fast; the full-width ones are in the slow tests.
SMALL_RESNET = dict(base_widths=(4, 6, 8, 10), max_width=16)
SMALL_MBV2 = dict(base_widths=(4, 6, 8, 10), max_width=16)
BIAS_ADDS = 1000  # the reference counter adds the FC bias (spec 6)


@pytest.fixture(scope="module")
def small_resnet():
    return aps.APSResNet(num_classes=10, input_shape=(32, 32, 3),
                         **SMALL_RESNET)


@pytest.fixture(scope="module")
def small_mbv2():
    return aps.APSMobileNetV2(num_classes=10, input_shape=(32, 32, 3),
                              **SMALL_MBV2)


# -- Decoders and the shipped configurations (spec 4.1, 4.3) ---------------


@pytest.mark.parametrize("name, decoder, macs, params, spec", [
    # spec 4.3 conv+fc MACs / params (reference counter = ours + 1000).
    ("resnet18_1.83G", aps.decode_resnet18, 1_833_669_632, 14_109_848,
     (1833.7e6, 14.11e6)),
    ("resnet18_1.05G", aps.decode_resnet18, 1_055_138_816,
     8_029_064, (1055.1e6, 8.03e6)),
    ("mobilenet_v2_314M", aps.decode_mobilenet_v2, 314_004_400, 4_530_402,
     (314.0e6, 4.53e6)),
    ("mobilenet_v2_156M", aps.decode_mobilenet_v2, 156_660_176, 2_876_652,
     (156.7e6, 2.88e6)),
])
def test_shipped_imagenet_configs_match_spec(name, decoder, macs, params,
                                             spec):
    counts = profiling.profile(decoder(aps.SEARCHED_WIDTHS[name]))
    assert (counts.macs, counts.params) == (macs, params)
    assert round(counts.macs + BIAS_ADDS, -5) == spec[0]
    assert round(counts.params, -4) == spec[1]


def test_reference_nets_match_spec():
    standard = [64] * 5 + [128] * 4 + [256] * 4 + [512] * 4
    decoded = profiling.profile(aps.decode_resnet18(standard))
    torchvision = profiling.profile(models.build("resnet18", (224, 224, 3),
                                                 1000))
    # Same MACs; the decoder's stride-2 shortcuts have no BN (spec 4.1).
    assert decoded.macs == torchvision.macs == 1_814_073_344  # 1814.1M
    assert (decoded.params, torchvision.params) == (11_687_720, 11_689_512)
    mbv2 = profiling.profile(models.build("mobilenet_v2", (224, 224, 3),
                                          1000))
    assert (mbv2.macs, mbv2.params) == (300_774_272, 3_504_872)  # 300.8M


def test_decoders_reject_bad_widths():
    with pytest.raises(ValueError, match="17 positive values"):
        aps.decode_resnet18([64] * 19)
    widths = list(aps.SEARCHED_WIDTHS["mobilenet_v2_314M"])
    widths[3] += 1  # block 2's pw != dw
    with pytest.raises(ValueError, match="pw = dw"):
        aps.decode_mobilenet_v2(widths)


# -- Candidate sets, decisions, tables (spec 1.1, 6) ------------------------


def test_mobilenet_v2_candidates_follow_the_reference():
    stem, stages, last = aps.mobilenet_v2_candidates()
    assert stem == ((16, 24, 32, 40), 64)
    assert stages == [((8, 12, 16, 20), 32), ((12, 18, 24, 30), 48),
                      ((16, 24, 32, 40), 64), ((32, 48, 64, 80), 128),
                      ((48, 72, 96, 120), 192), ((80, 120, 160, 200), 320),
                      ((160, 240, 320, 400), 640)]
    assert last == ((640, 960, 1280, 1600), 2560)


def test_resnet_decisions_are_blockwise(small_resnet):
    net = small_resnet
    assert net.num_decisions == 13
    # stem, then per stage (mid 1, shared output, mid 2); 14 = the last.
    assert net.layout.tolist() == [0, 1, 2, 3, 2, 4, 5, 6, 5, 7, 8, 9, 8,
                                   10, 11, 12, 14]
    arch = np.arange(13) % 4
    widths = net.widths(arch)
    assert len(widths) == 17 and widths[-1] == 80  # forced largest
    assert widths[2] == widths[4]  # stage-1 blocks share their output


def test_mobilenet_v2_decisions_are_blockwise(small_mbv2):
    net = small_mbv2
    assert net.num_decisions == 24 and net.table.shape == (53, 4, 4)
    widths = net.widths(np.full(24, 3))
    assert len(widths) == 52
    # Decision 0 sets the stem and block 1; stage outputs are shared.
    assert widths[0] == widths[1] == 2 * widths[2]
    assert widths[5] == widths[8] and widths[3] == widths[4]
    aps.decode_mobilenet_v2(widths, (32, 32, 3), 10)  # a valid cfg


def _main_path_macs(model):
    """Decoded-net MACs of the main path: no shortcuts, no classifier."""
    return sum(p.macs for p in profiling.profile(model).layers
               if "shortcut" not in p.name and p.name != "classifier")


@pytest.mark.parametrize("kind", ["resnet", "mbv2"])
def test_controller_samples_archs_the_table_counts(kind, small_resnet,
                                                   small_mbv2):
    net = small_resnet if kind == "resnet" else small_mbv2
    controller = aps.ChannelController(net.num_decisions, 4, net.table,
                                       1e9, layout=net.layout)
    controller.build()
    # Every table row is counted once, as soon as its decisions are known.
    rows = sorted(r for step in controller._rows_at for r in step)
    assert rows == list(range(len(net.layout)))
    _, _, entropy, _ = controller.sample(uniform=True)
    # As for CIFAR (test_aps.py): a few u per float32 log-softmax term.
    np.testing.assert_allclose(float(entropy),
                               net.num_decisions * math.log(4), rtol=1e-5)
    for _ in range(3):
        arch = controller.sample()[0].numpy()
        macs = net.macs(arch)
        np.testing.assert_allclose(float(net.macs(tf.constant(arch))),
                                   macs, rtol=1e-6)
        # The budget feature of the last step saw the whole table.
        actions = [tf.constant([a]) for a in arch]
        partial = sum(np.sum(controller._step_macs(
            t, actions, lambda v: tf.fill([1], v))) for t in range(len(arch)))
        np.testing.assert_allclose(partial, macs, rtol=1e-6)
        model = (aps.decode_resnet18 if kind == "resnet"
                 else aps.decode_mobilenet_v2)(net.widths(arch), (32, 32, 3),
                                               10)
        expected = _main_path_macs(model)
        if kind == "mbv2":  # its table has the classifier + bias adds
            expected += (net.widths(arch)[-1] + 1) * 10
        assert macs == expected


# -- Layers -----------------------------------------------------------------


def test_ordinal_depthwise_slices_the_meta_kernel():
    dw = layers.APSDepthwiseConv2D((4, 8, 12), strides=2,
                                   projection_noise=0.0)
    x = np.random.normal(size=(2, 9, 9, 12)).astype("float32")
    x[..., 8:] = 0.0
    y = keras.ops.convert_to_numpy(dw(x, choice=1))
    w = keras.ops.convert_to_numpy(dw.kernel)
    np.testing.assert_array_equal(dw.candidate_kernel(1), w[:, :, :8])
    plain = keras.ops.depthwise_conv(
        np.pad(x[..., :8], [(0, 0), (1, 1), (1, 1), (0, 0)]), w[:, :, :8],
        strides=2)
    magnitude = keras.ops.depthwise_conv(
        np.pad(np.abs(x[..., :8]), [(0, 0), (1, 1), (1, 1), (0, 0)]),
        np.abs(w[:, :, :8]), strides=2)
    testing.assert_float32_sums_agree(y[..., :8], plain, magnitude,
                                      terms=3 * 3)
    assert np.all(y[..., 8:] == 0.0)


# Weights (trainable, non-trainable): depthwise meta-kernel and P; three
# convs + shortcut, four BNs' statistics; two convs + shortcut, three BNs.
@pytest.mark.parametrize("cls, kwargs, shape, out, weights", [
    (layers.APSDepthwiseConv2D, {"candidates": (4, 8), "strides": 2},
     (2, 8, 8, 8), (2, 4, 4, 8), (2, 0)),
    (layers.APSInvertedResidual, {"candidates_out": (4, 8),
                                  "candidates_in": (4, 8),
                                  "expand_ratio": 3, "residual": True},
     (2, 8, 8, 8), (2, 8, 8, 8), (9, 8)),
    (layers.APSBasicBlock, {"candidates": (8, 12), "candidates_in": (4, 6),
                            "strides": 2, "meta_width": 16,
                            "meta_width_in": 8}, (2, 8, 8, 6), (2, 4, 4, 12),
     (7, 6)),
])
def test_layer_contract(cls, kwargs, shape, out, weights):
    testing.run_layer_test(cls, kwargs, shape, out, fit=False,
                           expected_num_trainable_weights=weights[0],
                           expected_num_non_trainable_weights=weights[1])


# -- Supernet path == decoded plain net (float32) ---------------------------


@pytest.mark.parametrize("kind", ["resnet", "mbv2"])
def test_supernet_path_equals_extracted_plain_network(kind, small_resnet,
                                                      small_mbv2):
    net = small_resnet if kind == "resnet" else small_mbv2
    x = np.random.default_rng(1).normal(size=(8, 32, 32, 3)).astype(
        "float32")
    rng = np.random.default_rng(0)
    archs = [rng.integers(0, 4, net.num_decisions).astype("int32")
             for _ in range(2)]
    for arch in archs:  # non-trivial running statistics for these pairs
        net((x, arch), training=True)
    for arch in archs:
        plain = aps.extract_path(net, arch)
        expected = keras.ops.convert_to_numpy(net((x, arch), training=False))
        assert expected.std() > 1e-3  # not a trivially flat output
        np.testing.assert_allclose(plain(x, training=False), expected,
                                   atol=1e-4, rtol=1e-4)
        if kind == "mbv2":  # the residual blocks carry their shortcut
            assert plain.get_layer("block3_shortcut_conv") is not None


def test_projection_task_gradient_is_zero_in_the_inverted_residual():
    test_aps.assert_task_gradient_skips_projections(
        layers.APSInvertedResidual((4, 8), (4, 8), 3, residual=True),
        np.random.normal(size=(4, 8, 8, 8)).astype("float32"), [1, 0, 1],
        lambda block: block.depthwise.kernel)


# -- Search at ImageNet shape: one trace per phase --------------------------


def _train_batches(count=8, batch=4, shape=(64, 64, 3)):
    rng = np.random.default_rng(0)
    x = rng.normal(size=(count,) + shape).astype("float32")
    y = rng.integers(0, 10, count).astype("int32")
    return tf.data.Dataset.from_tensor_slices((x, y)).batch(batch)


def _imagenet_search(net, budget_share=0.7, projection_interval=2):
    budget = budget_share * net.macs(np.full(net.num_decisions, 3))
    model = aps.ChannelSearchModel(net, budget, entropy_coeff=0.5,
                                   reward_source="train",
                                   projection_interval=projection_interval)
    model.compile(keras.optimizers.SGD(0.1, momentum=0.9),
                  keras.optimizers.SGD(1e-3, momentum=0.9),
                  keras.optimizers.Adam(3e-3, beta_1=0.5))
    return model


def test_imagenet_search_traces_once_per_phase(tmp_path):
    # One block per stage keeps the trace short; same stem, stages, ties.
    net = aps.APSResNet((1, 1, 1, 1), num_classes=10,
                        input_shape=(64, 64, 3), **SMALL_RESNET)
    model = _imagenet_search(net)
    before = [v.numpy() for v in net.projection_variables]
    history = aps.run_search(model, _train_batches(count=12), epochs=2,
                             warmup_epochs=1, workdir=str(tmp_path),
                             verbose=0)
    assert model.traces == 2  # one warm-up graph, one search graph
    assert float(model.baseline) > 0.0  # the controller learned
    # 3 search steps, a projection step at steps 0 and 2: 2 updates.
    assert int(model.search_steps) == 3
    assert int(model.projection_optimizer.iterations) == 2
    assert any(np.any(v.numpy() != b)
               for v, b in zip(net.projection_variables, before))
    assert history["entropy"][-1] > 0.0
    result = aps.select_architecture(model, _train_batches(), 2)
    assert result["macs"] <= model.max_macs
    assert len(result["widths"]) == 9


def test_reward_source_is_checked(small_resnet):
    with pytest.raises(ValueError, match="reward_source"):
        aps.ChannelSearchModel(small_resnet, 1e9, reward_source="test")


# -- Method and configs -----------------------------------------------------


@pytest.mark.parametrize("arch, widths, params", [
    ("resnet18", "resnet18_1.05G", 8_029_064),
    ("mobilenet_v2", "mobilenet_v2_156M", 2_876_652),
])
def test_train_phase_decodes_imagenet_widths(arch, widths, params):
    config = imagenet_config.get_config(
        f"method=aps,arch={arch},phase=train,widths={widths}")
    context = types.SimpleNamespace(config=config, workdir="unused")
    method = aps.APS()
    assert method.prepare(context) is True
    model = method.build_model(config, (224, 224, 3), 1000)
    assert profiling.profile(model).params == params
    config.arch = "resnet20"
    with pytest.raises(ValueError, match=f"arch={arch}"):
        method.build_model(config, (224, 224, 3), 1000)


def test_imagenet_recipe_of_aps():
    config = imagenet_config.get_config("method=aps")
    assert config.arch == "resnet18" and config.projection_noise == 1e-2
    assert 0.0 < config.validation_split < 0.1  # selection data, held out
    assert aps.family(config.arch).reward_source == "train"
    assert aps.family("mobilenet_v2").budget("mobilenet_v2", None) == 3.2e8
    assert aps_config.get_config().candidates == ""  # CIFAR: 4..64
    with pytest.raises(ValueError, match="mobilenet_v2"):
        aps.family("vgg16")


# -- Slow: the full-width supernets at 224x224 -------------------------------


@pytest.mark.slow
def test_full_resnet18_supernet_at_224():
    net = aps.APSResNet()  # 1.2 GB of weights
    assert net.num_decisions == 13 and net.table.shape == (17, 4, 4)
    assert net.table[0, 0, 0] == 49 * 3 * 32 * 112 * 112
    assert net.table[1, 3, 3] == 9 * 80 * 80 * 56 * 56
    assert net.table[5, 0, 0] == 9 * 32 * 64 * 28 * 28  # stride 2
    standard = np.full(13, 2)  # 1.0x widths, last block output 640
    assert net.widths(standard)[:5] == [64] * 5
    assert net.macs(standard) == 1_823_195_136
    model = _imagenet_search(net, 1.0)
    x = np.random.normal(size=(2, 224, 224, 3)).astype("float32")
    data = tf.data.Dataset.from_tensor_slices(
        (x, np.zeros(2, "int32"))).batch(2)
    model.start_search()
    model.fit(data, epochs=1, shuffle=False, verbose=0)
    assert model.traces == 1


@pytest.mark.slow
def test_full_mobilenet_v2_supernet_table():
    net = aps.APSMobileNetV2()  # 3.4 GB of weights
    assert net.num_decisions == 24 and net.table.shape == (53, 4, 4)
    assert net.macs(np.full(24, 2)) == 235_333_224
    decoded = aps.decode_mobilenet_v2(net.widths(np.full(24, 2)))
    assert net.macs(np.full(24, 2)) == _main_path_macs(decoded) + (
        1280 + 1) * 1000


@pytest.mark.slow
def test_imagenet_trainer_searches_then_trains(tmp_path):
    """`trainers.imagenet --method=aps --smoke` end to end on tiny shards."""
    import json

    from keras_compact import training
    from keras_compact.data import imagenet

    rng = np.random.default_rng(0)
    x = rng.integers(0, 255, (64, 80, 80, 3)).astype(np.uint8)
    y = rng.integers(0, 10, 64)
    data_dir = tmp_path / "shards"
    imagenet.write_shards(x, y, str(data_dir), "train", 4)
    imagenet.write_shards(x[:16], y[:16], str(data_dir), "validation", 2)
    config = imagenet_config.get_config("method=aps,smoke")
    config.update(data_dir=str(data_dir), workdir=str(tmp_path / "run"),
                  num_classes=10, batch_size=8, verbose=0)
    metrics = training.run(config)
    found = json.loads((tmp_path / "run" / "aps_widths.json").read_text())
    assert len(found["widths"]) == 17 and found["widths"][-1] == 80
    assert metrics["params"] == found["params"]
    assert (tmp_path / "run" / "aps_sharing_level.json").exists()
