"""
One front-end measurement, in a process of its own (run by `benchmarks.front_end`), printed as JSON:

- `original`: the released evaluation scripts' front end as it runs (`exp_vMME.py`; docs/architecture.md, "Sampling"):
  OpenCV grabs every frame and keeps every `int(fps)`-th as a PIL image at native resolution; every kept frame is
  copied into one array, preprocessed for SigLIP (PIL resize, rescale and normalise in NumPy, per frame, as LLaVA's
  `SigLipImageProcessor`) and for CLIP (transformers' `CLIPImageProcessor`, the PIL one the scripts ran); CLIP embeds
  all frames in one batch; the N x N similarity matrix feeds the greedy pass and gap filling.
- `project`: this project's `VilampVideoProcessor.process_video` with the frame scorer (decoding, resizing and CLIP
  preprocessing in a thread of their own, a chunk ahead of CLIP's forward pass), then `select_keyframes`.
- `scorer`: CLIP's forward pass alone over the same frames' CLIP inputs, in the processor's chunks: the floor that
  the project's front end is compared with. Timed twice: one chunk after the other on all of torch's threads
  (`score`), and as the processor runs it, chunks side by side on one thread each (`score_in_threads`).

All three use the same CLIP ViT-B/32 (the released scorer's architecture; random weights from a fixed seed).
"""

import argparse
import json
import sys
import time
from pathlib import Path

import numpy as np
import torch
from PIL import Image

from vilamp.conversion.checkpoint_mapping import KNOWN_FRAME_SCORERS
from vilamp.processing import FrameScorer, VilampVideoProcessor
from vilamp.processing.decoding_threads import scoring_pool, scoring_threads, timing_steps
from vilamp.processing.keyframes import select_keyframes
from vilamp.processing.video_decoding import open_video
from vilamp.processing.video_processing_vilamp import source_metadata

from .measure import (
    cap_address_space,
    dense_similarity_keyframes,
    is_out_of_memory,
    read_peak_rss,
    stage,
)


SIDES = ("original", "project", "scorer")
QUESTION = "What does the rabbit do when the butterfly lands on its nose?"
# The released Video-MME script's cap; every size measured here is below it.
MAX_FRAMES = 3600
SIGLIP_SIZE = 384
# Every stage runs on the host: the released scripts' front end as it runs on a CPU.
HOST = torch.device("cpu")


def released_scorer() -> FrameScorer:
    torch.manual_seed(0)
    return FrameScorer(KNOWN_FRAME_SCORERS["clip-ViT-B-32/0_CLIPModel"])


def decode_with_opencv(video: Path) -> list[Image.Image]:
    """The scripts' `access_video_by_sec`: grab every frame, keep every `int(fps)`-th as an RGB PIL image."""
    import cv2

    capture = cv2.VideoCapture(str(video))
    interval = int(capture.get(cv2.CAP_PROP_FPS))
    frames, count = [], 0
    while capture.grab():
        if count % interval == 0:
            _, frame = capture.retrieve()
            frames.append(Image.fromarray(cv2.cvtColor(frame, cv2.COLOR_BGR2RGB)))
        count += 1
    capture.release()
    if len(frames) > MAX_FRAMES:
        frames = [frames[i] for i in np.linspace(0, len(frames) - 1, MAX_FRAMES, dtype=int)]
    return frames


def siglip_preprocess(frames: np.ndarray) -> torch.Tensor:
    """
    LLaVA's `SigLipImageProcessor.preprocess`: per frame, transformers' resize, rescale and normalise, then one
    stacked float32 batch (which the scripts then move to the GPU in fp16; on the host the float32 batch is held).
    """
    from transformers.image_transforms import normalize, rescale, resize
    from transformers.image_utils import PILImageResampling

    pixels = []
    for frame in frames:
        image = resize(frame, (SIGLIP_SIZE, SIGLIP_SIZE), resample=PILImageResampling.BICUBIC)
        image = normalize(rescale(image, 1 / 255), mean=(0.5,) * 3, std=(0.5,) * 3)
        pixels.append(image.transpose(2, 0, 1))
    return torch.tensor(np.array(pixels))


