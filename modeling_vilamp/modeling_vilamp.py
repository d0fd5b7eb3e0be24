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
"""PyTorch ViLAMP: a LLaVA-OneVision-style video LLM that keeps query-relevant keyframes at full detail and merges
every other frame into a single token (differential feature merging)."""

import math
from dataclasses import dataclass

import torch
import torch.distributed as dist
from safetensors import SafetensorError
from torch import nn
from torch.distributed.fsdp import FSDPModule
from torch.nn import functional as F
from torch.utils.checkpoint import checkpoint
from transformers import AutoModel
from transformers import initialization as init
from transformers.activations import ACT2FN
from transformers.cache_utils import Cache
from transformers.conversion_mapping import register_checkpoint_conversion_mapping
from transformers.core_model_loading import ConversionOps, WeightConverter
from transformers.generation import GenerationMixin
from transformers.modeling_outputs import BaseModelOutputWithPast, BaseModelOutputWithPooling, CausalLMOutputWithPast
from transformers.modeling_utils import PreTrainedModel
from transformers.utils import auto_docstring, can_return_tuple
from transformers.utils.deprecation import deprecate_kwarg

from .configuration_vilamp import VilampConfig


# Inputs that only the prefill step consumes; decoding steps reuse the KV cache instead.
VIDEO_INPUTS = ("pixel_values_videos", "keyframe_mask", "query_embeds", "video_frame_counts", "frame_relevance")
# What VilampProcessor returns for people (which frames, and when); the model takes and ignores them so that
# `model.generate(**processor(...))` works.
PROCESSOR_DETAILS = ("keyframe_indices", "frame_timestamps")


@auto_docstring(custom_intro="Output of [`VilampModel`].")
@dataclass
class VilampModelOutputWithPast(BaseModelOutputWithPast):
    r"""
    cache (`Cache`, *optional*):
        Key/value cache of the language model.
    video_features (`torch.FloatTensor` of shape `(num_visual_tokens, hidden_size)`, *optional*):
        The visual sequences of every video in the batch, concatenated in placeholder order.
    """

    video_features: torch.FloatTensor | None = None


@auto_docstring(custom_intro="Output of [`VilampForConditionalGeneration`].")
@dataclass
class VilampCausalLMOutputWithPast(CausalLMOutputWithPast):
    r"""
    loss (`torch.FloatTensor` of shape `(1,)`, *optional*, returned when `labels` is provided):
        Language modeling loss (next-token prediction).
    logits (`torch.FloatTensor` of shape `(batch_size, sequence_length, vocab_size)`):
        Prediction scores of the language modeling head.
    cache (`Cache`, *optional*):
        Key/value cache of the language model.
    video_features (`torch.FloatTensor` of shape `(num_visual_tokens, hidden_size)`, *optional*):
        The visual sequences of every video in the batch, concatenated in placeholder order.
    """

    video_features: torch.FloatTensor | None = None


class VilampMultiModalProjector(nn.Module):
    """Two-layer MLP from the vision tower's width to the language model's width."""

    def __init__(self, config: VilampConfig):
        super().__init__()
        self.linear_1 = nn.Linear(config.vision_config.hidden_size, config.text_config.hidden_size)
        self.act = ACT2FN[config.projector_hidden_act]
        self.linear_2 = nn.Linear(config.text_config.hidden_size, config.text_config.hidden_size)

    def forward(self, image_features: torch.Tensor) -> torch.Tensor:
        return self.linear_2(self.act(self.linear_1(image_features)))


class VilampDifferentialFeatureMerger(nn.Module):
    """
    Differential feature merging (DFM): squeezes a frame's patch features into one token with a softmax over its
    patches that favours patches relevant to the query and different from the same patch of a context frame.
    """

    def __init__(self, config: VilampConfig):
        super().__init__()
        hidden_size = config.text_config.hidden_size
        self.patch_query_proj = nn.Linear(hidden_size, hidden_size)
        self.patch_context_proj = nn.Linear(hidden_size, hidden_size)
        self.query_proj = nn.Linear(config.query_embed_dim, hidden_size)
        self.context_proj = nn.Linear(hidden_size, hidden_size)
        # One dimension, not a scalar: FSDP2 and DeepSpeed shard every parameter along its first dimension.
        self.temperature = nn.Parameter(torch.empty(1))

    def forward(
        self, patch_features: torch.Tensor, context_keys: torch.Tensor, query_keys: torch.Tensor
    ) -> torch.Tensor:
        """
        Args:
            patch_features: `(num_frames, num_patches, hidden_size)` projector outputs of the frames to merge.
            context_keys: `(num_frames, num_patches, hidden_size)` `context_proj` of each frame's context frame.
            query_keys: `(num_frames, hidden_size)` `query_proj` of each frame's query embedding.

        Returns:
            `(num_frames, hidden_size)`, one token per frame.
        """
        relevance = F.cosine_similarity(query_keys[:, None, :], self.patch_query_proj(patch_features), dim=-1)
        redundancy = F.cosine_similarity(context_keys, self.patch_context_proj(patch_features), dim=-1)
        weights = torch.softmax((relevance - redundancy) / self.temperature, dim=-1)
        return torch.matmul(weights[:, None, :], patch_features)[:, 0]


@dataclass
class VisualSequencePlan:
    """Where each frame's tokens go in the concatenated visual sequence, and which frame each one is compared to."""

    video_index: torch.Tensor  # (num_frames,) video each frame belongs to
    row_start: torch.Tensor  # (num_frames,) first row of the frame's tokens
    newline_rows: torch.Tensor  # (num_videos,) row of each video's trailing image_newline
    context_index: torch.Tensor  # (num_frames,) global index of the frame's DFM context frame
    context_slot: torch.Tensor  # (num_frames,) slot of a frame in the context cache, -1 if nobody's context
    num_context_slots: int
    num_rows: int
    tokens_per_keyframe: int


