"""
Sampling and chunked decoding with every decoding backend installed here, on the bundled Big Buck Bunny clip
(c) Blender Foundation, CC BY 3.0, and on real-world files made by tests/media.py; videos by http(s) URL.
"""

import ast
import gc
import http.server
import re
import socket
import sys
import threading
import types
from functools import partial
from pathlib import Path

import av
import numpy as np
import pytest
import torch
from PIL import Image

from conftest import CLIP_PATH
from media import (
    cut_without_reencoding,
    frame_colour,
    numbered_frames,
    rotate_in_container,
    write_audio_only,
    write_video,
)
from vilamp.processing import video_decoding
from vilamp.processing.video_decoding import (
    BACKENDS,
    FILE_BACKENDS,
    measured_frame_rate,
    open_video,
    resize_frames,
    sample_frame_indices,
)
from vilamp.processing.video_processing_vilamp import VilampVideoProcessor, source_metadata


# Every backend that works in this environment. The test extra installs torchcodec and (on x86_64) decord, and
# .ci/run installs the FFmpeg libraries that torchcodec needs, so CI runs all three; PyAV is always there.
INSTALLED_BACKENDS = [name for name in BACKENDS if FILE_BACKENDS[name].problem() is None]


def sampled(source, fps: float, max_frames: int | None) -> np.ndarray:
    """The frames the video processor keeps of an opened video: its one sampling rule, `sample_frames`."""
    return VilampVideoProcessor().sample_frames(source_metadata(source), fps=fps, max_frames=max_frames)


@pytest.fixture(params=BACKENDS)
def backend(request) -> str:
    """Each backend; one that cannot load here is reported skipped with its reason, not left out unseen."""
    problem = FILE_BACKENDS[request.param].problem()
    if problem is not None:
        pytest.skip(f"{request.param} cannot load here: {problem}")
    return request.param


def test_reference_sampling_rule():
    # Every int(fps)-th frame, then numpy.linspace thinning to max_frames.
    assert sample_frame_indices(132, 25.0, 1.0, None).tolist() == [0, 25, 50, 75, 100, 125]
    assert sample_frame_indices(132, 25.0, 1.0, 4).tolist() == [0, 25, 75, 125]
    assert sample_frame_indices(10, 0.5, 1.0, None).tolist() == list(range(10))  # below 1 fps: every frame
    assert sample_frame_indices(100, 30.0, 2.0, None).tolist() == list(range(0, 100, 15))


@pytest.mark.parametrize(
    ("rate", "decimals", "frames", "expected"),
    [
        (25, None, 132, 25.0),
        (30000 / 1001, None, 100, 30000 / 1001),
        (12.5, None, 11, 12.5),
        # Timestamps in milliseconds (Matroska, WebM): 30 fps measures 29.997 and NTSC 29.973, each its standard rate.
        (30, 3, 102, 30.0),
        (30000 / 1001, 3, 100, 30000 / 1001),
    ],
)
def test_native_rate_is_measured_and_snapped_to_a_standard_rate(rate, decimals, frames, expected):
    timestamps = np.arange(frames) / rate
    if decimals is not None:
        timestamps = np.round(timestamps, decimals)
    assert measured_frame_rate(timestamps) == pytest.approx(expected, rel=1e-12)


def pyav_frames(path, indices):
    """An independent decoder: PyAV, every frame, keeping the wanted ones."""
    wanted = set(int(i) for i in indices)
    with av.open(str(path)) as container:
        frames = [f.to_ndarray(format="rgb24") for i, f in enumerate(container.decode(video=0)) if i in wanted]
    return np.stack(frames)


