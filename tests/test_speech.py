"""The speech acoustic models against the paper: Table 3's complexity, Table 12's shapes."""
import re

import keras
import numpy as np
import pytest

import bl_net_tf
from bl_net_tf.profile import count_macs, count_params

# (label, arch, create_model kwargs, printed Params, GFLOPs) from Table 3. The params column is
# printed as "(10^6)" but is in units of 10^7 (ResNet-22's 512 x 32k output layer alone has 16.4M).
TABLE3 = [
    ("resnet22", "resnet22-speech", {}, 3.02, 1.11),
    ("a4b1", "bl-resnet22-speech", dict(alpha=4, beta=1), 3.15, 0.68),
    ("a4b2", "bl-resnet22-speech", dict(alpha=4, beta=2), 3.11, 0.66),
    ("a4b3", "bl-resnet22-speech", dict(alpha=4, beta=3), 3.10, 0.65),
    ("a2b3", "bl-resnet22-speech", dict(alpha=2, beta=3), 3.07, 0.77),
    ("a4b1cat", "bl-resnet22-speech", dict(alpha=4, beta=1, merge="concat"), 3.18, 0.70),
    ("pyr", "bl-pyr-resnet22-speech", dict(alpha=4, beta=1), 3.32, 0.98),
]
KERAS_AUTO_NAME = re.compile(r"(conv2d|batch_normalization|re_lu|add|concatenate|zero_padding2d|cropping2d|"
                             r"reshape|permute|resize_like|input_layer)(_\d+)?")


@pytest.fixture(scope="module")
def models():
    """Each Table 3 model, built once at the paper's input (64 mel bins x 49 frames x 3)."""
    built = {label: bl_net_tf.create_model(arch, data_format="channels_last", **kwargs)
             for label, arch, kwargs, _, _ in TABLE3}
    yield built
    keras.backend.clear_session()


@pytest.mark.parametrize("label,arch,kwargs,params_1e7,gflops", TABLE3, ids=[row[0] for row in TABLE3])
def test_table3_params_and_flops_within_3_percent(models, label, arch, kwargs, params_1e7, gflops):
    model = models[label]
    assert abs(count_params(model) / 1e7 - params_1e7) / params_1e7 < 0.03
    assert abs(count_macs(model) / 1e9 - gflops) / gflops < 0.03
    assert tuple(model.output.shape) == (None, 32000)  # 32k CD states by default


def _fxt(model, name):
    """(frequency bins, frames, channels) of a layer's output."""
    return tuple(model.get_layer(name).output.shape[1:])


def test_resnet22_shapes_follow_appendix_b(models):
    m = models["resnet22"]
    assert _fxt(m, "stem_relu") == (32, 45, 64)
    # Three stages of three two-conv blocks and one of two: 12 convolutions, 45 -> 33 -> 21 -> 9 -> 1.
    assert [_fxt(m, f"stage{n}_block{b}_out") for n, b in ((1, 3), (2, 3), (3, 3), (4, 2))] == [
        (32, 33, 64), (16, 21, 128), (8, 9, 256), (4, 1, 512)]
    assert _fxt(m, "head_relu") == (1, 1, 512)


# Table 12's T = 49 -> 45 -> 35 -> 33 -> 23 -> 21 -> 11 -> 9 -> 1, stage by stage.
TABLE12_MERGED = [(32, 35, 64), (16, 23, 128), (8, 11, 256)]
TABLE12_TRANSITIONS = [(16, 33, 64), (8, 21, 128), (4, 9, 256)]


@pytest.mark.parametrize("label", ["a4b1", "a4b2", "a4b3", "a2b3", "a4b1cat", "pyr"])
def test_bl_shapes_follow_table_12(models, label):
    m = models[label]
    assert _fxt(m, "stem_relu") == (32, 45, 64)
    for n in (1, 2, 3):
        assert _fxt(m, f"stage{n}_merge_relu") == TABLE12_MERGED[n - 1]
        assert _fxt(m, f"stage{n}_transition_out") == TABLE12_TRANSITIONS[n - 1]
    last = "stage4_merge_relu" if label in ("a4b1", "a4b2", "a4b3", "a4b1cat") else "stage4_block2_out"
    assert _fxt(m, last) == (4, 1, 512)
    assert _fxt(m, "head_relu") == (1, 1, 512)
    assert not [layer.name for layer in m.layers if KERAS_AUTO_NAME.fullmatch(layer.name)]


