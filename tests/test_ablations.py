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

# Table 7's K=3 row (3.91 GFLOPs, 27.23M) against the readings measured for it (bL-ResNet-50 α=2 β=4;
# little C/α², middle C/α with its 1x1 before upsampling, Big-Branch L - 1 blocks at 1/4 unless said):
#   modules at K=2's resolutions (little 56/28/14, Big-Branch 14/7/4):
#     after the K=2 stem module                              27.32M +0.33%   2.31 GF -41.0%
#     same, middle's 1x1 after upsampling                    27.32M +0.33%   2.54 GF -35.1%
#     same, little C/α instead of C/α²                       27.76M +1.95%   2.55 GF -34.9%
#     after ResNet-50's max-pool stem / a 3-branch stem      27.25M / 27.34M 1.91 / 2.20 GF
#     Big-Branch at 1/2 (K=2's), middle 1x1 late, little C/α 27.76M +1.95%   3.23 GF -17.3%
#   modules at twice K=2's resolution (7x7/s2 conv only; little 112/56/28, Big-Branch 28/14/7):
#     strided fusion bottleneck in all three modules         27.25M +0.07%   4.28 GF +9.5%
#     same, middle's 1x1 after upsampling                    27.25M +0.07%   5.20 GF +33.1%
#     same, Eq. 1's pooled branch inputs, stride-1 blocks    27.25M +0.07%   4.14 GF +5.8%
#     same, fusion stride on its first 1x1 (ResNet v1)       27.25M +0.07%   3.82 GF -2.4%
#     same, plus a 3-branch stem module at 112x112           27.34M +0.39%   4.60 GF +17.8%
#     stage2 unfused, stage3's branches take the stride      27.18M -0.19%   3.98 GF +1.9%
#     no fusion block anywhere, next branches stride         25.78M -5.32%   3.63 GF -7.3%
#     stage2 ends in ResNet-50's max-pool, not a fusion      27.18M -0.19%   3.91 GF -0.07%  <- ours
#     same, stage2's Big-Branch keeping all 3 blocks         27.25M +0.07%   3.96 GF +1.3%
#     stage3 (not stage2) ends in a pool                     26.97M -0.96%   3.91 GF -0.07%
#   Big-Branch at ResNet-50's own 56/28/14 (middle 112, little 224): 14.2 GF.
# Only the marked reading is within 1% on both (big_little.py gives the argument).
K3_PARAMS, K3_MACS = 27_178_472, 3_907_305_472


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
    assert abs(macs / 1e9 - gflops) / gflops < tolerance, macs
    if row_id == "k3":  # pins the reading, which fits the paper only to its tolerance
        assert (params, macs) == (K3_PARAMS, K3_MACS)


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
    ("k3", ["stage2_middle_block1_conv1", "stage2_middle_expand_conv", "stage4_big_pool", "stage3_middle_upsample",
            "stage2_little_expand_conv", "stage2_pool", "stage3_fusion_block1_conv1", "stage4_fusion_block1_conv1"],
     ["stage1_big_conv", "stage1_fusion_conv", "stage2_fusion_block1_conv1"]),
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


def test_three_branch_modules_run_at_twice_the_two_branch_resolution():
    model = _row_model("k3", 224)

    def size(name):
        return tuple(model.get_layer(name).output.shape[1:])

    # Stage2 on the 112x112 stem conv output: little 112, middle 56, Big-Branch 28 (its input 56x56).
    assert size("stage2_little_block1_add") == (112, 112, 64)
    assert size("stage2_middle_block1_add") == (56, 56, 128)
    assert size("stage2_big_pool") == (56, 56, 64)
    assert size("stage2_big_block2_add") == (28, 28, 256)
    assert size("stage2_merge") == (112, 112, 256)
    assert size("stage2_pool") == (56, 56, 256)
    # Stage3 and stage4 end in a strided fusion bottleneck; stage5 is K=2's.
    assert size("stage3_merge") == (56, 56, 512) and size("stage3_fusion_block1_out") == (28, 28, 512)
    assert size("stage4_big_block5_add") == (7, 7, 1024)
    assert size("stage4_merge") == (28, 28, 1024) and size("stage4_fusion_block1_out") == (14, 14, 1024)
    assert size("stage5_block3_out") == (7, 7, 2048)


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
