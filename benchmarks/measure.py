"""
One measurement: one method on one video, in a process of its own so that its peak memory is its own.

Methods, all on the same sampled frames:
- `vilamp`: this project; chunked decoding/scoring, O(N x K) keyframe selection, chunked vision encoding with DFM.
- `vilamp-unchunked`: the same model with every frame through the vision tower in one batch, and keyframe selection
  from the full N x N frame similarity matrix.
- `dense-uniform`: LLaVA-OneVision-style encoding, every sampled frame a 196-token keyframe (no scoring).
"""

import argparse
import json
import resource
import statistics
import sys
import time
from contextlib import contextmanager
from pathlib import Path

import numpy as np
import torch

from vilamp.conversion.checkpoint_mapping import KNOWN_FRAME_SCORERS
from vilamp.modeling_vilamp import VilampConfig, VilampForConditionalGeneration
from vilamp.processing import FrameScorer, VilampProcessor, VilampVideoProcessor
from vilamp.processing.decoding_threads import decode_resize_and_score, timing_steps
from vilamp.processing.keyframes import fill_gaps, frame_relevance, select_keyframes, unit_rows
from vilamp.processing.video_decoding import open_video, sample_frame_indices
from vilamp.tiny import TINY_SCORER, TINY_TEXT_CONFIG, TINY_VISION_CONFIG, tiny_tokenizer


METHODS = ("vilamp", "vilamp-unchunked", "dense-uniform")
SIZES = ("tiny", "tiny-b32", "7b")
NUM_KEYFRAMES = 32
SIMILARITY_THRESHOLD = 0.85
DECODE_CHUNK = 32
NEW_TOKENS = 8


def read_peak_rss() -> int:
    """Peak resident memory since the last reset (VmHWM), in bytes."""
    for line in Path("/proc/self/status").read_text().splitlines():
        if line.startswith("VmHWM:"):
            return int(line.split()[1]) * 1024
    raise RuntimeError("no VmHWM in /proc/self/status")


def reset_peak_rss() -> None:
    # Writing 5 to clear_refs resets VmHWM to the current RSS (Linux >= 4.0), giving per-stage peaks.
    Path("/proc/self/clear_refs").write_text("5")


@contextmanager
def stage(record: dict, name: str, device: torch.device):
    reset_peak_rss()
    if device.type == "cuda":
        torch.cuda.synchronize()
        torch.cuda.reset_peak_memory_stats()
    start = time.perf_counter()
    yield
    if device.type == "cuda":
        torch.cuda.synchronize()
        record.setdefault("gpu_peak_bytes", {})[name] = torch.cuda.max_memory_allocated()
    record.setdefault("seconds", {})[name] = time.perf_counter() - start
    record.setdefault("rss_peak_bytes", {})[name] = read_peak_rss()


def build(
    size: str, device: torch.device, video_token_id: int | None = None
) -> tuple[VilampForConditionalGeneration, FrameScorer]:
    """
    Random-weight model and frame scorer: `tiny` (CPU-sized model and scorer), `tiny-b32` (the tiny model with the
    released scorer's size, CLIP ViT-B/32) or `7b` (so400m, Qwen2-7B, CLIP ViT-B/32). `video_token_id` sets the
    placeholder's id in the model's config, for a tokenizer whose `<video>` differs from the default.
    """
    torch.manual_seed(0)
    released_scorer = KNOWN_FRAME_SCORERS["clip-ViT-B-32/0_CLIPModel"]
    if size in ("tiny", "tiny-b32"):
        scorer_config = TINY_SCORER if size == "tiny" else released_scorer
        config = VilampConfig(
            # The real model's 384 px frames and 27 x 27 patch grid at tiny width: frame memory is the real one
            # (0.44 MB a sampled frame), compute is small enough for a CPU.
            vision_config={**TINY_VISION_CONFIG, "image_size": 384, "patch_size": 14},
            text_config={**TINY_TEXT_CONFIG, "vocab_size": 512},
            query_embed_dim=scorer_config["embed_dim"],
            video_token_id=500 if video_token_id is None else video_token_id,
        )
        model, scorer = VilampForConditionalGeneration(config).to(device).eval(), FrameScorer(scorer_config)
    else:
        config = VilampConfig() if video_token_id is None else VilampConfig(video_token_id=video_token_id)
        dtype = torch.bfloat16 if device.type == "cuda" else torch.float32
        with torch.device(device):
            model = VilampForConditionalGeneration._from_config(config, dtype=dtype, attn_implementation="sdpa")
        model, scorer = model.eval(), FrameScorer(released_scorer)
    # The scorer embeds every sampled frame: left on the host, a GPU run would time CLIP on the CPU.
    return model, scorer.to(device)


