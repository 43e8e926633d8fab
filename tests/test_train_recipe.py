"""The training recipe without training: flags and flagfiles, the learning-rate schedule, the
optimizer and weight decay against Tensorpack's, losses and errors, bad configurations."""
import glob
import json
import math
import os

import keras
import numpy as np
import pytest
import tensorflow as tf
from absl import flags

import bl_net_tf
from bl_net_tf import paper_tables
from bl_net_tf.models import validate_model_options
from bl_net_tf.training import config as cfg
from bl_net_tf.training import distribute, optimizer as optimizers, run_config, schedule as schedules, steps
from bl_net_tf.training.flags import config_from_flags, define_flags
from bl_net_tf.training.progress import Errors, parse_eval_line

REPO = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))
FLAGFILES = sorted(glob.glob(os.path.join(REPO, "flags", "*.cfg")))
PAPER_FLAGFILES = [path for path in FLAGFILES if os.path.basename(path)[:-len(".cfg")] in paper_tables.flagfiles()]


def parse(*argv):
    """A config from command-line arguments, as train_imagenet.py makes it (fresh flags each time)."""
    flag_values = flags.FlagValues()
    define_flags(flag_values)
    flag_values(["train_imagenet.py", *argv])
    config, explicit = config_from_flags(flag_values)
    return cfg.resolve(config, explicit)


# ---- flags and flagfiles ----------------------------------------------------------------------

def test_defaults_are_the_papers_recipe():
    config = parse("--data_dir=/data/imagenet")
    assert (config.arch, config.batch_size, config.epochs, config.lr_schedule) == ("bl-resnet50", 256, 110, "cosine")
    assert (config.peak_lr, config.warmup, config.weight_decay, config.momentum) == (0.1, 0.0, 1e-4, 0.9)
    assert (config.image_size, config.eval_image_size, config.label_smoothing) == (224, None, 0.0)
    assert config.model_dir == os.path.join("train_log", "bl-resnet50-a2-b4")


def test_lr_scales_with_the_batch_and_warms_up_as_tensorpack():
    config = parse("--data_dir=/d", "--batch_size=1024")
    assert config.peak_lr == pytest.approx(0.4) and config.warmup == 3.0
    assert parse("--data_dir=/d", "--batch_size=1024", "--warmup_epochs=5").warmup == 5.0
    assert parse("--data_dir=/d", "--batch_size=128").warmup == 0.0


def test_demo_defaults_fill_only_the_flags_not_given():
    config = parse("--arch=bl-resnet50")
    assert config.demo
    for name, value in cfg.DEMO_DEFAULTS.items():
        assert getattr(config, name) == value
    assert config.eval_image_size == config.image_size
    assert config.model_dir.endswith("-demo")
    config = parse("--epochs=3", "--image_size=64", "--lr=0.01")
    assert (config.epochs, config.image_size, config.eval_image_size, config.peak_lr) == (3, 64, 64, 0.01)
    assert config.batch_size == cfg.DEMO_DEFAULTS["batch_size"]
    # A shorter demo warms up for the same share of its epochs.
    assert config.warmup == pytest.approx(3 * cfg.DEMO_DEFAULTS["warmup_epochs"] / cfg.DEMO_DEFAULTS["epochs"])
    assert parse("--epochs=3", "--warmup_epochs=0").warmup == 0


def test_the_flagfiles_are_the_paper_table_written_out(tmp_path):
    """flags/ is paper_tables.ROWS of Tables 1, 2, 6, 7, 8 and 11 as the generator writes them, byte for
    byte: a row and its file cannot drift apart (after changing the table: python -m
    bl_net_tf.paper_tables --write_flagfiles=flags)."""
    assert paper_tables.main(["--write_flagfiles", str(tmp_path)]) == 0
    written = sorted(os.listdir(tmp_path))
    assert written == [os.path.basename(path) for path in FLAGFILES]
    assert len(PAPER_FLAGFILES) == len(paper_tables.rows(*paper_tables.FLAGFILE_TABLES)) == 37
    assert len(written) == 37 + len(paper_tables.finetune_flagfiles()) == 44  # and a fine-tuning one per official file
    for name in written:
        assert (tmp_path / name).read_bytes() == open(os.path.join(REPO, "flags", name), "rb").read(), name


def test_docs_list_every_recipe():
    with open(os.path.join(REPO, "docs", "training.md"), encoding="utf-8") as f:
        docs = f.read()
    assert [path for path in FLAGFILES if f"`{os.path.basename(path)[:-4]}`" not in docs] == []


