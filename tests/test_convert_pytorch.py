"""bl_net_tf.convert_pytorch against an independent PyTorch forward pass (blnet_torch_reference.py,
whose state-dict names and shapes are checked against the official release's recorded list)."""
import ast
import pathlib

import numpy as np
import pytest
import torch

from blnet_torch_reference import BLNet
from bl_net_tf import create_model
from bl_net_tf.convert_pytorch import (convert_checkpoint, convert_state_dict, load_state_dict, main, pytorch_name,
                                       state_dict_targets)
from bl_net_tf.serving.fold import fold_batch_norm
from bl_net_tf.serving.layout import channels_last_copy

OFFICIAL_KEYS = pathlib.Path(__file__).parent / "data" / "official_blnet_state_dict_keys.tsv"
# Registry name -> the official constructor's arguments (depth 50, alpha 2, beta 4).
ARCHS = {
    "bl-resnet50": dict(),
    "bl-resnext50-32x4d": dict(cardinality=32, base_width=4),
    "bl-seresnext50-32x4d": dict(cardinality=32, base_width=4, se=True),
}
# Not square and not a multiple of 32: stage 3 and 4 upsample the big branch 3 -> 5 and 2 -> 3,
# where nearest-neighbour index rounding matters (64 x 64 would only ever double).
INPUT_HW = (80, 64)
# Each arch is also converted into one data format; both are covered.
DATA_FORMATS = {"bl-resnet50": "channels_last", "bl-resnext50-32x4d": "channels_first",
                "bl-seresnext50-32x4d": "channels_last"}
REL_TOLERANCE = 1e-4


def read_official_keys() -> dict:
    """``{arch: [(key, shape), ...]}`` in the recorded state-dict order."""
    tables, arch = {}, None
    for line in OFFICIAL_KEYS.read_text().splitlines():
        if line.startswith("#"):
            arch = line[1:].split()[0]
            tables[arch] = []
        elif line:
            key, shape = line.split("\t")
            tables[arch].append((key, tuple(ast.literal_eval(shape))))
    return tables


def randomize(model: torch.nn.Module, seed: int) -> torch.nn.Module:
    """Random weights and BatchNorm statistics, so that every tensor of the checkpoint matters
    (the official init zeroes each block's last BN, which would hide most of them)."""
    generator = torch.Generator().manual_seed(seed)
    with torch.no_grad():
        for key, value in model.state_dict().items():
            if key.endswith("num_batches_tracked"):
                continue
            if key.endswith("running_var"):
                value.copy_(torch.rand(value.shape, generator=generator) + 0.5)
            elif value.ndim == 4:  # conv kernels: He-normal over fan-out, as the official init
                fan_out = value.shape[0] * value.shape[2] * value.shape[3]
                value.copy_(torch.randn(value.shape, generator=generator) * (2.0 / fan_out) ** 0.5)
            elif key.endswith("weight") and value.ndim == 1:  # BN gamma
                value.copy_(torch.rand(value.shape, generator=generator) + 0.5)
            else:  # BN beta and means, conv/linear biases, the classifier
                value.copy_(torch.randn(value.shape, generator=generator) * 0.1)
    return model.eval()


def save_checkpoint(model: torch.nn.Module, path, *, data_parallel=True, wrapped=True) -> str:
    """As the official imagenet-train.py saves: DataParallel keys inside a dict with metadata."""
    state = {("module." if data_parallel else "") + key: value for key, value in model.state_dict().items()}
    torch.save({"epoch": 110, "arch": "test", "state_dict": state, "best_top1": torch.tensor(77.0)} if wrapped else state,
               path)
    return str(path)


@pytest.fixture(scope="module")
def official_keys():
    return read_official_keys()


@pytest.fixture(scope="module")
def torch_models():
    return {arch: randomize(BLNet(50, **kwargs), seed) for seed, (arch, kwargs) in enumerate(ARCHS.items())}


@pytest.fixture(scope="module")
def checkpoints(torch_models, tmp_path_factory):
    folder = tmp_path_factory.mktemp("checkpoints")
    return {arch: save_checkpoint(model, folder / f"{arch}.pth.tar") for arch, model in torch_models.items()}


