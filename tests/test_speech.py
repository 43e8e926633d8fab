"""The speech acoustic models against the paper: Table 3's complexity, Table 12's shapes."""
import re

import keras
import numpy as np
import pytest

import bl_net_tf
from bl_net_tf import paper_tables
from conftest import (assert_channels_first_matches_last, assert_equals_paper, auto_named_layers, output_shape,
                      paper_model, random_weights)


def _label(row) -> str:
    """``resnet22``, ``pyr`` or ``a{alpha}b{beta}`` (+ ``cat`` for the concatenation row)."""
    if not row.arch.startswith("bl-"):
        return "resnet22"
    if "pyr" in row.arch:
        return "pyr"
    kwargs = row.kwargs
    return f"a{kwargs['alpha']}b{kwargs['beta']}" + ("cat" if kwargs.get("merge") == "concat" else "")


# Table 3 as bl_net_tf/paper_tables.py holds it (params read in units of 10^7, FLOPs with the output layer).
TABLE3 = {_label(row): row for row in paper_tables.rows("3")}


@pytest.fixture(scope="module")
def models():
    """Each Table 3 model, built once at the paper's input (64 mel bins x 49 frames x 3)."""
    yield {label: paper_model(row) for label, row in TABLE3.items()}
    keras.backend.clear_session()


@pytest.mark.parametrize("label", TABLE3)
def test_params_and_flops_equal_table3(models, label):
    """Our params and GFLOPs equal each Table 3 row within the 3% its row states."""
    assert_equals_paper(TABLE3[label], models[label])
    assert tuple(models[label].output.shape) == (None, 32000)  # 32k CD states by default


def test_resnet22_shapes_follow_appendix_b(models):
    m = models["resnet22"]
    assert output_shape(m, "stem_relu") == (32, 45, 64)
    # Three stages of three two-conv blocks and one of two: 12 convolutions, 45 -> 33 -> 21 -> 9 -> 1.
    assert [output_shape(m, f"stage{n}_block{b}_out") for n, b in ((1, 3), (2, 3), (3, 3), (4, 2))] == [
        (32, 33, 64), (16, 21, 128), (8, 9, 256), (4, 1, 512)]
    assert output_shape(m, "head_relu") == (1, 1, 512)


# Table 12's T = 49 -> 45 -> 35 -> 33 -> 23 -> 21 -> 11 -> 9 -> 1, stage by stage.
TABLE12_MERGED = [(32, 35, 64), (16, 23, 128), (8, 11, 256)]
TABLE12_TRANSITIONS = [(16, 33, 64), (8, 21, 128), (4, 9, 256)]


@pytest.mark.parametrize("label", ["a4b1", "a4b2", "a4b3", "a2b3", "a4b1cat", "pyr"])
def test_bl_shapes_follow_table_12(models, label):
    m = models[label]
    merged = "fuse_conv_relu" if label.endswith("cat") else "merge_relu"  # a concat is fused back to the width
    assert output_shape(m, "stem_relu") == (32, 45, 64)
    for n in (1, 2, 3):
        assert output_shape(m, f"stage{n}_{merged}") == TABLE12_MERGED[n - 1]
        assert output_shape(m, f"stage{n}_transition_out") == TABLE12_TRANSITIONS[n - 1]
    last = f"stage4_{merged}" if label in ("a4b1", "a4b2", "a4b3", "a4b1cat") else "stage4_block2_out"
    assert output_shape(m, last) == (4, 1, 512)
    assert output_shape(m, "head_relu") == (1, 1, 512)
    assert not auto_named_layers(m)