def plan_visual_sequence(
    keyframe_mask: torch.Tensor, video_frame_counts: torch.Tensor, tokens_per_keyframe: int, context_rule: str
) -> VisualSequencePlan:
    """
    Lays out the visual sequence of reference section 4 for a batch of videos whose frames are concatenated:
    each video is [non-keyframe tokens and `tokens_per_keyframe` rows per keyframe, in temporal order] followed by
    one newline row. Also resolves the DFM context frame of every frame (reference section 3).
    """
    device = keyframe_mask.device
    num_frames = keyframe_mask.shape[0]
    frame_index = torch.arange(num_frames, device=device)
    video_index = torch.repeat_interleave(torch.arange(video_frame_counts.shape[0], device=device), video_frame_counts)
    video_start = torch.cumsum(video_frame_counts, 0) - video_frame_counts

    tokens_per_frame = torch.where(keyframe_mask, tokens_per_keyframe, 1)
    tokens_before = torch.cumsum(tokens_per_frame, 0) - tokens_per_frame
    row_start = tokens_before + video_index  # one newline row per earlier video
    video_end_row = torch.cumsum(tokens_per_frame, 0)[torch.cumsum(video_frame_counts, 0) - 1]
    newline_rows = video_end_row + torch.arange(video_frame_counts.shape[0], device=device)

    keyframes_so_far = torch.cumsum(keyframe_mask.long(), 0)
    keyframes_before_video = (keyframes_so_far - keyframe_mask.long())[video_start][video_index]
    keyframe_ordinal = keyframes_so_far - keyframes_before_video - 1  # i of the keyframe at or before each frame
    if context_rule == "released":
        # The released code indexes the video's frames with the keyframe's ordinal: frame i, not keyframe i.
        context_after_keyframe = video_start[video_index] + keyframe_ordinal
    else:
        # One padding entry: frames before any keyframe index it with -1 and are then discarded by the `where`.
        keyframe_positions = torch.cat([frame_index[keyframe_mask], frame_index.new_zeros(1)])
        context_after_keyframe = keyframe_positions[keyframes_so_far - 1]
    context_index = torch.where(keyframe_ordinal >= 0, context_after_keyframe, frame_index)

    is_context = torch.zeros(num_frames, dtype=torch.bool, device=device)
    is_context[context_index[~keyframe_mask & (context_index != frame_index)]] = True
    context_slot = torch.where(is_context, torch.cumsum(is_context.long(), 0) - 1, -1)
    return VisualSequencePlan(
        video_index=video_index,
        row_start=row_start,
        newline_rows=newline_rows,
        context_index=context_index,
        context_slot=context_slot,
        num_context_slots=int(is_context.sum()),
        num_rows=int(tokens_per_frame.sum()) + video_frame_counts.shape[0],
        tokens_per_keyframe=tokens_per_keyframe,
    )


@dataclass
class ChunkPlan:
    """Where one chunk of frames reads and writes: the index plumbing of `VilampModel._chunk_tokens`."""

    is_key: torch.Tensor  # (n,) keyframes of the chunk
    keyframe_rows: torch.Tensor  # sequence rows of the keyframes' pooled tokens, flattened in order
    merged_rows: torch.Tensor  # (m,) sequence row of each merged frame's token
    merged_videos: torch.Tensor  # (m,) video of each merged frame, for its query
    is_local_context: torch.Tensor  # (n,) frames whose context keys the chunk computes (for later chunks or itself)
    local_context_slots: torch.Tensor  # context-cache slot of each of those, -1 for frames only their own context
    cached_context_slots: torch.Tensor  # the cache slots the chunk reads, each once
    merged_cached_row: torch.Tensor  # (m,) row of `cached_context_slots` holding each merged frame's context keys
    merged_local: torch.Tensor  # (m,) merged frames whose context frame is in the chunk
    merged_local_index: torch.Tensor  # position of those context frames among the chunk's local ones


def plan_chunk(plan: VisualSequencePlan, keyframe_mask: torch.Tensor, start: int, stop: int) -> ChunkPlan:
    """The `ChunkPlan` of frames `start:stop` of the batch (a context frame never comes after the frames it serves)."""
    chunk = slice(start, stop)
    is_key, slots, context_index = keyframe_mask[chunk], plan.context_slot[chunk], plan.context_index[chunk]
    is_merged = ~is_key
    frame_index = torch.arange(start, stop, device=keyframe_mask.device)
    is_local = (slots >= 0) | (is_merged & (context_index == frame_index))
    local_position = torch.cumsum(is_local.long(), 0) - 1
    merged_context = context_index[is_merged]
    merged_local = merged_context >= start
    # Frames whose context is in the chunk read the spare slot -1 (its keys are computed here); the others read
    # their context frame's slot, filled by an earlier chunk.
    merged_slots = torch.where(merged_local, -1, plan.context_slot[merged_context])
    cached_context_slots, merged_cached_row = torch.unique(merged_slots, return_inverse=True)
    keyframe_offsets = torch.arange(plan.tokens_per_keyframe, device=keyframe_mask.device)
    return ChunkPlan(
        is_key=is_key,
        keyframe_rows=(plan.row_start[chunk][is_key][:, None] + keyframe_offsets).flatten(),
        merged_rows=plan.row_start[chunk][is_merged],
        merged_videos=plan.video_index[chunk][is_merged],
        is_local_context=is_local,
        local_context_slots=slots[is_local],
        cached_context_slots=cached_context_slots,
        merged_cached_row=merged_cached_row,
        merged_local=merged_local,
        merged_local_index=local_position[merged_context[merged_local] - start],
    )


