"""
Where every tensor and config field of the original ViLAMP checkpoint goes (docs/architecture.md, "Original
checkpoint").

The original `LlavaQwenForCausalLM` checkpoint holds three things: the model this project's
`VilampForConditionalGeneration` runs, the frame scorer (a transformers `CLIPModel` under
`model.frame_selector.model.`) that this project runs with open_clip inside the processor, and a few tensors that
nothing reads. Each key is routed to exactly one of those; a key that matches no rule is an error, so a checkpoint
of another layout cannot be half-converted.
"""

import re
from collections.abc import Iterable, Iterator

import torch
from transformers import CLIPConfig, CLIPModel


FRAME_SCORER_PREFIX = "model.frame_selector.model."

MODEL_KEY_RULES: tuple[tuple[str, str], ...] = (
    (r"^model\.embed_tokens\.", "model.language_model.embed_tokens."),
    (r"^model\.layers\.", "model.language_model.layers."),
    (r"^model\.norm\.", "model.language_model.norm."),
    (r"^lm_head\.", "lm_head."),
    (r"^model\.vision_tower\.vision_tower\.vision_model\.embeddings\.", "model.vision_tower.embeddings."),
    (r"^model\.vision_tower\.vision_tower\.vision_model\.encoder\.", "model.vision_tower.encoder."),
    (r"^model\.mm_projector\.0\.", "model.multi_modal_projector.linear_1."),
    (r"^model\.mm_projector\.2\.", "model.multi_modal_projector.linear_2."),
    (r"^model\.image_newline$", "model.image_newline"),
    (r"^model\.composer_projector\.linear_iq\.", "model.feature_merger.patch_query_proj."),
    (r"^model\.composer_projector\.linear_ik\.", "model.feature_merger.patch_context_proj."),
    (r"^model\.composer_projector\.linear_q\.", "model.feature_merger.query_proj."),
    (r"^model\.composer_projector\.linear_k\.", "model.feature_merger.context_proj."),
    (r"^model\.composer_projector\.tau$", "model.feature_merger.temperature"),
)

DROPPED_KEYS: dict[str, str] = {
    r"^model\.vision_tower\.vision_tower\.vision_model\.post_layernorm\.": (
        "the released model reads the vision tower's last hidden state before its post-layernorm"
    ),
}

# transformers CLIPModel -> open_clip CLIP, for the frame scorer. q/k/v projections are fused separately.
FRAME_SCORER_KEY_RULES: tuple[tuple[str, str], ...] = (
    (r"^text_model\.embeddings\.token_embedding\.", "token_embedding."),
    (r"^text_model\.embeddings\.position_embedding\.weight$", "positional_embedding"),
    (r"^text_model\.encoder\.layers\.", "transformer.resblocks."),
    (r"^text_model\.final_layer_norm\.", "ln_final."),
    (r"^text_projection\.weight$", "text_projection"),
    (r"^vision_model\.embeddings\.class_embedding$", "visual.class_embedding"),
    (r"^vision_model\.embeddings\.patch_embedding\.", "visual.conv1."),
    (r"^vision_model\.embeddings\.position_embedding\.weight$", "visual.positional_embedding"),
    (r"^vision_model\.pre_layrnorm\.", "visual.ln_pre."),
    (r"^vision_model\.encoder\.layers\.", "visual.transformer.resblocks."),
    (r"^vision_model\.post_layernorm\.", "visual.ln_post."),
    (r"^visual_projection\.weight$", "visual.proj"),
    (r"^logit_scale$", "logit_scale"),
)
FRAME_SCORER_LAYER_RULES: tuple[tuple[str, str], ...] = (
    (r"\.layer_norm1\.", ".ln_1."),
    (r"\.layer_norm2\.", ".ln_2."),
    (r"\.mlp\.fc1\.", ".mlp.c_fc."),
    (r"\.mlp\.fc2\.", ".mlp.c_proj."),
    (r"\.self_attn\.out_proj\.", ".attn.out_proj."),
)
# open_clip keeps projections as (in, out) matrices applied with `x @ proj`; transformers keeps Linear weights.
TRANSPOSED_FRAME_SCORER_KEYS = ("text_projection", "visual.proj")
QKV_PATTERN = re.compile(r"^(?P<layer>.*)\.self_attn\.(?P<which>[qkv])_proj\.(?P<param>weight|bias)$")


def _apply_first_rule(key: str, rules: Iterable[tuple[str, str]]) -> str | None:
    for pattern, replacement in rules:
        renamed, count = re.subn(pattern, replacement, key)
        if count:
            return renamed
    return None


