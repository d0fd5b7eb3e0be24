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
"""
VilampProcessor: (video, question) -> model inputs.

For each video the video processor (`video_processing_vilamp`) samples about one frame per second and decodes it in
chunks, keeping every sampled frame as uint8 at the vision tower's resolution while the CLIP frame scorer
(`frame_scoring`) embeds each chunk; then the question is embedded, the keyframes are picked (`keyframes`), and the
video's `<video>` placeholder is expanded into exactly as many tokens as the model will produce for it. Feature
merging happens in the model.
"""

import os
import re
import threading
from collections.abc import Sequence
from pathlib import Path

import torch
from transformers import BatchFeature
from transformers.processing_utils import MultiModalData, ProcessingKwargs, ProcessorMixin, Unpack
from transformers.utils import auto_docstring, cached_file

from .frame_scoring import CONFIG_NAME, WEIGHTS_NAME, FrameScorer
from .keyframe_plot import plot_keyframes
from .keyframes import check_num_keyframes, frame_relevance, select_keyframes
from .video_decoding import VideoInput
from .video_processing_vilamp import (
    ProcessedVideo,
    VilampVideoProcessor,
    VilampVideoProcessorKwargs,
    make_metadata_list,
    make_video_list,
)


SCORER_FILES = (WEIGHTS_NAME, CONFIG_NAME)
TOKENIZER_LOCK = threading.Lock()


# The "qwen_1_5" conversation format of the released evaluation scripts (docs/architecture.md, "Prompt"). The
# assistant's words and the <|im_end|> that closes them are marked `{% generation %}`: `return_assistant_tokens_mask`
# (TRL's `assistant_only_loss`) reads the marks; the text is the same.
CHAT_TEMPLATE = (
    "{% macro render(content) %}"
    "{% if content is string %}{{ content }}"
    "{% else %}{% for item in content %}"
    "{% if item['type'] == 'video' %}{{ '<video>\\n' }}"
    "{% elif item['type'] == 'text' %}{{ item['text'] }}{% endif %}"
    "{% endfor %}{% endif %}"
    "{% endmacro %}"
    "{% if messages[0]['role'] != 'system' %}"
    "{{ '<|im_start|>system\\nYou are a helpful assistant.<|im_end|>\\n' }}"
    "{% endif %}"
    "{% for message in messages %}"
    "{{ '<|im_start|>' + message['role'] + '\\n' }}"
    "{% if message['role'] == 'assistant' %}"
    "{% generation %}{{ render(message['content']) }}{{ '<|im_end|>' }}{% endgeneration %}"
    "{% else %}{{ render(message['content']) }}{{ '<|im_end|>' }}{% endif %}"
    "{{ '\\n' }}"
    "{% endfor %}"
    "{% if add_generation_prompt %}{{ '<|im_start|>assistant\\n' }}{% endif %}"
)
ROLE_LINE = re.compile(r"^\s*(system|user|assistant)\n")


class VilampProcessorKwargs(ProcessingKwargs, total=False):
    r"""
    The standard processor keyword arguments (`padding`, `truncation`, `max_length`, `padding_side`,
    `return_tensors`, `return_mm_token_type_ids`, the video processor's `fps`, `num_frames`, `max_frames`, ...), and:

    num_keyframes (`int`, *optional*):
        K for this call; the processor's own `num_keyframes` otherwise.
    """

    videos_kwargs: VilampVideoProcessorKwargs
    num_keyframes: int


