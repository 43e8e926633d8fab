"""features_only backbones for detection (Appendix A.6): the taps their feature_info describes
(checked against the real outputs and against docs/detection.md's table), and Table 10's savings."""
import os
import re

import keras
import numpy as np
import pytest

import bl_net_tf
from bl_net_tf import paper_tables
from bl_net_tf.profile import profile

DOC = os.path.join(os.path.dirname(os.path.dirname(os.path.abspath(__file__))), "docs", "detection.md")


def doc_table() -> dict:
    """arch -> its row of docs/detection.md's feature_info table."""
    text = open(DOC, encoding="utf-8").read()
    table = text[text.index("<!-- feature-info:start -->"):text.index("<!-- feature-info:end -->")]
    return {re.match(r"\| `([^`]+)`", line).group(1): line for line in table.splitlines() if line.startswith("| `")}


def doc_row(arch: str, feature_info) -> str:
    """The table row docs/detection.md shows for ``arch``."""
    return f"| `{arch}` | " + " | ".join(f"`{f.name}` {f.channels} /{f.stride}" for f in feature_info) + " |"


@pytest.mark.parametrize("arch", sorted(doc_table()))
def test_feature_info_describes_the_outputs_and_the_docs_show_it(arch):
    model = bl_net_tf.create_model(arch, features_only=True, input_shape=(None, None, 3), data_format="channels_last")
    info = model.feature_info
    assert [f.name for f in info] == model.output_names
    assert doc_row(arch, info) == doc_table()[arch]
    # The paper's COCO size, statically ...
    for (h, w, c), f in zip([s[1:] for s in model.compute_output_shape((1, 800, 1344, 3))], info):
        assert (h, w, c) == (-(-800 // f.stride), -(-1344 // f.stride), f.channels)
    # ... and two small sizes through the same dynamic-shape model, run for real.
    for size in ((64, 96), (96, 64)):
        features = model(np.zeros((1, *size, 3), "float32"), training=False)
        assert [tuple(x.shape[1:]) for x in features] == [
            (-(-size[0] // f.stride), -(-size[1] // f.stride), f.channels) for f in info]
    keras.backend.clear_session()


def test_channels_first_features_are_nchw():
    model = bl_net_tf.create_model("bl-resnet50", features_only=True, input_shape=(None, None, 3),
                                   data_format="channels_first")
    assert [s[1:] for s in model.compute_output_shape((1, 256, 320, 3))] == [
        (f.channels, 256 // f.stride, 320 // f.stride) for f in model.feature_info]
    assert [f.stride for f in model.feature_info] == [4, 8, 16, 32]
    keras.backend.clear_session()


def test_speech_feature_info_strides_are_in_frequency():
    model = bl_net_tf.create_model("bl-resnet22-speech", alpha=4, beta=2, features_only=True,
                                   data_format="channels_last")
    assert [(x.shape[1], x.shape[3]) for x in model.outputs] == [
        (64 // f.stride, f.channels) for f in model.feature_info]
    keras.backend.clear_session()


@pytest.mark.parametrize("size", [(600, 1024), (800, 1344)], ids=["voc-600x1024", "coco-800x1344"])
def test_table10_savings_equal_the_backbones_savings(size):
    """Only the backbone differs between Table 10's detectors, so each bL detector's FLOP saving over
    the ResNet-101 detector must equal its backbone's saving, within the tolerance its row states in
    bl_net_tf/paper_tables.py (measured: -0.2% to +1.2%)."""
    def backbone_gmacs(row):
        return profile(row.arch, input_shape=size + (3,), features_only=True, **row.kwargs)[1] / 1e9

    rows = [row for row in paper_tables.DETECTION_ROWS if row.image_size == size and row.saving_tol is not None]
    baseline = paper_tables.detection_baseline(rows[0])
    resnet = backbone_gmacs(baseline)
    for row in rows:
        ours, paper = resnet - backbone_gmacs(row), baseline.gflops - row.gflops
        assert abs(ours - paper) / paper < row.saving_tol, (row.label, ours, paper)