def idle_chunk_plan(device: torch.device) -> ChunkPlan:
    """A one-frame chunk whose tokens go nowhere: a merged frame that is its own context, of video 0."""
    none, zero, minus_one = (torch.tensor(values, device=device) for values in ([], [0], [-1]))
    return ChunkPlan(
        is_key=torch.tensor([False], device=device),
        keyframe_rows=none.long(),
        merged_rows=none.long(),
        merged_videos=zero,
        is_local_context=torch.tensor([True], device=device),
        local_context_slots=minus_one,
        cached_context_slots=minus_one,
        merged_cached_row=zero,
        merged_local=torch.tensor([True], device=device),
        merged_local_index=zero,
    )


def straight_through_scales(frame_relevance: torch.Tensor, video_frame_counts: torch.Tensor) -> torch.Tensor:
    """
    `1 - p.detach() + p`, `p` the softmax of the relevance over each video's frames (reference section 6): a factor
    of 1 on every frame's pixels through which gradients reach the frame scorer.
    """
    # float32, so that the factor stays 1 when cast to the frames' dtype; bf16's 1 - p would round to 0.996.
    relevance = frame_relevance.float().split(video_frame_counts.tolist())
    p = torch.cat([torch.softmax(video_relevance, dim=0) for video_relevance in relevance])
    return 1 - p.detach() + p


def concat_chunk_outputs(chunks: list[tuple[torch.Tensor, ...] | None]) -> tuple[torch.Tensor, ...] | None:
    """Joins the vision tower's per-layer outputs of successive frame chunks into one tensor per layer."""
    if chunks[0] is None:
        return None
    return tuple(torch.cat(layer) for layer in zip(*chunks, strict=True))


class TemperatureAsVector(ConversionOps):
    """Loads the feature merger's temperature saved as a 0-dim tensor (by earlier versions) with its shape, `(1,)`."""

    @torch.no_grad
    def convert(
        self, input_dict: dict[str, torch.Tensor], source_patterns: list[str], target_patterns: list[str], **kwargs
    ) -> dict[str, torch.Tensor]:
        tensors = next(iter(input_dict.values()))
        tensor = tensors[0] if isinstance(tensors, list) else tensors
        return {target_patterns[0]: tensor.reshape(1)}

    @property
    def reverse_op(self) -> ConversionOps:
        return TemperatureAsVector()


register_checkpoint_conversion_mapping(
    "vilamp",
    [
        WeightConverter(
            source_patterns="feature_merger.temperature",
            target_patterns="feature_merger.temperature",
            operations=[TemperatureAsVector()],
        )
    ],
    overwrite=True,
)


@auto_docstring
class VilampPreTrainedModel(PreTrainedModel):
    config: VilampConfig
    base_model_prefix = "model"
    input_modalities = ("video", "text")
    supports_gradient_checkpointing = True
    # The towers add their layers. The feature merger is no unit of its own: its projections are called apart from
    # its forward (context keys are computed once and cached), which an FSDP2 unit would not have gathered.
    _no_split_modules = []
    _skip_keys_device_placement = "cache"
    _supports_flash_attn = True
    _supports_sdpa = True
    _supports_flex_attn = True
    _supports_attention_backend = True
    # The decoding steps after the prefill, the part generate compiles, are the language model's alone and trace as
    # one graph. The prefill's visual-sequence plan reads tensor values (token counts) and runs eagerly.
    _can_compile_fullgraph = True

    @classmethod
    def from_pretrained(cls, pretrained_model_name_or_path, *args, **kwargs):
        """`PreTrainedModel.from_pretrained`, with damaged weight files reported against the model they belong to."""
        try:
            return super().from_pretrained(pretrained_model_name_or_path, *args, **kwargs)
        except SafetensorError as error:  # safetensors' own message names no file
            raise OSError(
                f"Cannot read the safetensors weights in {pretrained_model_name_or_path}: {error} (a truncated or "
                "damaged download?)"
            ) from error

    def _init_weights(self, module):
        super()._init_weights(module)
        if isinstance(module, VilampModel):
            init.normal_(module.image_newline, mean=0.0, std=1 / math.sqrt(self.config.text_config.hidden_size))
        elif isinstance(module, VilampDifferentialFeatureMerger):
            init.constant_(module.temperature, self.config.dfm_temperature_init)


