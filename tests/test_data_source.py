"""Where ``bl-net-train`` finds ImageNet without ``--data_dir``: $IMAGENET_DIR, a prepared TFDS
imagenet2012 in the TFDS data dir, else the demo digits on one device only; a paper recipe or
several devices without ImageNet is a one-line error. (conftest.py empties both for every test.)"""
import json
import logging
import os

import pytest
from absl import logging as absl_logging

from bl_net_tf import paper_tables
from bl_net_tf.training import cli, data_source, flags as training_flags

HOW = "pass --data_dir=/path/to/imagenet, set $IMAGENET_DIR, or prepare imagenet2012 in $TFDS_DATA_DIR"


def prepared_tfds(data_dir) -> str:
    """A TFDS data dir holding a prepared imagenet2012 as ``tfds build`` leaves it (its
    dataset_info.json is what says so; nothing is read before training)."""
    version = os.path.join(data_dir, "imagenet2012", "5.1.0")
    os.makedirs(version)
    with open(os.path.join(version, "dataset_info.json"), "w") as f:
        json.dump({"name": "imagenet2012", "version": "5.1.0"}, f)
    return str(data_dir)


def command(*argv) -> int:
    """``bl-net-train ARGV``, in this process; returns the exit status."""
    return cli.main(list(argv))


def test_the_order_is_data_dir_imagenet_dir_tfds_then_the_demo(tmp_path):
    tfds_dir = prepared_tfds(tmp_path / "tfds")
    both = {"IMAGENET_DIR": "/data/imagenet", "TFDS_DATA_DIR": tfds_dir}
    assert data_source.find("/mine", demo=None, devices=8, environ=both).data_dir == "/mine"
    found = data_source.find(None, demo=False, devices=8, environ=both)
    assert (found.data_dir, found.note) == ("/data/imagenet", "no --data_dir: ImageNet from $IMAGENET_DIR=/data/imagenet")
    found = data_source.find(None, demo=False, devices=8, environ={"TFDS_DATA_DIR": tfds_dir})
    assert found.data_dir == tfds_dir and found.note.endswith(f"imagenet2012 in {tfds_dir} ($TFDS_DATA_DIR)")
    empty = {"TFDS_DATA_DIR": str(tmp_path)}
    demo = data_source.find(None, demo=None, devices=1, environ=empty)
    assert demo.data_dir is None and demo.problem is None
    assert demo.note.startswith("no --data_dir: the demo digits") and str(tmp_path) in demo.note


def test_tfds_default_data_dir_is_home_tensorflow_datasets(tmp_path, monkeypatch):
    monkeypatch.setenv("HOME", str(tmp_path))
    default = prepared_tfds(tmp_path / "tensorflow_datasets")
    found = data_source.find(None, demo=None, devices=1, environ={})
    assert found.data_dir == default and found.note.endswith("(TFDS's default data dir)")


def test_without_imagenet_a_paper_recipe_or_several_devices_stop(tmp_path):
    empty = {"TFDS_DATA_DIR": str(tmp_path)}
    recipe = data_source.find(None, demo=False, devices=1, environ=empty)
    assert recipe.problem.startswith("this paper recipe trains on ImageNet and there is none") and HOW in recipe.problem
    several = data_source.find(None, demo=None, devices=8, environ=empty)
    assert several.problem.startswith("8 devices would train on the demo digits") and HOW in several.problem
    assert data_source.find(None, demo=True, devices=8, environ=empty).problem is None  # --demo: asked for
    with pytest.raises(ValueError, match=r"^--demo trains on the demo digits but --data_dir=/d was given"):
        data_source.find("/d", demo=True, devices=1, environ=empty)


@pytest.mark.parametrize("argv, message", [
    (["--recipe=bl-resnet50-a2-b4"], "this paper recipe trains on ImageNet and there is none"),
    (["--flagfile=flags/resnet50-lowres.cfg"], "this paper recipe trains on ImageNet and there is none"),
    (["--arch=bl-resnext101", "--gpus=8"], "8 devices would train on the demo digits"),
])
def test_the_command_says_how_to_point_at_imagenet(argv, message, capsys, monkeypatch):
    monkeypatch.chdir(os.path.dirname(os.path.dirname(os.path.abspath(__file__))))
    assert command(*argv) == 1
    err = capsys.readouterr().err
    assert err.startswith(f"bl-net-train: error: {message}") and HOW in err and err.count("\n") == 1


def test_print_config_shows_the_data_it_would_use(tmp_path, capsys, monkeypatch):
    # The README's quickstart: the digits, on this machine's one device.
    assert command("--arch=bl-resnet50", "--alpha=2", "--beta=4", "--export_dir=models/x", "--print_config") == 0
    out = capsys.readouterr().out.splitlines()
    assert out[0].startswith("# no --data_dir: the demo digits") and "--image_size=32" in out
    # Every paper recipe resolves without data too, showing the run it would be on ImageNet; a
    # fine-tuning recipe trains on the user's images, so without them it shows the digits demo.
    finetuning = paper_tables.finetune_flagfiles()
    for recipe in training_flags.recipes():
        assert command(f"--recipe={recipe}", "--print_config") == 0, recipe
        out = capsys.readouterr().out.splitlines()
        if recipe in finetuning:
            assert out[0].startswith("# no --data_dir: the demo digits"), recipe
            assert "--init_weights=imagenet" in out and "--batch_size=64" in out, recipe
            continue
        assert out[0].startswith("# the run would stop: this paper recipe trains on ImageNet"), recipe
        assert "# --data_dir: unset" in out and "--image_size=224" in out and "--batch_size=256" in out
    assert len(finetuning) == 7 and set(finetuning) < set(training_flags.recipes())
    monkeypatch.setenv("TFDS_DATA_DIR", prepared_tfds(tmp_path))
    assert command("--recipe=resnet50", "--print_config") == 0
    out = capsys.readouterr().out.splitlines()
    assert out[0].startswith("# no --data_dir or $IMAGENET_DIR: ImageNet from the prepared TFDS imagenet2012")
    assert f"--data_dir={tmp_path}" in out
    assert command("--recipe=resnet50", "--demo", "--print_config") == 0
    assert capsys.readouterr().out.startswith("# --demo: the demo digits")


def test_the_run_logs_where_its_imagenet_comes_from(tmp_path, caplog, capsys, monkeypatch):
    missing = str(tmp_path / "imagenet")
    monkeypatch.setenv("IMAGENET_DIR", missing)
    absl_logger = logging.getLogger("absl")  # whatever verbosity and handlers earlier tests left it
    verbosity = absl_logging.get_verbosity()
    absl_logging.set_verbosity(absl_logging.INFO)
    absl_logger.addHandler(caplog.handler)
    try:
        assert command("--recipe=resnet50", "--gpus=0", f"--model_dir={tmp_path / 'run'}") == 1
    finally:
        absl_logger.removeHandler(caplog.handler)
        absl_logging.set_verbosity(verbosity)
    assert f"no --data_dir: ImageNet from $IMAGENET_DIR={missing}" in caplog.messages
    err = capsys.readouterr().err.splitlines()
    assert err[-1] == f"bl-net-train: error: data_dir {missing!r} does not exist or is not a directory."
