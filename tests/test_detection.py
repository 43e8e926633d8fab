"""features_only backbones for detection (Appendix A.6): strides, channels, dynamic sizes, the README's FPN example."""
import os
import re

import keras
import numpy as np
import pytest

import bl_net_tf
from bl_net_tf.profile import profile

README = os.path.join(os.path.dirname(os.path.dirname(os.path.abspath(__file__))), "README.md")
RESNET_CHANNELS = (256, 512, 1024, 2048)
# arch -> (strides of C2..C5, channels, output layer names)
BACKBONES = {
    "resnet50": ((4, 8, 16, 32), RESNET_CHANNELS,
                 ["stage2_block3_out", "stage3_block4_out", "stage4_block6_out", "stage5_block3_out"]),
    "resnet50-lowres": ((8, 16, 32, 64), RESNET_CHANNELS,
                        ["stage2_block3_out", "stage3_block4_out", "stage4_block6_out", "stage5_block3_out"]),
    "bl-resnet50": ((4, 8, 16, 32), RESNET_CHANNELS,
                    ["stage2_merge_relu", "stage3_merge_relu", "stage4_fusion_block1_out", "stage5_block3_out"]),
    "shufflenetv2-2.0x": ((4, 8, 16, 32), (24, 244, 488, 2048),
                          ["stage1_pool", "stage2_block4_shuffle", "stage3_block8_shuffle", "head_conv_relu"]),
    "bl-shufflenetv2-1.5x": ((4, 8, 16, 32), (24, 176, 352, 1024),
                             ["stage1_pool", "stage2_merge_relu", "stage3_merge_relu", "head_conv_relu"]),
}


@pytest.mark.parametrize("arch", sorted(BACKBONES))
def test_features_have_the_documented_strides_channels_and_taps(arch):
    strides, channels, names = BACKBONES[arch]
    model = bl_net_tf.create_model(arch, features_only=True, input_shape=(None, None, 3), data_format="channels_last")
    assert model.output_names == names
    # The paper's COCO size, statically ...
    for (h, w, c), stride, expected in zip([s[1:] for s in model.compute_output_shape((1, 800, 1344, 3))],
                                           strides, channels):
        assert (h, w, c) == (-(-800 // stride), -(-1344 // stride), expected)
    # ... and two small sizes through the same dynamic-shape model, run for real.
    for size in ((64, 96), (96, 64)):
        features = model(np.zeros((1, *size, 3), "float32"), training=False)
        assert [tuple(f.shape[1:]) for f in features] == [
            (-(-size[0] // s), -(-size[1] // s), c) for s, c in zip(strides, channels)]
    keras.backend.clear_session()


def test_channels_first_features_are_nchw():
    model = bl_net_tf.create_model("bl-resnet50", features_only=True, input_shape=(None, None, 3),
                                   data_format="channels_first")
    assert [s[1:] for s in model.compute_output_shape((1, 256, 320, 3))] == [
        (256, 64, 80), (512, 32, 40), (1024, 16, 20), (2048, 8, 10)]
    keras.backend.clear_session()


def test_the_fpn_example_in_the_readme_runs():
    text = open(README, encoding="utf-8").read()
    section = text[text.index("## Detection backbones"):text.index("## Documentation")]
    code, = re.findall(r"```python\n(.*?)```", section, flags=re.S)
    paper_line = 'arch, height, width = "bl-resnet101", 800, 1344'
    assert paper_line in code
    namespace = {}
    exec(code.replace(paper_line, 'arch, height, width = "bl-resnet50", 64, 96'), namespace)  # noqa: S102
    shapes = [tuple(namespace[p].shape[1:]) for p in ("p2", "p3", "p4", "p5", "p6")]
    assert shapes == [(16, 24, 256), (8, 12, 256), (4, 6, 256), (2, 3, 256), (1, 2, 256)]
    assert namespace["features"].get_layer("stage2_big_upsample").method == "bilinear"
    keras.backend.clear_session()


# Table 10: whole-detector GFLOPs (Faster R-CNN + FPN, 300 proposals) as printed, per dataset and size.
TABLE10 = {
    ((600, 1024), "resnet101", None): 137.70,
    ((600, 1024), "bl-resnet101", (2, 4)): 89.21,
    ((600, 1024), "bl-resnet101", (2, 2)): 93.95,
    ((800, 1344), "resnet101", None): 234.85,
    ((800, 1344), "bl-resnet101", (2, 4)): 151.11,
    ((800, 1344), "bl-resnet101", (2, 2)): 160.21,
}


@pytest.mark.parametrize("size", [(600, 1024), (800, 1344)], ids=["voc-600x1024", "coco-800x1344"])
def test_table10_savings_are_the_backbones_savings_within_3_percent(size):
    """Only the backbone differs between Table 10's detectors, so each bL detector's FLOP saving over
    the ResNet-101 detector must be its backbone's saving (measured: -0.2% to +1.2%)."""
    def backbone_gmacs(arch, alpha_beta):
        kwargs = dict(alpha=alpha_beta[0], beta=alpha_beta[1]) if alpha_beta else {}
        return profile(arch, input_shape=size + (3,), features_only=True, **kwargs)[1] / 1e9

    resnet = backbone_gmacs("resnet101", None)
    for alpha_beta in ((2, 4), (2, 2)):
        ours = resnet - backbone_gmacs("bl-resnet101", alpha_beta)
        paper = TABLE10[(size, "resnet101", None)] - TABLE10[(size, "bl-resnet101", alpha_beta)]
        assert abs(ours - paper) / paper < 0.03, (alpha_beta, ours, paper)
