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
VilampVideoProcessor: a video (file, URL or decoded frames) -> its sampled frames at the vision tower's size, uint8.

Sampling is the released evaluation's (about one frame per second, at most `max_frames`; see `video_decoding`), or
`num_frames` spread uniformly. Frames are decoded a chunk at a time and resized at once, bicubic without keeping the
aspect with PIL, pixel for pixel the original's SigLIP preprocessing; a caller may score each native-resolution
chunk on the way (the processor's CLIP frame scorer), so that only the few chunks in flight are ever held at full
size. Normalisation (mean 0.5, std 0.5) happens inside the model, which takes the uint8 frames.
"""

import hashlib
from collections.abc import Callable
from dataclasses import dataclass

import numpy as np
import torch
from transformers import BatchFeature
from transformers.image_utils import ChannelDimension, PILImageResampling
from transformers.processing_utils import Unpack, VideosKwargs
from transformers.utils import auto_docstring
from transformers.video_processing_utils import BaseVideoProcessor
from transformers.video_utils import VideoMetadata

from .decoding_threads import ChunkScorer, decode_resize_and_score
from .video_decoding import DecodedVideo, VideoSource, is_frame_list, open_video, sample_at_rate


class VilampVideoProcessorKwargs(VideosKwargs, total=False):
    r"""
    max_frames (`int`, *optional*):
        Cap on the frames sampled from one video at `fps` (uniform thinning beyond it); `None` for no cap.
    decode_chunk_size (`int`, *optional*):
        Frames decoded, resized (and scored) at once.
    video_backend (`str`, *optional*):
        Decoder for files and URLs: `"auto"` or a backend name (see `video_decoding`).
    show_progress (`bool`, *optional*):
        Show a progress bar while each video is decoded (and scored).
    """

    max_frames: int | None
    decode_chunk_size: int
    video_backend: str
    show_progress: bool


@dataclass
class VilampVideoMetadata(VideoMetadata):
    """
    `VideoMetadata` that may carry every frame's presentation time (`presentation_times`, seconds from the first
    frame), so that sampling and `timestamps` are right for variable frame rates, and, in a processor's output, the
    keyframes chosen for their relevance (`relevance_keyframes`).
    """

    presentation_times: list[float] | None = None
    # Set on the copy a processor call returns with `return_metadata=True`: which of its keyframes (sampled frame
    # numbers) the greedy pass chose for their relevance to the question; the others filled gaps.
    relevance_keyframes: list[int] | None = None

    @property
    def timestamps(self) -> list[float]:
        if self.presentation_times is None or self.frames_indices is None:
            return super().timestamps
        return [self.presentation_times[index] for index in self.frames_indices]


class PreparedVideo:
    """
    A video after the video-only step (`VilampVideoProcessor.process_video`, `VilampProcessor.prepare_video`): what
    any question about it starts from. A plain class, not a dataclass: `apply_chat_template` turns dataclasses in
    messages into dicts, and a prepared video must reach the processor as itself.

    Attributes:
        frames: `(N, 3, size, size)` uint8, the sampled frames at the vision tower's size.
        metadata: which frames were sampled (`frames_indices`) and when (`timestamps`).
        frame_embeds: `(N, D)` frame scorer embeddings, when a scorer was given.
        scorer_pixel_values: `(N, 3, S, S)` the scorer's inputs, when asked to keep them.
        key: a digest of `frames` (computed on first use), by which the model's `VilampVideoCache` finds the video:
            two videos share it only when their sampled frames are the same pixels.
    """

    def __init__(
        self,
        frames: np.ndarray,
        metadata: VilampVideoMetadata,
        frame_embeds: torch.Tensor | None,
        scorer_pixel_values: torch.Tensor | None = None,
    ):
        self.frames = frames
        self.metadata = metadata
        self.frame_embeds = frame_embeds
        self.scorer_pixel_values = scorer_pixel_values
        self._key: str | None = None

    @property
    def pixel_values(self) -> torch.Tensor:
        """`frames` as the model's `pixel_values_videos` take them: a uint8 tensor sharing their memory."""
        return torch.from_numpy(self.frames)

    @property
    def key(self) -> str:
        if self._key is None:
            # SHA-256 runs at about 1 GB/s on one core: 0.13 s for 300 frames at 384 px, once per prepared video.
            digest = hashlib.sha256(repr(self.frames.shape).encode())
            digest.update(np.ascontiguousarray(self.frames).data)
            self._key = digest.hexdigest()
        return self._key