def build_with_processor(size: str, device: torch.device) -> tuple[VilampForConditionalGeneration, VilampProcessor]:
    """
    `build`'s model, with its scorer in a processor, for questions asked as `vilamp ask` asks them: the embedded
    default's tokenizer (its `<video>` id is given to the model), 32 keyframes and the tower's frame size.
    """
    tokenizer = tiny_tokenizer()
    model, scorer = build(size, device, video_token_id=tokenizer.convert_tokens_to_ids("<video>"))
    side = model.config.vision_config.image_size
    video_processor = VilampVideoProcessor(size={"height": side, "width": side})
    processor = VilampProcessor(
        tokenizer=tokenizer, video_processor=video_processor, frame_scorer=scorer, num_keyframes=NUM_KEYFRAMES
    )
    return model, processor


def dense_similarity_keyframes(frame_embeds: torch.Tensor, query_embed: torch.Tensor) -> torch.Tensor:
    """The naive selection: the full N x N similarity matrix up front, then the same greedy pass and gap filling."""
    # On the host, as select_keyframes computes: the two selections must agree bit for bit.
    frame_embeds, query_embed = frame_embeds.cpu(), query_embed.cpu()
    units = unit_rows(frame_embeds)
    similarity = units @ units.T
    relevance = frame_relevance(frame_embeds, query_embed)
    order = torch.sort(relevance, descending=True, stable=True).indices.tolist()
    covered = torch.zeros(len(order), dtype=torch.bool)
    selected = []
    for frame in order:
        if len(selected) == NUM_KEYFRAMES:
            break
        if covered[frame]:
            continue
        selected.append(frame)
        covered |= similarity[frame] > SIMILARITY_THRESHOLD
        covered[frame] = True
    mask = np.zeros(len(order), dtype=bool)
    mask[selected] = True
    return torch.from_numpy(fill_gaps(mask, NUM_KEYFRAMES))


def decode_and_score(
    video: Path, image_size: int, scorer: FrameScorer | None, record: dict, max_frames: int | None = None
):
    """
    The processor's front end (`decode_resize_and_score`), its three steps timed apart; 1 fps sampling thinned
    uniformly to `max_frames` when given.
    """
    source = open_video(str(video))
    indices = sample_frame_indices(source.num_frames, source.native_fps, 1.0, max_frames)
    with timing_steps() as split_seconds:
        decoded = decode_resize_and_score(source, indices, image_size, scorer, DECODE_CHUNK)
    record["split_seconds"] = dict(split_seconds)
    return torch.from_numpy(decoded.frames), decoded.embeds


def prefill_and_decode(model, visual_sequence: torch.Tensor, record: dict, device: torch.device) -> None:
    """Language model prefill over the visual sequence plus a short prompt, then greedy decoding token by token."""
    language_model, lm_head = model.model.language_model, model.lm_head
    prompt = language_model.get_input_embeddings()(torch.arange(2, 18, device=device))
    embeds = torch.cat([visual_sequence.to(prompt.dtype), prompt])[None]
    with stage(record, "prefill", device):
        output = language_model(inputs_embeds=embeds, use_cache=True)
        token = lm_head(output.last_hidden_state[:, -1]).argmax(-1, keepdim=True)
    cache, per_token = output.cache, []
    for _ in range(NEW_TOKENS):
        if device.type == "cuda":
            torch.cuda.synchronize()
        start = time.perf_counter()
        output = language_model(input_ids=token, cache=cache, use_cache=True)
        token = lm_head(output.last_hidden_state[:, -1]).argmax(-1, keepdim=True)
        if device.type == "cuda":
            torch.cuda.synchronize()
        per_token.append(time.perf_counter() - start)
        cache = output.cache
    record["seconds"]["decode_per_token"] = statistics.median(per_token)


