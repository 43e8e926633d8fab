"""Pretrained weights one argument away (bl_net_tf/weights.py): every source round-trips through
``create_model(weights=...)``, a new class count keeps every other tensor, another network is one
line, ``weights="imagenet"`` without the file says where to get it, and the trainers start from
weights (``--init_weights``, ``--freeze_bn``) unless their model_dir has a checkpoint."""
import logging
import os
import shutil

import numpy as np
import pytest
import tensorflow as tf
from absl import flags

import bl_net_tf
from bl_net_tf import paper_tables, training, weights
from bl_net_tf.data import demo
from bl_net_tf.training import flags as training_flags, run_config
from bl_net_tf.training.checkpoints import model_weights
from conftest import random_weights

SIZE = 64
CLASSES = 7  # the source's (the demo digits are 10)
ARCH = dict(alpha=2, beta=4, input_shape=(SIZE, SIZE, 3))
TOLERANCE = 1e-5  # relative, same network and weights (data formats differ in float rounding only)


def relative_error(got, expected) -> float:
    return float(np.abs(np.asarray(got) - expected).max() / np.abs(expected).max())


def one_line(error) -> str:
    message = str(error.value)
    assert "\n" not in message
    return message


@pytest.fixture(scope="module")
def source():
    """A 7-class bL-ResNet-50 with random weights and BN statistics: every tensor matters."""
    model = bl_net_tf.create_model("bl-resnet50", num_classes=CLASSES, data_format="channels_last", **ARCH)
    model.set_weights(random_weights(model, seed=0))
    return model


@pytest.fixture(scope="module")
def images():
    return np.random.default_rng(1).normal(size=(2, SIZE, SIZE, 3)).astype("float32")


@pytest.fixture(scope="module")
def expected(source, images):
    return np.asarray(source(images, training=False))


@pytest.fixture(scope="module")
def files(source, tmp_path_factory):
    """The source as a .weights.h5 and as a training run (run_config.json + ckpt-7, as the trainer
    writes them)."""
    folder = tmp_path_factory.mktemp("sources")
    h5 = str(folder / "source.weights.h5")
    source.save_weights(h5)
    run = str(folder / "run")
    options = {"arch": "bl-resnet50", "alpha": 2, "beta": 4, "cardinality": None, "base_width": None, "merge": "add",
               "branches": 2, "merges": None, "upsample": "bilinear", "shortcut": "avgpool", "num_classes": CLASSES}
    os.makedirs(run)
    run_config.write(run, run_config.RunConfig(options, CLASSES, SIZE, SIZE, "official"))
    manager = tf.train.CheckpointManager(tf.train.Checkpoint(model=model_weights(source)), run, max_to_keep=1)
    return {"keras": h5, "run": run, "checkpoint": manager.save(checkpoint_number=7)}


@pytest.fixture(scope="module")
def official(tmp_path_factory):
    """A checkpoint of the official PyTorch code's structure (tests/blnet_torch_reference.py, random
    weights and BN statistics) saved as the release saves it, under the release's file name; and
    the PyTorch model."""
    from blnet_torch_reference import BLNet
    from test_convert_pytorch import randomize, save_checkpoint

    torch_model = randomize(BLNet(50), seed=5)
    folder = tmp_path_factory.mktemp("official")
    path = save_checkpoint(torch_model, folder / weights.OFFICIAL["bl-resnet50"].file_name)
    return path, torch_model


@pytest.mark.parametrize("kind, data_format", [("keras", "channels_first"), ("run", "channels_last"),
                                               ("checkpoint", "channels_last")])
def test_each_source_round_trips(kind, data_format, files, images, expected):
    """The classes come from the source (the .weights.h5's own head, the run's configuration)."""
    model = bl_net_tf.create_model("bl-resnet50", data_format=data_format, weights=files[kind], **ARCH)
    assert model.output.shape[-1] == CLASSES
    assert relative_error(model(images, training=False), expected) < TOLERANCE


