"""The fb.resnet.torch ImageNet augmentation recipe that Big-Little Net trained with.

The paper's models were trained with Tensorpack's ``fbresnet_augmentor``
(tensorpack ``examples/ImageNetModels/imagenet_utils.py``), itself a port of
fb.resnet.torch ``datasets/transforms.lua``. Every number of that recipe lives here
once; the tf.data implementation (``augment.py``) and the Tensorpack loader
(``tensorpack_loader.py``) both read it.

All constants are stated for **RGB** images with values in [0, 255].
"""
import numpy as np

# Inception-style random crop ("Going Deeper with Convolutions", Sec. 6).
CROP_AREA_RANGE = (0.08, 1.0)
CROP_ASPECT_RANGE = (0.75, 1.333)  # Tensorpack writes 4/3 as 1.333.
CROP_ATTEMPTS = 10  # then fall back to a centre crop

# Photometric jitter, applied in a random order.
BRIGHTNESS_RANGE = (0.6, 1.4)  # multiply every pixel
CONTRAST_RANGE = (0.6, 1.4)  # blend with the mean grey level of the image
SATURATION_DELTA = 0.4  # blend with the per-pixel grey level, factor 1 +- delta
LIGHTING_STD = 0.1  # AlexNet PCA lighting noise

# ITU-R BT.601 luma weights, as cv2.COLOR_RGB2GRAY and tf.image.rgb_to_grayscale use.
GREY_WEIGHTS_RGB = np.array([0.299, 0.587, 0.114], dtype=np.float32)

# PCA of ImageNet RGB pixels from fb.resnet.torch (values for images in [0, 1]);
# rows are R, G, B and each column is one eigenvector. Tensorpack reverses both
# axes of this matrix (and the eigenvalues) because its images are BGR.
PCA_EIGVAL_RGB = np.array([0.2175, 0.0188, 0.0045], dtype=np.float32) * 255.0
PCA_EIGVEC_RGB = np.array(
    [[-0.5675, 0.7192, 0.4009],
     [-0.5808, -0.0045, -0.8140],
     [-0.5836, -0.6948, 0.4203]],
    dtype=np.float32,
)

FLIP_PROBABILITY = 0.5

# Evaluation: resize the shorter side to eval_size / 0.875 (224 -> 256), centre crop.
EVAL_CROP_FRACTION = 0.875


def eval_resize_size(eval_size: int) -> int:
    """Shorter-side length to resize to before the centre crop of ``eval_size``."""
    return int(round(eval_size / EVAL_CROP_FRACTION))
