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
import weakref
from collections import OrderedDict

import numpy as np
import torch
from torch import nn
from torch.nn import functional as F
from torch.utils.checkpoint import checkpoint
from transformers import AutoModel
from transformers import initialization as init
from transformers.activations import ACT2FN
from transformers.cache_utils import Cache
from transformers.generation import GenerationMixin
from transformers.modeling_outputs import (
    BaseModelOutput,
    BaseModelOutputWithPooling,
    MultimodalBaseModelOutputWithPast,
    MultimodalCausalLMOutputWithPast,
)
from transformers.modeling_utils import PreTrainedModel
from transformers.processing_utils import Unpack
from transformers.utils import TransformersKwargs, auto_docstring, can_return_tuple
from transformers.utils.deprecation import deprecate_kwarg

from .configuration_vilamp import VilampConfig


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


class VilampVideoCache:
    """
    The vision tower's outputs for whole videos, kept for the next question about the same video: passed to
    `generate` (or `forward`) as `video_cache=`, like a key/value cache. A question then costs the projector, keyframe
    pooling, feature merging and the language model; the tower, most of the model's video work, runs once per video.

    Entries are keyed by the processor's `video_keys` (a digest of the sampled frames' pixels, so another video or
    another sampling never matches) and the model's dtype; a cache belongs to the first model that uses it, and
    another model raises. Its features carry no gradients: use it without them (`generate` does), and make a new one
    when the model's weights change.

    Args:
        max_bytes: the budget, `DEFAULT_MAX_BYTES` (8 GiB) when `None`; the least recently used videos leave first,
            and a video larger than the whole budget is not kept (its question streams the frames through the tower
            as without a cache). docs/usage.md gives the bytes per frame.
        offload: keep the features in host memory, moving a chunk at a time to the model's device when read.
    """

    DEFAULT_MAX_BYTES = 8 * 2**30

    def __init__(self, max_bytes: int | None = None, offload: bool = False):
        if max_bytes is None:
            max_bytes = self.DEFAULT_MAX_BYTES
        if isinstance(max_bytes, bool) or not isinstance(max_bytes, int) or max_bytes < 0:
            raise ValueError(f"`max_bytes` must be a non-negative integer, got {max_bytes!r}.")
        self.max_bytes = max_bytes
        self.offload = offload
        self._entries: OrderedDict[tuple[str, torch.dtype], torch.Tensor] = OrderedDict()
        self._model: weakref.ref | None = None

    def __len__(self) -> int:
        return len(self._entries)

    @property
    def nbytes(self) -> int:
        """Bytes held by the kept features."""
        return sum(states.nbytes for states in self._entries.values())

    def claim(self, model: nn.Module) -> None:
        """Binds the cache to `model` on first use; raises if it holds another model's features."""
        if self._model is None:
            self._model = weakref.ref(model)
        elif self._model() is not model:
            raise ValueError("This VilampVideoCache holds another model's video features: use one cache per model.")

    def get(self, key: str, dtype: torch.dtype) -> torch.Tensor | None:
        """A video's kept tower outputs `(frames, patches, vision_hidden)`, now the most recently used; or None."""
        states = self._entries.get((key, dtype))
        if states is not None:
            self._entries.move_to_end((key, dtype))
        return states

    def holds(self, key: str, dtype: torch.dtype) -> bool:
        return (key, dtype) in self._entries

    def fits(self, nbytes: int) -> bool:
        return nbytes <= self.max_bytes

    def put(self, key: str, states: torch.Tensor) -> None:
        """Keeps a video's tower outputs, evicting the least recently used videos beyond the budget."""
        self._entries[(key, states.dtype)] = states
        while self.nbytes > self.max_bytes:
            self._entries.popitem(last=False)

    def clear(self) -> None:
        self._entries.clear()