def test_real_clip_decodes_like_pyav(backend):
    source = open_video(CLIP_PATH, backend=backend)
    assert (source.num_frames, source.native_fps, source.backend) == (132, 25.0, backend)
    indices = sampled(source, 1.0, None)
    assert indices.tolist() == [0, 25, 50, 75, 100, 125]
    assert source.timestamps[indices].tolist() == [0.0, 1.0, 2.0, 3.0, 4.0, 5.0]
    decoded = np.concatenate(list(source.iter_chunks(indices, chunk_size=4)))
    assert decoded.shape == (6, 720, 1280, 3)
    # Identical, not merely close: all three convert YUV 4:2:0 to RGB with FFmpeg's swscale and its defaults, which
    # give the same bytes in PyAV's FFmpeg 8.1, the system's 5.1 (torchcodec) and decord's 4.1 (measured: max 0).
    assert np.array_equal(decoded, pyav_frames(CLIP_PATH, indices))


def test_chunked_decoding_equals_decoding_at_once(backend):
    source = open_video(CLIP_PATH, backend=backend)
    indices = sampled(source, 2.0, None)
    chunks = list(source.iter_chunks(indices, chunk_size=3))
    assert [len(chunk) for chunk in chunks] == [3, 3, 3, 2]
    whole = np.concatenate(list(source.iter_chunks(indices, chunk_size=len(indices))))
    assert np.array_equal(np.concatenate(chunks), whole)


def test_resize_is_bicubic_without_aspect():
    frames = np.random.default_rng(0).integers(0, 256, (2, 48, 64, 3), dtype=np.uint8)
    resized = resize_frames(frames, 54)
    assert resized.shape == (2, 3, 54, 54) and resized.dtype == np.uint8
    expected = np.asarray(Image.fromarray(frames[1]).resize((54, 54), Image.BICUBIC)).transpose(2, 0, 1)
    assert np.array_equal(resized[1], expected)


def test_decoded_inputs():
    frames = np.zeros((3, 8, 8, 3), dtype=np.uint8)
    for video in (frames, torch.from_numpy(frames), [Image.fromarray(f) for f in frames]):
        source = open_video(video)
        assert source.num_frames == 3
        assert np.concatenate(list(source.iter_chunks(np.array([0, 2]), 8))).shape == (2, 8, 8, 3)


def test_missing_file(tmp_path, backend):
    with pytest.raises(FileNotFoundError, match="nope.mp4"):
        open_video(tmp_path / "nope.mp4", backend=backend)


def test_url_mangled_into_a_path_is_named_as_such():
    with pytest.raises(
        FileNotFoundError, match=r"http:/127\.0\.0\.1/clip\.mp4 \(an http\(s\) URL must be given as a str"
    ):
        open_video(Path("http://127.0.0.1/clip.mp4"))


def test_corrupt_file(tmp_path, backend):
    corrupt = tmp_path / "corrupt.mp4"
    corrupt.write_bytes(b"\x00\x00\x00\x18ftypmp42" + bytes(range(256)) * 8)
    with pytest.raises(ValueError, match=rf"Cannot read video .*corrupt\.mp4: .* \({backend}\)\.$"):
        open_video(corrupt, backend=backend)


@pytest.mark.parametrize(
    ("video", "message"),
    [
        (np.zeros((0, 8, 8, 3), dtype=np.uint8), "zero frames"),
        ([], "zero frames"),
        (np.zeros((2, 8, 8), dtype=np.uint8), r"\(N, H, W, 3\) uint8"),
        (np.zeros((2, 8, 8, 3), dtype=np.float32), r"\(N, H, W, 3\) uint8"),
        (42, "Unsupported video input"),
    ],
)
def test_bad_decoded_inputs(video, message):
    with pytest.raises(ValueError, match=message):
        open_video(video)


# Choosing a backend.


def test_unknown_backend_is_named():
    with pytest.raises(ValueError, match=r"Unknown video backend 'opencv': choose 'auto' or one of torchcodec, pyav"):
        open_video(CLIP_PATH, backend="opencv")
    with pytest.raises(ValueError, match="'opencv'"):  # a typo is one even where no backend is needed
        open_video(np.zeros((1, 2, 2, 3), dtype=np.uint8), backend="opencv")


