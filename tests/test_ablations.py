"""The paper's ablations (Appendix A.4) against its tables: merging by concatenation and three
branches (Table 7), fewer and more merges (Table 8). How each is read is in models/big_little.py
(concat, unmerged modules, K=3) and models/resnet.py (MERGE_LAYOUTS); the m=4 / K=2 / add
baselines of both tables are rows of tests/test_models.py."""
import functools
import re

import keras
import numpy as np
import pytest

import bl_net_tf
from bl_net_tf.profile import count_macs, count_params

# (id, arch, create_model options, paper GFLOPs, paper Mparams, relative tolerance), α=2, β=4,
# copied from Tables 7 and 8. The paper's GFLOPs are conv MACs without the final FC.
PAPER_ROWS = [
    ("concat", "bl-resnet50", dict(merge="concat"), 2.01, 20.57, 0.03),
    ("k3", "bl-resnet50", dict(branches=3), 3.91, 27.23, 0.01),
    ("m2", "bl-resnet50", dict(merges=2), 2.74, 26.66, 0.01),
    ("m1", "bl-resnet50", dict(merges=1), 2.64, 26.64, 0.01),
    ("m7", "bl-resnet101", dict(merges=7), 5.21, 44.44, 0.01),
]
ROW_IDS = [row[0] for row in PAPER_ROWS]

# Table 7's K=3 FLOPs are not reproduced: the paper prints 3.91 GFLOPs (more than K=2's 2.85),
# our reading (big_little.py) counts 2.31. Every reading tried that keeps K=2's stem and stage
# resolutions, with the big at 1/4 as A.4 says, stays below 3.1 GFLOPs (the extra branch is thin
# and the big gets cheaper); reaching 3.9 needs the modules at twice K=2's resolution (no stem
# module: 4.1-6.1 GFLOPs by where the middle's 1x1 runs) or arbitrary widths and depths. Params
# agree (27.32M vs 27.23M). This pins our count until the paper's construction is known.
UNREPRODUCED_MACS = {"k3": 2_307_489_792}


@functools.lru_cache(maxsize=None)
def _model(arch, options, size):
    return bl_net_tf.create_model(arch, input_shape=(size, size, 3), data_format="channels_last",
                                  **dict(options))


def _row_model(row_id, size):
    _, arch, options, *_ = PAPER_ROWS[ROW_IDS.index(row_id)]
    return _model(arch, tuple(sorted(options.items())), size)


@pytest.fixture(scope="module", autouse=True)
def _release_models():
    yield
    _model.cache_clear()
    keras.backend.clear_session()


@pytest.mark.parametrize("row_id,arch,options,gflops,mparams,tolerance", PAPER_ROWS, ids=ROW_IDS)
def test_params_and_flops_match_the_paper(row_id, arch, options, gflops, mparams, tolerance):
    model = _row_model(row_id, 224)
    params, macs = count_params(model), count_macs(model, include_fc=False)
    assert abs(params / 1e6 - mparams) / mparams < tolerance, params
    if row_id in UNREPRODUCED_MACS:
        assert macs == UNREPRODUCED_MACS[row_id]
    else:
        assert abs(macs / 1e9 - gflops) / gflops < tolerance, macs


@pytest.mark.parametrize("row_id", ROW_IDS)
def test_forward_pass_on_a_small_input(row_id):
    model = _row_model(row_id, 64)
    logits = model(np.random.default_rng(0).normal(size=(2, 64, 64, 3)).astype("float32"), training=False)
    assert tuple(logits.shape) == (2, 1000)
    assert np.isfinite(np.asarray(logits)).all()


AUTO_NAME = re.compile(r"(conv2d|batch_normalization|re_lu|add|concatenate|resize_like|dense|zero_padding2d|"
                       r"(global_)?(average|max)_pooling2d)(_\d+)?")


