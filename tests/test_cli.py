"""Every command line of the package through bl_net_tf/cli.py: help text on every flag, the choices of
every choice flag, one error line and the documented exit status, several commands in one process."""
import importlib
import os
import re

import pytest
import tensorflow as tf
from absl import flags
from faults import SilentDataFlow, dead_worker

from bl_net_tf import cli, profile
from bl_net_tf.data import tensorpack_loader, tfdata_loader

REPO = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))
CONSOLE_SCRIPTS = dict(re.findall(r'"([\w-]+) = (bl_net_tf[\w.]*):main"', open(os.path.join(REPO, "setup.py")).read()))
# The commands without a console script, run as python -m MODULE.
MODULE_COMMANDS = ("bl_net_tf.paper_tables", "bl_net_tf.data.benchmark", "bl_net_tf.data.sample_photos")
FLAG_LINE = re.compile(r"^  --(?:\[no\])?(\w+): ?(.*)$")


@pytest.mark.parametrize("module", [*CONSOLE_SCRIPTS.values(), *MODULE_COMMANDS])
def test_every_flag_has_help_and_every_choice_flag_its_choices(module, capsys):
    assert importlib.import_module(module).main(["--help"]) == cli.OK
    lines = capsys.readouterr().out.splitlines()
    described = {match[1]: match[2] for match in map(FLAG_LINE.match, lines) if match}
    assert described, module
    for name, text in described.items():
        assert len(text) > 10 and "no help available" not in text, (module, name, text)
    for name, (kind, _) in cli.SHARED_FLAGS.items():
        if name in described and isinstance(kind, tuple):
            assert described[name].startswith(f"<{'|'.join(kind)}>: "), (module, name)


def test_commands_in_one_process_parse_their_own_flags(capsys):
    assert profile.main(["--arch=bl-shufflenetv2-1.0x", "--alpha=1", "--image_size=32"]) == cli.OK
    assert profile.main(["--arch=bl-shufflenetv2-1.0x", "--image_size=32"]) == cli.OK  # alpha back to its default
    assert [line.split(":")[0] for line in capsys.readouterr().out.splitlines()] == [
        "bl_shufflenetv2_1.0x_a1_b4", "bl_shufflenetv2_1.0x_a2_b4"]


@pytest.mark.parametrize("argv, status, error", [
    (["--arch=bl-resnet50", "--merge=sum"], cli.USAGE, "flag --merge=sum: value should be one of <add|concat>"),
    (["--arch=bl-resnet50", "--alhpa=3"], cli.USAGE, "Unknown command line flag 'alhpa'. Did you mean: alpha ?"),
    (["--arch=bl-resnet50", "--alpha=two"], cli.USAGE, "flag --alpha=two: invalid literal for int() with base 10: "
                                                       "'two'"),
    (["bl-resnet50"], cli.USAGE, "unexpected arguments bl-resnet50: this command takes flags only (--help lists "
                                 "them)"),
    ([], cli.USAGE, "give --arch, --paper or --zoo"),
    (["--arch=bl-resnet50", "--branches=4"], cli.ERROR, "branches must be one of 2, 3 (Table 7's K), got 4"),
    (["--arch=bl-resnet51"], cli.ERROR, "unknown arch 'bl-resnet51'; allowed: "),
])
def test_an_error_is_one_line_and_its_status(argv, status, error, capsys):
    assert profile.main(argv) == status
    out, err = capsys.readouterr()
    assert out == "" and err.startswith(f"bl-net-profile: error: {error}") and err.count("\n") == 1


def _steps(dataset) -> int:
    """A command whose compiled step reads ``dataset``, as the trainer's does; returns its status.
    The TensorFlow error such a step raises names TF's nodes and carries a Python traceback."""
    def run(_):
        iterator = iter(dataset)
        step = tf.function(lambda: tf.reduce_sum(next(iterator)[-1]))
        for _ in range(3):
            step()

    return cli.main("bl-net-x", "", lambda _: None, run, [])


def test_a_failed_check_inside_an_input_pipeline_is_one_line(capsys):
    labels = tf.data.Dataset.from_tensor_slices((tf.zeros([2, 1]), tf.constant([1, -1])))
    assert _steps(labels.map(tfdata_loader._check_labels)) == cli.ERROR
    assert capsys.readouterr().err == ("bl-net-x: error: Negative label: TFRecord shards with 0-based labels need "
                                       "label_offset=0.\n")


def test_dead_tensorpack_workers_are_one_line(capsys):
    dataflow = SilentDataFlow()
    batches = tensorpack_loader._WorkerBatches(dataflow, workers=lambda: [dead_worker(3)])
    try:
        assert _steps(tf.data.Dataset.from_generator(batches, output_signature=tf.TensorSpec([2], tf.int32))) == 1
    finally:
        dataflow.release.set()  # the loader's thread ends
    assert capsys.readouterr().err == ("bl-net-x: error: the 1 Tensorpack worker processes ended (exit codes 3) and "
                                       "no batch can come; see their messages above\n")


def test_ctrl_c_and_unexpected_errors(capsys):
    def interrupted(_):
        raise KeyboardInterrupt

    assert cli.main("bl-net-x", "", lambda _: None, interrupted, []) == 130
    assert capsys.readouterr().err == "bl-net-x: interrupted\n"

    def bug(_):
        raise RuntimeError("a bug keeps its traceback")

    with pytest.raises(RuntimeError, match="a bug keeps its traceback"):
        cli.main("bl-net-x", "", lambda _: None, bug, [])


def test_the_model_flags_are_create_models_options():
    flag_values = flags.FlagValues()
    cli.define_shared(flag_values, cli.model_defaults())
    flag_values(["x", "--arch=bl-resnext50", "--cardinality=64", "--merge=concat", "--image_size=64"])
    # upsample is unset (None): create_model picks what the weights need, else bilinear.
    assert cli.model_options(flag_values) == dict(alpha=2, beta=4, cardinality=64, merge="concat", branches=2,
                                                  input_shape=(64, 64, 3))
    assert set(cli.MODEL_FLAGS) <= set(cli.SHARED_FLAGS)