def source_metadata(source: VideoSource) -> VilampVideoMetadata:
    """What `VilampVideoProcessor.sample_frames`, the one sampling rule, needs to know of an opened video."""
    return VilampVideoMetadata(
        total_num_frames=source.num_frames,
        fps=source.native_fps,
        duration=source.num_frames / source.native_fps,
        video_backend=source.backend,
        # Frames given in memory are evenly spaced by definition; a file's frames are where its decoder says.
        presentation_times=None if isinstance(source, DecodedVideo) else source.timestamps.tolist(),
    )


def make_video_list(videos) -> list:
    """One video or a list of them (a list per prompt, as `apply_chat_template` passes them, is flattened)."""
    if videos is None:
        return []
    if not isinstance(videos, (list, tuple)) or is_frame_list(videos) or _is_frame_array_list(videos):
        return [videos]
    flat = []
    for item in videos:
        # A list of PIL images or of single frames is one video; any other list holds one prompt's videos.
        is_nested = isinstance(item, (list, tuple)) and not (is_frame_list(item) or _is_frame_array_list(item))
        flat.extend(item if is_nested else [item])
    return flat


def _is_frame_array_list(video) -> bool:
    return bool(video) and all(isinstance(frame, (np.ndarray, torch.Tensor)) and frame.ndim == 3 for frame in video)


def make_metadata_list(video_metadata, num_videos: int) -> list:
    """One metadata (dict or `VideoMetadata`) per video, from one, a list, or a nested list as transformers passes."""
    if video_metadata is None:
        return [None] * num_videos
    flat = make_video_list(video_metadata) if isinstance(video_metadata, (list, tuple)) else [video_metadata]
    if len(flat) != num_videos:
        raise ValueError(f"`video_metadata` describes {len(flat)} videos but {num_videos} were given.")
    return [VilampVideoMetadata(**dict(item)) if item is not None else None for item in flat]


def to_channels_last_rgb(video, input_data_format: str | None = None):
    """
    Frames given in memory, in transformers' layouts, as ViLAMP's `(N, H, W, 3)`: torch tensors and arrays may be
    channels-first (`(N, C, H, W)`, inferred as transformers does when not given), grey or RGBA (alpha dropped, as
    PIL's RGB conversion does). Other inputs (paths, URLs, PIL images) are returned as they are.
    """
    if isinstance(video, (list, tuple)) and _is_frame_array_list(video):
        video = np.stack([np.asarray(frame) for frame in video])
    if isinstance(video, torch.Tensor):
        video = video.detach().cpu().numpy()
    if not isinstance(video, np.ndarray) or video.ndim != 4:
        return video
    channels_first = (
        input_data_format == "channels_first"
        if input_data_format is not None
        else video.shape[1] in (1, 3, 4) and video.shape[-1] not in (1, 3, 4)
    )
    if channels_first:
        video = video.transpose(0, 2, 3, 1)
    if video.shape[-1] == 1:
        video = np.repeat(video, 3, axis=-1)
    elif video.shape[-1] == 4:
        video = video[..., :3]
    return np.ascontiguousarray(video)


