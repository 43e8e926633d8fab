"""The speech front end (log-mel + deltas, 49-frame windows), the TFRecord pipeline, and the trainer
learning synthetic sound classes."""
import json
import math
import os

import keras
import numpy as np
import pytest
import tensorflow as tf

from bl_net_tf.models import speech
from bl_net_tf.models.layers import LayerContext
from bl_net_tf.speech import (SpeechTrainConfig, context_windows, deltas, frame_dataset, learning_rate, logmel_features,
                              num_frames, parse_utterance, train, write_utterances)
from bl_net_tf.speech import demo

SR = 8000  # telephone speech, as Switchboard


def _mel(f):
    return 1127.0 * math.log1p(f / 700.0)


def test_logmel_features_shape_and_a_tone_lands_in_its_band():
    t = np.arange(SR) / SR  # one second
    for hz in (500.0, 1000.0, 2500.0):
        feats = np.asarray(logmel_features(np.sin(2 * np.pi * hz * t).astype("float32"), SR, normalize=False))
        assert feats.shape == (num_frames(SR, SR), 64, 3) == (98, 64, 3)
        # 64 bands evenly spaced in mel between 20 Hz and 4 kHz: band k is centred at mel_lo + (k + 1) step.
        step = (_mel(SR / 2) - _mel(20.0)) / 65
        expected = round((_mel(hz) - _mel(20.0)) / step) - 1
        assert abs(int(np.argmax(feats[50, :, 0])) - expected) <= 1
        # A steady tone: the derivatives vanish away from the edges.
        assert np.abs(feats[5:-5, :, 1:]).max() < 1e-3 * np.abs(feats[5:-5, :, 0]).max()


def test_per_utterance_normalisation():
    noise = np.random.default_rng(0).normal(size=SR).astype("float32") * 100
    logmel = np.asarray(logmel_features(noise, SR))[:, :, 0]
    np.testing.assert_allclose(logmel.mean(axis=0), 0, atol=1e-4)
    np.testing.assert_allclose(logmel.std(axis=0), 1, atol=1e-2)


def test_deltas_are_htk_regression():
    ramp = np.outer(np.arange(10, dtype="float32"), [3.0, -1.0])
    d = np.asarray(deltas(ramp))
    np.testing.assert_allclose(d[2:-2], np.tile([3.0, -1.0], (6, 1)), rtol=1e-6)
    # Edge frames are repeated: at t = 0, (1*(x1 - x0) + 2*(x2 - x0)) / 10 = 0.5 x slope.
    np.testing.assert_allclose(d[0], [1.5, -0.5], rtol=1e-6)
    np.testing.assert_allclose(np.asarray(deltas(d))[4:-4], 0, atol=1e-6)


def test_context_windows_centre_each_frame():
    feats = np.broadcast_to(np.arange(60, dtype="float32")[:, None, None], (60, 64, 3))
    windows = np.asarray(context_windows(feats))
    assert windows.shape == (60, 64, 49, 3)  # frames x (mel, time, channel): the models' input
    np.testing.assert_array_equal(windows[30, 0, :, 0], np.arange(6, 55))
    np.testing.assert_array_equal(windows[0, 0, :, 0], [0] * 25 + list(range(1, 25)))
    np.testing.assert_array_equal(windows[59, 0, :, 0], list(range(35, 60)) + [59] * 24)


def test_records_round_trip_to_windows(tmp_path):
    rng = np.random.default_rng(1)
    utterances = [(rng.normal(size=(n, 64, 3)).astype("float32"), rng.integers(0, 9, n)) for n in (7, 12)]
    path = str(tmp_path / "utts.tfrecord")
    assert write_utterances(path, utterances) == 19
    windows, labels = zip(*[(w.numpy(), y.numpy()) for w, y in frame_dataset(path, batch_size=5)])
    windows, labels = np.concatenate(windows), np.concatenate(labels)
    np.testing.assert_array_equal(labels, np.concatenate([u[1] for u in utterances]))
    np.testing.assert_allclose(windows[7:], np.asarray(context_windows(utterances[1][0])))
    features, frame_labels = parse_utterance(next(iter(tf.data.TFRecordDataset(path))))
    np.testing.assert_array_equal(features.numpy(), utterances[0][0])
    np.testing.assert_array_equal(frame_labels.numpy(), utterances[0][1])
    with pytest.raises(ValueError, match="one label per frame"):
        write_utterances(path, [(utterances[0][0], [1, 2])])


def test_learning_rate_follows_appendix_b1():
    config = SpeechTrainConfig(train_records="x")
    rates = [learning_rate(config, epoch) for epoch in range(16)]  # 0-based; the paper counts from 1
    assert rates[:9] == [0.03] * 9
    np.testing.assert_allclose(rates[9:], [0.03 * math.sqrt(0.5) ** k for k in range(1, 8)])


