"""The tf.data loader: encoded examples -> checked, decoded, augmented batches.

Per example, in one parallel map: the cheap byte check of ``integrity.py``; for a
suspect file only, one full decode attempt in a ``tf.py_function`` that names and
counts the file if it fails; then the fbresnet transform of ``augment.py``.
Skipped examples are filtered out, so a bad file never ends an epoch. A file that
passes the byte check but still fails to decode (corrupt data inside a complete
JPEG) is dropped by ``ignore_errors``, which logs TF's error without the file name.
"""
import tensorflow as tf

from bl_net_tf.data import augment, decode, integrity, recipe
from bl_net_tf.data.skipped import SkippedFiles


def _verifier(skipped: SkippedFiles):
    def verify(name, encoded, problem):
        problem = problem.numpy().decode()
        if problem != integrity.EMPTY and decode.can_decode(encoded.numpy()):
            return True
        skipped.add(name.numpy().decode(errors="replace"), problem)
        return False
    return verify


def images(examples: tf.data.Dataset, *, train: bool, image_size: int, batch_size: int,
           drop_remainder: bool, seed, deterministic: bool, skipped: SkippedFiles,
           eval_protocol: str = recipe.DEFAULT_EVAL_PROTOCOL) -> tf.data.Dataset:
    """Batches ``(uint8 [B, S, S, 3] RGB, int32 [B])`` from ``(name, encoded, label)``.

    ``train`` selects the random fbresnet augmentation at ``image_size``, else the
    evaluation transform (``eval_protocol``) at ``image_size``. With a ``seed`` the augmentation is reproducible;
    each new iteration (epoch) still draws new augmentations. ``deterministic``
    keeps the order of ``examples`` through the whole pipeline (for the sources'
    parallel reads too); without it, an image that is slow to read does not hold
    up the ones behind it.
    """
    verify = _verifier(skipped)

    def load(name, encoded, label, seed_pair):
        is_jpeg, problem = integrity.inspect_tensor(encoded)
        readable = tf.cond(
            tf.equal(problem, ""),
            lambda: tf.constant(True),
            lambda: tf.reshape(tf.py_function(verify, [name, encoded, problem], tf.bool), []))

        def transform():
            if train:
                return augment.train_image(encoded, is_jpeg, seed_pair, image_size)
            return augment.eval_image(encoded, image_size, protocol=eval_protocol, label=name)

        image = tf.cond(readable, transform,
                        lambda: tf.zeros([image_size, image_size, 3], tf.uint8))
        return image, label, readable

    # One independent seed pair per example; a new sequence in every epoch.
    seeds = tf.data.Dataset.random(seed=seed, rerandomize_each_iteration=True).batch(2)
    dataset = tf.data.Dataset.zip(examples, seeds).map(
        lambda example, seed_pair: load(*example, seed_pair),
        num_parallel_calls=tf.data.AUTOTUNE)
    dataset = dataset.filter(lambda image, label, readable: readable)
    dataset = dataset.map(lambda image, label, readable: (image, label))
    dataset = dataset.ignore_errors(log_warning=True)
    dataset = dataset.batch(batch_size, drop_remainder=drop_remainder,
                            num_parallel_calls=tf.data.AUTOTUNE)
    dataset = dataset.map(_check_labels)
    options = tf.data.Options()
    options.deterministic = deterministic
    # Parallelism comes from processing many images at once; a thread pool inside
    # each op only adds synchronisation (the usual setting for input pipelines).
    options.threading.max_intra_op_parallelism = 1
    return dataset.prefetch(tf.data.AUTOTUNE).with_options(options)


def _check_labels(images, labels):
    check = tf.debugging.assert_non_negative(
        labels, message="Negative label: TFRecord shards with 0-based labels need label_offset=0")
    with tf.control_dependencies([check]):
        return images, tf.identity(labels)
