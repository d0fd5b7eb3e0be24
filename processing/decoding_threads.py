"""
The front end's threads: decoding a video chunk by chunk in a thread of its own, and resizing, preprocessing and
scoring each decoded chunk in a pool of scoring threads, so that native-resolution frames never outlive their chunk
(docs/performance.md measures the layout). `VilampVideoProcessor.process_video` runs it; the benchmarks time its
steps with `timing_steps`.
"""

import collections
import concurrent.futures
import contextlib
import queue
import threading
import time
from collections.abc import Callable, Iterator
from dataclasses import dataclass
from typing import Protocol

import numpy as np
import torch
from tqdm.auto import tqdm

from .video_decoding import VideoSource, resize_frames


# Decoded chunks queued for the scoring threads: one keeps the decoding thread busy while every scoring thread has a
# chunk; more would only hold more native-resolution frames (a chunk of 32 is 88 MB at 720p, 796 MB at 4K).
PREFETCH_CHUNKS = 1
# Native-resolution pixels handed to the scoring threads at once, at most: with a thread per core on a large machine,
# a chunk per thread would hold 12.7 GB of 4K frames on 16 cores. 2 GiB is 24 chunks of 32 frames at 720p, 10 at
# 1080p, 2 at 4K.
NATIVE_BYTES_IN_FLIGHT = 2 * 2**30
# Marks the end of an iteration (an iterator may yield None).
_END = object()
# Seconds per step while `timing_steps` runs.
_step_seconds: dict[str, float] | None = None


class ChunkScorer(Protocol):
    """What scores frames on the way (the processor's `FrameScorer`): CPU preprocessing, then the forward pass."""

    @property
    def device(self) -> torch.device:
        """Where the forward pass runs."""

    def preprocess(self, frames: np.ndarray) -> torch.Tensor:
        """`(n, H, W, 3)` uint8 native-resolution frames -> the scorer's inputs; runs in a scoring thread."""

    def embed_pixels(self, pixels: torch.Tensor) -> torch.Tensor:
        """The inputs `preprocess` made -> `(n, D)` embeddings; may run in several threads at once."""


@dataclass(frozen=True)
class ScoredChunk:
    """One decoded chunk as a scoring thread hands it back."""

    frames: np.ndarray  # (n, 3, image_size, image_size) uint8
    embeds: torch.Tensor | None  # (n, D) scorer embeddings; None without a scorer
    scorer_inputs: torch.Tensor | None  # (n, 3, S, S) what the scorer read; None without a scorer
    native_size: tuple[int, int]
    resize_seconds: float  # spent resizing and preprocessing


@dataclass(frozen=True)
class DecodedFrames:
    """What `decode_resize_and_score` returns for one video's sampled frames, in order."""

    frames: np.ndarray  # (N, 3, image_size, image_size) uint8
    embeds: torch.Tensor | None  # (N, D) scorer embeddings; None without a scorer
    scorer_inputs: torch.Tensor | None  # (N, 3, S, S) the scorer's inputs, with `keep_scorer_inputs`
    native_size: tuple[int, int]  # (height, width) of the decoded frames


def decode_resize_and_score(
    source: VideoSource,
    indices: np.ndarray,
    image_size: int,
    frame_scorer: ChunkScorer | None,
    chunk_size: int,
    show_progress: bool = False,
    keep_scorer_inputs: bool = False,
    on_frames: Callable[[np.ndarray, int], None] | None = None,
) -> DecodedFrames:
    """
    Decodes the frames at `indices` `chunk_size` at a time, keeps each resized to `image_size` as uint8 and scores
    each native-resolution chunk with `frame_scorer`; native-resolution pixels never outlive their chunk.

    One thread decodes, a chunk ahead; `scoring_threads()` others (see there) each take a whole decoded chunk, resize
    it, preprocess it for the scorer and score it, chunks side by side (no more native pixels at once than
    `NATIVE_BYTES_IN_FLIGHT`). Decoding has to follow the stream's order, so it is all its thread does: resizing and
    preprocessing, which any thread can do for any chunk, spread over the scoring threads instead of queueing behind
    it (at 720p they made the decoding thread the front end's longest path; docs/performance.md).

    With `keep_scorer_inputs`, what the scorer read is kept too, in frame order (to train the scorer, whose forward
    then runs again with gradients). `on_frames(frames, ready)` is called in this thread each time a chunk lands,
    with the array of resized frames and how many of them are ready, while the other threads go on.
    """
    frames = np.empty((len(indices), 3, image_size, image_size), dtype=np.uint8)
    workers = scoring_threads()
    embeds: torch.Tensor | None = None
    scorer_inputs: list[torch.Tensor] = []
    native_size, done = (0, 0), 0
    with (
        tqdm(total=len(indices), desc="decoding and scoring frames", unit="frame", disable=not show_progress) as bar,
        prefetched(_timed_iteration(source.iter_chunks(indices, chunk_size), "decode")) as chunks,
        scoring_pool(workers) as pool,
    ):
        pending: collections.deque = collections.deque()

        def collect_oldest() -> None:
            nonlocal embeds, done, native_size
            with _timed("score"):
                chunk = pending.popleft().result()
            # Copied out at once into arrays made here: a scoring thread's result left alive would pin that thread's
            # malloc heap, and the heap of every chunk's freed native frames and activations would stay resident.
            frames[done : done + len(chunk.frames)] = chunk.frames
            if chunk.embeds is not None:
                if embeds is None:
                    embeds = chunk.embeds.new_empty((len(indices), *chunk.embeds.shape[1:]))
                embeds[done : done + len(chunk.embeds)] = chunk.embeds
            if keep_scorer_inputs and chunk.scorer_inputs is not None:
                scorer_inputs.append(chunk.scorer_inputs)
            done += len(chunk.frames)
            native_size = chunk.native_size
            _add_seconds("resize", chunk.resize_seconds)
            bar.update(len(chunk.frames))
            if on_frames is not None:
                on_frames(frames, done)

        in_flight = 0  # set from the first chunk, the first time the frames' size is known
        for chunk in _timed_iteration(chunks, "wait"):
            in_flight = in_flight or chunks_in_flight(workers, chunk.nbytes)
            pending.append(pool.submit(resize_and_score_chunk, chunk, image_size, frame_scorer))
            if len(pending) == in_flight:
                collect_oldest()
        while pending:
            collect_oldest()
    return DecodedFrames(frames, embeds, torch.cat(scorer_inputs) if scorer_inputs else None, native_size)


