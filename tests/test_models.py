"""The model zoo against the paper: parameter and FLOP tables, shapes, formats, bad input, learning."""
import functools
import re

import keras
import numpy as np
import pytest

import tensorflow as tf

import bl_net_tf
from bl_net_tf import paper_tables
from bl_net_tf.models import blocks, registry
from bl_net_tf.models.factory import validate_model_options
from bl_net_tf.models.families import FAMILIES
from bl_net_tf.models.layers import AvgPool3x3S2, LayerContext, ResizeLike
from bl_net_tf.profile import count_macs
from conftest import (assert_channels_first_matches_last, assert_equals_paper, auto_named_layers, output_shape,
                      paper_model, row_id)


@pytest.mark.parametrize("row", paper_tables.rows("1/11", "2", "6"), ids=row_id)
def test_params_and_flops_equal_the_papers_tables_1_2_and_6(row):
    """Our params and GFLOPs equal every row of Tables 1, 11, 2 and 6: to the printed digit (the bL
    rows, as the official release reproduces them) or within the tolerance the row states in
    bl_net_tf/paper_tables.py (the baselines: 1%)."""
    assert_equals_paper(row, paper_model(row))
    keras.backend.clear_session()


def test_fc_is_counted_when_asked():
    model = bl_net_tf.create_model("resnet50", num_classes=10, input_shape=(64, 64, 3), data_format="channels_last")
    assert count_macs(model) - count_macs(model, include_fc=False) == 2048 * 10


def assert_shortcuts_as_the_paper_trained(model, spec) -> None:
    """The plain baselines (lowres included) were trained with Tensorpack (Appendix A.1), whose
    ``resnet_shortcut`` (examples/ResNet/resnet_model.py) is a 1x1 conv + BN that carries the
    block's stride: no average pooling in any shortcut, one stride-1 projection (stage2's widening)
    and one strided per later stage. The bL models keep the official release's ``downsample``
    (models/blresnet.py: ``AvgPool2d(3, 2, padding=1)``, then a stride-1 1x1 conv + BN), which the
    official weights need; a ResNet-D-like pooled shortcut on the baselines would narrow the gap
    the paper reports."""
    convs = sorted(layer.strides for layer in model.layers if layer.name.endswith("_shortcut_conv"))
    if spec.big_little:
        assert any(layer.name.endswith("_shortcut_pool") for layer in model.layers)
        assert set(convs) == {(1, 1)}
    else:
        assert not any(isinstance(layer, AvgPool3x3S2) for layer in model.layers)
        assert convs == [(1, 1), (2, 2), (2, 2), (2, 2)]


@pytest.mark.parametrize("arch", bl_net_tf.list_models())
def test_every_arch_runs_forward_on_a_small_image(arch):
    model = bl_net_tf.create_model(arch, num_classes=7, input_shape=(64, 64, 3), data_format="channels_last")
    logits = model(np.random.default_rng(0).uniform(size=(2, 64, 64, 3)).astype("float32"), training=False)
    assert tuple(logits.shape) == (2, 7)
    assert np.all(np.isfinite(np.asarray(logits)))
    # Every layer has a meaningful name: no Keras counters such as conv2d_17.
    assert not auto_named_layers(model)
    spec = registry.get_spec(arch)
    if FAMILIES[spec.family].shortcuts:
        assert_shortcuts_as_the_paper_trained(model, spec)
    keras.backend.clear_session()


def test_shortcut_defaults_to_how_each_model_was_trained_and_can_be_chosen():
    """None resolves per arch (assert_shortcuts_as_the_paper_trained says why); either kind can be
    asked for, and names the model when it is not the arch's default."""
    for arch in ("resnet50", "resnet101", "resnet50-lowres", "resnext50-32x4d", "seresnext50-32x4d"):
        assert validate_model_options(arch).shortcut == "conv"
    for arch in ("bl-resnet50", "bl-resnext101", "bl-seresnext50"):
        assert validate_model_options(arch).shortcut == "avgpool"
    assert validate_model_options("bl-resnet22-speech").shortcut is None  # no bottleneck shortcut
    assert validate_model_options("resnet50", shortcut="avgpool").name == "resnet50_avgpool"
    assert validate_model_options("bl-resnet50", shortcut="conv").name == "bl_resnet50_a2_b4_conv"
    assert validate_model_options("bl-resnet50", shortcut="avgpool").name == "bl_resnet50_a2_b4"


