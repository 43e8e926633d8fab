"""bl_net_tf: Big-Little Net (Chen et al., ICLR 2019) for TensorFlow 2 / Keras 3."""
from bl_net_tf.models import create_model, list_models, validate_model_options

__all__ = ["create_model", "list_models", "validate_model_options"]
__version__ = "0.1.0"
