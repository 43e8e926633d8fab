"""Serving helpers for :mod:`bl_net_tf.export`: the in-graph evaluation preprocessing, the
channels_last float32 copy of a trained model, and the SavedModel signatures."""
