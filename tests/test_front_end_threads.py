"""
The processor's front end decodes in one thread and scores in others: it must give what one thread doing everything
in turn gives, raise errors where the caller sees them, leave nothing running, and leave torch's thread count as it
was.
"""

import threading
import time

import numpy as np
import pytest
import torch

import vilamp.processing.decoding_threads as decoding_threads
from conftest import CLIP_PATH
from vilamp.processing import FrameScorer
from vilamp.processing.decoding_threads import decode_resize_and_score, prefetched, scoring_threads
from vilamp.processing.video_decoding import DecodedVideo, open_video, resize_frames
from vilamp.tiny import TINY_SCORER


def front_end_threads() -> list[str]:
    return [thread.name for thread in threading.enumerate() if thread.name.startswith("vilamp-")]


def thread_count_of_a_new_thread() -> int:
    seen = []
    thread = threading.Thread(target=lambda: seen.append(torch.get_num_threads()))
    thread.start()
    thread.join()
    return seen[0]


class RecordingScorer:
    """Scores a frame as its mean pixel value, noting which thread scored it with how many torch threads."""

    device = torch.device("cpu")

    def __init__(self, fail_on_call: int | None = None, meet: int = 1):
        self.calls: list[tuple[str, int]] = []
        self.preprocessed_in: list[str] = []
        self.fail_on_call = fail_on_call
        # The first `meet` calls wait for each other: they pass only if that many run at the same time.
        self.meeting = threading.Barrier(meet, timeout=20)
        self.lock, self.running, self.most_at_once = threading.Lock(), 0, 0

    def preprocess(self, frames: np.ndarray) -> torch.Tensor:
        self.preprocessed_in.append(threading.current_thread().name)
        return torch.from_numpy(frames.reshape(len(frames), -1).mean(axis=1, dtype=np.float64))

    def embed_pixels(self, pixels: torch.Tensor) -> torch.Tensor:
        self.calls.append((threading.current_thread().name, torch.get_num_threads()))
        with self.lock:
            self.running += 1
            self.most_at_once = max(self.most_at_once, self.running)
        if len(self.calls) <= self.meeting.parties:
            self.meeting.wait()
        time.sleep(0.05)  # long enough for any other chunk in flight to be scored meanwhile
        with self.lock:
            self.running -= 1
        if len(self.calls) == self.fail_on_call:
            raise RuntimeError("the scorer failed on purpose")
        return pixels[:, None]


class FailingVideo(DecodedVideo):
    """Frames in memory whose decoding fails at chunk `fail_at` (never, for None); notes when decoding is closed."""

    def __init__(self, frames: np.ndarray, fail_at: int | None = None):
        super().__init__(frames, fps=1.0)
        self.fail_at, self.closed = fail_at, threading.Event()

    def iter_chunks(self, indices, chunk_size):
        try:
            for number, chunk in enumerate(super().iter_chunks(indices, chunk_size)):
                if number == self.fail_at:
                    raise ValueError("Cannot decode frames of video broken.mp4: on purpose.")
                yield chunk
        finally:
            self.closed.set()


def numbered_video(count: int) -> np.ndarray:
    """Frames whose mean pixel value is their number, so that a score tells which frame it came from."""
    return np.broadcast_to(np.arange(count, dtype=np.uint8)[:, None, None, None], (count, 8, 8, 3)).copy()


def test_threaded_front_end_equals_one_thread_doing_everything_in_turn(two_torch_threads):
    source = open_video(str(CLIP_PATH))
    indices = np.arange(0, source.num_frames, 3)
    scorer = FrameScorer(TINY_SCORER)
    threads = torch.get_num_threads()
    decoded = decode_resize_and_score(source, indices, 64, scorer, chunk_size=5)
    frames, embeds = decoded.frames, decoded.embeds
    expected_frames, expected_embeds = [], []
    for chunk in source.iter_chunks(indices, 5):
        expected_frames.append(resize_frames(chunk, 64))
        expected_embeds.append(scorer.embed_frames(chunk))
    assert np.array_equal(frames, np.concatenate(expected_frames))
    # One torch thread per chunk instead of all of them: the same operations, summed in the same order.
    torch.testing.assert_close(embeds, torch.cat(expected_embeds), rtol=0, atol=1e-6)
    assert decoded.native_size == (720, 1280) and decoded.scorer_inputs is None  # not kept unless asked
    assert torch.get_num_threads() == threads and thread_count_of_a_new_thread() == threads
    assert front_end_threads() == []


