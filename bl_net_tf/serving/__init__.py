"""Serving helpers for :mod:`bl_net_tf.export`: the model to export and its weights (``sources``),
the in-graph preprocessing within request limits (``preprocess``), the channels_last float32 copy
of a trained model (``layout``), the SavedModel signatures (``signatures``) and TF Serving's
warm-up requests (``warmup``)."""