@auto_docstring
# The do_* flags are fixed: `check_frame_settings`, which `process_video` runs for `preprocess` and the processor
# alike, refuses a call that changes them, so `preprocess` need not read them. trf-ignore: TRF016
class VilampVideoProcessor(BaseVideoProcessor):
    resample = PILImageResampling.BICUBIC
    size = {"height": 384, "width": 384}
    do_resize = True
    # Frames leave as uint8 and the model normalises them with its config's `pixel_mean` / `pixel_std`, a chunk at a
    # time: 10,000 frames at 384 px are 4.4 GB as uint8 but 17.7 GB as float32.
    do_rescale = False
    do_normalize = False
    do_convert_rgb = True
    do_sample_frames = True
    fps = 1.0
    num_frames = None
    max_frames = 600
    decode_chunk_size = 32
    video_backend = "auto"
    show_progress = False
    valid_kwargs = VilampVideoProcessorKwargs
    model_input_names = ["pixel_values_videos"]

    def __init__(self, **kwargs: Unpack[VilampVideoProcessorKwargs]):
        super().__init__(**kwargs)
        if self.size.get("height") != self.size.get("width"):
            raise ValueError(f"ViLAMP's vision tower takes square frames; `size` is {self.size}.")

    @property
    def image_size(self) -> int:
        """Side of the square frames given to the vision tower."""
        return self.size["height"]

    def sample_frames(
        self,
        metadata: VideoMetadata,
        num_frames: int | None = None,
        fps: float | None = None,
        max_frames: int | None = None,
        **kwargs,
    ) -> np.ndarray:
        """
        Indices of the frames kept from a video described by `metadata`: about `fps` per second, thinned to
        `max_frames` (the released rule: every `int(native_fps / fps)`-th frame, or by presentation time for a
        variable frame rate), or exactly `num_frames` spread uniformly as transformers does. `fps` and `num_frames`
        exclude each other; without either, this processor's `num_frames`, else its `fps`, applies.
        """
        if fps is not None and num_frames is not None:
            raise ValueError("`num_frames` and `fps` are mutually exclusive arguments, please use only one!")
        if fps is None and num_frames is None:
            num_frames, fps = self.num_frames, None if self.num_frames is not None else self.fps
        total = metadata.total_num_frames
        if num_frames is not None:
            if isinstance(num_frames, bool) or not isinstance(num_frames, int) or num_frames < 1:
                raise ValueError(f"`num_frames` must be a positive integer, got {num_frames!r}.")
            if num_frames > total:
                raise ValueError(f"`num_frames`={num_frames} is more than the video's {total} frames.")
            return np.arange(num_frames, dtype=int) * total // num_frames
        if metadata.fps is None:
            raise ValueError("Sampling at `fps` needs the video's own frame rate: give `video_metadata` with `fps`.")
        times = getattr(metadata, "presentation_times", None)
        return sample_at_rate(np.asarray(times) if times is not None else None, total, metadata.fps, fps, max_frames)

    def check_frame_settings(self, kwargs: dict) -> None:
        """
        Refuses the transformers settings that would give frames other than ViLAMP's: RGB, square at the tower's
        size, resized bicubic, uint8, channels first, on the CPU. Settings that only apply with a refused flag
        (`image_mean` without `do_normalize`) play no part, as in transformers.
        """
        if not (kwargs.get("do_resize", self.do_resize) and kwargs.get("do_convert_rgb", self.do_convert_rgb)):
            raise ValueError(
                "ViLAMP's vision tower takes RGB frames of its own size: `do_resize` and `do_convert_rgb` cannot be "
                "turned off."
            )
        if kwargs.get("do_rescale", self.do_rescale) or kwargs.get("do_normalize", self.do_normalize):
            raise ValueError(
                "ViLAMP's frames stay uint8 and the model normalises them with its config's `pixel_mean` and "
                "`pixel_std`: `do_rescale` and `do_normalize` cannot be turned on."
            )
        own = ("size", "resample", "default_to_square")
        changed = [name for name in own if kwargs.get(name) is not None and kwargs[name] != getattr(self, name)]
        changed += [name for name in ("do_center_crop", "do_pad") if kwargs.get(name)]
        if kwargs.get("data_format") not in (None, ChannelDimension.FIRST):
            changed.append("data_format")
        if kwargs.get("device") not in (None, "cpu"):
            changed.append("device")
        if changed:
            raise ValueError(
                f"ViLAMP's frames are square at the tower's size ({self.image_size} px), resized bicubic without "
                f"cropping or padding, channels first, on the CPU: {changed} cannot be changed per call."
            )

    def process_video(
        self,
        video,
        video_metadata: VideoMetadata | dict | None = None,
        frame_scorer: ChunkScorer | None = None,
        keep_scorer_inputs: bool = False,
        on_frames: Callable[[np.ndarray, int], None] | None = None,
        **kwargs: Unpack[VilampVideoProcessorKwargs],
    ) -> PreparedVideo:
        """
        Samples one video (every frame without `do_sample_frames`) and decodes it `decode_chunk_size` frames at a
        time, keeping each frame resized to the tower's size as uint8. Frames given in memory are at
        `video_metadata["fps"]` frames per second, or `fps` (default 1). `frame_scorer`, when given, embeds every
        frame from its native-resolution chunk while that is at hand (`decoding_threads.decode_resize_and_score`);
        with `keep_scorer_inputs` its inputs are kept too (`scorer_pixel_values`, to train the scorer), and
        `on_frames` sees the resized frames as they land (`VilampModel.fill_video_cache`). Settings not given take
        this processor's. A `PreparedVideo` is returned as it is.
        """
        self.check_frame_settings(kwargs)
        if isinstance(video, PreparedVideo):
            return video
        fps, num_frames = kwargs.get("fps"), kwargs.get("num_frames")
        given = VilampVideoMetadata(**dict(video_metadata)) if video_metadata is not None else None
        decoded_fps = (given.fps if given is not None and given.fps else None) or fps or self.fps
        source = open_video(
            to_channels_last_rgb(video, kwargs.get("input_data_format")),
            decoded_fps=decoded_fps,
            backend=kwargs.get("video_backend", self.video_backend),
        )
        metadata = source_metadata(source)
        if kwargs.get("do_sample_frames", self.do_sample_frames):
            max_frames = kwargs.get("max_frames", self.max_frames)
            indices = self.sample_frames(metadata, num_frames=num_frames, fps=fps, max_frames=max_frames)
        else:
            indices = np.arange(source.num_frames)
        decoded = decode_resize_and_score(
            source,
            indices,
            self.image_size,
            frame_scorer,
            kwargs.get("decode_chunk_size", self.decode_chunk_size),
            kwargs.get("show_progress", self.show_progress),
            keep_scorer_inputs,
            on_frames,
        )
        height, width = decoded.native_size
        metadata.update({"frames_indices": indices.tolist(), "height": height, "width": width})
        return PreparedVideo(decoded.frames, metadata, decoded.embeds, decoded.scorer_inputs)

    def preprocess(self, videos, **kwargs: Unpack[VilampVideoProcessorKwargs]) -> BatchFeature:
        """
        Samples, decodes and resizes a video or a batch of them. Returns `pixel_values_videos`: one
        `(frames, 3, size, size)` uint8 tensor per video, stacked when `return_tensors="pt"` and all videos have as
        many frames, and `video_metadata` with `return_metadata=True`.
        """
        unknown = set(kwargs) - set(self.valid_kwargs.__annotations__) - {"return_tensors"}
        if unknown:
            raise ValueError(f"VilampVideoProcessor does not take {sorted(unknown)}.")
        video_list = make_video_list(videos)
        metadata_list = make_metadata_list(kwargs.get("video_metadata"), len(video_list))
        settings = {name: value for name, value in kwargs.items() if name != "video_metadata"}
        processed = [
            self.process_video(video, metadata, **settings)
            for video, metadata in zip(video_list, metadata_list, strict=True)
        ]
        pixel_values = [video.pixel_values for video in processed]
        data = {"pixel_values_videos": pixel_values}
        if kwargs.get("return_metadata", self.return_metadata):
            data["video_metadata"] = [video.metadata for video in processed]
        if kwargs.get("return_tensors") == "pt" and len({pixels.shape for pixels in pixel_values}) == 1:
            data["pixel_values_videos"] = torch.stack(pixel_values)
        return BatchFeature(data=data)


__all__ = ["VilampVideoProcessor"]