class VideoCacheFiller:
    """
    How the model fills a `VilampVideoCache` with one video's tower outputs (`VilampModel.fill_video_cache` gives one
    to the processor's front end; a question's cache miss uses one too): called with the video's frames and how many
    of them are ready, it runs every whole chunk of ready frames through the tower; `keep` stores them.
    """

    def __init__(self, model: "VilampModel", video_cache: VilampVideoCache):
        self.model, self.video_cache = model, video_cache
        self.chunks: list[slice] | None = None
        self.states: list[torch.Tensor] = []

    def __call__(self, frames: np.ndarray | torch.Tensor, ready: int) -> None:
        if self.chunks is None:
            # A video larger than the cache's whole budget is not kept: its questions stream it through the tower.
            fits = self.video_cache.fits(self.model._tower_states_bytes(len(frames)))
            self.chunks = self.model._chunks(len(frames)) if fits else []
        while len(self.states) < len(self.chunks) and self.chunks[len(self.states)].stop <= ready:
            with torch.no_grad():
                chunk = torch.as_tensor(frames[self.chunks[len(self.states)]])
                self.states.append(self.model._tower_states(chunk, self.video_cache))

    def keep(self, key: str) -> None:
        """Stores the video's tower outputs under `key` (`PreparedVideo.key`), once every chunk has run."""
        if self.chunks and len(self.states) == len(self.chunks):
            self.video_cache.put(key, torch.cat(self.states))
        self.states = []


def context_frames(keyframe_mask: torch.Tensor, rule: str) -> torch.Tensor:
    """
    The frame that each frame of one video is compared against in differential feature merging, `(num_frames,)`
    indices. After the i-th keyframe it is frame number i of the video under the released rule, keyframe i under the
    paper's; a frame before the first keyframe is its own context (docs/architecture.md, "Context frames").
    """
    frames = torch.arange(keyframe_mask.shape[0], device=keyframe_mask.device)
    ordinal = torch.cumsum(keyframe_mask.long(), 0) - 1  # i of the keyframe at or before each frame, -1 before any
    if rule == "released":
        after_keyframe = ordinal
    else:
        # The padding entry is what frames before the first keyframe read with ordinal -1; `where` discards it.
        after_keyframe = F.pad(frames[keyframe_mask], (0, 1))[ordinal]
    return torch.where(ordinal >= 0, after_keyframe, frames)


def straight_through_scales(frame_relevance: torch.Tensor, frame_counts: list[int]) -> torch.Tensor:
    """
    `1 - p.detach() + p`, `p` the softmax of the relevance over each video's frames: a factor of 1 on every frame's
    pixels through which gradients reach the frame scorer (docs/architecture.md, "Straight-through scorer path").
    """
    # float32, so that the factor stays 1 when cast to the frames' dtype; bf16's 1 - p would round to 0.996.
    p = torch.cat([torch.softmax(relevance, dim=0) for relevance in frame_relevance.float().split(frame_counts)])
    return 1 - p.detach() + p


