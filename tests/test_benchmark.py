"""The benchmark runs end to end on tiny inputs. Speed itself is measured by it, never asserted here."""
import dataclasses

import pytest
from absl import flags

from bl_net_tf import benchmark, create_model
from bl_net_tf.benchmark_models import check_name
from bl_net_tf.export import export_saved_model

TINY = dict(batch_size=2, image_size=32, steps=2, warmup=1, num_classes=10, data_format="channels_last")
TINY_FLAGS = ["--batch_size", "2", "--image_size", "32", "--steps", "1", "--warmup", "1", "--num_classes", "10"]
# The cheapest Big-Little model and its baseline, for the end-to-end runs.
SMALL = ("bl-shufflenetv2-1.0x", "shufflenetv2-1.0x")


def test_cli_compares_a_bl_model_with_keras_applications(capsys):
    code = benchmark.main(["--arch", "bl-resnet50", "--vs", "keras:ResNet50", "--mode", "infer", "--batch_size", "2",
                           "--image_size", "32", "--steps", "2", "--warmup", "1", "--num_classes", "10"])
    assert code == 0
    out = capsys.readouterr().out
    assert "bl-resnet50 vs keras:ResNet50: infer, batch 2 at 32x32, float32" in out
    assert "images/s" in out and "bl-resnet50 / keras:ResNet50: speed" in out and "FLOP ratio 1.3" in out


def test_train_step_results():
    (result,) = benchmark.run_models(["bl-resnet50"], benchmark.Settings(mode="train", **TINY))
    assert len(result.step_seconds) == 2 and result.images_per_second > 0
    assert result.macs > 0 and result.params > 20e6
    assert result.peak_bytes is None or result.peak_bytes > 0


def test_markdown_row():
    settings = benchmark.Settings(**TINY)
    a = benchmark.Result("bl-resnet50", [1.0, 1.0], 2, 100, 1, 2**30)
    b = benchmark.Result("resnet50", [2.0, 2.0], 2, 143, 1, 2 * 2**30)
    assert benchmark.format_markdown([a, b], settings) == (
        "| bl-resnet50 | resnet50 | infer | 2.00 | 1.00 | 2.00x | 1.43x | 1.00 | 2.00 |")


def test_unknown_model_fails_before_building_anything(capsys):
    assert benchmark.main(["--arch", "bl-resnet50", "--vs", "keras:NoSuchNet"]) == 1
    assert capsys.readouterr().err == "bl-net-benchmark: error: keras.applications has no 'NoSuchNet'\n"
    assert benchmark.main(["--arch", "bl-resnet51"]) == 1
    assert capsys.readouterr().err.startswith("bl-net-benchmark: error: unknown arch 'bl-resnet51'")
    assert benchmark.main(["--arch", "bl-resnet50", "--mixed_precision", "mixed_float16"]) == 2  # the trainer's names
    assert capsys.readouterr().err == ("bl-net-benchmark: error: flag --mixed_precision=mixed_float16: value should be "
                                       "one of <none|float16|bfloat16>\n")


def test_bad_settings_fail_at_construction():
    with pytest.raises(ValueError, match="allowed: none, float16, bfloat16"):
        benchmark.Settings(mixed_precision="float64")


@pytest.fixture(scope="module")
def export_dir(tmp_path_factory):
    model = create_model(SMALL[1], input_shape=(32, 32, 3), num_classes=10, data_format="channels_last")
    return export_saved_model(model, str(tmp_path_factory.mktemp("exports") / "shufflenet" / "1"))


def test_exports_are_timed_through_predict_images_beside_keras():
    """One made on the fly in bfloat16 (its request limit raised to the batch, 17 > the default 16),
    the folded serving network and the Keras forward pass."""
    settings = benchmark.Settings(**{**TINY, "batch_size": 17})
    names = [f"export:{SMALL[1]}@bfloat16", f"folded:{SMALL[1]}", SMALL[1]]
    results = benchmark.run_models(names, settings)
    assert [r.name for r in results] == names
    assert all(len(r.step_seconds) == 2 and r.images_per_second > 0 for r in results)
    assert results[0].macs == results[1].macs == results[2].macs > 0
    assert f"export:{SMALL[1]}@bfloat16 / folded:{SMALL[1]}: speed" in benchmark.format_text(results, settings)


def test_an_existing_export_is_timed_without_a_flop_count(export_dir):
    results = benchmark.run_models([f"saved_model:{export_dir}", SMALL[1]], benchmark.Settings(**TINY))
    assert results[0].macs is None and results[0].images_per_second > 0
    assert "FLOP ratio -" in benchmark.format_text(results, benchmark.Settings(**TINY))


