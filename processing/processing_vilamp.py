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

For each video: decode about one frame per second in chunks (`video_decoding`), keep every sampled frame as uint8 at
the vision tower's resolution and score it with the CLIP frame scorer (`frame_scoring`), embed the question, pick the
keyframes (`keyframes`), and expand the video's `<video>` placeholder into exactly as many tokens as the model will
produce for it. Feature merging happens in the model.
"""

import contextlib
import os
import re
import threading
import time
from collections.abc import Iterator, Sequence
from pathlib import Path

import numpy as np
import torch
from tqdm.auto import tqdm
from transformers import BatchFeature
from transformers.processing_utils import ProcessorMixin
from transformers.utils import auto_docstring, cached_file

from .frame_scoring import CONFIG_NAME, WEIGHTS_NAME, FrameScorer
from .keyframe_plot import plot_keyframes
from .keyframes import check_num_keyframes, frame_relevance, select_keyframes
from .video_decoding import (
    VideoInput,
    VideoSource,
    check_sampling_settings,
    is_frame_list,
    open_video,
    resize_frames,
)


SCORER_FILES = (WEIGHTS_NAME, CONFIG_NAME)
TOKENIZER_LOCK = threading.Lock()


# The "qwen_1_5" conversation format of the released evaluation scripts (reference section 5).
CHAT_TEMPLATE = (
    "{% if messages[0]['role'] != 'system' %}"
    "{{ '<|im_start|>system\\nYou are a helpful assistant.<|im_end|>\\n' }}"
    "{% endif %}"
    "{% for message in messages %}"
    "{{ '<|im_start|>' + message['role'] + '\\n' }}"
    "{% if message['content'] is string %}{{ message['content'] }}"
    "{% else %}{% for item in message['content'] %}"
    "{% if item['type'] == 'video' %}{{ '<video>\\n' }}"
    "{% elif item['type'] == 'text' %}{{ item['text'] }}{% endif %}"
    "{% endfor %}{% endif %}"
    "{{ '<|im_end|>\\n' }}"
    "{% endfor %}"
    "{% if add_generation_prompt %}{{ '<|im_start|>assistant\\n' }}{% endif %}"
)
ROLE_LINE = re.compile(r"^\s*(system|user|assistant)\n")


def decode_resize_and_score(
    source: VideoSource,
    indices: np.ndarray,
    image_size: int,
    frame_scorer: FrameScorer | None,
    chunk_size: int,
    show_progress: bool = False,
    step_seconds: dict[str, float] | None = None,
) -> tuple[np.ndarray, torch.Tensor | None]:
    """
    Decodes the frames at `indices` `chunk_size` at a time, keeps each resized to `image_size` as uint8 and scores
    it with `frame_scorer` while its native-resolution pixels are at hand; they never outlive their chunk.

    Returns:
        `(N, 3, image_size, image_size)` uint8 frames and `(N, D)` frame embeddings (`None` without a scorer).
        When `step_seconds` is given, the time spent in `decode`, `resize` and `score` is added to it.
    """
    frames = np.empty((len(indices), 3, image_size, image_size), dtype=np.uint8)
    embeds = torch.empty(len(indices), frame_scorer.embed_dim) if frame_scorer is not None else None
    chunks = _timed_iteration(source.iter_chunks(indices, chunk_size), step_seconds, "decode")
    position = 0
    with tqdm(total=len(indices), desc="decoding and scoring frames", unit="frame", disable=not show_progress) as bar:
        for chunk in chunks:
            rows = slice(position, position + len(chunk))
            with _timed(step_seconds, "resize"):
                frames[rows] = resize_frames(chunk, image_size)
            if frame_scorer is not None:
                with _timed(step_seconds, "score"):
                    embeds[rows] = frame_scorer.embed_frames(chunk)
            position += len(chunk)
            bar.update(len(chunk))
    return frames, embeds


@contextlib.contextmanager
def _timed(step_seconds: dict[str, float] | None, step: str) -> Iterator[None]:
    start = time.perf_counter()
    yield
    if step_seconds is not None:
        step_seconds[step] = step_seconds.get(step, 0.0) + time.perf_counter() - start


def _timed_iteration(items: Iterator, step_seconds: dict[str, float] | None, step: str) -> Iterator:
    while True:
        with _timed(step_seconds, step):
            item = next(items, None)
        if item is None:
            return
        yield item


@auto_docstring
class VilampProcessor(ProcessorMixin):
    """
    Tokenizer (Qwen2) plus the ViLAMP video front end: decoding, CLIP frame scoring and differential keyframe
    selection.
    """

    def __init__(
        self,
        tokenizer=None,
        chat_template: str | None = None,
        frame_scorer: FrameScorer | None = None,
        video_token: str = "<video>",
        num_keyframes: int = 32,
        keyframe_similarity_threshold: float = 0.85,
        keyframe_relevance_threshold: float | None = None,
        fill_keyframe_gaps: bool = True,
        fps: float = 1.0,
        max_frames: int | None = 600,
        image_size: int = 384,
        tokens_per_keyframe: int = 196,
        decode_chunk_size: int = 32,
        **kwargs,
    ):
        r"""
        tokenizer (`PreTrainedTokenizerBase`):
            The language model's tokenizer; it must know `video_token`.
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
        fps (`float`, *optional*, defaults to 1.0):
            Sampling rate: every `int(native_fps / fps)`-th frame is kept.
        max_frames (`int`, *optional*, defaults to 600):
            Cap on sampled frames per video (uniform thinning); 600 as in the released evaluation scripts.
        image_size (`int`, *optional*, defaults to 384):
            Side of the frames given to the vision tower.
        tokens_per_keyframe (`int`, *optional*, defaults to 196):
            Visual tokens per keyframe in the model (the pooled 14x14 grid).
        decode_chunk_size (`int`, *optional*, defaults to 32):
            Frames decoded, resized and scored at once.
        """
        self.frame_scorer = frame_scorer
        self.video_token = video_token
        self.num_keyframes = num_keyframes
        self.keyframe_similarity_threshold = keyframe_similarity_threshold
        self.keyframe_relevance_threshold = keyframe_relevance_threshold
        self.fill_keyframe_gaps = fill_keyframe_gaps
        self.fps = fps
        self.max_frames = max_frames
        self.image_size = image_size
        self.tokens_per_keyframe = tokens_per_keyframe
        self.decode_chunk_size = decode_chunk_size
        super().__init__(tokenizer, chat_template=chat_template if chat_template is not None else CHAT_TEMPLATE)
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

    @auto_docstring
    def __call__(
        self,
        text: str | Sequence[str] | None = None,
        videos: VideoInput | Sequence[VideoInput] | None = None,
        query: str | Sequence[str] | None = None,
        return_tensors: str | None = "pt",
        fps: float | None = None,
        max_frames: int | None = None,
        num_keyframes: int | None = None,
        show_progress: bool = False,
        images=None,
        audio=None,
        **kwargs,
    ) -> BatchFeature:
        r"""
        text (`str` or `list[str]`):
            One prompt or a batch; each `<video>` placeholder takes the next video in order.
        videos (`str`, `np.ndarray`, `torch.Tensor`, `list[PIL.Image.Image]` or a list of those, *optional*):
            A file path, `(N, H, W, 3)` uint8 frames or PIL images; a list gives one video per placeholder (a list
            per prompt, as `apply_chat_template` passes it, also works).
        query (`str` or `list[str]`, *optional*):
            The question used for keyframe selection and feature merging, one per video or one for all. Taken from
            the text around each placeholder (the user's words, without template tokens) when omitted.
        return_tensors (`str`, *optional*, defaults to `"pt"`):
            `"pt"` for the model, or `None`.
        fps (`float`, *optional*):
            Overrides the processor's sampling rate.
        max_frames (`int`, *optional*):
            Overrides the processor's cap on sampled frames.
        num_keyframes (`int`, *optional*):
            Overrides the processor's K.
        show_progress (`bool`, *optional*, defaults to `False`):
            Show a progress bar while each video is decoded and scored.
        images (`None`):
            Not supported; ViLAMP takes videos.
        audio (`None`):
            Not supported; ViLAMP takes videos.

        Returns:
            [`BatchFeature`] with `input_ids`, `attention_mask`, `pixel_values_videos` (uint8, all videos' frames
            concatenated), `keyframe_mask`, `query_embeds`, `video_frame_counts`, and for people
            `keyframe_indices`, `frame_timestamps` (seconds) and `frame_relevance`, concatenated over videos like
            the frames (keyframe indices count within their own video).
        """
        if images is not None or audio is not None:
            raise ValueError("VilampProcessor takes videos only: `images` and `audio` must be None.")
        if text is None:
            raise ValueError("`text` is required: a prompt with one `<video>` placeholder per video.")
        texts = [text] if isinstance(text, str) else list(text) if isinstance(text, (list, tuple)) else None
        if not texts or not all(isinstance(t, str) for t in texts):
            raise ValueError(f"`text` must be a prompt or a non-empty list of prompts, got {text!r:.200}.")
        video_list = self._flatten_videos(videos)
        placeholder_counts = [t.count(self.video_token) for t in texts]
        if sum(placeholder_counts) != len(video_list):
            raise ValueError(
                f"The text holds {sum(placeholder_counts)} {self.video_token} placeholders "
                f"({placeholder_counts} per prompt) but {len(video_list)} videos were given."
            )
        queries = self._queries_for_videos(texts, query, len(video_list))

        settings = {
            "fps": fps if fps is not None else self.fps,
            "max_frames": max_frames if max_frames is not None else self.max_frames,
            "num_keyframes": num_keyframes if num_keyframes is not None else self.num_keyframes,
        }
        check_sampling_settings(settings["fps"], settings["max_frames"])
        check_num_keyframes(settings["num_keyframes"])
        query_embeds = self.frame_scorer.embed_queries(queries) if video_list else None
        processed = [
            self.process_video(video, query_embeds[index], show_progress=show_progress, **settings)
            for index, video in enumerate(video_list)
        ]
        expanded = self._expand_placeholders(texts, processed)
        # A batch of prompts is padded unless told otherwise. The fast tokenizer keeps its padding settings as state,
        # so concurrent calls from several threads must not interleave.
        kwargs.setdefault("padding", len(expanded) > 1)
        with TOKENIZER_LOCK:
            text_inputs = self.tokenizer(expanded, return_tensors=return_tensors, **kwargs)
        data = dict(text_inputs)
        if processed:
            data.update(
                pixel_values_videos=torch.from_numpy(np.concatenate([p["frames"] for p in processed])),
                keyframe_mask=torch.cat([p["keyframe_mask"] for p in processed]),
                query_embeds=query_embeds,
                video_frame_counts=torch.tensor([len(p["frames"]) for p in processed]),
                keyframe_indices=torch.cat([p["keyframe_mask"].nonzero()[:, 0] for p in processed]),
                frame_timestamps=torch.from_numpy(np.concatenate([p["timestamps"] for p in processed])),
                frame_relevance=torch.cat([p["relevance"] for p in processed]),
            )
        return BatchFeature(data=data, tensor_type=return_tensors)

    def process_video(
        self,
        video: VideoInput,
        query_embed: torch.Tensor,
        fps: float,
        max_frames: int | None,
        num_keyframes: int,
        show_progress: bool = False,
    ) -> dict:
        """
        Samples, resizes and scores one video chunk by chunk, then selects its keyframes.

        Returns:
            `frames` `(N, 3, S, S)` uint8, `timestamps` `(N,)` seconds, `relevance` `(N,)` and `keyframe_mask` `(N,)`.
        """
        source = open_video(video, decoded_fps=fps)
        indices = source.sample(fps, max_frames)
        frames, frame_embeds = decode_resize_and_score(
            source, indices, self.image_size, self.frame_scorer, self.decode_chunk_size, show_progress
        )
        keyframe_mask = select_keyframes(
            frame_embeds,
            query_embed,
            num_keyframes,
            self.keyframe_similarity_threshold,
            self.keyframe_relevance_threshold,
            fill_remaining=self.fill_keyframe_gaps,
        )
        return {
            "frames": frames,
            "timestamps": source.timestamps[indices],
            "relevance": frame_relevance(frame_embeds, query_embed),
            "keyframe_mask": keyframe_mask,
        }

    @staticmethod
    def _flatten_videos(videos) -> list:
        if videos is None:
            return []
        if not isinstance(videos, (list, tuple)) or is_frame_list(videos):
            return [videos]
        flat = []
        for item in videos:
            # A list per prompt, as apply_chat_template passes videos; a list of PIL images stays one video.
            is_nested = isinstance(item, (list, tuple)) and not is_frame_list(item)
            flat.extend(item if is_nested else [item])
        return flat

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

    def _expand_placeholders(self, texts: list[str], processed: list[dict]) -> list[str]:
        token_counts = iter(self.num_visual_tokens(len(p["frames"]), int(p["keyframe_mask"].sum())) for p in processed)
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
        """Saves the tokenizer, the processor settings, the chat template and the frame scorer's weights."""
        files = super().save_pretrained(save_directory, push_to_hub=push_to_hub, **kwargs)
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
