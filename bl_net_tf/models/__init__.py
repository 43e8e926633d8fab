"""Big-Little Net model zoo: the registry and the builders."""
from bl_net_tf.models.factory import create_model, validate_model_options
from bl_net_tf.models.registry import list_models

__all__ = ["create_model", "list_models", "validate_model_options"]