@pytest.fixture(scope="module")
def images():
    return np.random.RandomState(0).standard_normal((2, *INPUT_HW, 3)).astype(np.float32)


def torch_logits(model, images) -> np.ndarray:
    with torch.no_grad():
        return model(torch.from_numpy(images.transpose(0, 3, 1, 2))).numpy()


@pytest.fixture(scope="module")
def converted(checkpoints):
    return {arch: convert_checkpoint(path, arch, data_format=DATA_FORMATS[arch], input_shape=(*INPUT_HW, 3))
            for arch, path in checkpoints.items()}


@pytest.mark.parametrize("arch", ARCHS)
def test_reference_model_has_the_official_state_dict(arch, torch_models, official_keys):
    got = [(key, tuple(value.shape)) for key, value in torch_models[arch].state_dict().items()]
    assert got == official_keys[arch]


@pytest.mark.parametrize("arch", ARCHS)
def test_name_mapping_covers_the_official_state_dict(arch, converted, official_keys):
    """Every official weight has exactly one Keras variable of the transposed shape, and back."""
    targets = state_dict_targets(converted[arch])
    expected = {key: shape for key, shape in official_keys[arch] if not key.endswith("num_batches_tracked")}
    keras_shapes = {}
    for key, variable in targets.items():
        shape = tuple(variable.shape)
        keras_shapes[key] = (shape[3], shape[2], shape[0], shape[1]) if len(shape) == 4 else shape[::-1]
    assert keras_shapes == expected


@pytest.mark.parametrize("arch", ARCHS)
def test_converted_model_reproduces_pytorch_logits(arch, converted, torch_models, images):
    expected = torch_logits(torch_models[arch], images)
    got = np.asarray(converted[arch](images, training=False))
    relative_error = np.abs(got - expected).max() / np.abs(expected).max()
    print(f"{arch} ({DATA_FORMATS[arch]}): max relative error {relative_error:.2e}")
    assert relative_error < REL_TOLERANCE
    # The logits depend on the input far above the tolerance, so a wrong layer anywhere would show.
    assert np.abs(expected[0] - expected[1]).max() > 100 * REL_TOLERANCE * np.abs(expected).max()


@pytest.mark.parametrize("arch", ARCHS)
def test_converted_model_with_batch_norm_folded_still_reproduces_pytorch(arch, converted, torch_models, images):
    """As exported for serving: the channels_last copy, BatchNorm folded (serving/fold.py)."""
    expected = torch_logits(torch_models[arch], images)
    got = np.asarray(fold_batch_norm(channels_last_copy(converted[arch]))(images, training=False))
    relative_error = np.abs(got - expected).max() / np.abs(expected).max()
    print(f"{arch} ({DATA_FORMATS[arch]}), BatchNorm folded: max relative error {relative_error:.2e}")
    assert relative_error < REL_TOLERANCE


def test_bare_state_dict_reads_like_a_wrapped_one(torch_models, checkpoints, tmp_path):
    bare = load_state_dict(save_checkpoint(torch_models["bl-resnet50"], tmp_path / "bare.pth",
                                           data_parallel=False, wrapped=False))
    wrapped = load_state_dict(checkpoints["bl-resnet50"])
    assert {"module." + key for key in bare} == set(wrapped)
    for key, value in bare.items():
        np.testing.assert_array_equal(value, wrapped["module." + key])


def test_cli_writes_keras_weights(checkpoints, torch_models, images, tmp_path, capsys):
    output = tmp_path / "bl_resnet50.weights.h5"
    assert main(["--checkpoint", checkpoints["bl-resnet50"], "--arch", "bl-resnet50", "--alpha", "2", "--beta", "4",
                 "--output", str(output)]) == 0
    model = create_model("bl-resnet50", input_shape=(*INPUT_HW, 3), data_format="channels_last", upsample="nearest")
    model.load_weights(output)
    expected = torch_logits(torch_models["bl-resnet50"], images)
    assert np.abs(np.asarray(model(images, training=False)) - expected).max() / np.abs(expected).max() < REL_TOLERANCE
    assert "wrote" in capsys.readouterr().out


