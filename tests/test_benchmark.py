"""The benchmark runs end to end on tiny inputs. Speed itself is measured by it, never asserted here."""
import pytest

from bl_net_tf import benchmark

TINY = dict(batch_size=2, image_size=32, steps=2, warmup=1, num_classes=10, data_format="channels_last")


def test_cli_compares_a_bl_model_with_keras_applications(capsys):
    code = benchmark.main(["--arch", "bl-resnet50", "--vs", "keras:ResNet50", "--mode", "infer", "--batch_size", "2",
                           "--image_size", "32", "--steps", "2", "--warmup", "1", "--num_classes", "10"])
    assert code == 0
    out = capsys.readouterr().out
    assert "bl-resnet50 vs keras:ResNet50: infer, batch 2 at 32x32, float32" in out
    assert "images/s" in out and "bl-resnet50 / keras:ResNet50: speed" in out and "FLOP ratio 1.3" in out


def test_train_step_results():
    (result,) = benchmark.run(["bl-resnet50"], benchmark.Settings(mode="train", **TINY))
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
    assert benchmark.main(["--arch", "bl-resnet50", "--vs", "keras:NoSuchNet"]) == 2
    assert "keras.applications has no 'NoSuchNet'" in capsys.readouterr().err
    assert benchmark.main(["--arch", "bl-resnet51"]) == 2
    assert "unknown arch 'bl-resnet51'" in capsys.readouterr().err


def test_bare_xla_flag_means_on():
    parser = benchmark.build_parser()
    assert parser.parse_args(["--arch", "bl-resnet50", "--xla"]).xla == "on"
    assert parser.parse_args(["--arch", "bl-resnet50", "--xla", "off"]).xla == "off"
    assert parser.parse_args(["--arch", "bl-resnet50"]).xla is None  # per device: on with a GPU


def test_bad_settings_fail_at_construction():
    with pytest.raises(ValueError, match="allowed: float32, mixed_bfloat16, mixed_float16"):
        benchmark.Settings(precision="float64")