@pytest.mark.parametrize("label,little_convs", [("a4b1", 5), ("a4b2", 3), ("a4b3", 2), ("a2b3", 2)])
def test_branches_follow_table_12_and_b2(models, label, little_convs):
    m = models[label]
    alpha = 2 if label == "a2b3" else 4
    # Big-Branch: (2, 2, 1) convolutions at half the frequency resolution, full width.
    assert output_shape(m, "stage1_big_block1_conv1") == (16, 43, 64)
    assert output_shape(m, "stage1_big_block3_add") == (16, 35, 64)
    assert "stage1_big_block3_conv2" not in {layer.name for layer in m.layers}
    # Little-Branch: ceil(5 / β) convolutions at full resolution, 64 / α wide, cropped to the big's 35 frames.
    blocks = (little_convs + 1) // 2
    convs_in_last = 2 - little_convs % 2
    little_out = output_shape(m, f"stage1_little_block{blocks}_conv{convs_in_last}")
    assert little_out == (32, 45 - 2 * little_convs, 64 // alpha)
    assert output_shape(m, "stage1_big_upsample") == (32, 35, 64)
    if little_convs < 5:  # cropped to the big's frames, then widened to the module's 64 channels
        assert output_shape(m, "stage1_little_crop") == (32, 35, 64 // alpha)
    assert output_shape(m, "stage1_little_expand_bn") == (32, 35, 64)
    # The last stage branches with α = 4 (ceil(4 / β) little convolutions) and is ResNet-22's with α = 2.
    names = {layer.name for layer in m.layers}
    assert ("stage4_little_block1_conv1" in names) == (alpha == 4)


def test_concat_merge_fuses_with_a_1x1_conv(models):
    m = models["a4b1cat"]
    assert output_shape(m, "stage1_merge") == (32, 35, 64 + 16)  # Appendix B.2: "64 + 16 = 80 channels"
    fuse = m.get_layer("stage1_fuse_conv")
    assert fuse.kernel_size == (1, 1) and fuse.filters == 64


def test_pyramid_has_4_3_2_branches_and_resnet22s_last_stage(models):
    m = models["pyr"]
    names = {layer.name for layer in m.layers}
    # Stage 1: 256, 64, 16, 4 channels at 1/8, 1/4, 1/2 and full frequency resolution.
    assert [output_shape(m, f"stage1_{b}_block1_conv1")[::2] for b in ("big", "mid1", "mid2", "little")] == [
        (4, 256), (8, 64), (16, 16), (32, 4)]
    assert [output_shape(m, f"stage2_{b}_block1_conv1")[::2] for b in ("big", "mid1", "little")] == [
        (4, 128), (8, 32), (16, 8)]
    assert "stage3_mid1_block1_conv1" not in names and output_shape(m, "stage3_little_block1_conv1")[::2] == (8, 64)
    assert "stage4_little_block1_conv1" not in names and output_shape(m, "stage4_block1_conv1")[::2] == (4, 512)


def test_a_longer_input_predicts_every_frame_like_sliding_windows():
    """No padding in time: the model on T frames equals the model on each 49-frame window."""
    model = bl_net_tf.create_model("bl-resnet22-speech", alpha=4, beta=2, num_classes=5, input_shape=(64, None, 3),
                                   data_format="channels_last")
    model.set_weights(random_weights(model, seed=0))
    x = np.random.default_rng(0).normal(size=(1, 64, 52, 3)).astype("float32")
    dense = np.asarray(model(x, training=False))
    assert dense.shape == (1, 4, 5)
    windows = np.concatenate([x[:, :, t:t + 49] for t in range(4)])
    per_window = np.asarray(model(windows, training=False))[:, 0]
    assert np.abs(dense).max() > 1e-3
    np.testing.assert_allclose(dense[0], per_window, rtol=1e-4, atol=1e-4 * np.abs(dense).max())
    keras.backend.clear_session()


def test_channels_first_and_last_agree_with_shared_weights():
    kwargs = dict(alpha=4, beta=2, merge="concat", num_classes=6)
    last = bl_net_tf.create_model("bl-resnet22-speech", data_format="channels_last", **kwargs)
    first = bl_net_tf.create_model("bl-resnet22-speech", data_format="channels_first", **kwargs)
    assert first.get_layer("stem_conv").output.shape[1:] == (64, 32, 45)  # [C, frequency, time] inside
    assert last.output.shape[1:] == (6,)
    windows = np.random.default_rng(1).normal(size=(2, 64, 49, 3)).astype("float32")  # NHWC in both formats
    assert_channels_first_matches_last(last, first, windows)
    keras.backend.clear_session()


def test_speech_archs_are_listed_apart_from_the_image_models():
    assert bl_net_tf.list_models("speech") == ["bl-pyr-resnet22-speech", "bl-resnet22-speech", "resnet22-speech"]
    assert not set(bl_net_tf.list_models("speech")) & set(bl_net_tf.list_models())
    assert set(bl_net_tf.list_models(None)) == set(bl_net_tf.list_models()) | set(bl_net_tf.list_models("speech"))


@pytest.mark.parametrize("kwargs,message", [
    (dict(input_shape=(40, 49, 3)), "speech models take (64 mel bins, frames >= 49 or None, 3) inputs"),
    (dict(input_shape=(64, 48, 3)), "got (64, 48, 3)"),
    (dict(input_shape=(64, 20, 3)), "speech models take (64 mel bins, frames >= 49 or None, 3) inputs"),
    (dict(merge="mul"), "unknown merge 'mul'"),
    (dict(include_preprocessing=True), "include_preprocessing (ImageNet mean/std) applies to image models"),
    (dict(alpha=3), "alpha must divide the 64 stem channels"),
])
def test_bad_speech_input_says_what_is_allowed(kwargs, message):
    with pytest.raises(ValueError, match=re.escape(message)):
        bl_net_tf.create_model("bl-resnet22-speech", data_format="channels_last", **kwargs)