def route_original_key(key: str) -> tuple[str, str]:
    """
    Says where one original tensor goes: `("model", new_key)`, `("frame_scorer", key inside CLIPModel)` or
    `("dropped", reason)`. Raises `KeyError` naming a key that no rule covers.
    """
    if key.startswith(FRAME_SCORER_PREFIX):
        return "frame_scorer", key[len(FRAME_SCORER_PREFIX) :]
    for pattern, reason in DROPPED_KEYS.items():
        if re.search(pattern, key):
            return "dropped", reason
    renamed = _apply_first_rule(key, MODEL_KEY_RULES)
    if renamed is None:
        raise KeyError(f"Unknown tensor {key!r} in the original checkpoint: no conversion rule maps or drops it.")
    return "model", renamed


def count_vision_layers(keys: Iterable[str]) -> int:
    """Number of SigLIP encoder layers present in the original weights (the original deleted the last one)."""
    pattern = re.compile(r"^model\.vision_tower\.vision_tower\.vision_model\.encoder\.layers\.(\d+)\.")
    indices = {int(match.group(1)) for key in keys if (match := pattern.match(key))}
    if not indices:
        raise KeyError("The original checkpoint holds no vision tower encoder layers.")
    if indices != set(range(len(indices))):
        raise KeyError(f"The original checkpoint's vision encoder layers are not contiguous: {sorted(indices)}.")
    return len(indices)


def is_position_ids(clip_key: str) -> bool:
    """An integer buffer of transformers' CLIP, not a weight: open_clip derives positions itself."""
    return clip_key.endswith("position_ids")


def convert_frame_scorer_state_dict(clip_state_dict: dict[str, torch.Tensor]) -> dict[str, torch.Tensor]:
    """Converts the frame scorer's weights from transformers' `CLIPModel` layout to open_clip's `CLIP` layout."""
    converted: dict[str, torch.Tensor] = {}
    qkv_parts: dict[tuple[str, str], dict[str, torch.Tensor]] = {}
    for key, tensor in clip_state_dict.items():
        if is_position_ids(key):
            continue
        renamed = _apply_first_rule(key, FRAME_SCORER_KEY_RULES)
        if renamed is None:
            raise KeyError(f"Unknown frame scorer tensor {FRAME_SCORER_PREFIX}{key} in the original checkpoint.")
        qkv = QKV_PATTERN.match(renamed)
        if qkv:
            qkv_parts.setdefault((qkv["layer"], qkv["param"]), {})[qkv["which"]] = tensor
            continue
        renamed = _apply_first_rule(renamed, FRAME_SCORER_LAYER_RULES) or renamed
        converted[renamed] = tensor.t().contiguous() if renamed in TRANSPOSED_FRAME_SCORER_KEYS else tensor
    for (layer, param), parts in qkv_parts.items():
        if set(parts) != {"q", "k", "v"}:
            raise KeyError(f"Frame scorer layer {layer} lacks {sorted({'q', 'k', 'v'} - set(parts))} projections.")
        converted[f"{layer}.attn.in_proj_{param}"] = torch.cat([parts["q"], parts["k"], parts["v"]], dim=0)
    return converted


# The original's DFM temperature is a 0-dim parameter; the model keeps it with one dimension (FSDP2 and DeepSpeed
# shard every parameter along its first).
SCALARS_KEPT_AS_VECTORS = {"model.feature_merger.temperature"}


def to_model_layout(target: str, tensor: torch.Tensor) -> torch.Tensor:
    """An original tensor, routed to the model's `target`, in that parameter's shape."""
    return tensor.reshape(1) if target in SCALARS_KEPT_AS_VECTORS and tensor.ndim == 0 else tensor


def split_original_state_dict(
    tensors: Iterable[tuple[str, torch.Tensor]],
) -> Iterator[tuple[str, str, torch.Tensor]]:
    """Yields `(destination, key, tensor)` for every original tensor that is kept, in the order given."""
    for key, tensor in tensors:
        destination, target = route_original_key(key)
        if destination == "model":
            yield destination, target, to_model_layout(target, tensor)
        elif destination != "dropped":
            yield destination, target, tensor