def measure(method: str, video: Path, size: str, device: torch.device, max_frames: int | None = None) -> dict:
    record: dict = {"method": method}
    model, scorer = build(size, device)
    image_size = model.config.vision_config.image_size
    record["rss_after_model_bytes"] = read_peak_rss()
    record["model_bytes"] = sum(p.numel() * p.element_size() for p in model.parameters())

    with torch.no_grad():
        with stage(record, "decode_resize_score", device):
            frame_scorer = None if method == "dense-uniform" else scorer
            frames, embeds = decode_and_score(video, image_size, frame_scorer, record, max_frames)
        num_frames = frames.shape[0]
        record["frames"] = num_frames
        record["frames_bytes"] = frames.numel()
        query = scorer.embed_queries(["what happens when the square reaches the corner?"])
        with stage(record, "select", device):
            if method == "vilamp":
                mask = select_keyframes(embeds, query, NUM_KEYFRAMES, SIMILARITY_THRESHOLD)
            elif method == "vilamp-unchunked":
                mask = dense_similarity_keyframes(embeds, query)
            else:
                mask = torch.ones(num_frames, dtype=torch.bool)
        if method == "vilamp-unchunked":
            # The baseline must choose the same frames, or its timings compare different work.
            if not torch.equal(mask, select_keyframes(embeds, query, NUM_KEYFRAMES, SIMILARITY_THRESHOLD)):
                raise RuntimeError("the dense-matrix selection disagrees with select_keyframes")
        model.config.vision_chunk_size = num_frames if method == "vilamp-unchunked" else None
        with stage(record, "vision", device):
            sequence = model.model.get_video_features(frames, mask, query.to(device)).last_hidden_state
        record["visual_tokens"] = int(sequence.shape[0])
        flops_per_frame = siglip_flops_per_frame(model.config)
        record["vision_tflops_per_second"] = num_frames * flops_per_frame / record["seconds"]["vision"] / 1e12
        limit = model.config.text_config.max_position_embeddings
        if sequence.shape[0] + 16 > limit:
            record["prefill_skipped"] = f"{sequence.shape[0]:,} tokens exceed the language model's {limit:,} positions"
        else:
            prefill_and_decode(model, sequence, record, device)
    record["rss_peak_bytes_overall"] = max(record["rss_peak_bytes"].values())
    return record


def siglip_flops_per_frame(config: VilampConfig) -> float:
    """Multiply-adds x 2 of the SigLIP layers for one frame (matmuls only; the 0.69 TFLOP of so400m at 384 px)."""
    vision = config.vision_config
    patches = (vision.image_size // vision.patch_size) ** 2
    hidden, intermediate = vision.hidden_size, vision.intermediate_size
    per_layer = 2 * patches * (4 * hidden * hidden + 2 * hidden * intermediate) + 4 * patches * patches * hidden
    embedding = 2 * patches * hidden * 3 * vision.patch_size**2
    return vision.num_hidden_layers * per_layer + embedding


def cap_address_space(limit_gb: float | None) -> None:
    """
    Caps this process's address space at `limit_gb` (no cap for None), so that a baseline that outgrows the machine
    fails inside its own process, recorded as out of memory, instead of waking the kernel's OOM killer, which may pick
    another process.
    """
    if limit_gb:
        limit = int(limit_gb * 1e9)
        resource.setrlimit(resource.RLIMIT_AS, (limit, limit))


# How the libraries report an allocation past the cap: torch's CPU allocator, OpenCV.
OUT_OF_MEMORY_MESSAGES = ("can't allocate memory", "Insufficient memory", "Failed to allocate")


def is_out_of_memory(error: BaseException) -> bool:
    """Whether `error` is a failed allocation, as a run under `cap_address_space` ends when it needs more."""
    if isinstance(error, (torch.OutOfMemoryError, MemoryError)):
        return True
    return any(message in str(error) for message in OUT_OF_MEMORY_MESSAGES)


def main() -> None:
    parser = argparse.ArgumentParser(description="one benchmark measurement (run by benchmarks.run)")
    parser.add_argument("--method", choices=METHODS, required=True)
    parser.add_argument("--video", type=Path, required=True)
    parser.add_argument("--size", choices=SIZES, default="tiny")
    parser.add_argument("--device", default="cpu")
    parser.add_argument("--max-frames", type=int, help="thin the 1 fps sampling uniformly to this many frames")
    parser.add_argument("--memory-limit-gb", type=float, help="address-space cap on CPU: allocations past it fail")
    args = parser.parse_args()
    if args.device == "cpu":
        cap_address_space(args.memory_limit_gb)
    try:
        record = measure(args.method, args.video, args.size, torch.device(args.device), args.max_frames)
    except Exception as error:
        if not is_out_of_memory(error):
            raise
        record = {"method": args.method, "failed": f"out of memory: {str(error).splitlines()[0][:200]}"}
    json.dump(record, sys.stdout)


if __name__ == "__main__":
    main()