def concat_chunk_outputs(chunks: list[tuple[torch.Tensor, ...] | None]) -> tuple[torch.Tensor, ...] | None:
    """Joins the vision tower's per-layer outputs of successive frame chunks into one tensor per layer."""
    if not chunks or chunks[0] is None:
        return None
    return tuple(torch.cat(layer) for layer in zip(*chunks, strict=True))


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
    # one graph. The prefill's visual sequence reads tensor values (frame counts, keyframes) and runs eagerly.
    _can_compile_fullgraph = True

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

    # --- video-only work: what a frame's pixels give, whatever the question ---------------------------------------

    def _normalize_frames(self, frames: torch.Tensor) -> torch.Tensor:
        # Frames arrive as uint8 and are normalised here, a chunk at a time: 10,000 frames at 384 px are 4.4 GB as
        # uint8 but 17.7 GB as float32.
        dtype = self.multi_modal_projector.linear_1.weight.dtype
        if frames.dtype != torch.uint8:
            return frames.to(dtype)
        mean = torch.tensor(self.config.pixel_mean, device=frames.device, dtype=torch.float32)[:, None, None]
        std = torch.tensor(self.config.pixel_std, device=frames.device, dtype=torch.float32)[:, None, None]
        return ((frames.float() / 255.0 - mean) / std).to(dtype)

    def encode_frames(
        self, frames: torch.Tensor, scales: torch.Tensor | None = None, **kwargs: Unpack[TransformersKwargs]
    ) -> tuple[torch.Tensor, BaseModelOutputWithPooling]:
        """
        The video-only features of `frames`: the projector outputs `(frames, patches, hidden)` of the tower's last
        layer before post-layernorm, and the tower's own outputs (hidden states and attentions when asked for).
        `scales` multiply each frame's normalised pixels (the straight-through factors).
        """
        tower_outputs = self._run_vision_tower(frames, scales, **kwargs)
        return self.multi_modal_projector(tower_outputs.last_hidden_state), tower_outputs

    def _run_vision_tower(
        self, frames: torch.Tensor, scales: torch.Tensor | None = None, **kwargs: Unpack[TransformersKwargs]
    ) -> BaseModelOutputWithPooling:
        pixels = self._normalize_frames(frames.to(self.image_newline.device))
        if scales is not None:
            pixels = pixels * scales.to(pixels.dtype)[:, None, None, None]
        return self.vision_tower(pixels, **kwargs)

    def _patch_features(
        self,
        frames: torch.Tensor,
        scales: torch.Tensor | None,
        tower_states: torch.Tensor | None,
        **kwargs: Unpack[TransformersKwargs],
    ) -> tuple[torch.Tensor, BaseModelOutput]:
        # With the tower's outputs kept from an earlier question (`VilampVideoCache`), only the projector runs.
        if tower_states is not None:
            return self.multi_modal_projector(tower_states.to(self.image_newline.device)), BaseModelOutput()
        return self.encode_frames(frames, scales, **kwargs)

    def _cached_tower_states(
        self, video_cache: VilampVideoCache, key: str, frames: torch.Tensor
    ) -> torch.Tensor | None:
        """
        One video's tower outputs from `video_cache`, run over all its frames and kept there on a miss; None for a
        video larger than the cache's whole budget.
        """
        dtype = self.vision_tower.dtype
        states = video_cache.get(key, dtype)
        if states is None:
            # A miss fills the cache as `fill_video_cache` does while a video decodes, all frames ready at once: one
            # way of making an entry, whichever fills it.
            filler = VideoCacheFiller(self, video_cache)
            filler(frames, len(frames))
            filler.keep(key)
            states = video_cache.get(key, dtype)  # still None for a video larger than the cache's whole budget
        return states

    def _tower_states(self, frames: torch.Tensor, video_cache: VilampVideoCache) -> torch.Tensor:
        """One chunk's tower outputs, where `video_cache` keeps them (the host when it offloads)."""
        store = "cpu" if video_cache.offload else self.image_newline.device
        return self._run_vision_tower(frames).last_hidden_state.to(store)

    def pool_keyframes(self, patch_features: torch.Tensor) -> torch.Tensor:
        """Keyframes' patch grids shrunk with bilinear interpolation (27 x 27 -> 14 x 14 in the 7B model)."""
        num_frames, _, hidden_size = patch_features.shape
        grid = patch_features.view(num_frames, self.patches_per_side, self.patches_per_side, hidden_size)
        pooled = F.interpolate(grid.permute(0, 3, 1, 2), size=(self.pooled_side, self.pooled_side), mode="bilinear")
        return pooled.permute(0, 2, 3, 1).reshape(num_frames, self.tokens_per_keyframe, hidden_size)

    def _chunks(self, num_frames: int) -> list[slice]:
        # Unset: small on CPU, where a chunk's activations compete with the host memory holding the video; larger
        # on accelerators to keep them busy.
        size = self.config.vision_chunk_size or (8 if self.image_newline.device.type == "cpu" else 64)
        return [slice(start, min(start + size, num_frames)) for start in range(0, num_frames, size)]

    def _run_chunk(self, function, *arguments, **kwargs):
        # Checkpointing a whole chunk keeps only what it returns (tokens, context keys), not every frame's tower
        # activations. Non-reentrant: a reentrant checkpoint drops the weights' gradients when no input requires
        # grad, as uint8 frames never do.
        if self.gradient_checkpointing and self.training and torch.is_grad_enabled():
            return checkpoint(function, *arguments, use_reentrant=False, **kwargs)
        return function(*arguments, **kwargs)

    # --- question work: which frames stay whole, and what the others keep ----------------------------------------

    def _shared_context_keys(
        self,
        frames: torch.Tensor,
        scales: torch.Tensor | None,
        tower_states: torch.Tensor | None,
        shared: torch.Tensor,
    ) -> torch.Tensor:
        """`context_proj` of the patch features of the frames `shared` that other frames are compared against."""

        def keys_of(chunk_frames, chunk_scales, chunk_states):
            return self.feature_merger.context_proj(self._patch_features(chunk_frames, chunk_scales, chunk_states)[0])

        # Frames and kept tower outputs may stay in host memory while `shared` is on the model's device: index each
        # where it lives.
        shared_frames = shared.to(frames.device)
        shared_states = None if tower_states is None else shared.to(tower_states.device)
        keys = [
            self._run_chunk(
                keys_of,
                frames[shared_frames[chunk]],
                None if scales is None else scales[shared[chunk]],
                None if tower_states is None else tower_states[shared_states[chunk]],
            )
            for chunk in self._chunks(shared.shape[0])
        ]
        if not keys:
            hidden_size = self.config.text_config.hidden_size
            return self.image_newline.new_zeros(0, self.patches_per_side**2, hidden_size)
        return torch.cat(keys)

    def _frame_tokens(
        self,
        frames: torch.Tensor,
        scales: torch.Tensor | None,
        tower_states: torch.Tensor | None,
        keyframe_mask: torch.Tensor,
        context_slots: torch.Tensor,
        shared_keys: torch.Tensor,
        query_key: torch.Tensor,
        **kwargs: Unpack[TransformersKwargs],
    ) -> tuple[torch.Tensor, BaseModelOutput]:
        """
        One chunk of a video's frames, in temporal order, to their tokens: `tokens_per_keyframe` pooled tokens per
        keyframe, one merged token per other frame. `context_slots` gives each frame's row of `shared_keys`, or -1
        for a frame that is its own context. Writes nothing, so that checkpointing can run it again.
        """
        patch_features, tower_outputs = self._patch_features(frames, scales, tower_states, **kwargs)
        merged_features = patch_features[~keyframe_mask]
        slots = context_slots[~keyframe_mask]
        own = (slots < 0).nonzero()[:, 0]
        own_keys = self.feature_merger.context_proj(merged_features[own])
        if shared_keys.shape[0] == 0:  # then every frame is its own context
            context_keys = own_keys
        else:
            context_keys = shared_keys[slots.clamp(min=0)].index_put((own,), own_keys.to(shared_keys.dtype))
        merged = iter(self.feature_merger(merged_features, context_keys, query_key.expand(slots.shape[0], -1)))
        pooled = iter(self.pool_keyframes(patch_features[keyframe_mask]))
        tokens = [next(pooled) if is_key else next(merged)[None] for is_key in keyframe_mask.tolist()]
        # Only what was asked for outlives the chunk: keeping the tower's last hidden state too would hold every
        # frame's patch features (1.7 MB a frame in the 7B model) until the whole video is done.
        return torch.cat(tokens), BaseModelOutput(
            hidden_states=tower_outputs.hidden_states, attentions=tower_outputs.attentions
        )

    def _shared_context(self, keyframe_mask: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
        """
        The frames of one video that other frames are compared against (at most one per keyframe), and the row of
        that list holding each frame's context: -1 for keyframes and for frames that are their own context.
        """
        context = context_frames(keyframe_mask, self.config.dfm_context)
        frame_index = torch.arange(keyframe_mask.shape[0], device=keyframe_mask.device)
        reads_shared = ~keyframe_mask & (context != frame_index)
        shared, rows = torch.unique(context[reads_shared], return_inverse=True)
        return shared, torch.full_like(context, -1).masked_scatter(reads_shared, rows)

    def _video_sequence(
        self,
        frames: torch.Tensor,
        scales: torch.Tensor | None,
        keyframe_mask: torch.Tensor,
        query_key: torch.Tensor,
        tower_states: torch.Tensor | None = None,
        **kwargs: Unpack[TransformersKwargs],
    ) -> tuple[torch.Tensor, list]:
        """
        One video's visual sequence in two passes: the frames that others are compared against, then every frame in
        temporal order against those complete context keys. The second pass runs the shared context frames (at most
        one per keyframe) through the tower again: that costs K of N frames' encoding and keeps only their keys, not
        their activations, between the passes. With the video's `tower_states` kept from an earlier question, both
        passes start from them instead of the frames.
        """
        shared, context_slots = self._shared_context(keyframe_mask)
        shared_keys = self._shared_context_keys(frames, scales, tower_states, shared)
        tokens, tower_outputs = [], []
        for chunk in self._chunks(keyframe_mask.shape[0]):
            chunk_tokens, chunk_outputs = self._run_chunk(
                self._frame_tokens,
                frames[chunk],
                None if scales is None else scales[chunk],
                None if tower_states is None else tower_states[chunk],
                keyframe_mask[chunk],
                context_slots[chunk],
                shared_keys,
                query_key,
                **kwargs,
            )
            tokens.append(chunk_tokens)
            tower_outputs.append(chunk_outputs)
        tokens.append(self.image_newline[None])
        return torch.cat([chunk_tokens.to(self.image_newline.dtype) for chunk_tokens in tokens]), tower_outputs

    def vision_chunk_sizes(
        self,
        keyframe_mask: torch.Tensor,
        video_frame_counts: torch.Tensor | None = None,
        video_keys: list[str] | None = None,
        video_cache: VilampVideoCache | None = None,
    ) -> list[int]:
        """
        The frames of each vision tower run that `get_video_features` makes for these inputs, in order: per video,
        its shared context frames, then all its frames; with `video_cache`, nothing for a video kept there and all
        its frames once for one it will keep. Sharded training (FSDP2, ZeRO-3) needs every rank to run the tower
        equally often (see `vilamp.training.LockstepVisionChunksMixin`); progress bars count the frames.
        """
        counts = [keyframe_mask.shape[0]] if video_frame_counts is None else video_frame_counts.tolist()
        sizes = []
        for video, mask in enumerate(keyframe_mask.split(counts)):
            if video_cache is not None and video_cache.holds(video_keys[video], self.vision_tower.dtype):
                continue
            if video_cache is not None and video_cache.fits(self._tower_states_bytes(mask.shape[0])):
                runs = [mask.shape[0]]
            else:
                runs = [self._shared_context(mask)[0].shape[0], mask.shape[0]]
            sizes.extend(chunk.stop - chunk.start for num_frames in runs for chunk in self._chunks(num_frames))
        return sizes

    def _tower_states_bytes(self, num_frames: int) -> int:
        """Bytes of the tower outputs of `num_frames` frames, as a `VilampVideoCache` keeps them."""
        hidden_size = self.config.vision_config.hidden_size
        return num_frames * self.patches_per_side**2 * hidden_size * self.vision_tower.dtype.itemsize

    def _check_video_inputs(
        self,
        pixel_values_videos: torch.Tensor,
        keyframe_mask: torch.Tensor | None,
        query_embeds: torch.Tensor | None,
        video_frame_counts: torch.Tensor | None,
        frame_relevance: torch.Tensor | None,
    ) -> list[int]:
        """Checks the video inputs' shapes and types (not their values: that would wait on the device) and returns
        the frames per video."""
        image_size = self.config.vision_config.image_size
        num_frames = pixel_values_videos.shape[0]
        if pixel_values_videos.ndim != 4 or pixel_values_videos.shape[1:] != (3, image_size, image_size):
            raise ValueError(
                f"`pixel_values_videos` must have shape (total_frames, 3, {image_size}, {image_size}), "
                f"got {tuple(pixel_values_videos.shape)}."
            )
        if pixel_values_videos.dtype != torch.uint8 and not pixel_values_videos.is_floating_point():
            raise ValueError(
                f"`pixel_values_videos` must be uint8 or floating point, got {pixel_values_videos.dtype}."
            )
        if keyframe_mask is None or query_embeds is None:
            raise ValueError("`pixel_values_videos` needs `keyframe_mask` and `query_embeds` (see VilampProcessor).")
        if keyframe_mask.dtype != torch.bool or keyframe_mask.shape != (num_frames,):
            raise ValueError(
                f"`keyframe_mask` must be a bool tensor of shape ({num_frames},) matching `pixel_values_videos`, "
                f"got {keyframe_mask.dtype} of shape {tuple(keyframe_mask.shape)}."
            )
        if query_embeds.shape[1:] != (self.config.query_embed_dim,) or not query_embeds.is_floating_point():
            raise ValueError(
                f"`query_embeds` must be floating point of shape (num_videos, {self.config.query_embed_dim}), got "
                f"{query_embeds.dtype} of shape {tuple(query_embeds.shape)}."
            )
        if frame_relevance is not None and (
            frame_relevance.shape != (num_frames,) or not frame_relevance.is_floating_point()
        ):
            raise ValueError(
                f"`frame_relevance` must hold one float per frame, shape ({num_frames},), got "
                f"{frame_relevance.dtype} of shape {tuple(frame_relevance.shape)}."
            )
        if video_frame_counts is None:
            if query_embeds.shape[0] != 1:
                raise ValueError(
                    f"`query_embeds` holds {query_embeds.shape[0]} videos: pass `video_frame_counts` to say how "
                    f"the {num_frames} frames of `pixel_values_videos` split between them."
                )
            return [num_frames]
        if video_frame_counts.ndim != 1 or video_frame_counts.is_floating_point() or video_frame_counts.is_complex():
            raise ValueError(
                f"`video_frame_counts` must be a 1-D integer tensor, got {video_frame_counts.dtype} "
                f"of shape {tuple(video_frame_counts.shape)}."
            )
        counts = video_frame_counts.tolist()  # the one size table every video's loop reads, as in Qwen2-VL
        if len(counts) != query_embeds.shape[0]:
            raise ValueError(
                f"`video_frame_counts` lists {len(counts)} videos but `query_embeds` has {query_embeds.shape[0]}."
            )
        if min(counts) < 1 or sum(counts) != num_frames:
            raise ValueError(
                f"`video_frame_counts` must be positive and sum to the {num_frames} frames of "
                f"`pixel_values_videos`, got {counts}."
            )
        return counts

    def cache_videos(
        self,
        pixel_values_videos: torch.Tensor,
        video_keys: list[str],
        video_cache: VilampVideoCache,
        video_frame_counts: torch.Tensor | None = None,
    ) -> None:
        """
        The video-only model work ahead of any question: runs the tower over each video not yet in `video_cache` and
        keeps its outputs there (as the first question would). Arguments as `get_video_features` takes them.
        """
        counts = [pixel_values_videos.shape[0]] if video_frame_counts is None else video_frame_counts.tolist()
        self._check_video_cache(video_cache, video_keys, len(counts))
        start = 0
        for key, count in zip(video_keys, counts, strict=True):
            self._cached_tower_states(video_cache, key, pixel_values_videos[start : start + count])
            start += count

    def fill_video_cache(self, video_cache: VilampVideoCache) -> "VideoCacheFiller":
        """
        The tower's work on a video while the processor is still decoding it: pass the result as `on_frames` to
        `VilampProcessor.prepare_video`, then call its `keep(prepared.key)`. Each chunk of frames runs through the
        tower as soon as it is decoded, while the processor's threads decode and score the next ones (on an
        accelerator the two overlap), in the chunks a first question would use on a cache miss: the entry is the one
        that question would have made.
        """
        self._claim_video_cache(video_cache)
        return VideoCacheFiller(self, video_cache)

    def _claim_video_cache(self, video_cache: VilampVideoCache) -> None:
        # By its methods, not its class: the cache of an installed `vilamp` serves the same model loaded from the
        # code a checkpoint ships (`trust_remote_code=True`), whose classes are copies.
        if not all(hasattr(video_cache, method) for method in ("claim", "get", "holds", "fits", "put")):
            raise ValueError(f"`video_cache` must be a VilampVideoCache, got {type(video_cache).__name__}.")
        video_cache.claim(self)

    def _check_video_cache(self, video_cache: VilampVideoCache, video_keys: list[str] | None, num_videos: int) -> None:
        self._claim_video_cache(video_cache)
        if video_keys is None or len(video_keys) != num_videos:
            raise ValueError(
                f"`video_cache` needs `video_keys`, one per video ({num_videos}), as VilampProcessor returns them; "
                f"got {video_keys!r:.200}."
            )
        # Even with the tower frozen: the cached path leaves out the straight-through factors, so a frame scorer
        # trained through it would get no gradient.
        if torch.is_grad_enabled():
            raise ValueError(
                "`video_cache` keeps features without gradients: use it under `torch.no_grad()` (as `generate` does)."
            )

    @can_return_tuple
    @auto_docstring(custom_intro="Builds the visual sequence of every video (docs/architecture.md).")
    def get_video_features(
        self,
        pixel_values_videos: torch.Tensor,
        keyframe_mask: torch.Tensor,
        query_embeds: torch.Tensor,
        video_frame_counts: torch.Tensor | None = None,
        frame_relevance: torch.Tensor | None = None,
        num_vision_chunks: int | None = None,
        video_keys: list[str] | None = None,
        video_cache: VilampVideoCache | None = None,
        **kwargs: Unpack[TransformersKwargs],
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
        num_vision_chunks (`int`, *optional*):
            Run the vision tower this many times, repeating a chunk whose tokens go nowhere after the real ones
            (no fewer than `len(vision_chunk_sizes(...))` of these inputs). Sharded training passes the largest
            count of all ranks, whose collectives must pair up.
        video_keys (`list[str]`, *optional*):
            The processor's digest of each video's sampled frames: what `video_cache` keys them by.
        video_cache (`VilampVideoCache`, *optional*):
            Tower outputs kept from earlier questions: a video found there skips the tower, and one not found is
            kept for the next question. Without gradients only; `frame_relevance` then plays no part (its factor is
            1 and carries nothing without gradients).

        Returns:
            [`BaseModelOutputWithPooling`]: `last_hidden_state`, `(num_visual_tokens, hidden_size)`, the visual
            sequences of all videos in order; `pooler_output`, the same split per video (a list), which is what
            `generate` repeats per video for beam search and `num_return_sequences`. With `output_hidden_states` or
            `output_attentions` (arguments or vision config), also the vision tower's `hidden_states` and
            `attentions`, one tensor per layer over all frames, `(total_frames, patches, ...)`: asked for, they hold
            every frame's activations, which the visual sequence alone never does.
        """
        frame_counts = self._check_video_inputs(
            pixel_values_videos, keyframe_mask, query_embeds, video_frame_counts, frame_relevance
        )
        if video_cache is not None:
            self._check_video_cache(video_cache, video_keys, len(frame_counts))
        device, dtype = self.image_newline.device, self.image_newline.dtype
        # Frames may stay where they are (host memory for a 10,000-frame video): only one chunk at a time moves.
        keyframe_mask = keyframe_mask.to(device)
        scales = None if frame_relevance is None else straight_through_scales(frame_relevance.to(device), frame_counts)
        query_keys = self.feature_merger.query_proj(query_embeds.to(device, dtype))
        sequences, tower_outputs, start = [], [], 0
        for video, count in enumerate(frame_counts):
            frames = slice(start, start + count)
            tower_states = (
                None
                if video_cache is None
                else self._cached_tower_states(video_cache, video_keys[video], pixel_values_videos[frames])
            )
            sequence, outputs = self._video_sequence(
                pixel_values_videos[frames],
                None if scales is None or tower_states is not None else scales[frames],
                keyframe_mask[frames],
                query_keys[video],
                tower_states,
                **kwargs,
            )
            sequences.append(sequence)
            tower_outputs.extend(outputs)
            start += count
        runs = len(self.vision_chunk_sizes(keyframe_mask, video_frame_counts)) if num_vision_chunks else 0
        for _ in range(runs, num_vision_chunks or 0):
            # Adds zero, but ties the extra chunk into the graph, so that its backward (and collectives) run too.
            idle_tokens, _ = self._run_chunk(
                self._frame_tokens,
                pixel_values_videos[:1],
                None,
                None,
                keyframe_mask.new_ones(1),
                keyframe_mask.new_zeros(1, dtype=torch.long),
                sequences[-1].new_zeros(0, self.patches_per_side**2, sequences[-1].shape[-1]),
                query_keys[0],
            )
            sequences[-1] = sequences[-1] + 0 * idle_tokens.sum()
        return BaseModelOutputWithPooling(
            last_hidden_state=torch.cat(sequences),
            pooler_output=sequences,
            hidden_states=concat_chunk_outputs([outputs.hidden_states for outputs in tower_outputs]),
            attentions=concat_chunk_outputs([outputs.attentions for outputs in tower_outputs]),
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
        num_vision_chunks: int | None = None,
        video_keys: list[str] | None = None,
        video_cache: VilampVideoCache | None = None,
        **kwargs: Unpack[TransformersKwargs],
    ) -> tuple | MultimodalBaseModelOutputWithPast:
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
        num_vision_chunks (`int`, *optional*):
            Vision tower runs for sharded training's lockstep (see `get_video_features`).
        video_keys (`list[str]`, *optional*):
            The processor's digest of each video's sampled frames, which `video_cache` keys them by.
        video_cache (`VilampVideoCache`, *optional*):
            Tower outputs kept between questions about the same videos (see `get_video_features`).
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
                pixel_values_videos,
                keyframe_mask,
                query_embeds,
                video_frame_counts,
                frame_relevance,
                num_vision_chunks,
                video_keys,
                video_cache,
            )
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
        return MultimodalBaseModelOutputWithPast(**outputs, video_outputs=video_outputs)


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

    @auto_docstring(custom_intro="Builds the visual sequence of every video (docs/architecture.md).")
    def get_video_features(
        self,
        pixel_values_videos: torch.Tensor,
        keyframe_mask: torch.Tensor,
        query_embeds: torch.Tensor,
        video_frame_counts: torch.Tensor | None = None,
        frame_relevance: torch.Tensor | None = None,
        **kwargs: Unpack[TransformersKwargs],
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
        frame_relevance: torch.Tensor | None = None,
        attention_mask: torch.Tensor | None = None,
        position_ids: torch.LongTensor | None = None,
        cache: Cache | None = None,
        inputs_embeds: torch.FloatTensor | None = None,
        labels: torch.LongTensor | None = None,
        use_cache: bool | None = None,
        mm_encoder_outputs: dict[str, BaseModelOutputWithPooling] | None = None,
        logits_to_keep: int | torch.Tensor = 0,
        num_vision_chunks: int | None = None,
        video_keys: list[str] | None = None,
        video_cache: VilampVideoCache | None = None,
        **kwargs: Unpack[TransformersKwargs],
    ) -> tuple | MultimodalCausalLMOutputWithPast:
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
        frame_relevance (`torch.FloatTensor` of shape `(total_frames,)`, *optional*):
            The frame scorer's relevance of each frame to its question (the processor returns it): each frame's
            pixels are scaled by `1 - p.detach() + p`, `p` its softmax over the video's frames, as the released
            model does; numerically 1, the path by which gradients reach the frame scorer.
        num_vision_chunks (`int`, *optional*):
            Vision tower runs for sharded training's lockstep (see `get_video_features`).
        video_keys (`list[str]`, *optional*):
            The processor's digest of each video's sampled frames, which `video_cache` keys them by.
        video_cache (`VilampVideoCache`, *optional*):
            Tower outputs kept between questions about the same videos: `generate(**inputs, video_cache=cache)`.
        """
        outputs = self.model(
            input_ids=input_ids,
            pixel_values_videos=pixel_values_videos,
            keyframe_mask=keyframe_mask,
            query_embeds=query_embeds,
            video_frame_counts=video_frame_counts,
            frame_relevance=frame_relevance,
            num_vision_chunks=num_vision_chunks,
            video_keys=video_keys,
            video_cache=video_cache,
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
        return MultimodalCausalLMOutputWithPast(
            loss=loss,
            logits=logits,
            cache=outputs.cache,
            hidden_states=outputs.hidden_states,
            attentions=outputs.attentions,
            video_outputs=outputs.video_outputs,
        )


__all__ = ["VilampForConditionalGeneration", "VilampModel", "VilampPreTrainedModel", "VilampVideoCache"]