def test_truncated_checkpoint_is_a_clear_error(checkpoints, tmp_path, capsys):
    data = pathlib.Path(checkpoints["bl-resnet50"]).read_bytes()
    truncated = tmp_path / "truncated.pth.tar"
    truncated.write_bytes(data[: len(data) // 2])
    with pytest.raises(ValueError, match="cannot read PyTorch checkpoint .*truncated.pth.tar"):
        load_state_dict(str(truncated))
    assert main(["--checkpoint", str(truncated), "--arch", "bl-resnet50", "--output", str(tmp_path / "w.weights.h5")]) == 1
    err = capsys.readouterr().err
    assert err.startswith("bl-net-convert: error: cannot read PyTorch checkpoint") and err.count("\n") == 1


def test_wrong_arch_lists_the_mismatches(checkpoints):
    """bL-ResNet-50 weights read as bL-ResNeXt-50: the grouped 3x3 convs (and widths) differ."""
    with pytest.raises(ValueError) as error:
        convert_checkpoint(checkpoints["bl-resnet50"], "bl-resnext50-32x4d", input_shape=(64, 64, 3))
    message = str(error.value)
    assert "does not match bl-resnext50-32x4d (alpha=2, beta=4)" in message
    assert "mis-shaped" in message and "layer1.big.0.conv1.weight (64, 64, 1, 1) vs (128, 64, 1, 1)" in message
    assert "\n" not in message


def test_missing_unexpected_and_misshaped_keys_are_all_listed(torch_models):
    state = {key: value.numpy() for key, value in torch_models["bl-resnet50"].state_dict().items()}
    del state["fc.bias"]
    state["layer5.0.conv1.weight"] = np.zeros((1, 1, 1, 1), np.float32)
    state["bn1.weight"] = np.ones(65, np.float32)
    with pytest.raises(ValueError) as error:
        convert_state_dict(state, "bl-resnet50", input_shape=(64, 64, 3))
    message = str(error.value)
    assert "1 missing: fc.bias" in message
    assert "1 unexpected: layer5.0.conv1.weight" in message
    assert "1 mis-shaped (checkpoint vs model): bn1.weight (65,) vs (64,)" in message


def test_plain_archs_have_no_official_checkpoint():
    with pytest.raises(ValueError, match="Big-Little models only.*bl-resnet50"):
        convert_state_dict({}, "resnet50")


@pytest.mark.parametrize("layer, pooled, expected", [
    ("stem_conv", False, "conv1"),
    ("stage1_big_bn", False, "bn_b0"),
    ("stage1_little_conv3", False, "l_conv2"),
    ("stage1_little_bn1", False, "bn_l0"),
    ("stage1_fusion_bn", False, "bn_bl_init"),
    ("stage2_big_block1_shortcut_conv", True, "layer1.big.0.downsample.1"),
    ("stage2_big_block1_shortcut_bn", True, "layer1.big.0.downsample.2"),
    ("stage2_little_block1_shortcut_conv", False, "layer1.little.0.downsample.0"),
    ("stage2_little_block1_shortcut_bn", False, "layer1.little.0.downsample.1"),
    ("stage3_little_expand_bn", False, "layer2.little_e.1"),
    ("stage4_fusion_block1_se_expand", False, "layer3.fusion.0.se_layer.fc2"),
    ("stage4_big_block17_conv2", False, "layer3.big.16.conv2"),
    ("stage5_block3_bn3", False, "layer4.2.bn3"),
    ("head_fc", False, "fc"),
])
def test_pytorch_name(layer, pooled, expected):
    assert pytorch_name(layer, pooled_shortcut=pooled) == expected


@pytest.mark.parametrize("layer", ["stage2_block1_conv1", "stage1_little_conv4", "stage2_big_block1_add", "stem"])
def test_pytorch_name_rejects_layers_without_counterpart(layer):
    with pytest.raises(ValueError, match="no counterpart"):
        pytorch_name(layer)
