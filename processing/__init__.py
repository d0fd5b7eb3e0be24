"""The ViLAMP front end: from a video file and a question to model inputs.

Read top-down, a video goes: `video_decoding` (sampling, chunked decoding, resizing) -> `frame_scoring` (CLIP
embeddings of frames and question) -> `keyframes` (differential keyframe selection) -> `processing_vilamp`
(`VilampProcessor`, which ties them together and expands the `<video>` placeholder); `keyframe_plot` draws
what the selection did.

Importing this package registers `VilampProcessor` with `AutoProcessor` for model type "vilamp".
"""

from transformers import AutoProcessor

from ..modeling_vilamp import VilampConfig
from .frame_scoring import FrameScorer
from .keyframe_plot import plot_keyframes
from .keyframes import select_keyframes
from .processing_vilamp import VilampProcessor


AutoProcessor.register(VilampConfig, VilampProcessor, exist_ok=True)
VilampProcessor.register_for_auto_class()

__all__ = ["FrameScorer", "VilampProcessor", "plot_keyframes", "select_keyframes"]