def test_official_pytorch_checkpoint_gives_its_logits_and_is_converted_once(official, images, tmp_path, monkeypatch,
                                                                            caplog):
    """The conversion goes beside the file, or into the user cache when it cannot be written there
    (here: a folder stands where the cached file would go); later loads read the cached file, and
    weights="imagenet" finds the official file by its name."""
    from test_convert_pytorch import torch_logits

    path, torch_model = official
    monkeypatch.setenv("BL_NET_TF_CACHE", str(tmp_path / "cache"))
    beside = f"{path[:-len('.pth.tar')]}.{weights._sha256(path)[:16]}.weights.h5"
    os.makedirs(beside)  # the folder of the file takes no cached conversion
    caplog.set_level(logging.INFO, logger="bl_net_tf.weights")
    model = bl_net_tf.create_model("bl-resnet50", weights=path, **ARCH)  # upsample: what the weights need
    assert model.name == "bl_resnet50_a2_b4_nearest" and model.output.shape[-1] == 1000
    error = relative_error(model(images, training=False), torch_logits(torch_model, images))
    print(f"official checkpoint: relative error {error:.1e}")
    assert error < 1e-4
    cached = tmp_path / "cache" / "converted" / os.path.basename(beside)
    assert cached.is_file() and f"to {cached}" in caplog.text
    caplog.clear()
    monkeypatch.setenv(weights.WEIGHTS_DIR_ENV, os.path.dirname(path))
    again = bl_net_tf.create_model("bl-resnet50", weights="imagenet", **ARCH)
    assert "converted" not in caplog.text
    np.testing.assert_array_equal(again(images, training=False), model(images, training=False))
    with pytest.raises(ValueError) as error:
        bl_net_tf.create_model("bl-resnet50", upsample="bilinear", weights=path, **ARCH)
    assert one_line(error).endswith("needs upsample='nearest' (the official PyTorch models' structure), "
                                    "got upsample='bilinear'")


def test_a_new_class_count_keeps_every_other_tensor(source, files, caplog):
    caplog.set_level(logging.INFO, logger="bl_net_tf.weights")
    model = bl_net_tf.create_model("bl-resnet50", num_classes=4, weights=files["keras"], **ARCH)
    theirs = {variable.path: variable.numpy() for variable in source.weights}
    for variable in model.weights:
        if variable.path.startswith("head_fc/"):
            assert variable.shape[-1] == 4
        else:
            np.testing.assert_array_equal(variable.numpy(), theirs[variable.path], err_msg=variable.path)
    assert (f"bl_resnet50_a2_b4: replaced the {CLASSES}-class classifier of {files['keras']} by a new 4-class one "
            f"(head_fc/kernel, head_fc/bias newly initialised)") in caplog.text
    backbone = bl_net_tf.create_model("bl-resnet50", features_only=True, weights=files["run"], **ARCH)
    for variable in backbone.weights:
        np.testing.assert_array_equal(variable.numpy(), theirs[variable.path], err_msg=variable.path)


def test_another_network_is_one_line(files, official):
    with pytest.raises(ValueError) as error:  # β=2: other blocks, other shapes
        bl_net_tf.create_model("bl-resnet50", alpha=2, beta=2, num_classes=CLASSES, input_shape=(SIZE, SIZE, 3),
                               weights=files["keras"])
    assert one_line(error).startswith(f"{files['keras']} does not fit bl-resnet50 (alpha=2, beta=2, num_classes=7): ")
    assert "missing: stage5_block3_conv1/kernel" in str(error.value)
    with pytest.raises(ValueError) as error:  # the run's configuration says it before anything is built
        bl_net_tf.create_model("bl-resnet50", alpha=4, weights=files["run"])
    assert one_line(error) == (f"run {files['run']} (ckpt-7) needs alpha=2 (as the run trained, "
                               f"{files['run']}/run_config.json), got alpha=4")
    with pytest.raises(ValueError) as error:
        bl_net_tf.create_model("bl-resnext50", weights=files["checkpoint"])
    assert "needs arch='bl-resnet50'" in one_line(error)
    with pytest.raises(ValueError) as error:  # the converter lists what differs
        bl_net_tf.create_model("bl-resnet50", beta=2, input_shape=(SIZE, SIZE, 3), weights=official[0])
    assert "checkpoint does not match bl-resnet50 (alpha=2, beta=2)" in one_line(error)
    with pytest.raises(ValueError) as error:
        bl_net_tf.create_model("resnet50", weights="imagenet")
    assert one_line(error).startswith("weights='imagenet': the official release has ImageNet weights for bl-resnet50, ")
    with pytest.raises(FileNotFoundError, match="^no weights file or run folder at /no/such.weights.h5$"):
        bl_net_tf.create_model("bl-resnet50", weights="/no/such.weights.h5")


