"""The training loop in this process, on the demo digits with a tiny network (the point here is
the loop, not the model): NaN stop, time-triggered checkpoints, a finished run, BN per replica."""
import keras
import pytest
import tensorflow as tf
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


def test_float16_with_xla_trains_and_keeps_float32_variables(tmp_path):
    errors = training.run(config(tmp_path, mixed_precision="float16", xla="on"), model_fn=tiny)
    assert errors.images > 0 and 0 <= errors.top1_err <= 1
    session = training.build(config(tmp_path, mixed_precision="float16", xla="on"), model_fn=tiny)
    assert session.jit_compile and session.model.get_layer("conv").compute_dtype == "float16"
    assert {v.dtype for v in session.model.trainable_variables} == {"float32"}
    assert isinstance(session.optimizer, keras.optimizers.LossScaleOptimizer)
    assert keras.config.dtype_policy().name == "float32"  # the global policy is left as it was


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
    assert Checkpointer(str(tmp_path), step=tf.Variable(0, dtype=tf.int64), model=restored).restore_latest() == path
    fresh = build(extra_layer=False)
    restore_model_weights(fresh, path)
    for model in (restored, fresh):
        assert [v.path for v in model.weights] == [v.path for v in saved.weights]
        assert all((a.numpy() == b.numpy()).all() for a, b in zip(saved.weights, model.weights))
    with pytest.raises(ValueError, match=r"^cannot load the weights of checkpoint .*ckpt-7 into"):
        restore_model_weights(build(extra_layer=False, num_classes=5), path)  # another head
