"""The tf.data loader: encoded examples -> checked, decoded, augmented batches.

Per example: read the file (image folders), the cheap byte check of ``integrity.py``
(only complete JPEGs take the fast ``decode_and_crop_jpeg`` path), the decoding and
the fbresnet transform of ``augment.py``.

No file is dropped unseen. The examples go in groups of :data:`GROUP` through a
parallel interleave; inside a group's dataset, ``ignore_errors`` drops an example
whose processing failed (a file that cannot be read, an empty or truncated file,
corrupt data inside a complete-looking JPEG), and a check at the end of the group
compares the examples that came through with those that went in: a missing one is
named, with the reason, and counted in ``SkippedFiles`` by a ``tf.py_function`` that
runs only then. A bad file thus neither ends an epoch nor goes unreported. Groups
rather than single examples: a dataset per example cost a third more CPU per image;
per group of 16, no more than one parallel map (docs/data.md).
"""
import os

import tensorflow as tf

from bl_net_tf.data import augment, decode, integrity, recipe
from bl_net_tf.data.skipped import SkippedFiles

# Examples per group (see above): large enough to spread a dataset's set-up cost, small enough to keep
# the groups in flight few.
GROUP = 16


def _reason(data: bytes) -> str:
    """Why encoded ``data`` failed: the byte check's finding, else that the decoder rejects it."""
    _, problem = integrity.inspect_bytes(data)
    if problem:
        return problem
    if not decode.can_decode(data):
        return integrity.CORRUPT
    return "decoding or augmentation failed"


def _reporter(skipped: SkippedFiles, read_files: bool):
    """``report(names, payloads)``: names and counts the examples that failed, with the reason."""
    def report(names, payloads):
        for name, payload in zip(names.numpy(), payloads.numpy()):
            if read_files:
                try:
                    with open(payload, "rb") as f:
                        payload = f.read()
                except OSError as error:
                    skipped.add(name, f"cannot be read ({error.strerror or error})")
                    continue
            skipped.add(name, _reason(payload))
        return True
    return report


def images(examples: tf.data.Dataset, *, read_files: bool, train: bool, image_size: int,
           batch_size: int, drop_remainder: bool, seed, deterministic: bool, skipped: SkippedFiles,
           eval_protocol: str = recipe.DEFAULT_EVAL_PROTOCOL) -> tf.data.Dataset:
    """Batches ``(uint8 [B, S, S, 3] RGB, int32 [B])`` from ``(name, payload, label)``.

    ``payload`` is the encoded image, or with ``read_files`` the path of its file.
    ``train`` selects the random fbresnet augmentation at ``image_size``, else the
    evaluation transform (``eval_protocol``) at ``image_size``. With a ``seed`` the augmentation is reproducible;
    each new iteration (epoch) still draws new augmentations. ``deterministic``
    keeps the order of ``examples`` through the whole pipeline (for the sources'
    parallel reads too); without it, an image that is slow to read does not hold
    up the ones behind it.
    """
    report = _reporter(skipped, read_files)

    def load(index, name, payload, label, seed_pair):
        encoded = tf.io.read_file(payload) if read_files else payload
        if train:
            is_jpeg, _ = integrity.inspect_tensor(encoded)  # only a complete JPEG takes the fast crop
            image = augment.train_image(encoded, is_jpeg, seed_pair, image_size)
        else:
            image = augment.eval_image(encoded, image_size, protocol=eval_protocol, label=name)
        return image, label, index

    def group_images(group, seed_pairs):
        names, payloads, labels = group
        count = tf.shape(names)[0]
        end = (tf.zeros([image_size, image_size, 3], tf.uint8), tf.constant(0), tf.constant(-1))

        def check(images, labels, indices):
            # The last element is `end`, there so that a group whose every example failed is checked too.
            came = tf.reduce_any(tf.equal(tf.range(count)[:, None], indices[None, :-1]), axis=1)
            reported = tf.cond(
                tf.reduce_all(came), lambda: tf.constant(True),
                lambda: tf.py_function(report, [tf.boolean_mask(names, ~came), tf.boolean_mask(payloads, ~came)],
                                       tf.bool))
            with tf.control_dependencies([reported]):
                return tf.identity(images[:-1]), labels[:-1]

        return (tf.data.Dataset.from_tensor_slices((tf.range(count), names, payloads, labels, seed_pairs))
                .map(load).ignore_errors().concatenate(tf.data.Dataset.from_tensors(end))
                .batch(GROUP + 1).map(check).unbatch())

    # One independent seed pair per example; a new sequence in every epoch.
    seeds = tf.data.Dataset.random(seed=seed, rerandomize_each_iteration=True).batch(2)
    dataset = tf.data.Dataset.zip(examples, seeds).batch(GROUP).interleave(
        group_images, cycle_length=_groups_at_once(), block_length=GROUP, num_parallel_calls=tf.data.AUTOTUNE)
    dataset = dataset.batch(batch_size, drop_remainder=drop_remainder,
                            num_parallel_calls=tf.data.AUTOTUNE)
    dataset = dataset.map(_check_labels)
    options = tf.data.Options()
    options.deterministic = deterministic
    # Parallelism comes from processing many images at once; a thread pool inside
    # each op only adds synchronisation (the usual setting for input pipelines).
    options.threading.max_intra_op_parallelism = 1
    return dataset.prefetch(tf.data.AUTOTUNE).with_options(options)


def _groups_at_once() -> int:
    """Groups in flight: a few per core, so that reading a file hides behind the others' decoding,
    and at most 64 (64 x 16 images of 224 x 224 hold 150 MB)."""
    return min(4 * len(os.sched_getaffinity(0)), 64)


def _check_labels(images, labels):
    check = tf.debugging.assert_non_negative(
        labels, message="Negative label: TFRecord shards with 0-based labels need label_offset=0")
    with tf.control_dependencies([check]):
        return images, tf.identity(labels)
