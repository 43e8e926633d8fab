"""``python -m bl_net_tf.export --model_dir=M``: a training run's model_dir alone is enough.

The trainer's build (bl-resnet50 on the demo digits, 32x32) writes run_config.json and a
checkpoint, as a run does; the exporter rebuilds the network from that file, loads the checkpoint
and serves the trainer's evaluation transform."""
import glob
import json
import os
import re
import shutil

import keras
import numpy as np
import pytest
import tensorflow as tf

from bl_net_tf import training
from bl_net_tf.data import demo, folder, imagenet_dataset
from bl_net_tf.export import main
from bl_net_tf.serving.preprocess import DEFAULT_MAX_BATCH as MAX_BATCH
from bl_net_tf.training import run_config
from test_export import randomize

SIZE = 32  # the demo's
DIGITS = [f"digit_{d}" for d in range(10)]


def build(model_dir, **kwargs):
    fields = dict(model_dir=str(model_dir), epochs=1, steps_per_epoch=1, gpus=0)
    return training.build(training.resolve(training.TrainConfig(**fields), set(fields)), **kwargs)


@pytest.fixture(scope="module")
def run(tmp_path_factory):
    """A run's model_dir with one checkpoint (BN statistics and classifier randomised, so that the
    outputs are far from uniform); returns (model_dir, the trainer's model)."""
    model_dir = tmp_path_factory.mktemp("run") / "bl-resnet50"
    keras.utils.set_random_seed(0)  # the same weights in every run
    session = build(model_dir)
    randomize(session.model)
    session.checkpointer.save()
    return str(model_dir), session.model


@pytest.fixture(scope="module")
def exported(run, tmp_path_factory):
    model_dir, _ = run
    export_dir = str(tmp_path_factory.mktemp("models") / "digits" / "1")
    assert main(["--model_dir", model_dir, "--export_dir", export_dir]) == 0
    return tf.saved_model.load(export_dir)


def test_the_trainer_writes_what_the_run_is(run):
    model_dir, _ = run
    with open(os.path.join(model_dir, run_config.FILE_NAME)) as handle:
        written = json.load(handle)
    assert written == {
        "format_version": 1,
        "model": {"arch": "bl-resnet50", "alpha": 2, "beta": 4, "cardinality": None, "base_width": None,
                  "merge": "add", "branches": 2, "merges": None, "upsample": "bilinear", "shortcut": "avgpool",
                  "num_classes": 10},
        "num_classes": 10, "image_size": SIZE, "eval_image_size": SIZE, "eval_protocol": "official",
        "class_names": DIGITS,
    }


def test_an_eval_only_run_keeps_what_the_training_wrote(run):
    """An evaluation of the same model_dir with other settings (the @256 recipes: another size; here,
    the demo evaluating at its own size only, another protocol) leaves the export what the training
    made."""
    model_dir, _ = run
    path = os.path.join(model_dir, run_config.FILE_NAME)
    with open(path) as handle:
        before = handle.read()
    fields = dict(model_dir=model_dir, epochs=1, steps_per_epoch=1, gpus=0, eval_only=True, eval_protocol="fraction")
    training.build(training.resolve(training.TrainConfig(**fields), set(fields)))
    with open(path) as handle:
        assert handle.read() == before


def test_serving_default_gives_the_trainers_outputs_on_the_validation_files(run, exported):
    """Validation files' bytes through serving_default = the trainer's model on the tf.data
    evaluation batches of the same files: one transform, one network, one set of weights."""
    _, model = run
    root = demo.prepare()
    files = folder.list_images(root, "val")
    batches = imagenet_dataset(root, "val", MAX_BATCH, image_size=SIZE)  # in the listing's order
    served, expected = [], []
    for start, (images, _) in zip(range(0, 4 * MAX_BATCH, MAX_BATCH), batches):
        blobs = [open(path, "rb").read() for path in files.paths[start:start + MAX_BATCH]]
        outputs = exported.signatures["serving_default"](image_bytes=tf.constant(blobs))
        served.append(outputs["probabilities"].numpy())
        expected.append(tf.nn.softmax(model(images, training=False)).numpy())
        names = outputs["class_names"].numpy().astype(str)
        np.testing.assert_array_equal(names, np.asarray(DIGITS)[outputs["classes"].numpy()])
    served, expected = np.concatenate(served), np.concatenate(expected)
    assert len(served) == 4 * MAX_BATCH
    assert expected.max(axis=1).mean() > 0.3  # far from uniform (0.1)
    np.testing.assert_allclose(served, expected, atol=1e-4)


