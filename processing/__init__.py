"""The ViLAMP front end: from a video file and a question to model inputs.

Read top-down, a video goes: `video_decoding` (opening, sampling, chunked decoding) -> `video_processing_vilamp`
(`VilampVideoProcessor`: sampling settings, resizing to the tower's size) -> `frame_scoring` (CLIP embeddings of
frames and question) -> `keyframes` (differential keyframe selection) -> `processing_vilamp` (`VilampProcessor`,
which ties them together in two steps, the video-only `prepare_video` and the question's keyframes and placeholders);
`decoding_threads` runs decoding and scoring side by side; `keyframe_plot` draws what the selection did;
`prepared_videos` keeps prepared videos for the next question about them (training, lmms-eval, `vilamp serve`).

Importing this package registers `VilampProcessor` with `AutoProcessor` and `VilampVideoProcessor` with
`AutoVideoProcessor` for model type "vilamp".
"""

from transformers import AutoProcessor, AutoVideoProcessor

from ..modeling_vilamp import VilampConfig
from .frame_scoring import FrameScorer
from .keyframe_plot import plot_keyframes
from .keyframes import select_keyframes
from .prepared_videos import PreparedVideos, file_identity
from .processing_vilamp import VilampProcessor, num_visual_tokens
from .video_processing_vilamp import PreparedVideo, VilampVideoProcessor


AutoProcessor.register(VilampConfig, VilampProcessor, exist_ok=True)
AutoVideoProcessor.register(VilampConfig, VilampVideoProcessor, exist_ok=True)
VilampProcessor.register_for_auto_class()
VilampVideoProcessor.register_for_auto_class("AutoVideoProcessor")

__all__ = [
    "FrameScorer",
    "PreparedVideo",
    "PreparedVideos",
    "VilampProcessor",
    "VilampVideoProcessor",
    "file_identity",
    "num_visual_tokens",
    "plot_keyframes",
    "select_keyframes",
]