@pytest.mark.parametrize("path", PAPER_FLAGFILES, ids=lambda p: os.path.basename(p))
def test_flagfile_parses_to_a_valid_paper_config(path):
    config = parse(f"--flagfile={path}", "--data_dir=/data/imagenet")
    name = os.path.basename(path)[:-4]
    assert name.split("@")[0] == config.run_name  # the run's own name, options included
    assert config.model_dir == f"train_log/{name.split('@')[0]}"
    if name.endswith("@256"):  # the same model, evaluated on 256 crops
        assert config.eval_only and config.eval_image_size == 256
    else:
        assert (config.batch_size, config.epochs, config.peak_lr, config.lr_schedule) == (256, 110, 0.1, "cosine")
        assert (config.weight_decay, config.momentum, config.image_size) == (1e-4, 0.9, 224)


def test_no_flagfile_pins_what_the_batch_size_derives():
    """The linear-scaling rule: a user who adds --batch_size=512 after any paper recipe trains at 0.2 with
    Tensorpack's 3-epoch warm-up from 0.1 (the fine-tuning recipes pin their lower rate)."""
    for path in PAPER_FLAGFILES:
        with open(path, encoding="utf-8") as f:
            assert not [line for line in f if line.startswith(("--lr=", "--warmup_epochs="))], path
        config = parse(f"--flagfile={path}", "--data_dir=/d", "--batch_size=512")
        assert (config.peak_lr, config.warmup) == (0.2, 3.0), path


@pytest.mark.parametrize("name, options", [
    ("resnet50-lowres", dict(arch="resnet50-lowres")),
    ("resnet101-lowres", dict(arch="resnet101-lowres")),
    ("bl-resnet50-a2-b4-concat", dict(arch="bl-resnet50", merge="concat")),
    ("bl-resnet50-a2-b4-k3", dict(arch="bl-resnet50", branches=3)),
    ("bl-resnet50-a2-b4-m2", dict(arch="bl-resnet50", merges=2)),
    ("bl-resnet50-a2-b4-m1", dict(arch="bl-resnet50", merges=1)),
    ("bl-resnet101-a2-b4-m7", dict(arch="bl-resnet101", merges=7)),
])
def test_tables_6_7_and_8_are_trainable_by_name(name, options):
    config = parse(f"--flagfile={os.path.join(REPO, 'flags', name + '.cfg')}", "--data_dir=/d")
    assert {k: getattr(config, k) for k in options} == options
    model = config.model_request()  # what the trainer builds, and run_config.json records
    recorded = run_config.model_options(config, num_classes=1000)
    assert validate_model_options(**recorded, input_shape=(224, 224, 3), include_preprocessing=True) == model
    assert recorded["shortcut"] == ("conv" if "lowres" in name else "avgpool")


@pytest.mark.parametrize("name", ["bl-resnet50-a4-b4", "bl-resnext50-32x4d-a2-b4"])
def test_flagfile_builds_its_model(name):
    config = parse(f"--flagfile={os.path.join(REPO, 'flags', name + '.cfg')}", "--data_dir=/d")
    model = bl_net_tf.create_model(config.arch, alpha=config.alpha, beta=config.beta, num_classes=10,
                                   input_shape=(32, 32, 3), cardinality=config.cardinality)
    assert model.output.shape == (None, 10)


def test_a_run_config_from_before_the_shortcut_option_rebuilds_the_pooled_network(tmp_path):
    """Until the option existed every ResNet-family network had the average-pool shortcut, and its
    variables alone cannot tell it from a strided 1x1: reading such a file restores it."""
    for arch, shortcut in (("resnet50", "avgpool"), ("bl-resnet50", "avgpool"), ("shufflenetv2", None)):
        model = {"arch": arch, "alpha": 2, "beta": 4, "cardinality": None, "base_width": None, "num_classes": 10}
        (tmp_path / run_config.FILE_NAME).write_text(json.dumps(
            {"format_version": 1, "model": model, "num_classes": 10, "image_size": 32, "eval_image_size": 32,
             "eval_protocol": "official", "class_names": None}))
        assert run_config.read(str(tmp_path)).model.get("shortcut") == shortcut


