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
VilampProcessor: (video, question) -> model inputs, in two steps with a seam between them.

1. The video-only step, `prepare_video`: the video processor (`video_processing_vilamp`) samples about one frame per
   second, decodes the video in chunks and keeps every sampled frame as uint8 at the vision tower's size, while the
   CLIP frame scorer (`frame_scoring`) embeds each chunk. The resulting `PreparedVideo` depends on the video and the
   sampling settings alone: it goes wherever a video goes, to ask another question without decoding again.
2. The question step, in `__call__`: the question is embedded, the keyframes are picked (`keyframes`), and the
   video's `<video>` placeholder is expanded into as many tokens as the model will produce for it
   (`replace_video_token`). Feature merging happens in the model.
"""

import dataclasses
import os
import re
from collections.abc import Callable, Sequence
from pathlib import Path

import numpy as np
import torch
from transformers import BatchFeature
from transformers.processing_utils import MultiModalData, ProcessingKwargs, ProcessorMixin, Unpack
from transformers.utils import auto_docstring, cached_file

from .frame_scoring import CONFIG_NAME, WEIGHTS_NAME, FrameScorer
from .keyframe_plot import plot_keyframes
from .keyframes import check_num_keyframes, frame_relevance, keyframe_mask, relevance_keyframes
from .video_decoding import VideoInput
from .video_processing_vilamp import (
    PreparedVideo,
    VilampVideoProcessor,
    VilampVideoProcessorKwargs,
    make_metadata_list,
    make_video_list,
)


SCORER_FILES = (WEIGHTS_NAME, CONFIG_NAME)


def num_visual_tokens(num_frames: int, num_keyframes: int, tokens_per_keyframe: int) -> int:
    """
    Length of one video's visual sequence in the model: `tokens_per_keyframe` per keyframe, one per other frame and
    one newline (docs/architecture.md, "Sequence"). The placeholders the processor writes are counted with it.
    """
    return tokens_per_keyframe * num_keyframes + (num_frames - num_keyframes) + 1


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


def concatenated(tensors: list[torch.Tensor]) -> torch.Tensor:
    # One video's frames are returned as they are: a copy would cost every question a pass over the whole video.
    return tensors[0] if len(tensors) == 1 else torch.cat(tensors)


class VilampVideosKwargs(VilampVideoProcessorKwargs, total=False):
    r"""
    The video processor's keyword arguments (`fps`, `num_frames`, `max_frames`, ...), and for the question step:

    query (`str` or `list[str]`, *optional*):
        The question used for keyframe selection and feature merging, one per video or one for all. Taken from the
        text around each placeholder (the user's words, without template tokens) when omitted.
    num_keyframes (`int`, *optional*):
        K for this call; the processor's own `num_keyframes` otherwise.
    """

    query: str | list[str] | None
    num_keyframes: int


class VilampProcessorKwargs(ProcessingKwargs, total=False):
    videos_kwargs: VilampVideosKwargs


@auto_docstring
class VilampProcessor(ProcessorMixin):
    """
    Tokenizer (Qwen2), video processor (sampling, decoding, resizing) and CLIP frame scorer, with differential
    keyframe selection.
    """

    valid_processor_kwargs = VilampProcessorKwargs
    skip_tensor_conversion = [*ProcessorMixin.skip_tensor_conversion, "video_keys"]
    # Lowest-priority defaults of `_merge_kwargs`: tensors for the model, and a batch of prompts padded to one length.
    text_kwargs = {"return_tensors": "pt", "padding": "longest"}

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
            "frame_relevance",
            "video_keys",
        ]

    def num_visual_tokens(self, num_frames: int, num_keyframes: int) -> int:
        """Tokens the model produces for a video of `num_frames` sampled frames, `num_keyframes` of them keyframes."""
        return num_visual_tokens(num_frames, num_keyframes, self.tokens_per_keyframe)

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

    # --- the video-only step ----------------------------------------------------------------------------------

    def prepare_video(
        self,
        video: VideoInput | PreparedVideo,
        video_metadata: dict | None = None,
        keep_scorer_inputs: bool = False,
        on_frames: Callable[[np.ndarray, int], None] | None = None,
        **kwargs: Unpack[VilampVideoProcessorKwargs],
    ) -> PreparedVideo:
        """
        Samples, decodes and resizes `video` chunk by chunk and embeds every sampled frame with the frame scorer (see
        `VilampVideoProcessor.process_video`; `keep_scorer_inputs` keeps what the scorer read, to train it;
        `on_frames`, `model.fill_video_cache(cache)`, runs the vision tower on the frames while later ones decode).
        Nothing here depends on a question: pass the result wherever a video goes (`__call__`, chat messages) to
        answer more questions about it. A `PreparedVideo` is returned as it is.
        """
        return self.video_processor.process_video(
            video,
            video_metadata,
            self.frame_scorer,
            keep_scorer_inputs=keep_scorer_inputs,
            on_frames=on_frames,
            **kwargs,
        )

    # --- the question step -------------------------------------------------------------------------------------

    @auto_docstring
    def __call__(
        self,
        images=None,
        text: str | Sequence[str] | None = None,
        videos: VideoInput | PreparedVideo | Sequence[VideoInput | PreparedVideo] | None = None,
        audio=None,
        **kwargs: Unpack[VilampProcessorKwargs],
    ) -> BatchFeature:
        r"""
        images (`None`):
            Not supported; ViLAMP takes videos.
        text (`str` or `list[str]`):
            One prompt or a batch; each `<video>` placeholder takes the next video in order.
        videos (`str`, `np.ndarray`, `torch.Tensor`, `list[PIL.Image.Image]`, `PreparedVideo` or a list, *optional*):
            A file path or http(s) URL, `(N, H, W, 3)` uint8 frames, PIL images or a `prepare_video` result; a list
            gives one video per placeholder (a list per prompt, as `apply_chat_template` passes it, also works).
        audio (`None`):
            Not supported; ViLAMP takes videos.

        Returns:
            [`BatchFeature`] with `input_ids`, `attention_mask`, `pixel_values_videos` (uint8, all videos' frames
            concatenated), `keyframe_mask`, `query_embeds`, `video_frame_counts` and `frame_relevance` (the scorer's
            relevance of each frame, for the model's straight-through path), `video_keys` (a digest of each video's
            frames, for the model's `VilampVideoCache`); `video_metadata` (sampled frames' indices and timestamps)
            with `return_metadata=True`; `mm_token_type_ids` (2 on video placeholders) with
            `return_mm_token_type_ids=True`.
        """
        # Checked before transformers' own handling, which would fail on anything but text with a TypeError.
        prompts = [text] if isinstance(text, str) else text
        if text is not None and (
            not isinstance(prompts, (list, tuple)) or not prompts or not all(isinstance(p, str) for p in prompts)
        ):
            raise ValueError(f"`text` must be a prompt or a non-empty list of prompts, got {text!r:.200}.")
        if videos is not None and kwargs.get("query") is None:
            kwargs["query"] = self.questions_next_to_videos(text)
        return super().__call__(images=images, text=text, videos=videos, audio=audio, **kwargs)

    def validate_inputs(self, images=None, text=None, videos=None, audio=None, **kwargs) -> None:
        """ViLAMP's inputs: videos only, and one per `<video>` placeholder in the text."""
        if images is not None or audio is not None:
            raise ValueError("VilampProcessor takes videos only: `images` and `audio` must be None.")
        if text is None and videos is None:
            raise ValueError("VilampProcessor needs `text`, a prompt with one `<video>` placeholder per video.")
        if text is None:
            return
        placeholder_counts = [prompt.count(self.video_token) for prompt in text]
        num_videos = len(make_video_list(videos))
        if sum(placeholder_counts) != num_videos:
            raise ValueError(
                f"The total number of {self.video_token} tokens in the prompts should be the same as the number of "
                f"videos passed: the text holds {sum(placeholder_counts)} {self.video_token} placeholders "
                f"({placeholder_counts} per prompt) and {num_videos} videos were given."
            )

    def _process_videos(
        self, videos, query: str | list[str], num_keyframes: int | None = None, **kwargs
    ) -> tuple[dict, list[str]]:
        """Both steps for every video: `prepare_video`, then the keyframes of its question."""
        video_list = make_video_list(videos)
        metadata = make_metadata_list(kwargs.pop("video_metadata", None), len(video_list))
        num_keyframes = self.num_keyframes if num_keyframes is None else num_keyframes
        check_num_keyframes(num_keyframes)
        queries = self.check_queries(query, len(video_list))
        prepared = [
            self.prepare_video(video, video_metadata=video_metadata, **kwargs)
            for video, video_metadata in zip(video_list, metadata, strict=True)
        ]
        query_embeds = self.frame_scorer.embed_queries(queries)
        relevance = [
            frame_relevance(video.frame_embeds, embed) for video, embed in zip(prepared, query_embeds, strict=True)
        ]
        by_relevance = [
            self.relevance_keyframes(video, scores, num_keyframes)
            for video, scores in zip(prepared, relevance, strict=True)
        ]
        keyframe_masks = [keyframe_mask(chosen, num_keyframes, self.fill_keyframe_gaps) for chosen in by_relevance]
        data = {
            "pixel_values_videos": concatenated([video.pixel_values for video in prepared]),
            "keyframe_mask": torch.cat(keyframe_masks),
            "query_embeds": query_embeds,
            "video_frame_counts": torch.tensor([len(video.frames) for video in prepared]),
            "frame_relevance": torch.cat(relevance),
            "video_keys": [video.key for video in prepared],
            # With return_metadata, a copy per question that also names the keyframes chosen for their relevance.
            "video_metadata": [
                dataclasses.replace(video.metadata, relevance_keyframes=chosen.nonzero()[0].tolist())
                for video, chosen in zip(prepared, by_relevance, strict=True)
            ]
            if kwargs.get("return_metadata")
            else [video.metadata for video in prepared],
        }
        replacements = [self.replace_video_token(data, index) for index in range(len(prepared))]
        return data, replacements

    def relevance_keyframes(self, video: PreparedVideo, relevance: torch.Tensor, num_keyframes: int) -> np.ndarray:
        """
        The `(N,)` mask of the keyframes a question chooses for their `relevance` in a prepared video
        (`keyframes.relevance_keyframes`); `fill_keyframe_gaps` then spreads the unused slots.
        """
        return relevance_keyframes(
            video.frame_embeds,
            relevance,
            num_keyframes,
            self.keyframe_similarity_threshold,
            self.keyframe_relevance_threshold,
        )

    def replace_video_token(self, video_inputs: dict, video_idx: int, **kwargs) -> str:
        """The placeholder tokens of video `video_idx`: as many as the model makes of its frames and keyframes."""
        counts = video_inputs["video_frame_counts"].tolist()
        keyframes = video_inputs["keyframe_mask"].split(counts)[video_idx]
        return self.video_token * self.num_visual_tokens(counts[video_idx], int(keyframes.sum()))

    def check_queries(self, query: str | Sequence[str] | None, num_videos: int) -> list[str]:
        """One non-empty question per video, from one question for all or a list of them."""
        if query is None:
            raise ValueError("Pass `query=`, the question about the videos, or a `text` that holds it.")
        queries = [query] * num_videos if isinstance(query, str) else list(query)
        if len(queries) != num_videos:
            raise ValueError(f"`query` gives {len(queries)} questions for {num_videos} videos.")
        for position, question in enumerate(queries):
            if not isinstance(question, str) or not question.strip():
                raise ValueError(f"`query` {position} must be a non-empty question, got {question!r}.")
        return queries

    def questions_next_to_videos(self, text: str | Sequence[str] | None) -> list[str] | None:
        """
        The question beside each `<video>` placeholder of `text`: the words of the message around it, without the
        template's special tokens and role line. `None` without text.
        """
        if text is None:
            return None
        prompts = [text] if isinstance(text, str) else text
        # Every special token counts as template, not question: `<|im_start|>` is one without being named special.
        added = [token.content for token in self.tokenizer.added_tokens_decoder.values() if token.special]
        special = sorted({*self.tokenizer.all_special_tokens, *added} - {self.video_token}, key=len, reverse=True)
        splitter = re.compile("|".join(re.escape(t) for t in special)) if special else None
        questions = []
        for prompt in prompts:
            for segment in splitter.split(prompt) if splitter else [prompt]:
                if self.video_token not in segment:
                    continue
                question = ROLE_LINE.sub("", segment.replace(self.video_token, " ")).strip()
                if not question:
                    raise ValueError(
                        f"No question found next to {self.video_token} in {prompt!r}: pass `query=` explicitly."
                    )
                questions.extend([question] * segment.count(self.video_token))
        return questions

    def plot_keyframes(
        self, inputs: BatchFeature, path: str | os.PathLike, video_index: int = 0, question: str | None = None
    ) -> Path:
        """
        Writes a PNG of one video's keyframe selection (see `keyframe_plot.plot_keyframes`) from this processor's
        output, called with `return_metadata=True`: relevance per sampled frame over time, the keyframes marked, and
        their thumbnails.
        """
        counts = inputs["video_frame_counts"].tolist()
        if not 0 <= video_index < len(counts):
            raise ValueError(f"video_index {video_index} is out of range for a batch of {len(counts)} videos.")
        if "video_metadata" not in inputs:
            raise ValueError(
                "plot_keyframes needs the frames' timestamps: call the processor with return_metadata=True."
            )
        start = sum(counts[:video_index])
        frames = slice(start, start + counts[video_index])
        indices = inputs["keyframe_mask"][frames].nonzero()[:, 0]
        metadata = inputs["video_metadata"][video_index]
        chosen = metadata.relevance_keyframes
        by_relevance = set(indices.tolist() if chosen is None else chosen)
        return plot_keyframes(
            path,
            metadata.timestamps,
            inputs["frame_relevance"][frames],
            indices,
            inputs["pixel_values_videos"][frames][indices],
            question=question,
            aspect_ratio=metadata.width / metadata.height if metadata.width and metadata.height else None,
            gap_filled=[index not in by_relevance for index in indices.tolist()],
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
