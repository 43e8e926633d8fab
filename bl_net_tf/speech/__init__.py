"""The speech acoustic models' front end and training (paper Section 4.2, Appendix B).

The models themselves are in the registry: ``create_model("bl-resnet22-speech", alpha=2, beta=3)``.
"""
from bl_net_tf.speech.features import context_windows, deltas, logmel_features, num_frames
from bl_net_tf.speech.records import frame_dataset, parse_utterance, write_utterances
from bl_net_tf.speech.trainer import SpeechTrainConfig, learning_rate, train

__all__ = ["context_windows", "deltas", "logmel_features", "num_frames", "frame_dataset", "parse_utterance",
           "write_utterances", "SpeechTrainConfig", "learning_rate", "train"]