@pytest.mark.parametrize("name", BACKENDS)
def test_named_backend_that_is_not_installed_says_how_to_install_it(monkeypatch, name):
    monkeypatch.setitem(sys.modules, FILE_BACKENDS[name].module, None)  # `import` now fails as for a missing package
    with pytest.raises(
        ValueError, match=rf"Video backend '{name}' cannot be used: it is not installed\. .*pip install"
    ):
        open_video(CLIP_PATH, backend=name)
    # Frames already decoded need no backend.
    assert open_video(np.zeros((1, 2, 2, 3), dtype=np.uint8), backend=name).num_frames == 1


def fake_torchcodec(ffmpeg_major_version, has_demuxer=True) -> types.ModuleType:
    """A torchcodec that imports, as 0.16 and later do when FFmpeg's libraries are missing (version None)."""
    decoders = types.SimpleNamespace(**({"Demuxer": object} if has_demuxer else {}))
    module = types.ModuleType("torchcodec")
    module.__version__, module.ffmpeg_major_version, module.decoders = "0.17.0", ffmpeg_major_version, decoders
    return module


def test_auto_passes_over_torchcodec_without_ffmpeg_quietly(monkeypatch, capfd, recwarn):
    monkeypatch.setitem(sys.modules, "torchcodec", fake_torchcodec(ffmpeg_major_version=None))
    source = open_video(CLIP_PATH)
    assert source.backend == "pyav" and source.num_frames == 132
    assert capfd.readouterr() == ("", "") and len(recwarn) == 0
    with pytest.raises(ValueError, match="'torchcodec' cannot be used: it found no FFmpeg shared libraries"):
        open_video(CLIP_PATH, backend="torchcodec")


def test_auto_passes_over_a_torchcodec_that_fails_to_load(monkeypatch):
    # torchcodec before 0.16 fails to import without FFmpeg's libraries, as any build does against another torch.
    import_module = video_decoding.importlib.import_module

    def failing_torchcodec(name):
        if name == "torchcodec":
            raise OSError("libavutil.so.59: cannot open shared object file: No such file or directory")
        return import_module(name)

    monkeypatch.setattr(video_decoding.importlib, "import_module", failing_torchcodec)
    assert open_video(CLIP_PATH).backend == "pyav"
    with pytest.raises(ValueError, match=r"'torchcodec' cannot be used: it fails to load \(libavutil\.so\.59: cannot"):
        open_video(CLIP_PATH, backend="torchcodec")


def test_torchcodec_older_than_the_scan_is_named(monkeypatch):
    monkeypatch.setitem(sys.modules, "torchcodec", fake_torchcodec(ffmpeg_major_version=7, has_demuxer=False))
    with pytest.raises(ValueError, match=r"'torchcodec' cannot be used: version 0\.17\.0 is older than 0\.17"):
        open_video(CLIP_PATH, backend="torchcodec")


def test_auto_prefers_torchcodec_then_pyav_then_decord(monkeypatch):
    monkeypatch.setitem(sys.modules, "torchcodec", None)
    assert open_video(CLIP_PATH).backend == "pyav"
    monkeypatch.setitem(sys.modules, "av", None)
    if "decord" in INSTALLED_BACKENDS:
        assert open_video(CLIP_PATH).backend == "decord"
    monkeypatch.setitem(sys.modules, "decord", None)
    with pytest.raises(ValueError, match="No video decoding backend works here: install one, e.g. `pip install av`"):
        open_video(CLIP_PATH)


def test_backends_are_imported_only_when_used():
    # Importing vilamp stays light: no backend is imported at module level, only inside the code that uses it.
    tree = ast.parse(Path(video_decoding.__file__).read_text())
    imported = {alias.name for node in tree.body if isinstance(node, ast.Import) for alias in node.names}
    imported |= {node.module for node in tree.body if isinstance(node, ast.ImportFrom)}
    assert not {"av", "torchcodec", "decord"} & {name.split(".")[0] for name in imported if name}


# Real-world files, made with PyAV by tests/media.py. Every backend must read the same frame table (so sample the
# same frames) and return the same upright pixels.


def decode_all(source, indices):
    return np.concatenate(list(source.iter_chunks(np.asarray(indices), chunk_size=4)))


