"""ViLAMP for Hugging Face transformers.

Importing this package registers the model with the Auto classes (`AutoConfig` for model type "vilamp",
`AutoModel`, `AutoModelForImageTextToText`) and marks the classes so that `save_pretrained` writes their code
and an `auto_map` beside the weights, for `trust_remote_code=True` loading where this package is not installed.
"""

from transformers import AutoConfig, AutoModel, AutoModelForImageTextToText

from .configuration_vilamp import VilampConfig
from .modeling_vilamp import VilampForConditionalGeneration, VilampModel, VilampPreTrainedModel, VilampVideoCache


AutoConfig.register(VilampConfig.model_type, VilampConfig, exist_ok=True)
AutoModel.register(VilampConfig, VilampModel, exist_ok=True)
AutoModelForImageTextToText.register(VilampConfig, VilampForConditionalGeneration, exist_ok=True)

VilampConfig.register_for_auto_class()
VilampModel.register_for_auto_class("AutoModel")
VilampForConditionalGeneration.register_for_auto_class("AutoModelForImageTextToText")

__all__ = [
    "VilampConfig",
    "VilampForConditionalGeneration",
    "VilampModel",
    "VilampPreTrainedModel",
    "VilampVideoCache",
]