def test_flags_that_contradict_the_run_are_one_line_errors(run, tmp_path, capsys):
    model_dir, _ = run
    export_dir = str(tmp_path / "out" / "1")
    config_path = os.path.join(model_dir, run_config.FILE_NAME)
    for flags, error in [
        (["--alpha", "4"], f"--alpha=4 contradicts the run's alpha=2 ({config_path}); leave the flag out"),
        (["--arch", "resnet50"], f"--arch=resnet50 contradicts the run's arch=bl-resnet50 ({config_path}); "
                                 f"leave the flag out"),
        (["--num_classes", "1000"], f"--num_classes=1000 contradicts the run's num_classes=10 ({config_path}); "
                                    f"leave the flag out"),
        (["--weights", "x.weights.h5"], "give one of --model_dir (or --checkpoint), --weights, --pytorch_checkpoint; "
                                        "got --model_dir/--checkpoint, --weights"),
    ]:
        assert main(["--model_dir", model_dir, "--export_dir", export_dir, *flags]) == 1
        assert capsys.readouterr().err == f"bl-net-export: error: {error}\n"
    missing = os.path.join(model_dir, "ckpt-999")
    assert main(["--checkpoint", missing, "--export_dir", export_dir]) == 1
    assert re.fullmatch(rf"bl-net-export: error: cannot load the weights of checkpoint {re.escape(missing)} into .*\n",
                        capsys.readouterr().err)
    assert main(["--model_dir", str(tmp_path), "--export_dir", export_dir]) == 1
    assert capsys.readouterr().err == (f"bl-net-export: error: {tmp_path / run_config.FILE_NAME} does not exist: "
                                       f"--model_dir must be the model_dir of a train_imagenet.py run\n")
    assert not os.path.exists(export_dir)


def test_the_newest_checkpoint_that_restores_is_exported_as_the_trainer_resumes(run, tmp_path, capsys, caplog):
    """Checkpoints are found by their files, newest first, as the trainer finds them: a garbled
    ``checkpoint`` state file is not read, a truncated newest checkpoint is skipped with a log line."""
    model_dir, _ = run
    damaged = tmp_path / "damaged"
    shutil.copytree(model_dir, damaged)
    (intact,) = {path.rsplit(".", 1)[0] for path in glob.glob(str(damaged / "ckpt-*.index"))}
    for path in glob.glob(f"{intact}.*"):  # a newer copy of it, its data file cut in half
        shutil.copy(path, path.replace(os.path.basename(intact), "ckpt-99"))
    (data,) = glob.glob(str(damaged / "ckpt-99.data-*"))
    os.truncate(data, os.path.getsize(data) // 2)
    (damaged / "checkpoint").write_bytes(b"\x00 not a checkpoint state")
    assert main(["--model_dir", str(damaged), "--export_dir", str(tmp_path / "out" / "1")]) == 0
    assert capsys.readouterr().out.startswith(f"exported {intact} to {tmp_path / 'out' / '1'} ")
    assert any(record.getMessage().startswith(f"skipping checkpoint {damaged / 'ckpt-99'}: it is unreadable")
               for record in caplog.records)


def test_a_run_of_a_custom_model_says_how_to_export_it(tmp_path, capsys):
    def small(num_classes, input_shape, data_format):
        images = keras.Input(input_shape)
        pooled = keras.layers.GlobalAveragePooling2D()(images)
        return keras.Model(images, keras.layers.Dense(num_classes)(pooled))

    session = build(tmp_path / "custom", model_fn=small)
    session.checkpointer.save()
    assert main(["--model_dir", str(tmp_path / "custom"), "--export_dir", str(tmp_path / "out" / "1")]) == 1
    assert capsys.readouterr().err == (f"bl-net-export: error: {tmp_path / 'custom'} trained a custom model (model_fn): "
                                       f"export it from Python with bl_net_tf.export.export_saved_model\n")
