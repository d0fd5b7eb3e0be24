# Copyright 2026 The ViLAMP for transformers authors. All rights reserved.
#
# Licensed under the Apache License, Version 2.0 (the "License");
# you may not use this file except in compliance with the License.
# You may obtain a copy of the License at
#
#     http://www.apache.org/licenses/LICENSE-2.0
#
# Unless required by applicable law or agreed to in writing, software
# distributed under the License is distributed on an "AS IS" BASIS,
# WITHOUT WARRANTIES OR CONDITIONS OF ANY KIND, either express or implied.
# See the License for the specific language governing permissions and
# limitations under the License.
"""Configuration of ViLAMP, the long-video language model of "Scaling Video-Language Models to 10K Frames
via Hierarchical Differential Distillation" (ICML 2025)."""

from typing import Literal

from huggingface_hub.dataclasses import strict
from transformers import AutoConfig
from transformers.configuration_utils import PreTrainedConfig, SubConfigSpec
from transformers.utils import auto_docstring


@auto_docstring(checkpoint="orange-sk/ViLAMP-llava-qwen")
@strict
class VilampConfig(PreTrainedConfig):
    r"""
    Configuration of [`VilampForConditionalGeneration`]. The defaults describe the released 7B model
    (`orange-sk/ViLAMP-llava-qwen`): a SigLIP so400m-patch14-384 tower with its last layer removed, a two-layer
    GELU projector and Qwen2-7B.

    Args:
        vision_config (`dict` or `PreTrainedConfig`, *optional*):
            SigLIP vision tower. `num_hidden_layers` is the number of layers that run; the features are the last
            hidden state of the last layer, before any post-layernorm.
        text_config (`dict` or `PreTrainedConfig`, *optional*):
            Qwen2 language model.
        video_token_id (`int`, *optional*, defaults to 151646):
            Id of the `<video>` placeholder. The processor repeats it once per visual token.
        projector_hidden_act (`str`, *optional*, defaults to `"gelu"`):
            Activation between the two linear layers of the projector.
        keyframe_pooling_stride (`int`, *optional*, defaults to 2):
            Keyframe patch grids are shrunk by this factor with bilinear interpolation (27x27 -> 14x14).
        query_embed_dim (`int`, *optional*, defaults to 512):
            Size of the frame scorer's query embedding that feeds differential feature merging.
        dfm_temperature_init (`float`, *optional*, defaults to 0.01):
            Initial value of the learned softmax temperature of differential feature merging.
        dfm_context (`str`, *optional*, defaults to `"released"`):
            Which frame a non-keyframe is compared against. `"released"`: after the i-th keyframe, frame number i
            of the video, the rule the released checkpoint was trained with. `"preceding_keyframe"`: the keyframe
            before it, as the paper describes. In both, a frame before the first keyframe is its own context.
        vision_chunk_size (`int`, *optional*):
            Frames sent through the vision tower at once. `None` picks 8 on CPU and 64 on accelerators.
        pixel_mean (`list[float]`, *optional*, defaults to `[0.5, 0.5, 0.5]`):
            Mean used to normalise the processor's `uint8` frames inside the model (the processor never normalises).
        pixel_std (`list[float]`, *optional*, defaults to `[0.5, 0.5, 0.5]`):
            Standard deviation used to normalise `uint8` frames inside the model.
        tie_word_embeddings (`bool`, *optional*, defaults to `False`):
            Whether the language model head shares the input embedding matrix.

    Example:

    ```python
    >>> from vilamp.modeling_vilamp import VilampConfig
    >>> config = VilampConfig()
    >>> config.text_config.hidden_size, config.vision_config.num_hidden_layers
    (3584, 26)
    ```
    """

    model_type = "vilamp"
    # `Trainer.predict` / `evaluate` keep only the logits: not the cache, nor the videos' visual sequences.
    keys_to_ignore_at_inference = ["cache", "video_outputs"]
    sub_configs_defaults = {
        "vision_config": SubConfigSpec(
            config_class=AutoConfig,
            model_type="siglip_vision_model",
            init_kwargs={
                "hidden_size": 1152,
                "intermediate_size": 4304,
                "num_hidden_layers": 26,
                "num_attention_heads": 16,
                "patch_size": 14,
                "image_size": 384,
                "hidden_act": "gelu_pytorch_tanh",
                "layer_norm_eps": 1e-6,
                "vision_use_head": False,
            },
        ),
        "text_config": SubConfigSpec(
            config_class=AutoConfig,
            model_type="qwen2",
            init_kwargs={
                "vocab_size": 152064,
                "hidden_size": 3584,
                "intermediate_size": 18944,
                "num_hidden_layers": 28,
                "num_attention_heads": 28,
                "num_key_value_heads": 4,
                "max_position_embeddings": 32768,
                "rms_norm_eps": 1e-6,
                "rope_parameters": {"rope_type": "default", "rope_theta": 1000000.0},
                "tie_word_embeddings": False,
            },
        ),
    }

    vision_config: dict | PreTrainedConfig | None = None
    text_config: dict | PreTrainedConfig | None = None
    video_token_id: int = 151646
    projector_hidden_act: str = "gelu"
    keyframe_pooling_stride: int = 2
    query_embed_dim: int = 512
    dfm_temperature_init: float = 0.01
    dfm_context: Literal["released", "preceding_keyframe"] = "released"
    vision_chunk_size: int | None = None
    pixel_mean: list[float] | None = None
    pixel_std: list[float] | None = None
    tie_word_embeddings: bool = False

    def __post_init__(self, **kwargs):
        self.pixel_mean = list(self.pixel_mean) if self.pixel_mean is not None else [0.5, 0.5, 0.5]
        self.pixel_std = list(self.pixel_std) if self.pixel_std is not None else [0.5, 0.5, 0.5]
        super().__post_init__(**kwargs)

    @classmethod
    def from_dict(cls, config_dict: dict, **kwargs):
        """Builds the config from a saved `config.json`'s contents, which must describe both towers."""
        missing = [
            name
            for name in ("vision_config", "text_config")
            if not isinstance(kwargs.get(name, config_dict.get(name)), (dict, PreTrainedConfig))
        ]
        if missing:
            # Without them the defaults would silently build the 7B model (8 GB) before the weights fail to load.
            raise ValueError(f"A saved ViLAMP config must describe its {' and '.join(missing)}; it has none.")
        return super().from_dict(config_dict, **kwargs)

    def validate_vilamp_settings(self):
        """Part of `@strict` validation: the ViLAMP-specific fields."""
        if self.keyframe_pooling_stride < 1:
            raise ValueError(f"`keyframe_pooling_stride` must be at least 1, got {self.keyframe_pooling_stride}.")
        if self.vision_chunk_size is not None and self.vision_chunk_size < 1:
            raise ValueError(f"`vision_chunk_size` must be at least 1 or None, got {self.vision_chunk_size}.")
        if len(self.pixel_mean) != 3 or len(self.pixel_std) != 3:
            raise ValueError(
                f"`pixel_mean` and `pixel_std` need 3 values, got {self.pixel_mean} and {self.pixel_std}."
            )


__all__ = ["VilampConfig"]