@pytest.mark.parametrize("label,little_convs", [("a4b1", 5), ("a4b2", 3), ("a4b3", 2), ("a2b3", 2)])
def test_branches_follow_table_12_and_b2(models, label, little_convs):
    m = models[label]
    alpha = 2 if label == "a2b3" else 4
    # Big-Branch: (2, 2, 1) convolutions at half the frequency resolution, full width.
    assert _fxt(m, "stage1_big_block1_conv1") == (16, 43, 64)
    assert _fxt(m, "stage1_big_block3_add") == (16, 35, 64)
    assert "stage1_big_block3_conv2" not in {layer.name for layer in m.layers}
    # Little-Branch: ceil(5 / β) convolutions at full resolution, 64 / α wide, cropped to the big's 35 frames.
    blocks = (little_convs + 1) // 2
    convs_in_last = 2 - little_convs % 2
    assert _fxt(m, f"stage1_little_block{blocks}_conv{convs_in_last}") == (32, 45 - 2 * little_convs, 64 // alpha)
    assert _fxt(m, "stage1_big_upsample") == (32, 35, 64)
    if little_convs < 5:
        assert _fxt(m, "stage1_little_crop") == (32, 35, 64)
    # The last stage branches with α = 4 (ceil(4 / β) little convolutions) and is ResNet-22's with α = 2.
    names = {layer.name for layer in m.layers}
    assert ("stage4_little_block1_conv1" in names) == (alpha == 4)


def test_concat_merge_fuses_with_a_1x1_conv(models):
    m = models["a4b1cat"]
    assert _fxt(m, "stage1_merge") == (32, 35, 64 + 16)  # Appendix B.2: "64 + 16 = 80 channels"
    fuse = m.get_layer("stage1_fuse_conv")
    assert fuse.kernel_size == (1, 1) and fuse.filters == 64


def test_pyramid_has_4_3_2_branches_and_resnet22s_last_stage(models):
    m = models["pyr"]
    names = {layer.name for layer in m.layers}
    # Stage 1: 256, 64, 16, 4 channels at 1/8, 1/4, 1/2 and full frequency resolution.
    assert [_fxt(m, f"stage1_{b}_block1_conv1")[::2] for b in ("big", "mid1", "mid2", "little")] == [
        (4, 256), (8, 64), (16, 16), (32, 4)]
    assert [_fxt(m, f"stage2_{b}_block1_conv1")[::2] for b in ("big", "mid1", "little")] == [
        (4, 128), (8, 32), (16, 8)]
    assert "stage3_mid1_block1_conv1" not in names and _fxt(m, "stage3_little_block1_conv1")[::2] == (8, 64)
    assert "stage4_little_block1_conv1" not in names and _fxt(m, "stage4_block1_conv1")[::2] == (4, 512)


def test_a_longer_input_predicts_every_frame_like_sliding_windows():
    """No padding in time: the model on T frames equals the model on each 49-frame window."""
    model = bl_net_tf.create_model("bl-resnet22-speech", alpha=4, beta=2, num_classes=5, input_shape=(64, None, 3),
                                   data_format="channels_last")
    rng = np.random.default_rng(0)
    model.set_weights([rng.normal(0, 0.05, w.shape).astype("float32") if "moving_variance" not in w.path
                       else rng.uniform(0.5, 1.5, w.shape).astype("float32") for w in model.weights])
    x = rng.normal(size=(1, 64, 52, 3)).astype("float32")
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
    rng = np.random.default_rng(1)
    weights = [rng.normal(0, 0.05, w.shape).astype("float32") if "moving_variance" not in w.path
               else rng.uniform(0.5, 1.5, w.shape).astype("float32") for w in last.weights]
    last.set_weights(weights)
    first.set_weights(weights)
    x = rng.normal(size=(2, 64, 49, 3)).astype("float32")  # NHWC = [batch, mel, frames, 3] in both formats
    a, b = np.asarray(last(x, training=False)), np.asarray(first(x, training=False))
    assert a.shape == (2, 6) and np.abs(a).max() > 1e-3
    np.testing.assert_allclose(a, b, rtol=1e-4, atol=1e-4 * np.abs(a).max())
    keras.backend.clear_session()


def test_speech_archs_are_listed_apart_from_the_image_models():
    assert bl_net_tf.list_models("speech") == ["bl-pyr-resnet22-speech", "bl-resnet22-speech", "resnet22-speech"]
    assert not set(bl_net_tf.list_models("speech")) & set(bl_net_tf.list_models())
    assert set(bl_net_tf.list_models(None)) == set(bl_net_tf.list_models()) | set(bl_net_tf.list_models("speech"))


@pytest.mark.parametrize("kwargs,message", [
    (dict(input_shape=(40, 49, 3)), "speech models take (64 mel bins, frames >= 49 or None, 3) inputs"),
    (dict(input_shape=(64, 48, 3)), "got (64, 48, 3)"),
    (dict(merge="mul"), "unknown merge 'mul'"),
    (dict(include_preprocessing=True), "include_preprocessing (ImageNet mean/std) applies to image models"),
    (dict(alpha=3), "alpha must divide the 64 stem channels"),
])
def test_bad_speech_input_says_what_is_allowed(kwargs, message):
    with pytest.raises(ValueError, match=re.escape(message)):
        bl_net_tf.create_model("bl-resnet22-speech", data_format="channels_last", **kwargs)