@auto_docstring
class VilampProcessor(ProcessorMixin):
    """
    Tokenizer (Qwen2), video processor (sampling, decoding, resizing) and CLIP frame scorer, with differential
    keyframe selection.
    """

    valid_processor_kwargs = VilampProcessorKwargs
    # Lowest-priority defaults of `_merge_kwargs`: tensors for the model.
    text_kwargs = {"return_tensors": "pt"}

    def __init__(
        self,
        tokenizer=None,
        video_processor: VilampVideoProcessor | None = None,
        chat_template: str | None = None,
        frame_scorer: FrameScorer | None = None,
        video_token: str = "<video>",
        num_keyframes: int = 32,
        keyframe_similarity_threshold: float = 0.85,
        keyframe_relevance_threshold: float | None = None,
        fill_keyframe_gaps: bool = True,
        tokens_per_keyframe: int = 196,
    ):
        r"""
        tokenizer (`PreTrainedTokenizerBase`):
            The language model's tokenizer; it must know `video_token`.
        video_processor (`VilampVideoProcessor`, *optional*):
            Sampling, decoding and resizing; `VilampVideoProcessor()` when omitted.
        chat_template (`str`, *optional*):
            Jinja template; defaults to the Qwen format the released model was evaluated with.
        frame_scorer (`FrameScorer`, *optional*):
            The CLIP frame scorer. `from_pretrained` loads it from the processor's directory.
        video_token (`str`, *optional*, defaults to `"<video>"`):
            Placeholder marking where a video goes in the text.
        num_keyframes (`int`, *optional*, defaults to 32):
            K, the frames kept at full detail.
        keyframe_similarity_threshold (`float`, *optional*, defaults to 0.85):
            tau_f, the CLIP similarity above which a frame is redundant with a keyframe.
        keyframe_relevance_threshold (`float`, *optional*):
            r_min; `None` (the released setting) turns the floor off.
        fill_keyframe_gaps (`bool`, *optional*, defaults to `True`):
            Spread unused keyframe slots over the gaps (released code); `False` is the paper's Algorithm 1.
        tokens_per_keyframe (`int`, *optional*, defaults to 196):
            Visual tokens per keyframe in the model (the pooled 14x14 grid).
        """
        if video_processor is None:
            video_processor = VilampVideoProcessor()
        self.frame_scorer = frame_scorer
        self.video_token = video_token
        self.num_keyframes = num_keyframes
        self.keyframe_similarity_threshold = keyframe_similarity_threshold
        self.keyframe_relevance_threshold = keyframe_relevance_threshold
        self.fill_keyframe_gaps = fill_keyframe_gaps
        self.tokens_per_keyframe = tokens_per_keyframe
        super().__init__(
            tokenizer, video_processor, chat_template=chat_template if chat_template is not None else CHAT_TEMPLATE
        )
        self.video_token_id = self.tokenizer.convert_tokens_to_ids(video_token)
        if self.video_token_id is None or self.video_token_id == self.tokenizer.unk_token_id:
            raise ValueError(f"The tokenizer has no {video_token!r} token: add it as a special token first.")

    @property
    def model_input_names(self) -> list[str]:
        return [
            "input_ids",
            "attention_mask",
            "pixel_values_videos",
            "keyframe_mask",
            "query_embeds",
            "video_frame_counts",
        ]

    def num_visual_tokens(self, num_frames: int, num_keyframes: int) -> int:
        """Tokens the model produces for a video: `tokens_per_keyframe` per keyframe, 1 per other frame, 1 newline."""
        return self.tokens_per_keyframe * num_keyframes + (num_frames - num_keyframes) + 1

    def _get_num_multimodal_tokens(self, video_sizes=None, num_keyframes: int | None = None, **kwargs):
        """
        Placeholder tokens of videos of `video_sizes` (`(num_frames, height, width)` each, frames as sampled): every
        frame a keyframe up to K, one token per other frame, one newline.
        """
        data = {}
        if video_sizes is not None:
            keyframes = num_keyframes if num_keyframes is not None else self.num_keyframes
            data["num_video_tokens"] = [
                self.num_visual_tokens(num_frames, min(keyframes, num_frames)) for num_frames, _, _ in video_sizes
            ]
        return MultiModalData(**data)

    @auto_docstring
    def __call__(
        self,
        text: str | Sequence[str] | None = None,
        videos: VideoInput | Sequence[VideoInput] | None = None,
        query: str | Sequence[str] | None = None,
        images=None,
        audio=None,
        **kwargs: Unpack[VilampProcessorKwargs],
    ) -> BatchFeature:
        r"""
        text (`str` or `list[str]`):
            One prompt or a batch; each `<video>` placeholder takes the next video in order.
        videos (`str`, `np.ndarray`, `torch.Tensor`, `list[PIL.Image.Image]` or a list of those, *optional*):
            A file path or http(s) URL, `(N, H, W, 3)` uint8 frames or PIL images; a list gives one video per
            placeholder (a list per prompt, as `apply_chat_template` passes it, also works).
        query (`str` or `list[str]`, *optional*):
            The question used for keyframe selection and feature merging, one per video or one for all. Taken from
            the text around each placeholder (the user's words, without template tokens) when omitted.
        images (`None`):
            Not supported; ViLAMP takes videos.
        audio (`None`):
            Not supported; ViLAMP takes videos.

        Returns:
            [`BatchFeature`] with `input_ids`, `attention_mask`, `pixel_values_videos` (uint8, all videos' frames
            concatenated), `keyframe_mask`, `query_embeds`, `video_frame_counts`, and for people
            `keyframe_indices`, `frame_timestamps` (seconds) and `frame_relevance`, concatenated over videos like
            the frames (keyframe indices count within their own video); `mm_token_type_ids` (2 on video
            placeholders) with `return_mm_token_type_ids=True`.
        """
        if images is not None or audio is not None:
            raise ValueError("VilampProcessor takes videos only: `images` and `audio` must be None.")
        if text is None:
            raise ValueError("`text` is required: a prompt with one `<video>` placeholder per video.")
        texts = [text] if isinstance(text, str) else list(text) if isinstance(text, (list, tuple)) else None
        if not texts or not all(isinstance(t, str) for t in texts):
            raise ValueError(f"`text` must be a prompt or a non-empty list of prompts, got {text!r:.200}.")
        video_list = make_video_list(videos)
        placeholder_counts = [t.count(self.video_token) for t in texts]
        if sum(placeholder_counts) != len(video_list):
            raise ValueError(
                f"The text holds {sum(placeholder_counts)} {self.video_token} placeholders "
                f"({placeholder_counts} per prompt) but {len(video_list)} videos were given."
            )
        queries = self._queries_for_videos(texts, query, len(video_list))
        merged = self._merge_kwargs(VilampProcessorKwargs, tokenizer_init_kwargs=self.tokenizer.init_kwargs, **kwargs)
        text_kwargs, videos_kwargs = merged["text_kwargs"], merged["videos_kwargs"]
        check_num_keyframes(merged["num_keyframes"])

        query_embeds = self.frame_scorer.embed_queries(queries) if video_list else None
        metadata = make_metadata_list(videos_kwargs.pop("video_metadata", None), len(video_list))
        processed = [
            self.process_video(video, query_embeds[index], merged["num_keyframes"], metadata[index], **videos_kwargs)
            for index, video in enumerate(video_list)
        ]
        expanded = self._expand_placeholders(texts, processed)
        return_tensors = text_kwargs.pop("return_tensors", None)
        # A batch of prompts is padded unless told otherwise. The fast tokenizer keeps its padding settings as state,
        # so concurrent calls from several threads must not interleave.
        text_kwargs.setdefault("padding", len(expanded) > 1)
        text_kwargs.pop("return_mm_token_type_ids", None)
        with TOKENIZER_LOCK:
            data = dict(self.tokenizer(expanded, **text_kwargs))
        if merged.get("return_mm_token_type_ids"):
            data["mm_token_type_ids"] = self.create_mm_token_type_ids(data["input_ids"])
        if processed:
            data.update(
                pixel_values_videos=torch.cat(
                    [self.video_processor.to_pixel_values(video.frames, **videos_kwargs) for video, _ in processed]
                ),
                keyframe_mask=torch.cat([mask for _, mask in processed]),
                query_embeds=query_embeds,
                video_frame_counts=torch.tensor([len(video.frames) for video, _ in processed]),
                keyframe_indices=torch.cat([mask.nonzero()[:, 0] for _, mask in processed]),
                frame_timestamps=torch.tensor(
                    [t for video, _ in processed for t in video.metadata.timestamps], dtype=torch.float64
                ),
                frame_relevance=torch.cat(
                    [frame_relevance(video.frame_embeds, query_embeds[i]) for i, (video, _) in enumerate(processed)]
                ),
            )
        return BatchFeature(data=data, tensor_type=return_tensors)

    def process_video(
        self,
        video: VideoInput,
        query_embed: torch.Tensor,
        num_keyframes: int,
        video_metadata: dict | None = None,
        **videos_kwargs,
    ) -> tuple[ProcessedVideo, torch.BoolTensor]:
        """
        Samples, resizes and scores one video chunk by chunk (see `VilampVideoProcessor.process_video`), then selects
        its keyframes. Returns the processed video and its `(N,)` keyframe mask.
        """
        processed = self.video_processor.process_video_for_call(
            video, video_metadata, videos_kwargs, frame_scorer=self.frame_scorer
        )
        keyframe_mask = select_keyframes(
            processed.frame_embeds,
            query_embed,
            num_keyframes,
            self.keyframe_similarity_threshold,
            self.keyframe_relevance_threshold,
            fill_remaining=self.fill_keyframe_gaps,
        )
        return processed, keyframe_mask

    def _queries_for_videos(self, texts: list[str], query, num_videos: int) -> list[str]:
        if query is not None:
            queries = [query] * num_videos if isinstance(query, str) else list(query)
            if len(queries) != num_videos:
                raise ValueError(f"`query` gives {len(queries)} questions for {num_videos} videos.")
            for position, question in enumerate(queries):
                if not isinstance(question, str) or not question.strip():
                    raise ValueError(f"`query` {position} must be a non-empty question, got {question!r}.")
            return queries
        # Every special token counts as template, not question: `<|im_start|>` is one without being named special.
        added = [token.content for token in self.tokenizer.added_tokens_decoder.values() if token.special]
        special = sorted({*self.tokenizer.all_special_tokens, *added} - {self.video_token}, key=len, reverse=True)
        splitter = re.compile("|".join(re.escape(t) for t in special)) if special else None
        queries = []
        for text in texts:
            for segment in splitter.split(text) if splitter else [text]:
                if self.video_token not in segment:
                    continue
                question = ROLE_LINE.sub("", segment.replace(self.video_token, " ")).strip()
                if not question:
                    raise ValueError(
                        f"No question found next to {self.video_token} in {text!r}: pass `query=` explicitly."
                    )
                queries.extend([question] * segment.count(self.video_token))
        return queries

    def _expand_placeholders(self, texts: list[str], processed: list[tuple[ProcessedVideo, torch.Tensor]]) -> list:
        token_counts = iter(self.num_visual_tokens(len(video.frames), int(mask.sum())) for video, mask in processed)
        pattern = re.compile(re.escape(self.video_token))
        return [pattern.sub(lambda _: self.video_token * next(token_counts), text) for text in texts]

    def plot_keyframes(
        self, inputs: BatchFeature, path: str | os.PathLike, video_index: int = 0, question: str | None = None
    ) -> Path:
        """
        Writes a PNG of one video's keyframe selection (see `keyframe_plot.plot_keyframes`) from this processor's
        output: relevance per sampled frame over time, the keyframes marked, and their thumbnails.
        """
        counts = inputs["video_frame_counts"].tolist()
        if not 0 <= video_index < len(counts):
            raise ValueError(f"video_index {video_index} is out of range for a batch of {len(counts)} videos.")
        start = sum(counts[:video_index])
        frames = slice(start, start + counts[video_index])
        keyframes_per_video = [int(mask.sum()) for mask in inputs["keyframe_mask"].split(counts)]
        first_keyframe = sum(keyframes_per_video[:video_index])
        indices = inputs["keyframe_indices"][first_keyframe : first_keyframe + keyframes_per_video[video_index]]
        return plot_keyframes(
            path,
            inputs["frame_timestamps"][frames],
            inputs["frame_relevance"][frames],
            indices,
            inputs["pixel_values_videos"][frames][indices],
            question=question,
        )

    def to_dict(self) -> dict:
        # The scorer's weights are saved beside the config, not inside it; keep them out of the deep copy.
        frame_scorer = self.__dict__.pop("frame_scorer")
        try:
            return super().to_dict()
        finally:
            self.frame_scorer = frame_scorer

    def save_pretrained(self, save_directory: str | os.PathLike, push_to_hub: bool = False, **kwargs):
        """
        Saves the tokenizer, the processor and video processor settings, the chat template and the frame scorer's
        weights. The video processor's settings also go to `video_preprocessor_config.json`, which
        `AutoVideoProcessor` reads on its own.
        """
        files = super().save_pretrained(save_directory, push_to_hub=push_to_hub, **kwargs)
        files += self.video_processor.save_pretrained(save_directory)
        self.frame_scorer.save_pretrained(save_directory)
        return files

    @classmethod
    def from_pretrained(cls, pretrained_model_name_or_path: str | os.PathLike, **kwargs) -> "VilampProcessor":
        """Loads a processor saved by `save_pretrained`, frame scorer included, from a directory or the Hub."""
        download_kwargs = {
            key: kwargs[key]
            for key in ("cache_dir", "force_download", "local_files_only", "token", "revision", "subfolder")
            if key in kwargs
        }
        processor = super().from_pretrained(pretrained_model_name_or_path, **kwargs)
        weights, _ = (cached_file(pretrained_model_name_or_path, name, **download_kwargs) for name in SCORER_FILES)
        processor.frame_scorer = FrameScorer.from_pretrained(Path(weights).parent)
        return processor


__all__ = ["VilampProcessor"]