@pytest.mark.parametrize("argv, message", [
    (["--arch=bl-resnet42"], "unknown arch 'bl-resnet42'"),
    (["--arch=resnet50", "--cardinality=8"], "cardinality/base_width apply to ResNeXt"),
    (["--arch=bl-resnext50-32x4d", "--alpha=3"], "alpha must divide the 64 stem channels"),  # the model's check
    (["--epochs=3", "--warmup_epochs=3"], "warmup_epochs must be in [0, epochs=3)"),
    (["--lr=-1"], "lr must be > 0"),
    (["--batch_size=0"], "batch_size must be an integer >= 1"),
    (["--eval_image_size=64"], "needs a --data_dir"),
    (["--weight_decay=0", "--weight_decay_norm"], "weight_decay_norm"),
    (["--label_smoothing=1"], "label_smoothing must be in [0, 1)"),
    (["--arch=resnet50", "--merges=2"], "merges=2 is an ablation of the bL-ResNet/ResNeXt/SE-ResNeXt archs"),
    (["--branches=4"], "branches must be one of 2, 3"),
    (["--merge=concat", "--merges=2"], "merge='concat' and merges=2 are separate ablations"),
    (["--arch=bl-resnet101", "--merges=2"], "merges=2 is not defined for depth 101; allowed: 4, 7"),
    (["--arch=shufflenetv2", "--shortcut=conv"], "shortcut applies to the ResNet/ResNeXt/SE-ResNeXt archs"),
])
def test_contradictory_or_bad_flags_fail_with_one_line(argv, message):
    with pytest.raises(ValueError) as error:
        parse(*argv)
    assert message in str(error.value) and "\n" not in str(error.value)


def test_missing_gpus_and_channels_first_on_cpu_are_refused():
    with pytest.raises(ValueError, match=r"--gpus=1 but only 0 GPU\(s\) exist"):
        distribute.create_strategy(1)
    with pytest.raises(ValueError, match="channels_first needs a GPU"):
        distribute.resolve_data_format("channels_first", on_gpu=False)
    assert distribute.resolve_data_format("auto", on_gpu=True) == "channels_first"
    assert distribute.resolve_xla("auto", on_gpu=True) and not distribute.resolve_xla("auto", on_gpu=False)


# ---- learning-rate schedule -------------------------------------------------------------------

def lr_at(schedule, epoch):
    return float(schedule(int(round(epoch * schedule.steps_per_epoch))))


def test_cosine_decays_from_the_peak_to_zero_over_the_epochs():
    schedule = schedules.LearningRate(0.1, steps_per_epoch=5000, epochs=110)
    for epoch in (0, 27.5, 55, 82.5, 110):
        assert lr_at(schedule, epoch) == pytest.approx(0.05 * (1 + math.cos(math.pi * epoch / 110)), abs=1e-7)


def test_warmup_is_linear_then_cosine_covers_the_remaining_epochs():
    schedule = schedules.LearningRate(0.4, steps_per_epoch=1000, epochs=100, warmup_epochs=3, warmup_start_lr=0.1)
    assert [lr_at(schedule, e) for e in (0, 1.5, 3)] == pytest.approx([0.1, 0.25, 0.4])
    assert lr_at(schedule, 3 + 97 / 2) == pytest.approx(0.2)
    assert lr_at(schedule, 100) == pytest.approx(0.0, abs=1e-7)


def test_step_schedule_is_tensorpacks():
    schedule = schedules.LearningRate(0.1, steps_per_epoch=100, epochs=110, kind="step")
    epochs = [0, 29.99, 30, 59.99, 60, 85, 95, 105, 109.99]
    expected = [0.1, 0.1, 1e-2, 1e-2, 1e-3, 1e-4, 1e-5, 1e-6, 1e-6]
    assert [lr_at(schedule, e) for e in epochs] == pytest.approx(expected, rel=1e-5)
    short = schedules.LearningRate(0.1, steps_per_epoch=10, epochs=11, kind="step")
    assert short.step_boundaries() == [30, 60, 80, 100, 100]  # 3, 6, 8.5, 9.5, 10.5 epochs, rounded


def test_schedule_from_config_warms_up_from_the_batch_256_rate():
    config = parse("--data_dir=/d", "--batch_size=512", "--epochs=10")
    schedule = schedules.from_config(config, steps_per_epoch=100)
    assert (schedule.peak_lr, schedule.warmup_start_lr, schedule.warmup_steps) == (0.2, 0.1, 300)


# ---- optimizer and weight decay ---------------------------------------------------------------

@pytest.fixture(scope="module")
def se_model():
    """Every kind of variable: grouped and SE convs (with biases), BN, the classifier."""
    return bl_net_tf.create_model("bl-seresnext50-32x4d", num_classes=10, input_shape=(32, 32, 3))


def test_weight_decay_covers_conv_and_fc_kernels_only(se_model):
    kernels = {id(layer.kernel) for layer in se_model.layers if isinstance(layer, (keras.layers.Conv2D,
                                                                                   keras.layers.Dense))}
    decayed = {id(v) for v in optimizers.decayed_variables(se_model)}
    assert decayed == kernels
    names = {v.path.split("/")[-1] for v in se_model.trainable_variables if id(v) not in decayed}
    assert names == {"gamma", "beta", "bias"}
    norm = {id(v) for v in optimizers.decayed_variables(se_model, include_norm=True)} - decayed
    assert {v.path.split("/")[-1] for v in se_model.trainable_variables if id(v) in norm} == {"gamma", "beta"}