@auto_docstring(
    custom_intro="""
    ViLAMP without a language modeling head: SigLIP tower, projector, differential feature merging and Qwen2.
    """
)
class VilampModel(VilampPreTrainedModel):
    def __init__(self, config: VilampConfig):
        super().__init__(config)
        self.vision_tower = AutoModel.from_config(config.vision_config)
        # The released model reads the last layer's hidden state before the post-layernorm; an identity keeps the
        # tower's own forward while skipping that norm (its checkpoint weights are dropped at conversion).
        self.vision_tower.post_layernorm = nn.Identity()
        self.multi_modal_projector = VilampMultiModalProjector(config)
        self.feature_merger = VilampDifferentialFeatureMerger(config)
        self.image_newline = nn.Parameter(torch.empty(config.text_config.hidden_size))
        self.language_model = AutoModel.from_config(config.text_config)

        patches_per_side = config.vision_config.image_size // config.vision_config.patch_size
        pooled_side = math.ceil(patches_per_side / config.keyframe_pooling_stride)
        self.patches_per_side = patches_per_side
        self.pooled_side = pooled_side
        self.tokens_per_keyframe = pooled_side * pooled_side
        self.gradient_checkpointing = False
        self.post_init()

    def get_input_embeddings(self) -> nn.Module:
        return self.language_model.get_input_embeddings()

    def set_input_embeddings(self, value: nn.Module):
        self.language_model.set_input_embeddings(value)

    def num_visual_tokens(self, num_frames: int, num_keyframes: int) -> int:
        """Length of one video's visual sequence: 196 per keyframe, 1 per other frame, 1 newline."""
        return self.tokens_per_keyframe * num_keyframes + (num_frames - num_keyframes) + 1

    def _normalize_frames(self, frames: torch.Tensor) -> torch.Tensor:
        dtype = self.multi_modal_projector.linear_1.weight.dtype
        if frames.dtype != torch.uint8:
            return frames.to(dtype)
        mean = torch.tensor(self.config.pixel_mean, device=frames.device, dtype=torch.float32)[:, None, None]
        std = torch.tensor(self.config.pixel_std, device=frames.device, dtype=torch.float32)[:, None, None]
        return ((frames.float() / 255.0 - mean) / std).to(dtype)

    def _encode_frames(
        self, frames: torch.Tensor, scales: torch.Tensor | None = None, **kwargs
    ) -> tuple[torch.Tensor, BaseModelOutputWithPooling]:
        """
        Projector outputs `(frames, patches, hidden)` of the tower's last layer, before post-layernorm, and the
        tower's own outputs (hidden states and attentions when asked for). `scales` multiply each frame's
        normalised pixels (the straight-through factors).
        """
        pixels = self._normalize_frames(frames)
        if scales is not None:
            pixels = pixels * scales.to(pixels.dtype)[:, None, None, None]
        tower_outputs = self.vision_tower(pixels, **kwargs)
        return self.multi_modal_projector(tower_outputs.last_hidden_state), tower_outputs

    def _chunk_tokens(
        self,
        frames: torch.Tensor,
        scales: torch.Tensor | None,
        chunk: ChunkPlan,
        cached_context_keys: torch.Tensor,
        query_keys: torch.Tensor,
        **kwargs,
    ) -> tuple[torch.Tensor, ...]:
        """
        One chunk of frames through the tower, projector and feature merging: the keyframes' pooled tokens, the
        context keys the chunk computes, the merged frames' tokens, and the tower's hidden states and attentions.
        It writes nothing, so that activation checkpointing can run it again in the backward pass.
        """
        patch_features, tower_outputs = self._encode_frames(frames, scales, **kwargs)
        keyframe_tokens = self._pool_keyframes(patch_features[chunk.is_key]).flatten(0, 1)
        local_keys = self.feature_merger.context_proj(patch_features[chunk.is_local_context])
        # Context frames of earlier chunks come from the cache; those of this chunk (and frames before a video's
        # first keyframe, their own context) from the keys just computed.
        context_keys = cached_context_keys[chunk.merged_cached_row].index_put(
            (chunk.merged_local.nonzero()[:, 0],), local_keys[chunk.merged_local_index].to(cached_context_keys.dtype)
        )
        merged_tokens = self.feature_merger(
            patch_features[~chunk.is_key], context_keys, query_keys[chunk.merged_videos]
        )
        return keyframe_tokens, local_keys, merged_tokens, tower_outputs.hidden_states, tower_outputs.attentions

    def _pool_keyframes(self, patch_features: torch.Tensor) -> torch.Tensor:
        num_frames, _, hidden_size = patch_features.shape
        grid = patch_features.view(num_frames, self.patches_per_side, self.patches_per_side, hidden_size)
        grid = grid.permute(0, 3, 1, 2)
        pooled = F.interpolate(grid, size=(self.pooled_side, self.pooled_side), mode="bilinear")
        return pooled.permute(0, 2, 3, 1).reshape(num_frames, self.tokens_per_keyframe, hidden_size)

    def _chunk_size(self, device: torch.device) -> int:
        # Unset: small on CPU, where a chunk's activations compete with the host memory holding the video; larger
        # on accelerators to keep them busy.
        device_default = 8 if device.type == "cpu" else 64
        return self.config.vision_chunk_size if self.config.vision_chunk_size is not None else device_default

    def _lockstep_chunk_count(self, num_chunks: int) -> int:
        """
        How many vision chunks to run: `num_chunks`, or, with the weights sharded across ranks (FSDP2, DeepSpeed
        ZeRO-3), the largest count of all ranks. Sharded modules gather their weights in collectives at every call,
        so ranks whose videos need fewer chunks run idle ones: otherwise their collectives would not pair up.
        """
        if not (dist.is_available() and dist.is_initialized() and dist.get_world_size() > 1):
            return num_chunks
        # FSDP2 swaps its modules' parameters for gathered plain tensors during forward: it is recognised by its
        # module class. DeepSpeed ZeRO-3 marks its parameters.
        if not (hasattr(self.image_newline, "ds_id") or any(isinstance(m, FSDPModule) for m in self.modules())):
            return num_chunks
        count = torch.tensor([num_chunks], device=self.image_newline.device)
        dist.all_reduce(count, op=dist.ReduceOp.MAX)
        return int(count)

    def _check_normalized_frames(self, frames: torch.Tensor) -> None:
        """Floating point frames must already be normalised: finite, and inside the range normalisation gives."""
        if not bool(torch.isfinite(frames).all()):
            raise ValueError("`pixel_values_videos` hold NaN or infinite values.")
        mean, std = torch.tensor(self.config.pixel_mean), torch.tensor(self.config.pixel_std)
        # A little slack for resampling overshoot; frames left in 0..255 or 0..1 before normalisation are far out.
        low, high = float(((0 - mean) / std).min()) - 0.1, float(((1 - mean) / std).max()) + 0.1
        smallest, largest = (float(value) for value in torch.aminmax(frames))
        if smallest < low or largest > high:
            raise ValueError(
                f"Floating point `pixel_values_videos` must be normalised (mean {self.config.pixel_mean}, std "
                f"{self.config.pixel_std}: values in [{low + 0.1:.2f}, {high - 0.1:.2f}]), got values in "
                f"[{smallest:.3g}, {largest:.3g}]. Pass uint8 frames (0..255) to have the model normalise them."
            )

    def _check_video_inputs(
        self,
        pixel_values_videos: torch.Tensor,
        keyframe_mask: torch.Tensor | None,
        query_embeds: torch.Tensor | None,
        video_frame_counts: torch.Tensor | None,
        frame_relevance: torch.Tensor | None = None,
    ) -> torch.Tensor:
        """Validates the video inputs and returns the per-video frame counts."""
        image_size = self.config.vision_config.image_size
        if pixel_values_videos.ndim != 4 or pixel_values_videos.shape[1:] != (3, image_size, image_size):
            raise ValueError(
                f"`pixel_values_videos` must have shape (total_frames, 3, {image_size}, {image_size}), "
                f"got {tuple(pixel_values_videos.shape)}."
            )
        if pixel_values_videos.dtype != torch.uint8 and not pixel_values_videos.is_floating_point():
            raise ValueError(
                f"`pixel_values_videos` must be uint8 or floating point, got {pixel_values_videos.dtype}."
            )
        if pixel_values_videos.is_floating_point():
            self._check_normalized_frames(pixel_values_videos)
        num_frames = pixel_values_videos.shape[0]
        if keyframe_mask is None or query_embeds is None:
            raise ValueError("`pixel_values_videos` needs `keyframe_mask` and `query_embeds` (see VilampProcessor).")
        if keyframe_mask.dtype != torch.bool or keyframe_mask.shape != (num_frames,):
            raise ValueError(
                f"`keyframe_mask` must be a bool tensor of shape ({num_frames},) matching `pixel_values_videos`, "
                f"got {keyframe_mask.dtype} of shape {tuple(keyframe_mask.shape)}."
            )
        if query_embeds.ndim != 2 or query_embeds.shape[1] != self.config.query_embed_dim:
            raise ValueError(
                f"`query_embeds` must have shape (num_videos, {self.config.query_embed_dim}), "
                f"got {tuple(query_embeds.shape)}."
            )
        if not query_embeds.is_floating_point() or not bool(torch.isfinite(query_embeds).all()):
            raise ValueError(f"`query_embeds` must be finite floating point values, got {query_embeds.dtype} ones.")
        if frame_relevance is not None and (
            frame_relevance.shape != (num_frames,)
            or not frame_relevance.is_floating_point()
            or not bool(torch.isfinite(frame_relevance).all())
        ):
            raise ValueError(
                f"`frame_relevance` must hold one finite float per frame, shape ({num_frames},), got "
                f"{frame_relevance.dtype} of shape {tuple(frame_relevance.shape)}."
            )
        if video_frame_counts is None:
            if query_embeds.shape[0] != 1:
                raise ValueError(
                    f"`query_embeds` holds {query_embeds.shape[0]} videos: pass `video_frame_counts` to say how "
                    f"the {num_frames} frames of `pixel_values_videos` split between them."
                )
            return torch.full((1,), num_frames, dtype=torch.long, device=keyframe_mask.device)
        if video_frame_counts.ndim != 1 or video_frame_counts.is_floating_point() or video_frame_counts.is_complex():
            raise ValueError(
                f"`video_frame_counts` must be a 1-D integer tensor, got {video_frame_counts.dtype} "
                f"of shape {tuple(video_frame_counts.shape)}."
            )
        if video_frame_counts.shape[0] != query_embeds.shape[0]:
            raise ValueError(
                f"`video_frame_counts` lists {video_frame_counts.shape[0]} videos but `query_embeds` has "
                f"{query_embeds.shape[0]}."
            )
        if bool((video_frame_counts < 1).any()) or int(video_frame_counts.sum()) != num_frames:
            raise ValueError(
                f"`video_frame_counts` must be positive and sum to the {num_frames} frames of "
                f"`pixel_values_videos`, got {video_frame_counts.tolist()}."
            )
        return video_frame_counts.to(device=keyframe_mask.device, dtype=torch.long)

    @can_return_tuple
    @auto_docstring(custom_intro="Builds the visual sequence of every video (reference section 4).")
    def get_video_features(
        self,
        pixel_values_videos: torch.Tensor,
        keyframe_mask: torch.Tensor,
        query_embeds: torch.Tensor,
        video_frame_counts: torch.Tensor | None = None,
        frame_relevance: torch.Tensor | None = None,
        **kwargs,
    ) -> tuple | BaseModelOutputWithPooling:
        r"""
        pixel_values_videos (`torch.Tensor` of shape `(total_frames, 3, height, width)`):
            Frames of all videos, concatenated. `uint8` frames are normalised here; floating point frames must be
            normalised already.
        keyframe_mask (`torch.BoolTensor` of shape `(total_frames,)`):
            Which frames are keyframes (kept as pooled patch grids); every other frame becomes one merged token.
        query_embeds (`torch.FloatTensor` of shape `(num_videos, query_embed_dim)`):
            The frame scorer's text embedding of each video's question.
        video_frame_counts (`torch.LongTensor` of shape `(num_videos,)`, *optional*):
            Frames per video; needed when the batch holds more than one video.
        frame_relevance (`torch.FloatTensor` of shape `(total_frames,)`, *optional*):
            Cosine relevance of each frame to its video's question (the frame scorer's). As the released model does
            in every forward, each frame's pixels are scaled by `1 - p.detach() + p`, `p` its softmax over the
            video's frames: numerically 1, it carries gradients to the frame scorer when `frame_relevance` and
            `query_embeds` come from it with gradients.

        Returns:
            [`BaseModelOutputWithPooling`]: `last_hidden_state`, `(num_visual_tokens, hidden_size)`, the visual
            sequences of all videos in order; `pooler_output`, the same split per video (a list), which is what
            `generate` repeats per video for beam search and `num_return_sequences`. With `output_hidden_states` or
            `output_attentions` (arguments or vision config), also the vision tower's `hidden_states` and
            `attentions`, one tensor per layer over all frames, `(total_frames, patches, ...)`: asked for, they hold
            every frame's activations, which the visual sequence alone never does.
        """
        video_frame_counts = self._check_video_inputs(
            pixel_values_videos, keyframe_mask, query_embeds, video_frame_counts, frame_relevance
        )
        dtype, device = self.image_newline.dtype, self.image_newline.device
        # Frames may stay where they are (host memory for a 10,000-frame video): only one chunk at a time moves.
        keyframe_mask = keyframe_mask.to(device)
        plan = plan_visual_sequence(
            keyframe_mask, video_frame_counts.to(device), self.tokens_per_keyframe, self.config.dfm_context
        )
        hidden_size = self.config.text_config.hidden_size
        scales = None
        if frame_relevance is not None:
            scales = straight_through_scales(frame_relevance.to(device), video_frame_counts)

        query_keys = self.feature_merger.query_proj(query_embeds.to(device, dtype))
        # Only the context frames' keys outlive their chunk: at most one per keyframe, never one per frame. The
        # extra last row is what slot -1 (frames that are nobody's context) reads before being overwritten.
        context_cache = torch.zeros(
            plan.num_context_slots + 1, self.patches_per_side**2, hidden_size, device=device, dtype=dtype
        )
        sequence = torch.empty(plan.num_rows, hidden_size, device=device, dtype=dtype)
        # Filled in place, chunk by chunk: an out-of-place `index_put` would copy the whole sequence (and the cache)
        # for every chunk, quadratic in the number of frames. Autograd allows it: no backward reads overwritten rows.
        # Writes cast to the sequence's dtype: under autocast the chunk's tokens come out in bf16/fp16.
        sequence.index_put_((plan.newline_rows,), self.image_newline.expand(plan.newline_rows.shape[0], -1))

        # Checkpointing a whole chunk keeps only what later steps read (its tokens and context keys), not every
        # frame's tower activations. Non-reentrant: a reentrant checkpoint drops the weights' gradients when no
        # input requires grad, as uint8 frames never do.
        checkpointed = self.gradient_checkpointing and self.training and torch.is_grad_enabled()
        chunk_size = self._chunk_size(device)
        num_frames = pixel_values_videos.shape[0]
        chunk_hidden_states, chunk_attentions = [], []
        for start in range(0, self._lockstep_chunk_count(math.ceil(num_frames / chunk_size)) * chunk_size, chunk_size):
            stop = min(start + chunk_size, num_frames)
            # An idle chunk (see `_lockstep_chunk_count`) encodes the first frame again.
            idle = start >= num_frames
            chunk = idle_chunk_plan(device) if idle else plan_chunk(plan, keyframe_mask, start, stop)
            arguments = (
                (pixel_values_videos[:1] if idle else pixel_values_videos[start:stop]).to(device),
                None if idle or scales is None else scales[start:stop],
                chunk,
                # The rows the chunk reads, gathered here: the cache itself changes after this chunk, which a
                # checkpointed chunk must not see when it runs again in the backward pass.
                context_cache[chunk.cached_context_slots],
                query_keys,
            )
            if checkpointed:
                outputs = checkpoint(self._chunk_tokens, *arguments, use_reentrant=False, **kwargs)
            else:
                outputs = self._chunk_tokens(*arguments, **kwargs)
            keyframe_tokens, local_keys, merged_tokens, hidden_states, attentions = outputs
            if idle:
                # Adds zero, but ties the idle chunk into the graph, so its backward (and collectives) run too.
                sequence.index_put_((plan.newline_rows[:1],), 0 * merged_tokens.to(dtype), accumulate=True)
                continue
            sequence.index_put_((chunk.keyframe_rows,), keyframe_tokens.to(dtype))
            is_cached = chunk.local_context_slots >= 0
            context_cache.index_put_((chunk.local_context_slots[is_cached],), local_keys[is_cached].to(dtype))
            sequence.index_put_((chunk.merged_rows,), merged_tokens.to(dtype))
            chunk_hidden_states.append(hidden_states)
            chunk_attentions.append(attentions)
        tokens_per_video = torch.diff(plan.newline_rows + 1, prepend=plan.newline_rows.new_zeros(1))
        return BaseModelOutputWithPooling(
            last_hidden_state=sequence,
            pooler_output=list(sequence.split(tokens_per_video.tolist())),
            hidden_states=concat_chunk_outputs(chunk_hidden_states),
            attentions=concat_chunk_outputs(chunk_attentions),
        )

    def get_placeholder_mask(self, input_ids: torch.LongTensor | None, inputs_embeds: torch.Tensor) -> torch.Tensor:
        """
        Where the `<video>` placeholders are, `(batch_size, sequence_length)`: from `input_ids`, or, without them,
        from the embeddings that equal the placeholder's own.
        """
        if input_ids is not None:
            return input_ids == self.config.video_token_id
        placeholder = self.get_input_embeddings()(
            torch.full((), self.config.video_token_id, dtype=torch.long, device=inputs_embeds.device)
        )
        return (inputs_embeds == placeholder).all(-1)

    @can_return_tuple
    @auto_docstring
    @deprecate_kwarg("past_key_values", "5.40.0", new_name="cache")
    def forward(
        self,
        input_ids: torch.LongTensor | None = None,
        pixel_values_videos: torch.Tensor | None = None,
        keyframe_mask: torch.BoolTensor | None = None,
        query_embeds: torch.FloatTensor | None = None,
        video_frame_counts: torch.LongTensor | None = None,
        frame_relevance: torch.FloatTensor | None = None,
        attention_mask: torch.Tensor | None = None,
        position_ids: torch.LongTensor | None = None,
        cache: Cache | None = None,
        inputs_embeds: torch.FloatTensor | None = None,
        use_cache: bool | None = None,
        mm_encoder_outputs: dict[str, BaseModelOutputWithPooling] | None = None,
        **kwargs,
    ) -> tuple | VilampModelOutputWithPast:
        r"""
        pixel_values_videos (`torch.Tensor` of shape `(total_frames, 3, height, width)`, *optional*):
            Frames of all videos in the batch, concatenated; `uint8` (normalised here) or normalised floats.
        keyframe_mask (`torch.BoolTensor` of shape `(total_frames,)`, *optional*):
            Which frames are keyframes, as chosen by [`VilampProcessor`].
        query_embeds (`torch.FloatTensor` of shape `(num_videos, query_embed_dim)`, *optional*):
            The frame scorer's embedding of each video's question.
        video_frame_counts (`torch.LongTensor` of shape `(num_videos,)`, *optional*):
            Frames per video when the batch holds several videos.
        frame_relevance (`torch.FloatTensor` of shape `(total_frames,)`, *optional*):
            The frame scorer's relevance of each frame to its question: the straight-through path to the scorer
            (see `get_video_features`).
        mm_encoder_outputs (`dict[str, BaseModelOutputWithPooling]`, *optional*):
            Visual sequences computed beforehand: `{"video": get_video_features(...)}`, as `generate` passes them
            (encoded once, then repeated per beam or returned sequence); instead of `pixel_values_videos`.
        """
        if (input_ids is None) ^ (inputs_embeds is not None):
            raise ValueError("You must specify exactly one of input_ids or inputs_embeds")
        video_outputs = (mm_encoder_outputs or {}).get("video")
        if pixel_values_videos is not None and video_outputs is not None:
            raise ValueError("Pass either `pixel_values_videos` or their `mm_encoder_outputs`, not both.")
        if inputs_embeds is None:
            inputs_embeds = self.get_input_embeddings()(input_ids)

        if video_outputs is None and pixel_values_videos is not None:
            video_outputs = self.get_video_features(
                pixel_values_videos, keyframe_mask, query_embeds, video_frame_counts, frame_relevance
            )
        video_features = None
        # Without videos, placeholder tokens are embedded as the tokens they are, as in-library VLMs do (an assistant
        # model's first step, text-only checks).
        if video_outputs is not None:
            video_features = torch.cat(list(video_outputs.pooler_output))
            placeholder_mask = self.get_placeholder_mask(input_ids, inputs_embeds)
            num_placeholders = int(placeholder_mask.sum())
            if num_placeholders != video_features.shape[0]:
                raise ValueError(
                    f"The prompt holds {num_placeholders} `<video>` placeholder tokens but the videos' visual "
                    f"sequences have {video_features.shape[0]} tokens; expand each placeholder with VilampProcessor."
                )
            inputs_embeds = inputs_embeds.masked_scatter(
                placeholder_mask[..., None].to(inputs_embeds.device), video_features.to(inputs_embeds.dtype)
            )

        outputs = self.language_model(
            attention_mask=attention_mask,
            position_ids=position_ids,
            cache=cache,
            inputs_embeds=inputs_embeds,
            use_cache=use_cache,
            **kwargs,
        )
        return VilampModelOutputWithPast(
            last_hidden_state=outputs.last_hidden_state,
            cache=outputs.cache,
            hidden_states=outputs.hidden_states,
            attentions=outputs.attentions,
            video_features=video_features,
        )