def test_saved_models_also_run_in_a_tf1_session_as_tf_serving_loads_them(export_dir, capsys):
    """--saved_model_loader=session: the same probabilities as the TF2 function, timed side by side."""
    import numpy as np
    import tensorflow as tf

    from bl_net_tf.benchmark_models import build

    images = tf.constant(np.random.RandomState(0).randint(0, 256, (2, 32, 32, 3)).astype(np.uint8))
    name = f"saved_model:{export_dir}"
    function, session = (build(name, benchmark.Settings(**TINY, saved_model_loader=loader), workdir=None)
                         for loader in ("function", "session"))
    assert isinstance(session.model, tf.compat.v1.Session)
    np.testing.assert_allclose(session.step(images, None).numpy(), function.step(images, None).numpy(), atol=1e-6)
    assert benchmark.main(TINY_FLAGS + ["--arch", name, "--vs", SMALL[1], "--saved_model_loader", "session"]) == 0
    assert "SavedModels in TF1 sessions" in capsys.readouterr().out
    with pytest.raises(ValueError, match="unknown saved_model_loader .tf1.; allowed: function, session"):
        benchmark.Settings(**TINY, saved_model_loader="tf1")


def test_saved_model_errors(export_dir):
    with pytest.raises(ValueError, match="no SavedModel in"):
        check_name(f"saved_model:{export_dir}/missing")
    with pytest.raises(ValueError, match="only infer; use --mode infer"):
        check_name(f"export:{SMALL[0]}", mode="train")
    with pytest.raises(ValueError, match="allowed: float32, bfloat16, float16"):
        check_name(f"export:{SMALL[0]}@int8")
    with pytest.raises(ValueError, match="takes 32x32 images; pass --image_size 32"):
        benchmark.run_models([f"saved_model:{export_dir}"], benchmark.Settings(**{**TINY, "image_size": 64}))
    with pytest.raises(ValueError, match="takes at most 16 images per request; pass --batch_size 16 or export "
                                         "with --max_batch 32"):
        benchmark.run_models([f"saved_model:{export_dir}"], benchmark.Settings(**{**TINY, "batch_size": 32}))


def test_gpu_suite_runs_in_float32_on_a_cpu_and_writes_its_table(monkeypatch, tmp_path, capsys):
    """The suite's own rows are the 50/101-layer models (too slow here): one small row instead."""
    for name in {name for row in benchmark.SUITES["gpu"].rows for name in row}:
        check_name(name, "train")
    monkeypatch.setitem(benchmark.SUITES, "gpu", dataclasses.replace(benchmark.SUITES["gpu"], rows=(SMALL,)))
    output = tmp_path / "gpu.md"
    assert benchmark.main(["--suite", "gpu", *TINY_FLAGS, "--output", str(output)]) == 0
    lines = output.read_text().splitlines()
    assert lines[0].startswith("device: ") and "no GPU" in lines[0]
    assert lines[1].startswith("settings: batch 2 at 32x32, float32, channels_last, XLA off")
    assert "\n".join(lines[2:4]) == benchmark.MARKDOWN_HEADER
    assert [line.split(" | ")[:3] for line in lines[4:]] == [[f"| {SMALL[0]}", SMALL[1], mode] for mode in benchmark.MODES]
    assert capsys.readouterr().out.splitlines()[:len(lines)] == lines


def test_gpu_suite_settings_with_a_gpu(monkeypatch):
    monkeypatch.setattr(benchmark, "_has_gpu", lambda: True)

    def parse(argv):
        flag_values = flags.FlagValues()
        benchmark.define_flags(flag_values)
        flag_values(["bl-net-benchmark", *argv])
        return flag_values

    gpu = benchmark.resolve_settings(parse(["--suite", "gpu"]), "train", benchmark.SUITES["gpu"])
    assert (gpu.data_format, gpu.xla, gpu.dtype_policy) == ("channels_first", True, "mixed_float16")
    mine = benchmark.resolve_settings(parse(["--suite", "gpu", "--mixed_precision", "none", "--xla", "off",
                                             "--data_format", "channels_last"]), "train", benchmark.SUITES["gpu"])
    assert (mine.data_format, mine.xla, mine.dtype_policy) == ("channels_last", False, "float32")
    settings = benchmark.resolve_settings(parse(["--suite", "all"]), "infer", benchmark.SUITES["all"])
    assert settings.dtype_policy == "float32"


def test_repeated_runs_summarise_each_speed_up():
    a = benchmark.Result("bl-resnet101", [1.0], 32, 1, 1, None)
    runs = [[a, benchmark.Result("keras:ResNet101", [seconds], 32, 2, 1, None)] for seconds in (1.8, 2.0, 1.9)]
    assert benchmark.format_repeats(runs) == (
        "  bl-resnet101 / keras:ResNet101 over 3 runs: 1.80x 2.00x 1.90x (min 1.80x, median 1.90x)")
