"""The fbresnet augmentation in TF: its statistics over many draws, and its arithmetic."""
import numpy as np
import pytest
import tensorflow as tf

from bl_net_tf.data import augment, color, recipe

DRAWS = 2000


def _seeds(count, offset=0):
    return tf.stack([tf.range(offset, offset + count, dtype=tf.int64),
                     tf.fill([count], tf.constant(7, tf.int64))], axis=1)


def _draws(fn, count, dtype):
    """``fn(seed)`` for ``count`` seeds, in one graph."""
    return tf.function(lambda: tf.map_fn(fn, _seeds(count), fn_output_signature=dtype))()


def _windows(height, width, count=DRAWS):
    return _draws(lambda seed: augment.sample_crop_window(tf.constant([height, width]), seed),
                  count, tf.int32).numpy()


@pytest.fixture(scope="module")
def imagenet_windows():
    return _windows(375, 500)


def test_crop_windows_lie_inside_the_image(imagenet_windows):
    y, x, h, w = imagenet_windows.T
    assert (y >= 0).all() and (x >= 0).all() and (h >= 1).all() and (w >= 1).all()
    assert (y + h <= 375).all() and (x + w <= 500).all()


def test_crop_area_and_aspect_follow_the_recipe(imagenet_windows):
    _, _, h, w = imagenet_windows.T.astype(float)
    area = h * w / (375 * 500)
    aspect = np.maximum(w / h, h / w)  # either orientation is allowed
    # Rounding the sides to whole pixels moves the area and aspect a little.
    assert area.min() >= recipe.CROP_AREA_RANGE[0] * 0.97 and area.max() <= 1.0
    assert aspect.max() <= recipe.CROP_ASPECT_RANGE[1] * 1.02
    # The range is covered: small and large crops, and both orientations.
    assert area.min() < 0.1 and area.max() > 0.9
    assert 0.35 < np.mean(w > h) < 0.65
    # Tensorpack's sampling is uniform in area among the crops that fit.
    assert 0.4 < np.median(area) < 0.6


def test_crop_falls_back_to_the_central_square():
    # In a 20x800 image a crop of 8% of the area with aspect <= 4/3 has both sides
    # >= sqrt(0.08 * 20 * 800 * 3 / 4) = 31 > 20 pixels, so every draw falls back.
    windows = _windows(20, 800, count=50)
    assert (windows == [0, 390, 20, 20]).all()


def _gradient_jpeg():
    ramp = np.tile(np.linspace(0, 255, 64, dtype=np.float32), (48, 1))
    image = np.repeat(ramp[..., None], 3, axis=2).astype(np.uint8)
    return tf.io.encode_jpeg(image, quality=95)


def test_flip_rate_is_one_half():
    # A horizontal ramp stays increasing through any crop, resize and colour
    # jitter (they are monotonic on grey pixels) unless the image is flipped.
    encoded = _gradient_jpeg()
    images = _draws(lambda seed: augment.train_image(encoded, tf.constant(True), seed, 16),
                    400, tf.uint8).numpy().astype(float)
    slope = images[:, :, -4:].mean(axis=(1, 2, 3)) - images[:, :, :4].mean(axis=(1, 2, 3))
    flipped = np.mean(slope < 0)
    assert 0.4 < flipped < 0.6
    assert np.all(np.abs(slope) > 0)


def test_train_image_is_reproducible_from_its_seed():
    encoded = _gradient_jpeg()
    seed = tf.constant([3, 4], tf.int64)
    first = augment.train_image(encoded, tf.constant(True), seed, 24)
    again = augment.train_image(encoded, tf.constant(True), seed, 24)
    other = augment.train_image(encoded, tf.constant(True), seed + 1, 24)
    assert first.dtype == tf.uint8 and first.shape == (24, 24, 3)
    np.testing.assert_array_equal(first, again)
    assert np.any(first.numpy() != other.numpy())


def _photo_float():
    import skimage.data

    return tf.constant(skimage.data.chelsea()[::8, ::8].astype(np.float32))


