"""
`vilamp serve`'s app: transformers' own server on 127.0.0.1, asked through the `openai` client as an application
would, with the tiny model. Answers equal `vilamp ask`'s; streaming equals non-streaming; concurrent requests each
answer as alone; bad requests get a 400 that names the problem; a changed file is prepared again.
"""

import concurrent.futures
import socket
import threading
import time

import openai
import pytest
import transformers
import uvicorn

from conftest import CLIP_PATH
from media import numbered_frames, write_video
from vilamp import cli
from vilamp.serving import SERVER_RELEASE, VilampModelManager, build_app
from vilamp.tiny import TINY_DESCRIPTION, tiny_model_and_processor


pytestmark = pytest.mark.skipif(
    transformers.__version__.rsplit(".", 1)[0] != SERVER_RELEASE,
    reason=f"vilamp serve is built on transformers {SERVER_RELEASE}'s server (5.25 rebuilt it); setup.cfg's serve "
    f"extra pins it",
)


QUESTIONS = ("What is the rabbit doing?", "Where is it?")
REQUEST_LIMIT = 256 * 1024


@pytest.fixture(scope="module")
def tiny_dir(tmp_path_factory):
    directory = tmp_path_factory.mktemp("served") / "tiny"
    model, processor = tiny_model_and_processor()
    model.save_pretrained(directory)
    processor.save_pretrained(directory)
    return directory


@pytest.fixture(scope="module")
def client(tiny_dir):
    """An `openai` client of the app, served on a free port of 127.0.0.1 for this module."""
    app = build_app(str(tiny_dir), device="cpu", dtype="float32", max_frames=60, max_request_bytes=REQUEST_LIMIT)
    with socket.socket() as probe:
        probe.bind(("127.0.0.1", 0))
        port = probe.getsockname()[1]
    server = uvicorn.Server(uvicorn.Config(app, host="127.0.0.1", port=port, log_level="warning"))
    thread = threading.Thread(target=server.run, daemon=True)
    thread.start()
    deadline = time.monotonic() + 120
    while not server.started:
        assert time.monotonic() < deadline and thread.is_alive(), "the server did not start"
        time.sleep(0.1)
    yield openai.OpenAI(base_url=f"http://127.0.0.1:{port}/v1", api_key="not needed", max_retries=0)
    server.should_exit = True
    thread.join(timeout=30)


def messages(video: str, question: str) -> list[dict]:
    return [
        {
            "role": "user",
            "content": [{"type": "video_url", "video_url": {"url": video}}, {"type": "text", "text": question}],
        }
    ]


def ask(client, video, question: str, **options) -> str:
    response = client.chat.completions.create(
        model=options.pop("model", None) or client.models.list().data[0].id,
        messages=messages(str(video), question),
        max_tokens=64,
        **options,
    )
    return response.choices[0].message.content


def asked_directly(video, question: str) -> str:
    """What `vilamp ask` answers (its own functions, in this process) for the embedded default."""
    model, processor = tiny_model_and_processor()
    prepared = cli.prepare_video(processor, str(video), 60, show_progress=False, show_decoder_logs=False)
    answer, _ = cli.ask(model, processor, prepared, question, None, 64, None, show_progress=False)
    return answer


def test_answers_equal_vilamp_ask_streaming_or_not(client):
    answer = ask(client, CLIP_PATH, QUESTIONS[0])
    assert answer.strip() == asked_directly(CLIP_PATH, QUESTIONS[0])
    stream = client.chat.completions.create(
        model=client.models.list().data[0].id,
        messages=messages(str(CLIP_PATH), QUESTIONS[0]),
        max_tokens=64,
        stream=True,
    )
    assert "".join(chunk.choices[0].delta.content or "" for chunk in stream if chunk.choices) == answer
    assert ask(client, f"file://{CLIP_PATH}", QUESTIONS[0]) == answer


def test_concurrent_requests_each_answer_as_alone(client):
    alone = {question: ask(client, CLIP_PATH, question) for question in QUESTIONS}
    with concurrent.futures.ThreadPoolExecutor(4) as pool:
        futures = {pool.submit(ask, client, CLIP_PATH, question): question for question in QUESTIONS * 2}
        assert all(future.result() == alone[question] for future, question in futures.items())


