"""The paper's ablations (Appendix A.4) against its tables: merging by concatenation and three
branches (Table 7), fewer and more merges (Table 8). How each is read is in models/big_little.py
(concat, unmerged modules, K=3) and models/resnet.py (MERGE_LAYOUTS); the m=4 / K=2 / add
baselines of both tables are rows of tests/test_models.py."""
import functools

import keras
import numpy as np
import pytest

import bl_net_tf
from bl_net_tf import paper_tables
from bl_net_tf.profile import count_macs, count_params
from conftest import assert_equals_paper, auto_named_layers, output_shape, paper_model


def _ablation(row) -> str:
    """The row's ablation option, e.g. ``merge=concat``, ``branches=3``, ``merges=7`` (α=2, β=4)."""
    return ",".join(f"{k}={v}" for k, v in row.options if k not in ("alpha", "beta"))


# Tables 7 and 8, as bl_net_tf/paper_tables.py holds them, by ablation.
ROWS = {_ablation(row): row for row in paper_tables.rows("7", "8")}
ROW_IDS = list(ROWS)

# Table 7's K=3 row against the readings measured for it (bL-ResNet-50 α=2 β=4;
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
def _row_model(row_id, size):
    return paper_model(ROWS[row_id], input_shape=(size, size, 3))


@pytest.fixture(scope="module", autouse=True)
def _release_models():
    yield
    _row_model.cache_clear()
    keras.backend.clear_session()


@pytest.mark.parametrize("row_id", ROW_IDS)
def test_params_and_flops_equal_tables_7_and_8(row_id):
    """Our params and GFLOPs equal each row of Tables 7 and 8 within the tolerance the row states in
    bl_net_tf/paper_tables.py (1%; 3% for the concatenation)."""
    model = _row_model(row_id, 224)
    assert_equals_paper(ROWS[row_id], model)
    if row_id == "branches=3":  # pins the reading, which fits the paper only to its tolerance
        assert (count_params(model), count_macs(model, include_fc=False)) == (K3_PARAMS, K3_MACS)


@pytest.mark.parametrize("row_id", ROW_IDS)
def test_forward_pass_on_a_small_input(row_id):
    model = _row_model(row_id, 64)
    logits = model(np.random.default_rng(0).normal(size=(2, 64, 64, 3)).astype("float32"), training=False)
    assert tuple(logits.shape) == (2, 1000)
    assert np.isfinite(np.asarray(logits)).all()


@pytest.mark.parametrize("row_id,present,absent", [
    ("merge=concat", ["stage1_merge", "stage2_merge", "stage4_merge"],
     ["stage2_little_expand_conv", "stage1_little_conv3"]),
    ("branches=3", ["stage2_middle_block1_conv1", "stage2_middle_expand_conv", "stage4_big_pool",
                    "stage3_middle_upsample", "stage2_little_expand_conv", "stage2_pool",
                    "stage3_fusion_block1_conv1", "stage4_fusion_block1_conv1"],
     ["stage1_big_conv", "stage1_fusion_conv", "stage2_fusion_block1_conv1"]),
    ("merges=2", ["stage2_merge", "stage4_merge", "stage3_fusion_block1_conv1"], ["stage1_merge", "stage3_merge"]),
    ("merges=1", ["stage4_merge", "stage2_fusion_block1_conv1"], ["stage1_merge", "stage2_merge", "stage3_merge"]),
    ("merges=7", ["stage3_module2_merge", "stage4_module3_fusion_block1_conv1", "stage2_merge"],
     ["stage3_merge", "stage4_module4_merge"]),
], ids=ROW_IDS)
def test_layers_are_named(row_id, present, absent):
    names = {layer.name for layer in _row_model(row_id, 224).layers}
    assert set(present) <= names
    assert not set(absent) & names
    assert not auto_named_layers(_row_model(row_id, 224))


def test_concat_and_merge_counts_shape_the_graph():
    concat = _row_model("merge=concat", 224)
    assert isinstance(concat.get_layer("stage3_merge"), keras.layers.Concatenate)
    # Big-Branch at C(1 - 1/α) = 256 of stage3's 512, its bottleneck a quarter of that.
    assert concat.get_layer("stage3_big_block1_conv3").filters == 256
    assert concat.get_layer("stage3_big_block1_conv1").filters == 64
    m7 = _row_model("merges=7", 224)
    # bL-ResNet-101's 8 and 18 blocks split evenly: 3 big blocks per stage3 module, 5 per stage4 one.
    names = {layer.name for layer in m7.layers}
    assert "stage3_module2_big_block3_conv1" in names and "stage3_module2_big_block4_conv1" not in names
    assert "stage4_module3_big_block5_conv1" in names and "stage4_module3_big_block6_conv1" not in names


def test_three_branch_modules_run_at_twice_the_two_branch_resolution():
    size = functools.partial(output_shape, _row_model("branches=3", 224))

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