@pytest.mark.parametrize("size", [7, 8])
def test_conv_shortcut_is_tensorpacks_strided_1x1_conv_and_bn(size):
    """Tensorpack's Conv2D('convshortcut', l, n_out, 1, strides=stride) pads "SAME": pixel 2i of the
    input feeds output pixel i, for odd and even sizes; then BN."""
    x = keras.Input((size, size, 8))
    model = keras.Model(x, blocks.shortcut(LayerContext(shortcut="conv"), x, 16, 2, name="b"))
    rng = np.random.default_rng(4)
    model.set_weights([rng.uniform(0.5, 1.5, w.shape).astype("float32") for w in model.weights])
    images = rng.normal(size=(2, size, size, 8)).astype("float32")
    kernel = model.get_layer("b_shortcut_conv").kernel
    bn = model.get_layer("b_shortcut_bn")
    conv = tf.nn.conv2d(images, kernel, strides=2, padding="SAME")
    expected = tf.nn.batch_normalization(conv, bn.moving_mean, bn.moving_variance, bn.beta, bn.gamma, bn.epsilon)
    np.testing.assert_allclose(model(images, training=False), expected, rtol=1e-5, atol=1e-5)


@pytest.mark.parametrize("arch", ["bl-resnet50", "bl-resnext50-32x4d"])
def test_224_forward_gives_1000_logits(arch):
    model = bl_net_tf.create_model(arch, data_format="channels_last")
    assert tuple(model(np.zeros((1, 224, 224, 3), "float32"), training=False).shape) == (1, 1000)
    keras.backend.clear_session()


def test_bl_resnet50_structure_follows_table_4():
    model = bl_net_tf.create_model("bl-resnet50", input_shape=(224, 224, 3), data_format="channels_last")
    shape = functools.partial(output_shape, model)
    assert shape("stem_bn") == (112, 112, 64)
    assert shape("stage1_fusion_bn") == (56, 56, 64)
    # Stage 2: big 2 blocks at 28x28, little 1 block of 128 at 56x56, fusion to 28x28.
    assert shape("stage2_big_block2_add") == (28, 28, 256)
    assert shape("stage2_little_block1_out") == (56, 56, 128)
    assert shape("stage2_merge_relu") == (56, 56, 256)
    assert shape("stage2_fusion_block1_out") == (28, 28, 256)
    assert shape("stage3_big_block3_add") == (14, 14, 512)
    assert shape("stage4_big_block5_add") == (7, 7, 1024)
    assert shape("stage4_fusion_block1_out") == (14, 14, 1024)
    assert shape("stage5_block3_out") == (7, 7, 2048)
    names = {l.name for l in model.layers}
    assert "stage2_big_block3_conv1" not in names and "stage2_little_block2_conv1" not in names
    # No ReLU at the end of the big branch: it is added to the little branch first.
    assert "stage2_big_block2_out" not in names and "stage2_big_block1_out" in names
    # The last BN of every bottleneck starts at zero; BN uses tensorpack's momentum and epsilon.
    bn3 = [layer for layer in model.layers if re.search(r"_block\d+_bn3$", layer.name)]
    assert len(bn3) == 4 + 5 + 7 + 3 and all(np.all(np.asarray(layer.gamma) == 0) for layer in bn3)
    assert np.all(np.asarray(model.get_layer("stage1_little_bn3").gamma) == 1)
    bn = model.get_layer("stem_bn")
    assert (bn.momentum, bn.epsilon) == (0.9, 1e-5)
    keras.backend.clear_session()


