"""The fb.resnet.torch ImageNet augmentation recipe that Big-Little Net trained with.

The paper's models were trained with Tensorpack's ``fbresnet_augmentor``
(tensorpack ``examples/ImageNetModels/imagenet_utils.py``), itself a port of
fb.resnet.torch ``datasets/transforms.lua``. Every number of that recipe lives here
once; the tf.data implementation (``augment.py``) and the Tensorpack loader
(``tensorpack_loader.py``) both read it.

All constants are stated for **RGB** images with values in [0, 255].
"""
import math

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

# Evaluation: resize the shorter side to R, centre crop the evaluation size S. Two readings of R:
# "official": as the official release evaluates the paper's two sizes (IBM/BigLittleNet
#   imagenet_utils.py get_augmentor, last changed in commit fdf8a9233a4a07ea446b064c587a4bd4acac5295:
#   R = int(224 / 0.875 + 0.5) = 256 for S = 224, as Tensorpack's fbresnet_augmentor, and R = S
#   otherwise, so the @256 rows are the centre 256 of the image resized to 256). Other sizes keep
#   the 0.875 crop: the release's R = S there is untested by the paper and costs the 32-pixel demo
#   3 points (docs/data.md).
# "fraction": R = round(S / 0.875) for every S (224 -> 256, 256 -> 293, 32 -> 37).
EVAL_CROP_FRACTION = 0.875
OFFICIAL_WHOLE_SQUARE_SIZES = (256,)  # the paper's sizes at which the release crops R = S
EVAL_PROTOCOLS = ("official", "fraction")
DEFAULT_EVAL_PROTOCOL = "official"


def check_eval_protocol(protocol: str) -> str:
    """Returns ``protocol`` if it is one of :data:`EVAL_PROTOCOLS`.

    Raises:
      ValueError: another name (one line, naming the allowed ones).
    """
    if protocol not in EVAL_PROTOCOLS:
        raise ValueError(f"unknown eval_protocol {protocol!r}; allowed: {', '.join(EVAL_PROTOCOLS)}")
    return protocol


def eval_resize_size(eval_size: int, protocol: str = DEFAULT_EVAL_PROTOCOL) -> int:
    """The shorter-side length R that the image is resized to before the centre crop of
    ``eval_size`` (see :data:`EVAL_PROTOCOLS`)."""
    if check_eval_protocol(protocol) == "official" and eval_size in OFFICIAL_WHOLE_SQUARE_SIZES:
        return int(eval_size)
    return int(math.floor(eval_size / EVAL_CROP_FRACTION + 0.5))