# The released config names its towers by hub id; these are their known architectures, so that no download is
# needed to learn their sizes. `num_hidden_layers` of SigLIP is overridden by the layers present in the weights.
KNOWN_VISION_TOWERS: dict[str, dict] = {
    "google/siglip-so400m-patch14-384": {
        "hidden_size": 1152,
        "intermediate_size": 4304,
        "num_hidden_layers": 27,
        "num_attention_heads": 16,
        "patch_size": 14,
        "image_size": 384,
        "hidden_act": "gelu_pytorch_tanh",
        "layer_norm_eps": 1e-6,
    },
}
KNOWN_FRAME_SCORERS: dict[str, dict] = {
    # OpenAI CLIP ViT-B/32, as open_clip's "ViT-B-32-quickgelu" architecture.
    "clip-ViT-B-32/0_CLIPModel": {
        "embed_dim": 512,
        "quick_gelu": True,
        "vision_cfg": {"image_size": 224, "layers": 12, "width": 768, "patch_size": 32, "head_width": 64},
        "text_cfg": {"context_length": 77, "vocab_size": 49408, "width": 512, "heads": 8, "layers": 12},
    },
}
QWEN2_FIELDS = (
    "vocab_size",
    "hidden_size",
    "intermediate_size",
    "num_hidden_layers",
    "num_attention_heads",
    "num_key_value_heads",
    "hidden_act",
    "max_position_embeddings",
    "initializer_range",
    "rms_norm_eps",
    "use_sliding_window",
    "sliding_window",
    "max_window_layers",
    "attention_dropout",
    "bos_token_id",
    "eos_token_id",
)
SIGLIP_FIELDS = (
    "hidden_size",
    "intermediate_size",
    "num_attention_heads",
    "num_channels",
    "patch_size",
    "image_size",
    "hidden_act",
    "layer_norm_eps",
    "attention_dropout",
)
EXPECTED_ORIGINAL_SETTINGS = {
    "mm_projector_type": "mlp2x_gelu",
    "mm_spatial_pool_mode": "bilinear",
    "composer_type": "sig_pooling",
    "frame_selector_type": "SeqFrameSelector",
}


def _check_original_settings(original: dict) -> None:
    for name, expected in EXPECTED_ORIGINAL_SETTINGS.items():
        value = original.get(name, expected)
        if value != expected:
            raise ValueError(f"Original config field {name}={value!r} is not supported: ViLAMP uses {expected!r}.")


def _vision_tower_fields(original: dict) -> dict:
    if "vision_tower_config" in original:
        tower = original["vision_tower_config"]
    elif original.get("mm_vision_tower") in KNOWN_VISION_TOWERS:
        tower = KNOWN_VISION_TOWERS[original["mm_vision_tower"]]
    else:
        raise ValueError(
            f"Unknown vision tower {original.get('mm_vision_tower')!r}: give its config as `vision_tower_config` "
            f"or use one of {sorted(KNOWN_VISION_TOWERS)}."
        )
    return {name: tower[name] for name in SIGLIP_FIELDS if name in tower}


def convert_original_config(original: dict, num_vision_layers: int, video_token_id: int) -> dict:
    """
    Keyword arguments of `VilampConfig` for an original `llava_qwen` config. `num_vision_layers` is how many SigLIP
    layers the weights hold; `video_token_id` is the id the tokenizer gives `<video>`.
    """
    _check_original_settings(original)
    if original.get("mm_hidden_size") is not None and "vision_tower_config" in original:
        if original["mm_hidden_size"] != original["vision_tower_config"]["hidden_size"]:
            raise ValueError("Original config: mm_hidden_size disagrees with the vision tower's hidden_size.")
    text_config = {name: original[name] for name in QWEN2_FIELDS if name in original}
    text_config.update(
        model_type="qwen2",
        rope_parameters={"rope_type": "default", "rope_theta": float(original.get("rope_theta", 1000000.0))},
        tie_word_embeddings=bool(original.get("tie_word_embeddings", False)),
    )
    vision_config = _vision_tower_fields(original)
    vision_config.update(model_type="siglip_vision_model", num_hidden_layers=num_vision_layers, vision_use_head=False)
    return {
        "vision_config": vision_config,
        "text_config": text_config,
        "video_token_id": video_token_id,
        "keyframe_pooling_stride": int(original.get("mm_spatial_pool_stride", 2)),
        "query_embed_dim": int(original.get("composer_proj_dim", 512)),
        "tie_word_embeddings": bool(original.get("tie_word_embeddings", False)),
    }


def keyframe_selection_settings(original: dict) -> dict:
    """`VilampProcessor` keyword arguments for the original config's keyframe selection (K, tau_f, r_min)."""
    relevance_floor = float(original.get("f2t_thrd", -1.0))
    return {
        "num_keyframes": int(original.get("max_frame_num", 32)),
        "keyframe_similarity_threshold": float(original.get("f2f_thrd", 0.85)),
        # Cosine similarities are never below -1, so the original's -1 default is "no floor".
        "keyframe_relevance_threshold": relevance_floor if relevance_floor > -1.0 else None,
    }


def frame_scorer_config(original: dict) -> dict:
    """open_clip `CLIP` keyword arguments for the checkpoint's frame scorer."""
    if "frame_selector_clip_config" in original:
        return open_clip_config_from_transformers(original["frame_selector_clip_config"])
    name = original.get("clip_model_path", "clip-ViT-B-32/0_CLIPModel")
    if name not in KNOWN_FRAME_SCORERS:
        raise ValueError(
            f"Unknown frame scorer {name!r}: give its CLIPConfig as `frame_selector_clip_config` "
            f"or use one of {sorted(KNOWN_FRAME_SCORERS)}."
        )
    return KNOWN_FRAME_SCORERS[name]