def test_resnext_little_branch_keeps_group_width():
    model = bl_net_tf.create_model("bl-resnext50-32x4d", input_shape=(64, 64, 3), data_format="channels_last")
    big, little = model.get_layer("stage2_big_block1_conv2"), model.get_layer("stage2_little_block1_conv2")
    assert (big.groups, big.filters) == (32, 128)  # 32 groups of 4 channels
    assert (little.groups, little.filters) == (16, 64)  # cardinality/α groups, same 4-channel group width
    keras.utils.set_random_seed(5)
    se = bl_net_tf.create_model("bl-seresnext50-32x4d", input_shape=(64, 64, 3), data_format="channels_last")
    reduce = se.get_layer("stage2_big_block1_se_reduce")
    assert reduce.use_bias and reduce.filters == 256 // 16
    # Initialised as Tensorpack's SE (se_resnet_bottleneck's FullyConnected fc1/fc2): He-normal over
    # fan-in, truncated at 2 sigma, biases zero (the official blseresnext.py: zero biases too).
    expand = se.get_layer("stage2_big_block1_se_expand")
    kernel = np.asarray(expand.kernel)  # 16 -> 256: He's sigma sqrt(2 / 16); Glorot's would be 4x smaller
    assert abs(kernel.std() / np.sqrt(2 / 16) - 1) < 0.05
    assert np.abs(kernel).max() <= 2 * np.sqrt(2 / 16) / 0.87962566 + 1e-6  # truncated
    assert not np.any(np.asarray(expand.bias)) and not np.any(np.asarray(reduce.bias))
    keras.backend.clear_session()


def test_channels_first_and_last_agree_with_shared_weights():
    kwargs = dict(num_classes=10, input_shape=(64, 96, 3))
    last = bl_net_tf.create_model("bl-seresnext50-32x4d", data_format="channels_last", **kwargs)
    first = bl_net_tf.create_model("bl-seresnext50-32x4d", data_format="channels_first", **kwargs)
    images = np.random.default_rng(1).uniform(-1, 1, size=(2, 64, 96, 3)).astype("float32")
    assert_channels_first_matches_last(last, first, images)
    keras.backend.clear_session()


def test_include_preprocessing_normalises_uint8_inside_the_graph():
    kwargs = dict(num_classes=5, input_shape=(64, 64, 3), data_format="channels_last")
    raw = bl_net_tf.create_model("bl-resnet50", **kwargs)
    pre = bl_net_tf.create_model("bl-resnet50", include_preprocessing=True, **kwargs)
    pre.set_weights(raw.get_weights())
    images = np.random.default_rng(2).integers(0, 256, size=(2, 64, 64, 3), dtype=np.uint8)
    mean = np.array([0.485, 0.456, 0.406]) * 255
    std = np.array([0.229, 0.224, 0.225]) * 255
    expected = raw(((images - mean) / std).astype("float32"), training=False)
    np.testing.assert_allclose(pre(images, training=False), expected, rtol=1e-4, atol=1e-5)
    keras.backend.clear_session()


@pytest.mark.parametrize("in_size,out_size", [(4, 8), (4, 7), (3, 7)])
def test_nearest_upsampling_matches_pytorch_interpolate(in_size, out_size):
    x = np.arange(in_size * in_size, dtype="float32").reshape(1, in_size, in_size, 1)
    like = np.zeros((1, out_size, out_size, 1), "float32")
    y = np.asarray(ResizeLike("nearest")([x, like]))[0, :, :, 0]
    # F.interpolate(mode="nearest") reads source index floor(i * in / out).
    src = np.floor(np.arange(out_size) * in_size / out_size).astype(int)
    np.testing.assert_array_equal(y, x[0, :, :, 0][np.ix_(src, src)])


def test_bilinear_upsampling_is_the_default_and_keeps_shapes():
    model = bl_net_tf.create_model("bl-resnet50", input_shape=(65, 65, 3), data_format="channels_last")
    layer = model.get_layer("stage2_big_upsample")
    assert layer.method == "bilinear"
    assert tuple(layer.output.shape[1:3]) == tuple(model.get_layer("stage2_little_expand_bn").output.shape[1:3])
    assert tuple(model(np.zeros((1, 65, 65, 3), "float32"), training=False).shape) == (1, 1000)
    keras.backend.clear_session()