def test_imagenet_without_the_file_says_which_file_from_where_to_where(tmp_path, monkeypatch):
    monkeypatch.setenv("BL_NET_TF_CACHE", str(tmp_path))
    monkeypatch.delenv(weights.WEIGHTS_DIR_ENV, raising=False)
    official = weights.OFFICIAL["bl-resnext101-64x4d"]
    with pytest.raises(FileNotFoundError) as error:
        bl_net_tf.create_model("bl-resnext101", cardinality=64, weights="imagenet")
    assert one_line(error) == (f"weights='imagenet' for bl-resnext101-64x4d reads the official {official.file_name}, "
                               f"which is not in {tmp_path / 'weights'}: download it from {official.page} (the "
                               f"IBM/BigLittleNet release) into that folder, or set $BL_NET_TF_WEIGHTS_DIR to the "
                               f"folder that holds it")
    with pytest.raises(ValueError, match=r"needs alpha=2 \(the official ImageNet weights\), got alpha=4"):
        bl_net_tf.create_model("bl-resnet50", alpha=4, weights="imagenet")


def test_the_docs_table_is_the_official_one():
    with open(os.path.join(os.path.dirname(os.path.dirname(__file__)), "docs", "deployment.md")) as f:
        docs = f.read()
    start, end = "<!-- official-weights:start -->\n", "\n<!-- official-weights:end -->"
    assert docs[docs.index(start) + len(start):docs.index(end)] == weights.official_table()


# ---- the trainers -------------------------------------------------------------------------------

def resolve(**fields):
    """A trainer configuration as the command line resolves it: ``fields`` are the flags given."""
    return training.resolve(training.TrainConfig(**fields), set(fields))


def test_the_trainer_takes_the_network_of_its_init_weights(files, official):
    config = resolve(init_weights=official[0], arch="bl-resnet50")
    assert config.upsample == "nearest" and config.model_dir == "train_log/bl-resnet50-a2-b4-nearest-finetune-demo"
    assert resolve(init_weights=files["run"]).arch == "bl-resnet50"
    with pytest.raises(ValueError) as error:
        resolve(init_weights=official[0], upsample="bilinear")
    assert one_line(error).endswith("needs upsample='nearest' (the official PyTorch models' structure), "
                                    "got --upsample=bilinear")
    with pytest.raises(ValueError, match=r"needs arch='bl-resnet50' .*, got --arch=bl-resnext50$"):
        resolve(init_weights=files["run"], arch="bl-resnext50")
    with pytest.raises(ValueError, match="^freeze_bn keeps the BatchNorm statistics of --init_weights; it needs"):
        resolve(freeze_bn=True)


@pytest.mark.parametrize("name", sorted(paper_tables.finetune_flagfiles()))
def test_each_finetuning_recipe_starts_from_its_official_checkpoint(name):
    flag_values = flags.FlagValues()
    training_flags.define_flags(flag_values)
    flag_values(["bl-net-train", *training_flags.expand_recipes([f"--recipe={name}"]), "--data_dir=/my/images"])
    config = training.resolve(*training_flags.config_from_flags(flag_values))
    assert (config.init_weights, config.upsample, config.alpha, config.beta) == ("imagenet", "nearest", 2, 4)
    assert weights.OFFICIAL[weights.arch_name(config.arch)] and config.model_dir == f"train_log/{name}"
    assert (config.epochs, config.batch_size, config.peak_lr, config.warmup) == (20, 64, 0.0025, 0.0)