def open_clip_config_from_transformers(clip_config: dict) -> dict:
    """open_clip `CLIP` keyword arguments for a transformers `CLIPConfig` dict (QuickGELU towers only)."""
    vision, text = clip_config["vision_config"], clip_config["text_config"]
    for tower_name, tower in (("vision", vision), ("text", text)):
        if tower.get("hidden_act", "quick_gelu") != "quick_gelu":
            raise ValueError(f"The frame scorer's {tower_name} tower uses {tower['hidden_act']}, not QuickGELU.")
    return {
        "embed_dim": clip_config["projection_dim"],
        "quick_gelu": True,
        "vision_cfg": {
            "image_size": vision["image_size"],
            "layers": vision["num_hidden_layers"],
            "width": vision["hidden_size"],
            "patch_size": vision["patch_size"],
            "head_width": vision["hidden_size"] // vision["num_attention_heads"],
            "mlp_ratio": vision["intermediate_size"] / vision["hidden_size"],
        },
        "text_cfg": {
            "context_length": text["max_position_embeddings"],
            "vocab_size": text["vocab_size"],
            "width": text["hidden_size"],
            "heads": text["num_attention_heads"],
            "layers": text["num_hidden_layers"],
            "mlp_ratio": text["intermediate_size"] / text["hidden_size"],
        },
    }


def transformers_clip_config(open_clip_config: dict) -> CLIPConfig:
    """A transformers `CLIPConfig` for open_clip `CLIP` keyword arguments (QuickGELU towers)."""
    vision, text = open_clip_config["vision_cfg"], open_clip_config["text_cfg"]
    return CLIPConfig(
        projection_dim=open_clip_config["embed_dim"],
        vision_config={
            "hidden_size": vision["width"],
            "intermediate_size": int(vision["width"] * vision.get("mlp_ratio", 4.0)),
            "num_hidden_layers": vision["layers"],
            "num_attention_heads": vision["width"] // vision["head_width"],
            "patch_size": vision["patch_size"],
            "image_size": vision["image_size"],
            "hidden_act": "quick_gelu",
        },
        text_config={
            "hidden_size": text["width"],
            "intermediate_size": int(text["width"] * text.get("mlp_ratio", 4.0)),
            "num_hidden_layers": text["layers"],
            "num_attention_heads": text["heads"],
            "vocab_size": text["vocab_size"],
            "max_position_embeddings": text["context_length"],
            "hidden_act": "quick_gelu",
        },
    )


def cast_weight(key: str, tensor: torch.Tensor, dtype: torch.dtype) -> torch.Tensor:
    """
    `tensor` cast to the floating point `dtype`. Raises `ValueError` naming `key` when the source is not floating
    point, or when a value is NaN or infinite: in the source, or after the cast (float16 ends at 65504).
    """
    if not tensor.is_floating_point():
        raise ValueError(f"Source tensor {key!r} has dtype {tensor.dtype}; the model needs floating point there.")
    cast = tensor.to(dtype)
    # One pass over the cast tensor in the common case; the source is looked at only to word the error.
    if not torch.isfinite(cast).all():
        if torch.isfinite(tensor).all():
            raise ValueError(f"Source tensor {key!r} has values beyond the range of {dtype}.")
        raise ValueError(f"Source tensor {key!r} holds NaN or infinite values.")
    return cast


def check_frame_scorer_tensors(original_config: dict, clip_tensors: dict[str, torch.Tensor]) -> None:
    """
    Checks that every tensor of the scorer's transformers `CLIPModel` is present with its shape, and nothing else
    (position-id buffers aside). Raises `KeyError` naming missing or unexpected keys, `ValueError` for a shape.
    """
    clip_config = transformers_clip_config(frame_scorer_config(original_config))
    with torch.device("meta"):
        expected = {key: tensor.shape for key, tensor in CLIPModel(clip_config).state_dict().items()}
    present = {key: tensor for key, tensor in clip_tensors.items() if not is_position_ids(key)}
    expected = {key: shape for key, shape in expected.items() if not is_position_ids(key)}
    missing = sorted(FRAME_SCORER_PREFIX + key for key in set(expected) - set(present))
    extra = sorted(FRAME_SCORER_PREFIX + key for key in set(present) - set(expected))
    if missing or extra:
        raise KeyError(f"Frame scorer tensors: missing {missing or 'none'}, unexpected {extra or 'none'}.")
    for key, tensor in present.items():
        if tensor.shape != expected[key]:
            raise ValueError(
                f"Frame scorer tensor {FRAME_SCORER_PREFIX + key!r} has shape {tuple(tensor.shape)}; its config "
                f"needs {tuple(expected[key])}."
            )