def test_bl_resnext101_alias_takes_cardinality_and_base_width():
    default = bl_net_tf.create_model("bl-resnext101", input_shape=(64, 64, 3), data_format="channels_last")
    assert default.name == "bl_resnext101_32x4d_a2_b4"
    wide = bl_net_tf.create_model("bl-resnext101", cardinality=64, base_width=4, input_shape=(64, 64, 3),
                                  data_format="channels_last")
    assert wide.name == "bl_resnext101_64x4d_a2_b4"
    assert wide.get_layer("stage2_big_block1_conv2").groups == 64
    keras.backend.clear_session()


@pytest.mark.parametrize("kwargs,message", [
    (dict(arch="bl-resnet51"), "unknown arch 'bl-resnet51'; allowed: "),
    (dict(arch="bl-resnet50", alpha=0), "alpha must be an integer >= 1, got 0"),
    (dict(arch="bl-resnet50", alpha=1.5), "alpha must be an integer >= 1, got 1.5"),
    (dict(arch="bl-resnet50", beta=0), "beta must be an integer >= 1, got 0"),
    (dict(arch="bl-resnet50", alpha=3), "alpha must divide the 64 stem channels"),
    (dict(arch="bl-resnext50", cardinality=6, alpha=4), "cardinality 6 must be divisible by alpha 4"),
    (dict(arch="bl-resnet50", cardinality=32), "cardinality/base_width apply to ResNeXt"),
    (dict(arch="bl-resnet50", input_shape=(16, 224, 3)), "the minimum is 32x32"),
    (dict(arch="bl-resnet50", merge="mul"), "unknown merge 'mul' for bl-resnet50; allowed: add, concat"),
    (dict(arch="bl-resnet50", upsample="cubic"), "unknown upsample 'cubic'; allowed: bilinear, nearest"),
    (dict(arch="bl-resnet50", data_format="NCHW"), "unknown data_format 'NCHW'; allowed: channels_first"),
    (dict(arch="resnet50", shortcut="pool"), "unknown shortcut 'pool'; allowed: conv, avgpool or None"),
    (dict(arch="bl-resnet22-speech", shortcut="conv"), "shortcut applies to the ResNet/ResNeXt/SE-ResNeXt"),
])
def test_bad_input_says_what_is_wrong_and_what_is_allowed(kwargs, message):
    # validate_model_options builds nothing: every error create_model raises comes from it, up front.
    with pytest.raises(ValueError, match=re.escape(message)):
        validate_model_options(**kwargs)
    with pytest.raises(ValueError, match=re.escape(message)) as error:
        bl_net_tf.create_model(**kwargs)
    assert "\n" not in str(error.value)
    if kwargs["arch"] == "bl-resnet51":
        assert all(name in str(error.value) for name in bl_net_tf.list_models())


def test_validation_resolves_the_request_and_names_unknown_options():
    options = validate_model_options("bl-resnext101", cardinality=64, alpha=4, beta=2)
    assert (options.spec.name, options.alpha, options.beta, options.num_classes, options.merges) == (
        "bl-resnext101-64x4d", 4, 2, 1000, 4)
    assert options.input_shape == (224, 224, 3) and options.data_format is None  # resolved when built
    assert validate_model_options("bl-resnet22-speech").num_classes == 32000
    with pytest.raises(ValueError, match=r"^unknown option 'alhpa'; allowed: alpha, beta, num_classes, "):
        validate_model_options("bl-resnet50", alhpa=2)


def test_a_few_training_steps_lower_the_loss():
    keras.utils.set_random_seed(0)
    model = bl_net_tf.create_model("bl-resnet50", num_classes=4, input_shape=(32, 32, 3), data_format="channels_last")
    rng = np.random.default_rng(3)
    x = rng.normal(size=(16, 32, 32, 3)).astype("float32")
    y = np.arange(16) % 4
    model.compile(optimizer=keras.optimizers.SGD(0.05, momentum=0.9, nesterov=True),
                  loss=keras.losses.SparseCategoricalCrossentropy(from_logits=True))
    history = model.fit(x, y, batch_size=16, epochs=12, verbose=0).history["loss"]
    assert history[-1] < 0.5 * history[0]
    keras.backend.clear_session()
