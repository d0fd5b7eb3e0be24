"""
Training the frame scorer with the model: the released recipe's straight-through path (docs/architecture.md,
"Straight-through scorer path").

The scorer (open_clip CLIP, `processor.frame_scorer.model`) is not part of the model: the processor runs it to pick
keyframes. To train it, `VilampWithFrameScorer` holds both and computes, with gradients, what the processor computed
without: each video's query embedding and each frame's relevance to it. The model scales the frames' pixels by
`1 - p.detach() + p` (`p` the softmax of the relevance over the video's frames) and feeds the query embedding to
feature merging, so the scorer receives gradients through both.
"""

import torch
from torch import nn

from ..modeling_vilamp import VilampForConditionalGeneration
from ..processing.keyframes import frame_relevance


class VilampWithFrameScorer(nn.Module):
    """
    The model and its frame scorer as one module, for `Trainer` or a plain optimizer to train both.

    Args:
        model: the ViLAMP model.
        frame_scorer: the open_clip `CLIP` that scored the frames (`processor.frame_scorer.model`).
    """

    def __init__(self, model: VilampForConditionalGeneration, frame_scorer: nn.Module):
        super().__init__()
        self.model = model
        self.frame_scorer = frame_scorer

    def forward(
        self,
        scorer_pixel_values: torch.Tensor,
        scorer_input_ids: torch.Tensor,
        video_frame_counts: torch.Tensor | None = None,
        **model_inputs,
    ):
        """
        Args:
            scorer_pixel_values: `(total_frames, 3, S, S)` the frames as the scorer sees them (CLIP preprocessing).
            scorer_input_ids: `(num_videos, T)` each video's question in the scorer's tokens.
            video_frame_counts: frames per video, when the batch holds several.
            model_inputs: the model's other inputs (`input_ids`, `pixel_values_videos`, `keyframe_mask`, `labels`,
                ...); `query_embeds` and `frame_relevance`, if there, are replaced by the ones computed here.

        Returns:
            The model's output.
        """
        # The processor's own query embeddings and relevances, made without gradients, give way to these.
        model_inputs.pop("query_embeds", None)
        model_inputs.pop("frame_relevance", None)
        query_embeds = self.frame_scorer.encode_text(scorer_input_ids)
        frame_embeds = self.frame_scorer.encode_image(scorer_pixel_values)
        counts = [frame_embeds.shape[0]] if video_frame_counts is None else video_frame_counts.tolist()
        relevance = torch.cat(
            [
                frame_relevance(video_frames, query)
                for video_frames, query in zip(frame_embeds.split(counts), query_embeds, strict=True)
            ]
        )
        return self.model(
            query_embeds=query_embeds,
            frame_relevance=relevance,
            video_frame_counts=video_frame_counts,
            **model_inputs,
        )
