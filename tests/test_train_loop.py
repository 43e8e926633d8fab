"""The training loop in this process, on the demo digits with a tiny network (the point here is
the loop, not the model): NaN stop, time-triggered checkpoints, a finished run, damaged
checkpoints, data checked before the first step, seeded runs."""
import os
import shutil

import keras
import numpy as np
import pytest
import tensorflow as tf
from faults import corrupt_body
from keras import layers

from bl_net_tf import training
from bl_net_tf.data import demo


def tiny(num_classes, input_shape, data_format):
    """uint8 RGB -> logits, with a BN so that its statistics are part of what is checkpointed."""
    inputs = keras.Input(input_shape)
    x = layers.Rescaling(1 / 255.0, name="scale")(inputs)
    x = layers.Conv2D(8, 3, strides=2, data_format=data_format, name="conv")(x)
    x = layers.BatchNormalization(name="bn")(x)
    x = layers.ReLU(name="relu")(x)
    x = layers.GlobalAveragePooling2D(data_format=data_format, name="pool")(x)
    return keras.Model(inputs, layers.Dense(num_classes, name="fc")(x))


@pytest.fixture(scope="module", autouse=True)
def digits():
    return demo.prepare()


def config(tmp_path, **fields):
    fields = {"epochs": 1, "steps_per_epoch": 4, "warmup_epochs": 0.0, "model_dir": str(tmp_path), "seed": 0, **fields}
    return training.resolve(training.TrainConfig(**fields), explicit=set(fields))


def test_a_nan_loss_stops_the_run_naming_the_step(tmp_path):
    with pytest.raises(training.TrainingDiverged, match=r"^loss is (nan|inf) at step \d+ \(epoch 1\)"):
        training.run(config(tmp_path, lr=1e38, steps_per_epoch=50), model_fn=tiny)
    assert tf.train.latest_checkpoint(str(tmp_path)) is None  # nothing after the NaN was saved


def test_checkpoints_by_time_within_an_epoch_and_keeps_the_last_three(tmp_path):
    training.run(config(tmp_path, checkpoint_minutes=1e-9), model_fn=tiny)
    state = tf.train.get_checkpoint_state(str(tmp_path))
    assert [p.rsplit("-", 1)[1] for p in state.all_model_checkpoint_paths] == ["2", "3", "4"]


def test_a_finished_run_only_evaluates_again(tmp_path, caplog):
    first = training.run(config(tmp_path), model_fn=tiny)
    with caplog.at_level("INFO"):
        again = training.run(config(tmp_path), model_fn=tiny)
    assert "training already finished at step 4" in caplog.text
    assert f"resumed from {tmp_path}/ckpt-4 at step 4" in caplog.text
    assert again == first


def test_longer_run_continues_the_schedule_where_it_stopped(tmp_path):
    training.run(config(tmp_path, epochs=1), model_fn=tiny)
    session = training.build(config(tmp_path, epochs=2), model_fn=tiny)
    assert int(session.step.numpy()) == 4 and int(session.epoch.numpy()) == 1
    # The optimizer's counter drives the (2-epoch) schedule: it is at step 4 of 8.
    assert float(session.schedule(session.optimizer.iterations)) == pytest.approx(session.config.peak_lr / 2)


def test_a_checkpoint_of_another_model_is_refused(tmp_path):
    training.run(config(tmp_path), model_fn=tiny)

    def wider(num_classes, input_shape, data_format):
        inputs = keras.Input(input_shape)
        x = layers.Conv2D(16, 3, strides=2, name="conv")(layers.Rescaling(1 / 255.0, name="scale")(inputs))
        x = layers.GlobalAveragePooling2D(name="pool")(x)
        return keras.Model(inputs, layers.Dense(num_classes, name="fc")(x))

    with pytest.raises(ValueError, match=r"ckpt-4 does not match this model and configuration .*another --model_dir"):
        training.build(config(tmp_path), model_fn=wider)
    assert os.path.isfile(tmp_path / "ckpt-4.index")  # left as it was


