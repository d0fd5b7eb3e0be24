"""
`python -m benchmarks.parallel_decoding [--seconds 300] [--size 1280x720] [--workers 2] [--repeats 3]`

Whether decoding a video's sampled frames in several threads at once pays: the frames at 1 per second of real
footage (the bundled clip repeated, 25 fps, `benchmarks/looped_footage.py`) decoded by one thread, then split into
`--workers` contiguous runs, each decoded by a thread of its own through its own decoder, per backend. Checks that the
frames are identical to one thread's and prints the median seconds of each way and the speedup.
"""

import argparse
import statistics
import threading
import time
from pathlib import Path

import numpy as np

from vilamp.processing.video_decoding import FILE_BACKENDS, open_video

from .looped_footage import cached_looped_video


CHUNK = 32  # frames a decoder hands over at once, as the processor asks for them


def decode(video: Path, backend: str, indices: np.ndarray) -> np.ndarray:
    source = open_video(video, backend=backend)
    return np.concatenate(list(source.iter_chunks(indices, CHUNK)))


def decode_in_threads(video: Path, backend: str, indices: np.ndarray, workers: int) -> np.ndarray:
    """`indices` in `workers` contiguous runs, each decoded by a thread of its own; the frames in order."""
    runs = np.array_split(indices, workers)
    decoded: list[np.ndarray | None] = [None] * workers

    def work(number: int) -> None:
        decoded[number] = decode(video, backend, runs[number])

    threads = [threading.Thread(target=work, args=(number,)) for number in range(workers)]
    for thread in threads:
        thread.start()
    for thread in threads:
        thread.join()
    if any(frames is None for frames in decoded):
        raise RuntimeError(f"a decoding thread of {backend} failed")
    return np.concatenate(decoded)


def main(argv: list[str] | None = None) -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--seconds", type=int, default=300, help="length of the video; 1 fps keeps about as many")
    parser.add_argument("--size", default="1280x720", help="WIDTHxHEIGHT of the video")
    parser.add_argument("--workers", type=int, default=2, help="decoding threads at once")
    parser.add_argument("--repeats", type=int, default=3)
    installed = [name for name, backend in FILE_BACKENDS.items() if backend.problem() is None]
    parser.add_argument("--backends", default=",".join(installed), help="comma-separated (default: those installed)")
    parser.add_argument("--cache-dir", type=Path, default=Path("benchmarks/.cache"))
    args = parser.parse_args(argv)
    width, height = (int(side) for side in args.size.split("x"))
    video = cached_looped_video(args.cache_dir, args.seconds, width, height)
    print(f"| backend | frames | one thread s | {args.workers} threads s | speedup | identical frames |")
    print("|---|---:|---:|---:|---:|---|")
    for backend in args.backends.split(","):
        source = open_video(video, backend=backend)
        indices = np.arange(0, source.num_frames, round(source.native_fps))
        serial, parallel, identical = [], [], True
        for _ in range(args.repeats):  # in turns, so that a slow spell falls on both ways
            start = time.perf_counter()
            one = decode(video, backend, indices)
            serial.append(time.perf_counter() - start)
            start = time.perf_counter()
            several = decode_in_threads(video, backend, indices, args.workers)
            parallel.append(time.perf_counter() - start)
            identical = identical and np.array_equal(one, several)
        one_thread, threads = statistics.median(serial), statistics.median(parallel)
        print(
            f"| {backend} | {len(indices)} | {one_thread:.1f} | {threads:.1f} | {one_thread / threads:.2f}x | "
            f"{'yes' if identical else 'NO'} |"
        )


if __name__ == "__main__":
    main()