def test_optimizer_matches_tensorpacks_momentum_and_l2_regularizer():
    """Ours vs tf.compat.v1.train.MomentumOptimizer(use_nesterov=True) on loss + 1e-4 * l2_loss(w)
    (= regularize_cost('.*/W', l2_regularizer(1e-4))), with a rate that changes every step."""
    rates = [0.1, 0.05, 0.02, 0.3]
    w0, b0 = np.array([[1.0, -2.0], [0.5, 3.0]], np.float32), np.array([0.7, -0.4], np.float32)
    grads = [(np.full((2, 2), s, np.float32), np.full((2,), -s, np.float32)) for s in (0.3, -0.1, 0.2, 0.05)]

    kernel, bias = keras.Variable(w0, name="kernel"), keras.Variable(b0, name="bias")
    lr = keras.optimizers.schedules.PiecewiseConstantDecay([0, 1, 2], rates)  # steps 0, 1, 2, 3
    ours = optimizers.NesterovMomentum(lr, momentum=0.9, l2=1e-4, decay=[kernel])
    for g_w, g_b in grads:
        ours.apply_gradients([(tf.constant(g_w), kernel), (tf.constant(g_b), bias)])

    ref_w, ref_b = tf.Variable(w0), tf.Variable(b0)
    rate = tf.Variable(rates[0])
    reference = tf.compat.v1.train.MomentumOptimizer(lambda: rate.read_value(), 0.9, use_nesterov=True)
    for (g_w, g_b), r in zip(grads, rates):
        rate.assign(r)
        with tf.GradientTape() as tape:
            l2 = 1e-4 * tf.nn.l2_loss(ref_w)  # Tensorpack's wd cost: 1e-4 * sum(w^2) / 2
        reg = tape.gradient(l2, ref_w)
        reference.apply_gradients([(g_w + reg, ref_w), (tf.constant(g_b), ref_b)])
    np.testing.assert_allclose(kernel.numpy(), ref_w.numpy(), rtol=1e-6)
    np.testing.assert_allclose(bias.numpy(), ref_b.numpy(), rtol=1e-6)


def test_decay_alone_shrinks_kernels_by_lr_times_decay_and_leaves_the_rest():
    kernel, gamma = keras.Variable(np.ones(3, np.float32), name="kernel"), keras.Variable(np.ones(3, np.float32),
                                                                                          name="gamma")
    opt = optimizers.NesterovMomentum(0.5, momentum=0.0, l2=1e-4, decay=[kernel])
    opt.apply_gradients([(tf.zeros(3), kernel), (tf.zeros(3), gamma)])
    np.testing.assert_allclose(kernel.numpy(), 1 - 0.5 * 1e-4, rtol=1e-7)
    np.testing.assert_array_equal(gamma.numpy(), 1.0)


# ---- losses, errors, the eval line ------------------------------------------------------------

def test_label_smoothing_matches_keras_categorical_crossentropy():
    logits = tf.constant([[2.0, 0.5, -1.0], [0.1, 0.2, 3.0]])
    labels = tf.constant([0, 1])
    ours = steps.cross_entropy(labels, logits, label_smoothing=0.1)
    keras_loss = keras.losses.CategoricalCrossentropy(from_logits=True, label_smoothing=0.1, reduction=None)
    np.testing.assert_allclose(ours, keras_loss(tf.one_hot(labels, 3), logits), rtol=1e-6)


def test_top1_and_top5_errors_count_wrong_predictions():
    logits = tf.constant(np.eye(10, dtype=np.float32)[[0, 1, 2, 3]] + np.arange(10, dtype=np.float32) * 0.01)
    labels = tf.constant([0, 9, 6, 3])  # right; the runner-up; 5th (2, 9, 8, 7, 6); right
    wrong1, wrong5 = steps.wrong_counts(labels, logits)
    assert (float(wrong1), float(wrong5)) == (2.0, 0.0)
    wrong1, wrong5 = steps.wrong_counts(tf.constant([0]), tf.constant([[0.0, 1, 2, 3, 4, 5]]))
    assert (float(wrong1), float(wrong5)) == (1.0, 1.0)


def test_eval_line_is_parseable():
    errors = Errors.from_sums([100.0, 2269.0, 651.0, 10000.0, 0.0])
    line = errors.line()
    assert line == "eval: top1_err=0.2269 top5_err=0.0651 images=10000"
    assert parse_eval_line(line) == {"top1_err": 0.2269, "top5_err": 0.0651, "images": 10000}