def scoring_threads() -> int:
    """
    Chunks resized and scored at once: one per torch thread, each chunk's work on one thread, wherever the scorer
    runs. On the host, small matrices (a chunk of 32 CLIP B/32 frames) scale poorly over torch's threads, and its
    thread team stalls whenever the decoding thread takes one of their cores; whole chunks side by side keep every
    core busy (1.1x to 1.5x the throughput of one 2-thread forward on 2 cores). On an accelerator the forward is
    quick and the host's resizing is the work: one thread took 3.1x as long as eight (26.1 s against 8.5 s for 3,000
    frames, scorer on an H200, 16 host cores). docs/performance.md has both measurements.
    """
    return torch.get_num_threads()


def chunks_in_flight(workers: int, chunk_bytes: int) -> int:
    """Chunks handed to `workers` scoring threads at once: one each, as far as `NATIVE_BYTES_IN_FLIGHT` holds them."""
    return max(1, min(workers, NATIVE_BYTES_IN_FLIGHT // chunk_bytes))


@contextlib.contextmanager
def scoring_pool(workers: int) -> Iterator[concurrent.futures.Executor]:
    """
    `workers` threads whose torch operations run on one thread each. torch's thread count for threads started
    later is process-wide, so it is restored on the way out; this thread's own count never changes.
    """
    threads = torch.get_num_threads()
    pool = concurrent.futures.ThreadPoolExecutor(
        workers, thread_name_prefix="vilamp-frame-scoring", initializer=torch.set_num_threads, initargs=(1,)
    )
    try:
        yield pool
    finally:
        pool.shutdown(wait=True, cancel_futures=True)
        torch.set_num_threads(threads)


def resize_and_score_chunk(chunk: np.ndarray, image_size: int, frame_scorer: ChunkScorer | None) -> ScoredChunk:
    """
    What a scoring thread does with one decoded `(n, H, W, 3)` chunk: resizes it for the tower, preprocesses it for
    the scorer and scores it.
    """
    start = time.perf_counter()
    resized = resize_frames(chunk, image_size)
    pixels = frame_scorer.preprocess(chunk) if frame_scorer is not None else None
    resize_seconds = time.perf_counter() - start
    embeds = frame_scorer.embed_pixels(pixels) if frame_scorer is not None else None
    return ScoredChunk(resized, embeds, pixels, tuple(chunk.shape[1:3]), resize_seconds)


@contextlib.contextmanager
def prefetched(items: Iterator, depth: int = PREFETCH_CHUNKS) -> Iterator[Iterator]:
    """
    `items`, produced by a thread of their own up to `depth` ahead of the consumer. An exception in the producer is
    raised in the consumer; a consumer that stops early (an error, Ctrl-C) stops the producer, which closes `items`
    (and with them the decoder) before this returns.
    """
    handoff: queue.Queue = queue.Queue(maxsize=depth)
    stop = threading.Event()

    def hand_over(item) -> bool:
        while not stop.is_set():
            try:
                handoff.put(item, timeout=0.1)
                return True
            except queue.Full:
                continue
        return False

    def produce() -> None:
        try:
            for item in items:
                if not hand_over((item, None)):
                    return
        except BaseException as error:  # handed to the consumer, which raises it
            hand_over((None, error))
            return
        finally:
            close = getattr(items, "close", None)
            if close is not None:
                close()
        hand_over((_END, None))

    def consume() -> Iterator:
        while True:
            item, error = handoff.get()
            if error is not None:
                raise error
            if item is _END:
                return
            yield item

    producer = threading.Thread(target=produce, name="vilamp-video-decoding", daemon=True)
    producer.start()
    try:
        yield consume()
    finally:
        stop.set()
        producer.join()


@contextlib.contextmanager
def timing_steps() -> Iterator[dict[str, float]]:
    """
    Adds up where `decode_resize_and_score` spends its time while the block runs, for the benchmarks: `decode`, in
    the decoding thread; `resize` (for the tower and the scorer), summed over the scoring threads; and what the
    calling thread spent waiting for decoded chunks (`wait`) and for their scores (`score`), which overlap with the
    first two. One block at a time.
    """
    global _step_seconds
    _step_seconds = {"decode": 0.0, "resize": 0.0, "wait": 0.0, "score": 0.0}
    try:
        yield _step_seconds
    finally:
        _step_seconds = None


@contextlib.contextmanager
def _timed(step: str) -> Iterator[None]:
    start = time.perf_counter()
    yield
    _add_seconds(step, time.perf_counter() - start)


def _add_seconds(step: str, seconds: float) -> None:
    if _step_seconds is not None:
        _step_seconds[step] += seconds


def _timed_iteration(items: Iterator, step: str) -> Iterator:
    while True:
        with _timed(step):
            item = next(items, _END)
        if item is _END:
            return
        yield item
