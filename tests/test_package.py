"""The installable package: the wheel's LICENSE, flagfiles and console scripts, the packaged flagfiles
as ``--recipe`` from an install without the checkout, and ``--print_config``."""
import dataclasses
import glob
import hashlib
import importlib.metadata
import os
import shutil
import subprocess
import sys
import textwrap
import types
import zipfile

import pytest
from absl import flags

from bl_net_tf.training import cli, config as cfg, flags as training_flags

REPO = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))
FLAGFILES = sorted(glob.glob(os.path.join(REPO, "flags", "*.cfg")))
RECIPES = [os.path.basename(path)[:-len(".cfg")] for path in FLAGFILES]
# sha256 of https://www.apache.org/licenses/LICENSE-2.0.txt, the canonical text (also the LICENSE
# of absl-py, ml_dtypes, dm-tree, tensorflow-datasets and googleapis-common-protos).
APACHE_2_0_SHA256 = "cfc7749b96f63bd31c3c42b5c471bf756814053e847c10f3eb003417bc523d30"
CONSOLE_SCRIPTS = {"bl-net-train", "bl-net-train-speech", "bl-net-export", "bl-net-convert", "bl-net-profile",
                   "bl-net-benchmark", "bl-net-doctor"}


@pytest.fixture(scope="module")
def wheel(tmp_path_factory):
    """The wheel of the checkout (built from a copy of it, so the build leaves no files behind):
    its file names, and the folder it was unpacked into as pip would install it."""
    root = tmp_path_factory.mktemp("wheel")
    source = root / "source"
    source.mkdir()
    for name in ("setup.py", "README.md", "LICENSE"):
        shutil.copy(os.path.join(REPO, name), source / name)
    for name in ("bl_net_tf", "flags"):
        shutil.copytree(os.path.join(REPO, name), source / name, ignore=shutil.ignore_patterns("__pycache__"))
    subprocess.run([sys.executable, "-m", "pip", "wheel", "--no-deps", "--no-build-isolation", "--no-index",
                    "--quiet", "-w", str(root / "dist"), str(source)], check=True, capture_output=True)
    (path,) = glob.glob(str(root / "dist" / "*.whl"))
    with zipfile.ZipFile(path) as archive:
        archive.extractall(root / "site")
        names = set(archive.namelist())
    (info,) = glob.glob(str(root / "site" / "*.dist-info"))
    return types.SimpleNamespace(names=names, site=root / "site", info=info,
                                 dist=importlib.metadata.Distribution.at(info))


def read(path) -> bytes:
    with open(path, "rb") as f:
        return f.read()


def test_the_license_is_the_apache_2_0_text_verbatim():
    with open(os.path.join(REPO, "LICENSE"), "rb") as f:
        assert hashlib.sha256(f.read()).hexdigest() == APACHE_2_0_SHA256


def test_the_wheel_holds_the_license_the_flagfiles_and_the_modules(wheel):
    assert read(os.path.join(wheel.info, "licenses", "LICENSE")) == read(os.path.join(REPO, "LICENSE"))
    metadata = wheel.dist.metadata  # setuptools writes License, or License-Expression (PEP 639) from 77 on
    assert (metadata["License-Expression"] or metadata["License"]) == "Apache-2.0"
    for path in FLAGFILES:  # flags/ is their one source; the wheel carries them as bl_net_tf/flags
        assert read(wheel.site / "bl_net_tf" / "flags" / os.path.basename(path)) == read(path)
    assert len([name for name in wheel.names if name.startswith("bl_net_tf/flags/")]) == len(FLAGFILES)
    modules = glob.glob(os.path.join(REPO, "bl_net_tf", "**", "*.py"), recursive=True)
    assert {os.path.relpath(path, REPO) for path in modules} <= wheel.names
    assert {point.name for point in wheel.dist.entry_points.select(group="console_scripts")} == CONSOLE_SCRIPTS


def test_every_console_script_loads_a_callable(wheel):
    for point in wheel.dist.entry_points.select(group="console_scripts"):
        assert callable(point.load()), point


def test_an_install_without_the_checkout_trains_paper_rows_by_name(wheel, tmp_path):
    site, empty = wheel.site, tmp_path / "empty"
    empty.mkdir()
    script = textwrap.dedent("""
        import bl_net_tf
        from bl_net_tf.training import cli, flags as training_flags

        print("package:", bl_net_tf.__file__)
        print("recipes:", training_flags.recipe_dir())
        for argv in (["--recipe=list"], ["--recipe=bl-resnext101-32x4d-a2-b4", "--print_config"]):
            assert cli.main(argv) == 0
    """)
    env = {**os.environ, "PYTHONPATH": str(site), "CUDA_VISIBLE_DEVICES": "", "TF_CPP_MIN_LOG_LEVEL": "2"}
    result = subprocess.run([sys.executable, "-c", script], cwd=empty, env=env, capture_output=True, text=True,
                            timeout=300)
    assert result.returncode == 0, result.stderr[-3000:]
    lines = result.stdout.splitlines()
    assert lines[0] == f"package: {site / 'bl_net_tf' / '__init__.py'}"
    assert lines[1] == f"recipes: {site / 'bl_net_tf' / 'flags'}"
    assert [line.split()[0] for line in lines[2:2 + len(RECIPES)]] == RECIPES
    config = lines[2 + len(RECIPES):]
    for line in ("--arch=bl-resnext101-32x4d", "--alpha=2", "--beta=4", "--epochs=110", "--batch_size=256", "--lr=0.1",
                 "--lr_schedule=cosine", "--image_size=224", "--model_dir=train_log/bl-resnext101-32x4d-a2-b4"):
        assert line in config