def clip_preprocess(frames: list[Image.Image], scorer: FrameScorer) -> torch.Tensor:
    """transformers' PIL CLIP image processor, as `CLIPProcessor(images=...)` ran in the scripts."""
    from transformers import CLIPImageProcessorPil

    size = scorer.image_size
    processor = CLIPImageProcessorPil(size={"shortest_edge": size}, crop_size={"height": size, "width": size})
    return processor(images=frames, return_tensors="pt")["pixel_values"]


def run_original(video: Path, scorer: FrameScorer, record: dict) -> torch.Tensor:
    with stage(record, "decode", HOST):
        images = decode_with_opencv(video)
        video_frames = np.array([np.array(image) for image in images])
    with stage(record, "siglip_preprocess", HOST):
        siglip_pixels = siglip_preprocess(video_frames)
    with stage(record, "clip_preprocess", HOST):
        clip_pixels = clip_preprocess(images, scorer)
    with stage(record, "score", HOST):
        frame_embeds = scorer.embed_pixels(clip_pixels)
        query_embed = scorer.embed_queries([QUESTION])[0]
    with stage(record, "select", HOST):
        mask = dense_similarity_keyframes(frame_embeds, query_embed)
    record["frames"] = len(images)
    record["held_bytes"] = video_frames.nbytes + siglip_pixels.nbytes + clip_pixels.nbytes
    return mask


def run_project(video: Path, scorer: FrameScorer, record: dict) -> torch.Tensor:
    processor = VilampVideoProcessor(max_frames=MAX_FRAMES)
    with stage(record, "front_end", HOST), timing_steps() as split_seconds:
        processed = processor.process_video(str(video), max_frames=MAX_FRAMES, frame_scorer=scorer)
        query_embed = scorer.embed_queries([QUESTION])[0]
    record["split_seconds"] = dict(split_seconds)
    with stage(record, "select", HOST):
        mask = select_keyframes(processed.frame_embeds, query_embed, 32, 0.85)
    record["frames"] = len(processed.frames)
    record["held_bytes"] = processed.frames.nbytes
    return mask


def run_scorer(video: Path, scorer: FrameScorer, record: dict) -> None:
    source = open_video(str(video))
    indices = VilampVideoProcessor().sample_frames(source_metadata(source), fps=1.0, max_frames=MAX_FRAMES)
    chunk_size = VilampVideoProcessor.decode_chunk_size
    inputs = [scorer.preprocess(chunk) for chunk in source.iter_chunks(indices, chunk_size)]
    with stage(record, "score", HOST):
        for pixels in inputs:
            scorer.embed_pixels(pixels)
    with stage(record, "score_in_threads", HOST), scoring_pool(scoring_threads()) as pool:
        list(pool.map(scorer.embed_pixels, inputs))
    record["frames"] = len(indices)


def main() -> None:
    parser = argparse.ArgumentParser(description="one front-end measurement (run by benchmarks.front_end)")
    parser.add_argument("--side", choices=SIDES, required=True)
    parser.add_argument("--video", type=Path, required=True)
    parser.add_argument("--memory-limit-gb", type=float, help="address-space cap: allocations past it fail")
    args = parser.parse_args()
    cap_address_space(args.memory_limit_gb)
    record = {"side": args.side, "seconds": {}, "rss_peak_bytes": {}}
    scorer = released_scorer()
    record["rss_after_scorer_bytes"] = read_peak_rss()
    run = {"original": run_original, "project": run_project, "scorer": run_scorer}[args.side]
    start = time.perf_counter()
    try:
        with torch.inference_mode():
            mask = run(args.video, scorer, record)
    except Exception as error:
        if not is_out_of_memory(error):
            raise
        record["failed"] = f"out of memory: {str(error).splitlines()[0][:200]}"
    else:
        record["total_seconds"] = time.perf_counter() - start
        if mask is not None:
            record["keyframes"] = mask.nonzero()[:, 0].tolist()
    record["rss_peak_bytes_overall"] = max(record["rss_peak_bytes"].values(), default=read_peak_rss())
    json.dump(record, sys.stdout)


if __name__ == "__main__":
    main()