def assert_same_as_pyav(source, path):
    """The backend's frame table, rate, samples and pixels are PyAV's, bit for bit."""
    reference = open_video(path, backend="pyav")
    assert source.num_frames == reference.num_frames
    assert np.array_equal(source.timestamps, reference.timestamps)
    assert source.native_fps == reference.native_fps
    for fps, max_frames in ((1.0, None), (4.0, 3)):
        assert np.array_equal(sampled(source, fps, max_frames), sampled(reference, fps, max_frames))
    indices = sampled(reference, 4.0, None)
    assert np.array_equal(decode_all(source, indices), decode_all(reference, indices))


def upright_portrait() -> np.ndarray:
    """A portrait picture whose orientation is unmistakable: red top, blue bottom, a green stripe on the left."""
    picture = np.zeros((64, 32, 3), dtype=np.uint8)
    picture[:32], picture[32:], picture[:, :8] = (255, 0, 0), (0, 0, 255), (0, 255, 0)
    return picture


@pytest.mark.parametrize("degrees", [90, 180, 270])
def test_phone_video_with_rotation_metadata_comes_out_upright(tmp_path, backend, degrees):
    picture = upright_portrait()
    # A phone stores the sensor's picture and a display matrix saying how to turn it for viewing.
    stored = np.rot90(picture, k=degrees // 90)
    path = rotate_in_container(write_video(tmp_path / "phone.mp4", np.stack([stored] * 5)), degrees)
    source = open_video(path, backend=backend)
    frames = decode_all(source, [0, 4])
    assert frames.shape == (2, 64, 32, 3)
    assert np.abs(frames.astype(int) - picture).mean() < 8  # lossy H.264; a wrong turn is off by ~100
    assert_same_as_pyav(source, path)


def test_variable_frame_rate_uses_presentation_times(tmp_path, backend):
    # A screen recording: bursts of frames, then a frame held for seconds.
    times = [0.0, 0.1, 0.2, 1.85, 2.0, 2.05, 7.0, 7.5, 9.9]
    path = write_video(tmp_path / "vfr.mp4", numbered_frames(len(times), 32, 32), times=times)
    source = open_video(path, backend=backend)
    np.testing.assert_allclose(source.timestamps, times, atol=1e-9)
    # The frame on screen at 0 s, 1 s, 2 s, ...: each once.
    indices = sampled(source, 1.0, None)
    assert indices.tolist() == [0, 2, 4, 5, 6, 7]
    frames = decode_all(source, indices)
    for frame, index in zip(frames, indices, strict=True):
        assert np.abs(frame[16, 16].astype(int) - frame_colour(index)).max() < 12
    # Thinned as the reference does: numpy.linspace(0, 5, 3, dtype=int) = [0, 2, 5] of the six.
    assert sampled(source, 1.0, 3).tolist() == [0, 4, 7]
    assert_same_as_pyav(source, path)


def test_processor_reports_variable_frame_rate_times(tmp_path, heavy_fill_processor):
    times = [0.0, 0.1, 0.2, 1.85, 2.0, 2.05, 7.0, 7.5, 9.9]
    path = write_video(tmp_path / "vfr.mp4", numbered_frames(len(times), 32, 32), times=times)
    batch = heavy_fill_processor(text="<video>\nWhat changes?", videos=str(path), return_metadata=True)
    assert batch["video_metadata"][0].timestamps == [0.0, 0.2, 2.0, 2.05, 7.0, 7.5]


@pytest.mark.parametrize("container", ["mp4", "mkv"])
def test_constant_frame_rate_keeps_the_reference_index_rule(tmp_path, backend, container):
    # 29.97 fps in milliseconds: the reference keeps every int(29.97) = 29th frame, not the frame nearest to each
    # second.
    path = write_video(
        tmp_path / f"ntsc.{container}", numbered_frames(100, 32, 32), times=[n * 1001 / 30000 for n in range(100)]
    )
    source = open_video(path, backend=backend)
    assert source.native_fps == pytest.approx(30000 / 1001)
    assert sampled(source, 1.0, None).tolist() == [0, 29, 58, 87]
    np.testing.assert_allclose(source.timestamps[[0, 29]], [0.0, 29 * 1001 / 30000], atol=1e-3)
    assert_same_as_pyav(source, path)


def test_a_dropped_frame_keeps_the_container_rate(tmp_path, backend):
    # 25 fps with frame 40 missing: the reference's step stays int(25) = 25 (frames 0, 25, 50, ... of the file, which
    # holds 59 frames, so the third is shown at 2.04 s).
    times = [n / 25 for n in range(60) if n != 40]
    source = open_video(
        write_video(tmp_path / "dropped.mp4", numbered_frames(59, 32, 32), times=times), backend=backend
    )
    assert source.native_fps == 25.0
    assert sampled(source, 1.0, None).tolist() == [0, 25, 50]
    np.testing.assert_allclose(source.timestamps[[25, 50]], [1.0, 2.04], atol=1e-6)


def test_cut_without_reencoding_starts_at_the_cut(tmp_path, backend):
    path = cut_without_reencoding(
        write_video(tmp_path / "full.mp4", numbered_frames(60, 32, 32)), tmp_path / "cut.mp4", 0.52
    )
    source = open_video(path, backend=backend)
    if backend == "decord":
        # decord lists the 13 lead-in frames that the edit list hides (and its frames there are not to be trusted).
        assert source.num_frames == 60
        return
    assert source.num_frames == 47 and source.timestamps[1] == 0.04
    indices = sampled(source, 1.0, None)
    assert indices.tolist() == [0, 25]
    for frame, index in zip(decode_all(source, indices), indices, strict=True):
        assert np.abs(frame[16, 16].astype(int) - frame_colour(13 + index)).max() < 12
    assert_same_as_pyav(source, path)


# decord 0.6.0 bundles FFmpeg 4.1, which has no AV1 decoder, and its frame copy fails on some small frame widths
# (2, 4, 8, 12, 16, 24, 48 and 72 px among those tried): for those files it gives one error naming the file.
DECORD_CANNOT = {"av1.mkv", "one-pixel.mkv", "two-pixels.mp4"}


@pytest.mark.parametrize(
    ("name", "height", "width", "codec", "pixel_format"),
    [
        ("av1.mkv", 64, 64, "libsvtav1", "yuv420p"),
        ("one-pixel.mkv", 1, 1, "ffv1", "yuv444p"),
        ("two-pixels.mp4", 2, 2, "libx264", "yuv420p"),
        ("odd-size.mkv", 7, 13, "ffv1", "yuv444p"),
        ("odd-size.mp4", 74, 98, "libx264", "yuv420p"),
    ],
)
def test_unusual_codecs_and_sizes_decode(tmp_path, backend, name, height, width, codec, pixel_format):
    path = write_video(tmp_path / name, numbered_frames(30, height, width), codec=codec, pixel_format=pixel_format)
    if backend == "decord" and name in DECORD_CANNOT:
        with pytest.raises(ValueError, match=rf"video .*{re.escape(name)}: .*\(decord\)\.$"):
            decode_all(open_video(path, backend=backend), [0, 25])
        return
    source = open_video(path, backend=backend)
    assert source.num_frames == 30
    indices = sampled(source, 1.0, None)
    assert indices.tolist() == [0, 25]
    frames = decode_all(source, indices)
    assert frames.shape == (2, height, width, 3)
    for frame, index in zip(frames, indices, strict=True):
        assert np.abs(frame[0, 0].astype(int) - frame_colour(index)).max() < 12
    assert_same_as_pyav(source, path)


def test_audio_only_file_is_named(tmp_path, backend):
    path = write_audio_only(tmp_path / "speech.wav")
    with pytest.raises(ValueError, match=r"speech\.wav.*video stream"):
        open_video(path, backend=backend)


def test_truncated_file_names_the_file(tmp_path, backend):
    truncated = tmp_path / "truncated.mp4"
    truncated.write_bytes(CLIP_PATH.read_bytes()[: CLIP_PATH.stat().st_size // 5])
    with pytest.raises(ValueError, match="truncated.mp4"):
        source = open_video(truncated, backend=backend)
        decode_all(source, sampled(source, 1.0, None))


# Videos by URL: a local server on the loopback address, as `load_video` takes http(s) URLs.


class QuietHandler(http.server.SimpleHTTPRequestHandler):
    def log_message(self, *args):
        pass


@pytest.fixture
def served(tmp_path):
    """The URL of a folder served over HTTP on 127.0.0.1, holding the bundled clip and a corrupt file."""
    folder = tmp_path / "served"
    folder.mkdir()
    (folder / "clip.mp4").write_bytes(CLIP_PATH.read_bytes())
    (folder / "corrupt.mp4").write_bytes(b"\x00\x00\x00\x18ftypmp42" + bytes(range(256)) * 8)
    server = http.server.ThreadingHTTPServer(("127.0.0.1", 0), partial(QuietHandler, directory=str(folder)))
    thread = threading.Thread(target=server.serve_forever, daemon=True)
    thread.start()
    yield f"http://127.0.0.1:{server.server_address[1]}"
    server.shutdown()
    server.server_close()


@pytest.fixture
def downloads(tmp_path, monkeypatch):
    """The folder that temporary downloads go to, so that tests can see them come and go."""
    folder = tmp_path / "downloads"
    folder.mkdir()
    monkeypatch.setattr(video_decoding.tempfile, "tempdir", str(folder))
    return folder


def test_url_decodes_like_the_file_and_leaves_no_download(served, downloads, backend):
    url = f"{served}/clip.mp4"
    source = open_video(url, backend=backend)
    assert source.name == url and source.num_frames == 132
    assert len(list(downloads.iterdir())) == 1  # downloaded once, while the video is open
    indices = sampled(source, 1.0, None)
    assert np.array_equal(decode_all(source, indices), pyav_frames(CLIP_PATH, indices))
    del source
    gc.collect()
    assert list(downloads.iterdir()) == []


def test_url_in_a_chat_message_is_not_mangled_into_a_path(served, heavy_fill_processor):
    processor = heavy_fill_processor
    by_url, by_path = (
        processor.apply_chat_template(
            [{"role": "user", "content": [{"type": "video", "url": video}, {"type": "text", "text": "Why?"}]}],
            add_generation_prompt=True,
            tokenize=True,
            return_dict=True,
            return_metadata=True,
        )
        for video in (f"{served}/clip.mp4", str(CLIP_PATH))
    )
    assert torch.equal(by_url["pixel_values_videos"], by_path["pixel_values_videos"])
    assert by_url["video_metadata"][0].timestamps == by_path["video_metadata"][0].timestamps


def test_url_not_found_is_named(served, downloads):
    url = f"{served}/missing.mp4"
    with pytest.raises(ValueError, match=rf"Cannot download video {re.escape(url)}: HTTP Error 404"):
        open_video(url)
    assert list(downloads.iterdir()) == []


def test_url_of_an_undecodable_file_names_the_url(served, downloads, backend):
    url = f"{served}/corrupt.mp4"
    with pytest.raises(ValueError, match=rf"Cannot read video {re.escape(url)}: .* \({backend}\)\.$"):
        open_video(url, backend=backend)
    assert list(downloads.iterdir()) == []


def test_url_refused_or_silent_is_named(downloads, monkeypatch):
    with socket.socket() as closed:
        closed.bind(("127.0.0.1", 0))
        port = closed.getsockname()[1]
    with pytest.raises(ValueError, match=rf"Cannot download video http://127\.0\.0\.1:{port}/clip\.mp4: .*refused"):
        open_video(f"http://127.0.0.1:{port}/clip.mp4")
    # A server that takes the connection and never answers: the download gives up after its timeout.
    monkeypatch.setattr(video_decoding, "DOWNLOAD_TIMEOUT_SECONDS", 0.5)
    with socket.socket() as silent:
        silent.bind(("127.0.0.1", 0))
        silent.listen()
        url = f"http://127.0.0.1:{silent.getsockname()[1]}/clip.mp4"
        with pytest.raises(ValueError, match=rf"Cannot download video {re.escape(url)}: timed out"):
            open_video(url)
    assert list(downloads.iterdir()) == []