def parse(*argv, expand=True):
    flag_values = flags.FlagValues()
    training_flags.define_flags(flag_values)
    flag_values(["bl-net-train", *(training_flags.expand_recipes(list(argv)) if expand else argv)])
    return flag_values


def resolved(flag_values):
    return cfg.resolve(*training_flags.config_from_flags(flag_values))


@pytest.mark.parametrize("recipe", RECIPES)
def test_print_config_lists_every_field_and_reads_back_as_the_same_config(recipe, tmp_path):
    config = resolved(parse(f"--recipe={recipe}", "--data_dir=/data/imagenet"))
    text = training_flags.format_config(config)
    names = [line.lstrip("# ").split("=")[0].split(":")[0] for line in text.splitlines()]
    assert names == [f"--{field.name}" for field in dataclasses.fields(cfg.TrainConfig)]
    path = tmp_path / "printed.cfg"
    path.write_text(text + "\n")
    again = resolved(parse(f"--flagfile={path}"))
    assert again == dataclasses.replace(config, lr=config.peak_lr, warmup_epochs=config.warmup)


def test_a_recipe_is_read_where_it_stands():
    assert resolved(parse("--recipe=resnet50", "--epochs=90", "--data_dir=/d")).epochs == 90
    assert resolved(parse("--epochs=90", "--recipe=resnet50", "--data_dir=/d")).epochs == 110  # the file's
    config = resolved(parse("--recipe", "bl-resnet50-a4-b2", "--data_dir=/d"))
    assert (config.arch, config.alpha, config.beta) == ("bl-resnet50", 4, 2)
    with pytest.raises(ValueError, match=r"^unknown recipe 'bl-resnet42'; allowed: list, bl-resnet101-a1-b1, "):
        training_flags.expand_recipes(["bl-net-train", "--recipe=bl-resnet42"])
    argv = ["bl-net-train", "--", "--recipe=bl-resnet42"]  # after "--": not a flag
    assert training_flags.expand_recipes(argv) == argv


def test_recipe_list_names_every_flagfile_with_its_paper_row(tmp_path, monkeypatch):
    lines = training_flags.format_recipes().splitlines()
    assert [line.split()[0] for line in lines] == RECIPES
    for line, path in zip(lines, FLAGFILES):
        with open(path, encoding="utf-8") as f:
            header = f.readline()[1:].strip()
        assert header and line.split(None, 1)[1].startswith(header)
    # The description is the header comment's first sentence, which may span lines.
    (tmp_path / "a.cfg").write_text("# Paper Table 1: A, alpha=2.\n# bl-net-train --recipe=a\n--arch=a\n")
    (tmp_path / "b@256.cfg").write_text("# Paper Table 2: B@256: the model\n# of b.cfg, at 256.\n# more\n--arch=b\n")
    (tmp_path / "c.cfg").write_text("--arch=c\n")
    monkeypatch.setattr(training_flags, "recipe_dir", lambda: str(tmp_path))
    assert training_flags.recipes() == {"a": "Paper Table 1: A, alpha=2.", "b@256": "Paper Table 2: B@256: the model "
                                        "of b.cfg, at 256.", "c": ""}


def test_the_command_prints_the_config_without_touching_data(capsys):
    assert cli.main(["--recipe=bl-resnet50-a2-b4", "--data_dir=/no/such/imagenet", "--gpus=8", "--print_config"]) == 0
    out = capsys.readouterr().out.splitlines()
    assert "--data_dir=/no/such/imagenet" in out and "--gpus=8" in out and "# --seed: unset" in out
    assert cli.main(["--recipe=resnet50", "--epochs=0", "--print_config"]) == 1
    assert capsys.readouterr().err.strip() == "bl-net-train: error: epochs must be an integer >= 1, got 0"
    assert cli.main(["--recipe=bl-resnet42"]) == 2
    assert capsys.readouterr().err.startswith("bl-net-train: error: unknown recipe 'bl-resnet42'; allowed: list, ")
    # Without --data_dir the configuration is the demo's, and says so.
    assert cli.main(["--print_config"]) == 0
    out = capsys.readouterr().out.splitlines()
    assert out[0].startswith("# no --data_dir: the demo digits") and "--image_size=32" in out