@pytest.mark.parametrize("row_id,present,absent", [
    ("concat", ["stage1_merge", "stage2_merge", "stage4_merge"], ["stage2_little_expand_conv", "stage1_little_conv3"]),
    ("k3", ["stage2_middle_block1_conv1", "stage2_middle_expand_conv", "stage4_big_pool", "stage3_middle_upsample"],
     []),
    ("m2", ["stage2_merge", "stage4_merge", "stage3_fusion_block1_conv1"], ["stage1_merge", "stage3_merge"]),
    ("m1", ["stage4_merge", "stage2_fusion_block1_conv1"], ["stage1_merge", "stage2_merge", "stage3_merge"]),
    ("m7", ["stage3_module2_merge", "stage4_module3_fusion_block1_conv1", "stage2_merge"],
     ["stage3_merge", "stage4_module4_merge"]),
], ids=ROW_IDS)
def test_layers_are_named(row_id, present, absent):
    names = {layer.name for layer in _row_model(row_id, 224).layers}
    assert set(present) <= names
    assert not set(absent) & names
    assert not [name for name in names if AUTO_NAME.fullmatch(name)]


def test_concat_and_merge_counts_shape_the_graph():
    concat = _row_model("concat", 224)
    assert isinstance(concat.get_layer("stage3_merge"), keras.layers.Concatenate)
    # Big-Branch at C(1 - 1/α) = 256 of stage3's 512, its bottleneck a quarter of that.
    assert concat.get_layer("stage3_big_block1_conv3").filters == 256
    assert concat.get_layer("stage3_big_block1_conv1").filters == 64
    m7 = _row_model("m7", 224)
    # bL-ResNet-101's 8 and 18 blocks split evenly: 3 big blocks per stage3 module, 5 per stage4 one.
    names = {layer.name for layer in m7.layers}
    assert "stage3_module2_big_block3_conv1" in names and "stage3_module2_big_block4_conv1" not in names
    assert "stage4_module3_big_block5_conv1" in names and "stage4_module3_big_block6_conv1" not in names


@pytest.mark.parametrize("arch,options,message", [
    ("bl-resnet50", dict(merge="sum"), r"unknown merge 'sum' for bl-resnet50; allowed: add, concat"),
    ("bl-resnet50", dict(branches=4), r"branches must be one of 2, 3 \(Table 7's K\), got 4"),
    ("bl-resnet50", dict(branches=True), r"branches must be one of 2, 3"),
    ("bl-resnet50", dict(merges=3), r"merges=3 is not defined for depth 50; allowed: 1, 2, 4 \(Table 8\)"),
    ("bl-resnet50", dict(merges=7), r"merges=7 is not defined for depth 50; allowed: 1, 2, 4"),
    ("bl-resnet101", dict(merges=2), r"merges=2 is not defined for depth 101; allowed: 4, 7"),
    ("bl-resnet152", dict(merges=7), r"merges=7 is not defined for depth 152; allowed: 4"),
    ("bl-resnet50", dict(merges="2"), r"merges must be an integer or None"),
    ("resnet50", dict(merges=2), r"merges=2 is an ablation of the bL-ResNet/ResNeXt/SE-ResNeXt archs, not of "
                                 r"'resnet50'"),
    ("resnet50", dict(merge="concat"), r"merge='concat' is an ablation of the bL-ResNet"),
    ("bl-resnet50", dict(merge="concat", branches=3), r"merge='concat' and branches=3 are separate ablations"),
    ("bl-resnet50", dict(merge="concat", alpha=1), r"merge='concat' needs alpha >= 2"),
    ("bl-resnet50", dict(branches=3, alpha=32), r"branches=3 makes the little branch 1/alpha\*\*2 as wide"),
    ("bl-resnext50", dict(branches=3, alpha=8), r"alpha\*\*2 = 64 must divide"),
    ("bl-resnet50", dict(merges=2, features_only=True),
     r"features_only needs every stage to end in a merge \(merges=4\), got merges=2"),
])
def test_bad_ablation_options_fail_in_one_line(arch, options, message):
    with pytest.raises(ValueError, match=message) as raised:
        bl_net_tf.create_model(arch, data_format="channels_last", **options)
    assert "\n" not in str(raised.value)