@pytest.fixture
def two_torch_threads():
    """torch on 2 threads, as on the 2-core machines the suite runs on outside `pytest -n` (conftest.py)."""
    threads = torch.get_num_threads()
    torch.set_num_threads(2)
    yield
    torch.set_num_threads(threads)


# "meta" stands in for an accelerator: its forward is quick, and the host's resizing still wants every core.
@pytest.mark.parametrize("scorer_device", ["cpu", "meta"])
def test_chunks_are_scored_side_by_side_on_one_thread_each_and_kept_in_order(scorer_device, two_torch_threads):
    scorer = RecordingScorer(meet=2)  # two chunks at once, one per torch thread
    scorer.device = torch.device(scorer_device)
    decoded = decode_resize_and_score(
        FailingVideo(numbered_video(23)), np.arange(23), 16, scorer, 4, keep_scorer_inputs=True
    )
    assert decoded.embeds[:, 0].tolist() == list(range(23))
    # What the scorer read comes back in frame order too, though chunks were prepared side by side.
    assert decoded.scorer_inputs.tolist() == list(range(23))
    assert len(scorer.calls) == 6
    assert {count for _, count in scorer.calls} == {1}
    workers = {name for name, _ in scorer.calls}
    assert all(name.startswith("vilamp-frame-scoring") for name in workers)
    assert len(workers) >= 2
    # The decoding thread only decodes: each chunk is prepared by the thread that scores it.
    assert len(scorer.preprocessed_in) == 6 and set(scorer.preprocessed_in) <= workers


def test_native_pixels_in_flight_stay_within_their_budget(monkeypatch, two_torch_threads):
    video = numbered_video(23)
    # A budget of one 4-frame chunk: however many threads torch has, one chunk is scored at a time.
    monkeypatch.setattr(decoding_threads, "NATIVE_BYTES_IN_FLIGHT", 4 * video[0].nbytes)
    scorer = RecordingScorer()
    embeds = decode_resize_and_score(FailingVideo(video), np.arange(23), 16, scorer, 4).embeds
    assert embeds[:, 0].tolist() == list(range(23))
    assert scorer.most_at_once == 1


def test_one_torch_thread_scores_in_one_thread():
    threads = torch.get_num_threads()
    torch.set_num_threads(1)
    try:
        assert scoring_threads() == 1
    finally:
        torch.set_num_threads(threads)


def test_a_decoding_error_reaches_the_caller_and_stops_everything():
    video = FailingVideo(numbered_video(20), fail_at=2)
    with pytest.raises(ValueError, match="broken.mp4"):
        decode_resize_and_score(video, np.arange(20), 16, RecordingScorer(), 4)
    assert video.closed.is_set() and front_end_threads() == []


def test_a_scorer_error_reaches_the_caller_and_closes_the_decoder():
    video = FailingVideo(numbered_video(40))
    threads = torch.get_num_threads()
    with pytest.raises(RuntimeError, match="on purpose"):
        decode_resize_and_score(video, np.arange(40), 16, RecordingScorer(fail_on_call=2), 4)
    assert video.closed.is_set() and front_end_threads() == []
    assert thread_count_of_a_new_thread() == threads


def test_a_consumer_that_stops_early_stops_the_producer():
    produced = []

    def items():
        try:
            for number in range(1000):
                produced.append(number)
                yield number
        finally:
            produced.append("closed")

    with prefetched(items()) as consumed:
        assert next(consumed) == 0
    assert produced[-1] == "closed" and len(produced) < 10
    assert front_end_threads() == []