def _reference_jitter(image, params):
    """The four ops one after another in numpy, as Tensorpack applies them (no clipping)."""
    image = image.numpy().astype(np.float64)
    weights = recipe.GREY_WEIGHTS_RGB.astype(np.float64)
    for op in params.order.numpy():
        name = color.OPS[op]
        if name == "brightness":
            image = image * params.brightness.numpy()
        elif name == "contrast":
            r = params.contrast.numpy()
            image = image * r + (image @ weights).mean() * (1 - r)
        elif name == "saturation":
            s = params.saturation.numpy()
            image = image * s + (image @ weights)[..., None] * (1 - s)
        else:
            image = image + params.lighting.numpy()
    return image


@pytest.mark.parametrize("seed", range(6))
def test_composed_jitter_equals_the_ops_applied_in_turn(seed):
    image = _photo_float()
    params = color.sample_jitter(tf.constant([seed, 11], tf.int64))
    np.testing.assert_allclose(color.apply_jitter(image, params).numpy(),
                               _reference_jitter(image, params), atol=0.02)


def test_jitter_draws_cover_every_order_and_range():
    params = _draws(lambda seed: tuple(color.sample_jitter(seed)), 300,
                    (tf.float32, tf.float32, tf.float32, tf.float32, tf.int32))
    assert len({tuple(order) for order in params[4].numpy()}) > 20  # of the 24 orders
    for factor in params[:3]:
        assert 0.6 <= factor.numpy().min() and factor.numpy().max() <= 1.4
        assert factor.numpy().std() > 0.2
    # The lighting colour is N(0, 0.1) along each eigenvector times its eigenvalue.
    lighting = params[3].numpy() @ recipe.PCA_EIGVEC_RGB  # eigenvector coordinates
    np.testing.assert_allclose(lighting.std(axis=0),
                               recipe.LIGHTING_STD * recipe.PCA_EIGVAL_RGB, rtol=0.25)


def test_colour_and_lighting_change_pixel_values():
    image = _photo_float()
    jittered = _draws(lambda seed: color.color_jitter(image, seed), 100, tf.float32).numpy()
    changes = np.abs(jittered - image.numpy()).mean(axis=(1, 2, 3))
    assert np.median(changes) > 5.0
    # Lighting alone: one colour added to every pixel, along the PCA directions.
    alpha = np.array([0.1, -0.05, 0.02], np.float32)
    lighting = recipe.PCA_EIGVEC_RGB @ (alpha * recipe.PCA_EIGVAL_RGB)
    params = color.JitterParams(tf.constant(1.0), tf.constant(1.0), tf.constant(1.0),
                                tf.constant(lighting), tf.constant([3, 0, 1, 2]))
    shifted = color.apply_jitter(image, params).numpy() - image.numpy()
    np.testing.assert_allclose(shifted, np.broadcast_to(lighting, shifted.shape), atol=1e-3)
    assert np.abs(lighting).max() > 1.0


def test_lighting_matches_tensorpacks_bgr_constants():
    """fbresnet_augmentor restates the RGB PCA for BGR; both give the same colour shift."""
    from tensorpack.dataflow import imgaug

    from bl_net_tf.data.tensorpack_loader import fbresnet_augmentors

    lighting = next(a for a in fbresnet_augmentors(True, 32)[1].aug_lists
                    if isinstance(a, imgaug.Lighting))
    alpha = np.array([0.1, -0.05, 0.02], np.float32)
    grey_bgr = np.full((2, 2, 3), 128.0, np.float32)
    # Tensorpack's alpha for the reversed eigenvalues is ours reversed.
    shift_bgr = lighting._augment(grey_bgr, alpha[::-1]) - grey_bgr
    ours_rgb = recipe.PCA_EIGVEC_RGB @ (alpha * recipe.PCA_EIGVAL_RGB)
    np.testing.assert_allclose(shift_bgr[0, 0, ::-1], ours_rgb, atol=1e-3)


def test_eval_image_is_deterministic_and_centred():
    # A 60x80 image whose left and right quarters are black: at eval size 32 the
    # shorter side becomes 37 (40 / 0.875 rounded) and the 32x32 centre crop of
    # the 37x49 resize keeps only the white middle.
    image = np.zeros((60, 80, 3), np.uint8)
    image[:, 20:60] = 255
    encoded = tf.io.encode_png(image)
    first = augment.eval_image(encoded, 32)
    np.testing.assert_array_equal(first, augment.eval_image(encoded, 32))
    assert first.shape == (32, 32, 3) and first.dtype == tf.uint8
    assert recipe.eval_resize_size(224) == 256
    middle = first.numpy()[:, 6:26]
    assert middle.min() >= 250
