"""ShuffleNetV2 and bL-ShuffleNetV2 against Table 9 (Appendix A.5), and their building blocks."""
import functools
import re

import keras
import numpy as np
import pytest

import bl_net_tf
from bl_net_tf import paper_tables
from bl_net_tf.models.factory import validate_model_options
from bl_net_tf.models.shufflenet import ChannelShuffle
from bl_net_tf.profile import count_macs
from conftest import (assert_channels_first_matches_last, assert_equals_paper, auto_named_layers, output_shape,
                      paper_model)

# Table 9 as bl_net_tf/paper_tables.py holds it: baselines at 224, bL (α=2, β=2) at 256, MFLOPs with the FC.
TABLE9 = {row.arch: row for row in paper_tables.rows("9")}


@pytest.fixture(scope="module")
def models():
    """Every Table 9 model, each built once; cleared at the end of the module."""
    yield {arch: paper_model(row) for arch, row in TABLE9.items()}
    keras.backend.clear_session()


@pytest.mark.parametrize("arch", TABLE9)
def test_params_and_flops_equal_table9(models, arch):
    """Our params and MFLOPs equal each Table 9 row within the 3% its row states (bL 1.5x's params:
    what the 1x and 2x rows imply, see paper_tables.expected_mparams)."""
    assert_equals_paper(TABLE9[arch], models[arch])


def test_bl_at_256_costs_about_the_baseline_at_224(models):
    for width in ("1.0x", "1.5x", "2.0x"):
        ratio = count_macs(models[f"bl-shufflenetv2-{width}"]) / count_macs(models[f"shufflenetv2-{width}"])
        assert 0.97 < ratio < 1.03


@pytest.fixture(scope="module")
def bl_model():
    model = bl_net_tf.create_model("bl-shufflenetv2", alpha=2, beta=2, num_classes=10, input_shape=(256, 256, 3),
                                   data_format="channels_last")
    yield model
    keras.backend.clear_session()


def test_bl_structure(bl_model):
    shape = functools.partial(output_shape, bl_model)
    names = {layer.name for layer in bl_model.layers}
    assert shape("stage1_pool") == (64, 64, 24)
    # Stage 2: the original 4 units on the input pooled to 32x32 (so at 16x16), and ceil(4/2) = 2
    # units 116/2 wide at the stage's 32x32; stage 3 likewise with 8 and 4 units.
    assert shape("stage2_big_pool") == (32, 32, 24)
    assert shape("stage2_big_block4_shuffle") == (16, 16, 116)
    assert shape("stage2_little_block2_shuffle") == (32, 32, 58)
    assert "stage2_little_block3_shuffle" not in names
    assert shape("stage2_merge_relu") == (32, 32, 116)
    assert shape("stage3_big_block8_shuffle") == (8, 8, 232)
    assert shape("stage3_little_block4_shuffle") == (16, 16, 116)
    assert shape("stage3_merge_relu") == (16, 16, 232)
    # Stage 4 stays plain, as bL-ResNet's last stage.
    assert shape("stage4_block4_shuffle") == (8, 8, 464) and "stage4_big_pool" not in names
    assert shape("head_bn") == (8, 8, 1024)
    assert bl_model.get_layer("stage2_big_upsample").method == "bilinear"


def test_bl_forward_and_every_layer_named(bl_model):
    logits = bl_model(np.random.default_rng(0).uniform(size=(2, 256, 256, 3)).astype("float32"), training=False)
    assert tuple(logits.shape) == (2, 10) and np.all(np.isfinite(np.asarray(logits)))
    assert not auto_named_layers(bl_model)


def test_channel_shuffle_interleaves_the_two_halves():
    x = np.arange(8, dtype="float32").reshape(1, 1, 1, 8)
    np.testing.assert_array_equal(np.asarray(ChannelShuffle(2)(x)).ravel(), [0, 4, 1, 5, 2, 6, 3, 7])
    first = np.asarray(ChannelShuffle(2, "channels_first")(x.reshape(1, 8, 1, 1))).ravel()
    np.testing.assert_array_equal(first, [0, 4, 1, 5, 2, 6, 3, 7])


def test_channels_first_and_last_agree_with_shared_weights():
    kwargs = dict(num_classes=5, input_shape=(64, 96, 3))
    last = bl_net_tf.create_model("bl-shufflenetv2-1.5x", data_format="channels_last", **kwargs)
    first = bl_net_tf.create_model("bl-shufflenetv2-1.5x", data_format="channels_first", **kwargs)
    images = np.random.default_rng(1).uniform(-1, 1, size=(2, 64, 96, 3)).astype("float32")
    assert_channels_first_matches_last(last, first, images, scale=0.1)
    keras.backend.clear_session()


@pytest.mark.parametrize("arch,kwargs,message", [
    ("bl-shufflenetv2-1.0x", dict(alpha=4), "alpha must leave even Little-Branch widths for bl-shufflenetv2-1.0x "
                                           "(stage widths [116, 232]): allowed 1, 2, 29, 58, got 4"),
    ("bl-shufflenetv2", dict(merge="concat"), "unknown merge 'concat'"),
    ("shufflenetv2", dict(cardinality=8), "cardinality/base_width apply to ResNeXt"),
])
def test_bad_options_say_what_is_allowed(arch, kwargs, message):
    with pytest.raises(ValueError, match=re.escape(message)):
        bl_net_tf.create_model(arch, input_shape=(64, 64, 3), data_format="channels_last", **kwargs)


def test_every_alpha_the_error_allows_is_accepted():
    with pytest.raises(ValueError) as error:
        validate_model_options("bl-shufflenetv2-1.0x", alpha=4)
    allowed = re.search(r"allowed ([\d, ]+), got", str(error.value)).group(1)
    for alpha in map(int, allowed.split(", ")):
        assert validate_model_options("bl-shufflenetv2-1.0x", alpha=alpha).alpha == alpha
