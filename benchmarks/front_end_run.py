"""
One measurement of this project's front end, in a process of its own (run by `benchmarks.front_end`, which runs
the released code's side with `benchmarks/front_end_released.py`), printed as JSON:

- `project`: this project's `VilampVideoProcessor.process_video` with the frame scorer (decoding, resizing and CLIP
  preprocessing in a thread of their own, a chunk ahead of CLIP's forward pass), then `select_keyframes`.
- `scorer`: CLIP's forward pass alone over the same frames' CLIP inputs, in the processor's chunks: the floor that
  the project's front end is compared with. Timed twice: one chunk after the other on all of torch's threads
  (`score`), and as the processor runs it, chunks side by side on one thread each (`score_in_threads`).

Both use CLIP ViT-B/32 (the released scorer's architecture; random weights from a fixed seed).
"""

import argparse
import json
import sys
import time
from pathlib import Path

import torch

from vilamp.conversion.checkpoint_mapping import KNOWN_FRAME_SCORERS
from vilamp.processing import FrameScorer, VilampVideoProcessor
from vilamp.processing.decoding_threads import scoring_pool, scoring_threads, timing_steps
from vilamp.processing.keyframes import select_keyframes
from vilamp.processing.video_decoding import open_video
from vilamp.processing.video_processing_vilamp import source_metadata

from .measure import (
    cap_address_space,
    is_out_of_memory,
    read_peak_rss,
    stage,
)


SIDES = ("project", "scorer")
QUESTION = "What does the rabbit do when the butterfly lands on its nose?"
# The released Video-MME script's cap; every size measured here is below it.
MAX_FRAMES = 3600
# Every stage runs on the host, as the released side does (`benchmarks/front_end_released.py`).
HOST = torch.device("cpu")


def released_scorer() -> FrameScorer:
    torch.manual_seed(0)
    return FrameScorer(KNOWN_FRAME_SCORERS["clip-ViT-B-32/0_CLIPModel"])


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
    run = {"project": run_project, "scorer": run_scorer}[args.side]
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