def test_float16_with_xla_trains_and_keeps_float32_variables(tmp_path):
    errors = training.run(config(tmp_path, mixed_precision="float16", xla="on"), model_fn=tiny)
    assert errors.images > 0 and 0 <= errors.top1_err <= 1
    session = training.build(config(tmp_path, mixed_precision="float16", xla="on"), model_fn=tiny)
    assert session.jit_compile and session.model.get_layer("conv").compute_dtype == "float16"
    assert {v.dtype for v in session.model.trainable_variables} == {"float32"}
    assert isinstance(session.optimizer, keras.optimizers.LossScaleOptimizer)
    assert keras.config.dtype_policy().name == "float32"  # the global policy is left as it was


def checkpoint_files(model_dir) -> list:
    return sorted(name for name in os.listdir(model_dir) if name.startswith("ckpt-"))


@pytest.fixture(scope="module")
def two_epochs(tmp_path_factory):
    """A model_dir holding ckpt-4 and ckpt-8 of a 2-epoch run (copied by each test that damages it)."""
    model_dir = tmp_path_factory.mktemp("two_epochs")
    training.run(config(model_dir, epochs=2), model_fn=tiny)
    return model_dir


@pytest.mark.parametrize("damage", ["truncated", "missing"])
def test_a_damaged_newest_checkpoint_falls_back_to_the_one_before(two_epochs, tmp_path, caplog, damage):
    """What a node dying while writing leaves: the newest data file cut short, or not there."""
    model_dir = shutil.copytree(two_epochs, tmp_path / "run")
    data = model_dir / "ckpt-8.data-00000-of-00001"
    if damage == "truncated":
        os.truncate(data, os.path.getsize(data) // 2)
    else:
        data.unlink()
    with caplog.at_level("INFO"):
        session = training.build(config(model_dir, epochs=3), model_fn=tiny)
    assert f"skipping checkpoint {model_dir}/ckpt-8: it is unreadable (" in caplog.text
    assert f"resumed from {model_dir}/ckpt-4 at step 4" in caplog.text and int(session.step.numpy()) == 4
    if damage == "truncated":
        training.train(session)
        assert tf.train.latest_checkpoint(str(model_dir)).endswith("ckpt-12")


@pytest.mark.parametrize("garbage", [b"model_checkpoint_path: \"ckpt-8\"\nall_model_chec", bytes(range(256))])
def test_a_garbage_state_file_does_not_restart_from_step_0(two_epochs, tmp_path, caplog, garbage):
    model_dir = shutil.copytree(two_epochs, tmp_path / "run")
    (model_dir / "checkpoint").write_bytes(garbage)
    with caplog.at_level("INFO"):
        session = training.build(config(model_dir, epochs=4), model_fn=tiny)
    assert "the checkpoint state file of" in caplog.text and int(session.step.numpy()) == 8
    assert (model_dir / "checkpoint.unreadable").read_bytes() == garbage  # kept
    assert tf.train.latest_checkpoint(str(model_dir)).endswith("ckpt-8")  # rewritten from the files
    if garbage[0] == 0:
        training.train(session)  # ckpt-12 and ckpt-16: the manager keeps the last three, as before
        assert sorted(int(p.rsplit("-", 1)[1]) for p in tf.train.get_checkpoint_state(
            str(model_dir)).all_model_checkpoint_paths) == [8, 12, 16]
        assert len(checkpoint_files(model_dir)) == 6


def test_a_complete_checkpoint_that_the_state_file_misses_is_resumed_from(two_epochs, tmp_path):
    """A kill after ckpt-8's files were written and before the state file was updated."""
    model_dir = shutil.copytree(two_epochs, tmp_path / "run")
    (model_dir / "checkpoint").write_text('model_checkpoint_path: "ckpt-4"\nall_model_checkpoint_paths: "ckpt-4"\n')
    assert int(training.build(config(model_dir, epochs=2), model_fn=tiny).step.numpy()) == 8
    assert [os.path.basename(p) for p in tf.train.get_checkpoint_state(str(model_dir)).all_model_checkpoint_paths] \
        == ["ckpt-4", "ckpt-8"]  # rewritten: both are counted among the three kept


def test_checkpoints_that_cannot_be_restored_stop_the_run_unless_start_fresh(tmp_path, caplog):
    training.run(config(tmp_path), model_fn=tiny)
    (tmp_path / "ckpt-4.index").write_bytes(b"garbage")
    before = checkpoint_files(tmp_path)
    with pytest.raises(ValueError, match=rf"^no checkpoint of {tmp_path} can be restored: {tmp_path}/ckpt-4 is "
                                         r"unreadable \(.*\); use another --model_dir, or pass --start_fresh"):
        training.build(config(tmp_path, epochs=2), model_fn=tiny)
    assert checkpoint_files(tmp_path) == before  # nothing overwritten
    with caplog.at_level("INFO"):
        session = training.build(config(tmp_path, epochs=2, start_fresh=True), model_fn=tiny)
    assert int(session.step.numpy()) == 0 and checkpoint_files(tmp_path) == []
    (previous,) = [name for name in os.listdir(tmp_path) if name.startswith("previous-")]
    assert checkpoint_files(tmp_path / previous) == before and f"moved the 3 checkpoint file(s)" in caplog.text
    shutil.rmtree(tmp_path / previous)
    (tmp_path / "checkpoint").write_text('model_checkpoint_path: "ckpt-4"\n')  # its checkpoints gone
    with pytest.raises(ValueError, match="has a checkpoint state file but no checkpoint files"):
        training.build(config(tmp_path), model_fn=tiny)
    with pytest.raises(ValueError, match="start_fresh trains from step 0 and eval_only evaluates"):
        config(tmp_path, start_fresh=True, eval_only=True)


def digit_folder(root, *, train_classes=(0, 1), val_classes=(0, 1), per_class=4, damage=None):
    """An image folder of real demo JPEGs; ``damage(path)`` spoils each training file."""
    source = demo.prepare()
    for split, classes in (("train", train_classes), ("val", val_classes)):
        for digit in classes:
            folder = root / split / f"digit_{digit}"
            folder.mkdir(parents=True)
            for name in sorted(os.listdir(os.path.join(source, "val", f"digit_{digit}")))[:per_class]:
                shutil.copy(os.path.join(source, "val", f"digit_{digit}", name), folder / name)
                if damage and split == "train":
                    damage(folder / name)
    return root


def test_the_data_is_checked_before_the_first_step(tmp_path, caplog):
    data = digit_folder(tmp_path / "data", val_classes=(0, 1, 7))
    (data / "train" / "digit_9").mkdir()
    with pytest.raises(ValueError, match="The val class digit_7 .* is not among the 3 classes of train/"):
        training.build(config(tmp_path / "run", data_dir=str(data)), model_fn=tiny)
    shutil.rmtree(data / "val")
    with pytest.raises(ValueError, match=f"{data} has no val split"):
        training.build(config(tmp_path / "run", data_dir=str(data)), model_fn=tiny)
    assert not os.path.exists(tmp_path / "run" / "checkpoint")
    shutil.copytree(data / "train", data / "val")
    with caplog.at_level("INFO"):
        session = training.build(config(tmp_path / "run", data_dir=str(data), batch_size=2), model_fn=tiny)
    assert f"class folder {data}/train/digit_9 holds no image" in caplog.text
    assert f"{data}: 8 training and 8 validation images, 3 classes" in caplog.text
    assert session.steps_per_epoch == 4


def test_a_training_set_without_one_readable_image_is_one_error(tmp_path):
    data = digit_folder(tmp_path / "data", damage=lambda path: path.write_bytes(corrupt_body(path.read_bytes())))
    with pytest.raises(ValueError, match=f"^no readable training image in {data} "):
        training.run(config(tmp_path / "run", data_dir=str(data), batch_size=2), model_fn=tiny)


def test_a_seeded_run_is_repeated_exactly(tmp_path):
    """--seed fixes the file order, the augmentation and the initialisation."""
    for name in ("a", "b"):
        training.run(config(tmp_path / name, steps_per_epoch=2, seed=11), model_fn=tiny)
    first, second = (tf.train.load_checkpoint(str(tmp_path / name / "ckpt-2")) for name in ("a", "b"))
    names = [name for name in first.get_variable_to_shape_map() if name.startswith("model/")]
    assert names and all(np.array_equal(first.get_tensor(n), second.get_tensor(n)) for n in names)


def test_the_registry_models_initialise_from_the_seed_each_kernel_its_own():
    from bl_net_tf.models import create_model

    def kernels(seed):
        keras.utils.set_random_seed(seed)
        model = create_model("bl-shufflenetv2-1.0x", num_classes=10, input_shape=(32, 32, 3))
        return {v.path: v.numpy() for v in model.weights if v.path.endswith("kernel")}

    first, again = kernels(1), kernels(1)
    assert all(np.array_equal(first[k], again[k]) for k in first)
    by_shape = {}
    for path, kernel in first.items():  # a shared initialiser gave same-shaped kernels equal values
        assert not any(np.array_equal(kernel, seen) for seen in by_shape.get(kernel.shape, [])), path
        by_shape.setdefault(kernel.shape, []).append(kernel)
    assert max(len(same) for same in by_shape.values()) > 1  # there were same-shaped kernels to compare


def test_files_of_an_interrupted_save_are_ignored(tmp_path):
    """What SIGKILL during a save leaves: a half-written shard folder and index of a newer step,
    with the `checkpoint` state file still naming the previous one (it is replaced last)."""
    training.run(config(tmp_path, epochs=1), model_fn=tiny)
    (tmp_path / "ckpt-6_temp").mkdir()
    (tmp_path / "ckpt-6_temp" / "part-00000-of-00001.data-00000-of-00001").write_bytes(b"\x00" * 100)
    (tmp_path / "ckpt-6.index").write_bytes(b"truncated")
    session = training.build(config(tmp_path, epochs=2), model_fn=tiny)
    assert int(session.step.numpy()) == 4
    training.train(session)
    assert tf.train.latest_checkpoint(str(tmp_path)).endswith("ckpt-8")



def test_model_variables_are_checkpointed_by_name_not_by_layer_position(tmp_path):
    """A channels_first model has one more (weightless) layer than its channels_last twin, so a
    checkpoint keyed by layer position would not restore across formats; keyed by path it does."""
    from bl_net_tf.training.checkpoints import Checkpointer, restore_model_weights

    def build(extra_layer: bool, num_classes: int = 10):
        inputs = keras.Input((32, 32, 3))
        x = layers.Identity(name="extra")(inputs) if extra_layer else inputs
        x = layers.Conv2D(8, 3, name="conv")(x)
        x = layers.BatchNormalization(name="bn")(x)
        x = layers.GlobalAveragePooling2D(name="pool")(x)
        return keras.Model(inputs, layers.Dense(num_classes, name="fc")(x))

    keras.utils.set_random_seed(1)
    saved = build(extra_layer=True)
    saved.get_layer("bn").moving_variance.assign(tf.random.uniform([8], 1, 2))
    path = Checkpointer(str(tmp_path), step=tf.Variable(7, dtype=tf.int64), model=saved).save()

    restored = build(extra_layer=False)
    assert Checkpointer(str(tmp_path), step=tf.Variable(0, dtype=tf.int64), model=restored).restore() == path
    fresh = build(extra_layer=False)
    restore_model_weights(fresh, path)
    for model in (restored, fresh):
        assert [v.path for v in model.weights] == [v.path for v in saved.weights]
        assert all((a.numpy() == b.numpy()).all() for a, b in zip(saved.weights, model.weights))
    with pytest.raises(ValueError, match=r"^cannot load the weights of checkpoint .*ckpt-7 into"):
        restore_model_weights(build(extra_layer=False, num_classes=5), path)  # another head