@auto_docstring(
    custom_intro="""
    ViLAMP with a language modeling head: answers questions about long videos.
    """
)
class VilampForConditionalGeneration(VilampPreTrainedModel, GenerationMixin):
    _tied_weights_keys = {"lm_head.weight": "model.language_model.embed_tokens.weight"}
    _tp_plan = {"lm_head": "colwise_gather_output"}

    def __init__(self, config: VilampConfig):
        super().__init__(config)
        self.model = VilampModel(config)
        self.lm_head = nn.Linear(config.text_config.hidden_size, config.text_config.vocab_size, bias=False)
        self.post_init()

    def get_input_embeddings(self) -> nn.Module:
        return self.model.get_input_embeddings()

    def set_input_embeddings(self, value: nn.Module):
        self.model.set_input_embeddings(value)

    def get_output_embeddings(self) -> nn.Module:
        return self.lm_head

    def num_visual_tokens(self, num_frames: int, num_keyframes: int) -> int:
        """Length of one video's visual sequence: 196 per keyframe, 1 per other frame, 1 newline."""
        return self.model.num_visual_tokens(num_frames, num_keyframes)

    @auto_docstring(custom_intro="Builds the visual sequence of every video (reference section 4).")
    def get_video_features(
        self,
        pixel_values_videos: torch.Tensor,
        keyframe_mask: torch.Tensor,
        query_embeds: torch.Tensor,
        video_frame_counts: torch.Tensor | None = None,
        frame_relevance: torch.Tensor | None = None,
        **kwargs,
    ) -> tuple | BaseModelOutputWithPooling:
        r"""
        pixel_values_videos (`torch.Tensor` of shape `(total_frames, 3, height, width)`):
            Frames of all videos, concatenated.
        keyframe_mask (`torch.BoolTensor` of shape `(total_frames,)`):
            Which frames are keyframes.
        query_embeds (`torch.FloatTensor` of shape `(num_videos, query_embed_dim)`):
            The frame scorer's embedding of each video's question.
        video_frame_counts (`torch.LongTensor` of shape `(num_videos,)`, *optional*):
            Frames per video.
        frame_relevance (`torch.FloatTensor` of shape `(total_frames,)`, *optional*):
            Each frame's relevance to its question, for the straight-through path to the frame scorer.
        """
        return self.model.get_video_features(
            pixel_values_videos, keyframe_mask, query_embeds, video_frame_counts, frame_relevance, **kwargs
        )

    @can_return_tuple
    @auto_docstring
    @deprecate_kwarg("past_key_values", "5.40.0", new_name="cache")
    def forward(
        self,
        input_ids: torch.LongTensor | None = None,
        pixel_values_videos: torch.Tensor | None = None,
        keyframe_mask: torch.BoolTensor | None = None,
        query_embeds: torch.FloatTensor | None = None,
        video_frame_counts: torch.LongTensor | None = None,
        attention_mask: torch.Tensor | None = None,
        position_ids: torch.LongTensor | None = None,
        cache: Cache | None = None,
        inputs_embeds: torch.FloatTensor | None = None,
        labels: torch.LongTensor | None = None,
        use_cache: bool | None = None,
        mm_encoder_outputs: dict[str, BaseModelOutputWithPooling] | None = None,
        logits_to_keep: int | torch.Tensor = 0,
        keyframe_indices: torch.LongTensor | None = None,
        frame_timestamps: torch.Tensor | None = None,
        frame_relevance: torch.Tensor | None = None,
        **kwargs,
    ) -> tuple | VilampCausalLMOutputWithPast:
        r"""
        pixel_values_videos (`torch.Tensor` of shape `(total_frames, 3, height, width)`, *optional*):
            Frames of all videos in the batch, concatenated; `uint8` (normalised here) or normalised floats.
        keyframe_mask (`torch.BoolTensor` of shape `(total_frames,)`, *optional*):
            Which frames are keyframes, as chosen by [`VilampProcessor`].
        query_embeds (`torch.FloatTensor` of shape `(num_videos, query_embed_dim)`, *optional*):
            The frame scorer's embedding of each video's question.
        video_frame_counts (`torch.LongTensor` of shape `(num_videos,)`, *optional*):
            Frames per video when the batch holds several videos.
        mm_encoder_outputs (`dict[str, BaseModelOutputWithPooling]`, *optional*):
            Visual sequences computed beforehand (`{"video": get_video_features(...)}`), instead of the frames.
        labels (`torch.LongTensor` of shape `(batch_size, sequence_length)`, *optional*):
            Target token ids for the language modeling loss; -100 is ignored. Placeholder positions should be -100.
        keyframe_indices (`torch.LongTensor`, *optional*):
            Which frames the processor kept as keyframes, returned for people; the model ignores it.
        frame_timestamps (`torch.Tensor`, *optional*):
            Time in seconds of every sampled frame, returned by the processor for people; ignored.
        frame_relevance (`torch.FloatTensor` of shape `(total_frames,)`, *optional*):
            The frame scorer's relevance of each frame to its question (the processor returns it): each frame's
            pixels are scaled by `1 - p.detach() + p`, `p` its softmax over the video's frames, as the released
            model does; numerically 1, the path by which gradients reach the frame scorer.
        """
        outputs = self.model(
            input_ids=input_ids,
            pixel_values_videos=pixel_values_videos,
            keyframe_mask=keyframe_mask,
            query_embeds=query_embeds,
            video_frame_counts=video_frame_counts,
            frame_relevance=frame_relevance,
            attention_mask=attention_mask,
            position_ids=position_ids,
            inputs_embeds=inputs_embeds,
            use_cache=use_cache,
            mm_encoder_outputs=mm_encoder_outputs,
            cache=cache,
            **kwargs,
        )
        hidden_states = outputs.last_hidden_state
        slice_indices = slice(-logits_to_keep, None) if isinstance(logits_to_keep, int) else logits_to_keep
        logits = self.lm_head(hidden_states[:, slice_indices, :])

        loss = None
        if labels is not None:
            loss = self.loss_function(
                logits=logits, labels=labels, vocab_size=self.config.text_config.vocab_size, **kwargs
            )
        return VilampCausalLMOutputWithPast(
            loss=loss,
            logits=logits,
            cache=outputs.cache,
            hidden_states=outputs.hidden_states,
            attentions=outputs.attentions,
            video_features=outputs.video_features,
        )

    def prepare_inputs_for_generation(self, *args, is_first_iteration: bool = False, **kwargs):
        """Passes the video inputs to the prefill step only: later steps read the visual tokens from the cache."""
        model_inputs = super().prepare_inputs_for_generation(*args, is_first_iteration=is_first_iteration, **kwargs)
        if not is_first_iteration and kwargs.get("use_cache", True):
            for name in VIDEO_INPUTS + PROCESSOR_DETAILS:
                model_inputs.pop(name, None)
        return model_inputs


__all__ = ["VilampForConditionalGeneration", "VilampModel", "VilampPreTrainedModel"]