def _tiny_bl_model(num_classes):
    """bL-ResNet-22 (α=2, β=3) with 1/8 of the widths: the real layout, small enough for a test."""
    ctx = LayerContext(data_format="channels_last")
    inputs = keras.Input(speech.INPUT_SHAPE)
    layout = speech.bl_resnet22_layout(2, 3, channels=(8, 16, 16, 32))
    features = speech.build_speech_layout(ctx, inputs, layout, stem_channels=8)
    return keras.Model(inputs, speech.speech_head(ctx, features[-1], num_classes, channels=32))


def test_trainer_learns_synthetic_sound_classes(tmp_path):
    rng = np.random.default_rng(0)
    write_utterances(str(tmp_path / "train.tfrecord"), [demo.utterance(rng) for _ in range(20)])
    write_utterances(str(tmp_path / "eval.tfrecord"), [demo.utterance(rng) for _ in range(6)])
    config = SpeechTrainConfig(train_records=str(tmp_path / "train.tfrecord"),
                               eval_records=str(tmp_path / "eval.tfrecord"), num_classes=4, batch_size=64, epochs=2,
                               lr=0.1, anneal_from_epoch=2, shuffle_buffer=5000, seed=0, model_dir=str(tmp_path))
    keras.utils.set_random_seed(0)
    metrics = train(config, model=_tiny_bl_model(4))
    # Chance is 25% (loss ln 4); frames near a segment boundary see both sounds in their window.
    # Held-out accuracy came out 0.81-0.95 over repeated runs (CPU training is not bit-reproducible).
    assert metrics["frame_acc"] > 0.85 and metrics["eval_frame_acc"] > 0.75, metrics
    assert metrics["eval_loss"] < 0.6 * math.log(4), metrics
    assert json.load(open(tmp_path / "metrics.json"))["eval_frame_acc"] == metrics["eval_frame_acc"]
    assert os.path.exists(tmp_path / "model.weights.h5")
    keras.backend.clear_session()


def _train_speech_cli():
    from bl_net_tf.speech import cli  # what train_speech.py and bl-net-train-speech run

    return cli


def test_train_speech_cli_runs_a_step_and_reports_bad_flags(tmp_path, capsys):
    cli = _train_speech_cli()
    rng = np.random.default_rng(2)
    records = str(tmp_path / "train.tfrecord")
    write_utterances(records, [(rng.normal(size=(6, 64, 3)).astype("float32"), rng.integers(0, 4, 6))])

    def run(*argv):
        return cli.main(list(argv))

    assert run(f"--train_records={records}", "--arch=resnet22-speech", "--num_classes=4", "--batch_size=6",
               "--epochs=1", "--xla=off", "--shuffle_buffer=0") == 0
    metrics = json.loads(capsys.readouterr().out.strip().splitlines()[-1][len("metrics: "):])
    assert set(metrics) == {"loss", "frame_acc"} and np.isfinite(metrics["loss"])
    assert run(f"--train_records={tmp_path}/missing-*") == 1
    assert capsys.readouterr().err.endswith("bl-net-train-speech: error: no TFRecord files match "
                                            f"'{tmp_path}/missing-*'\n")
    assert run(f"--eval_records={records}") == 2
    assert capsys.readouterr().err == ("bl-net-train-speech: error: --eval_records needs --train_records (without "
                                       "both, the demo sounds are used)\n")
    keras.backend.clear_session()


def test_train_speech_without_records_trains_on_the_demo_sounds(tmp_path, monkeypatch, capsys):
    monkeypatch.setenv("BL_NET_TF_CACHE", str(tmp_path / "cache"))
    cli = _train_speech_cli()
    assert cli.main(["--arch=bl-resnet22-speech", "--alpha=3"]) == 1  # checked before the demo sounds are written
    assert capsys.readouterr() == ("", "bl-net-train-speech: error: alpha must divide the 64 stem channels "
                                       "(1, 2, 4, 8, ...), got 3\n")
    assert not os.path.exists(tmp_path / "cache")
    assert cli.main(["--arch=resnet22-speech", "--steps_per_epoch=1", "--epochs=1", "--batch_size=8", "--xla=off",
                     f"--model_dir={tmp_path / 'run'}"]) == 0
    out = capsys.readouterr().out
    assert "no --train_records: training on the demo sounds" in out and "--num_classes=4" in out
    metrics = json.loads(out.strip().splitlines()[-1][len("metrics: "):])
    assert set(metrics) == {"loss", "frame_acc", "eval_loss", "eval_frame_acc"}
    train_path, dev_path = demo.prepare()  # written once, found again
    assert train_path == str(tmp_path / "cache" / "demo_sounds" / "train.tfrecord") and os.path.exists(dev_path)
    features, labels = parse_utterance(next(iter(tf.data.TFRecordDataset(train_path))))
    assert features.shape[1:] == (64, 3) and set(np.unique(labels.numpy())) <= set(range(len(demo.CLASSES)))
    keras.backend.clear_session()