@pytest.mark.parametrize(
    ("video", "settings", "message"),
    [
        ("/no/such/video.mp4", {}, "no such video file: /no/such/video.mp4"),
        ("TEXT", {}, "Cannot read video {video}: "),
        (str(CLIP_PATH), {"num_keyframes": 0}, "`num_keyframes` must be a positive integer, got 0"),
        (str(CLIP_PATH), {"max_frames": 1000}, "max_frames 1000 is above this server's limit of 60"),
    ],
)
def test_bad_requests_get_a_400_naming_the_problem(client, tmp_path, video, settings, message):
    if video == "TEXT":
        video = tmp_path / "notes.mp4"
        video.write_text("not a video")
    with pytest.raises(openai.BadRequestError) as raised:
        ask(client, video, "What?", extra_body={"chat_template_kwargs": settings})
    assert message.format(video=video) in raised.value.response.json()["detail"]
    assert ask(client, CLIP_PATH, QUESTIONS[1])  # and the server goes on answering


def test_a_changed_file_is_prepared_again(client, tmp_path):
    path = tmp_path / "changing.mp4"
    write_video(path, numbered_frames(75, 48, 64), fps=25)
    first = ask(client, path, QUESTIONS[0])
    assert first.strip() == asked_directly(path, QUESTIONS[0])
    time.sleep(0.01)
    write_video(path, numbered_frames(125, 48, 64)[::-1].copy(), fps=25)  # other frames, size and time
    assert ask(client, path, QUESTIONS[0]).strip() == asked_directly(path, QUESTIONS[0])


@pytest.fixture
def web_folder(tmp_path):
    """A folder served over http on a free port of 127.0.0.1: (folder, base URL)."""
    import functools
    import http.server

    handler = functools.partial(http.server.SimpleHTTPRequestHandler, directory=str(tmp_path))
    handler.log_message = lambda *args: None
    server = http.server.ThreadingHTTPServer(("127.0.0.1", 0), handler)
    thread = threading.Thread(target=server.serve_forever, daemon=True)
    thread.start()
    yield tmp_path, f"http://127.0.0.1:{server.server_address[1]}"
    server.shutdown()
    thread.join(timeout=30)


def test_a_url_is_prepared_again_only_when_its_content_changes(client, web_folder, monkeypatch):
    from vilamp.processing import PreparedVideo, VilampProcessor

    folder, base = web_folder
    path = write_video(folder / "clip.mp4", numbered_frames(75, 48, 64), fps=25)
    expected = asked_directly(path, QUESTIONS[0])
    prepared_paths = []
    prepare_video = VilampProcessor.prepare_video

    def counted(self, video, *args, **kwargs):
        if not isinstance(video, PreparedVideo):  # the server's own preparation, not the question's pass-through
            prepared_paths.append(video)
        return prepare_video(self, video, *args, **kwargs)

    monkeypatch.setattr(VilampProcessor, "prepare_video", counted)
    assert [ask(client, f"{base}/clip.mp4", QUESTIONS[0]).strip() for _ in range(2)] == [expected, expected]
    assert len(prepared_paths) == 1  # downloaded twice, decoded once: the same bytes
    write_video(path, numbered_frames(125, 48, 64)[::-1].copy(), fps=25)
    answer = ask(client, f"{base}/clip.mp4", QUESTIONS[0]).strip()
    assert len(prepared_paths) == 2
    assert answer == asked_directly(path, QUESTIONS[0])
    with pytest.raises(openai.BadRequestError) as raised:
        ask(client, f"{base}/missing.mp4", QUESTIONS[0])
    assert f"Cannot download video {base}/missing.mp4: HTTP Error 404" in raised.value.response.json()["detail"]