def test_the_trainer_fine_tunes_from_init_weights(files, tmp_path, caplog):
    """Two steps on 10 classes of digits from 7-class weights with frozen BN statistics: the 10-class
    head is new, BN statistics stay the weights', the rest trains; then the run's own checkpoint
    wins over --init_weights."""
    digits, data = demo.prepare(), tmp_path / "digits"
    for split, count in (("train", 2), ("val", 1)):  # a few of the demo's JPEGs: a quick evaluation
        for folder in sorted(os.listdir(os.path.join(digits, split))):
            os.makedirs(data / split / folder)
            for name in sorted(os.listdir(os.path.join(digits, split, folder)))[:count]:
                shutil.copy(os.path.join(digits, split, folder, name), data / split / folder)
    caplog.set_level(logging.INFO)
    fields = dict(arch="bl-resnet50", init_weights=files["keras"], freeze_bn=True, epochs=1, steps_per_epoch=2,
                  batch_size=8, lr=0.001, image_size=32, seed=0, gpus=0, data_dir=str(data),
                  model_dir=str(tmp_path / "run"))
    config = resolve(**fields)
    session = training.build(config)
    loaded = {variable.path: variable.numpy() for variable in session.model.weights}
    assert f"loaded 355 of the 357 variables of bl_resnet50_a2_b4 from {files['keras']}" in caplog.text
    assert f"replaced the {CLASSES}-class classifier" in caplog.text and "by a new 10-class one" in caplog.text
    errors = training.train(session)
    assert errors.images == 10 and np.isfinite(errors.loss)
    after = {variable.path: variable.numpy() for variable in session.model.weights}
    for name in ("stage2_big_block1_bn1/moving_mean", "stage4_fusion_block1_bn3/moving_variance"):
        np.testing.assert_array_equal(after[name], loaded[name])
    for name in ("stage5_block3_bn3/gamma", "stage5_block3_conv3/kernel", "head_fc/kernel"):
        assert not np.array_equal(after[name], loaded[name]), name
    caplog.clear()
    training.build(config)
    assert f"not loaded: the run resumes from its own checkpoint {tmp_path / 'run' / 'ckpt-2'}" in caplog.text


def test_the_speech_trainer_starts_from_a_speech_run(tmp_path, caplog):
    from bl_net_tf.speech import SpeechTrainConfig, demo as speech_demo, train, write_utterances

    arch = dict(arch="resnet22-speech", data_format="channels_last")
    source = bl_net_tf.create_model(num_classes=4, **arch)
    source.set_weights(random_weights(source, seed=3))
    os.makedirs(tmp_path / "run")
    source.save_weights(tmp_path / "run" / weights.SPEECH_RUN_WEIGHTS)  # what train_speech.py leaves
    records = str(tmp_path / "train.tfrecord")
    write_utterances(records, [speech_demo.utterance(np.random.default_rng(0))])
    caplog.set_level(logging.INFO, logger="bl_net_tf.weights")
    config = SpeechTrainConfig(train_records=records, num_classes=6, batch_size=8, epochs=1, steps_per_epoch=1,
                               lr=1e-9, shuffle_buffer=0, xla="off", init_weights=str(tmp_path / "run"), **arch)
    model = bl_net_tf.create_model(num_classes=6, **arch)
    train(config, model=model)
    assert "replaced the 4-class classifier" in caplog.text
    theirs = {variable.path: variable.numpy() for variable in source.trainable_weights}
    for variable in model.trainable_weights:
        if not variable.path.startswith("head_fc/"):
            np.testing.assert_allclose(variable.numpy(), theirs[variable.path], atol=1e-6, err_msg=variable.path)