def test_a_request_over_the_size_limit_gets_a_413_naming_it(client):
    import http.client
    import json
    import urllib.parse

    question = "What? " * (REQUEST_LIMIT // 6 + 1)
    with pytest.raises(openai.APIStatusError) as raised:
        ask(client, CLIP_PATH, question)
    assert raised.value.status_code == 413
    assert f"above this server's limit of {REQUEST_LIMIT:,} bytes" in raised.value.response.json()["detail"]
    # Without a Content-Length (a chunked body), the server counts what arrives.
    address = urllib.parse.urlsplit(str(client.base_url))
    connection = http.client.HTTPConnection(address.hostname, address.port, timeout=60)
    body = json.dumps({"model": "m", "messages": messages(str(CLIP_PATH), question)}).encode()
    chunks = (body[start : start + 4096] for start in range(0, len(body), 4096))
    connection.request(
        "POST", "/v1/chat/completions", body=chunks, encode_chunked=True, headers={"Content-Type": "application/json"}
    )
    response = connection.getresponse()
    assert response.status == 413 and "above this server's limit" in json.load(response)["detail"]
    connection.close()
    assert ask(client, CLIP_PATH, QUESTIONS[1])  # and the server goes on answering


def test_the_server_answers_while_a_video_is_being_prepared(client, tmp_path, monkeypatch):
    """A video is decoded in a worker thread: /health and other requests do not wait for it."""
    import urllib.request

    from vilamp.processing import VilampProcessor

    entered, release = threading.Event(), threading.Event()
    prepare_video = VilampProcessor.prepare_video

    def held(self, video, *args, **kwargs):
        if str(video).endswith("held.mp4"):
            entered.set()
            assert release.wait(timeout=120)
        return prepare_video(self, video, *args, **kwargs)

    monkeypatch.setattr(VilampProcessor, "prepare_video", held)
    path = write_video(tmp_path / "held.mp4", numbered_frames(50, 48, 64), fps=25)
    with concurrent.futures.ThreadPoolExecutor(1) as pool:
        pending = pool.submit(ask, client, path, QUESTIONS[0])
        assert entered.wait(timeout=60)
        try:
            base = str(client.base_url).removesuffix("/").removesuffix("/v1")
            with urllib.request.urlopen(f"{base}/health", timeout=20) as response:
                assert response.status == 200
            assert ask(client, CLIP_PATH, QUESTIONS[1])  # another request, answered meanwhile
            assert not pending.done()
        finally:
            release.set()
        assert pending.result(timeout=120).strip() == asked_directly(path, QUESTIONS[0])


def test_transformers_own_server_cannot_load_vilamp_without_the_subclass(tiny_dir):
    """
    What `VilampModelManager` is for: transformers' server picks classes and modality from its static tables. If a
    release finds registered models there, this fails, and the subclass can go.
    """
    from transformers.cli.serving.model_manager import ModelManager

    model, processor = tiny_model_and_processor()
    with pytest.raises(AttributeError, match="VilampForConditionalGeneration"):
        ModelManager(device="cpu", dtype="float32", model_timeout=-1)._load_model(str(tiny_dir))
    with pytest.raises(ValueError, match="modality"):
        ModelManager.get_model_modality(model, processor=processor)
    assert isinstance(VilampModelManager(device="cpu", model_timeout=-1)._load_model(str(tiny_dir)), type(model))


def test_vilamp_serve_as_typed_answers_until_ctrl_c():
    import json
    import signal
    import subprocess
    import sys
    import urllib.request
    from pathlib import Path

    with socket.socket() as probe:
        probe.bind(("127.0.0.1", 0))
        port = probe.getsockname()[1]
    vilamp = Path(sys.executable).parent / "vilamp"
    process = subprocess.Popen(
        [str(vilamp), "serve", "--port", str(port), "--device", "cpu", "--quiet"],
        stdout=subprocess.PIPE,
        stderr=subprocess.PIPE,
        text=True,
    )
    try:
        assert process.stdout.readline() == f"NOTE: no --model: serving {TINY_DESCRIPTION}.\n"
        assert process.stdout.readline().endswith(f"/tiny at http://127.0.0.1:{port}/v1 (Ctrl-C stops)\n")
        base = f"http://127.0.0.1:{port}"
        deadline = time.monotonic() + 120
        while True:
            try:
                with urllib.request.urlopen(f"{base}/health") as response:
                    assert response.status == 200
                break
            except OSError:
                assert time.monotonic() < deadline and process.poll() is None, process.stderr.read()
                time.sleep(0.2)
        with urllib.request.urlopen(f"{base}/v1/models") as response:
            assert [model["id"].endswith("/tiny") for model in json.load(response)["data"]] == [True]
        client = openai.OpenAI(base_url=f"{base}/v1", api_key="not needed", max_retries=0)
        assert ask(client, CLIP_PATH, QUESTIONS[0]).strip() == asked_directly(CLIP_PATH, QUESTIONS[0])
        process.send_signal(signal.SIGINT)
        assert process.wait(timeout=60) == 0
    finally:
        process.kill()
